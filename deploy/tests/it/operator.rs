//! The operator CLI drives a cluster on the devnet: create it, edit its allowlists, predict and
//! create member accounts, admission (TCB advisories, instance pins), two real agents
//! (in-process, mesh disabled) join it, one is revoked and the other sees it revoked, the CSK
//! rotates, the indexer registry. Each test has a devnet of its own.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use alloy::primitives::{Address, B256};
use alloy::providers::Provider;
use attestmesh_agent::config::AgentArgs;
use attestmesh_agent::shutdown::Shutdown;
use attestmesh_devnet::dstack_simulator::{
    DstackSimulator, KeySource, SimulatorConfig, SimulatorHandle,
};
use attestmesh_devnet::gas_manager::{GasManager, GasManagerConfig, GasManagerHandle};
use attestmesh_devnet::stack::{Stack, StackConfig, devnet_compose_hash};
use attestmesh_dstack::EthAddress;
use attestmesh_proto::agent::v1 as pb;
use attestmesh_webhook::{Webhook, WebhookConfig, WebhookHandle, WebhookSecret};

use crate::support::{init_logs, key_file, operator};

const POLICY: &str = "operator-e2e-policy";
const SECRET: &str = "operator-e2e-webhook-secret";
/// Long enough for any honest wait on this machine; a test that needs more is hung.
const DEADLINE: Duration = Duration::from_secs(180);

/// The operator's command line, bound to the devnet's chain and key.
struct Cli {
    rpc: String,
    key: String,
    cluster: Option<String>,
}

impl Cli {
    async fn run(&self, command: &str, extra: &[&str]) -> crate::support::Run {
        let mut args = vec![
            "--json",
            command,
            "--rpc-url",
            &self.rpc,
            "--expected-chain-id",
            "8453",
        ];
        let writes = !matches!(command, "show" | "predict-account");
        if writes {
            args.extend(["--private-key-file", &self.key]);
        }
        // create-cluster and register-indexer address no cluster.
        if let Some(cluster) = self
            .cluster
            .as_ref()
            .filter(|_| !matches!(command, "create-cluster" | "register-indexer"))
        {
            args.extend(["--cluster", cluster.as_str()]);
        }
        args.extend_from_slice(extra);
        operator(&args).await
    }
}

/// The sponsorship path of this cluster: its own webhook policy and a gas manager asking it.
async fn sponsorship(stack: &Stack, cluster: Address) -> (WebhookHandle, GasManagerHandle) {
    let webhook = Webhook::spawn(WebhookConfig {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        ..WebhookConfig::new(
            stack.chain.rpc_url().clone(),
            8453,
            WebhookSecret::new(SECRET).unwrap(),
        )
        .with_policy(POLICY, cluster)
    })
    .await
    .unwrap();
    let gas_manager = GasManager::spawn(GasManagerConfig::new(
        stack.chain.rpc_url().clone(),
        8453,
        stack.bundler_url().clone(),
        stack.chain.deployment().verifying_paymaster,
        stack.chain.sponsor().clone(),
        webhook.url().parse().unwrap(),
        attestmesh_devnet::gas_manager::WebhookSecret::new(SECRET.to_string()),
        vec![POLICY.to_string()],
    ))
    .await
    .unwrap();
    (webhook, gas_manager)
}

struct Node {
    name: String,
    socket: std::path::PathBuf,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<eyre::Result<()>>,
    _dstack: SimulatorHandle,
}

impl Node {
    async fn start(
        stack: &Stack,
        gas_manager: &GasManagerHandle,
        dir: &Path,
        name: &str,
        account: Address,
    ) -> Self {
        let dstack_socket = dir.join(format!("{name}.dstack.sock"));
        let dstack = DstackSimulator::spawn(
            SimulatorConfig::new(
                EthAddress(account.into_array()),
                KeySource::DevnetSeed(stack.config.kms_seed.clone()),
            ),
            &dstack_socket,
        )
        .unwrap();
        let socket = dir.join(format!("{name}.agent.sock"));
        let config = AgentArgs {
            dstack_socket: Some(dstack_socket),
            chain_rpc_url: vec![stack.chain.rpc_url().to_string()],
            chain_id: Some(8453),
            bundler_url: Some(stack.bundler_url().clone()),
            gas_manager_url: Some(gas_manager.url().clone()),
            policy_id: Some(POLICY.to_string()),
            // Port 0: the agent picks its own (this test never reads it).
            health_listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
            api_socket: Some(socket.clone()),
            poll_interval_secs: Some(1),
            // In-process agents share one network namespace and need no root: no mesh here.
            mesh_disabled: true,
            ..Default::default()
        }
        .resolve()
        .unwrap();
        let shutdown = Shutdown::new();
        let task = tokio::spawn(attestmesh_agent::boot::run(config, shutdown.clone()));
        Self {
            name: name.to_string(),
            socket,
            shutdown,
            task,
            _dstack: dstack,
        }
    }

    async fn client(&self) -> pb::agent_client::AgentClient<tonic::transport::Channel> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Ok(client) = attestmesh_agent::status::connect(&self.socket).await {
                return client;
            }
            assert!(!self.task.is_finished(), "{}: the agent stopped", self.name);
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: API socket never came up",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_phase(&self, phase: &str) {
        let mut client = self.client().await;
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Ok(status) = client.get_mesh_status(pb::GetMeshStatusRequest {}).await
                && status.get_ref().phase == phase
            {
                return;
            }
            assert!(!self.task.is_finished(), "{}: the agent stopped", self.name);
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: never reached {phase}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn member_id(&self) -> u64 {
        self.client()
            .await
            .get_self(pb::GetSelfRequest {})
            .await
            .unwrap()
            .into_inner()
            .member_id
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
    }
}

/// A devnet of the test's own (anvil with the contracts, bundler, webhook) and the operator's
/// command line bound to its chain and key.
struct Devnet {
    cli: Cli,
    factory: String,
    kms_root: String,
    // Declared before `dir` so it stops before its state directory is removed.
    stack: Stack,
    dir: tempfile::TempDir,
}

impl Devnet {
    async fn start() -> Self {
        init_logs();
        let dir = tempfile::tempdir().unwrap();
        let stack = Stack::start(StackConfig::new(dir.path().join("devnet")).with_instant_mining())
            .await
            .expect("devnet starts");
        let key = key_file(dir.path(), stack.chain.operator());
        Self {
            cli: Cli {
                rpc: stack.chain.rpc_url().to_string(),
                key: key.to_str().unwrap().to_string(),
                cluster: None,
            },
            factory: stack.chain.deployment().cluster_factory.to_string(),
            kms_root: stack.kms_root.to_string(),
            stack,
            dir,
        }
    }

    /// create-cluster's arguments: the devnet's KMS root, mesh 10.99.0.0/16.
    fn create_args(&self) -> [&str; 8] {
        [
            "--factory",
            self.factory.as_str(),
            "--salt",
            "operator-e2e",
            "--mesh-cidr",
            "10.99.0.0/16",
            "--kms-root",
            self.kms_root.as_str(),
        ]
    }

    /// Runs create-cluster (its report); the commands after it address that cluster.
    async fn create_cluster(&mut self) -> serde_json::Value {
        let created = self
            .cli
            .run("create-cluster", &self.create_args())
            .await
            .json();
        self.cli.cluster = Some(created["cluster"].as_str().unwrap().to_string());
        created
    }

    fn cluster(&self) -> Address {
        self.cli
            .cluster
            .as_deref()
            .expect("the cluster was created")
            .parse()
            .unwrap()
    }

    /// How many transactions `account` has sent (a command that sends nothing leaves it as is).
    async fn nonce(&self, account: Address) -> u64 {
        self.stack
            .chain
            .operator_client()
            .provider()
            .get_transaction_count(account)
            .await
            .unwrap()
    }

    /// The cluster's boot gate as dstack's KMS asks it about `app_id`.
    fn boot_gate(&self, app_id: Address) -> BootGate<'_> {
        BootGate {
            stack: &self.stack,
            cluster: self.cluster(),
            app_id,
        }
    }
}

/// A devnet with the operator's cluster created.
async fn cluster() -> Devnet {
    let mut devnet = Devnet::start().await;
    devnet.create_cluster().await;
    devnet
}

/// Lets `names` boot into the cluster: the compose hash the simulators report, any device, and
/// each node's member account created with its app id allowed. Their accounts, in order.
async fn admit(devnet: &Devnet, names: &[&str]) -> Vec<Address> {
    let cli = &devnet.cli;
    cli.run(
        "allow",
        &["compose-hash", &devnet_compose_hash().to_string()],
    )
    .await
    .json();
    cli.run("allow-any-device", &["true"]).await.json();
    let mut accounts = Vec::new();
    for name in names {
        let created = cli
            .run("create-account", &["--node-name", name])
            .await
            .json();
        let account = created["account"].as_str().unwrap();
        cli.run("allow", &["app-id", account]).await.json();
        accounts.push(account.parse().unwrap());
    }
    accounts
}

/// The cluster's admission check (isAppAllowed, dstack's IAppAuth) for one app id.
struct BootGate<'a> {
    stack: &'a Stack,
    cluster: Address,
    app_id: Address,
}

impl BootGate<'_> {
    /// Whether `instance` booting with this TCB status and these advisories is admitted, and
    /// the reason when it is not.
    async fn admits(&self, instance: Address, tcb: &str, advisories: &[&str]) -> (bool, String) {
        let info = attestmesh_bindings::cluster::IAppAuth::AppBootInfo {
            appId: self.app_id,
            composeHash: devnet_compose_hash(),
            instanceId: instance,
            deviceId: B256::repeat_byte(0xde),
            mrAggregated: B256::ZERO,
            mrSystem: B256::ZERO,
            osImageHash: B256::ZERO,
            tcbStatus: tcb.to_string(),
            advisoryIds: advisories.iter().map(|a| a.to_string()).collect(),
        };
        let answer = self
            .stack
            .chain
            .operator_client()
            .cluster(self.cluster)
            .isAppAllowed(info)
            .call()
            .await
            .unwrap();
        (answer.isAllowed, answer.reason)
    }
}

/// Two real agents, node-a and node-b, joined through sponsored registration.
struct Joined {
    a: Node,
    b: Node,
    b_id: u64,
    accounts: Vec<Address>,
    _sponsorship: (WebhookHandle, GasManagerHandle),
}

/// Admits node-a and node-b, starts both agents and waits until each has registered.
async fn joined(devnet: &Devnet) -> Joined {
    let accounts = admit(devnet, &["node-a", "node-b"]).await;
    let sponsorship = sponsorship(&devnet.stack, devnet.cluster()).await;
    let (stack, gas_manager, dir) = (&devnet.stack, &sponsorship.1, devnet.dir.path());
    let a = Node::start(stack, gas_manager, dir, "node-a", accounts[0]).await;
    let b = Node::start(stack, gas_manager, dir, "node-b", accounts[1]).await;
    a.wait_phase("wg-configuring").await;
    b.wait_phase("wg-configuring").await;
    let b_id = b.member_id().await;
    Joined {
        a,
        b,
        b_id,
        accounts,
        _sponsorship: sponsorship,
    }
}

impl Joined {
    async fn stop(self) {
        self.a.stop().await;
        self.b.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn create_cluster_twice_creates_it_once() {
    let mut devnet = Devnet::start().await;
    let created = devnet.create_cluster().await;
    assert_eq!(created["created"], true, "{created}");
    assert_eq!(
        created["allow_any_device"], false,
        "any device is an explicit opt-in (--allow-any-device)"
    );
    assert_eq!(
        devnet
            .cli
            .run("create-cluster", &devnet.create_args())
            .await
            .json()["created"],
        false
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn allowlist_edits_send_only_what_changes() {
    let devnet = cluster().await;
    let cli = &devnet.cli;
    let owner = devnet.stack.chain.operator().address();

    // The compose hash the simulators report: allowed, then allowed again (nothing sent).
    let compose_hash = devnet_compose_hash().to_string();
    let allowed = cli
        .run("allow", &["compose-hash", &compose_hash])
        .await
        .json();
    assert_eq!(
        (allowed["allowed"].as_bool(), allowed["changed"].as_bool()),
        (Some(true), Some(true))
    );
    let sent = devnet.nonce(owner).await;
    assert_eq!(
        cli.run("allow", &["compose-hash", &compose_hash])
            .await
            .json()["changed"],
        false
    );
    assert_eq!(
        devnet.nonce(owner).await,
        sent,
        "allowing an allowed compose hash sends nothing"
    );

    // A second KMS root added and removed.
    let spare_root = Address::repeat_byte(0x5a).to_string();
    assert_eq!(
        cli.run("allow", &["kms-root", &spare_root]).await.json()["changed"],
        true
    );
    assert_eq!(
        cli.run("allow", &["kms-root", &spare_root, "--remove"])
            .await
            .json()["changed"],
        true
    );

    // Any device: allowed, then allowed again (nothing sent).
    assert_eq!(
        cli.run("allow-any-device", &["true"]).await.json()["changed"],
        true
    );
    let sent = devnet.nonce(owner).await;
    assert_eq!(
        cli.run("allow-any-device", &["true"]).await.json()["changed"],
        false
    );
    assert_eq!(
        devnet.nonce(owner).await,
        sent,
        "allowing any device again sends nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_the_only_kms_root_or_allowing_a_malformed_app_id_is_refused() {
    let devnet = cluster().await;
    devnet
        .cli
        .run("allow", &["kms-root", &devnet.kms_root, "--remove"])
        .await
        .fails_with(&[
            "the cluster's only KMS root",
            "allow the new KMS root first",
        ]);
    devnet
        .cli
        .run("allow", &["app-id", "not-an-address"])
        .await
        .fails_with(&["is not an address"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_are_predicted_before_the_nodes_exist_and_created_once() {
    let devnet = cluster().await;
    let cli = &devnet.cli;
    // Predict both accounts (= dstack app ids) before the nodes exist, deploy, allowlist.
    for name in ["node-a", "node-b"] {
        let predicted = cli
            .run("predict-account", &["--node-name", name])
            .await
            .json();
        assert_eq!(predicted["deployed"], false);
        assert_eq!(predicted["app_id_allowed"], false);
        let account_text = predicted["account"].as_str().unwrap().to_string();
        let created = cli
            .run("create-account", &["--node-name", name])
            .await
            .json();
        assert_eq!(
            (created["account"].as_str(), created["created"].as_bool()),
            (Some(account_text.as_str()), Some(true))
        );
        assert_eq!(
            created["app_id_allowed"], false,
            "create-account says the app id is not allowed yet"
        );
        assert_eq!(
            cli.run("allow", &["app-id", &account_text]).await.json()["changed"],
            true
        );
        let again = cli
            .run("create-account", &["--node-name", name])
            .await
            .json();
        assert_eq!(
            (
                again["created"].as_bool(),
                again["app_id_allowed"].as_bool()
            ),
            (Some(false), Some(true))
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_advisory_on_the_grace_list_passes_the_boot_gate_until_removed() {
    let devnet = cluster().await;
    let accounts = admit(&devnet, &["node-a"]).await;
    let gate = devnet.boot_gate(accounts[0]);
    let cli = &devnet.cli;
    let advisory = "INTEL-SA-00837";
    let instance = Address::repeat_byte(0x1e);

    let (allowed, reason) = gate.admits(instance, "UpToDate", &[advisory]).await;
    assert!(
        !allowed && reason.contains("advisory INTEL-SA-00837 is not on the grace list"),
        "{reason}"
    );
    let added = cli.run("allow-advisory", &[advisory]).await.json();
    assert_eq!(
        (added["allowed"].as_bool(), added["changed"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(
        cli.run("allow-advisory", &[advisory]).await.json()["changed"],
        false
    );
    cli.run("allow-advisory", &[" "])
        .await
        .fails_with(&["invalid advisory id", "empty"]);
    assert_eq!(
        gate.admits(instance, "UpToDate", &[advisory]).await,
        (true, String::new())
    );
    // The grace list excuses advisories, never a TCB status below the required one.
    let (allowed, reason) = gate.admits(instance, "OutOfDate", &[]).await;
    assert!(
        !allowed && reason.contains("TCB status OutOfDate is not UpToDate"),
        "{reason}"
    );
    let shown = cli.run("show", &[]).await.json();
    assert_eq!(
        shown["allowlists"]["required_tcb_status"], "UpToDate",
        "{shown}"
    );
    assert_eq!(
        shown["allowlists"]["advisories"],
        serde_json::json!([advisory])
    );

    // Undone: the advisory off the list, and the gate refuses it again.
    assert_eq!(
        cli.run("allow-advisory", &[advisory, "--remove"])
            .await
            .json()["changed"],
        true
    );
    let (allowed, _) = gate.admits(instance, "UpToDate", &[advisory]).await;
    assert!(!allowed);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_pin_admits_only_the_pinned_instance_until_unpinned() {
    let devnet = cluster().await;
    let accounts = admit(&devnet, &["node-a"]).await;
    let gate = devnet.boot_gate(accounts[0]);
    let cli = &devnet.cli;
    let pinned = Address::repeat_byte(0x1e);
    let other = Address::repeat_byte(0x2e);

    let account_a = accounts[0].to_string();
    let pin = cli
        .run("pin-instance", &[&account_a, &pinned.to_string()])
        .await
        .json();
    assert_eq!(
        (pin["changed"].as_bool(), pin["app_id_allowed"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(
        cli.run("pin-instance", &[&account_a, &pinned.to_string()])
            .await
            .json()["changed"],
        false
    );
    cli.run("pin-instance", &[&account_a])
        .await
        .fails_with(&["required arguments were not provided", "<INSTANCE_ID>"]);
    let (allowed, reason) = gate.admits(other, "UpToDate", &[]).await;
    assert!(
        !allowed && reason.contains("instance not pinned"),
        "{reason}"
    );
    assert_eq!(
        gate.admits(pinned, "UpToDate", &[]).await,
        (true, String::new())
    );
    let shown = cli.run("show", &[]).await.json();
    assert_eq!(
        shown["allowlists"]["pinned_instances"][0]["instance_id"]
            .as_str()
            .unwrap()
            .parse::<Address>()
            .unwrap(),
        pinned
    );

    // Undone: the pin lifted, any instance boots again.
    assert_eq!(
        cli.run("pin-instance", &[&account_a, "--unpin"])
            .await
            .json()["changed"],
        true
    );
    assert_eq!(
        gate.admits(other, "UpToDate", &[]).await,
        (true, String::new())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_joined_by_sponsored_registration_are_shown_active_with_their_mesh_ips() {
    let devnet = cluster().await;
    let nodes = joined(&devnet).await;
    let b_id = nodes.b_id;

    let shown = devnet.cli.run("show", &[]).await.json();
    assert_eq!(shown["member_count"], 2, "{shown}");
    assert_eq!(shown["active_member_count"], 2);
    assert_eq!(shown["mesh"]["cidr"], "10.99.0.0/16");
    let members = shown["members"].as_array().unwrap();
    assert!(members.iter().all(|m| m["status"] == "active"));
    let b_record = members.iter().find(|m| m["id"] == b_id).unwrap();
    assert_eq!(
        b_record["account"]
            .as_str()
            .unwrap()
            .parse::<Address>()
            .unwrap(),
        nodes.accounts[1]
    );
    assert_eq!(b_record["mesh_ip"], format!("10.99.0.{b_id}"));
    assert_eq!(
        shown["allowlists"]["compose_hashes"][0]
            .as_str()
            .unwrap()
            .parse::<B256>()
            .unwrap(),
        devnet_compose_hash()
    );
    assert_eq!(shown["messages"]["count"], 0);

    nodes.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_shows_in_the_summary_by_count_and_block_never_by_contents() {
    let devnet = cluster().await;
    let nodes = joined(&devnet).await;

    // A message from a to b.
    let sent = nodes
        .a
        .client()
        .await
        .send_message(pb::SendMessageRequest {
            recipient_member_id: nodes.b_id,
            payload: b"operator must not see this".to_vec(),
        })
        .await
        .expect("SendMessage succeeds")
        .into_inner();
    let shown = devnet.cli.run("show", &[]).await.json();
    assert_eq!(shown["messages"]["count"], 1, "{shown}");
    assert_eq!(
        shown["messages"]["last_block"].as_u64(),
        Some(sent.block_number)
    );
    assert!(
        !shown.to_string().contains("ciphertext"),
        "show never prints message contents"
    );

    nodes.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_member_is_seen_revoked_by_its_peer_and_show_and_revoked_once() {
    let devnet = cluster().await;
    let nodes = joined(&devnet).await;
    let cli = &devnet.cli;
    let b_id = nodes.b_id;

    // Revoke b: a sees it revoked; show lists it revoked; a second revoke changes nothing.
    let revoked = cli
        .run("revoke", &["--member-id", &b_id.to_string()])
        .await
        .json();
    assert_eq!(revoked["changed"], true);
    let mut client = nodes.a.client().await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let peers = client
            .list_peers(pb::ListPeersRequest {
                include_revoked: true,
            })
            .await
            .unwrap()
            .into_inner()
            .peers;
        if peers
            .iter()
            .any(|p| p.member_id == b_id && p.status == "revoked")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node-a never saw member {b_id} revoked: {peers:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let shown = cli.run("show", &[]).await.json();
    let b_record = shown["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == b_id)
        .unwrap()
        .clone();
    assert_eq!(b_record["status"], "revoked", "{shown}");
    assert_eq!(shown["active_member_count"], 1);
    assert_eq!(
        cli.run("revoke", &["--member-id", &b_id.to_string()])
            .await
            .json()["changed"],
        false
    );
    cli.run("revoke", &["--member-id", "99"])
        .await
        .fails_with(&["there is no member 99"]);

    nodes.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revocation_opens_a_csk_epoch_and_the_owner_sets_its_grace_and_rotates_it() {
    let devnet = cluster().await;
    let nodes = joined(&devnet).await;
    let cli = &devnet.cli;
    let b_id = nodes.b_id;
    cli.run("revoke", &["--member-id", &b_id.to_string()])
        .await
        .json();

    // The revocation opened CSK epoch 1; the owner sets the grace period and rotates again.
    let shown = cli.run("show", &[]).await.json();
    assert_eq!(shown["csk"]["epoch"], 1, "{shown}");
    assert_eq!(shown["csk"]["revoked_member"], b_id, "{shown}");
    let grace = cli.run("set-csk-grace", &["--seconds", "600"]).await.json();
    assert_eq!(grace["csk"]["grace_seconds"], 600, "{grace}");
    cli.run("set-csk-grace", &["--seconds", "2592001"])
        .await
        .fails_with(&["longer than the contract's maximum of 30 days"]);
    let rotated = cli.run("rotate-csk", &[]).await.json();
    assert_eq!(rotated["csk"]["epoch"], 2, "{rotated}");
    assert_eq!(rotated["csk"]["revoked_member"], 0, "{rotated}");

    let human = operator(&text_args(cli)).await;
    assert!(
        human.success && human.stdout.contains("revoked") && human.stdout.contains("CSK epoch 2"),
        "{}",
        human.stdout
    );

    nodes.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signer_that_is_not_the_owner_is_refused_before_sending() {
    let devnet = cluster().await;
    let stranger_dir = tempfile::tempdir().unwrap();
    let stranger_key = devnet.stack.chain.dev_key(5).unwrap();
    let stranger = key_file(stranger_dir.path(), &stranger_key);
    let stranger_cli = Cli {
        rpc: devnet.cli.rpc.clone(),
        key: stranger.to_str().unwrap().to_string(),
        cluster: devnet.cli.cluster.clone(),
    };
    let sent = devnet.nonce(stranger_key.address()).await;
    stranger_cli
        .run(
            "allow",
            &["compose-hash", &B256::repeat_byte(1).to_string()],
        )
        .await
        .fails_with(&["is not the owner", "sign with the owner's key"]);
    assert_eq!(
        devnet.nonce(stranger_key.address()).await,
        sent,
        "the refused signer sent nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn registering_an_indexer_twice_registers_it_once() {
    let devnet = Devnet::start().await;
    let registry = devnet.stack.chain.deployment().indexer_registry.to_string();
    let key_hex = B256::repeat_byte(0x3b).to_string();
    let register = [
        "--indexer-registry",
        registry.as_str(),
        "--endpoint",
        "https://indexer.example:443",
        "--ed25519-key",
        key_hex.as_str(),
    ];
    let registered = devnet.cli.run("register-indexer", &register).await.json();
    assert_eq!(registered["changed"], true);
    let again = devnet.cli.run("register-indexer", &register).await.json();
    assert_eq!(
        (again["changed"].as_bool(), again["indexer_id"].as_u64()),
        (Some(false), registered["indexer_id"].as_u64())
    );
}

fn text_args(cli: &Cli) -> Vec<&str> {
    vec![
        "show",
        "--rpc-url",
        cli.rpc.as_str(),
        "--expected-chain-id",
        "8453",
        "--cluster",
        cli.cluster.as_deref().unwrap(),
    ]
}
