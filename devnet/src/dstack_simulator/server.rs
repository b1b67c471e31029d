//! The HTTP side: an axum router on a unix socket (or TCP) speaking the guest agent's format.

use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use attestmesh_dstack::chain::keccak256;
use attestmesh_dstack::{DstackClient, Endpoint, EthAddress, PublicKey, wire};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::LOG_TARGET;
use super::error::{Result, SimulatorError};
use super::keys::{KeySource, SimulatorKeys};
use super::quote::{SimulatedQuote, event_log_json};

/// Permissions of the socket file: owner and group may connect, as dstack's socket.
const SOCKET_MODE: u32 = 0o660;

/// Who the simulated CVM is, and where its keys come from.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// The app id (20 bytes). In AttestMesh it is the node's ERC-4337 member account address.
    pub app_id: EthAddress,
    /// Instance id reported by `/Info`.
    pub instance_id: Vec<u8>,
    /// Compose hash reported by `/Info` and the quote.
    pub compose_hash: [u8; 32],
    /// Device id reported by `/Info` and the quote.
    pub device_id: [u8; 32],
    /// App name reported by `/Info`.
    pub app_name: String,
    /// Key hierarchy.
    pub keys: KeySource,
}

impl SimulatorConfig {
    /// A config with deterministic placeholder identity fields (documented on each line), so
    /// that only the app id and keys must be chosen. Override fields as needed.
    pub fn new(app_id: EthAddress, keys: KeySource) -> Self {
        // instance id: first 20 bytes of keccak256("attestmesh-devnet:instance-id" ‖ app_id),
        // distinct per app, 20 bytes like dstack's.
        let mut instance_seed = b"attestmesh-devnet:instance-id".to_vec();
        instance_seed.extend_from_slice(app_id.as_bytes());
        let instance_id = keccak256(&instance_seed)[..20].to_vec();
        Self {
            app_id,
            instance_id,
            // Non-zero labelled constants: a zero hash would look like "unset" on chain.
            compose_hash: keccak256(b"attestmesh-devnet:compose-hash"),
            device_id: keccak256(b"attestmesh-devnet:device-id"),
            app_name: "attestmesh-node".to_owned(),
            keys,
        }
    }
}

/// Shared state of the handlers.
struct SimulatorState {
    config: SimulatorConfig,
    keys: SimulatorKeys,
}

/// The dstack guest-agent simulator. See [`DstackSimulator::spawn`].
#[derive(Debug)]
pub struct DstackSimulator;

impl DstackSimulator {
    /// Serve the simulator on a unix socket at `socket_path` until the handle is shut down or
    /// dropped. A stale socket file is replaced; any other file there is an error. Must be
    /// called inside a tokio runtime.
    pub fn spawn(config: SimulatorConfig, socket_path: &Path) -> Result<SimulatorHandle> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| SimulatorError::NoRuntime)?;
        let state = Arc::new(resolve(config)?);
        let listener = bind_unix(socket_path, &runtime)?;
        Ok(SimulatorHandle::start(
            state,
            listener,
            Endpoint::Unix(socket_path.to_owned()),
            Some(socket_path.to_owned()),
        ))
    }

    /// Serve the simulator over TCP at `addr` (e.g. `127.0.0.1:0`), for clients that reach
    /// the agent as `http://host:port`. Must be called inside a tokio runtime.
    pub fn spawn_tcp(
        config: SimulatorConfig,
        addr: std::net::SocketAddr,
    ) -> Result<SimulatorHandle> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| SimulatorError::NoRuntime)?;
        let state = Arc::new(resolve(config)?);
        let socket_error = |action, source| SimulatorError::Socket {
            action,
            path: PathBuf::from(addr.to_string()),
            source,
        };
        let std_listener =
            std::net::TcpListener::bind(addr).map_err(|err| socket_error("bind", err))?;
        let local = std_listener
            .local_addr()
            .map_err(|err| socket_error("read the address of", err))?;
        std_listener
            .set_nonblocking(true)
            .map_err(|err| socket_error("configure", err))?;
        let _guard = runtime.enter();
        let listener = tokio::net::TcpListener::from_std(std_listener)
            .map_err(|err| socket_error("register", err))?;
        Ok(SimulatorHandle::start(
            state,
            listener,
            Endpoint::Tcp(local.to_string()),
            None,
        ))
    }
}

fn resolve(config: SimulatorConfig) -> Result<SimulatorState> {
    let keys = SimulatorKeys::resolve(&config.keys, config.app_id.as_bytes())?;
    Ok(SimulatorState { config, keys })
}

/// Bind the unix socket, replacing a stale socket file but never a live socket or a non-socket.
fn bind_unix(path: &Path, runtime: &tokio::runtime::Handle) -> Result<tokio::net::UnixListener> {
    let socket_error = |action, source| SimulatorError::Socket {
        action,
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            // A socket someone still answers on is not stale: taking it over would silently
            // route another node's agent traffic to this simulator.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(SimulatorError::InUse {
                    path: path.to_owned(),
                });
            }
            debug!(target: LOG_TARGET, path = %path.display(), "removing stale socket file");
            std::fs::remove_file(path)
                .map_err(|err| socket_error("remove the stale socket", err))?;
        }
        Ok(_) => {
            return Err(SimulatorError::NotASocket {
                path: path.to_owned(),
            });
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(socket_error("inspect", err)),
    }
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)
            .map_err(|err| socket_error("create the directory of", err))?;
    }
    let std_listener =
        std::os::unix::net::UnixListener::bind(path).map_err(|err| socket_error("bind", err))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(|err| socket_error("set permissions on", err))?;
    std_listener
        .set_nonblocking(true)
        .map_err(|err| socket_error("configure", err))?;
    let _guard = runtime.enter();
    tokio::net::UnixListener::from_std(std_listener).map_err(|err| socket_error("register", err))
}

/// A running simulator. Dropping it stops the server and removes the socket file;
/// [`SimulatorHandle::shutdown`] does the same gracefully and reports how the server ended.
#[derive(Debug)]
pub struct SimulatorHandle {
    endpoint: Endpoint,
    socket_path: Option<PathBuf>,
    app_id: EthAddress,
    app_pubkey: PublicKey,
    kms_root: PublicKey,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl SimulatorHandle {
    fn start<L>(
        state: Arc<SimulatorState>,
        listener: L,
        endpoint: Endpoint,
        socket_path: Option<PathBuf>,
    ) -> Self
    where
        L: axum::serve::Listener,
        L::Addr: std::fmt::Debug,
    {
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let app_id = state.config.app_id;
        let app_pubkey = state.keys.app_pubkey();
        let kms_root = state.keys.kms_root();
        let router = router(state);
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    // Either an explicit shutdown or the handle being dropped ends the server.
                    let _ = shutdown_rx.await;
                })
                .await
        });
        Self {
            endpoint,
            socket_path,
            app_id,
            app_pubkey,
            kms_root,
            shutdown: Some(shutdown_tx),
            task: Some(task),
        }
    }

    /// Where the simulator listens.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// A dstack client pointed at this simulator.
    pub fn client(&self) -> DstackClient {
        DstackClient::new(self.endpoint.clone())
    }

    /// The simulated app id.
    pub fn app_id(&self) -> EthAddress {
        self.app_id
    }

    /// The app key's public key (what `signature_chain[0]` recovers to).
    pub fn app_pubkey(&self) -> PublicKey {
        self.app_pubkey
    }

    /// The KMS root's public key (what `signature_chain[1]` recovers to; allowlist this).
    pub fn kms_root(&self) -> PublicKey {
        self.kms_root
    }

    /// Stop accepting, finish in-flight requests, remove the socket file.
    pub async fn shutdown(mut self) -> Result<()> {
        let task = self.task.take();
        self.stop(task).await
    }

    /// Serve until `signal` completes, then shut down gracefully. Returns early with an error
    /// if the server stops by itself.
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> Result<()> {
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        tokio::select! {
            () = signal => {}
            ended = &mut task => {
                self.remove_socket_file();
                return match ended? {
                    Ok(()) => Err(SimulatorError::Serve(std::io::Error::other(
                        "the server stopped without being asked to",
                    ))),
                    Err(err) => Err(SimulatorError::Serve(err)),
                };
            }
        }
        self.stop(Some(task)).await
    }

    async fn stop(&mut self, task: Option<JoinHandle<std::io::Result<()>>>) -> Result<()> {
        if let Some(tx) = self.shutdown.take() {
            // The server may already have stopped on its own; its result is read below.
            let _ = tx.send(());
        }
        let result = match task {
            Some(task) => task.await?.map_err(SimulatorError::Serve),
            None => Ok(()),
        };
        self.remove_socket_file();
        result
    }

    fn remove_socket_file(&mut self) {
        let Some(path) = self.socket_path.take() else {
            return;
        };
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                warn!(target: LOG_TARGET, path = %path.display(), %err, "cannot remove the simulator socket file");
            }
        }
    }
}

impl Drop for SimulatorHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // Nobody will await the task: stop it now rather than wait for idle connections.
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.remove_socket_file();
    }
}

fn router(state: Arc<SimulatorState>) -> Router {
    Router::new()
        .route("/GetKey", post(get_key))
        .route("/GetQuote", post(get_quote))
        // dstack's SDKs POST /Info with `{}`; GET is accepted too, being harmless.
        .route("/Info", post(info).get(info))
        .route("/DeriveKey", any(derive_key_removed))
        .fallback(unknown_endpoint)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// An `{"error": ...}` reply, as dstack sends them.
fn error_reply(status: StatusCode, message: impl Into<String>) -> Response {
    let message = message.into();
    debug!(target: LOG_TARGET, status = status.as_u16(), %message, "simulator error reply");
    (status, axum::Json(wire::ErrorResponse { error: message })).into_response()
}

/// Parse a JSON body by hand so bad input gets dstack's `{"error"}` 400, not axum's plain text.
/// The error is the reply's message.
fn parse_body<T: DeserializeOwned>(endpoint: &str, body: &Bytes) -> Result<T, String> {
    serde_json::from_slice(body)
        .map_err(|err| format!("{endpoint}: invalid JSON request body: {err}"))
}

async fn get_key(State(state): State<Arc<SimulatorState>>, body: Bytes) -> Response {
    let request: wire::GetKeyRequest = match parse_body("/GetKey", &body) {
        Ok(request) => request,
        Err(message) => return error_reply(StatusCode::BAD_REQUEST, message),
    };
    debug!(target: LOG_TARGET, path = %request.path, purpose = %request.purpose, "GetKey");
    if request.path.is_empty() {
        return error_reply(StatusCode::BAD_REQUEST, "/GetKey: path must not be empty");
    }
    match state.keys.get_key(&request.path, &request.purpose) {
        Ok((key, chain)) => axum::Json(wire::GetKeyResponse {
            key: wire::encode_hex(key.as_bytes()),
            signature_chain: chain.to_hex_list(),
        })
        .into_response(),
        Err(err) => error_reply(StatusCode::INTERNAL_SERVER_ERROR, format!("/GetKey: {err}")),
    }
}

async fn get_quote(State(state): State<Arc<SimulatorState>>, body: Bytes) -> Response {
    let request: wire::GetQuoteRequest = match parse_body("/GetQuote", &body) {
        Ok(request) => request,
        Err(message) => return error_reply(StatusCode::BAD_REQUEST, message),
    };
    let data = match wire::decode_hex(&request.report_data) {
        Ok(data) => data,
        Err(reason) => {
            return error_reply(
                StatusCode::BAD_REQUEST,
                format!("/GetQuote: report_data is {reason}"),
            );
        }
    };
    debug!(target: LOG_TARGET, report_data_len = data.len(), "GetQuote");
    let mut report_data = [0u8; 64];
    match report_data.get_mut(..data.len()) {
        Some(prefix) => prefix.copy_from_slice(&data),
        None => {
            return error_reply(
                StatusCode::BAD_REQUEST,
                format!(
                    "/GetQuote: report_data is {} bytes, at most 64 are allowed",
                    data.len()
                ),
            );
        }
    }
    let config = &state.config;
    let quote = SimulatedQuote {
        report_data,
        app_id: *config.app_id.as_bytes(),
        compose_hash: config.compose_hash,
        device_id: config.device_id,
    };
    axum::Json(wire::GetQuoteResponse {
        quote: wire::encode_hex(quote.to_bytes()),
        event_log: event_log(&state).to_string(),
        report_data: Some(wire::encode_hex(report_data)),
        vm_config: None,
    })
    .into_response()
}

async fn info(State(state): State<Arc<SimulatorState>>) -> Response {
    debug!(target: LOG_TARGET, "Info");
    let config = &state.config;
    let key_provider = json!({
        "name": "attestmesh-devnet-kms",
        "id": state.keys.kms_root().to_string(),
    });
    let tcb_info = json!({
        "simulated": true,
        "event_log": event_log(&state),
    });
    axum::Json(wire::InfoResponse {
        app_id: wire::encode_hex(config.app_id.as_bytes()),
        instance_id: wire::encode_hex(&config.instance_id),
        compose_hash: wire::encode_hex(config.compose_hash),
        device_id: wire::encode_hex(config.device_id),
        app_name: config.app_name.clone(),
        os_image_hash: None,
        key_provider_info: Some(key_provider.to_string()),
        tcb_info: Some(tcb_info.to_string()),
        app_cert: None,
        vm_config: None,
    })
    .into_response()
}

/// The boot events dstack records in RTMR3, with this CVM's values.
fn event_log(state: &SimulatorState) -> serde_json::Value {
    let config = &state.config;
    let kms_root = state.keys.kms_root().compressed();
    event_log_json(&[
        ("app-id", config.app_id.as_bytes()),
        ("compose-hash", &config.compose_hash),
        ("instance-id", &config.instance_id),
        ("key-provider", &kms_root),
    ])
}

async fn derive_key_removed() -> Response {
    error_reply(
        StatusCode::NOT_FOUND,
        "/DeriveKey was removed in dstack 0.5; use /GetKey {\"path\", \"purpose\"} instead",
    )
}

async fn unknown_endpoint(uri: Uri) -> Response {
    error_reply(
        StatusCode::NOT_FOUND,
        format!(
            "unknown guest-agent endpoint {}; this simulator serves /GetKey, /GetQuote and /Info",
            uri.path()
        ),
    )
}

async fn method_not_allowed(uri: Uri) -> Response {
    error_reply(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{}: use POST with a JSON body", uri.path()),
    )
}
