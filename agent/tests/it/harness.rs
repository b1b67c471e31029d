//! Starting agents against a devnet stack, and waiting on them without wall-clock assertions
//! (deadlines only bound a hung test).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use attestmesh_agent::config::{AgentArgs, AgentConfig};
use attestmesh_agent::shutdown::Shutdown;
use attestmesh_devnet::stack::{Stack, StackConfig};
use attestmesh_proto::agent::v1 as pb;
use attestmesh_proto::agent::v1::agent_client::AgentClient;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use url::Url;

/// Long enough for any honest wait on this machine; a test that needs more is hung.
pub const DEADLINE: Duration = Duration::from_secs(180);

/// nextest kills a test 300 s after it started (.config/nextest.toml), and a killed test reports
/// nothing. Every wait ends by this much of the test's life, so a hang fails with its diagnostics
/// even after several waits in a row.
const REPORT_BY: Duration = Duration::from_secs(285);

/// How long a wait starting now may last: [`DEADLINE`], cut to what is left before
/// [`REPORT_BY`].
pub fn budget() -> Duration {
    within(DEADLINE)
}

/// `max`, cut to what is left of the test's life before [`REPORT_BY`] (at least 1 s, so the wait
/// still checks once and fails with what it saw).
pub fn within(max: Duration) -> Duration {
    max.min(REPORT_BY.saturating_sub(test_age()))
        .max(Duration::from_secs(1))
}

/// How long this test has run: nextest runs each test in a process of its own, so the process's
/// age (/proc/self/stat's start time against /proc/uptime).
fn test_age() -> Duration {
    /// Clock ticks per second of /proc's times (USER_HZ, 100 on Linux).
    const TICKS_PER_SECOND: f64 = 100.0;
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let after_name = &stat[stat
        .rfind(')')
        .expect("stat has the command in parentheses")
        + 2..];
    let start_ticks: f64 = after_name
        .split_whitespace()
        .nth(19)
        .and_then(|field| field.parse().ok())
        .expect("stat's field 22 is the start time");
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .expect("/proc/uptime")
        .split_whitespace()
        .next()
        .and_then(|field| field.parse().ok())
        .expect("uptime in seconds");
    Duration::from_secs_f64((uptime - start_ticks / TICKS_PER_SECOND).max(0.0))
}

/// Logs to the test's captured output (shown when a test fails), debug for the project.
pub fn init_logs() {
    attestmesh_devnet::test_logs::init("info,attestmesh=debug");
}

pub async fn stack(dir: &Path) -> Stack {
    init_logs();
    Stack::start(StackConfig::new(dir.join("devnet")).with_instant_mining())
        .await
        .expect("devnet starts")
}

/// A running in-process agent.
pub struct RunningAgent {
    pub name: String,
    pub socket: PathBuf,
    pub health: SocketAddr,
    pub shutdown: Shutdown,
    pub task: JoinHandle<eyre::Result<()>>,
}

impl RunningAgent {
    pub async fn client(&self) -> AgentClient<Channel> {
        let deadline = tokio::time::Instant::now() + budget();
        loop {
            if let Ok(client) = attestmesh_agent::status::connect(&self.socket).await {
                return client;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: API socket never came up",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
    }
}

pub fn agent_config(
    stack: &Stack,
    node: usize,
    dir: &Path,
    chain_rpc: Option<&Url>,
) -> AgentConfig {
    let n = &stack.nodes[node];
    AgentArgs {
        dstack_socket: Some(n.dstack_socket.clone()),
        chain_rpc_url: vec![chain_rpc.unwrap_or(stack.chain.rpc_url()).to_string()],
        chain_id: Some(stack.config.chain.chain_id),
        bundler_url: Some(stack.bundler_url().clone()),
        gas_manager_url: Some(stack.gas_manager.url().clone()),
        policy_id: Some(stack.config.policy_id.clone()),
        // Port 0: the agent binds a port of its own and reports it (see `start_agent`).
        health_listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
        api_socket: Some(dir.join(format!("{}.agent.sock", n.name))),
        poll_interval_secs: Some(1),
        // In-process agents share one network namespace and need no root: no mesh here
        // (the mesh tests run agents in namespaces).
        mesh_disabled: true,
        ..Default::default()
    }
    .resolve()
    .unwrap()
}

/// Starts an in-process agent and waits until its health endpoint listens.
pub async fn start_agent(name: &str, config: AgentConfig) -> RunningAgent {
    let shutdown = Shutdown::new();
    let socket = config.api_socket.clone();
    let (listening, health) = tokio::sync::oneshot::channel();
    let mut task = tokio::spawn(attestmesh_agent::boot::run_reporting(
        config,
        shutdown.clone(),
        move |health| {
            let _ = listening.send(health);
        },
    ));
    let health = tokio::select! {
        health = health => health.expect("the agent reports its health address"),
        ended = &mut task => panic!("{name}: the agent stopped before its health endpoint listened: {ended:?}"),
    };
    RunningAgent {
        name: name.to_string(),
        socket,
        health,
        shutdown,
        task,
    }
}

/// Polls GetMeshStatus until `done` holds.
pub async fn wait_status(
    agent: &RunningAgent,
    what: &str,
    done: impl Fn(&pb::MeshStatus) -> bool,
) -> pb::MeshStatus {
    let mut client = agent.client().await;
    let deadline = tokio::time::Instant::now() + budget();
    loop {
        // Every outcome, an error included, is checked against the deadline: a wait that
        // only checked it on success once hung a test until nextest killed it.
        let call = client.get_mesh_status(pb::GetMeshStatusRequest {});
        let last = match tokio::time::timeout(Duration::from_secs(10), call).await {
            Err(_) => "GetMeshStatus did not answer within 10 s".to_string(),
            Ok(Ok(status)) => {
                let status = status.into_inner();
                if done(&status) {
                    return status;
                }
                format!("{status:?}")
            }
            Ok(Err(error)) => format!("GetMeshStatus failed: {error}"),
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}: never reached {what}; last: {last}",
            agent.name
        );
        assert!(
            !agent.task.is_finished(),
            "{}: the agent stopped",
            agent.name
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub async fn member_id(agent: &RunningAgent) -> u64 {
    agent
        .client()
        .await
        .get_self(pb::GetSelfRequest {})
        .await
        .unwrap()
        .into_inner()
        .member_id
}

/// A devnet with two nodes whose agents have registered and see each other.
pub async fn two_agents(
    dir: &Path,
    stack_config: StackConfig,
) -> (Stack, RunningAgent, RunningAgent) {
    let mut stack = Stack::start(stack_config).await.expect("devnet starts");
    stack.add_node("node-1").await.unwrap();
    stack.add_node("node-2").await.unwrap();
    let a = start_agent("node-1", agent_config(&stack, 0, dir, None)).await;
    let b = start_agent("node-2", agent_config(&stack, 1, dir, None)).await;
    wait_status(&a, "a peer on chain", |s| s.phase == "wg-configuring").await;
    wait_status(&b, "a peer on chain", |s| s.phase == "wg-configuring").await;
    (stack, a, b)
}

/// Sends `payload` from `from` to member `to` through the gRPC API.
pub async fn send(from: &RunningAgent, to: u64, payload: &[u8]) -> pb::SendMessageResponse {
    let mut client = from.client().await;
    let call = client.send_message(pb::SendMessageRequest {
        recipient_member_id: to,
        payload: payload.to_vec(),
    });
    tokio::time::timeout(budget(), call)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{}: SendMessage did not answer within the wait budget",
                from.name
            )
        })
        .expect("SendMessage succeeds")
        .into_inner()
}

/// The next message on `agent`'s inbox stream from `cursor`.
pub async fn first_message(agent: &RunningAgent, cursor: &str) -> pb::InboundMessage {
    use tokio_stream::StreamExt;
    let mut stream = agent
        .client()
        .await
        .subscribe_messages(pb::SubscribeMessagesRequest {
            cursor: cursor.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    tokio::time::timeout(budget(), stream.next())
        .await
        .expect("a message arrives")
        .unwrap()
        .unwrap()
}

/// The wait budget reads this test's age from /proc: a new test has nearly all of it, and a
/// wait never runs past what is left before nextest's kill.
#[test]
fn a_new_test_has_nearly_its_whole_wait_budget() {
    let age = test_age();
    assert!(age < Duration::from_secs(60), "a new test is {age:?} old");
    assert_eq!(budget(), DEADLINE);
    assert!(within(Duration::from_secs(10_000)) <= REPORT_BY);
}

/// The failed chain-log polls `agent` has counted, read from its `/metrics` (a family the agent
/// does not export is a failure, not 0).
pub async fn poll_errors(agent: &RunningAgent) -> f64 {
    let metrics = reqwest::get(format!("http://{}/metrics", agent.health))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    attestmesh_testbed::cluster::family_series(&metrics, "attestmesh_agent_chain_poll_errors_total")
        .unwrap()
        .unwrap_or_else(|| panic!("the agent exports its poll errors: {metrics}"))
        .values()
        .sum()
}
