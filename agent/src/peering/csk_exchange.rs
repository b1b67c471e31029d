//! The CSK over the mesh: the responder (who may obtain a key, as this node's view of the chain
//! and of liveness says) and the acquirer that holds the current epoch's key.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::B256;
use attestmesh_dstack::DstackClient;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

use super::{CommitSlot, CskWaiting, Liveness, seconds_since};
use crate::cluster::EpochInfo;
use crate::csk::{self, Authority, Candidate, Local};
use crate::state::Node;

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

pub(super) async fn serve_csk(
    node: Node,
    mesh_ip: Ipv4Addr,
    local: Local,
    liveness: Arc<Liveness>,
) {
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
pub(super) struct Acquirer {
    pub(super) node: Node,
    pub(super) self_id: u64,
    pub(super) local: Local,
    pub(super) dstack: DstackClient,
    pub(super) liveness: Arc<Liveness>,
    pub(super) commit_wanted: CommitSlot,
    pub(super) waiting: CskWaiting,
    /// The key this node derived as an epoch's originator, until the chain shows it committed.
    pub(super) derived: Option<(u64, Zeroizing<[u8; 32]>)>,
    /// When the previous epoch's key was last sought (after a restart inside its grace window).
    pub(super) previous_tried: Option<Instant>,
}

impl Acquirer {
    pub(super) async fn run(mut self) {
        loop {
            self.pass().await;
            tokio::time::sleep(ACQUIRE_RETRY).await;
        }
    }

    /// One look: expire the previous key, obtain the current epoch's if not held.
    pub(super) async fn pass(&mut self) {
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
