//! [`WebhookConfig`]: everything the service needs, validated before anything is served.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use sha2::{Digest, Sha256};
use url::Url;
use zeroize::Zeroizing;

use crate::error::{Result, WebhookError};

/// Loopback by default: the service is meant to sit behind the operator's TLS proxy, and an
/// operator who wants it public says so explicitly.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8787));

/// Operations per minute one sender may have checked. A node sends a handful of operations per
/// minute at most (registration, CSK commit, messages), so 30 leaves room without letting one
/// account keep the chain RPC busy.
pub const DEFAULT_RATE_LIMIT_PER_MINUTE: u32 = 30;

/// App-message envelopes per minute one sender may have approved (token bucket over the
/// envelopes each operation carries: `send` is one, `sendBatch` its entries). Two full 64-envelope
/// batches: a node joining a cluster of up to 128 members sends its endpoint envelopes within a
/// minute, while one member cannot keep the sponsor paying for a stream of messages.
/// Registration and the CSK commitment carry none and are not counted.
pub const DEFAULT_MESSAGE_RATE_LIMIT_PER_MINUTE: u32 = 128;

/// How long an approved operation's envelope ids stay pending (a second operation carrying one of
/// them on another nonce is denied): about a bundler's patience with an operation, 60 blocks on
/// Base. An entry leaves earlier once the chain shows its nonce used.
pub const DEFAULT_PENDING_WINDOW: Duration = Duration::from_secs(120);

/// A UserOperation with a registration proof is about 2 KiB of JSON; 64 KiB is ample and keeps
/// a hostile body from costing memory.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// How long one `checkSponsorship` call may take before the webhook denies (fails closed) rather
/// than let the gas manager time out on a hung RPC.
pub const DEFAULT_CHAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Shortest shared secret accepted: anything shorter is guessable by an online attacker.
pub const MIN_SECRET_LEN: usize = 16;

/// One gas-manager policy id and the cluster diamond whose sponsorship view decides for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRoute {
    /// The gas manager's policy id (Alchemy: a UUID).
    pub policy_id: String,
    /// The cluster diamond.
    pub cluster: Address,
}

impl FromStr for PolicyRoute {
    type Err = String;

    /// Parses `<policyId>=<clusterAddress>`.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        // Split at the last '=': an address never contains one, a policy id might.
        let (policy_id, cluster) = value
            .rsplit_once('=')
            .ok_or_else(|| format!("{value:?} is not <policyId>=<clusterAddress>"))?;
        let policy_id = policy_id.trim();
        if policy_id.is_empty() {
            return Err(format!("{value:?} has an empty policy id"));
        }
        let cluster = cluster
            .trim()
            .parse::<Address>()
            .map_err(|err| format!("{value:?}: the cluster is not a 20-byte hex address: {err}"))?;
        Ok(Self {
            policy_id: policy_id.to_owned(),
            cluster,
        })
    }
}

/// The operator's caps on an operation's gas fields, checked whenever the gas manager sends
/// them (Alchemy's `alchemy_requestGasAndPaymasterAndData` asks before it has estimated gas;
/// ERC-7677's `pm_getPaymasterData` after the wallet set them): an absent field is "not yet
/// set" and passes, a present one above its cap is denied with `cap: <field> <value> above the
/// operator's cap <cap>`. The defaults fit Base (see [`GasCaps::default`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GasCaps {
    /// maxFeePerGas and maxPriorityFeePerGas, wei.
    pub max_fee_per_gas: U256,
    pub pre_verification_gas: U256,
    pub verification_gas_limit: U256,
    pub call_gas_limit: U256,
    /// (every gas limit) × maxFeePerGas, wei: the most one operation may cost the paymaster.
    pub max_cost: U256,
}

/// 1 gwei. Base's base fee is usually 0.005–0.05 gwei: 20 to 200 times below, so sponsorship
/// carries on through ordinary spikes; above it operations wait instead of paying 200 gwei.
pub const DEFAULT_CAP_MAX_FEE_PER_GAS: u64 = 1_000_000_000;
/// On Base, preVerificationGas carries the L1 data fee in L2 gas: a registration op is ~2.5 KB
/// (~60k of L2 calldata gas) plus the L1 part, a few hundred thousand when L2 gas is cheap and
/// blobs are not. 1M leaves room; the drain of issue 14 used 40M.
pub const DEFAULT_CAP_PRE_VERIFICATION_GAS: u64 = 1_000_000;
/// The account's validation is one signature check (~100k with the EntryPoint's overhead); a
/// bootstrap with initCode deploys the account inside it (~1.8M for the whole bootstrap).
pub const DEFAULT_CAP_VERIFICATION_GAS_LIMIT: u64 = 2_000_000;
/// The largest call is a 64-envelope `sendBatch` (~30k gas per 256-byte envelope, ~2M, plus the
/// gas manager's 25 % headroom); a registration's proof verification is ~250k.
pub const DEFAULT_CAP_CALL_GAS_LIMIT: u64 = 5_000_000;
/// 0.005 ETH: the most one operation may cost. A 64-envelope batch at the 1 gwei fee cap is about
/// 0.003 ETH; at Base's usual fees any AttestMesh operation costs well under 0.0001 ETH.
pub const DEFAULT_CAP_MAX_COST_WEI: u64 = 5_000_000_000_000_000;

impl Default for GasCaps {
    fn default() -> Self {
        Self {
            max_fee_per_gas: U256::from(DEFAULT_CAP_MAX_FEE_PER_GAS),
            pre_verification_gas: U256::from(DEFAULT_CAP_PRE_VERIFICATION_GAS),
            verification_gas_limit: U256::from(DEFAULT_CAP_VERIFICATION_GAS_LIMIT),
            call_gas_limit: U256::from(DEFAULT_CAP_CALL_GAS_LIMIT),
            max_cost: U256::from(DEFAULT_CAP_MAX_COST_WEI),
        }
    }
}

impl GasCaps {
    fn validate(&self) -> Result<()> {
        for (name, cap) in [
            ("max fee per gas", self.max_fee_per_gas),
            ("preVerificationGas", self.pre_verification_gas),
            ("verificationGasLimit", self.verification_gas_limit),
            ("callGasLimit", self.call_gas_limit),
            ("max cost", self.max_cost),
        ] {
            if cap.is_zero() {
                return Err(WebhookError::Config(format!(
                    "the {name} cap must be above 0: no operation could be sponsored"
                )));
            }
        }
        Ok(())
    }
}

/// The shared secret the gas manager presents as `Authorization: Bearer <secret>`. Its `Debug`
/// never shows the value, and the memory is wiped on drop.
#[derive(Clone)]
pub struct WebhookSecret(Zeroizing<String>);

impl WebhookSecret {
    /// A secret of at least [`MIN_SECRET_LEN`] bytes, without surrounding whitespace (a copied
    /// newline would otherwise make every request "wrong").
    pub fn new(value: impl Into<String>) -> Result<Self> {
        let value = Zeroizing::new(value.into());
        let trimmed = value.trim();
        if trimmed.len() < MIN_SECRET_LEN {
            return Err(WebhookError::Config(format!(
                "the webhook secret must be at least {MIN_SECRET_LEN} characters (got {}); \
                 generate one, e.g. `openssl rand -hex 32`",
                trimmed.len()
            )));
        }
        if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(WebhookError::Config(
                "the webhook secret must not contain whitespace or control characters: it is \
                 sent in an HTTP header"
                    .into(),
            ));
        }
        Ok(Self(Zeroizing::new(trimmed.to_owned())))
    }

    /// Reads the secret from a file (trailing newline ignored), so it need not appear in the
    /// process's arguments or environment.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| WebhookError::SecretFile {
            path: path.to_owned(),
            source,
        })?;
        Self::new(Zeroizing::new(text).as_str())
    }

    /// SHA-256 of the secret: the server keeps only this, and compares digests so that the
    /// comparison takes the same time whatever the presented length.
    pub(crate) fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }

    /// The secret itself, for the client side (tests, the devnet gas manager).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// Everything the webhook needs. Build with [`WebhookConfig::new`] and [`WebhookConfig::with_policy`]
/// or set the public fields.
#[derive(Clone)]
pub struct WebhookConfig {
    /// Where to listen (port 0 picks a free one; [`crate::WebhookHandle::local_addr`] tells).
    pub listen: SocketAddr,
    /// The chain's JSON-RPC endpoint.
    pub rpc_url: Url,
    /// The chain id the RPC must serve and requests must name.
    pub chain_id: u64,
    /// Policy id → cluster diamond; at least one, no id twice.
    pub policies: Vec<PolicyRoute>,
    /// The shared secret.
    pub secret: WebhookSecret,
    /// Token-bucket size and refill per sender, in operations per minute.
    pub rate_limit_per_minute: u32,
    /// Token-bucket size and refill per sender, in app-message envelopes per minute.
    pub message_rate_limit_per_minute: u32,
    /// How long approved envelope ids stay pending unless the chain shows their operation.
    pub pending_window: Duration,
    /// The operator's caps on gas fields and cost.
    pub caps: GasCaps,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Longest a sponsorship check may take before the webhook denies.
    pub chain_timeout: Duration,
}

impl WebhookConfig {
    /// A configuration with the defaults and no policy yet.
    pub fn new(rpc_url: Url, chain_id: u64, secret: WebhookSecret) -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            rpc_url,
            chain_id,
            policies: Vec::new(),
            secret,
            rate_limit_per_minute: DEFAULT_RATE_LIMIT_PER_MINUTE,
            message_rate_limit_per_minute: DEFAULT_MESSAGE_RATE_LIMIT_PER_MINUTE,
            pending_window: DEFAULT_PENDING_WINDOW,
            caps: GasCaps::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            chain_timeout: DEFAULT_CHAIN_TIMEOUT,
        }
    }

    /// Adds a policy id decided by `cluster`.
    pub fn with_policy(mut self, policy_id: impl Into<String>, cluster: Address) -> Self {
        self.policies.push(PolicyRoute {
            policy_id: policy_id.into(),
            cluster,
        });
        self
    }

    /// The policy table, after checking everything that can be checked without the chain.
    pub(crate) fn validate(&self) -> Result<BTreeMap<String, Address>> {
        if self.policies.is_empty() {
            return Err(WebhookError::Config(
                "no policy configured: add --policy <policyId>=<clusterAddress>".into(),
            ));
        }
        let mut table = BTreeMap::new();
        for route in &self.policies {
            if route.policy_id.trim().is_empty() {
                return Err(WebhookError::Config("a policy id is empty".into()));
            }
            if let Some(previous) = table.insert(route.policy_id.clone(), route.cluster) {
                // Two clusters for one policy would make the answer depend on list order.
                return Err(WebhookError::Config(format!(
                    "policy {:?} is configured twice (clusters {previous} and {})",
                    route.policy_id, route.cluster
                )));
            }
        }
        if self.rate_limit_per_minute == 0 {
            return Err(WebhookError::Config(
                "the rate limit must be at least 1 operation per minute".into(),
            ));
        }
        if self.message_rate_limit_per_minute == 0 {
            return Err(WebhookError::Config(
                "the message rate limit must be at least 1 envelope per minute".into(),
            ));
        }
        if self.pending_window.is_zero() {
            return Err(WebhookError::Config(
                "the pending window must be longer than zero".into(),
            ));
        }
        self.caps.validate()?;
        if self.max_body_bytes == 0 {
            return Err(WebhookError::Config(
                "the body limit must be at least 1 byte".into(),
            ));
        }
        if self.chain_timeout.is_zero() {
            return Err(WebhookError::Config(
                "the chain timeout must be longer than zero".into(),
            ));
        }
        Ok(table)
    }
}

/// Hand-written so that neither the secret nor the RPC URL's path (hosted RPCs put API keys
/// there) reaches a log through `{:?}`.
impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("listen", &self.listen)
            .field("rpc_url", &loggable_url(&self.rpc_url))
            .field("chain_id", &self.chain_id)
            .field("policies", &self.policies)
            .field("secret", &self.secret)
            .field("rate_limit_per_minute", &self.rate_limit_per_minute)
            .field(
                "message_rate_limit_per_minute",
                &self.message_rate_limit_per_minute,
            )
            .field("pending_window", &self.pending_window)
            .field("caps", &self.caps)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("chain_timeout", &self.chain_timeout)
            .finish()
    }
}

/// `scheme://host[:port]` only. Hosted RPC URLs carry their API key in the path
/// (`.../v2/<key>`) or the query, so neither is ever logged (the project's one redaction
/// helper, [`attestmesh_chain::redact`]).
pub(crate) fn loggable_url(url: &Url) -> String {
    attestmesh_chain::redact::url(url)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const CLUSTER: &str = "0x5FbDB2315678afecb367f032d93F642f64180aa3";

    #[test]
    fn policy_route_parses_id_and_address() {
        let route: PolicyRoute = format!("pol-1={CLUSTER}").parse().unwrap();
        assert_eq!(route.policy_id, "pol-1");
        assert_eq!(route.cluster, CLUSTER.parse::<Address>().unwrap());
        // An '=' inside the policy id is kept.
        let route: PolicyRoute = format!("a=b={CLUSTER}").parse().unwrap();
        assert_eq!(route.policy_id, "a=b");
    }

    #[test]
    fn policy_route_rejects_malformed_values() {
        assert!("no-separator".parse::<PolicyRoute>().is_err());
        assert!(format!("={CLUSTER}").parse::<PolicyRoute>().is_err());
        assert!("pol=0x1234".parse::<PolicyRoute>().is_err());
    }

    #[test]
    fn secret_is_trimmed_checked_and_never_printed() {
        let secret = WebhookSecret::new("  0123456789abcdef\n").unwrap();
        assert_eq!(secret.expose(), "0123456789abcdef");
        assert!(!format!("{secret:?}").contains("0123"));
        assert!(WebhookSecret::new("short").is_err());
        assert!(WebhookSecret::new("0123456789 abcdef").is_err());
    }

    #[test]
    fn config_debug_hides_secret_and_rpc_path() {
        let url: Url = "https://base.example/v2/api-key-123?x=y".parse().unwrap();
        let config = WebhookConfig::new(
            url,
            8453,
            WebhookSecret::new("s3cret-s3cret-s3cret").unwrap(),
        );
        let text = format!("{config:?}");
        assert!(!text.contains("api-key-123"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("https://base.example"), "{text}");
    }

    #[test]
    fn validation_rejects_empty_and_duplicate_policies() {
        let url: Url = "http://127.0.0.1:8545".parse().unwrap();
        let secret = WebhookSecret::new("0123456789abcdef").unwrap();
        let config = WebhookConfig::new(url, 1, secret);
        assert!(config.validate().is_err());
        let cluster: Address = CLUSTER.parse().unwrap();
        let config = config.with_policy("p", cluster);
        assert_eq!(config.validate().unwrap().len(), 1);
        let config = config.with_policy("p", Address::ZERO);
        assert!(config.validate().is_err());
    }

    #[test]
    fn validation_rejects_zero_caps_and_limits() {
        let url: Url = "http://127.0.0.1:8545".parse().unwrap();
        let secret = WebhookSecret::new("0123456789abcdef").unwrap();
        let config = WebhookConfig::new(url, 1, secret).with_policy("p", CLUSTER.parse().unwrap());
        assert!(config.validate().is_ok());
        let mut zero_cap = config.clone();
        zero_cap.caps.pre_verification_gas = U256::ZERO;
        let err = zero_cap.validate().unwrap_err().to_string();
        assert!(err.contains("preVerificationGas cap"), "{err}");
        let mut zero_messages = config;
        zero_messages.message_rate_limit_per_minute = 0;
        assert!(zero_messages.validate().is_err());
    }
}
