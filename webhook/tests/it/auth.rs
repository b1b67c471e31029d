//! The shared secret: a request without it, or with another, gets 401 saying which.

use alloy::primitives::{Address, Bytes};
use serde_json::json;

use crate::{CHAIN_ID, Harness, POLICY, SECRET, assert_error, webhook_request};

#[tokio::test(flavor = "multi_thread")]
async fn missing_or_wrong_secret_is_401_saying_which() {
    let harness = Harness::start().await;
    let body = webhook_request(
        Address::repeat_byte(1),
        &Bytes::new(),
        POLICY,
        json!(CHAIN_ID),
    )
    .to_string()
    .into_bytes();

    let missing = harness.send("/", None, body.clone()).await;
    assert_error(&missing, 401, "missing_secret");
    assert!(
        missing.1["reason"].as_str().unwrap().contains("missing"),
        "{}",
        missing.1
    );

    let wrong = harness
        .send("/", Some("not-the-secret-at-all"), body.clone())
        .await;
    assert_error(&wrong, 401, "wrong_secret");
    assert!(
        wrong.1["reason"].as_str().unwrap().contains("wrong"),
        "{}",
        wrong.1
    );

    // One character off is as wrong as anything else.
    let near = format!("{SECRET}x");
    assert_error(
        &harness.send("/webhook", Some(&near), body.clone()).await,
        401,
        "wrong_secret",
    );

    // Another scheme is not a bearer token.
    let basic = harness
        .http
        .post(harness.url("/"))
        .header("authorization", format!("Basic {SECRET}"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_error(&crate::into_json(basic).await, 401, "wrong_secret");

    // The secret is checked before the body is read: garbage without it is still a 401.
    assert_error(
        &harness.send("/", None, b"{not json".to_vec()).await,
        401,
        "missing_secret",
    );

    // With the secret the same request is answered.
    let (status, reply) = harness.send("/", Some(SECRET), body).await;
    assert_eq!(status, 200, "{reply}");

    // /healthz is public: the deploy routine checks identity without the secret.
    let health = harness
        .http
        .get(harness.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
}
