//! Agent integration tests on the in-process devnet: real anvil, EntryPoint v0.7, contracts,
//! webhook, bundler, gas manager and dstack simulators; agents run in-process.

// A failed unwrap is a failed test, with the reason in the panic message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent;
mod cluster;
mod epochs;
mod faults;
mod harness;
mod mesh;
