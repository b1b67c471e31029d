//! Errors of starting and running the bundler (per-request failures are JSON-RPC error replies).

use alloy::primitives::Address;

use super::jsonrpc_server::ServeError;

/// Result alias of the bundler.
pub type Result<T, E = BundlerError> = std::result::Result<T, E>;

/// What can stop the bundler from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum BundlerError {
    /// The chain RPC is unreachable or serves another chain than configured.
    #[error("the bundler cannot use the chain RPC: {0}")]
    Chain(#[from] attestmesh_chain::ChainError),

    /// No EntryPoint at the configured address on this chain.
    #[error(
        "no EntryPoint at {entry_point} on chain {chain_id}: deploy EntryPoint v0.7 first (LocalChain::start does) or fix --bundler.entry-point"
    )]
    NoEntryPoint {
        /// The configured EntryPoint.
        entry_point: Address,
        /// The chain asked.
        chain_id: u64,
    },

    /// The listening address does not make a URL (cannot happen for an IP and a port).
    #[error("the bundler's listening address does not make a URL: {0}")]
    Url(#[source] url::ParseError),

    /// The listener could not be bound.
    #[error(transparent)]
    Listen(#[from] attestmesh_service::listen::ListenError),

    /// The HTTP side failed.
    #[error("bundler HTTP server: {0}")]
    Serve(#[from] ServeError),
}
