//! The node as operators ship it: deploy/compose/docker-compose.yaml itself, run by podman-compose
//! with the images deploy/podman/build-images.sh built here, against the devnet. The sidecar
//! container gets /dev/net/tun and NET_ADMIN, the dstack socket of the devnet's simulator, and
//! the chain RPC, bundler, gas manager and gateway on the host; the app container talks to it only
//! through the shared socket volume. A second node runs as a harness agent in a namespace.
//!
//! A devnet override file (written per test) changes only what a dstack deployment would set
//! differently: where the services are, the local image tags, no published host ports.
//!
//! Needs root, podman and the images: run through `make test-compose` (part of `make test`),
//! which installs podman, builds the images and runs these tests; plain `cargo nextest run`
//! skips them (ignored).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use alloy::primitives::keccak256;
use attestmesh_devnet::local_chain::project_root;
use attestmesh_testbed::cluster::{Cluster, agent_binary_beside_current_exe};

use crate::support::init_logs;

const AGENT_IMAGE: &str = "localhost/attestmesh/cluster-mesh-agent:dev";
const SIDECAR: &str = "cluster-mesh-agent";
const APP: &str = "app";
/// Long enough for any honest wait here (a cold registration at 2 s blocks, a mesh handshake);
/// the compose healthcheck polls every 5 s.
const WAIT: Duration = Duration::from_secs(150);

fn podman_dir() -> PathBuf {
    project_root().join("deploy/podman")
}

/// `podman <args>` with the project's containers.conf.
fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .args(args)
        .env("CONTAINERS_CONF", podman_dir().join("containers.conf"))
        .stdin(Stdio::null())
        .output()
        .expect("podman runs (make test-compose installs it)")
}

fn podman_text(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One compose project: the node's compose file plus a devnet override. Dropping it removes
/// whatever the project left in podman (after a failure too).
struct Project {
    name: String,
    override_file: PathBuf,
    /// A background `up -d` (it returns only once the app started).
    up: Option<Child>,
}

impl Project {
    fn new(dir: &Path, name: &str, override_yaml: &str) -> Self {
        let override_file = dir.join(format!("{name}.override.yaml"));
        std::fs::write(&override_file, override_yaml).unwrap();
        let project = Self {
            name: name.to_string(),
            override_file,
            up: None,
        };
        project.cleanup();
        project
    }

    fn compose(&self, args: &[&str]) -> Command {
        let mut command = Command::new(podman_dir().join("compose.sh"));
        command
            .arg("-p")
            .arg(&self.name)
            .arg("-f")
            .arg(project_root().join("deploy/compose/docker-compose.yaml"))
            .arg("-f")
            .arg(&self.override_file)
            .args(args)
            // The compose file's encrypted-environment placeholders: API keys a dstack
            // deployment fills in; the devnet needs none.
            .env("ALCHEMY_API_KEY", "devnet-unused")
            .env("INFURA_API_KEY", "devnet-unused")
            .env("ATTESTMESH_BUNDLER_URL", "http://overridden.invalid")
            .env("ATTESTMESH_GAS_MANAGER_URL", "http://overridden.invalid")
            .stdin(Stdio::null());
        command
    }

    /// `up -d` in the background: podman-compose starts the sidecar, waits for it to be
    /// healthy, then starts the app.
    fn start_up(&mut self) {
        let log = std::fs::File::create(self.override_file.with_extension("up.log")).unwrap();
        let child = self
            .compose(&["up", "-d"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.up = Some(child);
    }

    /// Whether the background `up` has returned (with success).
    fn up_finished(&mut self) -> Option<bool> {
        let child = self.up.as_mut()?;
        child.try_wait().unwrap().map(|status| status.success())
    }

    fn up_log(&self) -> String {
        std::fs::read_to_string(self.override_file.with_extension("up.log"))
            .unwrap_or_else(|e| format!("(no up log: {e})"))
    }

    fn down(&mut self) {
        if let Some(mut child) = self.up.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let out = self.compose(&["down", "-v", "-t", "5"]).output().unwrap();
        assert!(
            out.status.success(),
            "compose down: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The project's container of `service` (by podman-compose's labels), if it exists.
    fn container(&self, service: &str) -> Option<String> {
        let names = podman_text(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=io.podman.compose.project={}", self.name),
            "--filter",
            &format!("label=io.podman.compose.service={service}"),
            "--format",
            "{{.Names}}",
        ]);
        names.lines().next().map(str::to_string)
    }

    /// "running", "created", "exited", …; "absent" when there is no such container.
    fn state(&self, service: &str) -> String {
        match self.container(service) {
            Some(name) => podman_text(&["inspect", "--format", "{{.State.Status}}", &name]),
            None => "absent".to_string(),
        }
    }

    fn logs(&self, service: &str) -> String {
        let Some(name) = self.container(service) else {
            return String::new();
        };
        let out = podman(&["logs", &name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn sidecar_ip(&self) -> Option<String> {
        let name = self.container(SIDECAR)?;
        let ip = podman_text(&[
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &name,
        ]);
        (!ip.is_empty()).then_some(ip)
    }

    /// What podman still holds of the project: containers, pod, networks, volumes.
    fn leftovers(&self) -> Vec<String> {
        let label = format!("label=io.podman.compose.project={}", self.name);
        let mut left = Vec::new();
        for (kind, args) in [
            (
                "container",
                vec!["ps", "-a", "--filter", &label, "--format", "{{.Names}}"],
            ),
            (
                "network",
                vec!["network", "ls", "--filter", &label, "--format", "{{.Name}}"],
            ),
            (
                "volume",
                vec!["volume", "ls", "--filter", &label, "--format", "{{.Name}}"],
            ),
            (
                "pod",
                vec![
                    "pod",
                    "ps",
                    "--filter",
                    &format!("name=pod_{}", self.name),
                    "--format",
                    "{{.Name}}",
                ],
            ),
        ] {
            left.extend(podman_text(&args).lines().map(|l| format!("{kind} {l}")));
        }
        left
    }

    fn cleanup(&self) {
        let _ = Command::new(podman_dir().join("cleanup.sh"))
            .arg(&self.name)
            .env("CONTAINERS_CONF", podman_dir().join("containers.conf"))
            .output();
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if let Some(mut child) = self.up.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.cleanup();
    }
}

/// The sidecar's `/healthz` from the host, through the container's bridge address: the status
/// code and the `x-attestmesh-waiting-for` header.
async fn healthz(ip: &str) -> Option<(u16, String)> {
    let response = reqwest::Client::new()
        .get(format!("http://{ip}:9090/healthz"))
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .ok()?;
    let waiting = response
        .headers()
        .get("x-attestmesh-waiting-for")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_else(String::new);
    Some((response.status().as_u16(), waiting))
}

/// The devnet override of the node's compose file: the services on the host (reached from the
/// bridge as host.containers.internal), this node's dstack socket, the local images.
fn devnet_override(cluster: &Cluster, node: usize, changes: &BTreeMap<&str, String>) -> String {
    let stack = &cluster.stack;
    let port = |url: &url::Url| url.port_or_known_default().unwrap();
    let host = "host.containers.internal";
    let mut env = BTreeMap::from([
        (
            "ATTESTMESH_CHAIN_RPC_URL",
            format!("http://{host}:{}", port(stack.chain.rpc_url())),
        ),
        (
            "ATTESTMESH_CHAIN_ID",
            stack.config.chain.chain_id.to_string(),
        ),
        (
            "ATTESTMESH_BUNDLER_URL",
            format!("http://{host}:{}", port(stack.bundler_url())),
        ),
        (
            "ATTESTMESH_GAS_MANAGER_URL",
            format!("http://{host}:{}", port(stack.gas_manager.url())),
        ),
        (
            "ATTESTMESH_GAS_MANAGER_POLICY_ID",
            stack.config.policy_id.clone(),
        ),
        (
            "ATTESTMESH_GATEWAY_CONNECT",
            format!("{host}:{}", stack.gateway.local_addr().port()),
        ),
        (
            "ATTESTMESH_GATEWAY_DOMAIN",
            stack.gateway.domain().to_string(),
        ),
        ("RUST_LOG", "info,attestmesh=debug".to_string()),
    ]);
    let dstack = stack.nodes[node].dstack_socket.display().to_string();
    let mut volumes = format!(
        "    volumes:\n      - {dstack}:/var/run/dstack.sock\n      - attestmesh-socket:/var/run/attestmesh\n"
    );
    let mut devices = "    devices: !override\n      - /dev/net/tun:/dev/net/tun\n".to_string();
    for (key, value) in changes {
        match *key {
            "volumes" => volumes = value.clone(),
            "devices" => devices = value.clone(),
            key => {
                env.insert(key, value.clone());
            }
        }
    }
    // Numbers stay numbers: podman-compose merges a value only into one of the same YAML type.
    let env: String = env
        .iter()
        .map(|(k, v)| match v.parse::<u64>() {
            Ok(number) => format!("      {k}: {number}\n"),
            Err(_) => format!("      {k}: \"{v}\"\n"),
        })
        .collect();
    format!(
        "services:\n  {SIDECAR}:\n    image: {AGENT_IMAGE}\n    ports: !override []\n{devices}{volumes}    environment:\n{env}  {APP}:\n    \
         image: {AGENT_IMAGE}\n    \
         # The app: reads its node's state, peers and CSK through the shared socket only.\n    \
         entrypoint: [\"/bin/sh\", \"-c\", \"trap 'exit 0' TERM; while :; do cluster-mesh-agent status; sleep 2 & wait $!; done\"]\n"
    )
}

async fn prepared_cluster(dir: &Path, nodes: usize) -> Cluster {
    init_logs();
    let agent = agent_binary_beside_current_exe().unwrap();
    let images = podman(&["image", "exists", AGENT_IMAGE]);
    assert!(
        images.status.success(),
        "{AGENT_IMAGE} is missing: run `make test-compose` (it builds the images)"
    );
    Cluster::prepare(dir, nodes, &agent).await.unwrap()
}

/// Waits until the sidecar's `/healthz` answers `want` (a status) with a header containing
/// `saying`, checking at every poll that the app container has not started before the sidecar
/// is healthy. Returns the header last seen.
async fn wait_health(project: &mut Project, want: u16, saying: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = None;
    loop {
        if let Some(ip) = project.sidecar_ip()
            && let Some((code, header)) = healthz(&ip).await
        {
            if code != 200 {
                assert_ne!(
                    project.state(APP),
                    "running",
                    "the app started while the sidecar answered {code} ({header})"
                );
            }
            if code == want && header.contains(saying) {
                return header;
            }
            last = Some((code, header));
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sidecar never answered {want} saying {saying:?}; last {last:?}; sidecar {}; up: {}\nsidecar log tail: {}",
            project.state(SIDECAR),
            project.up_log(),
            tail(&project.logs(SIDECAR), 15)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The app's latest `cluster-mesh-agent status` block, once it shows `want`.
async fn app_sees(project: &Project, want: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let logs = project.logs(APP);
        // The last status block the app printed (each starts with its phase).
        if let Some(at) = logs.rfind("phase:") {
            let block = &logs[at..];
            if block.contains(want) {
                return block.to_string();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the app never printed {want:?}: {}",
            tail(&logs, 20)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Routes node `node`'s gateway name to the sidecar container's bridge address, once it has one
/// (the gateway reaches the compose node there).
async fn route_to_sidecar(project: &Project, cluster: &Cluster, node: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let ip = loop {
        if let Some(ip) = project.sidecar_ip() {
            break ip;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sidecar container never got an address: {}",
            project.up_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let account = cluster.stack.nodes[node].account;
    cluster.stack.gateway.add_route(
        attestmesh_dstack::EthAddress(account.into_array()),
        ip.parse().unwrap(),
    );
}

/// The compose file as shipped: the app waits for the healthy sidecar, reads its peers and the
/// CSK through the socket, the node meshes with a harness node, a restart of the compose keeps
/// its identity, and `down` leaves nothing behind.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, podman and the images: make test-compose"]
async fn the_nodes_compose_meshes_with_a_peer_and_its_app_reads_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = prepared_cluster(dir.path(), 2).await;
    // Node 1 is a harness agent in its namespace; node 2 is the compose.
    cluster.start_agent(0).unwrap();
    let mut project = Project::new(
        dir.path(),
        "attestmesh-compose-node",
        &devnet_override(&cluster, 1, &BTreeMap::new()),
    );
    project.start_up();
    route_to_sidecar(&project, &cluster, 1).await;
    wait_health(&mut project, 200, "").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while project.up_finished() != Some(true) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "compose up did not finish once the sidecar was healthy: {}",
            project.up_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(project.state(APP), "running", "{}", project.up_log());

    // The app reads its peers and the CSK through the socket.
    let commitment = cluster
        .stack
        .chain
        .operator_client()
        .current_csk_epoch(cluster.stack.cluster)
        .await
        .unwrap()
        .commitment;
    let seen = app_sees(&project, "phase:           healthy").await;
    assert!(
        seen.contains(&format!("commitment {commitment}")),
        "the app reads the committed CSK: {seen}"
    );
    let harness = cluster.nodes[0].get_self().await.unwrap();
    let peer_line = seen
        .lines()
        .find(|l| {
            l.trim_start()
                .starts_with(&format!("{} ", harness.member_id))
        })
        .unwrap_or_else(|| panic!("the app lists member {}: {seen}", harness.member_id));
    assert!(peer_line.contains("live=true"), "{peer_line}");
    let node_status = cluster.nodes[0].status().await.unwrap();
    assert_eq!(
        node_status.live_peers, 1,
        "the harness node sees the compose node live"
    );
    let csk = cluster.nodes[0]
        .client()
        .await
        .unwrap()
        .get_cluster_shared_key(attestmesh_proto::agent::v1::GetClusterSharedKeyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keccak256(&csk.key), commitment, "one CSK on both nodes");
    let member_line = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("member:"))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("the status shows the member: {text}"))
    };
    let identity = member_line(&seen);

    // A restart of the compose brings the node back healthy with the same identity.
    project.down();
    assert_eq!(
        project.leftovers(),
        Vec::<String>::new(),
        "down removes everything"
    );
    project.start_up();
    route_to_sidecar(&project, &cluster, 1).await;
    wait_health(&mut project, 200, "").await;
    let again = app_sees(&project, "phase:           healthy").await;
    assert_eq!(
        member_line(&again),
        identity,
        "the same member after a restart"
    );
    let members = cluster
        .stack
        .chain
        .operator_client()
        .active_members(cluster.stack.cluster)
        .await
        .unwrap();
    assert_eq!(members.len(), 2, "one member per node: {members:?}");

    project.down();
    assert_eq!(
        project.leftovers(),
        Vec::<String>::new(),
        "down removes everything"
    );
}

/// A compose started without the TUN device, without the dstack socket, or with an unreachable
/// chain RPC: the sidecar stays unhealthy with the reason in `/healthz`'s header and its log, the
/// app never starts, and `down` leaves nothing.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, podman and the images: make test-compose"]
async fn a_compose_without_tun_dstack_or_rpc_says_why_and_never_starts_the_app() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = prepared_cluster(dir.path(), 1).await;
    let no_dstack_volumes =
        "    volumes: !override\n      - attestmesh-socket:/var/run/attestmesh\n".to_string();
    let cases: [(&str, BTreeMap<&str, String>, &str); 3] = [
        (
            "attestmesh-compose-no-dstack",
            BTreeMap::from([("volumes", no_dstack_volumes)]),
            "dstack guest agent",
        ),
        (
            "attestmesh-compose-no-rpc",
            BTreeMap::from([(
                "ATTESTMESH_CHAIN_RPC_URL",
                "http://host.containers.internal:9".to_string(),
            )]),
            "chain RPC",
        ),
        (
            "attestmesh-compose-no-tun",
            BTreeMap::from([("devices", "    devices: !override []\n".to_string())]),
            "cannot create TUN",
        ),
    ];
    for (name, changes, reason) in cases {
        let mut project = Project::new(dir.path(), name, &devnet_override(&cluster, 0, &changes));
        project.start_up();
        let header = wait_health(&mut project, 503, reason).await;
        assert_ne!(
            project.state(APP),
            "running",
            "{name}: the app never starts"
        );
        assert_eq!(
            project.up_finished(),
            None,
            "{name}: up still waits for a healthy sidecar"
        );
        let log = project.logs(SIDECAR);
        assert!(
            log.contains(reason),
            "{name}: the log says {reason:?}: {}",
            tail(&log, 10)
        );
        eprintln!("{name}: /healthz 503, x-attestmesh-waiting-for: {header}");
        project.down();
        assert_eq!(
            project.leftovers(),
            Vec::<String>::new(),
            "{name}: down removes everything"
        );
    }
}
