//! Event intake. Chain-log polling always runs (bounded ranges, a confirmation depth, reorg
//! checks, in order); the indexer's verified push subscription feeds the same channel. The
//! consumer de-duplicates, so either path alone is sufficient and both together are harmless.

use std::time::Duration;

use alloy::primitives::{Address, B256, Bytes};
use alloy::rpc::types::{Filter, Log};
use alloy::sol_types::SolEvent;
use attestmesh_bindings::cluster::Cluster;
use attestmesh_chain::{ChainView, QuorumError};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::targets::CHAIN;

/// What the poller counts. The agent's [`Metrics`](crate::metrics::Metrics) holds these same
/// counters and exports them (`chain_poll_errors`, `messages_dropped{reason="undecodable_log"}`).
#[derive(Debug, Clone, Default)]
pub struct IntakeCounters {
    /// Polls that failed (the next interval retries).
    pub poll_errors: Counter,
    /// Logs the node asked for that do not decode.
    pub undecodable_logs: Counter,
}

/// Where an event came from on chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provenance {
    pub block_number: u64,
    pub block_hash: B256,
    pub tx_hash: B256,
    pub log_index: u64,
}

/// An event the node acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntakeEvent {
    /// A member joined or was revoked, a CSK epoch opened or was committed: re-read the CSK
    /// epoch and the member set.
    ClusterChanged { provenance: Provenance },
    /// A sealed message to this node.
    Message {
        sender_id: u64,
        recipient_id: u64,
        envelope_id: B256,
        ciphertext: Bytes,
        provenance: Provenance,
    },
    /// The chain reorganized below events already applied: re-read everything.
    Reorged { from_block: u64 },
}

/// Polling parameters.
#[derive(Debug, Clone)]
pub struct PollConfig {
    pub cluster: Address,
    pub self_member_id: u64,
    pub start_block: u64,
    pub interval: Duration,
    pub confirmations: u64,
    pub max_range: u64,
}

/// The events after which the node re-reads the CSK epoch and the member set.
pub const CLUSTER_STATE_EVENTS: [B256; 4] = [
    Cluster::MemberRegistered::SIGNATURE_HASH,
    Cluster::MemberRevoked::SIGNATURE_HASH,
    Cluster::CskEpochOpened::SIGNATURE_HASH,
    Cluster::ClusterSharedKeyCommitted::SIGNATURE_HASH,
];

/// Decodes one cluster log into an event (None for logs the node does not act on).
pub fn decode_log(log: &Log) -> Option<IntakeEvent> {
    let provenance = Provenance {
        block_number: log.block_number?,
        block_hash: log.block_hash?,
        tx_hash: log.transaction_hash?,
        log_index: log.log_index?,
    };
    let topic = *log.topic0()?;
    if CLUSTER_STATE_EVENTS.contains(&topic) {
        return Some(IntakeEvent::ClusterChanged { provenance });
    }
    if topic == Cluster::MessageSent::SIGNATURE_HASH {
        let event = Cluster::MessageSent::decode_log_data(log.data()).ok()?;
        return Some(IntakeEvent::Message {
            sender_id: event.senderMemberId,
            recipient_id: event.recipientMemberId,
            envelope_id: event.envelopeId,
            ciphertext: event.ciphertext,
            provenance,
        });
    }
    None
}

/// Polls the chain and sends events in chain order until `events` closes. Every range is read
/// from a quorum of the chain RPC endpoints, which must return the same logs and the same hash
/// for the range's last block: one lying endpoint can neither add nor hide an event.
pub async fn poll(
    view: ChainView,
    config: PollConfig,
    events: mpsc::Sender<IntakeEvent>,
    counters: IntakeCounters,
) {
    let membership = Filter::new()
        .address(config.cluster)
        .event_signature(CLUSTER_STATE_EVENTS.to_vec());
    let messages = Filter::new()
        .address(config.cluster)
        .event_signature(Cluster::MessageSent::SIGNATURE_HASH)
        .topic1(B256::from(alloy::primitives::U256::from(
            config.self_member_id,
        )));
    let mut next_block = config.start_block;
    // The last block applied and its hash: if the hash changes, the chain reorganized.
    let mut checkpoint: Option<(u64, B256)> = None;
    loop {
        match poll_once(
            &view,
            &config,
            &membership,
            &messages,
            &mut next_block,
            &mut checkpoint,
            &events,
            &counters,
        )
        .await
        {
            Ok(()) => {}
            Err(PollError::Closed) => return,
            Err(PollError::Chain(error)) => {
                counters.poll_errors.inc();
                warn!(target: CHAIN, error = %error, next_block, "chain-log poll failed; retrying next interval");
            }
        }
        tokio::time::sleep(config.interval).await;
    }
}

enum PollError {
    Closed,
    Chain(QuorumError),
}

impl From<QuorumError> for PollError {
    fn from(e: QuorumError) -> Self {
        PollError::Chain(e)
    }
}

/// Sends the events of `logs` in order. Every log was asked for by topic, so one that does not
/// decode (no block or transaction fields, malformed data) is an anomaly: it is counted
/// (`attestmesh_agent_messages_dropped_total{reason="undecodable_log"}`) and logged, never
/// skipped silently.
async fn forward(
    logs: &[Log],
    events: &mpsc::Sender<IntakeEvent>,
    counters: &IntakeCounters,
) -> Result<(), PollError> {
    for log in logs {
        match decode_log(log) {
            Some(event) => events.send(event).await.map_err(|_| PollError::Closed)?,
            None => {
                counters.undecodable_logs.inc();
                warn!(target: CHAIN, block = ?log.block_number, tx = ?log.transaction_hash, log_index = ?log.log_index, topic = ?log.topic0(), "a cluster log the node asked for does not decode (missing provenance or malformed data); skipped");
            }
        }
    }
    Ok(())
}

/// The hash of block `number` as a quorum of endpoints has it now, read at their agreed head:
/// `None` when they agree the block is gone (a reorg or revert took the chain below it). Reading
/// at `number` itself would fail for a block that no longer exists, and the reorg would never
/// be noticed.
async fn agreed_hash(view: &ChainView, number: u64) -> Result<Option<B256>, QuorumError> {
    Ok(view
        .read("an applied block's hash", |endpoint, _| async move {
            attestmesh_chain::block_hash(&endpoint, number).await
        })
        .await?
        .value)
}

#[allow(clippy::too_many_arguments)]
async fn poll_once(
    view: &ChainView,
    config: &PollConfig,
    membership: &Filter,
    messages: &Filter,
    next_block: &mut u64,
    checkpoint: &mut Option<(u64, B256)>,
    events: &mpsc::Sender<IntakeEvent>,
    counters: &IntakeCounters,
) -> Result<(), PollError> {
    if let Some((number, hash)) = *checkpoint
        && agreed_hash(view, number).await? != Some(hash)
    {
        // Re-read a window below the changed block; the consumer de-duplicates.
        let from = number
            .saturating_sub(config.confirmations.max(1) * 4 + 16)
            .max(config.start_block);
        warn!(target: CHAIN, block = number, rewind_to = from, "chain reorganized below applied events; re-reading");
        *next_block = from;
        *checkpoint = None;
        events
            .send(IntakeEvent::Reorged { from_block: from })
            .await
            .map_err(|_| PollError::Closed)?;
    }
    let head = view.quorum_head("the chain head").await?;
    let safe = head.saturating_sub(config.confirmations);
    while *next_block <= safe {
        let to = safe.min(*next_block + config.max_range - 1);
        let range_members = membership.clone().from_block(*next_block).to_block(to);
        let range_messages = messages.clone().from_block(*next_block).to_block(to);
        let agreed = view
            .read_at("the cluster's logs", to, |endpoint, _| {
                let (range_members, range_messages) =
                    (range_members.clone(), range_messages.clone());
                async move {
                    let mut logs = endpoint.logs(&range_members).await?;
                    logs.extend(endpoint.logs(&range_messages).await?);
                    logs.sort_by_key(|log| (log.block_number, log.log_index));
                    Ok(logs)
                }
            })
            .await?;
        debug!(target: CHAIN, from = *next_block, to, logs = agreed.value.len(), "polled cluster logs");
        forward(&agreed.value, events, counters).await?;
        *checkpoint = Some((to, agreed.hash));
        *next_block = to + 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message_log(data: Vec<u8>, with_provenance: bool) -> Log {
        let inner = alloy::primitives::Log::new_unchecked(
            Address::repeat_byte(1),
            vec![
                Cluster::MessageSent::SIGNATURE_HASH,
                B256::from(alloy::primitives::U256::from(2)),
                B256::from(alloy::primitives::U256::from(3)),
                B256::repeat_byte(4),
            ],
            data.into(),
        );
        Log {
            inner,
            block_hash: with_provenance.then(|| B256::repeat_byte(5)),
            block_number: with_provenance.then_some(7),
            block_timestamp: None,
            transaction_hash: with_provenance.then(|| B256::repeat_byte(6)),
            transaction_index: Some(0),
            log_index: with_provenance.then_some(0),
            removed: false,
        }
    }

    /// A log without provenance or with data that does not decode is counted and skipped; the
    /// good ones around it are delivered in order.
    #[tokio::test]
    async fn undecodable_logs_are_counted_not_dropped_silently() {
        let good = Cluster::MessageSent {
            recipientMemberId: 2,
            senderMemberId: 3,
            envelopeId: B256::repeat_byte(4),
            ciphertext: vec![1, 2, 3].into(),
        }
        .encode_data();
        let logs = vec![
            message_log(good.clone(), true),
            message_log(vec![0xff; 5], true),
            message_log(good.clone(), false),
            message_log(good, true),
        ];
        let (tx, mut rx) = mpsc::channel(8);
        let counters = IntakeCounters::default();
        assert!(forward(&logs, &tx, &counters).await.is_ok());
        drop(tx);
        let mut delivered = 0;
        while rx.recv().await.is_some() {
            delivered += 1;
        }
        assert_eq!(delivered, 2);
        assert_eq!(counters.undecodable_logs.get(), 2);
    }
}
