//! The gas manager emulator on a real local chain, end to end with the devnet bundler and a
//! webhook stand-in: sponsored registration, a sponsored message, a refused call with the
//! policy's reason, the ERC-7677 flow, the paymaster hash against the contract, bad input; and
//! the field note 5 regression (a nonce read that fails must fail loudly).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::ServiceProcess;
use alloy::network::TransactionBuilder;
use alloy::primitives::aliases::U48;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use attestmesh_bindings::ENTRY_POINT_V07;
use attestmesh_bindings::cluster::Cluster;
use attestmesh_bindings::paymaster::VerifyingPaymaster;
use attestmesh_chain::{
    ChainClient, ChainError, NonceKey, SendOptions, SponsoredSender, UserOpError, dummy_signature,
};
use attestmesh_devnet::bundler::{BundlerHandle, packed};
use attestmesh_devnet::gas_manager::paymaster_data::{
    PAYMASTER_DATA_LEN, SponsorTerms, paymaster_hash, signed_paymaster_data, stub_paymaster_data,
};
use attestmesh_devnet::gas_manager::{
    GasManager, GasManagerConfig, GasManagerError, GasManagerHandle, WebhookSecret,
};
use attestmesh_devnet::local_chain::{LocalChain, LocalChainConfig};
use attestmesh_types::gas_manager::PaymasterData;
use attestmesh_types::webhook::{SponsoredCall, WebhookRequest, WebhookResponse};
use attestmesh_types::{UserOperation, UserOperationGasEstimate, UserOperationReceipt};
use axum::Router;
use axum::body::Bytes as Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use url::Url;

use crate::bundler::{
    TestCluster, assert_even_hex, create_cluster, execute, post_raw, registration, rpc_err, rpc_ok,
    start_bundler, wait_for_receipt,
};

const POLICY: &str = "attestmesh-devnet-policy";
const SECRET: &str = "webhook-shared-secret";

/// A tiny paymaster webhook implementing the wire contract with the real policy view
/// (`ChainClient::check_sponsorship`), the shared-secret check included. It keeps every body it
/// received so the test can check what the gas manager sent.
struct Webhook {
    chain: ChainClient,
    cluster: Address,
    seen: Mutex<Vec<Value>>,
}

/// A server task, aborted on drop.
struct Served {
    url: Url,
    task: JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(router: Router) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    Served { url, task }
}

async fn webhook(State(state): State<Arc<Webhook>>, headers: HeaderMap, body: Body) -> Response {
    let expected = format!("Bearer {SECRET}");
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(expected.as_str())
    {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "unauthorized"})),
        )
            .into_response();
    }
    let Ok(raw) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    state.seen.lock().unwrap().push(raw.clone());
    let Ok(request) = serde_json::from_value::<WebhookRequest>(raw) else {
        return (StatusCode::BAD_REQUEST, "not a webhook request").into_response();
    };
    let Ok(call) = serde_json::from_value::<SponsoredCall>(request.user_operation) else {
        return (
            StatusCode::BAD_REQUEST,
            "userOperation lacks sender/callData",
        )
            .into_response();
    };
    match state
        .chain
        .check_sponsorship(state.cluster, call.sender, call.call_data)
        .await
    {
        Ok(decision) => axum::Json(WebhookResponse {
            approved: decision.sponsorable,
            reason: (!decision.sponsorable).then_some(decision.reason),
        })
        .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn start_webhook(chain: &LocalChain, cluster: Address) -> (Served, Arc<Webhook>) {
    let state = Arc::new(Webhook {
        chain: ChainClient::connect(chain.rpc_url(), Some(31337))
            .await
            .unwrap(),
        cluster,
        seen: Mutex::new(Vec::new()),
    });
    let router = Router::new().fallback(webhook).with_state(state.clone());
    (serve(router).await, state)
}

fn gas_manager_config(
    chain: &LocalChain,
    bundler: &BundlerHandle,
    webhook: &Url,
    secret: &str,
) -> GasManagerConfig {
    GasManagerConfig::new(
        chain.rpc_url().clone(),
        31337,
        bundler.url().clone(),
        chain.deployment().verifying_paymaster,
        chain.sponsor().clone(),
        webhook.clone(),
        WebhookSecret::new(secret),
        vec![POLICY.to_string()],
    )
}

/// Chain, cluster, a deployed member account, bundler, webhook and gas manager.
struct Devnet {
    chain: LocalChain,
    cluster: TestCluster,
    account: Address,
    bundler: BundlerHandle,
    webhook: Served,
    webhook_state: Arc<Webhook>,
    gas_manager: GasManagerHandle,
}

async fn devnet() -> Devnet {
    let chain = LocalChain::start(LocalChainConfig::default())
        .await
        .unwrap();
    let cluster = create_cluster(&chain).await;
    let account = chain
        .add_member_account(cluster.address, "node-1")
        .await
        .unwrap();
    let bundler = start_bundler(&chain).await;
    let (webhook, webhook_state) = start_webhook(&chain, cluster.address).await;
    let gas_manager = GasManager::spawn(gas_manager_config(&chain, &bundler, &webhook.url, SECRET))
        .await
        .unwrap();
    Devnet {
        chain,
        cluster,
        account,
        bundler,
        webhook,
        webhook_state,
        gas_manager,
    }
}

fn sender(devnet: &Devnet, owner: PrivateKeySigner) -> SponsoredSender {
    let options = SendOptions {
        receipt_timeout: Duration::from_secs(30),
        poll_interval: Duration::from_millis(100),
        transient_attempts: 2,
        backoff: Duration::from_millis(50),
    };
    SponsoredSender::new(
        devnet.chain.operator_client().clone(),
        devnet.bundler.url().clone(),
        devnet.gas_manager.url().clone(),
        POLICY,
        ENTRY_POINT_V07,
        owner,
        devnet.account,
    )
    .unwrap()
    .with_options(options)
}

fn message(recipient: u64, envelope: u8) -> Cluster::sendCall {
    Cluster::sendCall {
        recipientMemberId: recipient,
        envelopeId: B256::repeat_byte(envelope),
        ciphertext: Bytes::from(vec![0xc1; 48]),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sponsored_registration_message_and_refusal_end_to_end() {
    let devnet = devnet().await;
    let client = devnet.chain.operator_client();
    let paymaster = devnet.chain.deployment().verifying_paymaster;
    let deposit_before = VerifyingPaymaster::new(paymaster, client.provider().clone())
        .getDeposit()
        .call()
        .await
        .unwrap();

    // Registration: the node holds no ETH; gas manager → webhook → bundler → EntryPoint.
    let registration = registration(&devnet.chain, &devnet.cluster, devnet.account, "node-1").await;
    let sender = sender(&devnet, registration.owner.clone());
    let receipt = sender
        .send(registration.call_data.clone(), None)
        .await
        .unwrap();
    assert!(receipt.success);
    assert_eq!(receipt.paymaster, Some(paymaster), "the paymaster paid");
    let member = client
        .member_of(devnet.cluster.address, devnet.account)
        .await
        .unwrap()
        .expect("registered");
    assert_eq!(member.signer, registration.owner.address());
    assert_eq!(
        client.provider().get_balance(devnet.account).await.unwrap(),
        U256::ZERO,
        "the node holds no ETH"
    );

    // A sponsored message (to itself, the only member).
    let receipt = sender
        .send(execute(message(member.id, 1)), None)
        .await
        .unwrap();
    assert!(receipt.success);
    assert!(
        receipt.logs.iter().any(|log| log["address"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case(&devnet.cluster.address.to_string())),
        "MessageSent is among the op's logs"
    );
    assert_eq!(
        sender.nonce().await.unwrap(),
        U256::from(2),
        "nonces advance (field note 5)"
    );
    let deposit_after = VerifyingPaymaster::new(paymaster, client.provider().clone())
        .getDeposit()
        .call()
        .await
        .unwrap();
    assert!(
        deposit_after < deposit_before,
        "the paymaster's deposit paid for both"
    );

    // Not sponsorable: the policy's reason comes back through the gas manager.
    let err = sender
        .send(
            execute(Cluster::revokeMemberCall {
                memberId: member.id,
            }),
            None,
        )
        .await
        .unwrap_err();
    match &err {
        UserOpError::SponsorshipRefused { message, .. } => {
            assert!(
                message.contains("sponsorship denied by the paymaster webhook"),
                "{message}"
            );
            assert!(
                message.contains("member call is not a sponsored cluster function"),
                "{message}"
            );
        }
        other => panic!("expected a refusal, got {other}"),
    }
    // A replayed envelope id is refused by the policy too, before any gas is spent.
    let err = sender
        .send(execute(message(member.id, 1)), None)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("message envelope id already used"),
        "{err}"
    );

    // ERC-7677: stub data → bundler estimate → final data → the bundler includes it.
    let block = client
        .provider()
        .get_block_by_number(Default::default())
        .await
        .unwrap()
        .unwrap();
    let priority = U256::from(1_000_000_000u64);
    let mut op = UserOperation {
        sender: devnet.account,
        nonce: sender.nonce().await.unwrap(),
        factory: None,
        factory_data: None,
        call_data: execute(message(member.id, 2)),
        call_gas_limit: U256::ZERO,
        verification_gas_limit: U256::ZERO,
        pre_verification_gas: U256::ZERO,
        max_fee_per_gas: U256::from(block.header.base_fee_per_gas.unwrap()) * U256::from(2)
            + priority,
        max_priority_fee_per_gas: priority,
        paymaster: None,
        paymaster_verification_gas_limit: None,
        paymaster_post_op_gas_limit: None,
        paymaster_data: None,
        signature: dummy_signature(),
    };
    let context = json!({"policyId": POLICY});
    let gm = devnet.gas_manager.url();
    let stub: PaymasterData = serde_json::from_value(
        rpc_ok(
            gm,
            "pm_getPaymasterStubData",
            json!([op, ENTRY_POINT_V07, "0x7a69", context]),
        )
        .await,
    )
    .unwrap();
    assert_eq!(stub.is_final, Some(false));
    op.paymaster = Some(stub.paymaster);
    op.paymaster_verification_gas_limit = stub.paymaster_verification_gas_limit;
    op.paymaster_post_op_gas_limit = stub.paymaster_post_op_gas_limit;
    op.paymaster_data = Some(stub.paymaster_data);
    let estimate: UserOperationGasEstimate = serde_json::from_value(
        rpc_ok(
            devnet.bundler.url(),
            "eth_estimateUserOperationGas",
            json!([op, ENTRY_POINT_V07]),
        )
        .await,
    )
    .unwrap();
    op.call_gas_limit = estimate.call_gas_limit;
    op.verification_gas_limit = estimate.verification_gas_limit;
    op.pre_verification_gas = estimate.pre_verification_gas;
    let paid: PaymasterData = serde_json::from_value(
        rpc_ok(
            gm,
            "pm_getPaymasterData",
            json!([op, ENTRY_POINT_V07, 31337, context]),
        )
        .await,
    )
    .unwrap();
    op.paymaster_data = Some(paid.paymaster_data);
    let hash = op.hash(ENTRY_POINT_V07, 31337);
    op.signature = Bytes::from(
        registration
            .owner
            .sign_message_sync(hash.as_slice())
            .unwrap()
            .as_bytes()
            .to_vec(),
    );
    assert_eq!(
        rpc_ok(
            devnet.bundler.url(),
            "eth_sendUserOperation",
            json!([op, ENTRY_POINT_V07])
        )
        .await,
        json!(hash)
    );
    let receipt: UserOperationReceipt = wait_for_receipt(devnet.bundler.url(), hash).await;
    assert!(
        receipt.success && receipt.paymaster == Some(paymaster),
        "{receipt:?}"
    );

    // Everything the gas manager told the webhook was even-length hex, with the right shape.
    let seen = devnet.webhook_state.seen.lock().unwrap().clone();
    assert!(
        seen.len() >= 5,
        "the webhook was asked every time: {}",
        seen.len()
    );
    for body in &seen {
        assert_even_hex(body, "webhook request");
        assert_eq!(body["policyId"], POLICY);
        assert_eq!(body["chainId"], "0x7a69");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn paymaster_hash_matches_the_contracts_get_hash() {
    let chain = LocalChain::start(LocalChainConfig::default())
        .await
        .unwrap();
    let paymaster = chain.deployment().verifying_paymaster;
    let instance = VerifyingPaymaster::new(paymaster, chain.operator_client().provider().clone());
    // Every field distinct and non-trivial, an initCode and paymaster limits of both sizes.
    let op = UserOperation {
        sender: Address::repeat_byte(0x5a),
        nonce: U256::from(0x0102_0304_0506u64) << 64,
        factory: Some(Address::repeat_byte(0xfa)),
        factory_data: Some(Bytes::from(vec![0xde, 0xad, 0xbe, 0xef])),
        call_data: Bytes::from(vec![0x11; 77]),
        call_gas_limit: U256::from(123_456),
        verification_gas_limit: U256::from(654_321),
        pre_verification_gas: U256::from(55_555),
        max_fee_per_gas: U256::from(3_000_000_007u64),
        max_priority_fee_per_gas: U256::from(1_000_000_009u64),
        paymaster: Some(paymaster),
        paymaster_verification_gas_limit: Some(U256::from(98_765)),
        paymaster_post_op_gas_limit: Some(U256::from(4_321)),
        paymaster_data: Some(Bytes::from(vec![0u8; PAYMASTER_DATA_LEN])),
        signature: Bytes::from(vec![0x99; 65]),
    };
    let terms = SponsorTerms {
        valid_until: U48::from(1_900_000_000u64),
        valid_after: U48::from(1_700_000_000u64),
        max_cost: op.max_cost(),
    };
    let packed_op = packed::for_paymaster(&op.pack());
    let on_chain = instance
        .getHash(
            packed_op,
            terms.valid_until,
            terms.valid_after,
            terms.max_cost,
        )
        .call()
        .await
        .unwrap();
    assert_eq!(paymaster_hash(&op, 31337, paymaster, terms), on_chain);

    // The layout is the contract's: it parses back the terms that were signed.
    let data = signed_paymaster_data(chain.sponsor(), &op, 31337, paymaster, terms).unwrap();
    assert_eq!(data.len(), PAYMASTER_DATA_LEN);
    let mut with_data = op.clone();
    with_data.paymaster_data = Some(data.clone());
    let parsed = instance
        .parsePaymasterAndData(with_data.paymaster_and_data())
        .call()
        .await
        .unwrap();
    assert_eq!(
        (parsed.validUntil, parsed.validAfter, parsed.maxCost),
        (terms.valid_until, terms.valid_after, terms.max_cost)
    );
    assert_eq!(parsed.signature.as_ref(), &data[96..]);

    // And the signed data verifies on chain: validatePaymasterUserOp (called as the EntryPoint
    // with the op's maximum cost) reports no signature failure and the window that was signed.
    let validate = |signed: &UserOperation, max_cost: U256| {
        let input = VerifyingPaymaster::validatePaymasterUserOpCall {
            userOp: packed::for_paymaster(&signed.pack()),
            _1: B256::ZERO,
            maxCost: max_cost,
        }
        .abi_encode();
        TransactionRequest::default()
            .with_from(ENTRY_POINT_V07)
            .with_to(paymaster)
            .with_input(input)
    };
    let provider = chain.operator_client().provider().clone();
    let output = provider
        .call(validate(&with_data, op.max_cost()))
        .await
        .unwrap();
    let returned =
        VerifyingPaymaster::validatePaymasterUserOpCall::abi_decode_returns(&output).unwrap();
    let validation_data = returned.validationData;
    assert_eq!(
        validation_data & U256::from(1),
        U256::ZERO,
        "the sponsor's signature verifies"
    );
    assert_eq!(
        (validation_data >> 160) & U256::from(u64::MAX >> 16),
        U256::from(1_900_000_000u64),
        "validUntil"
    );
    // A maximum cost above the signed one reverts CostAboveSignedMaximum (AA33 in handleOps).
    let err = provider
        .call(validate(&with_data, op.max_cost() + U256::from(1)))
        .await
        .unwrap_err();
    let revert = err
        .as_error_resp()
        .and_then(|e| e.as_revert_data())
        .expect("revert data");
    assert!(
        attestmesh_chain::revert::decode(&revert).contains("CostAboveSignedMaximum"),
        "{}",
        attestmesh_chain::revert::decode(&revert)
    );
    // The stub never trips the cost check: its maximum is the largest there is.
    let mut stubbed = op.clone();
    stubbed.paymaster_data = Some(stub_paymaster_data());
    let output = provider
        .call(validate(&stubbed, U256::from(u128::MAX)))
        .await
        .unwrap();
    let returned =
        VerifyingPaymaster::validatePaymasterUserOpCall::abi_decode_returns(&output).unwrap();
    assert_eq!(
        returned.validationData & U256::from(1),
        U256::from(1),
        "dummy signature fails"
    );
    // A different key does not verify.
    let mut signed = op.clone();
    signed.paymaster_data = Some(
        signed_paymaster_data(&PrivateKeySigner::random(), &op, 31337, paymaster, terms).unwrap(),
    );
    let output = provider
        .call(validate(&signed, op.max_cost()))
        .await
        .unwrap();
    let returned =
        VerifyingPaymaster::validatePaymasterUserOpCall::abi_decode_returns(&output).unwrap();
    assert_eq!(returned.validationData & U256::from(1), U256::from(1));
}

/// Operations of one account sent at once (the agent sends endpoint envelopes to every peer in
/// parallel) all land: the sender queues them instead of letting two read the same nonce and
/// one fail with AA25.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_sends_from_one_account_all_land() {
    let devnet = devnet().await;
    let registration = registration(&devnet.chain, &devnet.cluster, devnet.account, "node-1").await;
    let sender = sender(&devnet, registration.owner.clone());
    sender
        .send(registration.call_data.clone(), None)
        .await
        .unwrap();
    let member = devnet
        .chain
        .operator_client()
        .member_of(devnet.cluster.address, devnet.account)
        .await
        .unwrap()
        .expect("registered");
    let sends = (1..=4u8).map(|envelope| {
        let sender = sender.clone();
        tokio::spawn(async move {
            sender
                .send(execute(message(member.id, envelope)), None)
                .await
        })
    });
    for send in sends.collect::<Vec<_>>() {
        let receipt = send.await.unwrap().expect("every concurrent send lands");
        assert!(receipt.success);
    }
    assert_eq!(sender.nonce().await.unwrap(), U256::from(5));
}

/// Independent streams of one account (envelopes, app messages) do not wait on each other:
/// operations on different ERC-4337 nonce keys are all submitted before any block is mined.
/// The chain mines nothing until both are in its pool, so a sender that held one lock across
/// keys (the first operation's receipt before the second's nonce read) would never get there.
#[tokio::test(flavor = "multi_thread")]
async fn operations_on_different_nonce_keys_do_not_wait_for_each_others_receipts() {
    let devnet = devnet().await;
    let registration = registration(&devnet.chain, &devnet.cluster, devnet.account, "node-1").await;
    let sender = sender(&devnet, registration.owner.clone());
    sender
        .send(registration.call_data.clone(), None)
        .await
        .unwrap();
    let member = devnet
        .chain
        .operator_client()
        .member_of(devnet.cluster.address, devnet.account)
        .await
        .unwrap()
        .expect("registered");
    let provider = devnet.chain.operator_client().provider().clone();
    provider
        .raw_request::<_, Value>("evm_setAutomine".into(), [false])
        .await
        .unwrap();
    let sends: Vec<_> = [1u64, 2]
        .into_iter()
        .map(|key| {
            let sender = sender.clone();
            tokio::spawn(async move {
                sender
                    .send_on(
                        NonceKey::new(key),
                        execute(message(member.id, key as u8)),
                        None,
                    )
                    .await
            })
        })
        .collect();
    // Inside the sender's 30 s receipt timeout: a first operation that timed out would release
    // a shared lock and let the second through for the wrong reason.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let pool: Value = provider
            .raw_request("txpool_status".into(), ())
            .await
            .unwrap();
        let pending = u64::from_str_radix(
            pool["pending"]
                .as_str()
                .unwrap_or("0x0")
                .trim_start_matches("0x"),
            16,
        )
        .unwrap_or(0);
        if pending >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second operation was never submitted while the first awaited its block: the \
             nonce keys are not independent (pool: {pool})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    provider
        .raw_request::<_, Value>("evm_mine".into(), ())
        .await
        .unwrap();
    let mut blocks = Vec::new();
    for send in sends {
        let receipt = send.await.unwrap().expect("both operations land");
        assert!(receipt.success);
        blocks.push(receipt.receipt.block_number);
    }
    assert_eq!(blocks[0], blocks[1], "both in the one block mined");
    for key in [1u64, 2] {
        assert_eq!(
            sender.nonce_on(NonceKey::new(key)).await.unwrap(),
            (U256::from(key) << 64) + U256::from(1),
            "key {key} advanced once"
        );
    }
}

/// Field note 5 regression: the nonce was once read through a bundler method that did not exist,
/// the error swallowed into nonce = 0. A chain RPC whose eth_call fails must make
/// `SponsoredSender::nonce()` (and so `send`) fail, naming the call.
#[tokio::test(flavor = "multi_thread")]
async fn nonce_read_fails_loudly_when_the_chain_rpc_errors_on_eth_call() {
    async fn broken_rpc(body: Body) -> Response {
        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let id = request["id"].clone();
        let reply = if request["method"] == "eth_chainId" {
            json!({"jsonrpc": "2.0", "id": id, "result": "0x7a69"})
        } else {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32000, "message": "eth_call is broken on purpose"}})
        };
        axum::Json(reply).into_response()
    }
    let rpc = serve(Router::new().fallback(broken_rpc)).await;
    let client = ChainClient::connect(&rpc.url, Some(31337)).await.unwrap();
    let nowhere = Url::parse("http://127.0.0.1:9/").unwrap();
    let sender = SponsoredSender::new(
        client,
        nowhere.clone(),
        nowhere,
        POLICY,
        ENTRY_POINT_V07,
        PrivateKeySigner::random(),
        Address::repeat_byte(0x11),
    )
    .unwrap()
    .with_options(SendOptions {
        transient_attempts: 2,
        backoff: Duration::from_millis(10),
        ..SendOptions::default()
    });

    let err = sender.nonce().await.unwrap_err();
    assert!(
        matches!(&err, UserOpError::Nonce(ChainError::Rpc { .. })),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("EntryPoint.getNonce") && text.contains("broken on purpose"),
        "{text}"
    );
    // send() stops at the nonce: it never reaches the (unreachable) gas manager.
    let err = sender
        .send(Bytes::from(vec![1, 2, 3, 4]), None)
        .await
        .unwrap_err();
    assert!(matches!(err, UserOpError::Nonce(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn gas_manager_answers_bad_input_with_clear_errors_and_keeps_serving() {
    let devnet = devnet().await;
    let gm = devnet.gas_manager.url();
    let registration = registration(&devnet.chain, &devnet.cluster, devnet.account, "node-1").await;
    let request = |policy: &str, entry_point: Address| {
        json!([{
            "policyId": policy,
            "entryPoint": entry_point,
            "dummySignature": dummy_signature(),
            "userOperation": {"sender": devnet.account, "nonce": "0x00", "callData": registration.call_data},
        }])
    };

    // The happy path works, and its reply is even-length hex throughout (rpc_ok checks).
    let result = rpc_ok(
        gm,
        "alchemy_requestGasAndPaymasterAndData",
        request(POLICY, ENTRY_POINT_V07),
    )
    .await;
    assert_eq!(
        result["paymaster"],
        json!(devnet.chain.deployment().verifying_paymaster)
    );
    assert_eq!(
        result["paymasterData"].as_str().unwrap().len(),
        2 + 2 * PAYMASTER_DATA_LEN
    );

    let (status, reply) = post_raw(gm, "{\"jsonrpc\":").await;
    assert_eq!(
        (status, reply["error"]["code"].as_i64()),
        (200, Some(-32700)),
        "{reply}"
    );
    let (code, message) = rpc_err(gm, "alchemy_requestPaymasterAndData", json!([])).await;
    assert_eq!(code, -32601);
    assert!(
        message.contains("alchemy_requestGasAndPaymasterAndData"),
        "{message}"
    );

    let (code, message) = rpc_err(
        gm,
        "alchemy_requestGasAndPaymasterAndData",
        request("other-policy", ENTRY_POINT_V07),
    )
    .await;
    assert_eq!(code, -32602);
    assert!(
        message.contains("\"other-policy\" is not served"),
        "{message}"
    );
    let (code, message) = rpc_err(
        gm,
        "alchemy_requestGasAndPaymasterAndData",
        request(POLICY, Address::repeat_byte(0x66)),
    )
    .await;
    assert_eq!(code, -32602);
    assert!(
        message.contains("entryPoint") && message.contains("not supported"),
        "{message}"
    );

    let mut missing = request(POLICY, ENTRY_POINT_V07);
    missing[0]["userOperation"]
        .as_object_mut()
        .unwrap()
        .remove("callData");
    let (code, message) = rpc_err(gm, "alchemy_requestGasAndPaymasterAndData", missing).await;
    assert_eq!(code, -32602);
    assert!(
        message.contains("userOperation") && message.contains("callData"),
        "{message}"
    );
    let mut odd = request(POLICY, ENTRY_POINT_V07);
    odd[0]["dummySignature"] = json!("0xabc");
    let (code, message) = rpc_err(gm, "alchemy_requestGasAndPaymasterAndData", odd).await;
    assert_eq!(code, -32602);
    assert!(message.contains("dummySignature"), "{message}");

    let op = json!({"sender": devnet.account, "nonce": "0x00", "callData": registration.call_data});
    let (code, message) = rpc_err(
        gm,
        "pm_getPaymasterStubData",
        json!([op, ENTRY_POINT_V07, "0x2105", {"policyId": POLICY}]),
    )
    .await;
    assert_eq!(code, -32602);
    assert!(message.contains("chain 8453 is not served"), "{message}");
    let (code, message) = rpc_err(
        gm,
        "pm_getPaymasterStubData",
        json!([op, ENTRY_POINT_V07, "0x7a69", {}]),
    )
    .await;
    assert_eq!(code, -32602);
    assert!(
        message.contains("context") && message.contains("policyId"),
        "{message}"
    );
    let mut unsized_op: UserOperation = serde_json::from_value(json!({
        "sender": devnet.account, "nonce": "0x00", "callData": registration.call_data, "callGasLimit": "0x01",
        "verificationGasLimit": "0x01", "preVerificationGas": "0x01", "maxFeePerGas": "0x01",
        "maxPriorityFeePerGas": "0x01", "signature": dummy_signature(),
    }))
    .unwrap();
    unsized_op.paymaster = Some(devnet.chain.deployment().verifying_paymaster);
    let (code, message) = rpc_err(
        gm,
        "pm_getPaymasterData",
        json!([unsized_op, ENTRY_POINT_V07, "0x7a69", {"policyId": POLICY}]),
    )
    .await;
    assert_eq!(code, -32602);
    assert!(
        message.contains("paymasterVerificationGasLimit"),
        "{message}"
    );

    let (status, _) = post_raw(gm, " ".repeat(2 << 20)).await;
    assert_eq!(status, 413);

    // A wrong shared secret: the webhook's 401 is named as a credentials problem.
    let wrong_secret = GasManager::spawn(gas_manager_config(
        &devnet.chain,
        &devnet.bundler,
        &devnet.webhook.url,
        "nope",
    ))
    .await
    .unwrap();
    let (code, message) = rpc_err(
        wrong_secret.url(),
        "alchemy_requestGasAndPaymasterAndData",
        request(POLICY, ENTRY_POINT_V07),
    )
    .await;
    assert_eq!(code, -32603);
    assert!(
        message.contains("refused the gas manager's credentials (HTTP 401)"),
        "{message}"
    );
    // A dead webhook: unreachable, said so.
    let dead = Url::parse("http://127.0.0.1:9/hook").unwrap();
    let dead_webhook = GasManager::spawn(gas_manager_config(
        &devnet.chain,
        &devnet.bundler,
        &dead,
        SECRET,
    ))
    .await
    .unwrap();
    let (code, message) = rpc_err(
        dead_webhook.url(),
        "alchemy_requestGasAndPaymasterAndData",
        request(POLICY, ENTRY_POINT_V07),
    )
    .await;
    assert_eq!(code, -32603);
    assert!(
        message.contains("paymaster webhook at http://127.0.0.1:9/hook unreachable"),
        "{message}"
    );

    // A sponsor key that is not the paymaster's signer is refused at start.
    let mut config =
        gas_manager_config(&devnet.chain, &devnet.bundler, &devnet.webhook.url, SECRET);
    config.sponsor = PrivateKeySigner::random();
    let err = GasManager::spawn(config).await.unwrap_err();
    assert!(matches!(err, GasManagerError::WrongSponsor { .. }), "{err}");

    // Still serving after all of that.
    assert_eq!(rpc_ok(gm, "eth_chainId", json!([])).await, json!("0x7a69"));
}

/// The gas manager must work with a production bundler too: registration and a message through
/// the real @pimlico/alto (estimation and submission), the same client flow.
#[tokio::test(flavor = "multi_thread")]
async fn sponsored_registration_and_message_through_alto() {
    let chain = LocalChain::start(LocalChainConfig::default())
        .await
        .unwrap();
    let cluster = create_cluster(&chain).await;
    let account = chain
        .add_member_account(cluster.address, "node-1")
        .await
        .unwrap();
    let logs = tempfile::tempdir().unwrap();
    // Port 0: alto's server picks one (read from its log).
    let alto = attestmesh_devnet::alto::Alto::start(
        chain.rpc_url(),
        0,
        &[chain.dev_key(4).unwrap()],
        &chain.dev_key(5).unwrap(),
        logs.path(),
    )
    .await
    .unwrap();
    let (webhook, _state) = start_webhook(&chain, cluster.address).await;
    let config = GasManagerConfig::new(
        chain.rpc_url().clone(),
        31337,
        alto.url().clone(),
        chain.deployment().verifying_paymaster,
        chain.sponsor().clone(),
        webhook.url.clone(),
        WebhookSecret::new(SECRET),
        vec![POLICY.to_string()],
    );
    let gas_manager = GasManager::spawn(config).await.unwrap();
    let registration = registration(&chain, &cluster, account, "node-1").await;
    let sender = SponsoredSender::new(
        chain.operator_client().clone(),
        alto.url().clone(),
        gas_manager.url().clone(),
        POLICY,
        ENTRY_POINT_V07,
        registration.owner.clone(),
        account,
    )
    .unwrap()
    .with_options(SendOptions {
        receipt_timeout: Duration::from_secs(60),
        poll_interval: Duration::from_millis(250),
        ..SendOptions::default()
    });

    let receipt = sender
        .send(registration.call_data.clone(), None)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}; alto log: {}",
                std::fs::read_to_string(alto.log())
                    .unwrap_or_else(|e| format!("(cannot read {}: {e})", alto.log().display()))
            )
        });
    assert!(receipt.success);
    let member = chain
        .operator_client()
        .member_of(cluster.address, account)
        .await
        .unwrap()
        .expect("registered");
    let receipt = sender
        .send(execute(message(member.id, 1)), None)
        .await
        .unwrap();
    assert!(receipt.success);
}

fn parse(argv: &[&str]) -> Result<attestmesh_devnet::cli::Command, clap::Error> {
    use clap::Parser;
    attestmesh_devnet::cli::Cli::try_parse_from(argv).map(|cli| cli.command)
}

#[test]
fn subcommands_parse_with_loopback_defaults_and_never_show_secrets() {
    use attestmesh_devnet::cli::Command;
    let key = format!("0x{}", "11".repeat(32));
    let Command::Bundler(args) = parse(&[
        "attestmesh-devnet",
        "bundler",
        "--bundler.executor-key",
        &key,
    ])
    .unwrap() else {
        panic!("not the bundler subcommand");
    };
    let config = args.config();
    assert_eq!(config.listen.to_string(), "127.0.0.1:4337");
    assert_eq!(
        (config.chain_id, config.entry_point),
        (31337, ENTRY_POINT_V07)
    );
    assert!(
        !format!("{args:?}").contains(&"11".repeat(32)),
        "the executor key stays out of Debug"
    );
    let err = parse(&[
        "attestmesh-devnet",
        "bundler",
        "--bundler.executor-key",
        "0x1234",
    ])
    .unwrap_err();
    assert!(
        !err.to_string().contains("0x1234"),
        "a bad key is not echoed: {err}"
    );

    let paymaster = Address::repeat_byte(0x22).to_string();
    let base = [
        "attestmesh-devnet",
        "gas-manager",
        "--gas-manager.paymaster",
        &paymaster,
        "--gas-manager.sponsor-key",
        &key,
        "--gas-manager.webhook-url",
        "http://127.0.0.1:8787/",
        "--gas-manager.webhook-secret",
        "s3cret-value",
    ];
    let err = parse(&base).unwrap_err();
    assert_eq!(
        err.kind(),
        clap::error::ErrorKind::MissingRequiredArgument,
        "a policy id is required"
    );
    let mut argv = base.to_vec();
    argv.extend([
        "--gas-manager.policy-id",
        "a",
        "--gas-manager.policy-id",
        "b",
    ]);
    let Command::GasManager(args) = parse(&argv).unwrap() else {
        panic!("not the gas-manager subcommand");
    };
    let config = args.config();
    assert_eq!(config.policy_ids, vec!["a".to_string(), "b".to_string()]);
    assert_eq!(config.listen.to_string(), "127.0.0.1:4338");
    assert_eq!(
        config.validity,
        attestmesh_devnet::gas_manager::DEFAULT_VALIDITY
    );
    assert_eq!(
        config.max_cost_per_op,
        U256::from(attestmesh_devnet::gas_manager::DEFAULT_MAX_COST_PER_OP_WEI)
    );
    let mut capped = argv.clone();
    capped.extend(["--gas-manager.max-cost-per-op-wei", "5000000000000000"]);
    let Command::GasManager(args) = parse(&capped).unwrap() else {
        panic!("not the gas-manager subcommand");
    };
    assert_eq!(
        args.config().max_cost_per_op,
        U256::from(5_000_000_000_000_000u64)
    );
    let debug = format!("{args:?} {config:?}");
    assert!(
        !debug.contains("s3cret-value") && !debug.contains(&"11".repeat(32)),
        "{debug}"
    );
}

/// Starts the real binary with `args` (listening on port 0); returns it and the URL its
/// `ready` line names, once eth_chainId answers there.
async fn start_binary(args: &[&str], ready: &str) -> (ServiceProcess, Url) {
    let mut child = ServiceProcess::start(args);
    let url = Url::parse(&child.logged(ready, "url").await).unwrap();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}).to_string();
    let reply: Value = reqwest::Client::new()
        .post(url.clone())
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{args:?} does not answer at {url}: {e}: {}", child.stderr()))
        .json()
        .await
        .unwrap();
    assert_eq!(reply["result"], "0x7a69");
    (child, url)
}

/// The real `attestmesh-devnet bundler` and `gas-manager` serve, and exit cleanly on SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn binaries_serve_until_sigterm() {
    let chain = LocalChain::start(LocalChainConfig::default())
        .await
        .unwrap();
    let hex_key =
        |signer: &PrivateKeySigner| format!("0x{}", alloy::hex::encode(signer.to_bytes()));
    let executor = hex_key(&chain.dev_key(3).unwrap());
    let (bundler, bundler_url) = start_binary(
        &[
            "bundler",
            "--bundler.listen",
            "127.0.0.1:0",
            "--bundler.rpc-url",
            chain.rpc_url().as_str(),
            "--bundler.executor-key",
            &executor,
        ],
        "bundler ready",
    )
    .await;
    let sponsor = hex_key(chain.sponsor());
    let paymaster = chain.deployment().verifying_paymaster.to_string();
    let (gas_manager, _) = start_binary(
        &[
            "gas-manager",
            "--gas-manager.listen",
            "127.0.0.1:0",
            "--gas-manager.rpc-url",
            chain.rpc_url().as_str(),
            "--gas-manager.bundler-url",
            bundler_url.as_str(),
            "--gas-manager.paymaster",
            &paymaster,
            "--gas-manager.sponsor-key",
            &sponsor,
            "--gas-manager.webhook-url",
            "http://127.0.0.1:9/",
            "--gas-manager.webhook-secret",
            SECRET,
            "--gas-manager.policy-id",
            POLICY,
        ],
        "gas manager ready",
    )
    .await;

    for (child, what) in [
        (gas_manager, "gas manager listening"),
        (bundler, "bundler listening"),
    ] {
        let (status, stderr) = child.terminate();
        assert!(status.success(), "exit {status}: {stderr}");
        assert!(stderr.contains(what), "{stderr}");
        assert!(
            !stderr.contains('\u{1b}'),
            "no ANSI codes when not on a terminal (field note 9): {stderr}"
        );
        assert!(
            !stderr.contains(&executor[2..]) && !stderr.contains(&sponsor[2..]),
            "no keys in logs: {stderr}"
        );
    }
}
