//! A JSON-RPC fault injector: an HTTP proxy in front of a chain RPC (or any JSON-POST service:
//! bundler, gas manager, webhook — request headers are forwarded) whose behaviour tests switch
//! at run time — pass through, answer JSON-RPC errors, answer HTTP 503, fail only chosen
//! methods — or that goes down for real (its port closed: connection refused) and comes back
//! on the same port. Loopback by default; [`FaultProxy::start_on`] for namespaces. It counts
//! what it forwards ([`FaultProxy::requests_forwarded`]), so in [`FaultMode::Pass`] it is also
//! a meter of a client's RPC traffic (the benchmark's chain requests per node per minute).

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tracing::{debug, warn};
use url::Url;

/// What the proxy does with each request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultMode {
    /// Forward everything.
    Pass,
    /// Answer every request with a JSON-RPC error (code -32000).
    RpcError,
    /// Answer every request with HTTP 503.
    Unavailable,
    /// Answer a JSON-RPC error for these methods only; forward the rest.
    FailMethods(BTreeSet<String>),
}

/// A lie: given the JSON-RPC request and the upstream's reply, the reply the proxy sends instead
/// (a compromised RPC provider that shows a fake member, a fake log...).
pub type Rewriter =
    Arc<dyn Fn(&serde_json::Value, serde_json::Value) -> serde_json::Value + Send + Sync>;

/// Where the current lie is kept (its `Debug` shows whether there is one).
#[derive(Default)]
struct RewriterSlot(Mutex<Option<Rewriter>>);

impl std::fmt::Debug for RewriterSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lying = self.0.lock().map(|r| r.is_some()).unwrap_or(true);
        write!(f, "RewriterSlot {{ lying: {lying} }}")
    }
}

/// Failures of the proxy.
#[derive(Debug, thiserror::Error)]
pub enum FaultProxyError {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

#[derive(Clone)]
struct ProxyState {
    upstream: Url,
    mode: Arc<Mutex<FaultMode>>,
    rewriter: Arc<RewriterSlot>,
    http: reqwest::Client,
    faults: Arc<std::sync::atomic::AtomicU64>,
    forwarded: Arc<std::sync::atomic::AtomicU64>,
}

/// A running proxy; dropping it stops it.
#[derive(Debug)]
pub struct FaultProxy {
    url: Url,
    local: SocketAddr,
    app: axum::Router,
    mode: Arc<Mutex<FaultMode>>,
    rewriter: Arc<RewriterSlot>,
    faults: Arc<std::sync::atomic::AtomicU64>,
    forwarded: Arc<std::sync::atomic::AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    serving: Option<tokio::task::JoinHandle<()>>,
    /// While down: the port, bound but not listening. Connections are refused, as with the
    /// service gone, and no other process can take the port before [`FaultProxy::come_back`].
    reserved: Option<tokio::net::TcpSocket>,
}

impl FaultProxy {
    /// Proxies `upstream` on a free loopback port, starting in [`FaultMode::Pass`].
    pub async fn start(upstream: Url) -> Result<Self, FaultProxyError> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), upstream).await
    }

    /// Proxies `upstream` on `listen` (port 0 = a free one).
    pub async fn start_on(listen: SocketAddr, upstream: Url) -> Result<Self, FaultProxyError> {
        let listener =
            TcpListener::bind(listen)
                .await
                .map_err(|source| FaultProxyError::Listen {
                    address: listen.to_string(),
                    source,
                })?;
        let local = listener
            .local_addr()
            .map_err(|source| FaultProxyError::Listen {
                address: listen.to_string(),
                source,
            })?;
        let mode = Arc::new(Mutex::new(FaultMode::Pass));
        let faults = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let forwarded = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| FaultProxyError::Client(e.to_string()))?;
        let rewriter = Arc::new(RewriterSlot::default());
        let state = ProxyState {
            upstream,
            mode: mode.clone(),
            rewriter: rewriter.clone(),
            http,
            faults: faults.clone(),
            forwarded: forwarded.clone(),
        };
        let app = axum::Router::new()
            .fallback(axum::routing::post(handle))
            .with_state(state);
        let url = format!("http://{local}")
            .parse()
            .map_err(|e| FaultProxyError::Client(format!("proxy URL: {e}")))?;
        let mut proxy = Self {
            url,
            local,
            app,
            mode,
            rewriter,
            faults,
            forwarded,
            stop: None,
            serving: None,
            reserved: None,
        };
        proxy.serve(listener);
        Ok(proxy)
    }

    fn serve(&mut self, listener: TcpListener) {
        let (stop, stopped) = oneshot::channel::<()>();
        let app = self.app.clone();
        self.stop = Some(stop);
        self.serving = Some(tokio::spawn(async move {
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
            if let Err(error) = result {
                warn!(target: "attestmesh::devnet", %error, "fault proxy stopped");
            }
        }));
    }

    /// Takes the service down for real: the port stops listening (new connections are
    /// refused) and open connections end once their request is answered.
    pub async fn go_down(&mut self) -> Result<(), FaultProxyError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut serving) = self.serving.take() {
            // Bounded: a client holding a connection open must not hang the test.
            if tokio::time::timeout(std::time::Duration::from_secs(5), &mut serving)
                .await
                .is_err()
            {
                serving.abort();
                let _ = serving.await;
            }
        }
        let listen_error = |source| FaultProxyError::Listen {
            address: self.local.to_string(),
            source,
        };
        let socket = if self.local.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(listen_error)?;
        socket.set_reuseaddr(true).map_err(listen_error)?;
        socket.bind(self.local).map_err(listen_error)?;
        self.reserved = Some(socket);
        debug!(target: "attestmesh::devnet", address = %self.local, "fault proxy down");
        Ok(())
    }

    /// Brings the service back on the same address.
    pub async fn come_back(&mut self) -> Result<(), FaultProxyError> {
        if self.serving.is_some() {
            return Ok(());
        }
        let listener = match self.reserved.take() {
            Some(socket) => socket.listen(1024),
            None => TcpListener::bind(self.local).await,
        }
        .map_err(|source| FaultProxyError::Listen {
            address: self.local.to_string(),
            source,
        })?;
        self.serve(listener);
        debug!(target: "attestmesh::devnet", address = %self.local, "fault proxy back");
        Ok(())
    }

    /// Where clients connect instead of the upstream.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Switches the behaviour for the following requests.
    pub fn set_mode(&self, mode: FaultMode) {
        if let Ok(mut current) = self.mode.lock() {
            *current = mode;
        }
    }

    /// Makes the proxy lie: every forwarded single JSON-RPC reply passes through `rewriter`
    /// (None: honest again). Batches pass untouched.
    pub fn set_rewriter(&self, rewriter: Option<Rewriter>) {
        if let Ok(mut current) = self.rewriter.0.lock() {
            *current = rewriter;
        }
    }

    /// How many requests were answered with a fault so far.
    pub fn faults_injected(&self) -> u64 {
        self.faults.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many requests were forwarded to the upstream so far: every request in
    /// [`FaultMode::Pass`], those not failed in [`FaultMode::FailMethods`]. Counted as sent,
    /// whatever the upstream then answers; a JSON-RPC batch is one request.
    pub fn requests_forwarded(&self) -> u64 {
        self.forwarded.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn rpc_error(body: &[u8]) -> Response {
    let id = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("id").cloned())
        .unwrap_or(serde_json::Value::Null);
    let reply = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": -32000, "message": "injected fault: upstream unavailable"}
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        reply.to_string(),
    )
        .into_response()
}

async fn handle(
    State(state): State<ProxyState>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let mode = match state.mode.lock() {
        Ok(mode) => mode.clone(),
        Err(_) => FaultMode::Pass,
    };
    let method = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("method").and_then(|m| m.as_str()).map(str::to_owned));
    let inject = match &mode {
        FaultMode::Pass => None,
        FaultMode::RpcError => Some(true),
        FaultMode::Unavailable => Some(false),
        FaultMode::FailMethods(methods) => method
            .as_ref()
            .filter(|m| methods.contains(*m))
            .map(|_| true),
    };
    if let Some(as_rpc_error) = inject {
        state
            .faults
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        debug!(target: "attestmesh::devnet", method = method.as_deref().unwrap_or("?"), "fault injected");
        return if as_rpc_error {
            rpc_error(&body)
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "injected fault: service unavailable",
            )
                .into_response()
        };
    }
    // Every header but the hop's own (the webhook's shared secret travels in one).
    let mut forward_headers = headers;
    for hop in [header::HOST, header::CONTENT_LENGTH, header::CONNECTION] {
        forward_headers.remove(hop);
    }
    forward_headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    state
        .forwarded
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let rewriter = state.rewriter.0.lock().ok().and_then(|r| r.clone());
    let request: Option<serde_json::Value> = rewriter
        .as_ref()
        .and_then(|_| serde_json::from_slice(&body).ok());
    let forwarded = state
        .http
        .post(state.upstream.clone())
        .headers(forward_headers)
        .body(body)
        .send()
        .await;
    match forwarded {
        Ok(reply) => {
            let status =
                StatusCode::from_u16(reply.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            match reply.bytes().await {
                Ok(bytes) => {
                    let bytes = match (&rewriter, &request) {
                        (Some(rewrite), Some(request)) if request.is_object() => {
                            match serde_json::from_slice::<serde_json::Value>(&bytes) {
                                Ok(reply) => Bytes::from(rewrite(request, reply).to_string()),
                                Err(_) => bytes,
                            }
                        }
                        _ => bytes,
                    };
                    (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
                }
                Err(e) => (StatusCode::BAD_GATEWAY, format!("upstream body: {e}")).into_response(),
            }
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("upstream unreachable: {e}"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that answers every POST with a JSON-RPC result.
    async fn upstream() -> (Url, tokio::task::JoinHandle<()>) {
        let app = axum::Router::new().fallback(axum::routing::post(|| async {
            (
                [(header::CONTENT_TYPE, "application/json")],
                r#"{"jsonrpc":"2.0","id":1,"result":"0x1"}"#,
            )
        }));
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the upstream");
        let url = format!(
            "http://{}",
            listener.local_addr().expect("upstream address")
        )
        .parse()
        .expect("upstream URL");
        let serving = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("upstream serves");
        });
        (url, serving)
    }

    async fn call(http: &reqwest::Client, proxy: &FaultProxy, method: &str) -> String {
        http.post(proxy.url().clone())
            .body(format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":[]}}"#
            ))
            .send()
            .await
            .expect("the proxy answers")
            .text()
            .await
            .expect("a body")
    }

    #[tokio::test]
    async fn counts_forwarded_requests_apart_from_injected_faults() {
        let (upstream, serving) = upstream().await;
        let proxy = FaultProxy::start(upstream).await.expect("proxy starts");
        let http = reqwest::Client::new();
        for _ in 0..3 {
            assert!(
                call(&http, &proxy, "eth_blockNumber")
                    .await
                    .contains("result")
            );
        }
        assert_eq!(
            (proxy.requests_forwarded(), proxy.faults_injected()),
            (3, 0)
        );

        proxy.set_mode(FaultMode::RpcError);
        assert!(
            call(&http, &proxy, "eth_blockNumber")
                .await
                .contains("error")
        );
        proxy.set_mode(FaultMode::FailMethods(BTreeSet::from([
            "eth_getLogs".to_string()
        ])));
        assert!(call(&http, &proxy, "eth_getLogs").await.contains("error"));
        assert!(call(&http, &proxy, "eth_chainId").await.contains("result"));
        assert_eq!(
            (proxy.requests_forwarded(), proxy.faults_injected()),
            (4, 2)
        );
        serving.abort();
    }
}
