//! Prometheus metrics, served on the health port at `/metrics`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label of a dropped message: why it was dropped.
pub type ReasonLabel = Vec<(String, String)>;

/// Every metric the agent exports. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub phase: Family<Vec<(String, String)>, Gauge>,
    pub live_peers: Gauge,
    pub members: Gauge,
    pub messages_received: Counter,
    pub messages_dropped: Family<ReasonLabel, Counter>,
    pub messages_sent: Counter,
    pub user_operations_failed: Counter,
    /// Sponsored operations included on chain, by what they carried: once the cluster is whole
    /// none is sent (the figure the benchmark reads per node-hour).
    pub sponsored_operations: Family<ReasonLabel, Counter>,
    pub chain_poll_errors: Counter,
    /// The CSK epoch this node holds (-1: none yet).
    pub csk_epoch: Gauge,
    /// The chain's current CSK epoch as this node last read it.
    pub csk_chain_epoch: Gauge,
    pub csk_requests_refused: Family<ReasonLabel, Counter>,
    /// Seconds from the chain's opening of the held epoch to this node holding its key.
    pub csk_epoch_acquire_seconds: Gauge<f64, AtomicU64>,
    /// Seconds from a revocation (the chain time of the epoch it opened) to the revoked peer's
    /// removal from attestmesh0.
    pub revoked_peer_removal_seconds: Gauge<f64, AtomicU64>,
    /// Peers configured on attestmesh0.
    pub mesh_peers: Gauge,
    /// Connections the mesh transport listener accepted, by outcome.
    pub transport_connections: Family<ReasonLabel, Counter>,
    /// Heartbeats refused, by reason.
    pub heartbeats_refused: Family<ReasonLabel, Counter>,
    /// Live peers whose heartbeats report a member set other than this node's (a minority of
    /// them no longer blocks convergence; see `heartbeat::Convergence`).
    pub convergence_dissenting_peers: Gauge,
    /// 1 while the member set and CSK epoch could not be read (no quorum, RPC down) and the
    /// cached ones may be stale.
    pub chain_view_stale: Gauge,
    /// Failed reads of the member set and CSK epoch, by reason (disagreement, unavailable).
    pub chain_view_failures: Family<ReasonLabel, Counter>,
    /// The chain-log poller's counters, shared with `chain_poll_errors` and `messages_dropped`.
    pub intake: crate::intake::IntakeCounters,
    /// The indexer push client's counters (`attestmesh_agent_indexer_*`).
    pub indexer: Arc<crate::indexer_client::IndexerClientStats>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("attestmesh_agent");
        let phase = Family::<Vec<(String, String)>, Gauge>::default();
        let live_peers = Gauge::default();
        let members = Gauge::default();
        let messages_received = Counter::default();
        let messages_dropped = Family::<ReasonLabel, Counter>::default();
        let messages_sent = Counter::default();
        let user_operations_failed = Counter::default();
        let sponsored_operations = Family::<ReasonLabel, Counter>::default();
        let chain_poll_errors = Counter::default();
        let csk_epoch = Gauge::default();
        csk_epoch.set(-1);
        let csk_chain_epoch = Gauge::default();
        let csk_requests_refused = Family::<ReasonLabel, Counter>::default();
        let csk_epoch_acquire_seconds = Gauge::<f64, AtomicU64>::default();
        let revoked_peer_removal_seconds = Gauge::<f64, AtomicU64>::default();
        let mesh_peers = Gauge::default();
        let transport_connections = Family::<ReasonLabel, Counter>::default();
        let heartbeats_refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "heartbeats_refused",
            "Heartbeats refused, by reason (each is logged at most once a minute per source and reason)",
            heartbeats_refused.clone(),
        );
        registry.register(
            "transport_connections",
            "Connections the mesh transport listener accepted, by outcome (accepted, identified, evicted: closed unidentified to make room while 64 waited, timed_out, refused)",
            transport_connections.clone(),
        );
        let convergence_dissenting_peers = Gauge::default();
        registry.register(
            "convergence_dissenting_peers",
            "Live peers whose heartbeats report a member set other than this node's; a minority of them is outvoted",
            convergence_dissenting_peers.clone(),
        );
        let chain_view_stale = Gauge::default();
        let chain_view_failures = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "chain_view_stale",
            "1 while the member set and CSK epoch cannot be read from a quorum of the chain RPC endpoints (no CSK is handed out meanwhile)",
            chain_view_stale.clone(),
        );
        registry.register(
            "chain_view_failures",
            "Failed quorum reads of the member set and CSK epoch, by reason",
            chain_view_failures.clone(),
        );
        registry.register(
            "csk_epoch",
            "The CSK epoch this node holds (-1: none yet)",
            csk_epoch.clone(),
        );
        registry.register(
            "csk_chain_epoch",
            "The chain's current CSK epoch as this node last read it; above csk_epoch while a rotation is under way",
            csk_chain_epoch.clone(),
        );
        registry.register(
            "csk_requests_refused",
            "CSK requests this node refused, by reason",
            csk_requests_refused.clone(),
        );
        registry.register(
            "csk_epoch_acquire_seconds",
            "Seconds from the chain opening the held CSK epoch to this node holding its key (chain time has 1 s resolution)",
            csk_epoch_acquire_seconds.clone(),
        );
        registry.register(
            "revoked_peer_removal_seconds",
            "Seconds from the last revocation (chain time) to the revoked peer leaving attestmesh0",
            revoked_peer_removal_seconds.clone(),
        );
        registry.register(
            "mesh_peers",
            "Peers configured on attestmesh0",
            mesh_peers.clone(),
        );
        registry.register("phase", "1 for the current phase", phase.clone());
        registry.register(
            "live_peers",
            "Peers with a verified recent heartbeat",
            live_peers.clone(),
        );
        registry.register("members", "Active members of the cluster", members.clone());
        registry.register(
            "messages_received",
            "Messages delivered to the app",
            messages_received.clone(),
        );
        registry.register(
            "messages_dropped",
            "Inbound messages dropped, by reason",
            messages_dropped.clone(),
        );
        registry.register(
            "messages_sent",
            "Messages sent by the app",
            messages_sent.clone(),
        );
        registry.register(
            "user_operations_failed",
            "Sponsored operations that failed",
            user_operations_failed.clone(),
        );
        registry.register(
            "sponsored_operations",
            "Sponsored operations included on chain, by kind",
            sponsored_operations.clone(),
        );
        registry.register(
            "chain_poll_errors",
            "Chain-log polls that failed",
            chain_poll_errors.clone(),
        );
        let indexer = Arc::new(crate::indexer_client::IndexerClientStats::default());
        indexer.register(&mut registry);
        let intake = crate::intake::IntakeCounters {
            poll_errors: chain_poll_errors.clone(),
            undecodable_logs: messages_dropped
                .get_or_create(&vec![("reason".to_string(), "undecodable_log".to_string())])
                .clone(),
        };
        Self {
            registry: Arc::new(registry),
            phase,
            live_peers,
            members,
            messages_received,
            messages_dropped,
            messages_sent,
            user_operations_failed,
            sponsored_operations,
            chain_poll_errors,
            csk_epoch,
            csk_chain_epoch,
            csk_requests_refused,
            csk_epoch_acquire_seconds,
            revoked_peer_removal_seconds,
            mesh_peers,
            transport_connections,
            heartbeats_refused,
            convergence_dissenting_peers,
            chain_view_stale,
            chain_view_failures,
            intake,
            indexer,
        }
    }

    /// Counts a dropped inbound message.
    pub fn dropped(&self, reason: &str) {
        self.messages_dropped
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc();
    }

    /// Counts a sponsored operation included on chain (`kind`: what it carried).
    pub fn operation_included(&self, kind: &str) {
        self.sponsored_operations
            .get_or_create(&vec![("kind".to_string(), kind.to_string())])
            .inc();
    }

    /// Marks `current` as the phase (1) and every other phase 0.
    pub fn set_phase(&self, current: crate::health::Phase) {
        for phase in crate::health::Phase::ALL {
            let value = i64::from(phase == current);
            self.phase
                .get_or_create(&vec![("phase".to_string(), phase.as_str().to_string())])
                .set(value);
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    /// The poller's counters are the exported ones, not copies.
    #[test]
    fn intake_counters_show_in_the_export() {
        let metrics = Metrics::new();
        metrics.intake.poll_errors.inc();
        metrics.intake.undecodable_logs.inc();
        metrics.intake.undecodable_logs.inc();
        let text = metrics.encode().unwrap();
        assert!(
            text.contains("attestmesh_agent_chain_poll_errors_total 1"),
            "{text}"
        );
        assert!(
            text.contains(r#"attestmesh_agent_messages_dropped_total{reason="undecodable_log"} 2"#),
            "{text}"
        );
    }
}
