//! The chain follower: from the start block to the head (catch-up), then block by block.
//!
//! * Logs of the factory (`ClusterCreated`) and of every cluster it created (`MemberRegistered`,
//!   `MemberRevoked`, `CskEpochOpened`, `ClusterSharedKeyCommitted`, `MessageSent`), one `eth_getLogs` per range;
//!   a cluster created inside a range has the rest of that range read for it at once.
//! * Ranges adapt to the RPC: a refusal ("range too large", "more than 10000 results", ...)
//!   halves the range (not below the largest range that worked) and retries; after a run of
//!   successes the range grows again — doubling, or halfway to the smallest refused range once
//!   one is known, so it settles just under a provider's fixed limit instead of bouncing off
//!   it. Refusals are forgotten after a long run of successes (result-size limits depend on
//!   how busy the blocks are), so the range can grow back to the configured maximum.
//! * Reorgs: the hash of every applied block that had events, and of the last block of every
//!   range, is kept for the last `reorg_window` blocks. Before a range is applied, the parent
//!   of its first block must be the hash recorded for the block before it; at the head, the
//!   last applied block is re-checked every poll. On a mismatch the follower walks back to the
//!   newest recorded block the chain still has, drops the events above it, pushes a signed
//!   reorg notice and re-reads from there.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256};
use alloy::rpc::types::{Filter, Log};
use alloy::sol_types::SolEvent;
use attestmesh_bindings::cluster::Cluster;
use attestmesh_bindings::factory::ClusterFactory;
use attestmesh_chain::ChainError;
use tracing::{debug, error, info, warn};

use crate::LOG_TARGET;
use crate::error::IndexerError;
use crate::rpc::{IndexerRpc, LogsError};
use crate::shutdown::Shutdown;
use crate::signing::EventSigner;
use crate::start_block::{self, StartBlockSearch};
use crate::status::{DROPPED_UNDECODABLE_CLUSTER_CREATED, Phase, StatusHandle};
use crate::store::{self, Store, StoredEvent};

/// Above this many clusters the log filter carries topics only and addresses are matched here
/// (providers cap the address list of a filter).
const MAX_FILTER_ADDRESSES: usize = 500;
/// Successful full-size ranges in a row before the range grows.
const GROW_AFTER: u32 = 4;
/// Successful ranges after which refusals are forgotten.
const FORGET_REFUSALS_AFTER: u32 = 256;

/// The eth_getLogs range and what the RPC has accepted and refused.
#[derive(Debug, Clone)]
pub struct LogRange {
    /// The next range to ask for, in blocks.
    pub current: u64,
    max: u64,
    /// The largest range accepted since refusals were last forgotten.
    good: u64,
    /// The smallest range refused since then.
    refused: Option<u64>,
    successes: u32,
    since_refusal: u32,
}

impl LogRange {
    pub fn new(initial: u64, max: u64) -> Self {
        let max = max.max(1);
        Self {
            current: initial.clamp(1, max),
            max,
            good: 0,
            refused: None,
            successes: 0,
            since_refusal: 0,
        }
    }

    /// A range of `blocks` was refused; returns the range to try next.
    pub fn refused(&mut self, blocks: u64) -> u64 {
        self.refused = Some(self.refused.map_or(blocks, |r| r.min(blocks)));
        self.successes = 0;
        self.since_refusal = 0;
        let fallback = if self.good < blocks { self.good } else { 0 };
        self.current = (blocks / 2).max(fallback).max(1);
        self.current
    }

    /// A range of `blocks` was served.
    pub fn served(&mut self, blocks: u64) {
        self.since_refusal = self.since_refusal.saturating_add(1);
        if self.since_refusal >= FORGET_REFUSALS_AFTER {
            self.refused = None;
            self.since_refusal = 0;
        }
        if blocks < self.current {
            // A short range (at the head): says nothing about the limit.
            return;
        }
        self.good = self.good.max(blocks);
        self.successes += 1;
        if self.successes < GROW_AFTER {
            return;
        }
        self.successes = 0;
        let mut next = self.current.saturating_mul(2).min(self.max);
        if let Some(refused) = self.refused {
            next = next.min(self.current + refused.saturating_sub(self.current) / 2);
        }
        self.current = next.max(self.current);
    }
}

/// How the follower runs.
#[derive(Debug, Clone)]
pub struct FollowerConfig {
    pub factory: Address,
    /// `None`: binary-search the factory's deploy block.
    pub start_block: Option<u64>,
    /// Blocks behind the head to stay (0 follows the head; reorgs are handled either way).
    pub confirmations: u64,
    pub poll_interval: Duration,
    pub initial_range: u64,
    pub max_range: u64,
    /// How many recent applied blocks' hashes are kept for reorg detection.
    pub reorg_window: usize,
    /// Backoff after a failed step.
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

/// The event signatures followed.
pub fn followed_topics() -> Vec<B256> {
    vec![
        ClusterFactory::ClusterCreated::SIGNATURE_HASH,
        Cluster::MemberRegistered::SIGNATURE_HASH,
        Cluster::MemberRevoked::SIGNATURE_HASH,
        Cluster::CskEpochOpened::SIGNATURE_HASH,
        Cluster::ClusterSharedKeyCommitted::SIGNATURE_HASH,
        Cluster::MessageSent::SIGNATURE_HASH,
    ]
}

/// Why one step failed.
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Logs(#[from] LogsError),
    #[error("{0}")]
    Inconsistent(String),
}

/// The follower's state.
struct Follower {
    rpc: IndexerRpc,
    signer: Arc<EventSigner>,
    store: Store,
    status: StatusHandle,
    config: FollowerConfig,
    start: u64,
    next: u64,
    range: LogRange,
    /// Recent applied blocks: (number, hash), oldest first.
    recent: VecDeque<(u64, B256)>,
    clusters: BTreeSet<Address>,
    catch_up_started: Instant,
    caught_up: bool,
}

/// Finds the start block (unless configured), seeds the known clusters and follows the chain
/// until shutdown. Never returns an error: failures are logged, reported in the status and
/// retried with backoff.
pub async fn run(
    rpc: IndexerRpc,
    signer: Arc<EventSigner>,
    store: Store,
    status: StatusHandle,
    config: FollowerConfig,
    shutdown: Shutdown,
) {
    let mut delay = config.retry_initial;
    let search = loop {
        let attempt = match config.start_block {
            Some(block) => Ok(start_block::configured(block)),
            None => {
                status.update(|s| s.phase = Phase::SearchingStartBlock);
                start_block::find_deploy_block(&rpc, config.factory).await
            }
        };
        match attempt {
            Ok(search) => break search,
            Err(error) => {
                warn!(target: LOG_TARGET, %error, retry_in_ms = delay.as_millis() as u64, "start-block search failed; retrying");
                status.update(|s| s.last_error = Some(error.to_string()));
            }
        }
        if !shutdown.sleep(delay).await {
            return;
        }
        delay = (delay * 2).min(config.retry_max);
    };
    let start = search.block;
    if search.source == start_block::StartSource::Configured {
        info!(target: LOG_TARGET, start_block = start, "start block configured (INDEXER_START_BLOCK); no search");
    }
    record_start(&status, &search);

    let mut follower = Follower {
        rpc,
        signer,
        store,
        status,
        start,
        next: start,
        range: LogRange::new(config.initial_range, config.max_range),
        recent: VecDeque::new(),
        clusters: BTreeSet::new(),
        catch_up_started: Instant::now(),
        caught_up: false,
        config,
    };
    // Clusters created before a configured start block are known only to the factory.
    let mut delay = follower.config.retry_initial;
    loop {
        match follower.seed_clusters().await {
            Ok(()) => break,
            Err(error) => {
                warn!(target: LOG_TARGET, %error, "reading the factory's clusters failed; retrying");
                follower
                    .status
                    .update(|s| s.last_error = Some(error.to_string()));
            }
        }
        if !shutdown.sleep(delay).await {
            return;
        }
        delay = (delay * 2).min(follower.config.retry_max);
    }
    follower.status.update(|s| s.phase = Phase::CatchingUp);
    info!(target: LOG_TARGET, from = start, factory = %follower.config.factory, clusters = follower.clusters.len(), "catch-up started");
    follower.catch_up_started = Instant::now();

    let mut delay = follower.config.retry_initial;
    while !shutdown.is_cancelled() {
        match follower.step().await {
            Ok(Progress::Applied) => {
                delay = follower.config.retry_initial;
                follower.status.update(|s| s.last_error = None);
            }
            Ok(Progress::AtHead) => {
                delay = follower.config.retry_initial;
                follower.status.update(|s| s.last_error = None);
                if !shutdown.sleep(follower.config.poll_interval).await {
                    break;
                }
            }
            Err(StepError::Logs(LogsError::RangeTooLarge { blocks, message })) => {
                let previous = follower.range.current;
                let next = follower.range.refused(blocks);
                follower.status.update(|s| {
                    s.log_range = next;
                    s.log_range_refusals += 1;
                });
                if blocks <= 1 {
                    // One block is as small as a range gets: this is a real failure.
                    error!(target: LOG_TARGET, block = follower.next, %message, "the RPC refuses the logs of a single block; retrying with backoff");
                    if !shutdown.sleep(delay).await {
                        break;
                    }
                    delay = (delay * 2).min(follower.config.retry_max);
                } else {
                    info!(target: LOG_TARGET, from = follower.next, refused = blocks, previous, range = next, %message, "log range refused; shrinking");
                }
            }
            Err(error) => {
                warn!(target: LOG_TARGET, %error, next_block = follower.next, retry_in_ms = delay.as_millis() as u64, "follow step failed; retrying");
                follower
                    .status
                    .update(|s| s.last_error = Some(error.to_string()));
                if !shutdown.sleep(delay).await {
                    break;
                }
                delay = (delay * 2).min(follower.config.retry_max);
            }
        }
        let calls = follower.rpc.calls();
        follower.status.update(|s| {
            s.rpc_calls = calls.iter().map(|(k, v)| ((*k).to_string(), *v)).collect();
        });
    }
    info!(target: LOG_TARGET, next_block = follower.next, "follower stopped");
}

fn record_start(status: &StatusHandle, search: &StartBlockSearch) {
    let search = search.clone();
    status.update(|s| {
        s.start_block = Some(search.block);
        s.start_block_search = Some(search);
    });
}

enum Progress {
    Applied,
    AtHead,
}

impl Follower {
    async fn seed_clusters(&mut self) -> Result<(), IndexerError> {
        let factory = ClusterFactory::new(self.config.factory, self.rpc.chain().provider().clone());
        self.rpc.count("eth_call");
        let count = factory.clusterCount().call().await.map_err(|e| {
            self.rpc
                .chain()
                .call_error("ClusterFactory.clusterCount", e)
        })?;
        if count.is_zero() {
            return Ok(());
        }
        self.rpc.count("eth_call");
        let clusters = factory
            .listClusters(alloy::primitives::U256::ZERO, count)
            .call()
            .await
            .map_err(|e| {
                self.rpc
                    .chain()
                    .call_error("ClusterFactory.listClusters", e)
            })?;
        debug!(target: LOG_TARGET, clusters = clusters.len(), "clusters read from the factory");
        self.add_clusters(clusters);
        Ok(())
    }

    fn add_clusters(&mut self, clusters: impl IntoIterator<Item = Address>) {
        let before = self.clusters.len();
        self.clusters.extend(clusters);
        if self.clusters.len() != before {
            self.store.add_clusters(self.clusters.iter().copied());
            let count = self.clusters.len() as u64;
            self.status.update(|s| s.clusters = count);
        }
    }

    fn filter(&self, from: u64, to: u64, addresses: Option<Vec<Address>>) -> Filter {
        let filter = Filter::new()
            .from_block(from)
            .to_block(to)
            .event_signature(followed_topics());
        match addresses {
            Some(addresses) => filter.address(addresses),
            None if self.clusters.len() < MAX_FILTER_ADDRESSES => {
                let mut addresses = vec![self.config.factory];
                addresses.extend(self.clusters.iter().copied());
                filter.address(addresses)
            }
            None => filter,
        }
    }

    fn is_followed(&self, address: &Address) -> bool {
        *address == self.config.factory || self.clusters.contains(address)
    }

    /// One step: a range of history, or one poll at the head.
    async fn step(&mut self) -> Result<Progress, StepError> {
        let head = self.rpc.block_number().await?;
        self.status.update(|s| s.head = Some(head));
        let target = head.saturating_sub(self.config.confirmations);
        if self.next > target {
            self.mark_caught_up(head);
            // Nothing new: make sure the last applied block is still the chain's (unless the
            // RPC answering now is behind it: a balanced RPC's lagging node is not a reorg).
            if let Some(&(number, hash)) = self.recent.back()
                && number <= head
            {
                let now = self.rpc.block(number).await?;
                if now.map(|b| b.hash) != Some(hash) {
                    self.handle_reorg(number).await?;
                    return Ok(Progress::Applied);
                }
            }
            return Ok(Progress::AtHead);
        }
        let from = self.next;
        let to = target.min(from.saturating_add(self.range.current - 1));
        let blocks = to - from + 1;

        // The last block's header before its logs: a reorg in between shows at the next step.
        let Some(last) = self.rpc.block(to).await? else {
            return Err(StepError::Inconsistent(format!(
                "block {to} is not served yet although the head is {head}"
            )));
        };
        let mut logs = self.rpc.logs(&self.filter(from, to, None), blocks).await?;
        logs.retain(|log| self.is_followed(&log.address()));

        // Clusters created in this range: read the rest of the range for them.
        let created = self.created_clusters(&logs);
        if !created.is_empty() {
            let first = created
                .iter()
                .map(|(block, _)| *block)
                .min()
                .unwrap_or(from);
            let addresses: Vec<Address> = created.iter().map(|(_, cluster)| *cluster).collect();
            info!(target: LOG_TARGET, clusters = ?addresses, block = first, "new clusters");
            self.add_clusters(addresses.iter().copied());
            let more = self
                .rpc
                .logs(&self.filter(first, to, Some(addresses)), to - first + 1)
                .await?;
            logs.extend(more);
        }
        logs.sort_by_key(|log| (log.block_number, log.log_index));
        logs.dedup_by_key(|log| (log.block_number, log.log_index));

        // Continuity: the parent of `from` must be the block applied before it.
        if let Some(&(number, hash)) = self.recent.back()
            && number + 1 == from
        {
            let parent = if to == from {
                Some(last)
            } else {
                self.rpc.block(from).await?
            };
            match parent {
                Some(block) if block.parent_hash == hash => {}
                Some(_) => {
                    self.handle_reorg(number).await?;
                    return Ok(Progress::Applied);
                }
                None => {
                    return Err(StepError::Inconsistent(format!(
                        "block {from} is not served although {to} is"
                    )));
                }
            }
        }

        // Every log must carry its provenance and agree with the header read for its block.
        let mut hashes: BTreeMap<u64, B256> = BTreeMap::new();
        hashes.insert(to, last.hash);
        let mut events = Vec::with_capacity(logs.len());
        for log in &logs {
            let (Some(number), Some(hash), Some(index)) =
                (log.block_number, log.block_hash, log.log_index)
            else {
                return Err(StepError::Inconsistent(
                    "the RPC returned a log without block number, hash or index".into(),
                ));
            };
            if number < from || number > to {
                return Err(StepError::Inconsistent(format!(
                    "the RPC returned a log of block {number} for the range {from}..={to}"
                )));
            }
            if let Some(known) = hashes.insert(number, hash)
                && known != hash
            {
                // The chain moved between the header and the logs: read the range again.
                return Err(StepError::Inconsistent(format!(
                    "block {number} changed while its range was read ({known} vs {hash})"
                )));
            }
            let signed = self
                .signer
                .sign_log(log)
                .map_err(|e| StepError::Inconsistent(e.to_string()))?;
            events.push(StoredEvent {
                key: store::key(number, index),
                address: log.address(),
                signed: Arc::new(signed),
            });
        }
        let applied = self.store.apply(events);
        self.store.set_applied(to);
        for (number, hash) in hashes {
            self.recent.push_back((number, hash));
        }
        while self.recent.len() > self.config.reorg_window.max(1) {
            self.recent.pop_front();
        }
        self.next = to + 1;
        let before = self.range.current;
        self.range.served(blocks);
        if self.range.current != before {
            debug!(target: LOG_TARGET, range = self.range.current, "log range grown");
        }
        let total = self.store.len() as u64;
        let range = self.range.current;
        self.status.update(|s| {
            s.applied_block = Some(to);
            s.events = total;
            s.log_range = range;
        });
        debug!(target: LOG_TARGET, from, to, logs = logs.len(), applied, head, "range applied");
        if to >= target {
            self.mark_caught_up(head);
        }
        Ok(Progress::Applied)
    }

    /// `(block, cluster)` of every ClusterCreated by the factory for a cluster not yet known.
    /// One that does not decode cannot name its cluster: the factory never emits such a log,
    /// so it is an anomaly of the RPC and is counted
    /// ([`DROPPED_UNDECODABLE_CLUSTER_CREATED`] in `/status`'s `dropped_logs`, once per read)
    /// and logged, never skipped silently.
    fn created_clusters(&self, logs: &[Log]) -> Vec<(u64, Address)> {
        let mut created = Vec::new();
        for log in logs.iter().filter(|log| {
            log.address() == self.config.factory
                && log.topic0() == Some(&ClusterFactory::ClusterCreated::SIGNATURE_HASH)
        }) {
            match ClusterFactory::ClusterCreated::decode_log_data(log.data()) {
                Ok(event) => {
                    // A log without a block number fails the step's provenance check below.
                    if let Some(block) = log.block_number
                        && !self.clusters.contains(&event.cluster)
                    {
                        created.push((block, event.cluster));
                    }
                }
                Err(error) => {
                    self.status.update(|s| {
                        *s.dropped_logs
                            .entry(DROPPED_UNDECODABLE_CLUSTER_CREATED.to_string())
                            .or_default() += 1;
                    });
                    warn!(
                        target: LOG_TARGET,
                        // Each field is left out when the log lacks it.
                        block = log.block_number,
                        tx = log.transaction_hash.as_ref().map(tracing::field::display),
                        log_index = log.log_index,
                        address = %log.address(),
                        %error,
                        reason = DROPPED_UNDECODABLE_CLUSTER_CREATED,
                        "a ClusterCreated log of the factory does not decode; its cluster is not followed"
                    );
                }
            }
        }
        created
    }

    fn mark_caught_up(&mut self, head: u64) {
        if self.caught_up {
            return;
        }
        self.caught_up = true;
        let seconds = self.catch_up_started.elapsed().as_secs_f64();
        let blocks = head.saturating_sub(self.start) + 1;
        let per_second = blocks as f64 / seconds.max(1e-6);
        let events = self.store.len();
        let calls = self.rpc.total_calls();
        info!(
            target: LOG_TARGET,
            from = self.start,
            head,
            blocks,
            events,
            seconds,
            blocks_per_second = per_second,
            rpc_calls = calls,
            "caught up; following the head"
        );
        self.status.update(|s| {
            s.phase = Phase::Following;
            s.catching_up = false;
            s.catch_up_seconds = Some(seconds);
            s.catch_up_blocks_per_second = Some(per_second);
        });
    }

    /// The block `mismatch` (applied earlier) is no longer the chain's: rewind to the newest
    /// recorded block the chain still has and re-read from the block after it.
    async fn handle_reorg(&mut self, mismatch: u64) -> Result<(), StepError> {
        let mut ancestor = None;
        while let Some(&(number, hash)) = self.recent.back() {
            if self.rpc.block(number).await?.map(|b| b.hash) == Some(hash) {
                ancestor = Some(number);
                break;
            }
            self.recent.pop_back();
        }
        let from_block = match ancestor {
            Some(number) => number + 1,
            None => {
                error!(target: LOG_TARGET, mismatch, window = self.config.reorg_window, start = self.start, "reorg deeper than the tracked window; re-reading from the start block");
                self.start
            }
        };
        let removed = self
            .store
            .rewind(from_block, self.signer.sign_reorg(from_block));
        warn!(target: LOG_TARGET, mismatch, from_block, removed, "chain reorganized; events above the fork dropped, re-reading");
        self.next = from_block;
        let total = self.store.len() as u64;
        self.status.update(|s| {
            s.reorgs += 1;
            s.events = total;
            s.applied_block = from_block.checked_sub(1);
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::LogRange;

    #[test]
    fn the_log_range_settles_under_a_fixed_limit_and_grows_back_to_the_maximum() {
        let limit = 100;
        let mut range = LogRange::new(1_000, 50_000);
        let mut refusals = 0;
        for _ in 0..200 {
            let blocks = range.current;
            if blocks > limit {
                refusals += 1;
                range.refused(blocks);
            } else {
                range.served(blocks);
            }
        }
        assert!(
            range.current <= limit && range.current >= limit * 9 / 10,
            "{range:?}"
        );
        assert!(refusals <= 12, "{refusals} refusals");

        // Without a limit, it grows back to the maximum once refusals are forgotten.
        for _ in 0..400 {
            let blocks = range.current;
            range.served(blocks);
        }
        assert_eq!(range.current, 50_000);
        // Short ranges at the head say nothing about the limit.
        let mut at_head = LogRange::new(10, 100);
        for _ in 0..20 {
            at_head.served(1);
        }
        assert_eq!(at_head.current, 10);
    }
}
