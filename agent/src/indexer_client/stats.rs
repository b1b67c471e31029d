//! The client's counters, exported on the agent's `/metrics`.

use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;

use super::Rejection;

/// Counters of the client. They are Prometheus counters: the agent registers them in its
/// `/metrics` registry ([`IndexerClientStats::register`]); tests read them with `get()`.
#[derive(Debug, Default)]
pub struct IndexerClientStats {
    /// Connection attempts.
    pub connects: Counter,
    /// Subscriptions opened.
    pub subscriptions: Counter,
    /// Pushes received.
    pub received: Counter,
    /// Pushes that passed every check.
    pub accepted: Counter,
    /// Intake events sent into the channel.
    pub forwarded: Counter,
    /// Pushes rejected.
    pub rejected: Counter,
    /// Reorg notices forwarded.
    pub reorgs: Counter,
    /// Sessions that ended with an error (the next indexer is tried).
    pub failures: Counter,
    current: Mutex<Option<String>>,
    last_rejection: Mutex<Option<Rejection>>,
}

impl IndexerClientStats {
    /// Exports the counters as `attestmesh_agent_indexer_*_total`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        let indexer = registry.sub_registry_with_prefix("indexer");
        for (name, help, counter) in [
            (
                "connects",
                "Connection attempts to indexers",
                &self.connects,
            ),
            (
                "subscriptions",
                "Push subscriptions opened",
                &self.subscriptions,
            ),
            ("pushes_received", "Signed pushes received", &self.received),
            (
                "pushes_accepted",
                "Pushes that passed the signature and chain checks",
                &self.accepted,
            ),
            (
                "events_forwarded",
                "Pushed events forwarded into intake",
                &self.forwarded,
            ),
            (
                "pushes_rejected",
                "Pushes rejected (signature, chain cross-check, malformed)",
                &self.rejected,
            ),
            ("reorgs", "Signed reorg notices forwarded", &self.reorgs),
            (
                "session_failures",
                "Indexer sessions that ended with an error",
                &self.failures,
            ),
        ] {
            indexer.register(name, help, counter.clone());
        }
    }

    /// The endpoint currently subscribed to.
    pub fn current(&self) -> Option<String> {
        self.current.lock().ok().and_then(|c| c.clone())
    }

    /// The last rejection.
    pub fn last_rejection(&self) -> Option<Rejection> {
        self.last_rejection.lock().ok().and_then(|r| r.clone())
    }

    pub(super) fn set_current(&self, endpoint: Option<&str>) {
        if let Ok(mut current) = self.current.lock() {
            *current = endpoint.map(str::to_owned);
        }
    }

    pub(super) fn reject(&self, rejection: &Rejection) {
        self.rejected.inc();
        if let Ok(mut last) = self.last_rejection.lock() {
            *last = Some(rejection.clone());
        }
    }
}
