//! Errors of the mesh dataplane. Each says what failed and what to do about it.

/// Why the mesh could not start (or a TLS identity could not be built).
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// The configuration cannot work; nothing was created.
    #[error("invalid mesh configuration: {0}")]
    InvalidConfig(String),
    /// The TUN device could not be created or configured.
    #[error(
        "cannot create TUN {interface}: {source} (needs root or CAP_NET_ADMIN and /dev/net/tun; \
         is another agent already running {interface} in this network namespace?)"
    )]
    Tun {
        interface: String,
        #[source]
        source: tun::Error,
    },
    /// The transport listener could not be bound.
    #[error(transparent)]
    Listen(#[from] attestmesh_service::listen::ListenError),
    /// The transport certificate could not be generated from its seed.
    #[error("cannot build the transport TLS certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused a configuration (a bug: the inputs are generated here).
    #[error("cannot configure TLS for the mesh transport ({what}): {source}")]
    Tls {
        what: &'static str,
        #[source]
        source: rustls::Error,
    },
}

/// `Result` with [`MeshError`].
pub type Result<T, E = MeshError> = std::result::Result<T, E>;
