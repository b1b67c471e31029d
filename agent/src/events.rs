//! Applies what intake delivers to the node's state: the member set and the CSK epoch are
//! re-read at a block a quorum of chain endpoints agrees on (and re-read until a read succeeds),
//! messages addressed to this node are opened into the inbox, endpoint envelopes are recorded.

use std::time::Duration;

use alloy::primitives::{B256, Bytes};
use attestmesh_chain::QuorumError;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::cluster::{EpochInfo, MemberInfo, PreviousEpoch};
use crate::envelope::EndpointEnvelope;
use crate::health::Phase;
use crate::inbox::InboundMessage;
use crate::intake::{IntakeEvent, Provenance};
use crate::messages::{self, Context, Kind};
use crate::state::Node;
use crate::targets::{CHAIN, PEERS};

/// Re-reads the CSK epoch and the member set, both at one block a quorum of the chain RPC
/// endpoints agrees on (idempotent, so reorgs and duplicate events are harmless). On failure the
/// cached state is marked stale (the CSK service refuses to hand out keys meanwhile) and
/// [`keep_view_fresh`] retries until a read succeeds. Returns whether it succeeded.
pub(crate) async fn refresh_members(node: &Node) -> bool {
    match read_cluster_state(node).await {
        Ok(agreed) => {
            let (epoch, members) = agreed.value;
            if node.cluster.csk_epoch().await.map(|e| e.epoch) != Some(epoch.epoch) {
                info!(target: CHAIN, epoch = epoch.epoch, originator = epoch.originator, revoked_member = epoch.revoked_member, block = agreed.block, "CSK epoch on chain");
            }
            node.metrics.csk_chain_epoch.set(epoch.epoch as i64);
            node.cluster.set_csk_epoch(epoch).await;
            node.cluster.apply_members(&members).await;
            node.metrics
                .members
                .set(members.iter().filter(|m| m.active).count() as i64);
            if node.cluster.view_problem().await.is_some() {
                info!(target: CHAIN, block = agreed.block, "the member set and the CSK epoch are read again");
            }
            node.cluster.set_view_problem(None).await;
            node.metrics.chain_view_stale.set(0);
            true
        }
        Err(error) => {
            let reason = match &error {
                QuorumError::Disagreement { .. } => "disagreement",
                QuorumError::Unavailable { .. } => "unavailable",
            };
            node.metrics
                .chain_view_failures
                .get_or_create(&vec![("reason".to_string(), reason.to_string())])
                .inc();
            node.metrics.chain_view_stale.set(1);
            warn!(target: CHAIN, %error, "reading the member set and the CSK epoch failed; retrying (no CSK is handed out meanwhile)");
            node.cluster
                .set_view_problem(Some(format!("the member set may be stale: {error}")))
                .await;
            false
        }
    }
}

/// Retries a failed refresh with a bounded backoff until it succeeds (a failed read must never
/// wait for the next membership event: a revoked member would stay active in the cache).
pub(crate) async fn keep_view_fresh(node: Node) {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(8);
    let mut delay = FIRST;
    loop {
        tokio::time::sleep(delay).await;
        if node.cluster.view_problem().await.is_none() {
            delay = FIRST;
            continue;
        }
        if refresh_members(&node).await {
            delay = FIRST;
        } else {
            delay = (delay * 2).min(MAX);
        }
    }
}

/// The CSK epoch (with the previous epoch's commitment inside a grace window) and every member,
/// read at one block hash that `k` endpoints agree on.
async fn read_cluster_state(
    node: &Node,
) -> Result<attestmesh_chain::Agreed<(EpochInfo, Vec<MemberInfo>)>, QuorumError> {
    let cluster = node.cluster_address;
    node.view
        .read(
            "the member set and the CSK epoch",
            |endpoint, at| async move {
                let c = endpoint.cluster(cluster);
                let current = c
                    .currentCskEpoch()
                    .block(at)
                    .call()
                    .await
                    .map_err(|e| endpoint.call_error("Cluster.currentCskEpoch", e))?;
                let previous = if current.previousKeyUntil == 0 {
                    None
                } else {
                    let record = c
                        .cskEpoch(current.previousEpoch)
                        .block(at)
                        .call()
                        .await
                        .map_err(|e| endpoint.call_error("Cluster.cskEpoch", e))?;
                    Some(PreviousEpoch {
                        epoch: current.previousEpoch,
                        until: current.previousKeyUntil,
                        commitment: record.commitment,
                    })
                };
                let count = c
                    .memberCount()
                    .block(at)
                    .call()
                    .await
                    .map_err(|e| endpoint.call_error("Cluster.memberCount", e))?;
                let members = c
                    .listMembers(1, count)
                    .block(at)
                    .call()
                    .await
                    .map_err(|e| endpoint.call_error("Cluster.listMembers", e))?;
                let epoch = EpochInfo {
                    epoch: current.epoch,
                    originator: current.originator,
                    revoked_member: current.revokedMember,
                    opened_at: current.openedAt,
                    commitment: (current.commitment != B256::ZERO).then_some(current.commitment),
                    previous,
                };
                Ok((
                    epoch,
                    members.iter().map(MemberInfo::from).collect::<Vec<_>>(),
                ))
            },
        )
        .await
}

/// waiting-peers while this node is alone; wg-configuring once a peer exists (the mesh takes
/// it from there).
pub(crate) async fn update_peer_phase(node: &Node) {
    if node.mesh_enabled {
        // The mesh drives the phases once the node is registered.
        return;
    }
    let phase = node.health.snapshot().phase;
    if phase > Phase::WgConfiguring || phase < Phase::Subscribing {
        return;
    }
    let peers = node.cluster.active_peers().await;
    let (next, waiting) = if peers.is_empty() {
        (
            Phase::WaitingPeers,
            "no other members on chain yet".to_string(),
        )
    } else {
        (
            Phase::WgConfiguring,
            format!("{} peer(s) on chain; configuring the mesh", peers.len()),
        )
    };
    node.health.set_phase(next, waiting);
    node.metrics.set_phase(next);
}

/// Applies intake events in order until the channel closes, de-duplicating what both sources
/// deliver.
pub(crate) async fn consume(node: Node, mut events: mpsc::Receiver<IntakeEvent>) {
    while let Some(event) = events.recv().await {
        match event {
            IntakeEvent::ClusterChanged { provenance } => {
                debug!(target: CHAIN, block = provenance.block_number, "membership or CSK epoch event");
                refresh_members(&node).await;
                update_peer_phase(&node).await;
            }
            IntakeEvent::Reorged { from_block } => {
                warn!(target: CHAIN, from_block, "re-reading state after a reorg");
                refresh_members(&node).await;
                update_peer_phase(&node).await;
            }
            IntakeEvent::Message {
                sender_id,
                recipient_id,
                envelope_id,
                ciphertext,
                provenance,
            } => {
                deliver(
                    &node,
                    sender_id,
                    recipient_id,
                    envelope_id,
                    &ciphertext,
                    provenance,
                )
                .await;
            }
        }
    }
}

async fn deliver(
    node: &Node,
    sender_id: u64,
    recipient_id: u64,
    envelope_id: B256,
    ciphertext: &Bytes,
    provenance: Provenance,
) {
    if Some(recipient_id) != node.cluster.self_id().await {
        return;
    }
    let sender = match node.cluster.member(sender_id).await {
        Some(sender) => sender,
        None => {
            refresh_members(node).await;
            match node.cluster.member(sender_id).await {
                Some(sender) => sender,
                None => {
                    node.metrics.dropped("unknown_sender");
                    warn!(target: PEERS, sender_id, %envelope_id, "message from an unknown member dropped");
                    return;
                }
            }
        }
    };
    let context = Context {
        chain_id: node.chain.chain_id(),
        cluster: node.cluster_address.into_array(),
        sender_id,
        recipient_id,
        envelope_id: envelope_id.0,
    };
    match messages::open(&node.identity.x25519, &sender.ed25519, &context, ciphertext) {
        Ok((Kind::App, payload)) => {
            let message = InboundMessage {
                sender_id,
                payload,
                envelope_id,
                block_number: provenance.block_number,
                tx_hash: provenance.tx_hash,
                log_index: provenance.log_index,
            };
            if node.inbox.push(message).await {
                node.metrics.messages_received.inc();
                info!(target: PEERS, sender_id, %envelope_id, block = provenance.block_number, "message delivered");
            }
        }
        Ok((Kind::ClusterSharedKey, _)) => {
            // The CSK travels only over the mesh; one on chain is a protocol violation.
            node.metrics.dropped("csk_on_chain");
            error!(target: PEERS, sender_id, %envelope_id, "a CSK-kind message on chain was dropped");
        }
        Ok((Kind::Endpoint, payload)) => match EndpointEnvelope::decode(&payload) {
            Ok(envelope) if envelope.member_id == sender_id => {
                debug!(target: PEERS, sender_id, port = envelope.transport_port, "endpoint envelope received");
                node.cluster.set_endpoint(sender_id, envelope).await;
            }
            Ok(envelope) => {
                node.metrics.dropped("endpoint_member_mismatch");
                warn!(target: PEERS, sender_id, claimed = envelope.member_id, "endpoint envelope names another member; dropped");
            }
            Err(e) => {
                node.metrics.dropped("endpoint_malformed");
                warn!(target: PEERS, sender_id, error = %e, "endpoint envelope dropped");
            }
        },
        Err(e) => {
            node.metrics.dropped("rejected");
            error!(target: PEERS, sender_id, %envelope_id, error = %e, tx = %provenance.tx_hash, "inbound message dropped");
        }
    }
}
