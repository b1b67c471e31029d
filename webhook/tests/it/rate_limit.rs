//! The per-sender rate limit.

use alloy::primitives::{Address, Bytes};
use serde_json::json;

use crate::{CHAIN_ID, Harness, POLICY, assert_denied, webhook_request};

#[tokio::test(flavor = "multi_thread")]
async fn denies_the_request_over_the_senders_limit_and_not_other_senders() {
    const LIMIT: u32 = 3;
    let harness = Harness::start_with(|config| config.rate_limit_per_minute = LIMIT).await;
    let sender = Address::repeat_byte(0x33);
    // The policy denies this calldata; what matters is that it is the policy answering.
    let call_data = Bytes::from(vec![0xde, 0xad, 0xbe, 0xef]);
    let request = webhook_request(sender, &call_data, POLICY, json!(CHAIN_ID));

    for i in 0..LIMIT {
        let reply = harness.post(&request).await;
        assert_denied(
            &reply,
            "only member-account register and execute are sponsored",
        );
        assert!(
            !reply.1["reason"]
                .as_str()
                .unwrap()
                .starts_with("rate limit"),
            "request {i}"
        );
    }
    let over = harness.post(&request).await;
    assert_denied(&over, "rate limit:");
    assert!(
        over.1["reason"]
            .as_str()
            .unwrap()
            .contains(&sender.to_string()),
        "{}",
        over.1
    );

    // Another sender has its own bucket.
    let other = webhook_request(
        Address::repeat_byte(0x44),
        &call_data,
        POLICY,
        json!(CHAIN_ID),
    );
    assert_denied(
        &harness.post(&other).await,
        "only member-account register and execute",
    );
}
