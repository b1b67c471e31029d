//! The member set as the chain states it, and the peer events the app subscribes to.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use alloy::primitives::{Address, B256};
use attestmesh_bindings::cluster::Cluster::Member;
use tokio::sync::{RwLock, broadcast};
use tracing::info;

use crate::targets::PEERS;

/// A member as the agent uses it (converted from the binding once, here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: u64,
    pub account: Address,
    pub signer: Address,
    pub x25519: [u8; 32],
    pub ed25519: [u8; 32],
    pub wireguard: [u8; 32],
    pub mesh_ip: Ipv4Addr,
    pub active: bool,
}

impl From<&Member> for MemberInfo {
    fn from(m: &Member) -> Self {
        Self {
            id: m.id,
            account: m.account,
            signer: m.signer,
            x25519: m.keys.x25519.0,
            ed25519: m.keys.ed25519.0,
            wireguard: m.keys.wireguard.0,
            mesh_ip: Ipv4Addr::from(m.meshIp),
            // MemberStatus: 0 None, 1 Active, 2 Revoked.
            active: m.status == 1,
        }
    }
}

/// The chain's current CSK epoch, as this node last read it (`Cluster.currentCskEpoch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochInfo {
    pub epoch: u64,
    /// The member that derives and commits this epoch's key (0: none active).
    pub originator: u64,
    /// The member whose revocation opened it (0: none).
    pub revoked_member: u64,
    /// Chain time (unix seconds) of the opening.
    pub opened_at: u64,
    pub commitment: Option<B256>,
    /// The previous committed epoch still inside its grace window's record, if any.
    pub previous: Option<PreviousEpoch>,
}

/// The epoch before the current one whose key stays available until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreviousEpoch {
    pub epoch: u64,
    /// Unix seconds (chain time of the commitment plus the grace period).
    pub until: u64,
    /// Its commitment (read from `Cluster.cskEpoch(previous)`).
    pub commitment: B256,
}

/// What happened to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEventKind {
    Joined,
    Revoked,
    Live,
    Down,
}

/// A peer event for SubscribePeerEvents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerEvent {
    pub kind: PeerEventKind,
    pub member_id: u64,
    pub mesh_ip: Ipv4Addr,
    pub at_unix_ms: u64,
}

/// The cluster as this node knows it. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct ClusterState {
    inner: Arc<RwLock<View>>,
    events: broadcast::Sender<PeerEvent>,
}

#[derive(Debug, Default)]
struct View {
    self_id: Option<u64>,
    members: BTreeMap<u64, MemberInfo>,
    csk_epoch: Option<EpochInfo>,
    /// Why the last read of the member set and the CSK epoch failed (no quorum, RPC down), while
    /// it is being retried: the cached set may be stale, so no CSK is handed out meanwhile.
    view_problem: Option<String>,
    /// The latest endpoint envelope each member sent us.
    endpoints: BTreeMap<u64, crate::envelope::EndpointEnvelope>,
}

impl Default for ClusterState {
    fn default() -> Self {
        Self::new()
    }
}

impl ClusterState {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            inner: Arc::new(RwLock::new(View::default())),
            events,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<PeerEvent> {
        self.events.subscribe()
    }

    pub async fn set_self(&self, id: u64) {
        self.inner.write().await.self_id = Some(id);
    }

    pub async fn self_id(&self) -> Option<u64> {
        self.inner.read().await.self_id
    }

    /// Replaces the member set with the chain's, emitting joins and revocations. A member that
    /// vanished (a reorg undid its registration) is removed and reported as revoked.
    pub async fn apply_members(&self, members: &[MemberInfo]) {
        let mut view = self.inner.write().await;
        let mut next = BTreeMap::new();
        for member in members.iter().cloned() {
            let previous = view.members.get(&member.id).map(|m| m.active);
            match (previous, member.active) {
                (None, true) => self.emit(PeerEventKind::Joined, &member),
                (Some(true), false) => self.emit(PeerEventKind::Revoked, &member),
                _ => {}
            }
            next.insert(member.id, member);
        }
        for (id, gone) in &view.members {
            if !next.contains_key(id) && gone.active {
                info!(target: PEERS, member = id, "member vanished from the chain (reorg)");
                self.emit(PeerEventKind::Revoked, gone);
            }
        }
        view.members = next;
    }

    fn emit(&self, kind: PeerEventKind, member: &MemberInfo) {
        info!(target: PEERS, member = member.id, mesh_ip = %member.mesh_ip, event = ?kind, "member");
        let _ = self.events.send(PeerEvent {
            kind,
            member_id: member.id,
            mesh_ip: member.mesh_ip,
            at_unix_ms: now_ms(),
        });
    }

    /// Emits a liveness transition (the mesh reports these).
    pub async fn emit_liveness(&self, member_id: u64, live: bool) {
        let mesh_ip = match self.inner.read().await.members.get(&member_id) {
            Some(m) => m.mesh_ip,
            None => return,
        };
        let kind = if live {
            PeerEventKind::Live
        } else {
            PeerEventKind::Down
        };
        let _ = self.events.send(PeerEvent {
            kind,
            member_id,
            mesh_ip,
            at_unix_ms: now_ms(),
        });
    }

    pub async fn member(&self, id: u64) -> Option<MemberInfo> {
        self.inner.read().await.members.get(&id).cloned()
    }

    pub async fn members(&self) -> Vec<MemberInfo> {
        self.inner.read().await.members.values().cloned().collect()
    }

    /// Active members other than this node.
    pub async fn active_peers(&self) -> Vec<MemberInfo> {
        let view = self.inner.read().await;
        view.members
            .values()
            .filter(|m| m.active && Some(m.id) != view.self_id)
            .cloned()
            .collect()
    }

    /// Records a member's endpoint envelope (the intake delivers them in chain order).
    pub async fn set_endpoint(&self, member_id: u64, envelope: crate::envelope::EndpointEnvelope) {
        self.inner
            .write()
            .await
            .endpoints
            .insert(member_id, envelope);
    }

    pub async fn endpoint(&self, member_id: u64) -> Option<crate::envelope::EndpointEnvelope> {
        self.inner.read().await.endpoints.get(&member_id).cloned()
    }

    pub async fn set_csk_epoch(&self, epoch: EpochInfo) {
        self.inner.write().await.csk_epoch = Some(epoch);
    }

    /// Records whether the last read of the chain state succeeded (None) or why it failed.
    pub async fn set_view_problem(&self, problem: Option<String>) {
        self.inner.write().await.view_problem = problem;
    }

    /// Why the cached chain state may be stale, while a refresh is being retried.
    pub async fn view_problem(&self) -> Option<String> {
        self.inner.read().await.view_problem.clone()
    }

    /// The chain's current CSK epoch, once read.
    pub async fn csk_epoch(&self) -> Option<EpochInfo> {
        self.inner.read().await.csk_epoch
    }
}

pub fn now_ms() -> u64 {
    // A clock before 1970 is not an error worth failing an event over.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
