//! The sponsorship path's services down while a node registers: the bundler, the gas manager,
//! the paymaster webhook behind it, each down for 30 s for real (its port closed), and a bundler
//! that accepted the operation and then stops answering. The agent says what it waits for,
//! retries, registers once the service is back, and the cluster holds exactly one member for it.

use std::collections::BTreeSet;
use std::time::Duration;

use attestmesh_devnet::fault_proxy::{FaultMode, FaultProxy};
use attestmesh_devnet::stack::{Stack, StackConfig};
use tokio::time::Instant;

use crate::harness::*;

/// As long as the issue asks a service to stay down.
const DOWN_FOR: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Bundler,
    GasManager,
    Webhook,
}

/// A devnet whose bundler, gas manager and webhook each sit behind a fault proxy, one node
/// prepared, and its agent's configuration pointing at the proxies.
struct FaultyDevnet {
    stack: Stack,
    bundler: FaultProxy,
    gas_manager: FaultProxy,
}

impl FaultyDevnet {
    async fn start(dir: &std::path::Path) -> Self {
        init_logs();
        let mut config = StackConfig::new(dir.join("devnet")).with_instant_mining();
        config.webhook_fault_proxy = true;
        let mut stack = Stack::start(config).await.expect("devnet starts");
        stack.add_node("node-1").await.unwrap();
        let bundler = FaultProxy::start(stack.bundler_url().clone())
            .await
            .unwrap();
        let gas_manager = FaultProxy::start(stack.gas_manager.url().clone())
            .await
            .unwrap();
        Self {
            stack,
            bundler,
            gas_manager,
        }
    }

    async fn agent(&self, dir: &std::path::Path) -> RunningAgent {
        let mut config = agent_config(&self.stack, 0, dir, None);
        config.bundler_url = self.bundler.url().clone();
        config.gas_manager_url = self.gas_manager.url().clone();
        start_agent("node-1", config).await
    }

    fn proxy(&mut self, service: Service) -> &mut FaultProxy {
        match service {
            Service::Bundler => &mut self.bundler,
            Service::GasManager => &mut self.gas_manager,
            Service::Webhook => self
                .stack
                .webhook_proxy
                .as_mut()
                .expect("the stack was started with a webhook proxy"),
        }
    }

    /// The node appears once among the members, and exactly one operation ran on its
    /// registration nonce key: re-registering the same identity is a no-op on chain, so the
    /// member count alone would stay 1 even if the agent had sent `register` twice; the
    /// EntryPoint's nonce counts the operations that actually executed.
    async fn assert_registered_once(&self) {
        let account = self.stack.nodes[0].account;
        let operator = self.stack.chain.operator_client();
        let member = operator
            .member_of(self.stack.cluster, account)
            .await
            .unwrap()
            .expect("registered");
        let members = operator.active_members(self.stack.cluster).await.unwrap();
        let ids: BTreeSet<u64> = members.iter().map(|m| m.id).collect();
        assert_eq!(
            ids,
            BTreeSet::from([member.id]),
            "exactly one member, the node's: {members:?}"
        );
        let executed = operator
            .entry_point_nonce(
                attestmesh_bindings::ENTRY_POINT_V07,
                account,
                alloy::primitives::aliases::U192::ZERO,
            )
            .await
            .unwrap();
        assert_eq!(
            executed,
            alloy::primitives::U256::from(1),
            "exactly one operation executed on the registration nonce key"
        );
    }
}

async fn registration_outlasts(service: Service, what_it_says: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut devnet = FaultyDevnet::start(dir.path()).await;
    devnet.proxy(service).go_down().await.unwrap();
    let down_since = Instant::now();
    let agent = devnet.agent(dir.path()).await;

    let waiting = wait_status(&agent, "retrying the registration", |s| {
        s.phase == "registering" && s.waiting_for.contains(what_it_says)
    })
    .await;
    println!("{service:?} down; the agent says: {}", waiting.waiting_for);
    tokio::time::sleep(DOWN_FOR.saturating_sub(down_since.elapsed())).await;
    let status = wait_status(&agent, "still registering", |_| true).await;
    assert_eq!(
        status.phase, "registering",
        "nothing registers while the {service:?} is down"
    );
    assert!(
        devnet
            .stack
            .chain
            .operator_client()
            .member_of(devnet.stack.cluster, devnet.stack.nodes[0].account)
            .await
            .unwrap()
            .is_none()
    );

    devnet.proxy(service).come_back().await.unwrap();
    wait_status(&agent, "registered after the service came back", |s| {
        s.phase == "waiting-peers"
    })
    .await;
    devnet.assert_registered_once().await;
    agent.stop().await;
}

/// The bundler down for 30 s from the node's first attempt: "bundler" in what it waits for.
#[tokio::test(flavor = "multi_thread")]
async fn registration_outlasts_the_bundler_down_for_30_s_and_registers_once() {
    registration_outlasts(Service::Bundler, "bundler").await;
}

/// The gas manager down for 30 s: the node cannot get sponsorship and says so.
#[tokio::test(flavor = "multi_thread")]
async fn registration_outlasts_the_gas_manager_down_for_30_s_and_registers_once() {
    registration_outlasts(Service::GasManager, "gas manager").await;
}

/// The paymaster webhook down for 30 s: the gas manager fails closed (no sponsorship without
/// the policy's answer) and the node reports the refusal while it retries.
#[tokio::test(flavor = "multi_thread")]
async fn registration_outlasts_the_webhook_down_for_30_s_and_registers_once() {
    registration_outlasts(Service::Webhook, "webhook").await;
}

/// The bundler accepts the registration (it is included on chain) and then answers no receipt
/// lookup for 30 s. The agent must not register a second time: it finds its member record on
/// chain and carries on with the one registration.
#[tokio::test(flavor = "multi_thread")]
async fn an_accepted_registration_whose_receipt_never_comes_leaves_exactly_one_member() {
    let dir = tempfile::tempdir().unwrap();
    let devnet = FaultyDevnet::start(dir.path()).await;
    devnet
        .bundler
        .set_mode(FaultMode::FailMethods(BTreeSet::from([
            "eth_getUserOperationReceipt".to_string(),
            "eth_getUserOperationByHash".to_string(),
        ])));
    let started = Instant::now();
    let agent = devnet.agent(dir.path()).await;
    let operator = devnet.stack.chain.operator_client().clone();
    let deadline = Instant::now() + budget();
    while operator
        .member_of(devnet.stack.cluster, devnet.stack.nodes[0].account)
        .await
        .unwrap()
        .is_none()
    {
        assert!(Instant::now() < deadline, "the registration never landed");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(DOWN_FOR.saturating_sub(started.elapsed())).await;
    assert!(
        devnet.bundler.faults_injected() > 0,
        "the agent asked for its receipt"
    );
    devnet.bundler.set_mode(FaultMode::Pass);
    wait_status(&agent, "past registration", |s| s.phase == "waiting-peers").await;
    devnet.assert_registered_once().await;
    agent.stop().await;
}
