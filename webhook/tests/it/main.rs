//! Integration tests of attestmesh-webhook: the real service in-process (and the real binary in
//! `cli`) against a real local chain (anvil + EntryPoint + the deploy script).

// A failed unwrap is a failed test, with the reason in the panic message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod bad_input;
mod cli;
mod decisions;
mod fail_closed;
mod money;
mod proof;
mod rate_limit;
mod startup;

use alloy::primitives::{Address, B256, Bytes, keccak256};
use alloy::signers::local::PrivateKeySigner;
use attestmesh_devnet::dstack_simulator::keys::kms_root_from_seed;
use attestmesh_devnet::local_chain::{LocalChain, LocalChainConfig};
use attestmesh_webhook::{Webhook, WebhookConfig, WebhookHandle, WebhookSecret};
use serde_json::{Value, json};

/// The shared secret every harness configures.
pub const SECRET: &str = "attestmesh-webhook-test-secret";
/// The gas-manager policy id every harness maps to its cluster.
pub const POLICY: &str = "policy-e2e";
/// anvil's default chain id (LocalChainConfig::default()).
pub const CHAIN_ID: u64 = 31337;

/// The devnet seed of the KMS root the tests' dstack simulators use and their cluster allowlists.
pub const KMS_SEED: &str = "attestmesh.webhook-test.kms-root";

/// The address of [`KMS_SEED`]'s KMS root.
pub fn kms_root() -> Address {
    let root = kms_root_from_seed(KMS_SEED).unwrap();
    PrivateKeySigner::from_slice(&root.to_bytes())
        .unwrap()
        .address()
}

/// The default log filter of these tests (the service's logs, shown for failing tests or with
/// --nocapture); `RUST_LOG` overrides it.
pub const LOG_FILTER: &str = "attestmesh::webhook=debug";

/// A local chain with one cluster that allowlists [`kms_root`].
#[derive(Debug)]
pub struct ClusterChain {
    pub chain: LocalChain,
    pub cluster: Address,
}

impl ClusterChain {
    pub async fn start() -> Self {
        attestmesh_devnet::test_logs::init(LOG_FILTER);
        let chain = LocalChain::start(LocalChainConfig::default())
            .await
            .unwrap();
        let cluster = chain
            .create_cluster(
                B256::repeat_byte(0x11),
                0x0a58_0000,
                16,
                vec![kms_root()],
                vec![keccak256("attestmesh.webhook-test.compose")],
            )
            .await
            .unwrap();
        Self { chain, cluster }
    }

    /// The webhook configuration for this chain: [`POLICY`] → the cluster, [`SECRET`], a free
    /// loopback port.
    pub fn config(&self) -> WebhookConfig {
        let mut config = WebhookConfig::new(
            self.chain.rpc_url().clone(),
            CHAIN_ID,
            WebhookSecret::new(SECRET).unwrap(),
        )
        .with_policy(POLICY, self.cluster);
        config.listen = "127.0.0.1:0".parse().unwrap();
        config
    }
}

/// A chain with a cluster and a webhook serving it.
#[derive(Debug)]
pub struct Harness {
    pub chain: ClusterChain,
    pub webhook: WebhookHandle,
    pub http: reqwest::Client,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut WebhookConfig)) -> Self {
        let chain = ClusterChain::start().await;
        let mut config = chain.config();
        adjust(&mut config);
        let webhook = Webhook::spawn(config).await.unwrap();
        Self {
            chain,
            webhook,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.webhook.local_addr())
    }

    /// POSTs `body` to `/` with the right secret; returns the status and the JSON reply.
    pub async fn post(&self, body: &Value) -> (u16, Value) {
        self.send("/", Some(SECRET), body.to_string().into_bytes())
            .await
    }

    /// POSTs raw bytes to `path`, with `Authorization: Bearer <secret>` when `secret` is given.
    pub async fn send(&self, path: &str, secret: Option<&str>, body: Vec<u8>) -> (u16, Value) {
        let mut request = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body);
        if let Some(secret) = secret {
            request = request.bearer_auth(secret);
        }
        into_json(request.send().await.unwrap()).await
    }
}

/// How long a test waits for an answer before calling it a hang. A guard against hanging
/// until nextest's kill, not a latency bound: the tests assert what the service answers, never
/// how fast (`make bench` measures that, in `bench/RESULTS.md`).
pub const HANG_GUARD: std::time::Duration = std::time::Duration::from_secs(60);

/// `future`'s output, or a failed test saying that `what` hung.
pub async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(HANG_GUARD, future)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{what}: no answer within {HANG_GUARD:?}, so it hangs (a hang guard, not a \
                 latency check)"
            )
        })
}

/// The status and the body parsed as JSON (a non-JSON body fails the test: every reply of the
/// service is JSON).
pub async fn into_json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("reply ({status}) is not JSON ({err}): {text:?}"));
    (status, json)
}

/// A gas manager's webhook request: a v0.7 UserOperation (sender and callData matter to the
/// policy; the gas fields, ordinary for Base, to the operator's caps) for `policy_id` on
/// `chain_id`.
pub fn webhook_request(
    sender: Address,
    call_data: &Bytes,
    policy_id: &str,
    chain_id: Value,
) -> Value {
    json!({
        "userOperation": {
            "sender": sender,
            "nonce": "0x00",
            "callData": call_data,
            "callGasLimit": "0x0186a0",
            "verificationGasLimit": "0x07a120",
            "preVerificationGas": "0xea60",
            "maxFeePerGas": "0x02faf080",
            "maxPriorityFeePerGas": "0x0f4240",
            "signature": format!("0x{}", "ff".repeat(65)),
        },
        "policyId": policy_id,
        "chainId": chain_id,
        "webhookData": "",
    })
}

/// Asserts a 200 denial whose reason contains `needle`.
#[track_caller]
pub fn assert_denied(reply: &(u16, Value), needle: &str) {
    let (status, body) = reply;
    assert_eq!(*status, 200, "{body}");
    assert_eq!(body["approved"], json!(false), "{body}");
    let reason = body["reason"]
        .as_str()
        .unwrap_or_else(|| panic!("no reason: {body}"));
    assert!(
        reason.contains(needle),
        "reason {reason:?} does not contain {needle:?}"
    );
}

/// Asserts an error reply: `status`, `error` code, `approved: false`, and a reason.
#[track_caller]
pub fn assert_error(reply: &(u16, Value), status: u16, code: &str) {
    let (got, body) = reply;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["error"], json!(code), "{body}");
    assert_eq!(body["approved"], json!(false), "{body}");
    assert!(
        body["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
}
