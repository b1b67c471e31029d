//! Errors of the dstack client. Each variant says what failed, where, and what to do next.

use std::time::Duration;

/// Result alias used throughout this crate.
pub type Result<T, E = DstackError> = std::result::Result<T, E>;

/// Everything that can go wrong talking to the dstack guest agent or checking what it returned.
#[derive(Debug, thiserror::Error)]
pub enum DstackError {
    /// Discovery found neither `$DSTACK_SIMULATOR_ENDPOINT` nor any well-known socket.
    #[error(
        "no dstack guest-agent socket found (tried {tried}); set DSTACK_SIMULATOR_ENDPOINT or \
         mount /var/run/dstack.sock into the container"
    )]
    NoSocket {
        /// Human-readable list of what was probed, in order.
        tried: String,
    },

    /// An endpoint string (from the environment or configuration) could not be understood.
    #[error(
        "invalid dstack endpoint {value:?}: {reason}; use a unix socket path or http://host:port"
    )]
    InvalidEndpoint {
        /// The string as given.
        value: String,
        /// Why it was rejected.
        reason: String,
    },

    /// The socket / TCP address could not be opened.
    #[error(
        "cannot connect to the dstack guest agent at {agent}: {source}; check that the socket \
         exists and that this process may open it (or set DSTACK_SIMULATOR_ENDPOINT)"
    )]
    Connect {
        /// Where we tried to connect.
        agent: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// The HTTP/1.1 exchange itself failed (connection reset, malformed HTTP, ...).
    #[error("HTTP exchange with the dstack guest agent at {agent} for {endpoint} failed: {source}")]
    Http {
        /// Where we were connected.
        agent: String,
        /// The guest-agent endpoint, e.g. `/GetKey`.
        endpoint: &'static str,
        /// The transport error.
        #[source]
        source: hyper::Error,
    },

    /// The guest agent did not answer in time.
    #[error(
        "the dstack guest agent at {agent} did not answer {endpoint} within {after:?}; is the \
         agent overloaded or hung? raise the client timeout if this is expected"
    )]
    Timeout {
        /// Where we were connected.
        agent: String,
        /// The guest-agent endpoint.
        endpoint: &'static str,
        /// The timeout that elapsed.
        after: Duration,
    },

    /// The guest agent answered with an error status (dstack sends `{"error": "..."}` with 400/500).
    #[error("the dstack guest agent rejected {endpoint} with HTTP {status}: {message}")]
    Agent {
        /// The guest-agent endpoint.
        endpoint: &'static str,
        /// HTTP status code.
        status: u16,
        /// dstack's own message (the `error` field), or the raw body if it was not JSON.
        message: String,
    },

    /// The guest agent answered 2xx but the body is not what dstack >= 0.5 sends.
    #[error(
        "the dstack guest agent returned a malformed {endpoint} response: {reason}; is this a \
         dstack >= 0.5 guest agent?"
    )]
    InvalidResponse {
        /// The guest-agent endpoint.
        endpoint: &'static str,
        /// What was wrong, naming the field.
        reason: String,
    },

    /// A request argument was rejected before anything was sent.
    #[error("invalid {endpoint} request: {reason}")]
    InvalidRequest {
        /// The guest-agent endpoint.
        endpoint: &'static str,
        /// What was wrong.
        reason: String,
    },

    /// A signature of the chain is malformed or does not recover a public key.
    #[error("invalid dstack signature {which}: {source}")]
    InvalidSignature {
        /// Which signature, e.g. `signature_chain[1] (KMS root over app key)`.
        which: &'static str,
        /// What was wrong.
        #[source]
        source: SignatureError,
    },

    /// HKDF expansion failed; only possible for absurd output lengths, so this is a bug.
    #[error(
        "HKDF-SHA256 expansion failed while deriving {what}; this is a bug in attestmesh-dstack"
    )]
    Kdf {
        /// What was being derived.
        what: &'static str,
    },

    /// Key bytes are not a valid secp256k1 secret key (zero or not below the group order).
    #[error("{what} is not a valid secp256k1 secret key (zero or >= group order)")]
    InvalidSecretKey {
        /// Which key.
        what: &'static str,
    },

    /// The chain is internally consistent but was issued by a KMS root we do not trust.
    #[error(
        "the signature chain was issued by KMS root {recovered} (address {recovered_address}), \
         which is not the trusted root {expected}; check the KMS root allowlist and that the \
         app id and purpose match what the agent signed"
    )]
    UntrustedKmsRoot {
        /// Compressed pubkey recovered from `signature_chain[1]`, hex.
        recovered: String,
        /// Its Ethereum address.
        recovered_address: String,
        /// What the caller expected, hex.
        expected: String,
    },
}

/// What went wrong with one signature (wrapped in [`DstackError::InvalidSignature`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Not hex.
    #[error("{0}")]
    Hex(String),
    /// Not 65 bytes.
    #[error("expected 65 bytes r||s||v, got {0}")]
    Length(usize),
    /// The recovery byte is not one dstack or Ethereum uses.
    #[error("recovery byte v = {0} is not 0, 1, 27 or 28")]
    RecoveryByte(u8),
    /// r or s out of range.
    #[error("r or s is zero or not below the secp256k1 group order")]
    Scalar,
    /// Malleable high-s form; dstack emits low-s and OpenZeppelin's ECDSA rejects high-s.
    #[error("s is in the upper half of the group order (malleable high-s signature)")]
    HighS,
    /// No public key recovers from this signature and message.
    #[error("no public key recovers from this signature over this message")]
    Recovery,
    /// Signing failed (only in the simulator's signing path).
    #[error("signing failed: {0}")]
    Sign(String),
}
