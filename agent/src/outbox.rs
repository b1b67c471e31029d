//! What this node owes the chain once it is a member: an endpoint envelope for every peer and,
//! for the originator of the current CSK epoch, its commitment. Sent in as few sponsored operations as the chain
//! allows, so a cluster forms in O(1) blocks whatever its size:
//!
//! * every envelope owed is sealed into one `MessageFacet.sendBatch` (chunked at
//!   [`MAX_BATCH`] entries, and halved after a batch that reverted, e.g. out of gas);
//! * the originator's commitment rides in the same operation (`MemberAccount.executeBatch`);
//! * envelopes owed to newcomers that appear while a batch is in flight go in the next one;
//! * envelopes travel on their own ERC-4337 nonce key ([`ENVELOPE_LANE`]), so they never wait
//!   for an app message's receipt, nor it for theirs ([`MESSAGE_LANE`]).
//!
//! An envelope counts as delivered only when the chain shows it sent by this node
//! (`isEnvelopeUsed(recipient, self, id)`, keyed by sender: no other member can burn the id).
//! Once everything is delivered the outbox sends nothing and reads nothing: a whole cluster
//! costs zero sponsored operations per hour.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use alloy::primitives::{B256, Bytes};
use alloy::sol_types::SolCall;
use attestmesh_bindings::cluster::Cluster;
use attestmesh_bindings::member_account::MemberAccount;
use attestmesh_chain::{NonceKey, UserOpError};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::cluster::MemberInfo;
use crate::envelope::EndpointEnvelope;
use crate::messages::{self, Context, Kind};
use crate::metrics::Metrics;
use crate::state::Node;
use crate::targets::PEERS;

/// Nonce key of the registration (the bootstrap operation; key 0).
pub const REGISTRATION_LANE: NonceKey = NonceKey::DEFAULT;
/// Nonce key of endpoint envelopes and the CSK commitment.
pub const ENVELOPE_LANE: NonceKey = NonceKey::new(1);
/// Nonce key of the app's messages.
pub const MESSAGE_LANE: NonceKey = NonceKey::new(2);

/// The Message facet's cap on one batch (`maxBatchSize()`).
pub const MAX_BATCH: usize = 64;
/// How long to wait before trying again after a failed operation.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// A CSK epoch and keccak256 of its key.
pub type EpochCommitment = (u64, B256);

/// One reconcile pass's view of what is owed.
#[derive(Debug)]
pub struct Owed<'a> {
    pub self_id: u64,
    pub envelope: &'a EndpointEnvelope,
    pub peers: &'a [MemberInfo],
    /// The commitment this node (the epoch's originator) must put on chain, if not there yet.
    pub commitment: Option<EpochCommitment>,
}

/// The outbox's state across reconcile passes.
#[derive(Debug)]
pub struct Outbox {
    /// Peers the chain shows this node's current envelope delivered to.
    delivered: BTreeSet<u64>,
    /// The operation in flight, if any (at most one: what appears meanwhile goes in the next).
    in_flight: Option<JoinHandle<Outcome>>,
    /// No new operation before this (after a failure).
    retry_at: Option<Instant>,
    /// Envelopes per operation; halved after a batch that reverted.
    chunk: usize,
    /// The commitment an included operation carried (the intake learns of it a poll later;
    /// until then it must not be sent again).
    committed: Option<EpochCommitment>,
}

impl Default for Outbox {
    fn default() -> Self {
        Self {
            delivered: BTreeSet::new(),
            in_flight: None,
            retry_at: None,
            chunk: MAX_BATCH,
            committed: None,
        }
    }
}

/// What one flush found and did.
#[derive(Debug)]
struct Outcome {
    /// Peers the chain showed delivered before sending.
    already_delivered: Vec<u64>,
    result: Result<(), FlushError>,
    /// How many envelopes the operation carried.
    carried: usize,
    /// The commitment an included operation carried.
    committed: Option<EpochCommitment>,
}

#[derive(Debug, thiserror::Error)]
enum FlushError {
    #[error("reading Cluster.isEnvelopeUsed failed: {0}")]
    Read(String),
    #[error("sealing the envelope to member {peer} failed: {message}")]
    Seal { peer: u64, message: String },
    #[error(transparent)]
    Operation(#[from] UserOpError),
}

impl Outbox {
    /// Collects a finished flush and starts the next one if something is owed. Called on every
    /// reconcile pass; never waits for the chain itself.
    pub async fn poll(&mut self, node: &Node, owed: Owed<'_>) {
        if let Some(task) = &self.in_flight {
            if !task.is_finished() {
                return;
            }
            if let Some(task) = self.in_flight.take() {
                match task.await {
                    Ok(outcome) => self.collect(&node.metrics, outcome),
                    Err(error) => {
                        warn!(target: PEERS, %error, "the envelope flush task failed; retrying");
                        self.retry_at = Some(Instant::now() + RETRY_AFTER);
                    }
                }
            }
        }
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        // Members that left are no longer owed; a member id is never reused.
        let active: BTreeSet<u64> = owed.peers.iter().map(|p| p.id).collect();
        self.delivered.retain(|id| active.contains(id));
        let pending: Vec<MemberInfo> = owed
            .peers
            .iter()
            .filter(|p| !self.delivered.contains(&p.id))
            .cloned()
            .collect();
        let commitment = owed.commitment.filter(|c| self.committed != Some(*c));
        if pending.is_empty() && commitment.is_none() {
            return;
        }
        let (node, envelope, self_id, chunk) = (
            node.clone(),
            owed.envelope.clone(),
            owed.self_id,
            self.chunk,
        );
        self.in_flight = Some(tokio::spawn(async move {
            flush(&node, &envelope, self_id, pending, commitment, chunk).await
        }));
    }

    fn collect(&mut self, metrics: &Metrics, outcome: Outcome) {
        self.delivered.extend(&outcome.already_delivered);
        if outcome.committed.is_some() {
            self.committed = outcome.committed;
        }
        match outcome.result {
            Ok(()) => {
                // What was just sent is confirmed delivered by the next pass's read.
                self.retry_at = None;
            }
            Err(FlushError::Operation(UserOpError::Reverted { hash, reason, .. }))
                if outcome.carried > 1 =>
            {
                // Out of gas or another whole-batch failure: split, never resend the same
                // batch for ever.
                self.chunk = (outcome.carried / 2).max(1);
                metrics.user_operations_failed.inc();
                warn!(target: PEERS, %hash, %reason, carried = outcome.carried, next_chunk = self.chunk, "envelope batch reverted; splitting it");
            }
            Err(error) => {
                if matches!(error, FlushError::Operation(_)) {
                    metrics.user_operations_failed.inc();
                }
                warn!(target: PEERS, %error, retry_in_s = RETRY_AFTER.as_secs(), "endpoint envelopes not delivered; will retry");
                self.retry_at = Some(Instant::now() + RETRY_AFTER);
            }
        }
    }
}

/// Reads which envelopes the chain already shows delivered, seals the rest, and sends them
/// (with the commitment, if owed) in one operation of at most `chunk` envelopes.
async fn flush(
    node: &Node,
    envelope: &EndpointEnvelope,
    self_id: u64,
    pending: Vec<MemberInfo>,
    commitment: Option<EpochCommitment>,
    chunk: usize,
) -> Outcome {
    let mut outcome = Outcome {
        already_delivered: Vec::new(),
        result: Ok(()),
        carried: 0,
        committed: None,
    };
    let mut to_send = Vec::new();
    let mut reads = tokio::task::JoinSet::new();
    for peer in pending {
        let (node, id) = (node.clone(), envelope.envelope_id(self_id, peer.id));
        reads.spawn(async move {
            let used = node
                .chain
                .cluster(node.cluster_address)
                .isEnvelopeUsed(peer.id, self_id, id)
                .call()
                .await
                .map_err(|e| {
                    node.chain
                        .call_error("Cluster.isEnvelopeUsed", e)
                        .to_string()
                });
            (peer, id, used)
        });
    }
    let mut sealed = BTreeMap::new();
    while let Some(read) = reads.join_next().await {
        let (peer, id, used) = match read {
            Ok(read) => read,
            Err(error) => {
                outcome.result = Err(FlushError::Read(error.to_string()));
                return outcome;
            }
        };
        match used {
            Ok(true) => {
                debug!(target: PEERS, peer = peer.id, "endpoint envelope on chain");
                outcome.already_delivered.push(peer.id);
            }
            Ok(false) => {
                sealed.insert(peer.id, (peer, id));
            }
            Err(error) => {
                outcome.result = Err(FlushError::Read(error));
                return outcome;
            }
        }
    }
    for (peer, id) in sealed.into_values().take(chunk) {
        let context = Context {
            chain_id: node.chain.chain_id(),
            cluster: node.cluster_address.into_array(),
            sender_id: self_id,
            recipient_id: peer.id,
            envelope_id: id.0,
        };
        match messages::seal(
            &node.identity.ed25519,
            &peer.x25519,
            &context,
            Kind::Endpoint,
            &envelope.encode(),
        ) {
            Ok(ciphertext) => to_send.push(Cluster::Envelope {
                recipientMemberId: peer.id,
                envelopeId: id,
                ciphertext: ciphertext.into(),
            }),
            Err(e) => {
                outcome.result = Err(FlushError::Seal {
                    peer: peer.id,
                    message: e.to_string(),
                });
                return outcome;
            }
        }
    }
    let Some(call) = operation(commitment, &to_send) else {
        return outcome;
    };
    outcome.carried = to_send.len();
    let recipients: Vec<u64> = to_send.iter().map(|e| e.recipientMemberId).collect();
    match node.sender.send_on(ENVELOPE_LANE, call, None).await {
        Ok(receipt) => {
            outcome.committed = commitment;
            node.metrics
                .operation_included(match (commitment.is_some(), recipients.is_empty()) {
                    (true, false) => "csk_commitment_and_envelopes",
                    (true, true) => "csk_commitment",
                    _ => "envelopes",
                });
            info!(
                target: PEERS,
                hash = %receipt.user_op_hash,
                ?recipients,
                commitment = ?commitment,
                "endpoint envelopes sent in one operation"
            );
        }
        Err(error) => outcome.result = Err(error.into()),
    }
    outcome
}

/// The account call that carries `envelopes` and, if given, the CSK commitment: one
/// `execute` when there is one cluster call, `executeBatch` when there are two.
fn operation(
    commitment: Option<EpochCommitment>,
    envelopes: &[Cluster::Envelope],
) -> Option<Bytes> {
    let mut calls: Vec<Bytes> = Vec::new();
    if let Some((epoch, commitment)) = commitment {
        calls.push(
            Cluster::commitClusterSharedKeyCall { epoch, commitment }
                .abi_encode()
                .into(),
        );
    }
    if !envelopes.is_empty() {
        calls.push(
            Cluster::sendBatchCall {
                envelopes: envelopes.to_vec(),
            }
            .abi_encode()
            .into(),
        );
    }
    match calls.len() {
        0 => None,
        1 => Some(
            MemberAccount::executeCall {
                data: calls.remove(0),
            }
            .abi_encode()
            .into(),
        ),
        _ => Some(
            MemberAccount::executeBatchCall { calls }
                .abi_encode()
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attestmesh_types::UserOperationReceipt;

    fn reverted(carried: usize) -> Outcome {
        let receipt: UserOperationReceipt = serde_json::from_value(serde_json::json!({
            "userOpHash": B256::repeat_byte(1),
            "entryPoint": alloy::primitives::Address::repeat_byte(2),
            "sender": alloy::primitives::Address::repeat_byte(3),
            "nonce": "0x1",
            "actualGasCost": "0x1",
            "actualGasUsed": "0x1",
            "success": false,
            "logs": [],
            "receipt": {"transactionHash": B256::repeat_byte(4), "blockNumber": "0x1"}
        }))
        .expect("a receipt");
        Outcome {
            already_delivered: Vec::new(),
            result: Err(FlushError::Operation(UserOpError::Reverted {
                hash: B256::repeat_byte(1),
                reason: "out of gas".into(),
                receipt: Box::new(receipt),
            })),
            carried,
            committed: None,
        }
    }

    /// A batch that reverts as a whole (e.g. out of gas) is split, never resent whole for ever:
    /// each revert halves what the next operation carries, down to one envelope.
    #[test]
    fn a_reverted_batch_is_split_until_single_envelopes() {
        let metrics = Metrics::new();
        let mut outbox = Outbox::default();
        assert_eq!(outbox.chunk, MAX_BATCH);
        let mut carried = 40;
        for expected in [20, 10, 5, 2, 1] {
            outbox.collect(&metrics, reverted(carried));
            assert_eq!(outbox.chunk, expected, "after a revert of {carried}");
            carried = outbox.chunk;
        }
        // A single envelope that reverts is not split further: it waits and is retried.
        outbox.collect(&metrics, reverted(1));
        assert_eq!(outbox.chunk, 1);
        assert!(
            outbox.retry_at.is_some(),
            "a failed single envelope waits before a retry"
        );
        assert_eq!(metrics.user_operations_failed.get(), 6);
    }

    /// Envelopes the chain already shows delivered are never owed again; an included
    /// commitment is never sent again while the intake has not yet seen it.
    #[test]
    fn delivered_envelopes_and_an_included_commitment_are_remembered() {
        let metrics = Metrics::new();
        let mut outbox = Outbox::default();
        outbox.collect(
            &metrics,
            Outcome {
                already_delivered: vec![2, 3],
                result: Ok(()),
                carried: 1,
                committed: Some((0, B256::repeat_byte(9))),
            },
        );
        assert_eq!(outbox.delivered, BTreeSet::from([2, 3]));
        assert_eq!(outbox.committed, Some((0, B256::repeat_byte(9))));
        assert!(outbox.retry_at.is_none());
    }
}
