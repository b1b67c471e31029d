//! The AttestMesh local devnet: emulators of what a node meets in production, one module each,
//! and the `attestmesh-devnet` command that runs them (see [`cli`]).
//!
//! Today: [`dstack_simulator`]. Later: `up`/`down` for the whole devnet and more emulators
//! (gateway, gas manager, ...), each a module beside it.

pub mod cli;
pub mod dstack_simulator;
