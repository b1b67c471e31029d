//! Running `forge script script/Deploy.s.sol --broadcast`: the native forge binary (never the
//! `node_modules/.bin` wrapper, which exits 0 when forge fails), output to a file (a pipe held
//! open by a grandchild could stall the wait), bounded by a timeout, and with no secret on its
//! command line: the key goes in as an encrypted keystore in a private temporary folder, the RPC
//! URL (which may carry an API key) in the environment.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::signers::local::PrivateKeySigner;
use rand_core::{OsRng, RngCore};
use tracing::{debug, info};
use url::Url;
use zeroize::Zeroizing;

use crate::LOG_TARGET;
use crate::error::{DeployError, Result};

/// How long `forge script` may run before it is killed.
pub const DEFAULT_FORGE_TIMEOUT: Duration = Duration::from_secs(900);

/// The native forge binary the npm package `@foundry-rs/forge` ships, under `root`.
pub fn forge_binary(root: &Path) -> PathBuf {
    root.join("node_modules/@foundry-rs/forge-linux-amd64/bin/forge")
}

/// One run of the deploy script.
#[derive(Debug, Clone)]
pub struct ScriptRun {
    /// The forge binary.
    pub forge: PathBuf,
    /// The project root (foundry.toml); forge runs there.
    pub root: PathBuf,
    pub rpc_url: Url,
    /// `OPERATOR`; `None` lets the script default to the broadcaster.
    pub operator: Option<Address>,
    /// `SPONSOR_SIGNER`; `None` lets the script default to the operator.
    pub sponsor_signer: Option<Address>,
    /// `PAYMASTER_DEPOSIT` in wei.
    pub paymaster_deposit: U256,
    /// `DEPLOYMENTS_FILE`, relative to `root` (inside deployments/).
    pub deployments_file: PathBuf,
    /// Where forge's output goes.
    pub log: PathBuf,
    /// Where forge writes its broadcast records (`FOUNDRY_BROADCAST`); `None` is the project's
    /// `broadcast/`.
    pub broadcast_dir: Option<PathBuf>,
    pub timeout: Duration,
}

/// Runs the deploy script, signing with `signer`. Returns when forge exited 0.
pub async fn run_deploy_script(run: &ScriptRun, signer: &PrivateKeySigner) -> Result<()> {
    let keystore = Keystore::write(signer)?;
    let log = std::fs::File::create(&run.log).map_err(|source| DeployError::Io {
        action: "create the forge log",
        path: run.log.clone(),
        source,
    })?;
    let log_err = log.try_clone().map_err(|source| DeployError::Io {
        action: "open the forge log",
        path: run.log.clone(),
        source,
    })?;
    let mut command = tokio::process::Command::new(&run.forge);
    command
        .current_dir(&run.root)
        .args(["script", "script/Deploy.s.sol", "--broadcast", "--slow"])
        // No colour codes in the log this tool quotes (field note 9).
        .args(["--non-interactive", "--color", "never", "--keystore"])
        .arg(&keystore.key_path)
        .arg("--password-file")
        .arg(&keystore.password_path)
        // Not --rpc-url: hosted RPC URLs carry API keys, and argv is visible in `ps`. forge
        // script reads the config key `eth_rpc_url` from FOUNDRY_ETH_RPC_URL (it ignores plain
        // ETH_RPC_URL and would then simulate on an empty in-memory chain).
        .env("FOUNDRY_ETH_RPC_URL", run.rpc_url.as_str())
        .env_remove("ETH_RPC_URL")
        // The caller's RUST_LOG is for this tool; forge would log its own internals with it.
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .env("DEPLOYMENTS_FILE", &run.deployments_file)
        .env("PAYMASTER_DEPOSIT", run.paymaster_deposit.to_string())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .kill_on_drop(true);
    // Only the flags decide: a stray OPERATOR or SPONSOR_SIGNER in the caller's environment must
    // not silently become the paymaster's owner or signer.
    match run.operator {
        Some(operator) => command.env("OPERATOR", operator.to_string()),
        None => command.env_remove("OPERATOR"),
    };
    match run.sponsor_signer {
        Some(sponsor) => command.env("SPONSOR_SIGNER", sponsor.to_string()),
        None => command.env_remove("SPONSOR_SIGNER"),
    };
    match &run.broadcast_dir {
        Some(dir) => command.env("FOUNDRY_BROADCAST", dir),
        None => command.env_remove("FOUNDRY_BROADCAST"),
    };
    info!(
        target: LOG_TARGET,
        forge = %run.forge.display(),
        log = %run.log.display(),
        deployments = %run.deployments_file.display(),
        "running forge script script/Deploy.s.sol --broadcast"
    );
    let mut child = command.spawn().map_err(|source| DeployError::Io {
        action: "start forge",
        path: run.forge.clone(),
        source,
    })?;
    let status = match tokio::time::timeout(run.timeout, child.wait()).await {
        Ok(waited) => waited.map_err(|source| DeployError::Io {
            action: "wait for forge",
            path: run.forge.clone(),
            source,
        })?,
        Err(_) => {
            // kill_on_drop would too; killing here makes the log complete before it is read.
            let _ = child.kill().await;
            return Err(DeployError::Forge {
                status: format!(
                    "killed after {} s; raise --forge-timeout-secs if the chain is slow, or check the RPC",
                    run.timeout.as_secs()
                ),
                log: run.log.clone(),
                tail: redact_url(&tail_of(&run.log, 30), &run.rpc_url),
            });
        }
    };
    drop(keystore);
    debug!(target: LOG_TARGET, %status, "forge exited");
    if !status.success() {
        return Err(DeployError::Forge {
            status: status.to_string(),
            log: run.log.clone(),
            tail: redact_url(&tail_of(&run.log, 30), &run.rpc_url),
        });
    }
    Ok(())
}

/// `text` with every spelling of `url` that can carry a secret replaced (forge prints the RPC
/// URL in some errors, and its output goes into this tool's error messages): the one redaction
/// helper of the workspace.
pub fn redact_url(text: &str, url: &Url) -> String {
    attestmesh_chain::redact::secrets_of(text, url)
}

/// The last `lines` lines of `path` (for error messages), or why it cannot be read.
pub fn tail_of(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let text = crate::indexer_check::strip_ansi(&text);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// The key as a forge keystore, encrypted with a random password, both in a private
/// temporary folder removed on drop.
struct Keystore {
    _dir: tempfile::TempDir,
    key_path: PathBuf,
    password_path: PathBuf,
}

impl Keystore {
    fn write(signer: &PrivateKeySigner) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("attestmesh-forge-key-")
            .tempdir()
            .map_err(|source| DeployError::Io {
                action: "create a private temporary folder for the forge keystore in",
                path: std::env::temp_dir(),
                source,
            })?;
        restrict(dir.path(), 0o700)?;
        let mut raw = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(raw.as_mut());
        let password = Zeroizing::new(hex::encode(raw.as_ref()));
        let password_path = dir.path().join("password");
        let mut file = private_file(&password_path)?;
        file.write_all(password.as_bytes())
            .map_err(|source| DeployError::Io {
                action: "write the keystore password file",
                path: password_path.clone(),
                source,
            })?;
        let secret = Zeroizing::new(signer.to_bytes().0);
        PrivateKeySigner::encrypt_keystore(
            dir.path(),
            &mut OsRng,
            secret.as_slice(),
            password.as_bytes(),
            Some("deployer"),
        )
        .map_err(|e| DeployError::Io {
            action: "write the forge keystore",
            path: dir.path().join("deployer"),
            source: std::io::Error::other(e.to_string()),
        })?;
        let key_path = dir.path().join("deployer");
        restrict(&key_path, 0o600)?;
        Ok(Self {
            _dir: dir,
            key_path,
            password_path,
        })
    }
}

#[cfg(unix)]
fn restrict(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        DeployError::Io {
            action: "restrict the permissions of",
            path: path.to_path_buf(),
            source,
        }
    })
}

#[cfg(not(unix))]
fn restrict(_path: &Path, _mode: u32) -> Result<()> {
    Ok(())
}

fn private_file(path: &Path) -> Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map_err(|source| DeployError::Io {
        action: "create",
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keystore_decrypts_to_the_same_key_and_is_private() {
        let signer = PrivateKeySigner::random();
        let keystore = Keystore::write(&signer).unwrap();
        let password = std::fs::read_to_string(&keystore.password_path).unwrap();
        let decrypted = PrivateKeySigner::decrypt_keystore(&keystore.key_path, password).unwrap();
        assert_eq!(decrypted.address(), signer.address());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(keystore._dir.path()), 0o700);
            assert_eq!(mode(&keystore.key_path), 0o600);
            assert_eq!(mode(&keystore.password_path), 0o600);
        }
        let dir = keystore._dir.path().to_path_buf();
        drop(keystore);
        assert!(!dir.exists(), "the keystore folder is removed on drop");
    }

    #[test]
    fn redaction_removes_the_api_key_in_every_spelling() {
        let url: Url = "https://base-mainnet.example/v2/SECRETKEY?token=T0KEN"
            .parse()
            .unwrap();
        let text = "error sending request for url (https://base-mainnet.example/v2/SECRETKEY?token=T0KEN)\n\
                    path /v2/SECRETKEY?token=T0KEN, query token=T0KEN";
        let out = redact_url(text, &url);
        assert!(
            !out.contains("SECRETKEY") && !out.contains("T0KEN"),
            "{out}"
        );
        assert!(out.contains("(https://base-mainnet.example)"), "{out}");
        let local: Url = "http://127.0.0.1:8545/".parse().unwrap();
        assert_eq!(
            redact_url("at http://127.0.0.1:8545/ now", &local),
            "at http://127.0.0.1:8545 now"
        );
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "a\nb\nc\n\u{1b}[31mError\u{1b}[0m: d\n").unwrap();
        assert_eq!(
            tail_of(&path, 2),
            "c\nError: d",
            "last lines, colour codes stripped"
        );
        assert!(tail_of(&dir.path().join("missing"), 2).contains("cannot read"));
    }
}
