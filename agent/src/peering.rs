//! The mesh control plane: from the chain's member set and the endpoint envelopes to a running
//! WireGuard mesh, signed heartbeats, convergence, the CSK, and the phases after `waiting-peers`:
//! wg-configuring → pulling-csk → heartbeating → healthy, as the seed orders them.
//!
//! One reconciliation loop (every 500 ms) compares what is wanted with what runs: envelopes owed
//! to members, the dataplane's peer list, liveness, convergence and the phase. Heartbeats and the
//! CSK service run beside it on the mesh IP.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::B256;
use attestmesh_dstack::DstackClient;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Mutex;
use tracing::{debug, error, info, warn};
use zeroize::Zeroizing;

use crate::cluster::MemberInfo;
use crate::csk::{self, Authority, Candidate, Local};
use crate::envelope::EndpointEnvelope;
use crate::health::Phase;
use crate::heartbeat::{self, HEARTBEAT_PORT, HeartbeatBody, Tracker, Transition};
use crate::mesh::{Mesh, MeshConfig, MeshHandle, PeerConfig, TlsIdentity};
use crate::node::Node;
use crate::outbox::{Outbox, Owed};
use crate::shutdown::Shutdown;
use crate::targets::PEERS;

/// Mesh settings from the agent's configuration.
#[derive(Debug, Clone)]
pub struct MeshSettings {
    pub interface: String,
    /// The transport TLS listener (the gateway's `s` route forwards here).
    pub listen: SocketAddr,
    /// Where the gateway is reached (devnet: an address; Base: the gateway's host).
    pub gateway_connect: SocketAddr,
    pub gateway_domain: String,
    pub heartbeat_interval: Duration,
    pub down_after_beats: u32,
}

/// The commitment the originator owes the chain (the outbox sends it with its envelopes).
type CommitSlot = Arc<Mutex<Option<B256>>>;

/// Liveness shared by the heartbeat tasks, the CSK service and the loop.
struct Liveness {
    tracker: Mutex<Tracker>,
    /// Signalled when this node's connected set changes: a heartbeat then goes out at once
    /// instead of at the next tick, so peers learn the new set (and converge) up to a whole
    /// interval sooner.
    changed: tokio::sync::Notify,
}

struct NodeAuthority {
    node: Node,
    liveness: Arc<Liveness>,
}

impl Authority for NodeAuthority {
    async fn active_member_keys(&self, member_id: u64) -> Option<([u8; 32], [u8; 32])> {
        self.node
            .cluster
            .member(member_id)
            .await
            .filter(|m| m.active)
            .map(|m| (m.ed25519, m.x25519))
    }

    async fn is_live(&self, member_id: u64) -> bool {
        self.liveness
            .tracker
            .lock()
            .await
            .live_peers(Instant::now())
            .contains(&member_id)
    }
}

/// Runs the mesh until shutdown.
pub async fn run(
    node: Node,
    me: MemberInfo,
    prefix_len: u8,
    settings: MeshSettings,
    dstack: DstackClient,
    shutdown: Shutdown,
) {
    node.health
        .set_phase(Phase::WgConfiguring, "bringing up attestmesh0");
    let tls = match TlsIdentity::from_seed(&node.identity.tls_seed) {
        Ok(tls) => tls,
        Err(error) => {
            error!(target: PEERS, %error, "cannot build the transport TLS identity");
            node.health.set_phase(
                Phase::WgConfiguring,
                format!("transport TLS identity: {error}"),
            );
            return;
        }
    };
    let config = MeshConfig {
        interface: settings.interface.clone(),
        mesh_ip: me.mesh_ip,
        prefix_len,
        wireguard_secret: *node.identity.wireguard_secret,
        listen: settings.listen,
        tls,
        connect_via: settings.gateway_connect,
        gateway_domain: settings.gateway_domain.clone(),
        transport_port: settings.listen.port(),
    };
    let mesh = loop {
        match Mesh::start(config.clone()).await {
            Ok(mesh) => break mesh,
            Err(error) => {
                error!(target: PEERS, %error, "mesh start failed; retrying");
                node.health
                    .set_phase(Phase::WgConfiguring, format!("mesh: {error}"));
                if !shutdown.sleep(Duration::from_secs(2)).await {
                    return;
                }
            }
        }
    };
    let envelope = EndpointEnvelope {
        member_id: me.id,
        gateway_domain: settings.gateway_domain.clone(),
        transport_port: settings.listen.port(),
        tls_fingerprint: mesh.tls_fingerprint(),
        heartbeat_key: node.identity.heartbeat.verifying_key().to_bytes(),
    };
    let liveness = Arc::new(Liveness {
        changed: tokio::sync::Notify::new(),
        tracker: Mutex::new(Tracker::new(
            me.id,
            settings.heartbeat_interval * settings.down_after_beats,
        )),
    });
    let local = Local {
        chain_id: node.chain.chain_id(),
        cluster: node.cluster_address.into_array(),
        member_id: me.id,
        identity: node.identity.ed25519.clone(),
        x25519: node.identity.x25519.clone(),
    };

    let heartbeat_socket =
        match UdpSocket::bind(SocketAddrV4::new(me.mesh_ip, HEARTBEAT_PORT)).await {
            Ok(socket) => Arc::new(socket),
            Err(error) => {
                error!(target: PEERS, %error, "cannot bind the heartbeat socket on the mesh IP");
                node.health
                    .set_phase(Phase::WgConfiguring, format!("heartbeat socket: {error}"));
                return;
            }
        };
    // The originator decides before the first reconcile pass whether it owes a commitment, so
    // the commitment rides in the same operation as its first envelopes.
    let commit_wanted: CommitSlot = Arc::new(Mutex::new(None));
    if me.id == 1 {
        match try_acquire(&node, me.id, &local, &dstack, &liveness, &commit_wanted).await {
            Ok(key) => *node.csk.write().await = Some(csk::SharedKey::new(key)),
            Err(waiting) => debug!(target: "attestmesh::csk", %waiting, "CSK not held yet"),
        }
    }
    let tasks = vec![
        tokio::spawn(send_heartbeats(
            node.clone(),
            me.id,
            heartbeat_socket.clone(),
            liveness.clone(),
            settings.heartbeat_interval,
        )),
        tokio::spawn(receive_heartbeats(
            node.clone(),
            heartbeat_socket,
            liveness.clone(),
        )),
        tokio::spawn(serve_csk(
            node.clone(),
            me.mesh_ip,
            local.clone(),
            liveness.clone(),
        )),
        tokio::spawn(acquire_csk(
            node.clone(),
            me.id,
            local,
            dstack,
            liveness.clone(),
            commit_wanted.clone(),
        )),
    ];
    reconcile(
        &node,
        &mesh,
        &envelope,
        me.id,
        &liveness,
        &commit_wanted,
        &shutdown,
    )
    .await;
    for task in tasks {
        task.abort();
    }
    mesh.shutdown().await;
}

async fn reconcile(
    node: &Node,
    mesh: &MeshHandle,
    envelope: &EndpointEnvelope,
    self_id: u64,
    liveness: &Liveness,
    commit_wanted: &CommitSlot,
    shutdown: &Shutdown,
) {
    let mut configured: Vec<(u64, [u8; 32])> = Vec::new();
    let mut reported_live = BTreeSet::new();
    let mut outbox = Outbox::default();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let peers = node.cluster.active_peers().await;

        // What this node owes the chain: envelopes to every peer (deterministic ids, sent once)
        // and, for the originator, its commitment until the chain shows one.
        let commitment = match *commit_wanted.lock().await {
            Some(mine) if node.cluster.csk_commitment().await.is_none() => Some(mine),
            _ => None,
        };
        outbox
            .poll(
                node,
                Owed {
                    self_id,
                    envelope,
                    peers: &peers,
                    commitment,
                },
            )
            .await;

        // The dataplane's peers: active members whose envelope arrived.
        let mut wanted = Vec::new();
        for peer in &peers {
            if let Some(endpoint) = node.cluster.endpoint(peer.id).await {
                wanted.push(PeerConfig {
                    member_id: peer.id,
                    app_id: peer.account.into_array(),
                    wireguard_public: peer.wireguard,
                    mesh_ip: peer.mesh_ip,
                    tls_fingerprint: endpoint.tls_fingerprint,
                });
            }
        }
        let key: Vec<(u64, [u8; 32])> = wanted
            .iter()
            .map(|p| (p.member_id, p.tls_fingerprint))
            .collect();
        if key != configured {
            info!(target: PEERS, peers = ?key.iter().map(|k| k.0).collect::<Vec<_>>(), "mesh peers configured");
            mesh.set_peers(wanted).await;
            configured = key;
        }

        // Liveness, convergence, phase.
        let now = Instant::now();
        let (live, converged) = {
            let mut tracker = liveness.tracker.lock().await;
            let members: BTreeSet<u64> = peers.iter().map(|p| p.id).collect();
            for id in tracker.live_peers(now) {
                if !members.contains(&id) {
                    tracker.remove(id);
                }
            }
            for transition in tracker.expire(now, &mut reported_live) {
                if let Transition::Down(id) = transition {
                    info!(target: PEERS, member = id, "peer down (missed heartbeats)");
                    node.cluster.emit_liveness(id, false).await;
                    liveness.changed.notify_one();
                }
            }
            let live = tracker.live_peers(now);
            let mut snapshot = BTreeMap::new();
            for peer in &peers {
                snapshot.insert(
                    peer.id,
                    crate::node::PeerLiveness {
                        live: live.contains(&peer.id),
                        last_heartbeat: tracker.last_seen(peer.id),
                    },
                );
            }
            *node.peer_liveness.write().await = snapshot;
            for id in &live {
                if reported_live.insert(*id) {
                    info!(target: PEERS, member = id, "peer live (verified heartbeat)");
                    node.cluster.emit_liveness(*id, true).await;
                    liveness.changed.notify_one();
                }
            }
            (live.len() as u32, tracker.converged(now))
        };
        node.health.set_live_peers(live);
        node.metrics.live_peers.set(i64::from(live));
        if converged && !node.health.snapshot().first_converged {
            info!(target: PEERS, live, "converged: every live peer reports the same member set");
            node.health.latch_first_converged();
        }
        update_phase(node, &peers, mesh).await;
    }
}

async fn update_phase(node: &Node, peers: &[MemberInfo], mesh: &MeshHandle) {
    let snapshot = node.health.snapshot();
    let csk_held = node.csk.read().await.is_some();
    node.health.set_csk_acquired(csk_held);
    let (phase, waiting) = if snapshot.first_converged && csk_held {
        (Phase::Healthy, String::new())
    } else if peers.is_empty() {
        (
            Phase::WaitingPeers,
            "no other members on chain yet".to_string(),
        )
    } else if !mesh.stats().iter().any(|s| s.handshake_completed) {
        (
            Phase::WgConfiguring,
            format!(
                "{} peer(s) on chain; waiting for a WireGuard handshake",
                peers.len()
            ),
        )
    } else if !csk_held {
        (
            Phase::PullingCsk,
            "acquiring the Cluster Shared Key".to_string(),
        )
    } else {
        (
            Phase::Heartbeating,
            "waiting for every live peer to report the same member set".to_string(),
        )
    };
    if phase != snapshot.phase || waiting != snapshot.waiting_for {
        node.health.set_phase(phase, waiting);
        node.metrics.set_phase(phase);
    }
}

async fn send_heartbeats(
    node: Node,
    self_id: u64,
    socket: Arc<UdpSocket>,
    liveness: Arc<Liveness>,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = liveness.changed.notified() => tick.reset(),
        }
        let connected: Vec<u64> = liveness
            .tracker
            .lock()
            .await
            .connected_set(Instant::now())
            .into_iter()
            .collect();
        let body = HeartbeatBody {
            member_id: self_id,
            seq: crate::cluster::now_ms(),
            connected,
        };
        let bytes = heartbeat::encode(&node.identity.heartbeat, &body);
        for peer in node.cluster.active_peers().await {
            if let Err(error) = socket
                .send_to(&bytes, SocketAddrV4::new(peer.mesh_ip, HEARTBEAT_PORT))
                .await
            {
                debug!(target: PEERS, peer = peer.id, %error, "heartbeat not sent");
            }
        }
    }
}

async fn receive_heartbeats(node: Node, socket: Arc<UdpSocket>, liveness: Arc<Liveness>) {
    let mut buffer = vec![0u8; 2048];
    let mut by_ip: BTreeMap<Ipv4Addr, u64> = BTreeMap::new();
    loop {
        let (len, from) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(error) => {
                warn!(target: PEERS, %error, "heartbeat socket error");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let result = verify_heartbeat(&node, &buffer[..len], from, &mut by_ip, &liveness).await;
        if let Err(error) = result {
            node.metrics.dropped("heartbeat");
            warn!(target: PEERS, %from, %error, "heartbeat refused");
        }
    }
}

async fn verify_heartbeat(
    node: &Node,
    bytes: &[u8],
    from: SocketAddr,
    by_ip: &mut BTreeMap<Ipv4Addr, u64>,
    liveness: &Liveness,
) -> Result<(), heartbeat::HeartbeatError> {
    let SocketAddr::V4(from) = from else {
        return Err(heartbeat::HeartbeatError::Malformed("IPv6 source".into()));
    };
    by_ip.clear();
    for peer in node.cluster.active_peers().await {
        by_ip.insert(peer.mesh_ip, peer.id);
    }
    let actual = *by_ip
        .get(from.ip())
        .ok_or(heartbeat::HeartbeatError::UnknownSource(*from.ip()))?;
    let claimed = heartbeat::claimed_member(bytes)?;
    if claimed != actual {
        return Err(heartbeat::HeartbeatError::WrongMember { claimed, actual });
    }
    let endpoint = node
        .cluster
        .endpoint(actual)
        .await
        .ok_or(heartbeat::HeartbeatError::NoKey(actual))?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&endpoint.heartbeat_key)
        .map_err(|_| heartbeat::HeartbeatError::BadSignature(actual))?;
    let body = heartbeat::decode(bytes, &key)?;
    liveness
        .tracker
        .lock()
        .await
        .accept(&body, Instant::now(), crate::cluster::now_ms())?;
    Ok(())
}

async fn serve_csk(node: Node, mesh_ip: Ipv4Addr, local: Local, liveness: Arc<Liveness>) {
    let listener = loop {
        match TcpListener::bind(SocketAddrV4::new(mesh_ip, csk::CSK_PORT)).await {
            Ok(listener) => break listener,
            Err(error) => {
                warn!(target: "attestmesh::csk", %error, "cannot listen on the mesh IP yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let authority = Arc::new(NodeAuthority {
        node: node.clone(),
        liveness,
    });
    csk::serve(listener, local, node.csk.clone(), authority).await;
}

/// The originator re-derives and checks (or commits); everyone else pulls from live peers.
async fn acquire_csk(
    node: Node,
    self_id: u64,
    local: Local,
    dstack: DstackClient,
    liveness: Arc<Liveness>,
    commit_wanted: CommitSlot,
) {
    loop {
        if node.csk.read().await.is_some() {
            return;
        }
        match try_acquire(&node, self_id, &local, &dstack, &liveness, &commit_wanted).await {
            Ok(key) => {
                *node.csk.write().await = Some(csk::SharedKey::new(key));
                return;
            }
            Err(waiting) => {
                debug!(target: "attestmesh::csk", %waiting, "CSK not acquired yet");
                if node.health.snapshot().phase == Phase::PullingCsk {
                    node.health.set_phase(Phase::PullingCsk, waiting);
                }
                tokio::time::sleep(ACQUIRE_RETRY).await;
            }
        }
    }
}

/// How often the CSK subsystem tries again while the key is not held.
const ACQUIRE_RETRY: Duration = Duration::from_millis(500);

async fn try_acquire(
    node: &Node,
    self_id: u64,
    local: &Local,
    dstack: &DstackClient,
    liveness: &Liveness,
    commit_wanted: &CommitSlot,
) -> Result<Zeroizing<[u8; 32]>, String> {
    let commitment = node
        .chain
        .csk_commitment(node.cluster_address)
        .await
        .map_err(|e| format!("chain RPC: {e}"))?;
    if self_id == 1 {
        // Field note 7: re-derive from the TEE first; never wait on a peer for our own key.
        let reply = dstack
            .get_key(csk::CSK_PATH, csk::CSK_PURPOSE)
            .await
            .map_err(|e| format!("dstack: {e}"))?;
        let key = Zeroizing::new(*reply.key.as_bytes());
        let mine = csk::commitment_of(&key);
        match commitment {
            Some(on_chain) if on_chain == mine => {
                info!(target: "attestmesh::csk", "CSK re-derived from the TEE and matches the commitment");
                return Ok(key);
            }
            Some(_) => {
                // Not expected (the originator's key is deterministic); pull like everyone else.
                warn!(target: "attestmesh::csk", "the on-chain commitment is not this TEE's key; pulling from peers");
            }
            None => {
                // The outbox sends it, with this node's first envelopes.
                *commit_wanted.lock().await = Some(mine);
                return Err("waiting for this node's CSK commitment to be included".into());
            }
        }
    }
    let commitment = commitment.ok_or("waiting for the first registrant to commit the CSK")?;
    let live = liveness.tracker.lock().await.live_peers(Instant::now());
    let mut candidates = Vec::new();
    for id in live {
        if let Some(peer) = node.cluster.member(id).await {
            candidates.push(Candidate {
                member_id: id,
                address: SocketAddr::V4(SocketAddrV4::new(peer.mesh_ip, csk::CSK_PORT)),
                ed25519: peer.ed25519,
            });
        }
    }
    if candidates.is_empty() {
        return Err("waiting for a live peer to pull the CSK from".into());
    }
    csk::pull(local, &candidates, commitment)
        .await
        .map_err(|failures| {
            format!(
                "no live peer handed over the CSK: {}",
                failures
                    .iter()
                    .map(|(id, e)| format!("member {id}: {e}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })
}
