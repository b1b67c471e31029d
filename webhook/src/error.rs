//! Errors of starting and running the webhook. Request-level problems are not errors here: they
//! are answers (a denial or a JSON error reply), because the service must keep serving.
//!
//! Chain errors are boxed: alloy's errors are large, and every `Result` of this crate would
//! otherwise carry their size.

use std::path::PathBuf;

use alloy::primitives::Address;
use attestmesh_chain::ChainError;

/// Result alias of this crate.
pub type Result<T, E = WebhookError> = std::result::Result<T, E>;

/// Why the webhook could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// A configuration value is unusable; the message says which and how to fix it.
    #[error("invalid webhook configuration: {0}")]
    Config(String),

    /// The secret file could not be read.
    #[error("cannot read the webhook secret from {path}: {source}")]
    SecretFile {
        /// The configured file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// The chain RPC could not be reached at start-up, or serves another chain.
    #[error(
        "cannot use the chain RPC at {endpoint} (expected chain id {chain_id}): {source}; \
         check --rpc-url and --chain-id"
    )]
    Connect {
        /// The RPC URL without credentials or path.
        endpoint: String,
        /// The configured chain id.
        chain_id: u64,
        /// What the chain client reported.
        #[source]
        source: Box<ChainError>,
    },

    /// A policy's cluster address holds no contract on the configured chain (or its code could
    /// not be read). Serving anyway would deny every operation with an opaque reason.
    #[error(
        "policy {policy_id:?} maps to cluster {cluster}, which cannot be used: {source}; \
         check --policy {policy_id}=<cluster address> against --chain-id"
    )]
    ClusterMissing {
        /// The gas manager's policy id.
        policy_id: String,
        /// The configured cluster address.
        cluster: Address,
        /// What the chain client reported.
        #[source]
        source: Box<ChainError>,
    },

    /// A policy's cluster address holds a contract that does not answer the sponsorship view,
    /// e.g. the factory or a member account instead of the cluster diamond.
    #[error(
        "policy {policy_id:?} maps to {cluster}, which does not answer the sponsorship policy \
         view checkSponsorship ({source}); is it an AttestMesh cluster diamond?"
    )]
    NotACluster {
        /// The gas manager's policy id.
        policy_id: String,
        /// The configured cluster address.
        cluster: Address,
        /// What the chain client reported.
        #[source]
        source: Box<ChainError>,
    },

    /// A start-up chain call did not answer in time (an RPC that accepts but never answers).
    #[error(
        "the chain RPC at {endpoint} did not answer {call} within {timeout:?}; check --rpc-url, \
         or raise --chain-timeout-ms for a slow RPC"
    )]
    ChainTimeout {
        /// The call that timed out.
        call: String,
        /// The RPC URL without credentials or path.
        endpoint: String,
        /// The configured timeout.
        timeout: std::time::Duration,
    },

    /// The listen address could not be bound.
    #[error(transparent)]
    Bind(#[from] attestmesh_service::listen::ListenError),

    /// The HTTP server stopped with an error, without being asked to, or abnormally.
    #[error(transparent)]
    Serve(#[from] attestmesh_service::http::ServeError),
}
