//! The operator CLI drives a cluster on the devnet end to end: create it, allowlist the compose
//! hash and KMS root, predict and create member accounts, two real agents (in-process, mesh
//! disabled) join it, one is revoked, and the other sees it revoked.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use alloy::primitives::{Address, B256};
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
        if let Some(cluster) = self
            .cluster
            .as_ref()
            .filter(|_| command != "register-indexer")
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

#[tokio::test(flavor = "multi_thread")]
async fn operator_cli_drives_a_cluster_end_to_end() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(StackConfig::new(dir.path().join("devnet")).with_instant_mining())
        .await
        .expect("devnet starts");
    let key = key_file(dir.path(), stack.chain.operator());
    let factory = stack.chain.deployment().cluster_factory.to_string();
    let registry = stack.chain.deployment().indexer_registry.to_string();
    let kms_root = stack.kms_root.to_string();
    let mut cli = Cli {
        rpc: stack.chain.rpc_url().to_string(),
        key: key.to_str().unwrap().to_string(),
        cluster: None,
    };

    // Create the cluster (the devnet's KMS root), then again: a no-op.
    let create = [
        "--factory",
        factory.as_str(),
        "--salt",
        "operator-e2e",
        "--mesh-cidr",
        "10.99.0.0/16",
        "--kms-root",
        kms_root.as_str(),
    ];
    let created = cli.run("create-cluster", &create).await.json();
    assert_eq!(created["created"], true, "{created}");
    assert_eq!(
        created["allow_any_device"], false,
        "any device is an explicit opt-in (--allow-any-device)"
    );
    let cluster_text = created["cluster"].as_str().unwrap().to_string();
    let cluster: Address = cluster_text.parse().unwrap();
    assert_eq!(
        cli.run("create-cluster", &create).await.json()["created"],
        false
    );
    cli.cluster = Some(cluster_text.clone());

    // Allowlists: the compose hash the simulators report; a second KMS root added and removed.
    let compose_hash = devnet_compose_hash().to_string();
    let allowed = cli
        .run("allow", &["compose-hash", &compose_hash])
        .await
        .json();
    assert_eq!(
        (allowed["allowed"].as_bool(), allowed["changed"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(
        cli.run("allow", &["compose-hash", &compose_hash])
            .await
            .json()["changed"],
        false
    );
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
    cli.run("allow", &["kms-root", &kms_root, "--remove"])
        .await
        .fails_with(&[
            "the cluster's only KMS root",
            "allow the new KMS root first",
        ]);
    cli.run("allow", &["app-id", "not-an-address"])
        .await
        .fails_with(&["is not an address"]);
    assert_eq!(
        cli.run("allow-any-device", &["true"]).await.json()["changed"],
        true
    );
    assert_eq!(
        cli.run("allow-any-device", &["true"]).await.json()["changed"],
        false
    );

    // Predict both accounts (= dstack app ids) before the nodes exist, allowlist, deploy.
    let mut accounts = Vec::new();
    for name in ["node-a", "node-b"] {
        let predicted = cli
            .run("predict-account", &["--node-name", name])
            .await
            .json();
        assert_eq!(predicted["deployed"], false);
        assert_eq!(predicted["app_id_allowed"], false);
        let account_text = predicted["account"].as_str().unwrap().to_string();
        let account: Address = account_text.parse().unwrap();
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
        accounts.push(account);
    }

    // Admission: the boot gate's TCB advisory grace list and a per-account instance pin, set
    // by the CLI and read by the gate (isAppAllowed, dstack's IAppAuth).
    let gate = |instance: Address, tcb: &str, advisories: &[&str]| {
        let info = attestmesh_bindings::cluster::IAppAuth::AppBootInfo {
            appId: accounts[0],
            composeHash: devnet_compose_hash(),
            instanceId: instance,
            deviceId: B256::repeat_byte(0xde),
            mrAggregated: B256::ZERO,
            mrSystem: B256::ZERO,
            osImageHash: B256::ZERO,
            tcbStatus: tcb.to_string(),
            advisoryIds: advisories.iter().map(|a| a.to_string()).collect(),
        };
        let cluster = stack.chain.operator_client().cluster(cluster);
        async move {
            let answer = cluster.isAppAllowed(info).call().await.unwrap();
            (answer.isAllowed, answer.reason)
        }
    };
    let advisory = "INTEL-SA-00837";
    let pinned = Address::repeat_byte(0x1e);
    let other = Address::repeat_byte(0x2e);
    let (allowed, reason) = gate(pinned, "UpToDate", &[advisory]).await;
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
        gate(pinned, "UpToDate", &[advisory]).await,
        (true, String::new())
    );
    let (allowed, reason) = gate(pinned, "OutOfDate", &[]).await;
    assert!(
        !allowed && reason.contains("TCB status OutOfDate is not UpToDate"),
        "{reason}"
    );

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
    let (allowed, reason) = gate(other, "UpToDate", &[]).await;
    assert!(
        !allowed && reason.contains("instance not pinned"),
        "{reason}"
    );
    assert_eq!(gate(pinned, "UpToDate", &[]).await, (true, String::new()));
    let shown = cli.run("show", &[]).await.json();
    assert_eq!(
        shown["allowlists"]["required_tcb_status"], "UpToDate",
        "{shown}"
    );
    assert_eq!(
        shown["allowlists"]["advisories"],
        serde_json::json!([advisory])
    );
    assert_eq!(
        shown["allowlists"]["pinned_instances"][0]["instance_id"]
            .as_str()
            .unwrap()
            .parse::<Address>()
            .unwrap(),
        pinned
    );

    // Undone: the advisory off the list, the pin lifted.
    assert_eq!(
        cli.run("allow-advisory", &[advisory, "--remove"])
            .await
            .json()["changed"],
        true
    );
    assert_eq!(
        cli.run("pin-instance", &[&account_a, "--unpin"])
            .await
            .json()["changed"],
        true
    );
    assert_eq!(gate(other, "UpToDate", &[]).await, (true, String::new()));
    let (allowed, _) = gate(other, "UpToDate", &[advisory]).await;
    assert!(!allowed);

    // Two real agents join through sponsored registration.
    let (_webhook, gas_manager) = sponsorship(&stack, cluster).await;
    let a = Node::start(&stack, &gas_manager, dir.path(), "node-a", accounts[0]).await;
    let b = Node::start(&stack, &gas_manager, dir.path(), "node-b", accounts[1]).await;
    a.wait_phase("wg-configuring").await;
    b.wait_phase("wg-configuring").await;
    let b_id = b.member_id().await;

    let shown = cli.run("show", &[]).await.json();
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
        accounts[1]
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

    // A message from a to b shows up in the summary: its count and block, never its contents.
    let sent = a
        .client()
        .await
        .send_message(pb::SendMessageRequest {
            recipient_member_id: b_id,
            payload: b"operator must not see this".to_vec(),
        })
        .await
        .expect("SendMessage succeeds")
        .into_inner();
    let shown = cli.run("show", &[]).await.json();
    assert_eq!(shown["messages"]["count"], 1, "{shown}");
    assert_eq!(
        shown["messages"]["last_block"].as_u64(),
        Some(sent.block_number)
    );
    assert!(
        !shown.to_string().contains("ciphertext"),
        "show never prints message contents"
    );

    // Revoke b: a sees it revoked; show lists it revoked; a second revoke changes nothing.
    let revoked = cli
        .run("revoke", &["--member-id", &b_id.to_string()])
        .await
        .json();
    assert_eq!(revoked["changed"], true);
    let mut client = a.client().await;
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

    // The revocation opened CSK epoch 1; the owner sets the grace period and rotates again.
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

    let human = operator(&text_args(&cli)).await;
    assert!(
        human.success && human.stdout.contains("revoked") && human.stdout.contains("CSK epoch 2"),
        "{}",
        human.stdout
    );

    // A signer that is not the owner is refused before sending.
    let stranger_dir = tempfile::tempdir().unwrap();
    let stranger = key_file(stranger_dir.path(), &stack.chain.dev_key(5).unwrap());
    let stranger_cli = Cli {
        rpc: cli.rpc.clone(),
        key: stranger.to_str().unwrap().to_string(),
        cluster: cli.cluster.clone(),
    };
    stranger_cli
        .run(
            "allow",
            &["compose-hash", &B256::repeat_byte(1).to_string()],
        )
        .await
        .fails_with(&["is not the owner", "sign with the owner's key"]);

    // The indexer registry: register, then again (no-op).
    let key_hex = B256::repeat_byte(0x3b).to_string();
    let registered = cli
        .run(
            "register-indexer",
            &[
                "--indexer-registry",
                &registry,
                "--endpoint",
                "https://indexer.example:443",
                "--ed25519-key",
                &key_hex,
            ],
        )
        .await
        .json();
    assert_eq!(registered["changed"], true);
    let again = cli
        .run(
            "register-indexer",
            &[
                "--indexer-registry",
                &registry,
                "--endpoint",
                "https://indexer.example:443",
                "--ed25519-key",
                &key_hex,
            ],
        )
        .await
        .json();
    assert_eq!(
        (again["changed"].as_bool(), again["indexer_id"].as_u64()),
        (Some(false), registered["indexer_id"].as_u64())
    );

    a.stop().await;
    b.stop().await;
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
