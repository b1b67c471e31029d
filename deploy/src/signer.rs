//! The operator's key: read from a file or from a named environment variable, never from a
//! command-line argument (argv is readable by every local user through `ps`).

use std::path::{Path, PathBuf};

use alloy::signers::local::PrivateKeySigner;
use tracing::warn;
use zeroize::Zeroizing;

use crate::LOG_TARGET;
use crate::error::{DeployError, Result};

/// Where the key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A file holding the hex key (`0x` optional, surrounding whitespace ignored).
    File(PathBuf),
    /// The environment variable of this name holds the hex key.
    Env(String),
}

/// Loads the signer from `source`. Errors name the source, never the key material.
pub fn load_signer(source: &KeySource) -> Result<PrivateKeySigner> {
    match source {
        KeySource::File(path) => {
            warn_if_readable_by_others(path);
            let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
                DeployError::Io {
                    action: "read the private key file",
                    path: path.clone(),
                    source,
                }
            })?);
            parse_key(&text, &format!("the private key file {}", path.display()))
        }
        KeySource::Env(name) => {
            let text = Zeroizing::new(std::env::var(name).map_err(|_| {
                DeployError::input(
                    "--private-key-env",
                    format!("the environment variable {name} is not set (or not UTF-8): export it with the operator's hex private key"),
                )
            })?);
            parse_key(&text, &format!("the environment variable {name}"))
        }
    }
}

/// Parses a 32-byte hex private key; `origin` names where it came from.
pub fn parse_key(text: &str, origin: &str) -> Result<PrivateKeySigner> {
    let trimmed = text.trim();
    let hex_part = trimmed.strip_prefix("0x").unwrap_or(trimmed);
    let bytes = Zeroizing::new(hex::decode(hex_part).map_err(|_| {
        DeployError::input(
            "private key",
            format!("{origin} does not hold a hex private key (64 hex digits, 0x optional)"),
        )
    })?);
    if bytes.len() != 32 {
        return Err(DeployError::input(
            "private key",
            format!(
                "{origin} holds {} bytes; a secp256k1 private key is 32 bytes (64 hex digits)",
                bytes.len()
            ),
        ));
    }
    PrivateKeySigner::from_slice(&bytes).map_err(|_| {
        DeployError::input(
            "private key",
            format!("{origin} is not a valid secp256k1 private key"),
        )
    })
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        warn!(
            target: LOG_TARGET,
            path = %path.display(),
            "the private key file is readable by group or others; chmod 600 it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    // anvil's first development key: public knowledge, devnet only.
    const ANVIL_KEY: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

    #[test]
    fn key_parses_with_or_without_prefix_and_whitespace() {
        let a = parse_key(&format!("0x{ANVIL_KEY}\n"), "test").unwrap();
        let b = parse_key(&format!("  {ANVIL_KEY} "), "test").unwrap();
        assert_eq!(a.address(), b.address());
        assert_eq!(
            a.address().to_string(),
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
        );
    }

    #[test]
    fn bad_key_error_names_the_origin_not_the_key() {
        let err = parse_key("0x1234", "the environment variable OPERATOR_KEY").unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("OPERATOR_KEY") && message.contains("32 bytes"),
            "{message}"
        );
        let err = parse_key("not-hex-secret", "the key file k").unwrap_err();
        assert!(!err.to_string().contains("not-hex-secret"), "{err}");
    }

    #[test]
    fn key_file_and_missing_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, ANVIL_KEY).unwrap();
        assert!(load_signer(&KeySource::File(path)).is_ok());
        let err = load_signer(&KeySource::Env(
            "ATTESTMESH_TEST_SURELY_UNSET_KEY_VARIABLE".into(),
        ))
        .unwrap_err();
        assert!(err.to_string().contains("is not set"), "{err}");
    }
}
