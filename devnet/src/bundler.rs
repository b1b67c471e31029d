//! A devnet ERC-4337 bundler for EntryPoint v0.7: a stand-in for a production bundler (and for
//! `@pimlico/alto`, which the devnet can run instead) that speaks the same JSON-RPC.
//!
//! * `eth_sendUserOperation [op, entryPoint]`: checks the fields, the entry point and the chain,
//!   **simulates** `handleOps([op], beneficiary)` by `eth_call` from the executor, and rejects a
//!   failing op with -32500 (-32501 when the paymaster is at fault, ERC-7769) and the decoded AA
//!   reason; otherwise sends a bundle of that one op from the executor key and answers the
//!   userOpHash without waiting for inclusion.
//! * `eth_estimateUserOperationGas [op, entryPoint]`: measured on the chain piece by piece; see
//!   [`estimate`](self::estimate) for the method, the margins and the limits (undeployed senders).
//! * `eth_getUserOperationReceipt [hash]`, `eth_getUserOperationByHash [hash]`: from the bundle
//!   transaction's receipt; `null` while unknown or pending.
//! * `eth_supportedEntryPoints`, `eth_chainId`.
//!
//! Every hex value it writes is even-length (field note 2). Bad input gets a JSON-RPC error that
//! names the field, and the service keeps serving (the envelope handling in `jsonrpc_server` is
//! shared with the gas manager). It enforces none of the ERC-7562 validation rules (storage
//! access, banned opcodes): a breach is caught by the contracts' own tests and by running alto,
//! not here.
//!
//! Limits of a stand-in: simulation runs against the latest block, so a second op from the same
//! sender is accepted once the first is mined (a client that waits for receipts, as
//! `SponsoredSender` does, never notices); sent ops are remembered in memory only, so a
//! restarted bundler answers `null` for earlier hashes.
//!
//! Tests start one in-process with [`Bundler::spawn`]; `attestmesh-devnet bundler` runs one
//! standalone.

mod args;
mod chain_calls;
mod error;
pub mod estimate;
pub(crate) mod jsonrpc_server;
pub mod packed;
mod receipt;
mod server;
mod service;

pub(crate) use args::KeyParser;
pub use args::{BundlerArgs, run};
pub use error::{BundlerError, Result};
pub use jsonrpc_server::{DEFAULT_MAX_BODY_BYTES, ServeError};
pub(crate) use server::service_url;
pub use server::{Bundler, BundlerConfig, BundlerHandle};
pub use service::METHODS;

/// `tracing` target of the bundler's log lines (requests are logged under
/// [`jsonrpc_server::LOG_TARGET`]).
pub const LOG_TARGET: &str = "attestmesh::devnet::bundler";
