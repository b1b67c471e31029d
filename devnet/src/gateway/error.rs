//! Errors of the gateway emulator: starting it, configuring it, and the per-connection
//! refusals it logs.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Result alias of the gateway emulator.
pub type Result<T, E = GatewayError> = std::result::Result<T, E>;

/// What can go wrong configuring, starting or running the gateway emulator.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The gateway domain is not a DNS name a wildcard certificate can cover.
    #[error(
        "invalid gateway domain {domain:?}: {reason}; pass a lowercase DNS name such as \
         devnet.attestmesh.local to --gateway.domain"
    )]
    InvalidDomain {
        /// The configured domain.
        domain: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A route (`<app_id>=<ip>`, from a flag or the routes file) does not parse.
    #[error(
        "invalid gateway route {route:?}: {reason}; expected <app_id>=<ip>, app id 20-byte hex"
    )]
    InvalidRoute {
        /// The route as given.
        route: String,
        /// Why it was rejected.
        reason: String,
    },

    /// The routes file cannot be read.
    #[error("cannot read the gateway routes file {path}: {source}; check --gateway.routes-file")]
    RoutesFileRead {
        /// The routes file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// The routes file is not a JSON object of app id to IP.
    #[error(
        "gateway routes file {path} is invalid: {reason}; it must be a JSON object \
         {{\"<app_id hex>\": \"<ip>\", ...}}"
    )]
    RoutesFileFormat {
        /// The routes file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Generating the devnet CA or the gateway's certificate failed.
    #[error("cannot generate the gateway's devnet {what}: {source}")]
    Certificate {
        /// "CA" or "wildcard certificate".
        what: &'static str,
        /// The rcgen error.
        #[source]
        source: rcgen::Error,
    },

    /// rustls refused the generated certificate or configuration.
    #[error("cannot build the gateway's TLS configuration: {0}")]
    Tls(#[from] rustls::Error),

    /// The CA certificate could not be written where clients expect it.
    #[error(
        "cannot write the gateway CA certificate to {path}: {source}; choose another \
         --gateway.ca-cert path"
    )]
    CaFile {
        /// The configured path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// The listening socket could not be set up.
    #[error(
        "gateway cannot {action} {addr}: {source}; is another gateway running there? choose \
         another --gateway.listen address"
    )]
    Listen {
        /// What we were doing, e.g. "bind".
        action: &'static str,
        /// The configured listen address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// `spawn` was called outside a tokio runtime.
    #[error("the gateway emulator must be spawned from inside a tokio runtime")]
    NoRuntime,

    /// A signal handler could not be installed (command line only).
    #[error("gateway cannot watch {signal}: {source}")]
    Signal {
        /// The signal name.
        signal: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// The accept loop stopped without being asked to.
    #[error("gateway accept loop stopped unexpectedly")]
    Stopped,

    /// The accept task panicked or was cancelled.
    #[error("gateway task ended abnormally: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Why a gateway host name (the SNI) does not name a route. Returned by
/// [`GatewayName::parse`](super::GatewayName::parse); the gateway logs it and closes the
/// connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is not under the gateway's domain.
    #[error("{name:?} is not under the gateway domain {domain:?}")]
    WrongDomain {
        /// The name as received.
        name: String,
        /// The gateway's domain.
        domain: String,
    },

    /// The first label is not `<app_id>-<port>[s|g]`.
    #[error("{name:?}: first label {label:?} is not <app_id>-<port>[s|g]: {reason}")]
    BadLabel {
        /// The name as received.
        name: String,
        /// The first label.
        label: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}
