//! Agent integration tests on the in-process devnet: real anvil, EntryPoint v0.7, contracts,
//! webhook, bundler, gas manager and dstack simulators; agents run in-process.

// A failed unwrap is a failed test, with the reason in the panic message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent;
mod chain_view;
mod cluster;
mod convergence;
mod epochs;
mod faults;
mod grpcio;
mod harness;
mod mesh;
mod secrets;
