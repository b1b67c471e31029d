//! Issue 14, money: the operator's caps on gas fields and cost, the envelopes already approved
//! and pending in another operation of the sender, and the per-member rate of app messages.
//! Each denial names its rule (`cap:`, `pending:`, `rate limit:`, `policy:`) and is given before
//! anything is signed.

use std::time::Duration;

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::sol_types::SolCall;
use attestmesh_bindings::ENTRY_POINT_V07;
use attestmesh_bindings::cluster::Cluster;
use attestmesh_bindings::member_account::MemberAccount;
use attestmesh_chain::{NonceKey, SendOptions, SponsoredSender};
use attestmesh_devnet::bundler::{Bundler, BundlerConfig, BundlerHandle};
use attestmesh_devnet::gas_manager::{GasManager, GasManagerConfig, GasManagerHandle};
use serde_json::{Value, json};

use crate::proof::Node;
use crate::{
    CHAIN_ID, Harness, KMS_SEED, POLICY, SECRET, assert_denied, assert_error, webhook_request,
};

/// A member registered through the real sponsorship path (gas manager → this webhook →
/// bundler → EntryPoint), and a sender for its operations.
struct Member {
    account: Address,
    id: u64,
    sender: SponsoredSender,
    _bundler: BundlerHandle,
    _gas_manager: GasManagerHandle,
}

async fn register(harness: &Harness, name: &str) -> Member {
    let chain = &harness.chain.chain;
    let cluster = harness.chain.cluster;
    let account = chain.add_member_account(cluster, name).await.unwrap();
    let node = Node::new(name, account, KMS_SEED).await;
    let call_data = node
        .register_call_data(chain.operator_client(), cluster)
        .await;
    let bundler = Bundler::spawn(BundlerConfig::new(
        chain.rpc_url().clone(),
        CHAIN_ID,
        chain.dev_key(2).unwrap(),
    ))
    .await
    .unwrap();
    let gas_manager = GasManager::spawn(GasManagerConfig::new(
        chain.rpc_url().clone(),
        CHAIN_ID,
        bundler.url().clone(),
        chain.deployment().verifying_paymaster,
        chain.sponsor().clone(),
        harness.webhook.url().parse().unwrap(),
        attestmesh_devnet::gas_manager::WebhookSecret::new(SECRET),
        vec![POLICY.to_string()],
    ))
    .await
    .unwrap();
    let sender = SponsoredSender::new(
        chain.operator_client().clone(),
        bundler.url().clone(),
        gas_manager.url().clone(),
        POLICY,
        ENTRY_POINT_V07,
        node.owner().clone(),
        account,
    )
    .unwrap()
    .with_options(SendOptions {
        receipt_timeout: Duration::from_secs(30),
        poll_interval: Duration::from_millis(100),
        ..SendOptions::default()
    });
    assert!(sender.send(call_data, None).await.unwrap().success);
    let id = chain
        .operator_client()
        .member_of(cluster, account)
        .await
        .unwrap()
        .expect("registered")
        .id;
    Member {
        account,
        id,
        sender,
        _bundler: bundler,
        _gas_manager: gas_manager,
    }
}

fn envelope(recipient: u64, id: u8) -> Cluster::Envelope {
    Cluster::Envelope {
        recipientMemberId: recipient,
        envelopeId: B256::repeat_byte(id),
        ciphertext: Bytes::from(vec![0xc1; 48]),
    }
}

fn send(recipient: u64, id: u8) -> Bytes {
    let inner = Cluster::sendCall {
        recipientMemberId: recipient,
        envelopeId: B256::repeat_byte(id),
        ciphertext: Bytes::from(vec![0xc1; 48]),
    };
    MemberAccount::executeCall {
        data: inner.abi_encode().into(),
    }
    .abi_encode()
    .into()
}

fn send_batch(entries: Vec<Cluster::Envelope>) -> Bytes {
    let inner = Cluster::sendBatchCall { envelopes: entries };
    MemberAccount::executeCall {
        data: inner.abi_encode().into(),
    }
    .abi_encode()
    .into()
}

/// A request for `sender`'s operation with `call_data` at nonce `key` ‖ `sequence`.
fn request_at(sender: Address, call_data: &Bytes, key: u64, sequence: u64) -> Value {
    let mut body = webhook_request(sender, call_data, POLICY, json!(CHAIN_ID));
    let nonce = (U256::from(key) << 64) | U256::from(sequence);
    body["userOperation"]["nonce"] = json!(format!("{nonce:#x}"));
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn gas_fields_above_the_operators_caps_are_denied_naming_the_rule() {
    let harness = Harness::start().await;
    let sender = Address::repeat_byte(0x31);
    // The policy denies this calldata: a denial naming the policy means the caps passed.
    let call_data = Bytes::from(vec![0xde, 0xad, 0xbe, 0xef]);
    let ordinary = webhook_request(sender, &call_data, POLICY, json!(CHAIN_ID));
    assert_denied(
        &harness.post(&ordinary).await,
        "policy: only member-account",
    );

    // Issue 14's drain: preVerificationGas 40M, fees 200 gwei.
    let mut drain = ordinary.clone();
    drain["userOperation"]["preVerificationGas"] = json!("0x02625a00");
    assert_eq!(
        harness.post(&drain).await.1,
        json!({"approved": false, "reason": "cap: preVerificationGas 40000000 above the operator's cap 1000000"})
    );
    let mut fees = ordinary.clone();
    fees["userOperation"]["maxFeePerGas"] = json!("0x2e90edd000");
    assert_denied(
        &harness.post(&fees).await,
        "cap: maxFeePerGas 200000000000 above the operator's cap 1000000000",
    );
    let mut tip = ordinary.clone();
    tip["userOperation"]["maxPriorityFeePerGas"] = json!(200_000_000_000u64);
    assert_denied(&harness.post(&tip).await, "cap: maxPriorityFeePerGas");
    let mut call = ordinary.clone();
    call["userOperation"]["callGasLimit"] = json!("10000000");
    assert_denied(
        &harness.post(&call).await,
        "cap: callGasLimit 10000000 above the operator's cap 5000000",
    );
    let mut verification = ordinary.clone();
    verification["userOperation"]["verificationGasLimit"] = json!("0x2dc6c0");
    assert_denied(
        &harness.post(&verification).await,
        "cap: verificationGasLimit 3000000 above the operator's cap 2000000",
    );
    // Every field under its cap, the total above: (2M + 5M + 1M) × 1 gwei = 0.008 ETH.
    let mut total = ordinary.clone();
    for (field, value) in [
        ("verificationGasLimit", 2_000_000u64),
        ("callGasLimit", 5_000_000),
        ("preVerificationGas", 1_000_000),
        ("maxFeePerGas", 1_000_000_000),
    ] {
        total["userOperation"][field] = json!(value);
    }
    assert_denied(
        &harness.post(&total).await,
        "cap: maximum cost 8000000000000000 wei (every gas limit × maxFeePerGas) above the operator's cap 5000000000000000 wei",
    );

    // Gas not set yet (Alchemy asks before it estimates): the caps have nothing to check.
    let mut partial = ordinary.clone();
    let op = partial["userOperation"].as_object_mut().unwrap();
    for field in [
        "callGasLimit",
        "verificationGasLimit",
        "preVerificationGas",
        "maxFeePerGas",
        "maxPriorityFeePerGas",
    ] {
        op.remove(field);
    }
    assert_denied(&harness.post(&partial).await, "policy: only member-account");

    // A gas field that is not a quantity is the request's error, named.
    let mut garbage = ordinary;
    garbage["userOperation"]["preVerificationGas"] = json!("lots");
    let reply = harness.post(&garbage).await;
    assert_error(&reply, 422, "invalid_request");
    assert!(
        reply.1["reason"]
            .as_str()
            .unwrap()
            .contains("userOperation.preVerificationGas"),
        "{}",
        reply.1
    );

    // The operator's caps are part of the identity /healthz shows.
    let health: Value = reqwest::get(harness.url("/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        health["limits"]["caps"]["pre_verification_gas"],
        json!("1000000")
    );
    assert_eq!(health["limits"]["message_rate_limit_per_minute"], 128);
}

/// Issue 14: two operations of one member carrying the same envelope id on different nonce keys
/// both passed the policy, and the second reverted at the sponsor's cost.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_operation_carrying_a_pending_envelope_is_denied_until_the_first_is_on_chain() {
    let harness = Harness::start().await;
    let member = register(&harness, "node-1").await;
    let envelope_call = send(member.id, 7);

    // Approved on nonce key 1; asked again for the same operation (ERC-7677: stub, then final
    // data): still the same operation, approved.
    let first = request_at(member.account, &envelope_call, 1, 0);
    assert_eq!(harness.post(&first).await.1, json!({"approved": true}));
    assert_eq!(harness.post(&first).await.1, json!({"approved": true}));

    // The same envelope on nonce key 2 while the first is pending: denied, naming the rule,
    // the envelope and the operation it is pending in.
    let second = request_at(member.account, &envelope_call, 2, 0);
    let reply = harness.post(&second).await;
    assert_denied(
        &reply,
        &format!(
            "pending: envelope (recipient {}, id {}) is already in this sender's operation nonce 0x10000000000000000 (key 1, sequence 0)",
            member.id,
            B256::repeat_byte(7)
        ),
    );
    // Inside a batch, and inside an executeBatch, it is the same envelope.
    let batch = send_batch(vec![envelope(member.id, 8), envelope(member.id, 7)]);
    assert_denied(
        &harness
            .post(&request_at(member.account, &batch, 2, 0))
            .await,
        "pending: envelope",
    );
    let execute_batch: Bytes = MemberAccount::executeBatchCall {
        calls: vec![
            Cluster::sendCall {
                recipientMemberId: member.id,
                envelopeId: B256::repeat_byte(7),
                ciphertext: Bytes::from(vec![1; 8]),
            }
            .abi_encode()
            .into(),
        ],
    }
    .abi_encode()
    .into();
    assert_denied(
        &harness
            .post(&request_at(member.account, &execute_batch, 2, 0))
            .await,
        "pending: envelope",
    );
    // Only approved operations hold their envelopes: one the policy denies (its second entry
    // goes to no member) leaves envelope 10 free for the next operation.
    let denied = send_batch(vec![envelope(member.id, 10), envelope(99, 10)]);
    assert_denied(
        &harness
            .post(&request_at(member.account, &denied, 3, 0))
            .await,
        "policy: ",
    );
    assert_eq!(
        harness
            .post(&request_at(member.account, &send(member.id, 10), 4, 0))
            .await
            .1,
        json!({"approved": true})
    );
    // Another envelope on key 2 is fine.
    assert_eq!(
        harness
            .post(&request_at(member.account, &send(member.id, 9), 2, 0))
            .await
            .1,
        json!({"approved": true})
    );

    // The first operation lands (the same sender and nonce asks once more, then the bundler
    // includes it). Now the chain shows its nonce used, the pending entry goes, and the policy
    // answers: the envelope is used.
    let receipt = member
        .sender
        .send_on(NonceKey::new(1), envelope_call.clone(), None)
        .await
        .unwrap();
    assert!(receipt.success);
    assert_denied(&harness.post(&second).await, "policy: ");
    let reason = harness.post(&second).await.1["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!reason.starts_with("pending"), "{reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn app_messages_are_limited_per_member_counting_envelopes() {
    const LIMIT: u32 = 3;
    let harness = Harness::start_with(|config| config.message_rate_limit_per_minute = LIMIT).await;
    let member = register(&harness, "node-1").await;

    // Two envelopes in one operation, asked twice (stub, final): counted once.
    let two = send_batch(vec![envelope(member.id, 1), envelope(member.id, 2)]);
    let first = request_at(member.account, &two, 1, 0);
    assert_eq!(harness.post(&first).await.1, json!({"approved": true}));
    assert_eq!(harness.post(&first).await.1, json!({"approved": true}));
    // Two more would make four: over the limit, whole operation denied, naming the rule.
    let more = send_batch(vec![envelope(member.id, 3), envelope(member.id, 4)]);
    let reply = harness.post(&request_at(member.account, &more, 2, 0)).await;
    assert_denied(&reply, "rate limit: sender");
    let reason = reply.1["reason"].as_str().unwrap();
    assert!(
        reason.contains("3 message envelopes per minute") && reason.contains("carries 2 more"),
        "{reason}"
    );
    // One more fits (3 of 3).
    assert_eq!(
        harness
            .post(&request_at(member.account, &send(member.id, 5), 2, 0))
            .await
            .1,
        json!({"approved": true})
    );
    // A call that carries no envelope (the CSK commitment) is not a message: it reaches the
    // policy, whatever its answer.
    let commit: Bytes = MemberAccount::executeCall {
        data: Cluster::commitClusterSharedKeyCall {
            epoch: 0,
            commitment: B256::repeat_byte(0x55),
        }
        .abi_encode()
        .into(),
    }
    .abi_encode()
    .into();
    let reply = harness
        .post(&request_at(member.account, &commit, 3, 0))
        .await;
    assert!(
        reply.1 == json!({"approved": true})
            || reply.1["reason"].as_str().unwrap().starts_with("policy:"),
        "{}",
        reply.1
    );

    // An operation the policy denies takes nothing from the bucket: three envelopes to a member
    // that does not exist, then three to an active one, from a second member's full bucket.
    let member2 = register(&harness, "node-2").await;
    let nowhere = send_batch((1..=3).map(|id| envelope(99, id)).collect());
    assert_denied(
        &harness
            .post(&request_at(member2.account, &nowhere, 1, 0))
            .await,
        "policy: ",
    );
    let three = send_batch((1..=3).map(|id| envelope(member.id, id)).collect());
    assert_eq!(
        harness
            .post(&request_at(member2.account, &three, 1, 0))
            .await
            .1,
        json!({"approved": true})
    );
}
