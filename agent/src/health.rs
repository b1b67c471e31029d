//! The phase machine of the seed and the `/healthz` gate.
//!
//! booting → registering → subscribing → waiting-peers → wg-configuring → pulling-csk →
//! heartbeating → healthy. `/healthz` answers 200 only when healthy, with exactly
//! `{"csk_acquired","first_converged","live_peers","phase"}`; what the node waits for is in the
//! `x-attestmesh-waiting-for` header (the body stays exactly as documented) and in `/status`.
//! `first_converged` latches: later peer flaps lower `live_peers`, never the gate.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;
use tracing::info;

use crate::targets::AGENT;

/// A phase of the seed's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Booting,
    Registering,
    Subscribing,
    WaitingPeers,
    WgConfiguring,
    PullingCsk,
    Heartbeating,
    Healthy,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Booting => "booting",
            Phase::Registering => "registering",
            Phase::Subscribing => "subscribing",
            Phase::WaitingPeers => "waiting-peers",
            Phase::WgConfiguring => "wg-configuring",
            Phase::PullingCsk => "pulling-csk",
            Phase::Heartbeating => "heartbeating",
            Phase::Healthy => "healthy",
        }
    }

    pub const ALL: [Phase; 8] = [
        Phase::Booting,
        Phase::Registering,
        Phase::Subscribing,
        Phase::WaitingPeers,
        Phase::WgConfiguring,
        Phase::PullingCsk,
        Phase::Heartbeating,
        Phase::Healthy,
    ];
}

/// What `/healthz` shows, plus what the node is waiting for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSnapshot {
    pub phase: Phase,
    pub csk_acquired: bool,
    pub first_converged: bool,
    pub live_peers: u32,
    pub waiting_for: String,
}

/// The `/healthz` body, exactly the seed's four keys.
#[derive(Debug, Serialize)]
pub struct HealthBody {
    pub csk_acquired: bool,
    pub first_converged: bool,
    pub live_peers: u32,
    pub phase: &'static str,
}

impl HealthSnapshot {
    pub fn body(&self) -> HealthBody {
        HealthBody {
            csk_acquired: self.csk_acquired,
            first_converged: self.first_converged,
            live_peers: self.live_peers,
            phase: self.phase.as_str(),
        }
    }

    /// The gate: converged (latched) and the CSK held, in the healthy phase.
    pub fn is_healthy(&self) -> bool {
        self.phase == Phase::Healthy && self.csk_acquired && self.first_converged
    }
}

/// The shared phase machine. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Health {
    tx: Arc<watch::Sender<HealthSnapshot>>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    pub fn new() -> Self {
        let (tx, _) = watch::channel(HealthSnapshot {
            phase: Phase::Booting,
            csk_acquired: false,
            first_converged: false,
            live_peers: 0,
            waiting_for: "deriving keys from the TEE".into(),
        });
        Self { tx: Arc::new(tx) }
    }

    pub fn snapshot(&self) -> HealthSnapshot {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<HealthSnapshot> {
        self.tx.subscribe()
    }

    /// Moves to `phase`, saying what the node now waits for; logs every change at info.
    pub fn set_phase(&self, phase: Phase, waiting_for: impl Into<String>) {
        let waiting_for = waiting_for.into();
        self.tx.send_if_modified(|s| {
            let changed = s.phase != phase || s.waiting_for != waiting_for;
            if s.phase != phase {
                info!(target: AGENT, from = s.phase.as_str(), to = phase.as_str(), waiting_for = %waiting_for, "phase");
            } else if s.waiting_for != waiting_for {
                info!(target: AGENT, phase = phase.as_str(), waiting_for = %waiting_for, "waiting");
            }
            s.phase = phase;
            s.waiting_for = waiting_for;
            changed
        });
    }

    pub fn set_live_peers(&self, live: u32) {
        self.tx
            .send_if_modified(|s| std::mem::replace(&mut s.live_peers, live) != live);
    }

    /// Latches `first_converged` (it never resets).
    pub fn latch_first_converged(&self) {
        self.tx
            .send_if_modified(|s| !std::mem::replace(&mut s.first_converged, true));
    }

    pub fn set_csk_acquired(&self, held: bool) {
        self.tx
            .send_if_modified(|s| std::mem::replace(&mut s.csk_acquired, held) != held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_exactly_the_seed_keys() {
        let body = serde_json::to_value(Health::new().snapshot().body()).unwrap();
        let keys: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            ["csk_acquired", "first_converged", "live_peers", "phase"]
        );
        assert_eq!(body["phase"], "booting");
    }

    #[test]
    fn first_converged_latches() {
        let health = Health::new();
        health.latch_first_converged();
        health.set_live_peers(0);
        assert!(health.snapshot().first_converged);
    }

    #[test]
    fn healthy_needs_phase_csk_and_convergence() {
        let health = Health::new();
        health.set_phase(Phase::Healthy, "");
        assert!(!health.snapshot().is_healthy());
        health.set_csk_acquired(true);
        health.latch_first_converged();
        assert!(health.snapshot().is_healthy());
    }
}
