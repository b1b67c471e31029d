//! Errors of chain access.

use alloy::primitives::Address;

/// Result alias of this crate.
pub type Result<T, E = ChainError> = std::result::Result<T, E>;

/// A chain read or write that failed, with what was asked of whom.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The RPC could not be reached or answered with an error (not a revert).
    #[error(
        "chain RPC {call} at {endpoint} failed: {source} (check that the RPC is up and serves this chain)"
    )]
    Rpc {
        call: String,
        endpoint: String,
        #[source]
        source: Box<alloy::contract::Error>,
    },
    /// A transport-level failure outside a contract call (block number, logs, chain id).
    #[error(
        "chain RPC {call} at {endpoint} failed: {source} (check that the RPC is up and serves this chain)"
    )]
    Transport {
        call: String,
        endpoint: String,
        #[source]
        source: alloy::transports::TransportError,
    },
    /// The call reverted; `reason` is the decoded custom error with advice.
    #[error("{call} reverted: {reason}")]
    Reverted { call: String, reason: String },
    /// The RPC serves another chain than configured.
    #[error("the RPC at {endpoint} serves chain {actual}, but {expected} was configured")]
    WrongChain {
        endpoint: String,
        expected: u64,
        actual: u64,
    },
    /// An address that must hold a contract has no code.
    #[error(
        "no contract at {address} ({what}) on chain {chain_id}: check the address and the chain"
    )]
    NoCode {
        what: String,
        address: Address,
        chain_id: u64,
    },
    /// A transaction was mined but reverted.
    #[error("transaction {call} ({tx}) reverted on chain")]
    TransactionReverted { call: String, tx: String },
    /// A configuration value is unusable.
    #[error("invalid chain configuration: {0}")]
    Config(String),
    /// The endpoint has no block the other endpoints of the quorum reached.
    #[error("the RPC at {endpoint} has no block {block} yet (behind the other endpoints)")]
    MissingBlock { endpoint: String, block: u64 },
}

impl ChainError {
    /// Wraps a contract-call error: a revert becomes [`ChainError::Reverted`] with the decoded
    /// reason, anything else stays an RPC failure.
    pub fn from_call(
        call: impl Into<String>,
        endpoint: &str,
        source: alloy::contract::Error,
    ) -> Self {
        let call = call.into();
        match source.as_revert_data() {
            Some(data) => ChainError::Reverted {
                call,
                reason: crate::revert::decode(&data),
            },
            None => ChainError::Rpc {
                call,
                endpoint: endpoint.to_string(),
                source: Box::new(source),
            },
        }
    }
}
