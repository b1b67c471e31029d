//! `cluster-mesh-agent`: the AttestMesh sidecar.
//!
//! [`boot`] runs the seed's phases in order, each a named step, and starts one task per
//! long-running subsystem; [`health::Health`] is the one place the phase machine lives, and
//! every subsystem reports to it. Modules depend downwards only (no import circles;
//! `tools/module-cycles.py` checks):
//!
//! - the runner: [`boot`];
//! - what it starts: [`api`] (gRPC on a unix socket, `/healthz`, `/metrics`), [`peering`] (the
//!   mesh: [`mesh`], [`heartbeat`], [`csk`]), `events` (intake applied to the state),
//!   [`registration`], [`intake`] and [`indexer_client`] (chain logs polled, indexer pushes
//!   verified), [`send`] and [`outbox`] (sponsored operations);
//! - the shared state: [`state::Node`];
//! - what the state is made of: [`config`], [`identity`] (keys from the TEE), [`cluster`] (the
//!   member set), [`messages`] (sealing), [`inbox`], [`health`], [`metrics`].

pub mod api;
pub mod boot;
pub mod cluster;
pub mod config;
pub mod csk;
pub mod envelope;
mod events;
pub mod health;
pub mod heartbeat;
pub mod identity;
pub mod inbox;
pub mod indexer_client;
pub mod intake;
pub mod log_limit;
pub mod mesh;
pub mod messages;
pub mod metrics;
pub mod outbox;
pub mod peering;
pub mod registration;
pub mod send;
/// The process-wide shutdown signal (shared with every AttestMesh binary).
pub use attestmesh_service::shutdown;
pub mod state;
pub mod status;
pub mod unix_authority;

/// Log targets, one per boundary.
pub mod targets {
    pub const AGENT: &str = "attestmesh::agent";
    pub const DSTACK: &str = "attestmesh::dstack";
    pub const CHAIN: &str = "attestmesh::chain";
    pub const API: &str = "attestmesh::api";
    pub const PEERS: &str = "attestmesh::peers";
}
