//! Command-line arguments of `attestmesh-devnet gas-manager`, and the command itself. Flags are
//! prefixed `gas-manager.` so that `up` can later flatten them beside other emulators'.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::signers::local::PrivateKeySigner;
use attestmesh_bindings::ENTRY_POINT_V07;
use tracing::info;
use url::Url;

use super::LOG_TARGET;
use super::error::Result;
use super::server::{GasManager, GasManagerConfig};
use super::webhook::WebhookSecret;
use crate::bundler::DEFAULT_MAX_BODY_BYTES;

/// Run the gas manager emulator (Alchemy's alchemy_requestGasAndPaymasterAndData and ERC-7677
/// pm_* methods) for a VerifyingPaymaster, asking a paymaster webhook before signing.
#[derive(Debug, Clone, clap::Args)]
pub struct GasManagerArgs {
    /// Address to listen on (loopback by default).
    #[arg(
        long = "gas-manager.listen",
        env = "ATTESTMESH_GAS_MANAGER_LISTEN",
        default_value = "127.0.0.1:4338"
    )]
    pub listen: SocketAddr,

    /// The chain's JSON-RPC URL.
    #[arg(
        long = "gas-manager.rpc-url",
        env = "ATTESTMESH_GAS_MANAGER_RPC_URL",
        default_value = "http://127.0.0.1:8545"
    )]
    pub rpc_url: Url,

    /// The chain id the RPC must serve.
    #[arg(
        long = "gas-manager.chain-id",
        env = "ATTESTMESH_GAS_MANAGER_CHAIN_ID",
        default_value_t = 31337
    )]
    pub chain_id: u64,

    /// The bundler's JSON-RPC URL (the devnet bundler or @pimlico/alto), for gas estimation.
    #[arg(
        long = "gas-manager.bundler-url",
        env = "ATTESTMESH_GAS_MANAGER_BUNDLER_URL",
        default_value = "http://127.0.0.1:4337"
    )]
    pub bundler_url: Url,

    /// The VerifyingPaymaster's address.
    #[arg(
        long = "gas-manager.paymaster",
        env = "ATTESTMESH_GAS_MANAGER_PAYMASTER"
    )]
    pub paymaster: Address,

    /// The paymaster's verifying signer key, 32-byte hex (anvil's dev key 1 on the devnet).
    #[arg(
        long = "gas-manager.sponsor-key",
        env = "ATTESTMESH_GAS_MANAGER_SPONSOR_KEY",
        hide_env_values = true,
        value_parser = crate::bundler::KeyParser
    )]
    pub sponsor_key: PrivateKeySigner,

    /// The paymaster webhook's URL.
    #[arg(
        long = "gas-manager.webhook-url",
        env = "ATTESTMESH_GAS_MANAGER_WEBHOOK_URL"
    )]
    pub webhook_url: Url,

    /// The secret the webhook expects as `Authorization: Bearer <secret>`.
    #[arg(
        long = "gas-manager.webhook-secret",
        env = "ATTESTMESH_GAS_MANAGER_WEBHOOK_SECRET",
        hide_env_values = true,
        value_parser = parse_secret
    )]
    pub webhook_secret: WebhookSecret,

    /// A policy id served; repeat the flag for more. In the environment variable, separate
    /// them with commas.
    #[arg(
        long = "gas-manager.policy-id",
        env = "ATTESTMESH_GAS_MANAGER_POLICY_IDS",
        value_delimiter = ',',
        required = true
    )]
    pub policy_ids: Vec<String>,

    /// The EntryPoint served (v0.7).
    #[arg(
        long = "gas-manager.entry-point",
        env = "ATTESTMESH_GAS_MANAGER_ENTRY_POINT",
        default_value_t = ENTRY_POINT_V07
    )]
    pub entry_point: Address,

    /// Seconds a sponsorship stays valid (validUntil = chain time + this).
    #[arg(
        long = "gas-manager.validity-secs",
        env = "ATTESTMESH_GAS_MANAGER_VALIDITY_SECS",
        default_value_t = super::DEFAULT_VALIDITY.as_secs()
    )]
    pub validity_secs: u64,

    /// The most one sponsored operation may cost the paymaster, in wei: no operation whose
    /// EntryPoint maximum cost (every gas limit × maxFeePerGas) is above it is signed, and the
    /// signed maxCost is enforced by the paymaster on chain.
    #[arg(
        long = "gas-manager.max-cost-per-op-wei",
        env = "ATTESTMESH_GAS_MANAGER_MAX_COST_PER_OP_WEI",
        default_value_t = U256::from(super::DEFAULT_MAX_COST_PER_OP_WEI)
    )]
    pub max_cost_per_op_wei: U256,

    /// Largest request body accepted, in bytes (larger ones get HTTP 413).
    #[arg(
        long = "gas-manager.max-body-bytes",
        env = "ATTESTMESH_GAS_MANAGER_MAX_BODY_BYTES",
        default_value_t = DEFAULT_MAX_BODY_BYTES
    )]
    pub max_body_bytes: usize,
}

impl GasManagerArgs {
    /// The gas manager configuration these arguments describe.
    pub fn config(&self) -> GasManagerConfig {
        GasManagerConfig {
            rpc_url: self.rpc_url.clone(),
            chain_id: self.chain_id,
            bundler_url: self.bundler_url.clone(),
            paymaster: self.paymaster,
            sponsor: self.sponsor_key.clone(),
            webhook_url: self.webhook_url.clone(),
            webhook_secret: self.webhook_secret.clone(),
            policy_ids: self.policy_ids.clone(),
            entry_point: self.entry_point,
            listen: self.listen,
            validity: Duration::from_secs(self.validity_secs),
            max_body_bytes: self.max_body_bytes,
            max_cost_per_op: self.max_cost_per_op_wei,
        }
    }
}

/// Serve until `shutdown` completes.
pub async fn run(args: GasManagerArgs, shutdown: impl Future<Output = ()>) -> Result<()> {
    let handle = GasManager::spawn(args.config()).await?;
    info!(target: LOG_TARGET, url = %handle.url(), "gas manager ready; point clients' gas manager URL here");
    handle.run_until(shutdown).await?;
    info!(target: LOG_TARGET, "gas manager stopped");
    Ok(())
}

/// A non-empty secret (its `Debug` is redacted, so the parsed arguments can be logged).
fn parse_secret(value: &str) -> std::result::Result<WebhookSecret, String> {
    if value.is_empty() {
        return Err("the webhook secret must not be empty".into());
    }
    Ok(WebhookSecret::new(value))
}
