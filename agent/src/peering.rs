//! The mesh control plane: from the chain's member set and the endpoint envelopes to a running
//! WireGuard mesh, signed heartbeats, convergence, the CSK, and the phases after `waiting-peers`:
//! wg-configuring → pulling-csk → heartbeating → healthy, as the seed orders them.
//!
//! One reconciliation loop (every 500 ms) compares what is wanted with what runs: envelopes owed
//! to members, the dataplane's peer list, liveness, convergence and the phase. Heartbeats
//! (`heartbeats.rs`) and the CSK responder and acquirer (`csk_exchange.rs`) run beside it on the
//! mesh IP.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::B256;
use attestmesh_dstack::DstackClient;
use tokio::net::UdpSocket;
use tokio::sync::Mutex;
use tracing::{error, info, warn};

use crate::cluster::MemberInfo;
use crate::csk::Local;
use crate::envelope::EndpointEnvelope;
use crate::health::Phase;
use crate::heartbeat::{self, HEARTBEAT_PORT, Tracker, Transition};
use crate::mesh::{Mesh, MeshConfig, MeshHandle, PeerConfig, TlsIdentity};
use crate::outbox::{Outbox, Owed};
use crate::shutdown::Shutdown;
use crate::state::{Node, PeerLiveness};
use crate::targets::PEERS;

mod csk_exchange;
mod heartbeats;

use csk_exchange::{Acquirer, serve_csk};
use heartbeats::{receive_heartbeats, send_heartbeats};

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

/// The commitment the originator owes the chain for an epoch (the outbox sends it with its
/// envelopes, or alone).
type CommitSlot = Arc<Mutex<Option<(u64, B256)>>>;

/// What the CSK subsystem is waiting for, if anything (shown in `/healthz` `waiting_for`).
type CskWaiting = Arc<Mutex<Option<String>>>;

/// What the CSK subsystem shares with the reconcile loop.
struct CskShared {
    commit_wanted: CommitSlot,
    waiting: CskWaiting,
}

/// Liveness shared by the heartbeat tasks, the CSK service and the loop.
struct Liveness {
    tracker: Mutex<Tracker>,
    /// Signalled when this node's connected set changes: a heartbeat then goes out at once
    /// instead of at the next tick, so peers learn the new set (and converge) up to a whole
    /// interval sooner.
    changed: tokio::sync::Notify,
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
    // The originator decides before the first reconcile pass whether it owes a commitment (so
    // it rides in the same operation as its first envelopes), and after a restart re-derives
    // its key before anything else (field note 7).
    let commit_wanted: CommitSlot = Arc::new(Mutex::new(None));
    let csk_waiting: CskWaiting = Arc::new(Mutex::new(None));
    let mut acquirer = Acquirer {
        node: node.clone(),
        self_id: me.id,
        local: local.clone(),
        dstack,
        liveness: liveness.clone(),
        commit_wanted: commit_wanted.clone(),
        waiting: csk_waiting.clone(),
        derived: None,
        previous_tried: None,
    };
    if node
        .cluster
        .csk_epoch()
        .await
        .is_some_and(|e| e.originator == me.id)
    {
        acquirer.pass().await;
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
        tokio::spawn(acquirer.run()),
    ];
    reconcile(
        &node,
        &mesh,
        &envelope,
        me.id,
        &liveness,
        &CskShared {
            commit_wanted,
            waiting: csk_waiting,
        },
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
    csk: &CskShared,
    shutdown: &Shutdown,
) {
    let mut configured: Vec<(u64, [u8; 32])> = Vec::new();
    let mut reported_live = BTreeSet::new();
    // The dissenting minority last logged as outvoted (logged again only for another one, so a
    // peer that flaps between agreeing and not is logged once).
    let mut outvoted = BTreeSet::new();
    let mut outbox = Outbox::default();
    let mut accepts_counted = crate::mesh::AcceptStats::default();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let peers = node.cluster.active_peers().await;

        // What this node owes the chain: envelopes to every peer (deterministic ids, sent once)
        // and, for the current epoch's originator, its commitment until the chain shows one.
        let chain_epoch = node.cluster.csk_epoch().await;
        let commitment = match *csk.commit_wanted.lock().await {
            Some((epoch, mine))
                if chain_epoch.is_some_and(|e| e.epoch == epoch && e.commitment.is_none()) =>
            {
                Some((epoch, mine))
            }
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

        // The transport listener's outcomes onto /metrics (a flood shows as evictions).
        let accepts = mesh.accept_stats();
        for (outcome, now, before) in [
            ("accepted", accepts.accepted, accepts_counted.accepted),
            ("identified", accepts.identified, accepts_counted.identified),
            ("evicted", accepts.evicted, accepts_counted.evicted),
            ("timed_out", accepts.timed_out, accepts_counted.timed_out),
            ("refused", accepts.refused, accepts_counted.refused),
        ] {
            if now > before {
                node.metrics
                    .transport_connections
                    .get_or_create(&vec![("outcome".to_string(), outcome.to_string())])
                    .inc_by(now - before);
            }
        }
        accepts_counted = accepts;

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
            node.metrics.mesh_peers.set(key.len() as i64);
            if let Some(epoch) = chain_epoch.filter(|e| {
                e.revoked_member != 0
                    && configured.iter().any(|(id, _)| *id == e.revoked_member)
                    && !key.iter().any(|(id, _)| *id == e.revoked_member)
            }) {
                let seconds = seconds_since(epoch.opened_at);
                node.metrics.revoked_peer_removal_seconds.set(seconds);
                info!(target: PEERS, member = epoch.revoked_member, seconds, "revoked member removed from attestmesh0");
            }
            configured = key;
        }

        // Liveness, convergence, phase.
        let now = Instant::now();
        let (live, convergence) = {
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
                    PeerLiveness {
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
            (live.len() as u32, tracker.convergence(now))
        };
        node.health.set_live_peers(live);
        node.metrics.live_peers.set(i64::from(live));
        let converged = convergence.converged();
        let dissenting: BTreeSet<u64> = convergence.dissenting.keys().copied().collect();
        node.metrics
            .convergence_dissenting_peers
            .set(dissenting.len() as i64);
        if converged && !dissenting.is_empty() && dissenting != outvoted {
            warn!(target: PEERS, dissent = %convergence.describe_dissent(), mine = ?convergence.mine, "a minority of the live peers reports another member set (a peer that lies or is only partly connected); the majority reports this node's, so it counts as converged");
            outvoted = dissenting;
        }
        if converged && !node.health.snapshot().first_converged {
            info!(target: PEERS, live, agreeing = ?convergence.agreeing, dissenting = ?convergence.dissenting.keys().collect::<Vec<_>>(), "converged: a majority of the live peers report this node's member set");
            node.health.latch_first_converged();
        }
        let waiting = csk.waiting.lock().await.clone();
        update_phase(node, &peers, mesh, waiting, &convergence).await;
    }
}

/// Seconds from a chain timestamp (unix seconds) to now.
fn seconds_since(chain_time: u64) -> f64 {
    (crate::cluster::now_ms() as f64 / 1000.0 - chain_time as f64).max(0.0)
}

/// The phase as the seed orders the gates. A node that holds an epoch's key stays healthy while
/// it obtains the next one (a rotation never takes it out of the mesh); `waiting_for` and
/// `attestmesh_agent_csk_epoch` below `attestmesh_agent_csk_chain_epoch` say it is behind.
async fn update_phase(
    node: &Node,
    peers: &[MemberInfo],
    mesh: &MeshHandle,
    csk_waiting: Option<String>,
    convergence: &heartbeat::Convergence,
) {
    let snapshot = node.health.snapshot();
    let csk_held = node.csk.held_epoch().is_some();
    node.health.set_csk_acquired(csk_held);
    let (phase, waiting) = if snapshot.first_converged && csk_held {
        (Phase::Healthy, csk_waiting.unwrap_or_default())
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
            csk_waiting.unwrap_or_else(|| "acquiring the Cluster Shared Key".to_string()),
        )
    } else {
        (Phase::Heartbeating, convergence.waiting_for())
    };
    // A stale or unagreed member set comes first, whatever the phase: it stops the CSK service.
    let waiting = match node.cluster.view_problem().await {
        Some(problem) if waiting.is_empty() => problem,
        Some(problem) => format!("{problem}; {waiting}"),
        None => waiting,
    };
    if phase != snapshot.phase || waiting != snapshot.waiting_for {
        node.health.set_phase(phase, waiting);
        node.metrics.set_phase(phase);
    }
}
