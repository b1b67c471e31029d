//! Input the service must survive: each gets a JSON error with the right status, and the
//! service answers a good request afterwards.

use alloy::primitives::{Address, Bytes};
use serde_json::json;

use crate::{CHAIN_ID, Harness, POLICY, SECRET, assert_denied, assert_error, webhook_request};

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_json_errors_and_the_service_keeps_answering() {
    let harness = Harness::start().await;
    let sender = Address::repeat_byte(0x21);
    let good = webhook_request(
        sender,
        &Bytes::from(vec![0xde, 0xad, 0xbe, 0xef]),
        POLICY,
        json!(CHAIN_ID),
    );
    let send = |body: Vec<u8>| harness.send("/", Some(SECRET), body);

    // Not JSON at all, truncated JSON, and an empty body.
    assert_error(&send(b"{not json".to_vec()).await, 400, "malformed_json");
    let text = good.to_string();
    assert_error(
        &send(text.as_bytes()[..text.len() / 2].to_vec()).await,
        400,
        "malformed_json",
    );
    assert_error(&send(Vec::new()).await, 400, "malformed_json");

    // JSON of the wrong shape: missing fields, a sender that is not an address, an unreadable
    // chain id.
    let mut missing_policy = good.clone();
    missing_policy.as_object_mut().unwrap().remove("policyId");
    let reply = send(missing_policy.to_string().into_bytes()).await;
    assert_error(&reply, 422, "invalid_request");
    assert!(
        reply.1["reason"].as_str().unwrap().contains("policyId"),
        "{}",
        reply.1
    );

    let mut missing_sender = good.clone();
    missing_sender["userOperation"]
        .as_object_mut()
        .unwrap()
        .remove("sender");
    let reply = send(missing_sender.to_string().into_bytes()).await;
    assert_error(&reply, 422, "invalid_request");
    assert!(
        reply.1["reason"].as_str().unwrap().contains("sender"),
        "{}",
        reply.1
    );

    let mut bad_sender = good.clone();
    bad_sender["userOperation"]["sender"] = json!("0x1234");
    assert_error(
        &send(bad_sender.to_string().into_bytes()).await,
        422,
        "invalid_request",
    );

    let mut bad_chain = good.clone();
    bad_chain["chainId"] = json!("base");
    let reply = send(bad_chain.to_string().into_bytes()).await;
    assert_error(&reply, 422, "invalid_request");
    assert!(
        reply.1["reason"].as_str().unwrap().contains("chainId"),
        "{}",
        reply.1
    );

    assert_error(&send(b"[1, 2, 3]".to_vec()).await, 422, "invalid_request");

    // A body over the 64 KiB default: padding inside a valid request, so only the size is wrong.
    let mut oversized = good.clone();
    oversized["webhookData"] = json!("a".repeat(70 * 1024));
    let reply = send(oversized.to_string().into_bytes()).await;
    assert_error(&reply, 413, "body_too_large");
    assert!(
        reply.1["reason"].as_str().unwrap().contains("65536"),
        "{}",
        reply.1
    );

    // Wrong method on the webhook routes, and an unknown path.
    let get = harness
        .http
        .get(harness.url("/"))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_error(&crate::into_json(get).await, 405, "method_not_allowed");
    let put = harness
        .http
        .put(harness.url("/webhook"))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_error(&crate::into_json(put).await, 405, "method_not_allowed");
    let post_health = harness
        .http
        .post(harness.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_error(
        &crate::into_json(post_health).await,
        405,
        "method_not_allowed",
    );
    assert_error(
        &harness.send("/nope", Some(SECRET), Vec::new()).await,
        404,
        "not_found",
    );

    // Still serving, and still deciding with the chain.
    assert_denied(
        &harness.post(&good).await,
        "only member-account register and execute",
    );
    let health = harness
        .http
        .get(harness.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
}
