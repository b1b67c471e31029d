//! A dstack guest-agent simulator: the real wire format and signature chain, devnet keys.
//!
//! It serves `POST /GetKey`, `/GetQuote` and `/Info` over HTTP/1.1 on a unix socket, like
//! dstack's guest agent, so every AttestMesh binary runs unchanged against it (they find it
//! through `DSTACK_SIMULATOR_ENDPOINT`). `/DeriveKey`, removed in dstack 0.5, answers 404.
//!
//! * Keys ([`keys`]): a devnet KMS root issues the app key for the configured app id, and
//!   `/GetKey` derives and signs exactly as dstack does, so the on-chain verifier and the
//!   client check the same chain they will meet in production. Same seed and app id, same keys.
//! * Quotes ([`quote`]): clearly labelled fakes embedding the report data; no TDX.
//! * Tests in any crate start one in-process with [`DstackSimulator::spawn`].

mod args;
mod error;
pub mod keys;
pub mod quote;
mod server;

pub use args::{DstackSimulatorArgs, run};
pub use error::{Result, SimulatorError};
pub use keys::KeySource;
pub use quote::SimulatedQuote;
pub use server::{DstackSimulator, SimulatorConfig, SimulatorHandle};

/// `tracing` target of the simulator's log lines.
pub const LOG_TARGET: &str = "attestmesh::devnet::dstack_simulator";
