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

use crate::cluster::{EpochInfo, MemberInfo};
use crate::csk::{self, Authority, Candidate, Local};
use crate::envelope::EndpointEnvelope;
use crate::health::Phase;
use crate::heartbeat::{self, HEARTBEAT_PORT, HeartbeatBody, Tracker, Transition};
use crate::mesh::{Mesh, MeshConfig, MeshHandle, PeerConfig, TlsIdentity};
use crate::outbox::{Outbox, Owed};
use crate::shutdown::Shutdown;
use crate::state::{Node, PeerLiveness};
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

struct NodeAuthority {
    node: Node,
    liveness: Arc<Liveness>,
}

impl Authority for NodeAuthority {
    async fn standing(&self, member_id: u64) -> csk::Standing {
        match self.node.cluster.member(member_id).await {
            Some(m) if m.active => csk::Standing::Active {
                ed25519: m.ed25519,
                x25519: m.x25519,
            },
            Some(_) => csk::Standing::Revoked,
            None => csk::Standing::Unknown,
        }
    }

    async fn is_live(&self, member_id: u64) -> bool {
        self.liveness
            .tracker
            .lock()
            .await
            .live_peers(Instant::now())
            .contains(&member_id)
    }

    async fn chain_epoch(&self) -> Option<u64> {
        self.node.cluster.csk_epoch().await.map(|e| e.epoch)
    }

    async fn view_problem(&self) -> Option<String> {
        self.node.cluster.view_problem().await
    }

    fn refused(&self, reason: &'static str) {
        self.node
            .metrics
            .csk_requests_refused
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc();
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
    let mut refusals = crate::log_limit::LogLimiter::default();
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
            node.metrics
                .heartbeats_refused
                .get_or_create(&vec![("reason".to_string(), error.label().to_string())])
                .inc();
            if let Some(suppressed) = refusals.should_log(from.ip(), error.label(), Instant::now())
            {
                warn!(target: PEERS, %from, %error, suppressed, "heartbeat refused (the same refusal from this source is logged at most once a minute; every one is counted on /metrics)");
            }
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

/// How often the CSK subsystem looks at the chain's epoch (its own view, no RPC) and retries.
const ACQUIRE_RETRY: Duration = Duration::from_millis(500);
/// How often a node retries obtaining the previous epoch's key after a restart.
const PREVIOUS_RETRY: Duration = Duration::from_secs(5);
/// Peers asked per pass (the originator first): a rotation in a large cluster does not make
/// every node knock on every other node twice a second.
const PULL_FANOUT: usize = 4;

/// The CSK subsystem: holds the key of the chain's current epoch. The epoch's originator
/// derives it (and commits it, or after a restart re-derives and checks it); everyone else pulls
/// it from live peers. It runs for the node's lifetime: every rotation is one more epoch.
struct Acquirer {
    node: Node,
    self_id: u64,
    local: Local,
    dstack: DstackClient,
    liveness: Arc<Liveness>,
    commit_wanted: CommitSlot,
    waiting: CskWaiting,
    /// The key this node derived as an epoch's originator, until the chain shows it committed.
    derived: Option<(u64, Zeroizing<[u8; 32]>)>,
    /// When the previous epoch's key was last sought (after a restart inside its grace window).
    previous_tried: Option<Instant>,
}

impl Acquirer {
    async fn run(mut self) {
        loop {
            self.pass().await;
            tokio::time::sleep(ACQUIRE_RETRY).await;
        }
    }

    /// One look: expire the previous key, obtain the current epoch's if not held.
    async fn pass(&mut self) {
        let now_s = crate::cluster::now_ms() / 1000;
        if let Some(epoch) = self.node.csk.expire(now_s).await {
            info!(target: "attestmesh::csk", epoch, "the previous epoch's grace window ended; its key is dropped");
        }
        let waiting = self.step(now_s).await.err();
        *self.waiting.lock().await = waiting;
    }

    async fn step(&mut self, now_s: u64) -> Result<(), String> {
        let chain = self
            .node
            .cluster
            .csk_epoch()
            .await
            .ok_or("waiting for the chain's CSK epoch")?;
        let held = self.node.csk.held_epoch();
        if held.is_some_and(|h| h >= chain.epoch) {
            self.recover_previous(&chain, now_s).await;
            return Ok(());
        }
        if self
            .node
            .cluster
            .member(self.self_id)
            .await
            .is_some_and(|m| !m.active)
        {
            return Err("this node is revoked: it obtains no new CSK epoch".into());
        }
        let behind = held.map_or(String::new(), |h| format!(" (holding epoch {h})"));
        let key = self
            .acquire(&chain)
            .await
            .map_err(|waiting| format!("CSK epoch {}: {waiting}{behind}", chain.epoch))?;
        self.derived = None;
        self.node
            .csk
            .install(
                csk::EpochKey {
                    epoch: chain.epoch,
                    key: csk::SharedKey::new(key),
                },
                chain.previous.map(|p| (p.epoch, p.until)),
            )
            .await;
        let seconds = seconds_since(chain.opened_at);
        self.node.metrics.csk_epoch.set(chain.epoch as i64);
        self.node.metrics.csk_epoch_acquire_seconds.set(seconds);
        info!(target: "attestmesh::csk", epoch = chain.epoch, seconds_since_opened = seconds, "holding the CSK of the current epoch");
        Ok(())
    }

    /// The current epoch's key: derived by its originator, pulled by everyone else.
    async fn acquire(&mut self, chain: &EpochInfo) -> Result<Zeroizing<[u8; 32]>, String> {
        if chain.originator == self.self_id {
            let key = self.derive(chain.epoch).await?;
            let mine = csk::commitment_of(&key);
            match chain.commitment {
                Some(on_chain) if on_chain == mine => {
                    info!(target: "attestmesh::csk", epoch = chain.epoch, "CSK re-derived from the TEE and matches the commitment");
                    return Ok(key);
                }
                Some(_) => {
                    // Not expected (the originator's key is deterministic); pull like everyone else.
                    warn!(target: "attestmesh::csk", epoch = chain.epoch, "the on-chain commitment is not this TEE's key; pulling from peers");
                }
                None => {
                    // The outbox sends it (with envelopes owed, or alone).
                    *self.commit_wanted.lock().await = Some((chain.epoch, mine));
                    return Err("waiting for this node's commitment to be included".into());
                }
            }
        }
        let commitment = chain.commitment.ok_or_else(|| {
            format!(
                "waiting for its originator (member {}) to commit it",
                chain.originator
            )
        })?;
        self.pull(chain.epoch, commitment, chain.originator).await
    }

    /// Field note 7, per epoch: the originator's key comes from its own TEE, never from a peer.
    async fn derive(&mut self, epoch: u64) -> Result<Zeroizing<[u8; 32]>, String> {
        if let Some((derived_epoch, key)) = &self.derived
            && *derived_epoch == epoch
        {
            return Ok(key.clone());
        }
        let reply = self
            .dstack
            .get_key(&csk::epoch_key_path(epoch), csk::CSK_PURPOSE)
            .await
            .map_err(|e| format!("dstack GetKey: {e}"))?;
        let key = Zeroizing::new(*reply.key.as_bytes());
        self.derived = Some((epoch, key.clone()));
        Ok(key)
    }

    /// Pulls `epoch`'s key from up to [`PULL_FANOUT`] live peers, `first` (the originator)
    /// before the others, the others in a random order.
    async fn pull(
        &self,
        epoch: u64,
        commitment: B256,
        first: u64,
    ) -> Result<Zeroizing<[u8; 32]>, String> {
        let mut live: Vec<u64> = self
            .liveness
            .tracker
            .lock()
            .await
            .live_peers(Instant::now())
            .into_iter()
            .collect();
        if live.is_empty() {
            return Err("waiting for a live peer to pull it from".into());
        }
        let offset = (rand_core::RngCore::next_u64(&mut rand_core::OsRng) as usize) % live.len();
        live.rotate_left(offset);
        if let Some(at) = live.iter().position(|id| *id == first) {
            live[..=at].rotate_right(1);
        }
        let mut candidates = Vec::new();
        for id in live.into_iter().take(PULL_FANOUT) {
            if let Some(peer) = self.node.cluster.member(id).await {
                candidates.push(Candidate {
                    member_id: id,
                    address: SocketAddr::V4(SocketAddrV4::new(peer.mesh_ip, csk::CSK_PORT)),
                    ed25519: peer.ed25519,
                });
            }
        }
        csk::pull(&self.local, &candidates, epoch, commitment)
            .await
            .map_err(|failures| {
                format!(
                    "no live peer handed it over: {}",
                    failures
                        .iter()
                        .map(|(id, e)| format!("member {id}: {e}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            })
    }

    /// After a restart (or a late join) inside a grace window, the previous epoch's key too, so
    /// the app can still read what it encrypted with it. Best effort, every few seconds.
    async fn recover_previous(&mut self, chain: &EpochInfo, now_s: u64) {
        let Some(previous) = chain.previous else {
            return;
        };
        if now_s >= previous.until
            || self.node.csk.holds_previous(previous.epoch).await
            || self
                .previous_tried
                .is_some_and(|at| at.elapsed() < PREVIOUS_RETRY)
        {
            return;
        }
        self.previous_tried = Some(Instant::now());
        // The originator of the previous epoch re-derives it; the others pull it.
        let derived = self
            .dstack
            .get_key(&csk::epoch_key_path(previous.epoch), csk::CSK_PURPOSE)
            .await
            .ok()
            .map(|reply| Zeroizing::new(*reply.key.as_bytes()))
            .filter(|key| csk::commitment_of(key) == previous.commitment);
        let key = match derived {
            Some(key) => Ok(key),
            None => {
                self.pull(previous.epoch, previous.commitment, chain.originator)
                    .await
            }
        };
        match key {
            Ok(key) => {
                self.node
                    .csk
                    .install_previous(
                        csk::EpochKey {
                            epoch: previous.epoch,
                            key: csk::SharedKey::new(key),
                        },
                        previous.until,
                    )
                    .await;
                info!(target: "attestmesh::csk", epoch = previous.epoch, until = previous.until, "holding the previous epoch's CSK for its grace window");
            }
            Err(waiting) => {
                debug!(target: "attestmesh::csk", epoch = previous.epoch, %waiting, "the previous epoch's CSK is not held; retrying")
            }
        }
    }
}
