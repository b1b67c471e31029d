//! The AttestMesh local devnet: emulators of what a node meets in production, one module each,
//! and the `attestmesh-devnet` command that runs them (see [`cli`]).
//!
//! Today: [`dstack_simulator`] and [`gateway`]. Later: `up`/`down` for the whole devnet and
//! more emulators (gas manager, ...), each a module beside them.

pub mod alto;
pub mod bundler;
pub mod cli;
pub mod dstack_simulator;
pub mod fault_proxy;
pub mod gas_manager;
pub mod gateway;
pub mod local_chain;
pub mod netns;
pub mod stack;
pub mod up;
