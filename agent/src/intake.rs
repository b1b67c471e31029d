//! Event intake. Chain-log polling always runs (bounded ranges, a confirmation depth, reorg
//! checks, in order); the indexer's verified push subscription feeds the same channel. The
//! consumer de-duplicates, so either path alone is sufficient and both together are harmless.

use std::time::Duration;

use alloy::primitives::{Address, B256, Bytes};
use alloy::rpc::types::{BlockNumberOrTag, Filter, Log};
use alloy::sol_types::SolEvent;
use attestmesh_bindings::cluster::Cluster;
use attestmesh_chain::ChainClient;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::metrics::Metrics;
use crate::targets::CHAIN;

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

/// Polls the chain and sends events in chain order until `events` closes.
pub async fn poll(
    chain: ChainClient,
    config: PollConfig,
    events: mpsc::Sender<IntakeEvent>,
    metrics: Metrics,
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
            &chain,
            &config,
            &membership,
            &messages,
            &mut next_block,
            &mut checkpoint,
            &events,
        )
        .await
        {
            Ok(()) => {}
            Err(PollError::Closed) => return,
            Err(PollError::Chain(error)) => {
                metrics.chain_poll_errors.inc();
                warn!(target: CHAIN, error = %error, next_block, "chain-log poll failed; retrying next interval");
            }
        }
        tokio::time::sleep(config.interval).await;
    }
}

enum PollError {
    Closed,
    Chain(attestmesh_chain::ChainError),
}

impl From<attestmesh_chain::ChainError> for PollError {
    fn from(e: attestmesh_chain::ChainError) -> Self {
        PollError::Chain(e)
    }
}

async fn block_hash(
    chain: &ChainClient,
    number: u64,
) -> Result<Option<B256>, attestmesh_chain::ChainError> {
    use alloy::providers::Provider;
    let block = chain
        .provider()
        .get_block_by_number(BlockNumberOrTag::Number(number))
        .await
        .map_err(|source| attestmesh_chain::ChainError::Transport {
            call: "eth_getBlockByNumber".into(),
            endpoint: chain.endpoint().to_string(),
            source,
        })?;
    Ok(block.map(|b| b.header.hash))
}

async fn poll_once(
    chain: &ChainClient,
    config: &PollConfig,
    membership: &Filter,
    messages: &Filter,
    next_block: &mut u64,
    checkpoint: &mut Option<(u64, B256)>,
    events: &mpsc::Sender<IntakeEvent>,
) -> Result<(), PollError> {
    if let Some((number, hash)) = *checkpoint
        && block_hash(chain, number).await? != Some(hash)
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
    let head = chain.block_number().await?;
    let safe = head.saturating_sub(config.confirmations);
    while *next_block <= safe {
        let to = safe.min(*next_block + config.max_range - 1);
        let range_members = membership.clone().from_block(*next_block).to_block(to);
        let range_messages = messages.clone().from_block(*next_block).to_block(to);
        let mut logs = chain.logs(&range_members).await?;
        logs.extend(chain.logs(&range_messages).await?);
        logs.sort_by_key(|log| (log.block_number, log.log_index));
        debug!(target: CHAIN, from = *next_block, to, logs = logs.len(), "polled cluster logs");
        for event in logs.iter().filter_map(decode_log) {
            events.send(event).await.map_err(|_| PollError::Closed)?;
        }
        let hash = block_hash(chain, to).await?;
        *checkpoint = hash.map(|h| (to, h));
        *next_block = to + 1;
    }
    Ok(())
}
