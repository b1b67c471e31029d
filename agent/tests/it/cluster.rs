//! Whole-cluster tests: every node a real `cluster-mesh-agent` process in its own network
//! namespace with its own `attestmesh0`, the devnet services in the root namespace, peers reached
//! through the gateway emulator. Needs root and /dev/net/tun; without them these tests fail and
//! say which prerequisite is missing.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use alloy::primitives::keccak256;
use attestmesh_devnet::stack::StackConfig;
use attestmesh_proto::agent::v1 as pb;
use attestmesh_testbed::cluster::{Cluster, ClusterNode};

use crate::harness::{budget, init_logs, within};

const AGENT: &str = env!("CARGO_BIN_EXE_cluster-mesh-agent");

/// The devnet (instant mining: these tests are about the mesh, not the block time) and `count`
/// agents, each in its own namespace.
pub async fn start(dir: &Path, count: usize) -> Cluster {
    let mut cluster = prepare(dir, count).await;
    for i in 0..count {
        cluster.start_agent(i).expect("the agent starts");
    }
    cluster
}

/// The devnet (instant mining) and `count` nodes, agents not started yet.
pub async fn prepare(dir: &Path, count: usize) -> Cluster {
    prepare_with(
        StackConfig::new(dir.join("devnet")).with_instant_mining(),
        dir,
        count,
    )
    .await
}

/// The devnet as `config` says and `count` nodes, agents not started yet.
pub async fn prepare_with(config: StackConfig, dir: &Path, count: usize) -> Cluster {
    init_logs();
    Cluster::prepare_with(config, dir, count, Path::new(AGENT))
        .await
        .expect("the cluster is prepared")
}

/// How long a whole cluster may take to become healthy: inside nextest's 300 s kill
/// (`.config/nextest.toml`), so a cluster that never makes it fails with its diagnostics instead
/// of being killed without them.
const HEALTHY_WITHIN: Duration = Duration::from_secs(270);

/// Waits until every node is healthy; phase changes go to the test's output.
pub async fn healthy(cluster: &mut Cluster) -> Duration {
    cluster
        .wait_all_healthy(within(HEALTHY_WITHIN), |view| {
            eprintln!("{}: {} {:?}", view.name, view.phase(), view.status)
        })
        .await
        .expect("every node becomes healthy")
}

/// Three nodes come up on the devnet, each in its own namespace with its own attestmesh0,
/// converge and hold the same CSK (matching the on-chain commitment); an app's TCP connection
/// between two nodes' mesh IPs carries data over attestmesh0.
#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_converge_share_the_csk_and_carry_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(dir.path(), 3).await;
    healthy(&mut cluster).await;

    assert_converged_on_the_committed_csk(&cluster).await;

    // An app connection between mesh IPs: node-2 listens, node-1 connects, data both ways.
    carry_tcp(&cluster, 0, 1, 7000).await;
}

/// An app's TCP connection from node `from` to a listener on node `to`'s mesh IP and `port`
/// carries data both ways over attestmesh0.
pub async fn carry_tcp(cluster: &Cluster, from: usize, to: usize, port: u16) {
    let target = format!(
        "{}:{port}",
        cluster.nodes[to].get_self().await.unwrap().mesh_ip
    );
    let listen_at = target.clone();
    let echo = cluster.nodes[to].netns.run(move || async move {
        let listener = tokio::net::TcpListener::bind(&listen_at).await.unwrap();
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buffer = [0u8; 5];
        tokio::io::AsyncReadExt::read_exact(&mut stream, &mut buffer)
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stream, &buffer)
            .await
            .unwrap();
    });
    let reply = cluster.nodes[from].netns.run(move || async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut stream = loop {
            match tokio::net::TcpStream::connect(&target).await {
                Ok(stream) => break stream,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("cannot reach {target} over attestmesh0: {e}"),
            }
        };
        tokio::io::AsyncWriteExt::write_all(&mut stream, b"mesh!")
            .await
            .unwrap();
        let mut buffer = [0u8; 5];
        tokio::io::AsyncReadExt::read_exact(&mut stream, &mut buffer)
            .await
            .unwrap();
        buffer
    });
    let reply = reply.join().await.expect("client task");
    echo.join().await.expect("echo task");
    assert_eq!(&reply, b"mesh!");
}

/// At Base's 2 s blocks, a 4-node cold start costs at most 2N + 1 sponsored operations (one
/// registration and one envelope batch per node, the CSK commitment riding in member 1's batch)
/// instead of N² + 1, and once the cluster is whole it sends none: several blocks later every
/// node's counter is where it was.
#[tokio::test(flavor = "multi_thread")]
async fn a_cold_start_at_base_cadence_costs_at_most_2n_plus_1_operations_and_none_after() {
    const NODES: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = prepare_with(
        StackConfig::new(dir.path().join("devnet")),
        dir.path(),
        NODES,
    )
    .await;
    assert_eq!(
        cluster.stack.config.chain.block_time,
        Some(2),
        "Base's cadence"
    );
    for i in 0..NODES {
        cluster.start_agent(i).unwrap();
    }
    cluster
        .wait_converged(budget())
        .await
        .expect("the cluster becomes whole");
    assert_converged_on_the_committed_csk(&cluster).await;

    let family = "attestmesh_agent_sponsored_operations_total";
    let mut per_node = Vec::new();
    for node in &cluster.nodes {
        per_node.push(node.metric_sum(family).await.unwrap());
    }
    let total: f64 = per_node.iter().sum();
    eprintln!("sponsored operations per node after the cold start: {per_node:?}");
    assert!(
        total <= (2 * NODES + 1) as f64,
        "a cold start of {NODES} took {total} sponsored operations (per node {per_node:?}); at most {} expected",
        2 * NODES + 1
    );
    for (node, ops) in cluster.nodes.iter().zip(&per_node) {
        let registrations = node
            .metric(&format!("{family}{{kind=\"registration\"}}"))
            .await
            .unwrap();
        assert_eq!(registrations, Some(1.0), "{}: one registration", node.name);
        assert!(
            *ops >= 2.0,
            "{}: it sent its envelopes ({ops} operations)",
            node.name
        );
    }

    // Steady state: five blocks later nobody has sent anything.
    let chain = cluster.stack.chain.operator_client().clone();
    let from = chain.block_number().await.unwrap();
    let deadline = tokio::time::Instant::now() + budget();
    while chain.block_number().await.unwrap() < from + 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the chain stopped making blocks"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (node, before) in cluster.nodes.iter().zip(&per_node) {
        assert_eq!(
            node.metric_sum(family).await.unwrap(),
            *before,
            "{}: sponsored operations once the cluster is whole",
            node.name
        );
    }
}

/// Cold start of eight nodes: every node healthy with seven live peers, all on the committed
/// CSK. The longer profile (`make test-long`); the default suite starts three.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "longer profile: make test-long"]
async fn eight_nodes_cold_start_to_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(dir.path(), 8).await;
    let took = healthy(&mut cluster).await;
    println!("8 nodes: start to all healthy in {took:?}");
    assert_converged_on_the_committed_csk(&cluster).await;
}

/// Every node: the committed CSK, every other node live (in its status and in ListPeers),
/// first convergence latched.
async fn assert_converged_on_the_committed_csk(cluster: &Cluster) {
    let others = u32::try_from(cluster.nodes.len() - 1).unwrap();
    let commitment = current_commitment(cluster).await;
    for node in &cluster.nodes {
        let mut client = node.client().await.unwrap();
        let csk = client
            .get_cluster_shared_key(pb::GetClusterSharedKeyRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            keccak256(&csk.key),
            commitment,
            "{} holds the committed CSK",
            node.name
        );
        let status = client
            .get_mesh_status(pb::GetMeshStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status.live_peers, others, "{}: {status:?}", node.name);
        assert!(status.first_converged);
        let peers = client
            .list_peers(pb::ListPeersRequest {
                include_revoked: false,
            })
            .await
            .unwrap()
            .into_inner()
            .peers;
        for peer in peers.iter().filter(|p| !p.is_self) {
            assert!(
                peer.live,
                "{}: peer {} live in ListPeers",
                node.name, peer.member_id
            );
            assert!(
                peer.last_heartbeat_age_ms.is_some_and(|ms| ms < 60_000),
                "{peer:?}"
            );
        }
    }
}

/// The current CSK epoch's commitment (it must be committed).
pub async fn current_commitment(cluster: &Cluster) -> alloy::primitives::B256 {
    let epoch = cluster
        .stack
        .chain
        .operator_client()
        .current_csk_epoch(cluster.stack.cluster)
        .await
        .unwrap();
    assert!(
        !epoch.commitment.is_zero(),
        "epoch {} committed",
        epoch.epoch
    );
    epoch.commitment
}

pub async fn wait_live_peers(node: &ClusterNode, what: &str, want: u32) {
    wait_for_status(node, what, |s| s.live_peers == want).await;
}

/// Polls the node's status (every 50 ms: phases can be short) until `done` holds.
pub async fn wait_for_status(
    node: &ClusterNode,
    what: &str,
    done: impl Fn(&pb::MeshStatus) -> bool,
) {
    let deadline = tokio::time::Instant::now() + budget();
    loop {
        let current = node.status().await;
        if current.as_ref().is_some_and(&done) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}: never {what}; last {current:?}",
            node.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn healthz_code(node: &ClusterNode) -> u16 {
    node.healthz().await.unwrap_or(0)
}

/// A killed node is reported down by the others within the missed-beat window and live again
/// after it restarts; the flap lowers `live_peers` but `/healthz` stays 200 (first_converged
/// latched). The restarted node recovers its CSK (re-pulled, or re-derived if it is the
/// originator) and becomes healthy again on its own. The transport also survives the gateway
/// dropping every TCP connection.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_node_flaps_without_closing_the_gate_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(dir.path(), 3).await;
    healthy(&mut cluster).await;

    cluster.nodes[2].kill().await;
    wait_live_peers(&cluster.nodes[0], "reported node-3 down", 1).await;
    wait_live_peers(&cluster.nodes[1], "reported node-3 down", 1).await;
    assert_eq!(
        healthz_code(&cluster.nodes[0]).await,
        200,
        "a flap after convergence keeps the gate open"
    );
    assert_eq!(healthz_code(&cluster.nodes[1]).await, 200);

    cluster.start_agent(2).unwrap();
    healthy(&mut cluster).await;
    wait_live_peers(&cluster.nodes[0], "node-3 live again", 2).await;

    // Liveness alone cannot show a reconnect: heartbeats sent before the drop keep a peer live
    // for the 6 s window. The listeners' count of identified connections can: each of the three
    // pairs must dial through the gateway again and be identified anew.
    let before = identified_connections(&cluster).await;
    let dropped = cluster.stack.gateway.drop_all_connections();
    assert!(dropped > 0, "the mesh's transports go through the gateway");
    let deadline = tokio::time::Instant::now() + budget();
    loop {
        let now = identified_connections(&cluster).await;
        if now >= before + 3.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the transports did not reconnect after the gateway dropped {dropped} connections: {now} identified, {before} before"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And the new connections carry an app's traffic across attestmesh0.
    carry_tcp(&cluster, 0, 2, 7001).await;
    wait_live_peers(
        &cluster.nodes[0],
        "peers live after the gateway dropped every connection",
        2,
    )
    .await;
    assert_eq!(healthz_code(&cluster.nodes[0]).await, 200);
}

/// Mesh transport connections the nodes' listeners identified, summed over the cluster.
async fn identified_connections(cluster: &Cluster) -> f64 {
    let mut sum = 0.0;
    for node in &cluster.nodes {
        sum += node
            .counter(
                "attestmesh_agent_transport_connections_total",
                "outcome=\"identified\"",
            )
            .await
            .unwrap();
    }
    sum
}

/// Every node restarted at once returns to healthy with no operator action (field note 7: the
/// originator re-derives its CSK instead of waiting on peers that wait on it). The time is
/// printed for the record; the test asserts no threshold.
#[tokio::test(flavor = "multi_thread")]
async fn the_whole_cluster_restarted_at_once_recovers_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(dir.path(), 3).await;
    healthy(&mut cluster).await;
    for node in &mut cluster.nodes {
        node.kill().await;
    }
    for i in 0..cluster.nodes.len() {
        cluster.start_agent(i).unwrap();
    }
    healthy(&mut cluster).await;
    let originator_log = cluster
        .nodes
        .iter()
        .map(|n| std::fs::read_to_string(&n.log).unwrap_or_default())
        .find(|log| log.contains("CSK re-derived from the TEE"));
    assert!(
        originator_log.is_some(),
        "the originator recovered its CSK by re-derivation"
    );
}

/// Heartbeats that must never make a peer live: signed by a wrong key, claiming another member
/// from a member's mesh IP, a replay of an old sequence number with the real key, and one from
/// an address that is no member's. Each is refused (and counted); the cluster stays healthy.
#[tokio::test(flavor = "multi_thread")]
async fn forged_and_replayed_heartbeats_never_make_a_peer_live() {
    use attestmesh_agent::heartbeat::{HEARTBEAT_PORT, HeartbeatBody, encode};

    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(dir.path(), 2).await;
    healthy(&mut cluster).await;
    let target_ip = cluster.nodes[0].get_self().await.unwrap().mesh_ip;
    let sender_id = cluster.nodes[1].get_self().await.unwrap().member_id;
    // node-2's real heartbeat key, from its TEE (the simulator), to build a replay.
    let dstack = attestmesh_dstack::DstackClient::new(attestmesh_dstack::Endpoint::Unix(
        cluster.stack.nodes[1].dstack_socket.clone(),
    ));
    let real_key = ed25519_dalek::SigningKey::from_bytes(
        dstack
            .get_key(
                attestmesh_agent::identity::HEARTBEAT_PATH,
                "attestmesh-heartbeat",
            )
            .await
            .unwrap()
            .key
            .as_bytes(),
    );
    let wrong_key = ed25519_dalek::SigningKey::from_bytes(&[0x5a; 32]);
    let now = attestmesh_agent::cluster::now_ms();
    let forged = vec![
        encode(
            &wrong_key,
            &HeartbeatBody {
                member_id: sender_id,
                seq: now,
                connected: vec![1, 2],
            },
        ),
        encode(
            &real_key,
            &HeartbeatBody {
                member_id: 99,
                seq: now,
                connected: vec![99],
            },
        ),
        encode(
            &real_key,
            &HeartbeatBody {
                member_id: sender_id,
                seq: now - 10_000,
                connected: vec![1, 2],
            },
        ),
    ];
    let to = format!("{target_ip}:{HEARTBEAT_PORT}");
    let dropped_before = dropped_heartbeats(&cluster.nodes[0]).await;
    let send_to = to.clone();
    cluster.nodes[1]
        .netns
        .run(move || async move {
            let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await.unwrap();
            for datagram in forged {
                socket.send_to(&datagram, &send_to).await.unwrap();
            }
        })
        .join()
        .await
        .unwrap();
    // From node-1's own namespace: an address that is no peer's.
    cluster.nodes[0]
        .netns
        .run(move || async move {
            let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await.unwrap();
            socket.send_to(b"not a heartbeat", &to).await.unwrap();
        })
        .join()
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + budget();
    while dropped_heartbeats(&cluster.nodes[0]).await < dropped_before + 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the forged heartbeats were not all refused"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = cluster.nodes[0].status().await.unwrap();
    assert_eq!(
        status.live_peers, 1,
        "only the real peer is live: {status:?}"
    );
    assert_eq!(healthz_code(&cluster.nodes[0]).await, 200);

    // A flood of one refusal from one source: every datagram counted, one log line.
    let flood = encode(
        &wrong_key,
        &HeartbeatBody {
            member_id: sender_id,
            seq: now,
            connected: vec![1, 2],
        },
    );
    let logged = |node: &ClusterNode| {
        std::fs::read_to_string(&node.log)
            .unwrap()
            .lines()
            .filter(|l| l.contains("heartbeat refused") && l.contains("does not verify"))
            .count()
    };
    let logged_before = logged(&cluster.nodes[0]);
    let dropped_before = dropped_heartbeats(&cluster.nodes[0]).await;
    let send_to = format!("{target_ip}:{HEARTBEAT_PORT}");
    cluster.nodes[1]
        .netns
        .run(move || async move {
            let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await.unwrap();
            for _ in 0..300 {
                socket.send_to(&flood, &send_to).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .join()
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + budget();
    while dropped_heartbeats(&cluster.nodes[0]).await < dropped_before + 250 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flood was not counted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        logged(&cluster.nodes[0]) - logged_before,
        0,
        "the same refusal from the same source inside a minute is not logged again"
    );
}

async fn dropped_heartbeats(node: &ClusterNode) -> u64 {
    node.counter(
        "attestmesh_agent_messages_dropped_total",
        "reason=\"heartbeat\"",
    )
    .await
    .unwrap() as u64
}

/// 20 % packet loss (nftables random drop inside every namespace; this kernel has no tc netem)
/// and 200 ms added delay on the gateway path (the gateway emulator's delay line): the cluster
/// still converges and every node becomes healthy.
#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_converges_through_loss_and_delay() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = prepare(dir.path(), 3).await;
    cluster
        .stack
        .gateway
        .set_delay(attestmesh_devnet::gateway::PathDelay {
            to_backend: Duration::from_millis(200),
            to_client: Duration::from_millis(200),
        });
    for node in &cluster.nodes {
        nft(
            node,
            "add table inet attestmesh_loss\n\
             add chain inet attestmesh_loss input { type filter hook input priority 0; }\n\
             add rule inet attestmesh_loss input numgen random mod 100 < 20 drop\n",
        );
    }
    for i in 0..cluster.nodes.len() {
        cluster.start_agent(i).unwrap();
    }
    healthy(&mut cluster).await;
}

/// The originator restarted alone recovers its CSK by re-derivation from its TEE, without
/// asking anyone (it never logs a pull).
#[tokio::test(flavor = "multi_thread")]
async fn the_originator_restarted_alone_re_derives_without_asking_anyone() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(dir.path(), 2).await;
    healthy(&mut cluster).await;
    let mut originator = None;
    for (i, node) in cluster.nodes.iter().enumerate() {
        if node.get_self().await.unwrap().member_id == 1 {
            originator = Some(i);
        }
    }
    let i = originator.expect("member 1 is one of the nodes");
    cluster.nodes[i].kill().await;
    let log_before = std::fs::read_to_string(&cluster.nodes[i].log)
        .unwrap_or_default()
        .len();
    cluster.start_agent(i).unwrap();
    healthy(&mut cluster).await;
    let log = std::fs::read_to_string(&cluster.nodes[i].log).unwrap();
    let after_restart = &log[log_before..];
    assert!(
        after_restart.contains("CSK re-derived from the TEE and matches the commitment"),
        "re-derived"
    );
    assert!(
        !after_restart.contains("CSK obtained"),
        "the originator never pulled from a peer"
    );
}

/// Applies an nftables script inside the node's namespace (the namespace and its rules go away
/// with the cluster).
pub fn nft(node: &ClusterNode, script: &str) {
    use std::io::Write;
    let mut nft = node.netns.exec("nft");
    nft.args(["-f", "-"]).stdin(Stdio::piped());
    let mut child = nft.spawn().expect("nft runs (apt-get install nftables)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "nftables script applied in {}: {script}",
        node.netns.name()
    );
}

/// Waits until node `i` is seen in `phase`, then kills it with SIGKILL (`kill -9`).
async fn kill_in_phase(cluster: &mut Cluster, i: usize, phase: &str) {
    wait_for_status(&cluster.nodes[i], &format!("reached {phase}"), |s| {
        s.phase == phase
    })
    .await;
    cluster.nodes[i].kill().await;
    eprintln!("{}: kill -9 in {phase}", cluster.nodes[i].name);
}

async fn set_allowed(cluster: &Cluster, i: usize, allowed: bool) {
    use alloy::sol_types::SolCall;
    use attestmesh_bindings::cluster::Cluster as ClusterContract;
    let call = ClusterContract::setAppIdAllowedCall {
        appId: cluster.stack.nodes[i].account,
        allowed,
    };
    cluster
        .stack
        .chain
        .operator_client()
        .send_transaction(
            "Cluster.setAppIdAllowed",
            cluster.stack.cluster,
            call.abi_encode().into(),
        )
        .await
        .unwrap();
}

/// `kill -9` of a node in each phase before healthy, each phase held open by a real condition
/// so the kill lands in it: booting (at once), registering (its app id not yet allowlisted),
/// waiting-peers (alone on chain), wg-configuring (its only peer dead), pulling-csk (the
/// responder's CSK port blocked by nftables); then of a healthy node. Every restart resumes from
/// the chain: the cluster ends healthy with exactly one member per node, all on the committed
/// CSK.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_in_every_phase_then_restart_ends_healthy_with_one_member_per_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = prepare(dir.path(), 2).await;
    // booting: killed right after exec, before its API can answer.
    cluster.start_agent(0).unwrap();
    cluster.nodes[0].kill().await;
    // waiting-peers: node-1 alone on chain.
    cluster.start_agent(0).unwrap();
    kill_in_phase(&mut cluster, 0, "waiting-peers").await;
    // registering: node-2 is not allowlisted yet.
    set_allowed(&cluster, 1, false).await;
    cluster.start_agent(1).unwrap();
    kill_in_phase(&mut cluster, 1, "registering").await;
    set_allowed(&cluster, 1, true).await;
    // wg-configuring: node-2 registers; its only peer (node-1) is dead.
    cluster.start_agent(1).unwrap();
    kill_in_phase(&mut cluster, 1, "wg-configuring").await;
    // pulling-csk: node-1 (the originator) answers no CSK request.
    nft(
        &cluster.nodes[0],
        &format!(
            "add table inet attestmesh_csk\n\
             add chain inet attestmesh_csk input {{ type filter hook input priority 0; }}\n\
             add rule inet attestmesh_csk input tcp dport {} drop\n",
            attestmesh_agent::csk::CSK_PORT
        ),
    );
    cluster.start_agent(0).unwrap();
    cluster.start_agent(1).unwrap();
    kill_in_phase(&mut cluster, 1, "pulling-csk").await;
    nft(&cluster.nodes[0], "delete table inet attestmesh_csk\n");
    cluster.start_agent(1).unwrap();
    healthy(&mut cluster).await;
    // healthy: the originator itself.
    cluster.nodes[0].kill().await;
    cluster.start_agent(0).unwrap();
    healthy(&mut cluster).await;

    let operator = cluster.stack.chain.operator_client();
    let members = operator
        .active_members(cluster.stack.cluster)
        .await
        .unwrap();
    assert_eq!(members.len(), 2, "one member per node: {members:?}");
    let commitment = current_commitment(&cluster).await;
    for node in &cluster.nodes {
        let csk = node
            .client()
            .await
            .unwrap()
            .get_cluster_shared_key(pb::GetClusterSharedKeyRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(keccak256(&csk.key), commitment, "{}", node.name);
    }
}

/// `make demo EXIT_WHEN_HEALTHY=1`, in-process: it shows two nodes healthy, the CSK check and a
/// message round trip, returns Ok, and leaves no namespace behind.
#[tokio::test(flavor = "multi_thread")]
async fn the_demo_exits_ok_once_healthy_and_cleans_up() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    attestmesh_testbed::demo::demo(
        attestmesh_testbed::demo::DemoArgs {
            nodes: 2,
            agent_binary: Some(AGENT.into()),
            // Beside the agent: `cargo nextest run --workspace` builds every binary.
            indexer_binary: None,
            no_indexer: false,
            exit_when_healthy: true,
            timeout_secs: budget().as_secs(),
            state_dir: dir.path().join("demo"),
            // The testbed test of the binary (testbed/tests/it/demo.rs) runs the default, alto.
            bundler: attestmesh_testbed::demo::DemoBundler::Project,
        },
        std::future::pending(),
    )
    .await
    .expect("the demo succeeds");
    let leaked = namespaces_of_this_process();
    assert!(leaked.is_empty(), "the demo left namespaces: {leaked:?}");
    let mut left: Vec<String> = std::fs::read_dir(dir.path().join("demo"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["indexer.log", "node-1.log", "node-2.log"],
        "only the logs remain"
    );
}

/// Namespaces named after this process (nextest runs each test in its own process, so other
/// tests' namespaces never count).
/// The namespaces this test process created that still exist. `/run/netns` missing means none
/// exist; any other failure to read it fails the test (an unreadable directory must not read as
/// "nothing leaked").
fn namespaces_of_this_process() -> Vec<String> {
    let ours = format!("am{:x}-", std::process::id());
    let entries = match std::fs::read_dir("/run/netns") {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(error) => panic!("cannot read /run/netns to check for leaked namespaces: {error}"),
    };
    entries
        .map(|entry| {
            entry
                .expect("a /run/netns entry reads")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.starts_with(&ours))
        .collect()
}
