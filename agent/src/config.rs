//! Configuration: flags, environment (`ATTESTMESH_*`) and an optional TOML file (`--config`),
//! in that order of precedence. Every setting is documented in README's agent section.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use alloy::primitives::Address;
use attestmesh_bindings::ENTRY_POINT_V07;
use clap::Args;
use serde::Deserialize;
use url::Url;

/// Flags of `cluster-mesh-agent run`. Each is optional here so the file can fill it.
#[derive(Debug, Clone, Default, Args)]
pub struct AgentArgs {
    /// TOML file with any of the settings below (keys as the flags, dots as in the flag).
    #[arg(long = "config", env = "ATTESTMESH_CONFIG")]
    pub config: Option<PathBuf>,
    /// dstack guest-agent socket (default: $DSTACK_SIMULATOR_ENDPOINT, then the standard paths).
    #[arg(long = "dstack.socket", env = "ATTESTMESH_DSTACK_SOCKET")]
    pub dstack_socket: Option<PathBuf>,
    /// Chain JSON-RPC URLs (Base, or the devnet's anvil), comma-separated: independent
    /// providers, of which `--chain.quorum` must agree on membership, envelopes and the CSK
    /// commitment. Write the hosts literally (the compose hash attests them) and put only
    /// credentials in secrets: `{env:NAME}` is replaced by the environment variable NAME, and is
    /// allowed in the path, query or user info, never in the host.
    #[arg(
        long = "chain.rpc-url",
        env = "ATTESTMESH_CHAIN_RPC_URL",
        value_delimiter = ','
    )]
    pub chain_rpc_url: Vec<String>,
    /// How many of the chain RPC endpoints must agree (default: a majority of them).
    #[arg(long = "chain.quorum", env = "ATTESTMESH_CHAIN_QUORUM")]
    pub chain_quorum: Option<usize>,
    /// Expected chain id (8453 on Base); the agent refuses an RPC that serves another chain.
    #[arg(long = "chain.id", env = "ATTESTMESH_CHAIN_ID")]
    pub chain_id: Option<u64>,
    /// The cluster diamond. Default: read from the member account (`MemberAccount.cluster()`).
    #[arg(long = "cluster", env = "ATTESTMESH_CLUSTER")]
    pub cluster: Option<Address>,
    /// EntryPoint v0.7 (default: the canonical address).
    #[arg(long = "chain.entry-point", env = "ATTESTMESH_ENTRY_POINT")]
    pub entry_point: Option<Address>,
    /// ERC-4337 bundler JSON-RPC URL.
    #[arg(long = "bundler.url", env = "ATTESTMESH_BUNDLER_URL")]
    pub bundler_url: Option<Url>,
    /// Gas manager JSON-RPC URL (Alchemy's, or the devnet's emulator).
    #[arg(long = "gas-manager.url", env = "ATTESTMESH_GAS_MANAGER_URL")]
    pub gas_manager_url: Option<Url>,
    /// Gas manager policy id.
    #[arg(
        long = "gas-manager.policy-id",
        env = "ATTESTMESH_GAS_MANAGER_POLICY_ID"
    )]
    pub policy_id: Option<String>,
    /// Health and metrics listener (`/healthz`, `/status`, `/metrics`; default
    /// 0.0.0.0:9090). Public: operators watch it through the dstack gateway, and
    /// it shows no credential. Never served to the mesh: connections from or to a mesh address
    /// are closed unanswered, whatever the address here.
    #[arg(long = "health.listen", env = "ATTESTMESH_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
    /// The app's gRPC unix socket.
    #[arg(long = "api.socket", env = "ATTESTMESH_API_SOCKET")]
    pub api_socket: Option<PathBuf>,
    /// Seconds between chain-log polls.
    #[arg(long = "poll.interval-secs", env = "ATTESTMESH_POLL_INTERVAL_SECS")]
    pub poll_interval_secs: Option<u64>,
    /// Blocks behind the head before an event is applied (reorg safety).
    #[arg(long = "poll.confirmations", env = "ATTESTMESH_POLL_CONFIRMATIONS")]
    pub poll_confirmations: Option<u64>,
    /// Most blocks asked of eth_getLogs at once (RPCs cap ranges).
    #[arg(long = "poll.max-range", env = "ATTESTMESH_POLL_MAX_RANGE")]
    pub poll_max_range: Option<u64>,
    /// `human` or `json` logs.
    #[arg(long = "log.format", env = "ATTESTMESH_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Where the dstack gateway is reached, `host:port` (peers' transports go through it).
    #[arg(long = "gateway.connect", env = "ATTESTMESH_GATEWAY_CONNECT")]
    pub gateway_connect: Option<String>,
    /// The gateway domain (`<app_id>-<port>s.<domain>` routes).
    #[arg(long = "gateway.domain", env = "ATTESTMESH_GATEWAY_DOMAIN")]
    pub gateway_domain: Option<String>,
    /// The WireGuard interface name.
    #[arg(long = "mesh.interface", env = "ATTESTMESH_MESH_INTERFACE")]
    pub mesh_interface: Option<String>,
    /// The transport TLS listener the gateway forwards to.
    #[arg(long = "mesh.listen", env = "ATTESTMESH_MESH_LISTEN")]
    pub mesh_listen: Option<SocketAddr>,
    /// Heartbeat interval in milliseconds.
    #[arg(
        long = "mesh.heartbeat-interval-ms",
        env = "ATTESTMESH_MESH_HEARTBEAT_INTERVAL_MS"
    )]
    pub heartbeat_interval_ms: Option<u64>,
    /// Missed heartbeats before a peer is down.
    #[arg(
        long = "mesh.down-after-beats",
        env = "ATTESTMESH_MESH_DOWN_AFTER_BEATS"
    )]
    pub down_after_beats: Option<u32>,
    /// Run without the mesh (no TUN, no heartbeats, no CSK): phases stop at wg-configuring.
    /// For hosts without root or /dev/net/tun, e.g. API tests.
    #[arg(long = "mesh.disabled", env = "ATTESTMESH_MESH_DISABLED")]
    pub mesh_disabled: bool,
    /// Dial this `host:port` for every `https://` indexer endpoint the registry lists, keeping
    /// the endpoint's name for SNI and certificate checks (the devnet gateway, whose names do
    /// not resolve). Default: dial the endpoint's own host.
    #[arg(long = "indexer.connect", env = "ATTESTMESH_INDEXER_GATEWAY_CONNECT")]
    pub indexer_connect: Option<SocketAddr>,
    /// PEM file of an extra CA to trust for indexer endpoints (the devnet gateway's CA).
    #[arg(long = "indexer.ca-file", env = "ATTESTMESH_INDEXER_CA_FILE")]
    pub indexer_ca_file: Option<PathBuf>,
}

/// The same settings as read from a TOML file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(rename = "dstack.socket")]
    pub dstack_socket: Option<PathBuf>,
    #[serde(rename = "chain.rpc-url", default)]
    pub chain_rpc_url: Vec<String>,
    #[serde(rename = "chain.quorum")]
    pub chain_quorum: Option<usize>,
    #[serde(rename = "chain.id")]
    pub chain_id: Option<u64>,
    pub cluster: Option<Address>,
    #[serde(rename = "chain.entry-point")]
    pub entry_point: Option<Address>,
    #[serde(rename = "bundler.url")]
    pub bundler_url: Option<Url>,
    #[serde(rename = "gas-manager.url")]
    pub gas_manager_url: Option<Url>,
    #[serde(rename = "gas-manager.policy-id")]
    pub policy_id: Option<String>,
    #[serde(rename = "health.listen")]
    pub health_listen: Option<SocketAddr>,
    #[serde(rename = "api.socket")]
    pub api_socket: Option<PathBuf>,
    #[serde(rename = "poll.interval-secs")]
    pub poll_interval_secs: Option<u64>,
    #[serde(rename = "poll.confirmations")]
    pub poll_confirmations: Option<u64>,
    #[serde(rename = "poll.max-range")]
    pub poll_max_range: Option<u64>,
    #[serde(rename = "log.format")]
    pub log_format: Option<String>,
    #[serde(rename = "gateway.connect")]
    pub gateway_connect: Option<String>,
    #[serde(rename = "gateway.domain")]
    pub gateway_domain: Option<String>,
    #[serde(rename = "mesh.interface")]
    pub mesh_interface: Option<String>,
    #[serde(rename = "mesh.listen")]
    pub mesh_listen: Option<SocketAddr>,
    #[serde(rename = "mesh.heartbeat-interval-ms")]
    pub heartbeat_interval_ms: Option<u64>,
    #[serde(rename = "mesh.down-after-beats")]
    pub down_after_beats: Option<u32>,
    #[serde(rename = "mesh.disabled")]
    pub mesh_disabled: Option<bool>,
    #[serde(rename = "indexer.connect")]
    pub indexer_connect: Option<SocketAddr>,
    #[serde(rename = "indexer.ca-file")]
    pub indexer_ca_file: Option<PathBuf>,
}

pub use attestmesh_service::LogFormat;

/// The resolved configuration. Its `Debug` shows the service URLs by scheme, host and port only
/// (their paths and queries carry API keys).
#[derive(Clone)]
pub struct AgentConfig {
    pub dstack_socket: Option<PathBuf>,
    /// The chain RPC endpoints, secrets substituted (never log these: use their hosts).
    pub chain_rpc_urls: Vec<Url>,
    /// How many of them must agree.
    pub chain_quorum: usize,
    pub chain_id: Option<u64>,
    pub cluster: Option<Address>,
    pub entry_point: Address,
    pub bundler_url: Url,
    pub gas_manager_url: Url,
    pub policy_id: String,
    pub health_listen: SocketAddr,
    pub api_socket: PathBuf,
    pub poll_interval: Duration,
    pub poll_confirmations: u64,
    pub poll_max_range: u64,
    pub log_format: LogFormat,
    /// `None` when the mesh is disabled.
    pub mesh: Option<MeshOptions>,
    /// See [`AgentArgs::indexer_connect`].
    pub indexer_connect: Option<SocketAddr>,
    /// The PEM of [`AgentArgs::indexer_ca_file`], read at start (an unreadable file is a
    /// configuration error, not a silently disabled indexer).
    pub indexer_ca_pem: Option<String>,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use attestmesh_chain::redact::url as shown;
        f.debug_struct("AgentConfig")
            .field("dstack_socket", &self.dstack_socket)
            .field(
                "chain_rpc_urls",
                &self.chain_rpc_urls.iter().map(shown).collect::<Vec<_>>(),
            )
            .field("chain_quorum", &self.chain_quorum)
            .field("chain_id", &self.chain_id)
            .field("cluster", &self.cluster)
            .field("entry_point", &self.entry_point)
            .field("bundler_url", &shown(&self.bundler_url))
            .field("gas_manager_url", &shown(&self.gas_manager_url))
            .field("policy_id", &self.policy_id)
            .field("health_listen", &self.health_listen)
            .field("api_socket", &self.api_socket)
            .field("poll_interval", &self.poll_interval)
            .field("poll_confirmations", &self.poll_confirmations)
            .field("poll_max_range", &self.poll_max_range)
            .field("log_format", &self.log_format)
            .field("mesh", &self.mesh)
            .field("indexer_connect", &self.indexer_connect)
            .finish_non_exhaustive()
    }
}

/// Mesh settings (resolved to addresses at start).
#[derive(Debug, Clone)]
pub struct MeshOptions {
    pub gateway_connect: String,
    pub gateway_domain: String,
    pub interface: String,
    pub listen: SocketAddr,
    pub heartbeat_interval: Duration,
    pub down_after_beats: u32,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0} is required: pass --{0} or set it in the config file")]
    Missing(&'static str),
    #[error("{name} is invalid: {message}")]
    Invalid { name: &'static str, message: String },
}

/// A chain RPC URL from its template: `{env:NAME}` is replaced by `secret(NAME)`. The host must
/// be written literally: it is what the compose hash attests, and a secret must not be able to
/// point the node at another provider. Errors name the placeholder, never a secret's value.
pub fn rpc_url_from_template(
    template: &str,
    secret: impl Fn(&str) -> Option<String>,
) -> Result<Url, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        name: "--chain.rpc-url",
        message,
    };
    let mut out = String::new();
    let mut rest = template.trim();
    let mut placeholders = Vec::new();
    while let Some(start) = rest.find("{env:") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 5..];
        let end = after
            .find('}')
            .ok_or_else(|| invalid("an `{env:` placeholder is not closed with `}`".to_string()))?;
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(invalid(format!(
                "`{{env:{name}}}` does not name an environment variable"
            )));
        }
        let value = secret(name).ok_or_else(|| {
            invalid(format!(
                "`{{env:{name}}}` is used but the environment variable {name} is not set \
                 (set it as a dstack encrypted environment variable)"
            ))
        })?;
        placeholders.push(name.to_string());
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    // The host as written, with placeholders still in: it must not contain one.
    let literal = Url::parse(&template.replace("{env:", "envplaceholder").replace('}', ""))
        .map_err(|e| invalid(format!("a chain RPC URL is not a URL ({e})")))?;
    if literal
        .host_str()
        .is_some_and(|host| host.contains("envplaceholder"))
    {
        return Err(invalid(
            "a chain RPC URL's host comes from a secret: write hosts literally (the compose hash \
             attests them) and keep only credentials in `{env:NAME}` placeholders"
                .to_string(),
        ));
    }
    let url = Url::parse(&out).map_err(|_| {
        invalid(format!(
            "a chain RPC URL is not a URL once {} substituted",
            if placeholders.is_empty() {
                "nothing was".to_string()
            } else {
                placeholders.join(", ")
            }
        ))
    })?;
    if url.host_str() != literal.host_str() {
        return Err(invalid(
            "a secret changed a chain RPC URL's host: keep only credentials in placeholders".into(),
        ));
    }
    Ok(url)
}

pub const DEFAULT_API_SOCKET: &str = "/var/run/attestmesh/agent.sock";
/// Every interface of the node's network namespace: the dstack gateway reaches the container
/// through its bridge address, which the compose cannot know, and the container's healthcheck
/// through `localhost`. attestmesh0 is excluded at accept time, not by the bind (see
/// `api::serve_health`): a mesh peer could otherwise aim at the other addresses through the
/// tunnel.
pub const DEFAULT_HEALTH_LISTEN: &str = "0.0.0.0:9090";

impl AgentArgs {
    /// Flags and environment over the file over the defaults.
    pub fn resolve(self) -> Result<AgentConfig, ConfigError> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: e.to_string(),
                })?
            }
            None => FileConfig::default(),
        };
        let log_format = match self.log_format.or(file.log_format).as_deref() {
            None | Some("human") => LogFormat::Human,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "log.format",
                    message: format!("{other:?} (use human or json)"),
                });
            }
        };
        let health_listen = match self.health_listen.or(file.health_listen) {
            Some(addr) => addr,
            None => DEFAULT_HEALTH_LISTEN
                .parse()
                .map_err(|e| ConfigError::Invalid {
                    name: "health.listen",
                    message: format!("{e}"),
                })?,
        };
        let poll_max_range = self.poll_max_range.or(file.poll_max_range).unwrap_or(2_000);
        if poll_max_range == 0 {
            return Err(ConfigError::Invalid {
                name: "poll.max-range",
                message: "must be at least 1".into(),
            });
        }
        let mesh = if self.mesh_disabled || file.mesh_disabled == Some(true) {
            None
        } else {
            Some(MeshOptions {
                gateway_connect: self
                    .gateway_connect
                    .or(file.gateway_connect)
                    .ok_or(ConfigError::Missing("gateway.connect"))?,
                gateway_domain: self
                    .gateway_domain
                    .or(file.gateway_domain)
                    .ok_or(ConfigError::Missing("gateway.domain"))?,
                interface: self
                    .mesh_interface
                    .or(file.mesh_interface)
                    .unwrap_or_else(|| "attestmesh0".into()),
                listen: match self.mesh_listen.or(file.mesh_listen) {
                    Some(addr) => addr,
                    None => SocketAddr::from(([0, 0, 0, 0], 51820)),
                },
                heartbeat_interval: Duration::from_millis(
                    self.heartbeat_interval_ms
                        .or(file.heartbeat_interval_ms)
                        .unwrap_or(2_000)
                        .max(100),
                ),
                down_after_beats: self
                    .down_after_beats
                    .or(file.down_after_beats)
                    .unwrap_or(3)
                    .max(1),
            })
        };
        let indexer_ca_pem = match self.indexer_ca_file.or(file.indexer_ca_file) {
            Some(path) => {
                Some(
                    std::fs::read_to_string(&path).map_err(|e| ConfigError::Invalid {
                        name: "--indexer.ca-file",
                        message: format!(
                            "cannot read {}: {e}; point it at the gateway CA's PEM file",
                            path.display()
                        ),
                    })?,
                )
            }
            None => None,
        };
        let templates = if self.chain_rpc_url.is_empty() {
            file.chain_rpc_url
        } else {
            self.chain_rpc_url
        };
        if templates.is_empty() {
            return Err(ConfigError::Missing("chain.rpc-url"));
        }
        let chain_rpc_urls = templates
            .iter()
            .map(|t| rpc_url_from_template(t, |name| std::env::var(name).ok()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AgentConfig {
            mesh,
            indexer_connect: self.indexer_connect.or(file.indexer_connect),
            indexer_ca_pem,
            dstack_socket: self.dstack_socket.or(file.dstack_socket),
            chain_quorum: match self.chain_quorum.or(file.chain_quorum) {
                Some(k) if k == 0 || k > chain_rpc_urls.len() => {
                    return Err(ConfigError::Invalid {
                        name: "--chain.quorum",
                        message: format!(
                            "{k} of {} chain RPC endpoint(s) is impossible: it must be 1..={}",
                            chain_rpc_urls.len(),
                            chain_rpc_urls.len()
                        ),
                    });
                }
                Some(k) => k,
                None => chain_rpc_urls.len() / 2 + 1,
            },
            chain_rpc_urls,
            chain_id: self.chain_id.or(file.chain_id),
            cluster: self.cluster.or(file.cluster),
            entry_point: self
                .entry_point
                .or(file.entry_point)
                .unwrap_or(ENTRY_POINT_V07),
            bundler_url: self
                .bundler_url
                .or(file.bundler_url)
                .ok_or(ConfigError::Missing("bundler.url"))?,
            gas_manager_url: self
                .gas_manager_url
                .or(file.gas_manager_url)
                .ok_or(ConfigError::Missing("gas-manager.url"))?,
            policy_id: self
                .policy_id
                .or(file.policy_id)
                .ok_or(ConfigError::Missing("gas-manager.policy-id"))?,
            health_listen,
            api_socket: self
                .api_socket
                .or(file.api_socket)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_API_SOCKET)),
            poll_interval: Duration::from_secs(
                self.poll_interval_secs
                    .or(file.poll_interval_secs)
                    .unwrap_or(2)
                    .max(1),
            ),
            poll_confirmations: self
                .poll_confirmations
                .or(file.poll_confirmations)
                .unwrap_or(0),
            poll_max_range,
            log_format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> AgentArgs {
        AgentArgs {
            chain_rpc_url: vec!["http://127.0.0.1:8545".into()],
            bundler_url: Some("http://127.0.0.1:4337".parse().unwrap()),
            gas_manager_url: Some("http://127.0.0.1:4338".parse().unwrap()),
            policy_id: Some("policy".into()),
            mesh_disabled: true,
            ..Default::default()
        }
    }

    #[test]
    fn defaults_fill_what_is_not_given() {
        let config = base().resolve().unwrap();
        assert_eq!(config.entry_point, ENTRY_POINT_V07);
        assert_eq!(config.api_socket, PathBuf::from(DEFAULT_API_SOCKET));
        assert_eq!(config.health_listen.port(), 9090);
        assert_eq!(config.log_format, LogFormat::Human);
    }

    #[test]
    fn missing_required_setting_names_the_flag() {
        let err = AgentArgs {
            mesh_disabled: true,
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.to_string().contains("--chain.rpc-url"), "{err}");
        // With the mesh on (the default), the gateway settings are required too.
        let err = AgentArgs {
            mesh_disabled: false,
            ..base()
        }
        .resolve()
        .unwrap_err();
        assert!(err.to_string().contains("--gateway.connect"), "{err}");
    }

    /// Hosts stay literal (attested by the compose hash); secrets fill only credentials, and an
    /// error names the placeholder, never the secret.
    #[test]
    fn rpc_url_templates_keep_hosts_literal_and_never_show_secrets() {
        let secret = |name: &str| (name == "ALCHEMY_KEY").then(|| "s3cr3t-key".to_string());
        let url = rpc_url_from_template(
            "https://base-mainnet.g.alchemy.com/v2/{env:ALCHEMY_KEY}",
            secret,
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://base-mainnet.g.alchemy.com/v2/s3cr3t-key"
        );
        for (template, words) in [
            (
                "https://{env:ALCHEMY_KEY}.example/",
                "host comes from a secret",
            ),
            ("https://rpc.example/{env:MISSING}", "MISSING is not set"),
            ("https://rpc.example/{env:ALCHEMY_KEY", "not closed"),
            ("https://rpc.example/{env:a-b}", "does not name"),
        ] {
            let err = rpc_url_from_template(template, secret)
                .unwrap_err()
                .to_string();
            assert!(err.contains(words), "{template}: {err}");
            assert!(!err.contains("s3cr3t"), "{err}");
        }
        // A secret that smuggles in another host.
        let sneaky = |_: &str| Some("@evil.example/".to_string());
        let err = rpc_url_from_template("https://user{env:X}rpc.example/", sneaky)
            .unwrap_err()
            .to_string();
        assert!(err.contains("host"), "{err}");
    }

    #[test]
    fn the_resolved_configuration_never_shows_a_key_in_debug_output() {
        let mut args = base();
        args.chain_rpc_url = vec!["https://rpc.example/v2/KEY-IN-PATH?token=KEY-IN-QUERY".into()];
        args.bundler_url = Some("https://bundler.example/rpc/KEY-B".parse().unwrap());
        let shown = format!("{:?}", args.resolve().unwrap());
        assert!(!shown.contains("KEY"), "{shown}");
        assert!(
            shown.contains("rpc.example") && shown.contains("bundler.example"),
            "{shown}"
        );
    }

    #[test]
    fn the_quorum_defaults_to_a_majority_and_must_be_possible() {
        let mut args = base();
        args.chain_rpc_url = vec![
            "http://a.example".into(),
            "http://b.example".into(),
            "http://c.example".into(),
        ];
        assert_eq!(args.clone().resolve().unwrap().chain_quorum, 2);
        args.chain_quorum = Some(4);
        let err = args.resolve().unwrap_err().to_string();
        assert!(err.contains("--chain.quorum"), "{err}");
    }

    #[test]
    fn file_fills_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "\"gas-manager.policy-id\" = \"from-file\"\n\"poll.confirmations\" = 3\n",
        )
        .unwrap();
        let mut args = base();
        args.config = Some(path.clone());
        args.policy_id = None;
        let config = args.resolve().unwrap();
        assert_eq!(config.policy_id, "from-file");
        assert_eq!(config.poll_confirmations, 3);

        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
        std::fs::write(
            &path,
            format!(
                "\"indexer.connect\" = \"10.0.0.1:8443\"\n\"indexer.ca-file\" = {:?}\n",
                ca.display().to_string()
            ),
        )
        .unwrap();
        let mut args = base();
        args.config = Some(path.clone());
        let config = args.resolve().unwrap();
        assert_eq!(
            config.indexer_connect,
            Some("10.0.0.1:8443".parse().unwrap())
        );
        assert_eq!(
            config.indexer_ca_pem.as_deref(),
            Some("-----BEGIN CERTIFICATE-----\n")
        );
        let mut args = base();
        args.indexer_ca_file = Some(dir.path().join("missing.pem"));
        let err = args.resolve().unwrap_err().to_string();
        assert!(
            err.contains("--indexer.ca-file") && err.contains("missing.pem"),
            "{err}"
        );
        let mut args = base();
        args.config = Some(path.clone());
        args.indexer_connect = Some("127.0.0.1:1".parse().unwrap());
        assert_eq!(
            args.resolve().unwrap().indexer_connect,
            Some("127.0.0.1:1".parse().unwrap()),
            "the flag wins"
        );

        std::fs::write(&path, "unknown = 1\n").unwrap();
        let mut args = base();
        args.config = Some(path);
        assert!(matches!(args.resolve(), Err(ConfigError::Parse { .. })));
    }
}
