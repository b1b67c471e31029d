//! Envelopes approved and still pending, per sender. The policy view answers for the chain as it
//! is: two operations of one member carrying the same envelope id (on different nonce keys)
//! both pass it, and the second reverts at the sponsor's cost. So the webhook remembers which
//! envelopes it approved in which operation (sender, nonce) and denies another operation that
//! carries one of them while the first may still land.
//!
//! The same operation asked again (ERC-7677 asks for stub data and then for the final data; a
//! client retries) is not another operation: same sender and nonce. An entry leaves when its
//! window ends, or earlier when the chain shows its nonce used (the server asks on a conflict,
//! [`PendingApprovals::settle`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};

use crate::envelopes::Envelope;

/// Above this many tracked senders, every expired entry is dropped at once (otherwise only the
/// asking sender's are): memory stays bounded by the senders approved within one window.
const PRUNE_ABOVE: usize = 4096;

/// Approved, pending envelope ids per sender.
#[derive(Debug)]
pub(crate) struct PendingApprovals {
    window: Duration,
    senders: Mutex<HashMap<Address, Vec<Entry>>>,
}

#[derive(Debug, Clone)]
struct Entry {
    /// `None` when the gas manager sent no nonce: such an entry matches no other request as
    /// "the same operation", and only its window ends it.
    nonce: Option<U256>,
    envelopes: BTreeSet<Envelope>,
    approved: Instant,
}

/// An envelope of the request already pending in another operation of the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Conflict {
    pub(crate) envelope: Envelope,
    /// The other operation's nonce.
    pub(crate) nonce: Option<U256>,
    pub(crate) age: Duration,
}

/// What [`PendingApprovals::reserve`] added, to take back if the operation is then denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reservation {
    pub(crate) sender: Address,
    pub(crate) nonce: Option<U256>,
    /// Envelopes this request added (not already approved for the same operation): the ones the
    /// message rate limit counts.
    pub(crate) added: Vec<Envelope>,
}

impl PendingApprovals {
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            senders: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    /// Records `envelopes` as pending in `sender`'s operation `nonce`, unless one of them is
    /// pending in another of its operations: then nothing is recorded and the conflicts (one per
    /// other operation) are returned.
    pub(crate) fn reserve(
        &self,
        sender: Address,
        nonce: Option<U256>,
        envelopes: &[Envelope],
        now: Instant,
    ) -> Result<Reservation, Vec<Conflict>> {
        // Nothing below can panic, so a poisoned map is still consistent.
        let mut senders = self.senders.lock().unwrap_or_else(PoisonError::into_inner);
        if senders.len() > PRUNE_ABOVE {
            senders.retain(|_, entries| {
                entries.retain(|e| !self.expired(e, now));
                !entries.is_empty()
            });
        }
        let entries = senders.entry(sender).or_default();
        entries.retain(|e| !self.expired(e, now));

        let mut conflicts: Vec<Conflict> = Vec::new();
        for entry in entries.iter() {
            if nonce.is_some() && entry.nonce == nonce {
                continue;
            }
            if let Some(envelope) = envelopes.iter().find(|e| entry.envelopes.contains(e)) {
                conflicts.push(Conflict {
                    envelope: *envelope,
                    nonce: entry.nonce,
                    age: now.saturating_duration_since(entry.approved),
                });
            }
        }
        if !conflicts.is_empty() {
            return Err(conflicts);
        }

        let existing = entries
            .iter_mut()
            .find(|e| nonce.is_some() && e.nonce == nonce);
        let entry = match existing {
            Some(entry) => entry,
            None => {
                entries.push(Entry {
                    nonce,
                    envelopes: BTreeSet::new(),
                    approved: now,
                });
                let last = entries.len() - 1;
                &mut entries[last]
            }
        };
        let mut added = Vec::new();
        for envelope in envelopes {
            if entry.envelopes.insert(*envelope) {
                added.push(*envelope);
            }
        }
        entry.approved = now;
        Ok(Reservation {
            sender,
            nonce,
            added,
        })
    }

    /// Takes back what `reservation` added (its operation was denied after all).
    pub(crate) fn release(&self, reservation: &Reservation) {
        let mut senders = self.senders.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(entries) = senders.get_mut(&reservation.sender) else {
            return;
        };
        // A reservation without a nonce made its own entry: the last one holding its envelopes.
        if let Some(entry) = entries.iter_mut().rev().find(|e| {
            e.nonce == reservation.nonce
                && reservation.added.iter().all(|a| e.envelopes.contains(a))
        }) {
            for envelope in &reservation.added {
                entry.envelopes.remove(envelope);
            }
        }
        entries.retain(|e| !e.envelopes.is_empty());
        if entries.is_empty() {
            senders.remove(&reservation.sender);
        }
    }

    /// The chain shows `sender`'s operation `nonce` used (included, or replaced): its envelopes
    /// are no longer pending.
    pub(crate) fn settle(&self, sender: Address, nonce: U256) {
        let mut senders = self.senders.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entries) = senders.get_mut(&sender) {
            entries.retain(|e| e.nonce != Some(nonce));
            if entries.is_empty() {
                senders.remove(&sender);
            }
        }
    }

    fn expired(&self, entry: &Entry, now: Instant) -> bool {
        now.saturating_duration_since(entry.approved) >= self.window
    }
}

#[cfg(test)]
mod tests {
    use alloy::primitives::B256;

    use super::*;

    const WINDOW: Duration = Duration::from_secs(120);

    fn env(recipient: u64, id: u8) -> Envelope {
        Envelope {
            recipient,
            id: B256::repeat_byte(id),
        }
    }

    fn nonce(key: u64, seq: u64) -> Option<U256> {
        Some((U256::from(key) << 64) | U256::from(seq))
    }

    /// Issue 14: the same envelope on two nonce keys passed the policy twice; the second
    /// reverted at the sponsor's cost.
    #[test]
    fn the_same_envelope_in_another_pending_operation_conflicts() {
        let pending = PendingApprovals::new(WINDOW);
        let sender = Address::repeat_byte(1);
        let now = Instant::now();
        let first = pending
            .reserve(sender, nonce(1, 0), &[env(2, 7), env(3, 7)], now)
            .unwrap();
        assert_eq!(first.added.len(), 2);
        let conflicts = pending
            .reserve(
                sender,
                nonce(2, 0),
                &[env(3, 7)],
                now + Duration::from_secs(5),
            )
            .unwrap_err();
        assert_eq!(
            conflicts,
            vec![Conflict {
                envelope: env(3, 7),
                nonce: nonce(1, 0),
                age: Duration::from_secs(5),
            }]
        );
        // Other envelopes, and other senders, are free.
        assert!(
            pending
                .reserve(sender, nonce(2, 0), &[env(3, 8)], now)
                .is_ok()
        );
        assert!(
            pending
                .reserve(Address::repeat_byte(9), nonce(2, 0), &[env(3, 7)], now)
                .is_ok()
        );
    }

    #[test]
    fn the_same_operation_asked_again_is_not_a_conflict_and_adds_nothing() {
        let pending = PendingApprovals::new(WINDOW);
        let sender = Address::repeat_byte(1);
        let now = Instant::now();
        pending
            .reserve(sender, nonce(1, 4), &[env(2, 7)], now)
            .unwrap();
        let again = pending
            .reserve(sender, nonce(1, 4), &[env(2, 7)], now)
            .unwrap();
        assert!(again.added.is_empty(), "stub then final data: counted once");
        // Without a nonce nothing proves it is the same operation.
        pending.reserve(sender, None, &[env(5, 5)], now).unwrap();
        assert!(pending.reserve(sender, None, &[env(5, 5)], now).is_err());
    }

    #[test]
    fn entries_end_with_their_window_when_settled_or_released() {
        let pending = PendingApprovals::new(WINDOW);
        let sender = Address::repeat_byte(1);
        let now = Instant::now();
        pending
            .reserve(sender, nonce(1, 0), &[env(2, 7)], now)
            .unwrap();
        assert!(
            pending
                .reserve(
                    sender,
                    nonce(2, 0),
                    &[env(2, 7)],
                    now + WINDOW - Duration::from_secs(1)
                )
                .is_err()
        );
        assert!(
            pending
                .reserve(sender, nonce(2, 0), &[env(2, 7)], now + WINDOW)
                .is_ok(),
            "expired"
        );

        pending.settle(sender, nonce(2, 0).unwrap());
        assert!(
            pending
                .reserve(sender, nonce(3, 0), &[env(2, 7)], now + WINDOW)
                .is_ok(),
            "settled on chain"
        );

        let denied = Reservation {
            sender,
            nonce: nonce(3, 0),
            added: vec![env(2, 7)],
        };
        pending.release(&denied);
        assert!(
            pending
                .reserve(sender, nonce(4, 0), &[env(2, 7)], now + WINDOW)
                .is_ok(),
            "released after a denial"
        );
    }
}
