//! The one dstack guest-agent client of AttestMesh.
//!
//! Every AttestMesh binary (sidecar, indexer, devnet tools) talks to dstack through this crate:
//! field note 1 is that a duplicated client duplicates failures (the removed `/DeriveKey`
//! endpoint was found twice, months apart, in two copies of a client).
//!
//! * [`DstackClient`] speaks HTTP/1.1 with JSON bodies to the guest agent on its unix socket
//!   (found with [`Endpoint::discover`]): [`DstackClient::get_key`],
//!   [`DstackClient::get_quote`], [`DstackClient::info`].
//! * [`chain`] holds dstack's key derivation and signature-chain format, used both to verify
//!   (here) and to sign (in the devnet simulator).
//! * [`wire`] is the JSON format itself, shared with the simulator.
//!
//! Requests and responses are logged at debug under the target [`LOG_TARGET`]; key material is
//! never logged.

pub mod chain;
mod client;
mod endpoint;
mod error;
mod types;
pub mod wire;

pub use chain::{
    ChainSignature, EthAddress, PublicKey, RecoveredChain, SecretKeyBytes, SignatureChain,
    SignatureError, recover_signature_chain, recover_signature_chain_for_secret,
};
pub use client::{DEFAULT_TIMEOUT, DstackClient, MAX_REPORT_DATA_LEN};
pub use endpoint::{DEFAULT_SOCKET_PATHS, ENDPOINT_ENV, Endpoint};
pub use error::{DstackError, Result};
pub use types::{AppInfo, GetKeyResponse, QuoteResponse};

/// Re-exported so callers can use the same k256 the chain types wrap.
pub use k256;

/// `tracing` target of every log line of this crate.
pub const LOG_TARGET: &str = "attestmesh::dstack";
