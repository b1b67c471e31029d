//! AttestMesh operator tooling (`attestmesh-operator`).
//!
//! Field note 4 is this crate's rule: infra invariants are encoded in the deploy routines, not in
//! anyone's memory. Every routine asserts what must hold before it acts and what must hold after,
//! and each failure says what is wrong and what to do.
//!
//! * [`deploy`]: the contracts through `script/Deploy.s.sol` (idempotent CREATE2), with the chain
//!   id, the deployer's funds, EntryPoint v0.7 and the deterministic deployer asserted before,
//!   and the deployments file, code at every address and the EntryPoint wiring asserted after.
//! * [`operator`]: cluster administration (create, allowlists, member accounts, revocation,
//!   indexer registry, `show`), through the project's one chain client.
//! * [`dstack_kms`]: the KMS root read from dstack's on-chain `DstackKms`, never hard-coded.
//! * [`webhook_check`] and [`indexer_check`]: the live routes reach the right service; logs are
//!   scraped only after escape codes are stripped (field note 9).
//! * [`cli`]: the command line over all of it.

pub mod cli;
pub mod deploy;
pub mod deployments;
pub mod dstack_kms;
mod error;
pub mod forge;
pub mod indexer_check;
pub mod operator;
pub mod signer;
pub mod webhook_check;

pub use error::{DeployError, Result};

/// `tracing` target of every log line of this crate.
pub const LOG_TARGET: &str = "attestmesh::deploy";
