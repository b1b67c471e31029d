//! One place that keeps a flood out of the log: a peer that sends refused heartbeats or CSK
//! requests by the thousand gets one log line per minute per reason, saying how many were kept
//! out; every one is still counted on `/metrics` by the caller.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long the same refusal (same source, same reason) stays out of the log after it was logged.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Which refusals were logged lately, by source and reason.
#[derive(Debug, Default)]
pub struct LogLimiter {
    /// (source, reason) → when it was last logged and how many were kept out of the log since.
    logged: HashMap<(IpAddr, &'static str), (Instant, u64)>,
}

impl LogLimiter {
    /// Whether this refusal should be logged now; if so, how many like it were kept out of the
    /// log since it was last logged.
    pub fn should_log(
        &mut self,
        source: IpAddr,
        reason: &'static str,
        now: Instant,
    ) -> Option<u64> {
        // Entries older than two windows are forgotten: the table stays as small as the set of
        // sources that misbehaved lately.
        self.logged
            .retain(|_, (at, _)| now.duration_since(*at) < 2 * WINDOW);
        match self.logged.get_mut(&(source, reason)) {
            Some((at, suppressed)) if now.duration_since(*at) < WINDOW => {
                *suppressed += 1;
                None
            }
            Some((at, suppressed)) => {
                let kept_out = std::mem::take(suppressed);
                *at = now;
                Some(kept_out)
            }
            None => {
                self.logged.insert((source, reason), (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_one_refusal_is_logged_once_per_window() {
        let mut limiter = LogLimiter::default();
        let source: IpAddr = "10.88.0.3".parse().unwrap();
        let start = Instant::now();
        assert_eq!(limiter.should_log(source, "revoked", start), Some(0));
        for _ in 0..1000 {
            assert_eq!(limiter.should_log(source, "revoked", start), None);
        }
        assert_eq!(
            limiter.should_log(source, "stale", start),
            Some(0),
            "another reason is logged"
        );
        assert_eq!(
            limiter.should_log(source, "revoked", start + WINDOW),
            Some(1000),
            "logged again after the window, with how many were kept out"
        );
    }
}
