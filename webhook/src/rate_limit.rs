//! A token bucket per sender: each holds up to a minute's worth of operations and refills
//! continuously, so a sender may burst to the limit and then proceeds at the configured rate.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use alloy::primitives::Address;

/// Above this many tracked senders, buckets that have refilled completely are dropped: they
/// carry no information (a new bucket starts full), so memory stays bounded by the number of
/// senders active within the last minute.
const PRUNE_ABOVE: usize = 4096;

/// Per-sender token buckets.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    per_minute: u32,
    capacity: f64,
    per_second: f64,
    buckets: Mutex<HashMap<Address, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// A sender over its limit, and when its next operation would be allowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Limited {
    pub(crate) per_minute: u32,
    pub(crate) retry_after: Duration,
}

impl RateLimiter {
    pub(crate) fn new(per_minute: u32) -> Self {
        let per_minute = per_minute.max(1);
        let capacity = f64::from(per_minute);
        Self {
            per_minute,
            capacity,
            per_second: capacity / 60.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `sender`'s bucket at time `now`.
    pub(crate) fn check(&self, sender: Address, now: Instant) -> Result<(), Limited> {
        self.take(sender, 1, now)
    }

    /// Takes `count` tokens at once (an operation carrying `count` envelopes), or none: more
    /// than the bucket holds is never allowed, so the answer names the limit.
    pub(crate) fn take(&self, sender: Address, count: u32, now: Instant) -> Result<(), Limited> {
        if count == 0 {
            return Ok(());
        }
        let wanted = f64::from(count);
        // The critical section cannot panic, so a poisoned lock still holds consistent buckets;
        // refusing to serve because of it would turn a past bug into an outage.
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, bucket| self.refilled(*bucket, now) < self.capacity);
        }
        let bucket = buckets.entry(sender).or_insert(Bucket {
            tokens: self.capacity,
            updated: now,
        });
        bucket.tokens = self.refilled(*bucket, now);
        bucket.updated = now;
        if bucket.tokens >= wanted {
            bucket.tokens -= wanted;
            return Ok(());
        }
        let missing = wanted.min(self.capacity) - bucket.tokens;
        Err(Limited {
            per_minute: self.per_minute,
            retry_after: Duration::from_secs_f64(missing.max(0.0) / self.per_second),
        })
    }

    /// Gives back `count` tokens taken for an operation that was then denied.
    pub(crate) fn refund(&self, sender: Address, count: u32) {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = buckets.get_mut(&sender) {
            bucket.tokens = (bucket.tokens + f64::from(count)).min(self.capacity);
        }
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        (bucket.tokens + elapsed * self.per_second).min(self.capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_up_to_the_limit_then_refills() {
        let limiter = RateLimiter::new(3);
        let sender = Address::repeat_byte(1);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check(sender, start), Ok(()));
        }
        let limited = limiter.check(sender, start);
        assert!(
            matches!(limited, Err(Limited { per_minute: 3, .. })),
            "{limited:?}"
        );
        // 3 per minute is one every 20 s.
        assert!(
            limiter
                .check(sender, start + Duration::from_secs(19))
                .is_err()
        );
        assert_eq!(
            limiter.check(sender, start + Duration::from_secs(41)),
            Ok(())
        );
    }

    #[test]
    fn takes_several_tokens_at_once_or_none_and_refunds() {
        let limiter = RateLimiter::new(10);
        let sender = Address::repeat_byte(1);
        let start = Instant::now();
        assert_eq!(limiter.take(sender, 7, start), Ok(()));
        // 3 left: 4 is refused whole, and takes nothing.
        assert!(limiter.take(sender, 4, start).is_err());
        assert_eq!(limiter.take(sender, 3, start), Ok(()));
        limiter.refund(sender, 2);
        assert_eq!(limiter.take(sender, 2, start), Ok(()));
        // More than a whole bucket is never allowed.
        assert!(RateLimiter::new(10).take(sender, 11, start).is_err());
        assert_eq!(limiter.take(sender, 0, start), Ok(()));
    }

    #[test]
    fn senders_have_separate_buckets() {
        let limiter = RateLimiter::new(1);
        let now = Instant::now();
        assert_eq!(limiter.check(Address::repeat_byte(1), now), Ok(()));
        assert!(limiter.check(Address::repeat_byte(1), now).is_err());
        assert_eq!(limiter.check(Address::repeat_byte(2), now), Ok(()));
    }

    #[test]
    fn idle_full_buckets_are_pruned() {
        let limiter = RateLimiter::new(1);
        let start = Instant::now();
        for i in 0..=PRUNE_ABOVE as u64 {
            let mut bytes = [0u8; 20];
            bytes[..8].copy_from_slice(&i.to_be_bytes());
            assert_eq!(limiter.check(Address::from(bytes), start), Ok(()));
        }
        let later = start + Duration::from_secs(120);
        assert_eq!(limiter.check(Address::repeat_byte(0xff), later), Ok(()));
        let tracked = limiter
            .buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        assert_eq!(tracked, 1);
    }
}
