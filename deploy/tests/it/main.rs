//! Operator tooling against real things: anvil (with EntryPoint v0.7 placed as on Base), the real
//! deploy script, the in-process devnet with real agents, the real paymaster webhook.

// A failed unwrap is a failed test, with the reason in the panic message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod base_fork;
mod compose;
mod deploy;
mod indexer;
mod operator;
mod podman_compose;
mod support;
mod webhook;
