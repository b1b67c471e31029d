//! The one chain client of AttestMesh (every binary uses it): typed calls through the generated
//! bindings with every RPC failure propagated and every revert decoded into words
//! ([`ChainClient`]), a small JSON-RPC client for bundlers and gas managers ([`RpcClient`]), and
//! sponsored ERC-4337 UserOperations ([`SponsoredSender`]).
//!
//! Field note 5 is the rule here: no RPC result is ever defaulted. A failed read is an error that
//! names the call and the endpoint — by scheme, host and port ([`redact`]): endpoint URLs carry
//! API keys, and no error, log line or status of any crate quotes one.

mod client;
mod error;
pub mod proof;
mod quorum;
pub mod redact;
pub mod revert;
mod rpc;
mod userop;

pub use client::{ChainClient, SponsorshipDecision};
pub use error::{ChainError, Result};
pub use quorum::{Agreed, ChainView, QuorumError, block_hash};
pub use rpc::{RpcClient, RpcError};
pub use userop::{
    DUMMY_SIGNATURE, InitCode, NonceKey, SendOptions, SponsoredSender, UserOpError,
    dummy_signature, packed_for_entry_point, revert_reason,
};

/// Log targets, one per boundary.
pub mod targets {
    pub const CHAIN: &str = "attestmesh::chain";
    /// The ERC-4337 services (bundler, gas manager); the `service` field says which.
    pub const RPC: &str = "attestmesh::erc4337";
    /// The UserOperation flow of one node.
    pub const USEROP: &str = "attestmesh::userop";
}
