//! What the webhook answers for well-formed, authenticated requests: the cluster's policy
//! decides, and the request's chain and policy id must be the configured ones.

use alloy::primitives::{Address, Bytes};
use alloy::sol_types::SolCall;
use attestmesh_bindings::member_account::MemberAccount;
use serde_json::json;

use crate::proof::Node;
use crate::{CHAIN_ID, Harness, KMS_SEED, POLICY, assert_denied, assert_error, webhook_request};

#[tokio::test(flavor = "multi_thread")]
async fn approves_a_bootstrap_registration_from_an_allowlisted_member_account() {
    let harness = Harness::start().await;
    let cluster = harness.chain.cluster;
    let account = harness
        .chain
        .chain
        .add_member_account(cluster, "node-1")
        .await
        .unwrap();
    let node = Node::new("node-1", account, KMS_SEED).await;
    let call_data = node
        .register_call_data(harness.chain.chain.operator_client(), cluster)
        .await;

    // Alchemy sends chainId as a string; other gas managers send a number or hex. All three
    // name the same chain.
    for chain_id in [
        json!(CHAIN_ID.to_string()),
        json!(CHAIN_ID),
        json!("0x7a69"),
    ] {
        let reply = harness
            .post(&webhook_request(
                account,
                &call_data,
                POLICY,
                chain_id.clone(),
            ))
            .await;
        assert_eq!(reply.0, 200, "chainId {chain_id}: {}", reply.1);
        // Exactly `{"approved": true}`: no reason on approval.
        assert_eq!(reply.1, json!({"approved": true}), "chainId {chain_id}");
    }

    // The same proof from the /webhook route.
    let body = webhook_request(account, &call_data, POLICY, json!(CHAIN_ID));
    let reply = harness
        .send(
            "/webhook",
            Some(crate::SECRET),
            body.to_string().into_bytes(),
        )
        .await;
    assert_eq!(reply.1, json!({"approved": true}));
}

#[tokio::test(flavor = "multi_thread")]
async fn denies_what_the_policy_denies_with_the_policys_reason() {
    let harness = Harness::start().await;
    let cluster = harness.chain.cluster;
    let client = harness.chain.chain.operator_client();

    // A well-formed proof from an account the operator never allowlisted.
    let stranger = Address::repeat_byte(0x5a);
    let call_data = Node::new("stranger", stranger, KMS_SEED)
        .await
        .register_call_data(client, cluster)
        .await;
    let reply = harness
        .post(&webhook_request(
            stranger,
            &call_data,
            POLICY,
            json!(CHAIN_ID),
        ))
        .await;
    assert_denied(
        &reply,
        "sender is not an allowlisted member account of this cluster",
    );

    // An allowlisted account whose app key was issued by a KMS root the cluster does not trust.
    let account = harness
        .chain
        .chain
        .add_member_account(cluster, "node-2")
        .await
        .unwrap();
    let call_data = Node::new("node-2", account, "attestmesh.webhook-test.rogue-kms-root")
        .await
        .register_call_data(client, cluster)
        .await;
    let reply = harness
        .post(&webhook_request(
            account,
            &call_data,
            POLICY,
            json!(CHAIN_ID),
        ))
        .await;
    assert_denied(&reply, "KMS root is not allowlisted");

    // Calldata with no selector, and a function the policy never sponsors.
    let reply = harness
        .post(&webhook_request(
            account,
            &Bytes::new(),
            POLICY,
            json!(CHAIN_ID),
        ))
        .await;
    assert_denied(&reply, "calldata has no function selector");
    let reply = harness
        .post(&webhook_request(
            account,
            &Bytes::from(vec![0xde, 0xad, 0xbe, 0xef]),
            POLICY,
            json!(CHAIN_ID),
        ))
        .await;
    assert_denied(
        &reply,
        "only member-account register and execute are sponsored",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn register_calldata_that_does_not_decode_is_denied_with_the_revert_reason() {
    let harness = Harness::start().await;
    let account = harness
        .chain
        .chain
        .add_member_account(harness.chain.cluster, "node-1")
        .await
        .unwrap();
    // register's selector followed by bytes that are not an ABI-encoded (proof, keys): the view
    // reverts (abi.decode), which is an answer about the calldata, not a chain failure.
    let mut call_data = MemberAccount::registerCall::SELECTOR.to_vec();
    call_data.extend_from_slice(&[0x01; 7]);
    let reply = harness
        .post(&webhook_request(
            account,
            &call_data.into(),
            POLICY,
            json!(CHAIN_ID),
        ))
        .await;
    assert_denied(
        &reply,
        "the cluster's sponsorship policy rejected the calldata",
    );
    assert!(
        !reply.1["reason"]
            .as_str()
            .unwrap()
            .contains("could not be checked"),
        "a revert must not be reported as a chain failure: {}",
        reply.1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn denies_another_chain_id_and_an_unknown_policy_id() {
    let harness = Harness::start().await;
    let sender = Address::repeat_byte(0x01);
    let call_data = Bytes::from(vec![0xde, 0xad, 0xbe, 0xef]);

    // Base's chain id, as a string and as a number, against a webhook configured for 31337.
    for chain_id in [json!("8453"), json!(8453)] {
        let reply = harness
            .post(&webhook_request(sender, &call_data, POLICY, chain_id))
            .await;
        assert_denied(&reply, "wrong chain: the request is for chain id 8453");
        assert!(
            reply.1["reason"].as_str().unwrap().contains("31337"),
            "{}",
            reply.1
        );
    }

    let reply = harness
        .post(&webhook_request(
            sender,
            &call_data,
            "someone-elses-policy",
            json!(CHAIN_ID),
        ))
        .await;
    assert_error(&reply, 404, "unknown_policy");
    let reason = reply.1["reason"].as_str().unwrap();
    assert!(
        reason.contains("someone-elses-policy") && reason.contains(POLICY),
        "{reason}"
    );
}
