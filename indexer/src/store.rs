//! The applied events, in chain order, signed once when applied, and what subscribers read.
//!
//! Every subscriber reads the store with its own cursor, so a slow subscriber never holds up
//! the follower or another subscriber, and a subscriber that joins late gets the history first
//! and the live events after it from the same loop, without a gap between the two. A reorg
//! removes the events at and above the fork and leaves a signed notice that every subscriber
//! past the fork receives before the new chain's events.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use alloy::primitives::Address;
use attestmesh_proto::indexer::v1 as pb;
use tokio::sync::watch;

/// A position in event order: block number in the high 64 bits, log index in the low ones.
pub type Key = u128;

/// The key of (block, log index).
pub fn key(block_number: u64, log_index: u64) -> Key {
    (u128::from(block_number) << 64) | u128::from(log_index)
}

/// The key just below block `block` ("everything from `block` on" is "after" it).
pub fn before_block(block: u64) -> Option<Key> {
    block.checked_sub(1).map(|b| key(b, u64::MAX))
}

/// The block number of a key.
pub fn block_of(key: Key) -> u64 {
    (key >> 64) as u64
}

/// One applied event.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub key: Key,
    /// The emitter: the factory or a cluster.
    pub address: Address,
    pub signed: Arc<pb::SignedEvent>,
}

#[derive(Debug, Clone)]
struct ReorgRecord {
    generation: u64,
    from_block: u64,
    notice: Arc<pb::SignedEvent>,
}

#[derive(Debug, Default)]
struct Inner {
    events: Vec<StoredEvent>,
    reorgs: Vec<ReorgRecord>,
    generation: u64,
    clusters: BTreeSet<Address>,
    /// The last block whose events are all applied.
    applied_block: Option<u64>,
}

/// A subscriber's reading position.
#[derive(Debug, Clone)]
pub struct ReadCursor {
    /// Events strictly after this key are still to be read (`None`: from the beginning).
    pub after: Option<Key>,
    /// The reorg generation this cursor has seen.
    pub generation: u64,
}

/// What one read returns.
#[derive(Debug, Default)]
pub struct Batch {
    /// A reorg notice to send before the events (the cursor was past the fork).
    pub reorg: Option<Arc<pb::SignedEvent>>,
    pub events: Vec<Arc<pb::SignedEvent>>,
}

/// The event store. Cheap to clone; clones share it.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<RwLock<Inner>>,
    version: Arc<watch::Sender<u64>>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub fn new() -> Self {
        Self {
            inner: Arc::default(),
            version: Arc::new(watch::Sender::new(0)),
        }
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Wakes whenever events are applied or rewound.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// A cursor at the current generation, starting after `after`.
    pub fn cursor(&self, after: Option<Key>) -> ReadCursor {
        let generation = self.inner.read().map(|i| i.generation).unwrap_or_default();
        ReadCursor { after, generation }
    }

    /// Appends events in chain order (all above what is stored; lower keys are dropped as
    /// already applied, which keeps a re-read after a transient failure idempotent).
    pub fn apply(&self, events: Vec<StoredEvent>) -> usize {
        let Ok(mut inner) = self.inner.write() else {
            return 0;
        };
        let mut last = inner.events.last().map(|e| e.key);
        let mut added = 0;
        for event in events {
            if last.is_some_and(|last| event.key <= last) {
                continue;
            }
            last = Some(event.key);
            inner.events.push(event);
            added += 1;
        }
        drop(inner);
        if added > 0 {
            self.bump();
        }
        added
    }

    /// Records that every block up to `block` is applied.
    pub fn set_applied(&self, block: u64) {
        if let Ok(mut inner) = self.inner.write() {
            inner.applied_block = Some(block);
        }
        self.bump();
    }

    /// The last block whose events are all applied.
    pub fn applied_block(&self) -> Option<u64> {
        self.inner.read().ok().and_then(|i| i.applied_block)
    }

    /// The block hash of the applied event at `key`, if there is one.
    pub fn block_hash_at(&self, at: Key) -> Option<Vec<u8>> {
        let inner = self.inner.read().ok()?;
        let index = inner.events.binary_search_by_key(&at, |e| e.key).ok()?;
        match &inner.events[index].signed.body {
            Some(pb::signed_event::Body::Log(log)) => Some(log.block_hash.clone()),
            _ => None,
        }
    }

    /// Removes every event at or above `from_block` and records the signed notice.
    pub fn rewind(&self, from_block: u64, notice: pb::SignedEvent) -> usize {
        let Ok(mut inner) = self.inner.write() else {
            return 0;
        };
        let first = key(from_block, 0);
        let keep = inner.events.partition_point(|e| e.key < first);
        let removed = inner.events.len() - keep;
        inner.events.truncate(keep);
        inner.applied_block = from_block.checked_sub(1);
        inner.generation += 1;
        let generation = inner.generation;
        inner.reorgs.push(ReorgRecord {
            generation,
            from_block,
            notice: Arc::new(notice),
        });
        drop(inner);
        self.bump();
        removed
    }

    /// Records clusters the factory created.
    pub fn add_clusters(&self, clusters: impl IntoIterator<Item = Address>) {
        if let Ok(mut inner) = self.inner.write() {
            inner.clusters.extend(clusters);
        }
    }

    pub fn is_known_cluster(&self, cluster: &Address) -> bool {
        self.inner
            .read()
            .map(|i| i.clusters.contains(cluster))
            .unwrap_or(false)
    }

    pub fn clusters(&self) -> Vec<Address> {
        self.inner
            .read()
            .map(|i| i.clusters.iter().copied().collect())
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.inner.read().map(|i| i.events.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Up to `limit` events after `cursor` emitted by `filter` (every emitter when `None`),
    /// advancing the cursor past everything examined.
    pub fn read(&self, cursor: &mut ReadCursor, filter: Option<Address>, limit: usize) -> Batch {
        let mut batch = Batch::default();
        let Ok(inner) = self.inner.read() else {
            return batch;
        };
        if inner.generation != cursor.generation {
            // The lowest fork among the reorgs this cursor has not seen.
            let fork = inner
                .reorgs
                .iter()
                .filter(|r| r.generation > cursor.generation)
                .min_by_key(|r| r.from_block);
            if let Some(fork) = fork
                && cursor
                    .after
                    .is_some_and(|after| block_of(after) >= fork.from_block)
            {
                batch.reorg = Some(Arc::clone(&fork.notice));
                cursor.after = before_block(fork.from_block);
            }
            cursor.generation = inner.generation;
        }
        let start = match cursor.after {
            Some(after) => inner.events.partition_point(|e| e.key <= after),
            None => 0,
        };
        for event in &inner.events[start..] {
            cursor.after = Some(event.key);
            if filter.is_none_or(|address| address == event.address) {
                batch.events.push(Arc::clone(&event.signed));
                if batch.events.len() >= limit {
                    break;
                }
            }
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(block: u64, index: u64, address: Address) -> StoredEvent {
        StoredEvent {
            key: key(block, index),
            address,
            signed: Arc::new(pb::SignedEvent {
                chain_id: 1,
                body: Some(pb::signed_event::Body::Log(pb::ChainLog {
                    block_number: block,
                    log_index: index,
                    ..Default::default()
                })),
                signature: vec![],
            }),
        }
    }

    fn keys(batch: &Batch) -> Vec<(u64, u64)> {
        batch
            .events
            .iter()
            .map(|e| match &e.body {
                Some(pb::signed_event::Body::Log(l)) => (l.block_number, l.log_index),
                _ => (0, 0),
            })
            .collect()
    }

    #[test]
    fn readers_resume_strictly_after_their_cursor_and_filter_by_emitter() {
        let store = Store::new();
        let (a, b) = (Address::repeat_byte(1), Address::repeat_byte(2));
        store.apply(vec![event(10, 0, a), event(10, 1, b), event(11, 0, a)]);
        // Re-applying is idempotent.
        assert_eq!(store.apply(vec![event(10, 1, b)]), 0);
        let mut all = store.cursor(None);
        assert_eq!(
            keys(&store.read(&mut all, None, 10)),
            [(10, 0), (10, 1), (11, 0)]
        );
        let mut only_a = store.cursor(Some(key(10, 0)));
        assert_eq!(keys(&store.read(&mut only_a, Some(a), 10)), [(11, 0)]);
        let mut from_11 = store.cursor(before_block(11));
        assert_eq!(keys(&store.read(&mut from_11, None, 10)), [(11, 0)]);
        let mut limited = store.cursor(None);
        assert_eq!(keys(&store.read(&mut limited, None, 2)), [(10, 0), (10, 1)]);
        assert_eq!(keys(&store.read(&mut limited, None, 2)), [(11, 0)]);
    }

    #[test]
    fn a_reorg_below_a_readers_cursor_sends_the_notice_and_rewinds_it() {
        let store = Store::new();
        let a = Address::repeat_byte(1);
        store.apply(vec![event(10, 0, a), event(12, 0, a), event(13, 0, a)]);
        let mut past = store.cursor(None);
        assert_eq!(store.read(&mut past, None, 10).events.len(), 3);
        let mut before = store.cursor(Some(key(10, 0)));
        let notice = pb::SignedEvent {
            chain_id: 1,
            body: Some(pb::signed_event::Body::Reorg(pb::Reorg { from_block: 12 })),
            signature: vec![],
        };
        assert_eq!(store.rewind(12, notice), 2);
        store.apply(vec![event(12, 5, a)]);
        let batch = store.read(&mut past, None, 10);
        assert!(batch.reorg.is_some());
        assert_eq!(keys(&batch), [(12, 5)]);
        // A reader that had not reached the fork gets no notice, just the new chain.
        let batch = store.read(&mut before, None, 10);
        assert!(batch.reorg.is_none());
        assert_eq!(keys(&batch), [(12, 5)]);
    }
}
