//! The real ERC-4337 bundler `@pimlico/alto` (from npm) run against the local chain, so the same
//! client flow that uses the project's own bundler is also proven against a production bundler.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use alloy::signers::local::PrivateKeySigner;
use attestmesh_bindings::ENTRY_POINT_V07;
use attestmesh_chain::RpcClient;
use tokio::process::{Child, Command};
use tracing::info;
use url::Url;

use crate::local_chain::project_root;

/// Failures starting alto.
#[derive(Debug, thiserror::Error)]
pub enum AltoError {
    #[error(
        "cannot start alto from {path}: {source} (run `make deps`: it is an npm devDependency)"
    )]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "alto did not answer eth_supportedEntryPoints at {url} within {seconds} s; its log is {log}"
    )]
    NotReady {
        url: String,
        seconds: u64,
        log: String,
    },
    #[error(
        "alto at {url} does not serve EntryPoint v0.7 {ENTRY_POINT_V07} (it serves {served:?})"
    )]
    WrongEntryPoint { url: String, served: Vec<String> },
    #[error("invalid alto URL: {0}")]
    Url(String),
}

/// A running alto; dropping it kills the process.
#[derive(Debug)]
pub struct Alto {
    child: Child,
    url: Url,
    log: PathBuf,
}

impl Alto {
    /// Starts alto on `port` against `rpc_url`, bundling with the `executors` (funded on the
    /// chain) and `utility` keys, and waits until it serves EntryPoint v0.7. alto keeps one
    /// bundle transaction in flight per executor, so with one executor at 2 s blocks every
    /// operation that arrives while a bundle is pending waits a block more: give it several.
    pub async fn start(
        rpc_url: &Url,
        port: u16,
        executors: &[PrivateKeySigner],
        utility: &PrivateKeySigner,
        log_dir: &std::path::Path,
    ) -> Result<Self, AltoError> {
        let path = project_root().join("node_modules/@pimlico/alto/esm/cli/alto.js");
        let log = log_dir.join(format!("alto-{port}.log"));
        let log_file = std::fs::File::create(&log).map_err(|source| AltoError::Spawn {
            path: log.clone(),
            source,
        })?;
        let log_err = log_file.try_clone().map_err(|source| AltoError::Spawn {
            path: log.clone(),
            source,
        })?;
        let key =
            |signer: &PrivateKeySigner| format!("0x{}", alloy::hex::encode(signer.to_bytes()));
        let child = Command::new("node")
            .arg(&path)
            .args(["--entrypoints", &ENTRY_POINT_V07.to_string()])
            .args([
                "--executor-private-keys",
                &executors.iter().map(key).collect::<Vec<_>>().join(","),
            ])
            .args(["--utility-private-key", &key(utility)])
            .args(["--rpc-url", rpc_url.as_str()])
            .args(["--safe-mode", "false"])
            .args(["--port", &port.to_string()])
            // alto reads a .env in its working directory; give it an empty one of its own.
            .current_dir(log_dir)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| AltoError::Spawn {
                path: path.clone(),
                source,
            })?;
        let url: Url = format!("http://127.0.0.1:{port}")
            .parse()
            .map_err(|e| AltoError::Url(format!("{e}")))?;
        let alto = Self { child, url, log };
        alto.wait_ready(Duration::from_secs(60)).await?;
        info!(target: "attestmesh::devnet", url = %alto.url, "alto bundler ready");
        Ok(alto)
    }

    /// The bundler's JSON-RPC URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    async fn wait_ready(&self, timeout: Duration) -> Result<(), AltoError> {
        let client = RpcClient::new("alto bundler", self.url.clone())
            .map_err(|e| AltoError::Url(e.to_string()))?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(served) = client
                .call::<_, Vec<String>>("eth_supportedEntryPoints", ())
                .await
            {
                let wanted = ENTRY_POINT_V07.to_string().to_lowercase();
                if served.iter().any(|ep| ep.to_lowercase() == wanted) {
                    return Ok(());
                }
                return Err(AltoError::WrongEntryPoint {
                    url: self.url.to_string(),
                    served,
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(AltoError::NotReady {
                    url: self.url.to_string(),
                    seconds: timeout.as_secs(),
                    log: self.log.display().to_string(),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Alto {
    fn drop(&mut self) {
        // kill_on_drop covers the child; start_kill makes it immediate.
        let _ = self.child.start_kill();
    }
}
