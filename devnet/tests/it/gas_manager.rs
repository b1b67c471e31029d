//! The gas manager emulator on a real local chain, end to end with the devnet bundler and a
//! webhook stand-in. One behaviour per test, grouped by what the reader looks for:
//!
//! - [`sponsorship`]: sponsored registration and messages (the devnet bundler and alto), and the
//!   ERC-7677 stub → estimate → final data flow;
//! - [`refusals`]: calls the policy refuses, with its reason;
//! - [`webhook`]: what the gas manager sends the webhook, and a webhook that refuses its
//!   credentials or cannot be reached;
//! - [`bad_input`]: bad JSON-RPC input and a bad sponsor key, each answered clearly;
//! - [`paymaster_data`]: the paymaster hash and data against the VerifyingPaymaster contract;
//! - [`sender`]: the client side (`SponsoredSender`): concurrent sends, independent nonce keys,
//!   and the field note 5 regression (a nonce read that fails must fail loudly);
//! - [`binaries`]: the command line and the real `bundler` / `gas-manager` binaries.
//!
//! Every test that needs a chain starts its own (tests run in processes of their own); the
//! shared set-up is here.

mod bad_input;
mod binaries;
mod paymaster_data;
mod refusals;
mod sender;
mod sponsorship;
mod webhook;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::Provider;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use attestmesh_bindings::ENTRY_POINT_V07;
use attestmesh_bindings::cluster::Cluster;
use attestmesh_bindings::paymaster::VerifyingPaymaster;
use attestmesh_chain::{ChainClient, SendOptions, SponsoredSender, dummy_signature};
use attestmesh_devnet::bundler::BundlerHandle;
use attestmesh_devnet::gas_manager::{
    GasManager, GasManagerConfig, GasManagerHandle, WebhookSecret,
};
use attestmesh_devnet::local_chain::LocalChain;
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
    Registration, TestCluster, chain_with_member, registration, rpc_ok, start_bundler,
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

impl Webhook {
    /// Every body received so far.
    fn seen(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }
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

/// The gas manager's configuration on `chain`, estimating with the bundler at `bundler_url` and
/// asking the webhook at `webhook` with `secret`.
fn gas_manager_config(
    chain: &LocalChain,
    bundler_url: &Url,
    webhook: &Url,
    secret: &str,
) -> GasManagerConfig {
    GasManagerConfig::new(
        chain.rpc_url().clone(),
        31337,
        bundler_url.clone(),
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
    let (chain, cluster, account) = chain_with_member().await;
    let bundler = start_bundler(&chain).await;
    let (webhook, webhook_state) = start_webhook(&chain, cluster.address).await;
    let gas_manager = GasManager::spawn(gas_manager_config(
        &chain,
        bundler.url(),
        &webhook.url,
        SECRET,
    ))
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

impl Devnet {
    /// The VerifyingPaymaster's deposit at the EntryPoint.
    async fn paymaster_deposit(&self) -> U256 {
        let client = self.chain.operator_client();
        VerifyingPaymaster::new(
            self.chain.deployment().verifying_paymaster,
            client.provider().clone(),
        )
        .getDeposit()
        .call()
        .await
        .unwrap()
    }
}

/// The devnet account's sender, sponsored by the devnet's gas manager.
fn sponsored_sender(devnet: &Devnet, owner: PrivateKeySigner) -> SponsoredSender {
    let options = SendOptions {
        receipt_timeout: Duration::from_secs(30),
        poll_interval: Duration::from_millis(100),
        transient_attempts: 2,
        backoff: Duration::from_millis(50),
    };
    sender_via(
        &devnet.chain,
        devnet.bundler.url(),
        devnet.gas_manager.url(),
        POLICY,
        owner,
        devnet.account,
    )
    .with_options(options)
}

/// `account`'s sender on `policy`, through `bundler` and `gas_manager`.
pub fn sender_via(
    chain: &LocalChain,
    bundler: &Url,
    gas_manager: &Url,
    policy: &str,
    owner: PrivateKeySigner,
    account: Address,
) -> SponsoredSender {
    SponsoredSender::new(
        chain.operator_client().clone(),
        bundler.clone(),
        gas_manager.clone(),
        policy,
        ENTRY_POINT_V07,
        owner,
        account,
    )
    .unwrap()
}

fn message(recipient: u64, envelope: u8) -> Cluster::sendCall {
    Cluster::sendCall {
        recipientMemberId: recipient,
        envelopeId: B256::repeat_byte(envelope),
        ciphertext: Bytes::from(vec![0xc1; 48]),
    }
}

/// The devnet's node after its sponsored registration: the node holds no ETH, so the gas
/// manager → webhook → bundler → EntryPoint path paid.
struct Registered {
    registration: Registration,
    sender: SponsoredSender,
    receipt: UserOperationReceipt,
    member: Cluster::Member,
}

/// Registers the devnet's account as "node-1" through the gas manager
/// (alchemy_requestGasAndPaymasterAndData, one webhook request).
async fn register(devnet: &Devnet) -> Registered {
    let registration = registration(&devnet.chain, &devnet.cluster, devnet.account, "node-1").await;
    let sender = sponsored_sender(devnet, registration.owner.clone());
    let receipt = sender
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
    Registered {
        registration,
        sender,
        receipt,
        member,
    }
}

/// `call_data` of the registered account sponsored the ERC-7677 way, as a wallet does it:
/// `pm_getPaymasterStubData` → the bundler's estimate → `pm_getPaymasterData` → the owner's
/// signature (two webhook requests). The stub reply, and the op ready for
/// eth_sendUserOperation with its hash.
async fn sponsor_the_erc7677_way(
    devnet: &Devnet,
    node: &Registered,
    call_data: Bytes,
) -> (PaymasterData, UserOperation, B256) {
    let block = devnet
        .chain
        .operator_client()
        .provider()
        .get_block_by_number(Default::default())
        .await
        .unwrap()
        .unwrap();
    let priority = U256::from(1_000_000_000u64);
    let mut op = UserOperation {
        sender: devnet.account,
        nonce: node.sender.nonce().await.unwrap(),
        factory: None,
        factory_data: None,
        call_data,
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
    op.paymaster = Some(stub.paymaster);
    op.paymaster_verification_gas_limit = stub.paymaster_verification_gas_limit;
    op.paymaster_post_op_gas_limit = stub.paymaster_post_op_gas_limit;
    op.paymaster_data = Some(stub.paymaster_data.clone());
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
        node.registration
            .owner
            .sign_message_sync(hash.as_slice())
            .unwrap()
            .as_bytes()
            .to_vec(),
    );
    (stub, op, hash)
}

/// The params of an alchemy_requestGasAndPaymasterAndData request for the registration of the
/// devnet's account: valid in every field when `policy` and `entry_point` are the served ones.
fn alchemy_request(
    devnet: &Devnet,
    registration: &Registration,
    policy: &str,
    entry_point: Address,
) -> Value {
    json!([{
        "policyId": policy,
        "entryPoint": entry_point,
        "dummySignature": dummy_signature(),
        "userOperation": {"sender": devnet.account, "nonce": "0x00", "callData": registration.call_data},
    }])
}
