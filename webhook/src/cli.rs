//! The `attestmesh-webhook` command line: flags and environment → [`WebhookConfig`], logging,
//! and running until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use alloy::primitives::U256;
use clap::Parser;
use eyre::WrapErr;
use tracing::info;
use url::Url;

use crate::config::{
    DEFAULT_CAP_CALL_GAS_LIMIT, DEFAULT_CAP_MAX_COST_WEI, DEFAULT_CAP_MAX_FEE_PER_GAS,
    DEFAULT_CAP_PRE_VERIFICATION_GAS, DEFAULT_CAP_VERIFICATION_GAS_LIMIT, DEFAULT_CHAIN_TIMEOUT,
    DEFAULT_LISTEN, DEFAULT_MAX_BODY_BYTES, DEFAULT_MESSAGE_RATE_LIMIT_PER_MINUTE,
    DEFAULT_PENDING_WINDOW, DEFAULT_RATE_LIMIT_PER_MINUTE, GasCaps, PolicyRoute, WebhookConfig,
    WebhookSecret,
};
use crate::{LOG_TARGET, Webhook};

/// AttestMesh paymaster webhook: approves a gas manager's sponsorship request only when the
/// cluster's on-chain sponsorship policy (`checkSponsorship`) allows the operation.
#[derive(Debug, Parser)]
#[command(name = "attestmesh-webhook", version, about)]
pub struct Cli {
    /// `<policyId>=<clusterAddress>`: the gas manager's policy id and the cluster diamond whose
    /// sponsorship policy decides for it. Repeatable; in the environment, comma-separated.
    #[arg(
        long = "policy",
        env = "ATTESTMESH_WEBHOOK_POLICIES",
        value_delimiter = ',',
        required = true
    )]
    pub policies: Vec<PolicyRoute>,

    /// The chain's JSON-RPC URL (the path and query, where hosted RPCs keep API keys, are
    /// never logged).
    #[arg(
        long = "rpc-url",
        env = "ATTESTMESH_WEBHOOK_RPC_URL",
        hide_env_values = true
    )]
    pub rpc_url: Url,

    /// The chain id the RPC must serve; requests for another chain id are denied.
    #[arg(long = "chain-id", env = "ATTESTMESH_WEBHOOK_CHAIN_ID")]
    pub chain_id: u64,

    /// The shared secret the gas manager sends as `Authorization: Bearer <secret>` (at least 16
    /// characters). Prefer the environment or --secret-file: arguments are visible in `ps`.
    #[arg(
        long = "secret",
        env = "ATTESTMESH_WEBHOOK_SECRET",
        hide_env_values = true,
        required_unless_present = "secret_file",
        conflicts_with = "secret_file"
    )]
    pub secret: Option<String>,

    /// A file holding the shared secret (a trailing newline is ignored).
    #[arg(long = "secret-file", env = "ATTESTMESH_WEBHOOK_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,

    /// Address to listen on. Loopback by default: put the operator's TLS proxy in front.
    #[arg(long = "listen", env = "ATTESTMESH_WEBHOOK_LISTEN", default_value_t = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Operations per minute one sender may have checked (token bucket, bursts up to this).
    #[arg(
        long = "rate-limit",
        env = "ATTESTMESH_WEBHOOK_RATE_LIMIT",
        default_value_t = DEFAULT_RATE_LIMIT_PER_MINUTE,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub rate_limit_per_minute: u32,

    /// App-message envelopes per minute one sender may have approved (token bucket; `send`
    /// counts one, `sendBatch` its entries; registration and the CSK commitment none).
    #[arg(
        long = "message-rate-limit",
        env = "ATTESTMESH_WEBHOOK_MESSAGE_RATE_LIMIT",
        default_value_t = DEFAULT_MESSAGE_RATE_LIMIT_PER_MINUTE,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub message_rate_limit_per_minute: u32,

    /// Seconds an approved operation's envelope ids stay pending: another operation of the
    /// sender carrying one of them is denied until then, or until the chain shows the first.
    #[arg(
        long = "pending-window-secs",
        env = "ATTESTMESH_WEBHOOK_PENDING_WINDOW_SECS",
        default_value_t = DEFAULT_PENDING_WINDOW.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub pending_window_secs: u64,

    /// Cap on maxFeePerGas (and maxPriorityFeePerGas), wei. Default 1 gwei: 20-200 × Base's
    /// usual base fee.
    #[arg(
        long = "cap-max-fee-per-gas",
        env = "ATTESTMESH_WEBHOOK_CAP_MAX_FEE_PER_GAS",
        default_value_t = U256::from(DEFAULT_CAP_MAX_FEE_PER_GAS)
    )]
    pub cap_max_fee_per_gas: U256,

    /// Cap on preVerificationGas (on Base it carries the L1 data fee).
    #[arg(
        long = "cap-pre-verification-gas",
        env = "ATTESTMESH_WEBHOOK_CAP_PRE_VERIFICATION_GAS",
        default_value_t = U256::from(DEFAULT_CAP_PRE_VERIFICATION_GAS)
    )]
    pub cap_pre_verification_gas: U256,

    /// Cap on verificationGasLimit.
    #[arg(
        long = "cap-verification-gas-limit",
        env = "ATTESTMESH_WEBHOOK_CAP_VERIFICATION_GAS_LIMIT",
        default_value_t = U256::from(DEFAULT_CAP_VERIFICATION_GAS_LIMIT)
    )]
    pub cap_verification_gas_limit: U256,

    /// Cap on callGasLimit.
    #[arg(
        long = "cap-call-gas-limit",
        env = "ATTESTMESH_WEBHOOK_CAP_CALL_GAS_LIMIT",
        default_value_t = U256::from(DEFAULT_CAP_CALL_GAS_LIMIT)
    )]
    pub cap_call_gas_limit: U256,

    /// Cap on one operation's maximum cost (every gas limit × maxFeePerGas), wei. Default
    /// 0.005 ETH.
    #[arg(
        long = "cap-max-cost-wei",
        env = "ATTESTMESH_WEBHOOK_CAP_MAX_COST_WEI",
        default_value_t = U256::from(DEFAULT_CAP_MAX_COST_WEI)
    )]
    pub cap_max_cost_wei: U256,

    /// Largest accepted request body in bytes (larger bodies get 413).
    #[arg(
        long = "max-body-bytes",
        env = "ATTESTMESH_WEBHOOK_MAX_BODY_BYTES",
        default_value_t = DEFAULT_MAX_BODY_BYTES
    )]
    pub max_body_bytes: usize,

    /// Milliseconds one sponsorship check may take before the webhook denies (fails closed).
    #[arg(
        long = "chain-timeout-ms",
        env = "ATTESTMESH_WEBHOOK_CHAIN_TIMEOUT_MS",
        default_value_t = DEFAULT_CHAIN_TIMEOUT.as_millis() as u64,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub chain_timeout_ms: u64,

    /// Log format on stderr: `human` (colour only on a terminal) or `json` (one object a line).
    #[arg(
        long = "log-format",
        env = "ATTESTMESH_WEBHOOK_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Human
    )]
    pub log_format: LogFormat,
}

pub use attestmesh_service::LogFormat;

impl Cli {
    /// The service configuration these arguments describe (reads the secret file).
    pub fn config(&self) -> crate::Result<WebhookConfig> {
        let secret = match (&self.secret, &self.secret_file) {
            (Some(secret), _) => WebhookSecret::new(secret.as_str())?,
            (None, Some(path)) => WebhookSecret::from_file(path)?,
            // clap requires one of the two; this is the message if that ever changes.
            (None, None) => {
                return Err(crate::WebhookError::Config(
                    "no secret: set --secret, ATTESTMESH_WEBHOOK_SECRET or --secret-file".into(),
                ));
            }
        };
        let mut config = WebhookConfig::new(self.rpc_url.clone(), self.chain_id, secret);
        config.listen = self.listen;
        config.policies.clone_from(&self.policies);
        config.rate_limit_per_minute = self.rate_limit_per_minute;
        config.message_rate_limit_per_minute = self.message_rate_limit_per_minute;
        config.pending_window = Duration::from_secs(self.pending_window_secs);
        config.caps = GasCaps {
            max_fee_per_gas: self.cap_max_fee_per_gas,
            pre_verification_gas: self.cap_pre_verification_gas,
            verification_gas_limit: self.cap_verification_gas_limit,
            call_gas_limit: self.cap_call_gas_limit,
            max_cost: self.cap_max_cost_wei,
        };
        config.max_body_bytes = self.max_body_bytes;
        config.chain_timeout = Duration::from_millis(self.chain_timeout_ms);
        Ok(config)
    }
}

/// Runs the webhook described by `cli` until SIGINT or SIGTERM.
pub async fn run(cli: Cli) -> eyre::Result<()> {
    attestmesh_service::logging::init(cli.log_format, "info")?;
    let config = cli.config()?;
    // Installed before start-up so that a signal during the chain checks is not lost.
    let shutdown = attestmesh_service::shutdown::signals()?;
    let handle = Webhook::spawn(config)
        .await
        .wrap_err("the paymaster webhook refused to start")?;
    handle
        .run_until(shutdown)
        .await
        .wrap_err("the paymaster webhook failed")?;
    info!(target: LOG_TARGET, "paymaster webhook exited");
    Ok(())
}
