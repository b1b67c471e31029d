//! A working cluster on the devnet: every node a real `cluster-mesh-agent` process in its own
//! network namespace (with its own `attestmesh0`), the devnet services in the root namespace,
//! peers reached through the gateway emulator. The demo, the benchmarks and the whole-cluster
//! tests all start clusters here, so they exercise the same thing a user runs.
//!
//! Needs root and `/dev/net/tun` ([`crate::netns::require_privileges`] says which is missing).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use attestmesh_proto::agent::v1 as pb;
use attestmesh_proto::agent::v1::agent_client::AgentClient;
use eyre::WrapErr;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use crate::netns::{Netns, require_privileges};
use attestmesh_devnet::stack::{Stack, StackConfig};

const LOG_TARGET: &str = "attestmesh::testbed::cluster";
const ANY: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
/// Where each agent serves `/healthz` and `/metrics`, inside its own namespace.
pub const HEALTH_PORT: u16 = 9090;

/// The agent binary next to the running program (`target/<profile>/cluster-mesh-agent`, also
/// from `target/<profile>/deps/` where test binaries live), or `ATTESTMESH_AGENT_BIN`.
pub fn agent_binary_beside_current_exe() -> eyre::Result<PathBuf> {
    if let Some(path) = std::env::var_os("ATTESTMESH_AGENT_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().wrap_err("cannot find the running program's path")?;
    let mut dir = exe.parent();
    while let Some(d) = dir {
        let candidate = d.join("cluster-mesh-agent");
        if candidate.is_file() {
            return Ok(candidate);
        }
        if d.file_name().is_some_and(|n| n == "target") {
            break;
        }
        dir = d.parent();
    }
    eyre::bail!(
        "no cluster-mesh-agent binary beside {}: build it first (cargo build -p cluster-mesh-agent) \
         or name it in ATTESTMESH_AGENT_BIN",
        exe.display()
    )
}

/// One node: its namespace, its agent process, where its API and health endpoint are.
#[derive(Debug)]
pub struct ClusterNode {
    pub name: String,
    pub netns: Netns,
    /// The root namespace's end of the node's veth: how the node reaches the devnet services.
    pub host_ip: Ipv4Addr,
    /// The node's own end of the veth (its gateway route points here).
    pub ns_ip: Ipv4Addr,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub agent: Option<Child>,
}

impl ClusterNode {
    pub fn health_url(&self) -> String {
        format!("http://{}:{HEALTH_PORT}/healthz", self.ns_ip)
    }

    pub fn metrics_url(&self) -> String {
        format!("http://{}:{HEALTH_PORT}/metrics", self.ns_ip)
    }

    /// A gRPC client on the node's API socket.
    pub async fn client(&self) -> eyre::Result<AgentClient<Channel>> {
        attestmesh_proto::agent::connect_unix(&self.socket)
            .await
            .wrap_err_with(|| {
                format!(
                    "{}: cannot reach the agent's API at {}",
                    self.name,
                    self.socket.display()
                )
            })
    }

    /// The node's identity and membership (`GetSelf`).
    pub async fn get_self(&self) -> eyre::Result<pb::SelfInfo> {
        Ok(self
            .client()
            .await?
            .get_self(pb::GetSelfRequest {})
            .await
            .wrap_err_with(|| format!("{}: GetSelf", self.name))?
            .into_inner())
    }

    /// The node's mesh status, or `None` while its API is not answering.
    pub async fn status(&self) -> Option<pb::MeshStatus> {
        mesh_status(&self.socket).await
    }

    /// What `/healthz` answers (status code), or `None` while nothing answers.
    pub async fn healthz(&self) -> Option<u16> {
        healthz_code(&probe_client().ok()?, &self.health_url()).await
    }

    /// The agent's `/metrics` text.
    async fn metrics_text(&self) -> eyre::Result<String> {
        probe_client()?
            .get(self.metrics_url())
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .wrap_err_with(|| format!("{}: /metrics does not answer", self.name))?
            .text()
            .await
            .wrap_err_with(|| format!("{}: /metrics body", self.name))
    }

    /// A counter or gauge from the agent's `/metrics`: an error when `/metrics` does not
    /// answer, `None` when it has no such series.
    pub async fn metric(&self, name: &str) -> eyre::Result<Option<f64>> {
        let text = self.metrics_text().await?;
        Ok(text
            .lines()
            .find(|line| line.split_whitespace().next() == Some(name))
            .and_then(|line| line.split_whitespace().last())
            .and_then(|value| value.parse().ok()))
    }

    /// The sum of every series of the counter family `name` (e.g. every `kind` of
    /// `attestmesh_agent_sponsored_operations_total`): an error when `/metrics` does not answer
    /// or does not export the family (which must not read as zero).
    pub async fn metric_sum(&self, name: &str) -> eyre::Result<f64> {
        let text = self.metrics_text().await?;
        let series = family_series(&text, name)
            .wrap_err_with(|| format!("{}: /metrics", self.name))?
            .ok_or_else(|| eyre::eyre!("{}: /metrics does not export {name}", self.name))?;
        Ok(series.values().sum())
    }

    /// One series of the counter family `family` by its labels (`reason="identified"`): 0 while
    /// nothing was counted in it yet, an error when `/metrics` does not answer or does not export
    /// the family at all (which must not read as zero).
    pub async fn counter(&self, family: &str, labels: &str) -> eyre::Result<f64> {
        let text = self.metrics_text().await?;
        let series = family_series(&text, family)
            .wrap_err_with(|| format!("{}: /metrics", self.name))?
            .ok_or_else(|| eyre::eyre!("{}: /metrics does not export {family}", self.name))?;
        Ok(series.get(labels).copied().unwrap_or(0.0))
    }

    /// The agent's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.agent.as_ref().and_then(Child::id)
    }

    /// SIGKILL (`kill -9`): the agent gets no chance to clean up.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.agent.take()
            && let Err(err) = child.kill().await
        {
            debug!(target: LOG_TARGET, node = %self.name, %err, "agent already gone");
        }
    }

    /// Whether the agent process has exited, with its status.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.agent
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The last `lines` lines of the agent's log.
    pub fn log_tail(&self, lines: usize) -> String {
        match std::fs::read_to_string(&self.log) {
            Ok(text) => {
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(err) => format!("(cannot read {}: {err})", self.log.display()),
        }
    }
}

/// A counter family's series by label set (`kind="x"` → value).
pub type MetricSeries = std::collections::BTreeMap<String, f64>;

/// Every series of the counter `family` in a Prometheus / OpenMetrics text, by label set.
/// `None` when the text neither declares the family (`# TYPE`) nor has a series of it: an agent
/// that does not export it, which must not read as zero.
pub fn family_series(text: &str, family: &str) -> eyre::Result<Option<MetricSeries>> {
    let base = family.strip_suffix("_total").unwrap_or(family);
    let mut declared = false;
    let mut series = MetricSeries::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            if words.next() == Some("TYPE")
                && words
                    .next()
                    .is_some_and(|name| name == base || name == family)
            {
                declared = true;
            }
            continue;
        }
        let Some(rest) = line.strip_prefix(family) else {
            continue;
        };
        let (labels, rest) = if let Some(inner) = rest.strip_prefix('{') {
            // The closing brace outside quoted label values.
            let (mut quoted, mut escaped, mut end) = (false, false, None);
            for (i, c) in inner.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' if quoted => escaped = true,
                    '"' => quoted = !quoted,
                    '}' if !quoted => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end.ok_or_else(|| eyre::eyre!("unterminated labels in {line:?}"))?;
            (&inner[..end], &inner[end + 1..])
        } else if rest.starts_with([' ', '\t']) {
            ("", rest)
        } else {
            // Another metric whose name starts with this one's.
            continue;
        };
        let value: f64 = rest
            .split_whitespace()
            .next()
            .ok_or_else(|| eyre::eyre!("no value in {line:?}"))?
            .parse()
            .wrap_err_with(|| format!("unreadable value in {line:?}"))?;
        *series.entry(labels.to_string()).or_default() += value;
    }
    Ok((declared || !series.is_empty()).then_some(series))
}

/// One bounded HTTP client for probes: a wedged agent costs 2 s, never a hang.
fn probe_client() -> eyre::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .wrap_err("cannot build an HTTP client")
}

/// `GetMeshStatus` on the agent socket, or `None` while the API is not answering.
async fn mesh_status(socket: &Path) -> Option<pb::MeshStatus> {
    let mut client = attestmesh_proto::agent::connect_unix(socket).await.ok()?;
    let status = client.get_mesh_status(pb::GetMeshStatusRequest {});
    tokio::time::timeout(Duration::from_secs(5), status)
        .await
        .ok()?
        .ok()
        .map(tonic::Response::into_inner)
}

/// The status code `/healthz` answers, or `None` while nothing answers.
async fn healthz_code(http: &reqwest::Client, url: &str) -> Option<u16> {
    let response = http.get(url).send().await.ok()?;
    Some(response.status().as_u16())
}

/// What one node looks like right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    /// `None` while the API does not answer (starting, or dead).
    pub status: Option<pb::MeshStatus>,
    pub healthy: bool,
}

impl NodeView {
    /// The phase in words, `starting` before the API answers.
    pub fn phase(&self) -> &str {
        self.status
            .as_ref()
            .map_or("starting", |s| s.phase.as_str())
    }
}

/// The shared indexer: the `attestmesh-indexer` binary in the root namespace with a TEE of its
/// own (a dstack simulator), registered in the IndexerRegistry at the gateway's no-suffix route
/// (TLS terminated by the gateway, no ALPN: field note 10), which is how nodes reach it.
#[derive(Debug)]
pub struct ClusterIndexer {
    /// What the registry lists: `https://<app id>-<port>.<gateway domain>`.
    pub endpoint: String,
    /// Its Ed25519 key (derived in its TEE), hex.
    pub public_key: String,
    /// Its `/status` and `/healthz`.
    pub status_url: String,
    pub log: PathBuf,
    /// The binary it runs.
    pub executable: PathBuf,
    process: Child,
    _tee: attestmesh_devnet::dstack_simulator::SimulatorHandle,
}

impl ClusterIndexer {
    /// Its `/status` body.
    pub async fn status(&self) -> eyre::Result<serde_json::Value> {
        probe_client()?
            .get(&self.status_url)
            .send()
            .await
            .wrap_err("the indexer's /status does not answer")?
            .json()
            .await
            .wrap_err("the indexer's /status is not JSON")
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.process.try_wait(), Ok(None))
    }
}

/// A devnet whose services listen where namespaces can reach them, plus N nodes, and
/// optionally the shared indexer ([`Cluster::start_indexer`]).
#[derive(Debug)]
pub struct Cluster {
    pub stack: Stack,
    pub nodes: Vec<ClusterNode>,
    pub indexer: Option<ClusterIndexer>,
    agent_binary: PathBuf,
    dir: PathBuf,
    /// `RUST_LOG` of the agents.
    pub agent_log_filter: String,
    /// How often agents poll the chain underneath the indexer (seconds); `None` = the agent's
    /// default.
    pub poll_interval_secs: Option<u64>,
    /// The port (on each node's host end of the veth) the agents' `--chain.rpc-url` names
    /// instead of anvil's, e.g. a [`FaultProxy`](attestmesh_devnet::fault_proxy::FaultProxy) that counts
    /// their requests; `None` = anvil itself.
    pub chain_rpc_port: Option<u16>,
    /// More chain RPC endpoints (ports on each node's host end of the veth) the agents read
    /// membership from, after the first; e.g. a lying [`FaultProxy`](attestmesh_devnet::fault_proxy::FaultProxy).
    pub extra_chain_rpc_ports: Vec<u16>,
    /// `--chain.quorum` of the agents; `None` = the agent's default (a majority).
    pub chain_quorum: Option<usize>,
}

impl Cluster {
    /// The devnet and `count` nodes with their agents started.
    pub async fn start(dir: &Path, count: usize, agent_binary: &Path) -> eyre::Result<Self> {
        let mut cluster = Self::prepare(dir, count, agent_binary).await?;
        for i in 0..count {
            cluster.start_agent(i)?;
        }
        Ok(cluster)
    }

    /// The devnet and `count` nodes (namespace, member account, dstack simulator, gateway
    /// route) without their agents, so faults can be set up first.
    pub async fn prepare(dir: &Path, count: usize, agent_binary: &Path) -> eyre::Result<Self> {
        Self::prepare_with(
            StackConfig::new(dir.join("devnet")),
            dir,
            count,
            agent_binary,
        )
        .await
    }

    /// [`Cluster::prepare`] with a stack configuration of the caller's (its listen addresses
    /// are opened to the namespaces here).
    pub async fn prepare_with(
        mut config: StackConfig,
        dir: &Path,
        count: usize,
        agent_binary: &Path,
    ) -> eyre::Result<Self> {
        require_privileges().map_err(|missing| eyre::eyre!("a cluster needs {missing}"))?;
        if !agent_binary.is_file() {
            eyre::bail!(
                "the agent binary {} does not exist: build it (cargo build -p cluster-mesh-agent)",
                agent_binary.display()
            );
        }
        config.chain.host = Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        config.bundler_listen = ANY;
        config.gas_manager_listen = ANY;
        config.gateway_listen = ANY;
        let stack = Stack::start(config)
            .await
            .wrap_err("the devnet did not come up")?;
        let mut cluster = Self {
            stack,
            nodes: Vec::new(),
            indexer: None,
            agent_binary: agent_binary.to_path_buf(),
            dir: dir.to_path_buf(),
            agent_log_filter: "info,attestmesh=debug".into(),
            poll_interval_secs: Some(1),
            chain_rpc_port: None,
            extra_chain_rpc_ports: Vec::new(),
            chain_quorum: None,
        };
        cluster.add_nodes(count).await?;
        Ok(cluster)
    }

    /// Prepares one more node (its agent not started).
    pub async fn add_node(&mut self) -> eyre::Result<usize> {
        Ok(self.add_nodes(1).await?.start)
    }

    /// Prepares `count` more nodes (agents not started): their member accounts are allowlisted
    /// and deployed in one round of transactions, so the set-up takes O(1) blocks whatever
    /// `count` is. The indices of the new nodes.
    pub async fn add_nodes(&mut self, count: usize) -> eyre::Result<std::ops::Range<usize>> {
        let first = self.nodes.len();
        let names: Vec<String> = (first..first + count)
            .map(|i| format!("node-{}", i + 1))
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        self.stack.add_nodes(&refs).await.wrap_err_with(|| {
            format!(
                "{}: cannot prepare member accounts and TEEs",
                refs.join(", ")
            )
        })?;
        for (offset, name) in names.into_iter().enumerate() {
            let account = self.stack.nodes[first + offset].account;
            let netns = Netns::create_unique()
                .wrap_err_with(|| format!("{name}: cannot create a namespace"))?;
            let (host_ip, ns_ip) = (netns.host_ip(), netns.ns_ip());
            self.stack.gateway.add_route(
                attestmesh_dstack::EthAddress(account.into_array()),
                IpAddr::V4(ns_ip),
            );
            info!(target: LOG_TARGET, node = %name, netns = netns.name(), %ns_ip, %account, "node prepared");
            self.nodes.push(ClusterNode {
                socket: self.dir.join(format!("{name}.agent.sock")),
                log: self.dir.join(format!("{name}.log")),
                name,
                netns,
                host_ip,
                ns_ip,
                agent: None,
            });
        }
        Ok(first..first + count)
    }

    /// Starts (or restarts) node `i`'s agent process inside its namespace; it logs to
    /// `<dir>/node-<i+1>.log`.
    pub fn start_agent(&mut self, i: usize) -> eyre::Result<()> {
        let node = self
            .nodes
            .get(i)
            .ok_or_else(|| eyre::eyre!("there is no node {i}"))?;
        let host = node.host_ip;
        let port = |url: &url::Url| url.port_or_known_default().unwrap_or(80);
        let chain_port = self
            .chain_rpc_port
            .unwrap_or_else(|| port(self.stack.chain.rpc_url()));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .wrap_err_with(|| format!("cannot open {}", node.log.display()))?;
        let stderr = log.try_clone().wrap_err("cannot share the log file")?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", node.netns.name()])
            .arg(&self.agent_binary)
            .arg("run")
            .arg("--dstack.socket")
            .arg(&self.stack.nodes[i].dstack_socket)
            .args([
                "--chain.rpc-url",
                &std::iter::once(chain_port)
                    .chain(self.extra_chain_rpc_ports.iter().copied())
                    .map(|port| format!("http://{host}:{port}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ])
            .args(["--chain.id", &self.stack.config.chain.chain_id.to_string()])
            .args([
                "--bundler.url",
                &format!("http://{host}:{}", port(self.stack.bundler_url())),
            ])
            .args([
                "--gas-manager.url",
                &format!("http://{host}:{}", port(self.stack.gas_manager.url())),
            ])
            .args(["--gas-manager.policy-id", &self.stack.config.policy_id])
            .args([
                "--gateway.connect",
                &format!("{host}:{}", self.stack.gateway.local_addr().port()),
            ])
            .args(["--gateway.domain", self.stack.gateway.domain()])
            // How nodes reach an indexer the registry lists: through the gateway (whose names do
            // not resolve here), trusting the devnet gateway's CA.
            .args([
                "--indexer.connect",
                &format!("{host}:{}", self.stack.gateway.local_addr().port()),
            ])
            .arg("--indexer.ca-file")
            .arg(self.stack.config.state_dir.join("gateway-ca.pem"))
            .args(["--health.listen", &format!("0.0.0.0:{HEALTH_PORT}")])
            .arg("--api.socket")
            .arg(&node.socket)
            .env("RUST_LOG", &self.agent_log_filter)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .kill_on_drop(true);
        if let Some(secs) = self.poll_interval_secs {
            command.args(["--poll.interval-secs", &secs.to_string()]);
        }
        if let Some(k) = self.chain_quorum {
            command.args(["--chain.quorum", &k.to_string()]);
        }
        let child = command
            .spawn()
            .wrap_err_with(|| format!("{}: the agent did not start", node.name))?;
        info!(target: LOG_TARGET, node = %node.name, pid = ?child.id(), "agent started");
        self.nodes[i].agent = Some(child);
        Ok(())
    }

    /// Starts the shared indexer from `binary` and registers it, as an operator would
    /// (`attestmesh-operator register-indexer`). Start it before the agents: they discover
    /// indexers in the registry when they start (and again only after a while).
    pub async fn start_indexer(&mut self, binary: &Path) -> eyre::Result<&ClusterIndexer> {
        use alloy::sol_types::SolCall;
        use attestmesh_bindings::indexer_registry::IndexerRegistry;

        if !binary.is_file() {
            eyre::bail!(
                "the indexer binary {} does not exist: build it (cargo build -p attestmesh-indexer)",
                binary.display()
            );
        }
        let app_id = attestmesh_dstack::EthAddress(
            alloy::primitives::keccak256(b"attestmesh-devnet-indexer")[..20]
                .try_into()
                .wrap_err("an app id is 20 bytes")?,
        );
        let socket = self.dir.join("indexer.dstack.sock");
        let tee = attestmesh_devnet::dstack_simulator::DstackSimulator::spawn(
            attestmesh_devnet::dstack_simulator::SimulatorConfig::new(
                app_id,
                attestmesh_devnet::dstack_simulator::KeySource::DevnetSeed(
                    self.stack.config.kms_seed.clone(),
                ),
            ),
            &socket,
        )
        .wrap_err("cannot start the indexer's dstack simulator")?;
        let free = || -> eyre::Result<u16> {
            let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .wrap_err("cannot find a free loopback port")?;
            Ok(listener.local_addr()?.port())
        };
        let (grpc, health) = (free()?, free()?);
        let log = self.dir.join("indexer.log");
        let out = std::fs::File::create(&log)
            .wrap_err_with(|| format!("cannot create {}", log.display()))?;
        let process = Command::new(binary)
            .arg("--chain.rpc-url")
            .arg(self.stack.chain.rpc_url().as_str())
            .arg("--chain.id")
            .arg(self.stack.config.chain.chain_id.to_string())
            .arg("--factory")
            .arg(self.stack.chain.deployment().cluster_factory.to_string())
            .arg("--dstack.socket")
            .arg(&socket)
            .args(["--grpc.listen", &format!("127.0.0.1:{grpc}")])
            .args(["--health.listen", &format!("127.0.0.1:{health}")])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .wrap_err("the indexer did not start")?;
        let mut indexer = ClusterIndexer {
            endpoint: String::new(),
            public_key: String::new(),
            status_url: format!("http://127.0.0.1:{health}/status"),
            log,
            executable: binary.to_path_buf(),
            process,
            _tee: tee,
        };
        // Its key is on /status as soon as the listeners are up (before catch-up).
        let deadline = Instant::now() + Duration::from_secs(60);
        let key = loop {
            if !indexer.running() {
                eyre::bail!("the indexer exited at start; see {}", indexer.log.display());
            }
            if let Ok(status) = indexer.status().await
                && let Some(key) = status["public_key"].as_str()
            {
                break key.to_string();
            }
            if Instant::now() >= deadline {
                eyre::bail!(
                    "the indexer's /status never answered; see {}",
                    indexer.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let key_bytes: [u8; 32] = hex::decode(&key)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| eyre::eyre!("the indexer reports a malformed key {key:?}"))?;
        self.stack
            .gateway
            .add_route(app_id, IpAddr::V4(Ipv4Addr::LOCALHOST));
        let endpoint = format!(
            "https://{}",
            self.stack.gateway.hostname(
                app_id,
                grpc,
                attestmesh_devnet::gateway::RouteMode::Terminate
            )
        );
        let call = IndexerRegistry::registerIndexerCall {
            endpoint: endpoint.clone(),
            ed25519PublicKey: alloy::primitives::B256::from(key_bytes),
        };
        self.stack
            .chain
            .operator_client()
            .send_transaction(
                "IndexerRegistry.registerIndexer",
                self.stack.chain.deployment().indexer_registry,
                call.abi_encode().into(),
            )
            .await
            .wrap_err("cannot register the indexer in the IndexerRegistry")?;
        info!(target: LOG_TARGET, %endpoint, public_key = %key, "indexer started and registered");
        indexer.endpoint = endpoint;
        indexer.public_key = key;
        Ok(self.indexer.insert(indexer))
    }

    /// Every process this cluster started that is still running, with the executable it runs
    /// (for agents, the one `ip netns exec` is about to become): anvil, the indexer, the agents.
    /// The demo records them, so a demo that was itself SIGKILLed is cleaned up by the next one.
    pub fn processes(&self) -> Vec<(u32, PathBuf)> {
        let canonical =
            |path: &Path| std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let anvil = self.stack.chain.anvil_pid();
        let mut processes = Vec::new();
        if let Ok(exe) = std::fs::read_link(format!("/proc/{anvil}/exe")) {
            processes.push((anvil, exe));
        }
        if let Some(indexer) = &self.indexer
            && let Some(pid) = indexer.process.id()
        {
            processes.push((pid, canonical(&indexer.executable)));
        }
        let agent = canonical(&self.agent_binary);
        processes.extend(
            self.nodes
                .iter()
                .filter_map(ClusterNode::pid)
                .map(|pid| (pid, agent.clone())),
        );
        processes
    }

    /// An error naming the first started agent that has exited, with the end of its log.
    pub fn check_agents_running(&mut self) -> eyre::Result<()> {
        for node in &mut self.nodes {
            if let Some(status) = node.exited() {
                eyre::bail!(
                    "{} exited ({status}); its log ends with:\n{}",
                    node.name,
                    node.log_tail(30)
                );
            }
        }
        Ok(())
    }

    /// Every node as it is now.
    /// Every node is asked at once, so a round takes as long as the slowest answer (each
    /// bounded), not the sum: timings read from it stay close to the poll interval.
    pub async fn views(&self) -> Vec<NodeView> {
        let http = match probe_client() {
            Ok(http) => Some(http),
            Err(err) => {
                // Every node then reads as not healthy, and a wait reports it after its timeout.
                warn!(target: LOG_TARGET, error = %err, "no HTTP client for /healthz probes");
                None
            }
        };
        let mut probes = tokio::task::JoinSet::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let (socket, health, http) = (node.socket.clone(), node.health_url(), http.clone());
            probes.spawn(async move {
                let status = mesh_status(&socket).await;
                let healthy = match &http {
                    Some(http) => healthz_code(http, &health).await == Some(200),
                    None => false,
                };
                (i, status, healthy)
            });
        }
        let mut views: Vec<NodeView> = self
            .nodes
            .iter()
            .map(|node| NodeView {
                name: node.name.clone(),
                status: None,
                healthy: false,
            })
            .collect();
        while let Some(probe) = probes.join_next().await {
            match probe {
                Ok((i, status, healthy)) => {
                    views[i].status = status;
                    views[i].healthy = healthy;
                }
                Err(err) => debug!(target: LOG_TARGET, %err, "a node probe failed"),
            }
        }
        views
    }

    /// Waits until every node's `/healthz` answers 200, calling `progress` with every view
    /// that differs from the last one. After `timeout` the error names each node's phase, what
    /// it waits for, and the tail of its log. An agent that exits is an error at once.
    pub async fn wait_all_healthy(
        &mut self,
        timeout: Duration,
        progress: impl FnMut(&NodeView),
    ) -> eyre::Result<Duration> {
        self.wait_until(timeout, |views| views.iter().all(|v| v.healthy), progress)
            .await
    }

    /// Waits until the cluster is whole again: every node healthy and seeing every other node
    /// live (what a restart must get back to; the health gate alone stays open through flaps).
    pub async fn wait_converged(&mut self, timeout: Duration) -> eyre::Result<Duration> {
        let others = u32::try_from(self.nodes.len().saturating_sub(1)).unwrap_or(u32::MAX);
        self.wait_until(
            timeout,
            |views| {
                views
                    .iter()
                    .all(|v| v.healthy && v.status.as_ref().is_some_and(|s| s.live_peers == others))
            },
            |_| {},
        )
        .await
    }

    /// Polls every node (every 100 ms) until `done` holds for all their views; see
    /// [`Cluster::wait_all_healthy`] for `progress` and the timeout.
    pub async fn wait_until(
        &mut self,
        timeout: Duration,
        done: impl Fn(&[NodeView]) -> bool,
        mut progress: impl FnMut(&NodeView),
    ) -> eyre::Result<Duration> {
        let started = Instant::now();
        let mut last: Vec<Option<NodeView>> = vec![None; self.nodes.len()];
        loop {
            self.check_agents_running()?;
            let views = self.views().await;
            for (view, previous) in views.iter().zip(last.iter_mut()) {
                if previous.as_ref() != Some(view) {
                    progress(view);
                    *previous = Some(view.clone());
                }
            }
            if done(&views) {
                return Ok(started.elapsed());
            }
            if started.elapsed() >= timeout {
                let mut report = format!("the cluster did not get there within {timeout:?}:");
                for (view, node) in views.iter().zip(&self.nodes) {
                    let waiting = view
                        .status
                        .as_ref()
                        .map_or("its API to answer", |s| s.waiting_for.as_str());
                    let live = view.status.as_ref().map_or(0, |s| s.live_peers);
                    report.push_str(&format!(
                        "\n  {}: {}, {live} live peer(s) (waiting for {waiting}); log ends with:\n{}",
                        node.name,
                        view.phase(),
                        node.log_tail(15)
                    ));
                }
                eyre::bail!(report);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
