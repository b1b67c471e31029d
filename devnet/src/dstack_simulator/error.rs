//! Errors of the dstack simulator.

use std::path::PathBuf;

/// Result alias of the dstack simulator.
pub type Result<T, E = SimulatorError> = std::result::Result<T, E>;

/// What can go wrong starting or running the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    /// A configured key is unusable.
    #[error("invalid dstack simulator key ({what}): {reason}")]
    InvalidKey {
        /// Which key.
        what: &'static str,
        /// Why.
        reason: String,
    },

    /// Deriving a key never produced a valid secp256k1 scalar (probability ~2^-32000).
    #[error("HKDF never produced a valid secp256k1 scalar for {what}; pick another seed")]
    NoValidScalar {
        /// Which key.
        what: &'static str,
    },

    /// Signing the chain failed.
    #[error("dstack simulator failed to sign: {0}")]
    Chain(#[from] attestmesh_dstack::DstackError),

    /// Something already exists at the socket path and it is not a socket: refuse to delete it.
    #[error(
        "{path} exists and is not a unix socket; refusing to delete it: choose another \
         --dstack.socket path or remove the file yourself"
    )]
    NotASocket {
        /// The configured socket path.
        path: PathBuf,
    },

    /// Another process is serving on the socket path.
    #[error(
        "{path} is a live socket (something answers on it); stop that process or choose another \
         --dstack.socket path"
    )]
    InUse {
        /// The configured socket path.
        path: PathBuf,
    },

    /// A file-system or socket operation on the listening socket failed.
    #[error("dstack simulator cannot {action} {path}: {source}")]
    Socket {
        /// What we were doing, e.g. "bind".
        action: &'static str,
        /// Socket path (or TCP address).
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// `spawn` was called outside a tokio runtime.
    #[error("the dstack simulator must be spawned from inside a tokio runtime")]
    NoRuntime,

    /// The HTTP server stopped with an error.
    #[error("dstack simulator HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),

    /// The server task panicked or was cancelled.
    #[error("dstack simulator task ended abnormally: {0}")]
    Task(#[from] tokio::task::JoinError),
}
