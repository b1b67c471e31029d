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

/// How long alto may take to listen and serve EntryPoint v0.7.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// The port in alto's "Server listening at http://0.0.0.0:<port>" line (its server picked it:
/// a port found free beforehand and handed over can be taken by then under parallel tests).
async fn listening_port(
    log: &std::path::Path,
    deadline: tokio::time::Instant,
) -> Result<u16, AltoError> {
    const MARK: &str = "Server listening at http://";
    loop {
        // The log was created before alto started: failing to read it is a real failure.
        let text = std::fs::read_to_string(log).map_err(|source| AltoError::Spawn {
            path: log.to_path_buf(),
            source,
        })?;
        let port = text.lines().find_map(|line| {
            let address = &line[line.find(MARK)? + MARK.len()..];
            let digits: String = address
                .rsplit_once(':')?
                .1
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse::<u16>().ok()
        });
        if let Some(port) = port {
            return Ok(port);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(AltoError::NotReady {
                url: "(no \"Server listening at\" line yet)".to_string(),
                seconds: READY_WITHIN.as_secs(),
                log: log.display().to_string(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A running alto; dropping it kills the process.
#[derive(Debug)]
pub struct Alto {
    child: Child,
    url: Url,
    log: PathBuf,
}

impl Alto {
    /// Starts alto on `port` (0: a port alto's server picks, read from its log) against `rpc_url`, bundling with the `executors` (funded on the
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
        let log = log_dir.join(match port {
            0 => "alto.log".to_string(),
            port => format!("alto-{port}.log"),
        });
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
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        let port = match port {
            0 => listening_port(&log, deadline).await?,
            port => port,
        };
        let url: Url = format!("http://127.0.0.1:{port}")
            .parse()
            .map_err(|e| AltoError::Url(format!("{e}")))?;
        let alto = Self { child, url, log };
        alto.wait_ready(deadline).await?;
        info!(target: "attestmesh::devnet", url = %alto.url, "alto bundler ready");
        Ok(alto)
    }

    /// The bundler's JSON-RPC URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Where alto writes its log.
    pub fn log(&self) -> &std::path::Path {
        &self.log
    }

    async fn wait_ready(&self, deadline: tokio::time::Instant) -> Result<(), AltoError> {
        let client = RpcClient::new("alto bundler", self.url.clone())
            .map_err(|e| AltoError::Url(e.to_string()))?;
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
                    seconds: READY_WITHIN.as_secs(),
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
