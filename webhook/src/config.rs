//! [`WebhookConfig`]: everything the service needs, validated before anything is served.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use alloy::primitives::Address;
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
            .field("max_body_bytes", &self.max_body_bytes)
            .field("chain_timeout", &self.chain_timeout)
            .finish()
    }
}

/// `scheme://host[:port]` only. Hosted RPC URLs carry their API key in the path
/// (`.../v2/<key>`) or the query, so neither is ever logged.
pub(crate) fn loggable_url(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
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
}
