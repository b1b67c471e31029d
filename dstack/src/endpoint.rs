//! Where the guest agent listens, and how to find it.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{DstackError, Result};

/// Environment variable naming the agent: a unix socket path, or `http://host:port` for TCP.
/// dstack's own SDKs read the same variable to reach its simulator.
pub const ENDPOINT_ENV: &str = "DSTACK_SIMULATOR_ENDPOINT";

/// Where dstack mounts the guest-agent socket, probed in this order after the environment.
pub const DEFAULT_SOCKET_PATHS: [&str; 3] = [
    "/var/run/dstack.sock",
    "/run/dstack.sock",
    "/var/run/dstack/dstack.sock",
];

/// A guest-agent address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// HTTP over a unix socket (the real guest agent).
    Unix(PathBuf),
    /// HTTP over TCP, `host:port` (some simulators).
    Tcp(String),
}

impl Endpoint {
    /// Parse `http://host:port[/]`, `unix:/path` or a plain socket path.
    pub fn parse(value: &str) -> Result<Self> {
        let invalid = |reason: &str| DstackError::InvalidEndpoint {
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        if value.is_empty() {
            return Err(invalid("it is empty"));
        }
        if value.starts_with("https://") {
            return Err(invalid(
                "TLS is not supported; the guest agent speaks plain HTTP",
            ));
        }
        if let Some(rest) = value.strip_prefix("http://") {
            let authority = rest.trim_end_matches('/');
            if authority.is_empty() || authority.contains('/') {
                return Err(invalid("expected http://host:port with no path"));
            }
            // Require an explicit port: a guessed :80 would hide a misconfiguration.
            match authority.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
                _ => return Err(invalid("expected http://host:port with a numeric port")),
            }
            return Ok(Self::Tcp(authority.to_owned()));
        }
        let path = value.strip_prefix("unix:").unwrap_or(value);
        if path.is_empty() {
            return Err(invalid("the socket path is empty"));
        }
        Ok(Self::Unix(PathBuf::from(path)))
    }

    /// Find the agent: `socket_override` if given, else `$DSTACK_SIMULATOR_ENDPOINT` if set,
    /// else the first of [`DEFAULT_SOCKET_PATHS`] that exists.
    pub fn discover(socket_override: Option<&Path>) -> Result<Self> {
        let env = std::env::var_os(ENDPOINT_ENV);
        let defaults = DEFAULT_SOCKET_PATHS.map(Path::new);
        Self::discover_from(socket_override, env.as_deref(), &defaults)
    }

    /// [`Self::discover`] with the environment value and candidate paths passed in, so the
    /// order can be tested without touching the process environment.
    ///
    /// An explicit override or a set environment variable is used as is, without probing:
    /// the operator chose it, and if it is wrong the connect error names it. Falling through
    /// to another socket would silently talk to a different agent.
    pub fn discover_from(
        socket_override: Option<&Path>,
        env_value: Option<&OsStr>,
        candidates: &[&Path],
    ) -> Result<Self> {
        if let Some(path) = socket_override {
            return Ok(Self::Unix(path.to_owned()));
        }
        if let Some(value) = env_value.filter(|value| !value.is_empty()) {
            return match value.to_str() {
                Some(text) => Self::parse(text),
                // Not UTF-8: it cannot be a URL, so it is a path.
                None => Ok(Self::Unix(PathBuf::from(value))),
            };
        }
        if let Some(found) = candidates.iter().find(|path| path.exists()) {
            return Ok(Self::Unix(found.to_path_buf()));
        }
        let mut tried = vec![format!("${ENDPOINT_ENV} (unset)")];
        tried.extend(candidates.iter().map(|path| path.display().to_string()));
        Err(DstackError::NoSocket {
            tried: tried.join(", "),
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Tcp(authority) => write!(f, "http://{authority}"),
        }
    }
}
