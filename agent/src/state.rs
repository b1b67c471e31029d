//! What every subsystem shares: the node's identity, its chain clients, the cluster as this node
//! sees it, its inbox, health and metrics. Built once by the boot sequence ([`crate::boot`]);
//! the API, the mesh and the event consumer hold a clone. Depends on no subsystem that uses it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use alloy::primitives::Address;
use attestmesh_chain::{ChainClient, ChainView, SponsoredSender};
use tokio::sync::RwLock;

use crate::cluster::ClusterState;
use crate::csk::CskKeys;
use crate::health::Health;
use crate::identity::Identity;
use crate::inbox::Inbox;
use crate::metrics::Metrics;

/// What every subsystem shares. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Node {
    pub identity: Arc<Identity>,
    /// The primary chain endpoint: writes, nonces and reads that only cost liveness if wrong.
    pub chain: ChainClient,
    /// Every configured endpoint: what decides membership, envelopes and CSK commitments is
    /// read from a quorum of them ([`attestmesh_chain::ChainView`]).
    pub view: ChainView,
    pub cluster_address: Address,
    pub sender: SponsoredSender,
    pub health: Health,
    pub cluster: ClusterState,
    pub inbox: Inbox,
    pub metrics: Metrics,
    /// The Cluster Shared Keys by epoch, in memory only (filled by the CSK subsystem).
    pub csk: CskKeys,
    /// Whether the mesh runs (it then drives the phases after waiting-peers).
    pub mesh_enabled: bool,
    /// Liveness per peer, as the heartbeats last showed it (written by the mesh).
    pub peer_liveness: Arc<RwLock<BTreeMap<u64, PeerLiveness>>>,
}

/// A peer's liveness for ListPeers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLiveness {
    pub live: bool,
    pub last_heartbeat: Option<Instant>,
}
