//! Errors of starting and running the gas manager (per-request failures are JSON-RPC error
//! replies).

use alloy::primitives::Address;

use crate::bundler::ServeError;

/// Result alias of the gas manager.
pub type Result<T, E = GasManagerError> = std::result::Result<T, E>;

/// What can stop the gas manager from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum GasManagerError {
    /// The chain RPC is unreachable, serves another chain, or a start-up read failed.
    #[error("the gas manager cannot use the chain RPC: {0}")]
    Chain(#[from] attestmesh_chain::ChainError),

    /// The configured sponsor key is not the paymaster's verifying signer: every signature would
    /// fail with AA34.
    #[error(
        "the sponsor key's address {sponsor} is not the verifyingSigner {signer} of the paymaster at {paymaster}: use the paymaster's sponsor key (LocalChain::sponsor on the devnet) or deploy a paymaster for this key"
    )]
    WrongSponsor {
        sponsor: Address,
        signer: Address,
        paymaster: Address,
    },

    /// The paymaster serves another EntryPoint.
    #[error("the paymaster at {paymaster} serves EntryPoint {actual}, not {expected}")]
    WrongEntryPoint {
        paymaster: Address,
        expected: Address,
        actual: Address,
    },

    /// The bundler is unreachable or does not serve the EntryPoint.
    #[error("the gas manager cannot use the bundler: {0} (start the bundler first)")]
    Bundler(String),

    /// A setting is unusable.
    #[error("invalid gas manager configuration: {0}")]
    Config(String),

    /// The listener could not be bound.
    #[error(transparent)]
    Listen(#[from] attestmesh_service::listen::ListenError),

    /// The HTTP side failed.
    #[error("gas manager HTTP server: {0}")]
    Serve(#[from] ServeError),
}
