//! `cluster-mesh-agent`: the AttestMesh sidecar.
//!
//! Each long-running subsystem is a task; [`health::Health`] is the one place the phase machine
//! lives, and every subsystem reports to it. Modules, in the order a node boots:
//! [`config`] → [`identity`] (keys from the TEE) → [`registration`] (attested, sponsored,
//! restart-safe) → [`intake`] (chain-log polling, the indexer's slot) → [`cluster`] (the member
//! set) → [`messages`] (sealed messages) → [`api`] (gRPC on a unix socket) and [`health`]
//! (`/healthz`, `/metrics`).

pub mod api;
pub mod cluster;
pub mod config;
pub mod csk;
pub mod envelope;
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
pub mod node;
pub mod outbox;
pub mod peering;
pub mod registration;
/// The process-wide shutdown signal (shared with every AttestMesh binary).
pub use attestmesh_service::shutdown;
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
