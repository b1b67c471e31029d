//! Indexer integration tests: anvil starting at block 47 000 000 (history below it does not
//! exist, like a chain whose early state is not served), the contracts from the real deploy
//! script, the indexer as a real process, and the agent's indexer client.

// A failed unwrap is a failed test, with the reason in the panic message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod anomalies;
mod catch_up;
mod client;
mod harness;
mod limits;
mod reorg;
