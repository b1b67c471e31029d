//! Issue 16, item 4: credentials leaked. The chain RPC, bundler and gas manager URLs carry API
//! keys (in the user info, the path, the query), and errors quoted them whole: reqwest's
//! "error sending request for url (…/v2/KEY)", `RpcError`'s `at {url}`, debug lines with the URL.
//! From there they reached the logs, `waiting_for`, `/status`, the `x-attestmesh-waiting-for`
//! header of `/healthz` (which operators watch through the dstack gateway: public) and gRPC
//! statuses. Here every one of those services fails in turn (its port closed, so reqwest
//! reports a connection error), and no secret of the configuration appears anywhere the agent
//! speaks — while the endpoints stay named by host and port, so the messages still say what
//! failed.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use attestmesh_devnet::fault_proxy::{FaultMode, FaultProxy};
use attestmesh_devnet::stack::{Stack, StackConfig};
use attestmesh_proto::agent::v1 as pb;
use tonic::Code;
use url::Url;

use crate::harness::*;

/// The secrets of the configuration: each in a place providers put keys.
const SECRETS: [&str; 6] = [
    "rpcuser-0b2",
    "RPC-PASSWORD-5e3",
    "RPC-KEY-7f1",
    "RPC-QUERY-2c9",
    "BUNDLER-KEY-41d",
    "GASMANAGER-KEY-93a",
];

/// Every log line of the process (every target, debug and up), as an operator running with
/// `RUST_LOG=debug` would get them.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn install() -> Self {
        let captured = Self::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug,h2=info"))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init()
            .expect("this test installs the process's log subscriber (nextest runs one test per process)");
        captured
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(
            &self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_owned()
    }
}

/// Fails naming `what` and the secret when `text` holds one.
fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(
            !text.contains(secret),
            "{what} shows the secret {secret}: {text}"
        );
    }
}

/// `/status`, the `/healthz` header and `/metrics`, each checked for secrets; returns
/// `/status`'s `waiting_for`.
async fn public_surfaces(agent: &RunningAgent) -> String {
    let http = reqwest::Client::new();
    let status: serde_json::Value = http
        .get(format!("http://{}/status", agent.health))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_no_secret("/status", &status.to_string());
    let healthz = http
        .get(format!("http://{}/healthz", agent.health))
        .send()
        .await
        .unwrap();
    for (name, value) in healthz.headers() {
        assert_no_secret(
            &format!("/healthz header {name}"),
            &String::from_utf8_lossy(value.as_bytes()),
        );
    }
    assert_no_secret("/healthz body", &healthz.text().await.unwrap());
    let metrics = http
        .get(format!("http://{}/metrics", agent.health))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_no_secret("/metrics", &metrics);
    status["waiting_for"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Polls `/status` (up before the API socket is) until its `waiting_for` holds `words`,
/// checking every public surface on the way; returns it.
async fn wait_waiting_for(agent: &RunningAgent, words: &str) -> String {
    let deadline = tokio::time::Instant::now() + budget();
    loop {
        let waiting_for = public_surfaces(agent).await;
        if waiting_for.contains(words) {
            return waiting_for;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never waited for {words:?}; last: {waiting_for}"
        );
        assert!(!agent.task.is_finished(), "the agent stopped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `done` holds, within the wait budget.
async fn wait_for<F, Fut>(what: &str, done: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + budget();
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "never saw {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn grpc_waiting_for(agent: &RunningAgent) -> String {
    let status = agent
        .client()
        .await
        .get_mesh_status(pb::GetMeshStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_no_secret("GetMeshStatus", &status.waiting_for);
    status.waiting_for
}

/// `proxy`'s address with a secret in `userinfo`, `path` and `query` as given.
fn keyed(proxy: &FaultProxy, userinfo: &str, path: &str) -> Url {
    let address = proxy.url().host_str().zip(proxy.url().port()).unwrap();
    format!("http://{userinfo}{}:{}{path}", address.0, address.1)
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_of_the_configuration_reaches_a_log_line_status_header_or_error() {
    let logs = Captured::install();
    let dir = tempfile::tempdir().unwrap();
    let mut stack = Stack::start(StackConfig::new(dir.path().join("devnet")).with_instant_mining())
        .await
        .expect("devnet starts");
    stack.add_node("node-1").await.unwrap();
    let mut chain = FaultProxy::start(stack.chain.rpc_url().clone())
        .await
        .unwrap();
    let mut bundler = FaultProxy::start(stack.bundler_url().clone())
        .await
        .unwrap();
    let mut gas_manager = FaultProxy::start(stack.gas_manager.url().clone())
        .await
        .unwrap();
    let chain_url = keyed(
        &chain,
        "rpcuser-0b2:RPC-PASSWORD-5e3@",
        "/v2/RPC-KEY-7f1?apikey=RPC-QUERY-2c9",
    );
    let mut config = agent_config(&stack, 0, dir.path(), Some(&chain_url));
    config.bundler_url = keyed(&bundler, "", "/v2/BUNDLER-KEY-41d");
    config.gas_manager_url = keyed(&gas_manager, "", "/v2/GASMANAGER-KEY-93a?policy=p");
    let (chain_at, bundler_at, gas_manager_at) = (
        chain.url().to_string(),
        bundler.url().to_string(),
        gas_manager.url().to_string(),
    );

    // The chain RPC is down at boot: the agent waits for it, and says where it is.
    chain.go_down().await.unwrap();
    let agent = start_agent("node-1", config).await;
    let waiting = wait_waiting_for(&agent, "chain RPC").await;
    println!("chain RPC down: {waiting}");
    assert!(
        waiting.contains(chain_at.trim_end_matches('/')),
        "{waiting}"
    );
    chain.come_back().await.unwrap();

    // The gas manager down while registering.
    gas_manager.go_down().await.unwrap();
    let waiting = wait_waiting_for(&agent, "gas manager").await;
    println!("gas manager down: {waiting}");
    assert!(
        waiting.contains(gas_manager_at.trim_end_matches('/')),
        "{waiting}"
    );
    grpc_waiting_for(&agent).await;

    // Then the bundler.
    bundler.go_down().await.unwrap();
    gas_manager.come_back().await.unwrap();
    let waiting = wait_waiting_for(&agent, "bundler").await;
    println!("bundler down: {waiting}");
    assert!(
        waiting.contains(bundler_at.trim_end_matches('/')),
        "{waiting}"
    );
    grpc_waiting_for(&agent).await;
    bundler.come_back().await.unwrap();
    wait_status(&agent, "registered", |s| s.phase == "waiting-peers").await;

    // A message while the bundler is down: the gRPC status names the bundler, not its key.
    bundler.go_down().await.unwrap();
    let id = member_id(&agent).await;
    let error = agent
        .client()
        .await
        .send_message(pb::SendMessageRequest {
            recipient_member_id: id,
            payload: b"to myself".to_vec(),
        })
        .await
        .expect_err("the bundler is down");
    println!("SendMessage: {:?} {}", error.code(), error.message());
    assert_eq!(error.code(), Code::Unavailable, "{error:?}");
    assert!(error.message().contains("bundler"), "{}", error.message());
    assert_no_secret("SendMessage's status", &format!("{error:?}"));
    bundler.come_back().await.unwrap();

    // The chain RPC failing under the running node: JSON-RPC errors, then its port closed.
    // Each phase lasts until the agent has met it twice, not for a fixed time.
    let faults_before = chain.faults_injected();
    chain.set_mode(FaultMode::RpcError);
    wait_for("two JSON-RPC error replies to the agent", || async {
        chain.faults_injected() >= faults_before + 2
    })
    .await;
    chain.set_mode(FaultMode::Pass);
    let errors_before = poll_errors(&agent).await;
    chain.go_down().await.unwrap();
    wait_for("two failed polls against the closed port", || async {
        poll_errors(&agent).await >= errors_before + 2.0
    })
    .await;
    public_surfaces(&agent).await;
    grpc_waiting_for(&agent).await;
    chain.come_back().await.unwrap();
    agent.stop().await;

    let logs = logs.text();
    println!("{} bytes of logs captured", logs.len());
    for line in logs.lines() {
        assert_no_secret("a log line", line);
    }
    // The failures were logged, endpoints named by host and port.
    for (service, at) in [
        ("gas manager", &gas_manager_at),
        ("bundler", &bundler_at),
        ("chain RPC", &chain_at),
    ] {
        assert!(
            logs.lines()
                .any(|l| l.contains(service) && l.contains(at.trim_end_matches('/'))),
            "no log line names the {service} at {at}"
        );
    }
}

/// What `address` answers to `GET /healthz`: `None` when no TCP connection is made, else the
/// bytes it sent back before closing (empty when it closed unanswered).
async fn raw_healthz(address: String) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(&address),
    )
    .await
    .ok()?
    .ok()?;
    // A connection the server already closed fails the write: an empty answer.
    let _ = stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    Some(String::from_utf8_lossy(&answer).into_owned())
}

/// Item 4 of issue 16, the other half: the health server listened on 0.0.0.0, so every mesh
/// peer could read it over attestmesh0. Two nodes in their own namespaces, converged: a peer
/// reaches node-2's health port over the mesh (the TCP connection is made) but gets no byte
/// back, nor does node-1 on its own mesh IP; the root namespace (where the dstack gateway's
/// stand-in and the probes are) is still served, as the gateway is in the compose.
#[tokio::test(flavor = "multi_thread")]
async fn the_health_port_does_not_answer_on_the_mesh() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = crate::cluster::start(dir.path(), 2).await;
    crate::cluster::healthy(&mut cluster).await;
    let port = attestmesh_testbed::cluster::HEALTH_PORT;
    let own = cluster.nodes[0].get_self().await.unwrap().mesh_ip;
    let peer = cluster.nodes[1].get_self().await.unwrap().mesh_ip;
    let answers = cluster.nodes[0]
        .netns
        .run(move || async move {
            (
                raw_healthz(format!("{peer}:{port}")).await,
                raw_healthz(format!("{own}:{port}")).await,
            )
        })
        .join()
        .await
        .expect("the probe in node-1's namespace");
    println!("over the mesh: {answers:?}");
    for (whose, answer) in [("the peer's", answers.0), ("its own", answers.1)] {
        let answer = answer.unwrap_or_else(|| panic!("{whose} mesh IP is not reachable at all"));
        assert!(
            answer.is_empty(),
            "{whose} health port answered on the mesh: {answer:?}"
        );
    }
    for node in &cluster.nodes {
        assert_eq!(
            node.healthz().await,
            Some(200),
            "{} is served off the mesh",
            node.name
        );
    }
}
