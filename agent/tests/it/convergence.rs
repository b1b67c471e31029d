//! Convergence with a member that lies (issue 16.6). A node used to converge only when every
//! live peer reported exactly its set, so one member reporting a false set (or only partly
//! connected) kept every restarting node out of `healthy`. Now a strict majority of the live
//! peers decides, and the dissenting minority is reported.
//!
//! The liar is a real member whose agent is killed; the test process speaks for it from its
//! namespace with its real TEE keys (derived from its dstack simulator): its mesh dataplane, so
//! its heartbeats arrive through WireGuard from its mesh IP as the agent's would, and its
//! heartbeats, properly signed, with a false connected set. Needs root and /dev/net/tun, like
//! the cluster tests.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use attestmesh_agent::heartbeat::{HEARTBEAT_PORT, HeartbeatBody, encode};
use attestmesh_agent::identity::Identity;
use attestmesh_agent::mesh::{Mesh, MeshConfig, PeerConfig, TlsIdentity};
use attestmesh_dstack::{DstackClient, Endpoint};
use attestmesh_proto::agent::v1 as pb;
use attestmesh_testbed::cluster::{Cluster, ClusterNode};
use attestmesh_testbed::netns::NsTask;
use tokio::sync::oneshot;

use crate::cluster::{healthy, start, wait_live_peers};
use crate::harness::budget;

/// The transport port the agents listen on (their default `--mesh.listen`).
const TRANSPORT_PORT: u16 = 51820;

/// How often the impostor heartbeats (the agents: every 2 s).
const IMPOSTOR_BEAT: Duration = Duration::from_secs(1);

/// Node `i`'s keys, derived from its TEE (the dstack simulator) as its agent derives them.
async fn identity(cluster: &Cluster, i: usize) -> Identity {
    let dstack = DstackClient::new(Endpoint::Unix(cluster.stack.nodes[i].dstack_socket.clone()));
    Identity::derive(&dstack)
        .await
        .unwrap_or_else(|err| panic!("{}: identity from its TEE: {err}", cluster.nodes[i].name))
}

/// Node `i` as its peers' dataplanes configure it.
async fn peer_config(cluster: &Cluster, i: usize, me: &pb::SelfInfo) -> PeerConfig {
    let keys = identity(cluster, i).await;
    PeerConfig {
        member_id: me.member_id,
        app_id: keys.account.into_array(),
        wireguard_public: keys.wireguard_public(),
        mesh_ip: me.mesh_ip.parse().unwrap(),
        tls_fingerprint: TlsIdentity::from_seed(&keys.tls_seed)
            .unwrap()
            .fingerprint(),
    }
}

/// The test process speaking for a member whose agent is dead: that member's mesh dataplane in
/// its namespace (its WireGuard key, its TLS certificate, its mesh IP), and every
/// [`IMPOSTOR_BEAT`] its heartbeat, signed with its real heartbeat key, claiming `claims` as
/// its connected set. Dropping it (or [`Impostor::stop`]) removes the dataplane.
struct Impostor {
    stop: Option<oneshot::Sender<()>>,
    task: Option<NsTask<Result<(), String>>>,
}

impl Impostor {
    async fn start(
        cluster: &Cluster,
        i: usize,
        me: &pb::SelfInfo,
        peers: Vec<PeerConfig>,
        claims: Vec<u64>,
    ) -> Self {
        let keys = identity(cluster, i).await;
        let node = &cluster.nodes[i];
        let config = MeshConfig {
            interface: "attestmesh0".to_owned(),
            mesh_ip: me.mesh_ip.parse().unwrap(),
            prefix_len: cluster.stack.config.mesh_prefix_length,
            wireguard_secret: *keys.wireguard_secret,
            listen: SocketAddr::from(([0, 0, 0, 0], TRANSPORT_PORT)),
            tls: TlsIdentity::from_seed(&keys.tls_seed).unwrap(),
            connect_via: SocketAddr::from((
                node.host_ip,
                cluster.stack.gateway.local_addr().port(),
            )),
            gateway_domain: cluster.stack.gateway.domain().to_owned(),
            transport_port: TRANSPORT_PORT,
        };
        let heartbeat_key = keys.heartbeat.clone();
        let member_id = me.member_id;
        let targets: Vec<Ipv4Addr> = peers.iter().map(|p| p.mesh_ip).collect();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = node.netns.run(move || async move {
            // The killed agent's interface and listener may take a moment to go.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            let mesh = loop {
                match Mesh::start(config.clone()).await {
                    Ok(mesh) => break mesh,
                    Err(err) if tokio::time::Instant::now() < deadline => {
                        eprintln!("impostor: mesh not up yet ({err}); retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(err) => return Err(format!("the impostor's mesh did not start: {err}")),
                }
            };
            mesh.set_peers(peers).await;
            let socket = tokio::net::UdpSocket::bind("0.0.0.0:0")
                .await
                .map_err(|err| format!("the impostor's heartbeat socket: {err}"))?;
            let mut beat = tokio::time::interval(IMPOSTOR_BEAT);
            loop {
                tokio::select! {
                    // Stopped, or the test dropped the impostor.
                    _ = &mut stopped => break,
                    _ = beat.tick() => {
                        let body = HeartbeatBody {
                            member_id,
                            seq: attestmesh_agent::cluster::now_ms(),
                            connected: claims.clone(),
                        };
                        let datagram = encode(&heartbeat_key, &body);
                        for ip in &targets {
                            // Before the tunnel is up the dataplane refuses it; the next beat
                            // goes again.
                            let _ = socket.send_to(&datagram, (*ip, HEARTBEAT_PORT)).await;
                        }
                    }
                }
            }
            mesh.shutdown().await;
            Ok(())
        });
        Self {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stop heartbeating and remove the dataplane; fails if the impostor failed.
    async fn stop(mut self) {
        drop(self.stop.take());
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task.join())
                .await
                .expect("the impostor stops in time")
                .expect("the impostor's thread ran")
                .expect("the impostor ran");
        }
    }
}

async fn dissenting_peers(node: &ClusterNode) -> Option<f64> {
    node.metric("attestmesh_agent_convergence_dissenting_peers")
        .await
        .unwrap()
}

/// Issue 16.6 regression. Four nodes (the smallest cluster with a minority to outvote: with
/// three, one liar against one honest peer is no majority, and the rule still asks for
/// every peer) become healthy; then one member's agent is killed and the test speaks for it,
/// sending properly signed heartbeats that claim it hears nobody. Every other node, restarted
/// in turn, still reaches healthy (its `first_converged` latched anew) with the liar live and
/// reported as the one dissenting peer. They restart one at a time so that the two staying up
/// always count the liar in their sets: a restarted node can then converge only with the
/// liar in its set too, and only by outvoting it (restarting all at once would let a node
/// converge early on the others' word alone, before it hears the liar).
#[tokio::test(flavor = "multi_thread")]
async fn restarted_nodes_reach_healthy_while_a_member_heartbeats_a_false_set() {
    const NODES: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(dir.path(), NODES).await;
    healthy(&mut cluster).await;

    let mut selves = Vec::new();
    for node in &cluster.nodes {
        selves.push(node.get_self().await.unwrap());
    }
    // The liar: the highest member id, so never the CSK originator (the lowest active member),
    // whose key only its own TEE can derive after the others restart.
    let liar = (0..NODES).max_by_key(|i| selves[*i].member_id).unwrap();
    let liar_id = selves[liar].member_id;
    let honest: Vec<usize> = (0..NODES).filter(|i| *i != liar).collect();
    let mut peers = Vec::new();
    for &i in &honest {
        peers.push(peer_config(&cluster, i, &selves[i]).await);
    }

    cluster.nodes[liar].kill().await;
    for &i in &honest {
        wait_live_peers(&cluster.nodes[i], "reported the killed member down", 2).await;
    }
    // It claims to hear nobody but itself (a set must include its sender to be accepted).
    let impostor = Impostor::start(&cluster, liar, &selves[liar], peers, vec![liar_id]).await;
    for &i in &honest {
        // Its heartbeats verify: it is live again, and reports a set that is not theirs.
        wait_live_peers(&cluster.nodes[i], "counted the impostor live", 3).await;
    }

    for &i in &honest {
        cluster.nodes[i].kill().await;
        let log_before = std::fs::read_to_string(&cluster.nodes[i].log)
            .unwrap_or_default()
            .len();
        cluster.start_agent(i).unwrap();
        let name = cluster.nodes[i].name.clone();
        cluster
            .wait_until(
                budget(),
                |views| views[i].healthy,
                |view| eprintln!("{}: {} {:?}", view.name, view.phase(), view.status),
            )
            .await
            .unwrap_or_else(|err| {
                panic!("{name}, restarted, never reached healthy beside the liar: {err}")
            });
        let node = &cluster.nodes[i];
        wait_live_peers(node, "counts the liar live among its peers", 3).await;
        let status = node.status().await.unwrap();
        assert!(status.first_converged, "{}: {status:?}", node.name);
        // The liar is reported, not ignored (the gauge follows the 500 ms reconcile pass).
        let deadline = tokio::time::Instant::now() + budget();
        while dissenting_peers(node).await != Some(1.0) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: the liar is never reported dissenting ({:?})",
                node.name,
                dissenting_peers(node).await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let log = std::fs::read_to_string(&node.log).unwrap();
        let named = format!("member {liar_id} reports {{{liar_id}}}");
        assert!(
            log[log_before..].contains(&named),
            "{}: after its restart, its log names the dissenting member and its set ({named})",
            node.name
        );
        eprintln!("{}: restarted, healthy beside the liar", node.name);
    }
    impostor.stop().await;
}
