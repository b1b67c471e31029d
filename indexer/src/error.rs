//! Errors of the indexer. Each says what failed, where, and what to do about it.

use alloy::primitives::Address;
use attestmesh_chain::ChainError;
use attestmesh_dstack::DstackError;

/// Result alias of this crate.
pub type Result<T, E = IndexerError> = std::result::Result<T, E>;

/// Everything that stops the indexer or one of its steps.
#[derive(Debug, thiserror::Error)]
pub enum IndexerError {
    /// A chain RPC failed (not a "block does not exist" answer, which is a result).
    #[error(transparent)]
    Chain(#[from] ChainError),

    /// The dstack guest agent could not derive the indexer's key.
    #[error(
        "cannot derive the indexer's Ed25519 key from the TEE: {0} (check the dstack socket, or DSTACK_SIMULATOR_ENDPOINT on a devnet)"
    )]
    Dstack(#[from] DstackError),

    /// The factory address holds no contract at the chain head.
    #[error(
        "no contract at the factory address {factory} at block {head} on chain {chain_id}: check INDEXER_FACTORY and that INDEXER_RPC_URL serves the chain it was deployed to"
    )]
    FactoryMissing {
        factory: Address,
        head: u64,
        chain_id: u64,
    },

    /// The RPC contradicted itself during the start-block search.
    #[error(
        "start-block search for {factory}: {reason} (the RPC may balance over nodes at different heights; set INDEXER_START_BLOCK to the factory's deploy block to skip the search)"
    )]
    InconsistentRpc { factory: Address, reason: String },

    /// A listener could not be bound.
    #[error(transparent)]
    Listen(#[from] attestmesh_service::listen::ListenError),

    /// A server stopped with an error.
    #[error("the {what} server stopped: {reason}")]
    Server { what: &'static str, reason: String },

    /// A configuration value is unusable.
    #[error("invalid configuration {name}: {message}")]
    Config { name: &'static str, message: String },

    /// The indexer was asked to stop.
    #[error("shut down")]
    Shutdown,
}
