//! Gateway host names: `<app_id>-<port>[s|g].<domain>`, the form dstack's gateway routes on.
//!
//! The app id is 40 lowercase hex characters without `0x`; the port is the backend port inside
//! the CVM; the optional suffix picks the TLS mode ([`RouteMode`]). The name arrives as the TLS
//! SNI, so it is matched case-insensitively, as DNS names are.

use std::fmt;

use attestmesh_dstack::EthAddress;

use super::error::{GatewayError, NameError};

/// The gateway domain used when none is configured.
pub const DEFAULT_DOMAIN: &str = "devnet.attestmesh.local";

/// How the gateway treats a connection, chosen by the name's suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteMode {
    /// Suffix `s`: the gateway reads the SNI and splices the raw TCP stream to the backend,
    /// which terminates TLS itself. AttestMesh's WireGuard-over-TLS transport uses this.
    Passthrough,
    /// No suffix: the gateway terminates TLS with its `*.<domain>` certificate, negotiates no
    /// ALPN protocol, and forwards plaintext (field note 10: a gRPC client must assume h2).
    Terminate,
    /// Suffix `g`: the gateway terminates TLS, negotiates ALPN `h2` only, and forwards plaintext.
    TerminateH2,
}

impl RouteMode {
    /// The suffix after the port in the host name.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::Passthrough => "s",
            Self::Terminate => "",
            Self::TerminateH2 => "g",
        }
    }
}

impl fmt::Display for RouteMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Passthrough => "passthrough",
            Self::Terminate => "terminate",
            Self::TerminateH2 => "terminate-h2",
        })
    }
}

/// A parsed gateway host name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GatewayName {
    /// The app (CVM) to reach.
    pub app_id: EthAddress,
    /// The port on the app's host.
    pub port: u16,
    /// The TLS mode.
    pub mode: RouteMode,
}

impl GatewayName {
    /// Parse `<app_id>-<port>[s|g].<domain>`; `domain` must already be validated (lowercase).
    pub fn parse(name: &str, domain: &str) -> Result<Self, NameError> {
        let lower = name.to_ascii_lowercase();
        let label = lower
            .strip_suffix(domain)
            .and_then(|rest| rest.strip_suffix('.'))
            .filter(|label| !label.is_empty())
            .ok_or_else(|| NameError::WrongDomain {
                name: name.to_owned(),
                domain: domain.to_owned(),
            })?;
        let bad = |reason| NameError::BadLabel {
            name: name.to_owned(),
            label: label.to_owned(),
            reason,
        };
        if label.contains('.') {
            return Err(bad("only one label may precede the gateway domain"));
        }
        let (app, rest) = label
            .split_once('-')
            .ok_or_else(|| bad("no '-' between app id and port"))?;
        if app.len() != 40 || !app.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(
                "the app id must be exactly 40 hex characters, without 0x",
            ));
        }
        let app_id = EthAddress::from_hex(app).map_err(|_| bad("the app id is not hex"))?;
        let (digits, mode) = if let Some(digits) = rest.strip_suffix('s') {
            (digits, RouteMode::Passthrough)
        } else if let Some(digits) = rest.strip_suffix('g') {
            (digits, RouteMode::TerminateH2)
        } else {
            (rest, RouteMode::Terminate)
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(
                "the port must be decimal digits, optionally followed by s or g",
            ));
        }
        let port = digits
            .parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| bad("the port must be between 1 and 65535"))?;
        Ok(Self { app_id, port, mode })
    }

    /// The host name under `domain`, e.g. `5bb4…6c56-51820s.devnet.attestmesh.local`.
    pub fn hostname(&self, domain: &str) -> String {
        format!(
            "{}-{}{}.{domain}",
            hex::encode(self.app_id.as_bytes()),
            self.port,
            self.mode.suffix()
        )
    }
}

/// Check a gateway domain and return it lowercased. It must be a multi-label DNS name,
/// because TLS clients refuse a wildcard certificate directly under a single label.
pub fn validate_domain(domain: &str) -> Result<String, GatewayError> {
    let invalid = |reason: &str| GatewayError::InvalidDomain {
        domain: domain.to_owned(),
        reason: reason.to_owned(),
    };
    let lower = domain.to_ascii_lowercase();
    if lower.is_empty() || lower.len() > 253 {
        return Err(invalid("it must be 1 to 253 characters long"));
    }
    let labels: Vec<&str> = lower.split('.').collect();
    if labels.len() < 2 {
        return Err(invalid(
            "it needs at least two labels (TLS clients refuse *.<single label>)",
        ));
    }
    for label in labels {
        let valid_chars = label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if label.is_empty()
            || label.len() > 63
            || !valid_chars
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err(invalid(
                "each label must be 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-'",
            ));
        }
    }
    Ok(lower)
}
