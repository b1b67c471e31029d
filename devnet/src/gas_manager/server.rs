//! Starting and stopping the gas manager, with its preconditions checked first.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::signers::local::PrivateKeySigner;
use attestmesh_bindings::ENTRY_POINT_V07;
use attestmesh_bindings::paymaster::VerifyingPaymaster;
use attestmesh_chain::{ChainClient, RpcClient};
use tracing::info;
use url::Url;

use super::LOG_TARGET;
use super::error::{GasManagerError, Result};
use super::service::GasManagerService;
use super::webhook::{WebhookClient, WebhookSecret};
use crate::bundler::jsonrpc_server::{DEFAULT_MAX_BODY_BYTES, HttpServer, router};

/// How long a sponsorship signature stays valid by default: long enough for a slow bundler,
/// short enough that a leaked op cannot be replayed much later.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(300);

/// The most one sponsored operation may cost the paymaster by default: 0.05 ETH. Alchemy's
/// policies have the same knob ("max spend per UO"). This emulator serves the devnet, whose
/// anvil quotes 2 × base fee + 1 gwei (about 3 gwei at its start, more while many nodes join in
/// one block): its largest operation, a 64-envelope batch of about 3M gas, stays well under it
/// even at 10 gwei, while one operation can no longer move more than 1/160 of the 8 ETH the
/// drain of issue 14 took. On Base an operator sets it near the webhook's 0.005 ETH cap.
pub const DEFAULT_MAX_COST_PER_OP_WEI: u128 = 50_000_000_000_000_000;
/// What the gas manager sponsors, with which key, after asking whom.
#[derive(Debug, Clone)]
pub struct GasManagerConfig {
    /// The chain's JSON-RPC.
    pub rpc_url: Url,
    /// The chain id the RPC must serve.
    pub chain_id: u64,
    /// The bundler asked for `eth_estimateUserOperationGas` (this crate's or @pimlico/alto).
    pub bundler_url: Url,
    /// The VerifyingPaymaster whose deposit pays.
    pub paymaster: Address,
    /// The paymaster's verifying signer (LocalChain::sponsor on the devnet).
    pub sponsor: PrivateKeySigner,
    /// The paymaster webhook asked before every signature.
    pub webhook_url: Url,
    /// Sent as `Authorization: Bearer <secret>`.
    pub webhook_secret: WebhookSecret,
    /// The policy ids served.
    pub policy_ids: Vec<String>,
    /// The one EntryPoint served.
    pub entry_point: Address,
    /// Where to listen (loopback by default; port 0 picks a free one).
    pub listen: SocketAddr,
    /// validUntil = chain time + this.
    pub validity: Duration,
    /// Larger request bodies get HTTP 413.
    pub max_body_bytes: usize,
    /// No operation whose EntryPoint maximum cost is above this (wei) is signed; the signed
    /// maxCost is the paymaster's own limit on chain.
    pub max_cost_per_op: U256,
}

impl GasManagerConfig {
    /// EntryPoint v0.7, 127.0.0.1 on a free port, [`DEFAULT_VALIDITY`], the default body limit.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rpc_url: Url,
        chain_id: u64,
        bundler_url: Url,
        paymaster: Address,
        sponsor: PrivateKeySigner,
        webhook_url: Url,
        webhook_secret: WebhookSecret,
        policy_ids: Vec<String>,
    ) -> Self {
        Self {
            rpc_url,
            chain_id,
            bundler_url,
            paymaster,
            sponsor,
            webhook_url,
            webhook_secret,
            policy_ids,
            entry_point: ENTRY_POINT_V07,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            validity: DEFAULT_VALIDITY,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_cost_per_op: U256::from(DEFAULT_MAX_COST_PER_OP_WEI),
        }
    }
}

/// The gas manager emulator. See [`GasManager::spawn`].
#[derive(Debug)]
pub struct GasManager;

impl GasManager {
    /// Checks its preconditions (chain id, the paymaster's code, EntryPoint and signer, the
    /// bundler's EntryPoint, at least one policy), then serves until the handle is shut down or
    /// dropped. Must be called inside a tokio runtime.
    pub async fn spawn(config: GasManagerConfig) -> Result<GasManagerHandle> {
        let policies: BTreeSet<String> = config.policy_ids.iter().cloned().collect();
        if policies.is_empty() || policies.iter().any(String::is_empty) {
            return Err(GasManagerError::Config(
                "give at least one policy id, none of them empty".into(),
            ));
        }
        if config.max_cost_per_op.is_zero() {
            return Err(GasManagerError::Config(
                "the per-operation cost cap must be above 0 wei: nothing could be sponsored".into(),
            ));
        }
        let chain = ChainClient::connect(&config.rpc_url, Some(config.chain_id)).await?;
        chain
            .require_code("VerifyingPaymaster", config.paymaster)
            .await?;
        let paymaster = VerifyingPaymaster::new(config.paymaster, chain.provider().clone());
        let signer = paymaster
            .verifyingSigner()
            .call()
            .await
            .map_err(|e| chain.call_error("VerifyingPaymaster.verifyingSigner", e))?;
        let sponsor = config.sponsor.address();
        if signer != sponsor {
            return Err(GasManagerError::WrongSponsor {
                sponsor,
                signer,
                paymaster: config.paymaster,
            });
        }
        let entry_point = paymaster
            .entryPoint()
            .call()
            .await
            .map_err(|e| chain.call_error("VerifyingPaymaster.entryPoint", e))?;
        if entry_point != config.entry_point {
            return Err(GasManagerError::WrongEntryPoint {
                paymaster: config.paymaster,
                expected: config.entry_point,
                actual: entry_point,
            });
        }

        let bundler = RpcClient::new("bundler", config.bundler_url.clone())?;
        let served: Vec<Address> = bundler
            .call("eth_supportedEntryPoints", serde_json::json!([]))
            .await
            .map_err(|e| GasManagerError::Bundler(e.to_string()))?;
        if !served.contains(&config.entry_point) {
            return Err(GasManagerError::Bundler(format!(
                "the bundler at {} serves EntryPoints {served:?}, not {}",
                config.bundler_url, config.entry_point
            )));
        }
        let webhook = WebhookClient::new(config.webhook_url.clone(), config.webhook_secret)
            .map_err(|e| {
                GasManagerError::Config(format!("cannot build the webhook HTTP client: {e}"))
            })?;

        let service = GasManagerService {
            chain,
            bundler,
            webhook,
            paymaster: config.paymaster,
            sponsor: config.sponsor,
            policies: policies.clone(),
            entry_point: config.entry_point,
            chain_id: config.chain_id,
            validity: config.validity,
            max_cost_per_op: config.max_cost_per_op,
        };
        let server = HttpServer::start(
            "the gas manager's JSON-RPC",
            config.listen,
            router(Arc::new(service), config.max_body_bytes),
        )
        .await?;
        let url = crate::bundler::service_url(server.local_addr()).map_err(|e| {
            GasManagerError::Config(format!("the listening address does not make a URL: {e}"))
        })?;
        info!(
            target: LOG_TARGET,
            %url,
            paymaster = %config.paymaster,
            %sponsor,
            bundler = %config.bundler_url,
            webhook = %config.webhook_url,
            policies = ?policies,
            chain_id = config.chain_id,
            max_cost_per_op_wei = %config.max_cost_per_op,
            "gas manager listening"
        );
        Ok(GasManagerHandle {
            server,
            url,
            paymaster: config.paymaster,
        })
    }
}

/// A running gas manager. Dropping it stops the server at once.
#[derive(Debug)]
pub struct GasManagerHandle {
    server: HttpServer,
    url: Url,
    paymaster: Address,
}

impl GasManagerHandle {
    /// The JSON-RPC URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The paymaster it signs for.
    pub fn paymaster(&self) -> Address {
        self.paymaster
    }

    /// Stops accepting and lets in-flight requests finish.
    pub async fn shutdown(self) -> Result<()> {
        Ok(self.server.shutdown().await?)
    }

    /// Serves until `signal` completes, then shuts down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<()> {
        Ok(self.server.run_until(signal).await?)
    }
}
