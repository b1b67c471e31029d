//! The accept loop and the life of one connection: read the ClientHello, route on its SNI,
//! then splice (passthrough) or terminate TLS and relay plaintext.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use attestmesh_dstack::EthAddress;
use rustls::pki_types::CertificateDer;
use rustls::server::Acceptor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, error, info, warn};

use super::LOG_TARGET;
use super::error::{GatewayError, Result};
use super::name::{DEFAULT_DOMAIN, GatewayName, RouteMode, validate_domain};
use super::relay::{ByteCounts, DelayKnobs, PathDelay, Replay, relay};
use super::routes::RouteTable;
use super::tls::GatewayTls;

/// How long a client may take to send its whole ClientHello. Bounds idle connections that
/// never speak (the gateway holds no state for them past this).
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the terminating TLS handshake may take after the ClientHello.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long connecting to a backend may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest ClientHello accepted: a hello is a few hundred bytes; rustls caps a handshake
/// message at 64 KiB, so anything bigger is not a client we want to keep reading.
const MAX_HELLO_BYTES: usize = 64 * 1024 + 1024;

/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What the gateway serves and how.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where to listen; port 0 picks a free port ([`GatewayHandle::local_addr`] tells which).
    pub listen: SocketAddr,
    /// The gateway domain: apps are reached at `<app_id>-<port>[s|g].<domain>`.
    pub domain: String,
    /// Initial routes, app id → backend host.
    pub routes: Vec<(EthAddress, IpAddr)>,
    /// Where to write the devnet CA certificate (PEM) for clients to trust; `None` writes
    /// nothing (in-process users read [`GatewayHandle::ca_pem`]).
    pub ca_cert_path: Option<PathBuf>,
    /// Added delay per direction on every forwarded chunk.
    pub delay: PathDelay,
}

impl Default for GatewayConfig {
    /// Loopback on a free port, [`DEFAULT_DOMAIN`], no routes, no CA file, no delay: what
    /// tests want.
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            domain: DEFAULT_DOMAIN.to_owned(),
            routes: Vec::new(),
            ca_cert_path: None,
            delay: PathDelay::NONE,
        }
    }
}

/// State shared by the handle, the accept loop and every connection.
#[derive(Debug)]
struct Shared {
    domain: String,
    routes: RouteTable,
    tls: GatewayTls,
    delays: DelayKnobs,
    /// Bumped by `drop_all_connections`; every connection watches it.
    drop_generation: watch::Sender<u64>,
    live: AtomicUsize,
    next_id: AtomicU64,
}

/// The dstack gateway emulator. See [`GatewayEmulator::spawn`].
#[derive(Debug)]
pub struct GatewayEmulator;

impl GatewayEmulator {
    /// Generate the devnet CA, write its PEM (if configured), bind the listener and serve until
    /// the handle is shut down or dropped. Must be called inside a tokio runtime.
    pub fn spawn(config: GatewayConfig) -> Result<GatewayHandle> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| GatewayError::NoRuntime)?;
        let domain = validate_domain(&config.domain)?;
        let tls = GatewayTls::generate(&domain)?;
        if let Some(path) = &config.ca_cert_path {
            tls.write_ca_pem(path)?;
        }
        let listener = bind(config.listen, &runtime)?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| GatewayError::Listen {
                action: "read the bound address of",
                addr: config.listen,
                source,
            })?;
        let delays = DelayKnobs::default();
        delays.set(config.delay);
        let shared = Arc::new(Shared {
            domain,
            routes: RouteTable::new(config.routes),
            tls,
            delays,
            drop_generation: watch::Sender::new(0),
            live: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
        });
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let task = runtime.spawn(accept_loop(listener, Arc::clone(&shared), shutdown_rx));
        Ok(GatewayHandle {
            local_addr,
            ca_cert_path: config.ca_cert_path,
            shared,
            shutdown: Some(shutdown_tx),
            task: Some(task),
        })
    }
}

fn bind(addr: SocketAddr, runtime: &tokio::runtime::Handle) -> Result<TcpListener> {
    let listen_error = |action| {
        move |source| GatewayError::Listen {
            action,
            addr,
            source,
        }
    };
    // Bound synchronously so that `spawn` can report a taken port itself.
    let std_listener = std::net::TcpListener::bind(addr).map_err(listen_error("bind"))?;
    std_listener
        .set_nonblocking(true)
        .map_err(listen_error("configure"))?;
    let _guard = runtime.enter();
    TcpListener::from_std(std_listener).map_err(listen_error("register"))
}

/// A running gateway. Dropping it stops listening and closes every connection;
/// [`GatewayHandle::shutdown`] does the same and reports how the server ended.
#[derive(Debug)]
pub struct GatewayHandle {
    local_addr: SocketAddr,
    ca_cert_path: Option<PathBuf>,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl GatewayHandle {
    /// The address the gateway listens on (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The gateway domain (lowercase).
    pub fn domain(&self) -> &str {
        &self.shared.domain
    }

    /// The host name that reaches `port` of `app_id` in `mode`, to use as TLS SNI.
    pub fn hostname(&self, app_id: EthAddress, port: u16, mode: RouteMode) -> String {
        GatewayName { app_id, port, mode }.hostname(&self.shared.domain)
    }

    /// The devnet CA certificate (PEM) that issued the gateway's `*.<domain>` certificate.
    pub fn ca_pem(&self) -> &str {
        &self.shared.tls.ca_pem
    }

    /// The devnet CA certificate (DER), e.g. for a rustls `RootCertStore`.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.shared.tls.ca_der
    }

    /// Where the CA PEM was written, if anywhere.
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.ca_cert_path.as_deref()
    }

    /// The route table; clones share it with the running gateway.
    pub fn routes(&self) -> RouteTable {
        self.shared.routes.clone()
    }

    /// Route `app_id` to `host` (new connections only); returns the host it replaced.
    pub fn add_route(&self, app_id: EthAddress, host: IpAddr) -> Option<IpAddr> {
        let previous = self.shared.routes.insert(app_id, host);
        info!(target: LOG_TARGET, %app_id, %host, ?previous, "route added");
        previous
    }

    /// Remove the route of `app_id` (new connections only; live ones stay); returns its host.
    pub fn remove_route(&self, app_id: &EthAddress) -> Option<IpAddr> {
        let removed = self.shared.routes.remove(app_id);
        info!(target: LOG_TARGET, %app_id, ?removed, "route removed");
        removed
    }

    /// Set the added delay per direction; applies to chunks read from now on, on live and new
    /// connections alike.
    pub fn set_delay(&self, delay: PathDelay) {
        self.shared.delays.set(delay);
        info!(target: LOG_TARGET, ?delay, "path delay set");
    }

    /// The current added delay.
    pub fn delay(&self) -> PathDelay {
        self.shared.delays.get()
    }

    /// Connections currently open (including ones still in their handshake).
    pub fn live_connections(&self) -> usize {
        self.shared.live.load(Ordering::SeqCst)
    }

    /// Abort every open connection, client and backend side, with a TCP reset: what a client
    /// sees when the gateway restarts or a middlebox drops its flows. New connections are
    /// served as before. Returns how many connections were open.
    pub fn drop_all_connections(&self) -> usize {
        let live = self.live_connections();
        self.shared
            .drop_generation
            .send_modify(|generation| *generation = generation.wrapping_add(1));
        info!(target: LOG_TARGET, live, "dropping all connections");
        live
    }

    /// Stop accepting and close every connection.
    pub async fn shutdown(mut self) -> Result<()> {
        let task = self.task.take();
        self.stop(task).await
    }

    /// Serve until `signal` completes, then shut down. Returns early with an error if the
    /// accept loop stops by itself.
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> Result<()> {
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        tokio::select! {
            () = signal => {}
            ended = &mut task => {
                ended?;
                return Err(GatewayError::Stopped);
            }
        }
        self.stop(Some(task)).await
    }

    async fn stop(&mut self, task: Option<JoinHandle<()>>) -> Result<()> {
        if let Some(tx) = self.shutdown.take() {
            // The loop may already have ended; its result is read below.
            let _ = tx.send(());
        }
        if let Some(task) = task {
            task.await?;
        }
        Ok(())
    }
}

impl Drop for GatewayHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // Aborting the loop drops its JoinSet, which aborts every connection task.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Counts a connection as live from accept until its task ends (or is aborted).
struct LiveGuard(Arc<Shared>);

impl LiveGuard {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.live.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(shared))
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: oneshot::Receiver<()>,
) {
    // Connection tasks live in the set, so ending this loop (shutdown or abort) ends them.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            // A dropped sender also means stop.
            _ = &mut shutdown => break,
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(err) = joined
                    && err.is_panic()
                {
                    error!(target: LOG_TARGET, %err, "a gateway connection task panicked");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
                    // Subscribed and counted here, not in the task, so that a
                    // `drop_all_connections` right after accept still reaches it.
                    let dropped = shared.drop_generation.subscribe();
                    let live = LiveGuard::new(&shared);
                    connections.spawn(serve_connection(id, stream, peer, dropped, live));
                }
                Err(err) => {
                    warn!(target: LOG_TARGET, %err, "accept failed; retrying");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    debug!(target: LOG_TARGET, open = connections.len(), "gateway stopped; closing connections");
}

/// What the connection learnt, for its closing log line.
#[derive(Debug, Default)]
struct ConnLog {
    sni: Option<String>,
    mode: Option<RouteMode>,
    backend: Option<SocketAddr>,
}

/// How a connection ended.
#[derive(Debug, thiserror::Error)]
enum End {
    /// Both directions finished.
    #[error("closed by the peers")]
    Closed,
    /// The relay failed (a reset or broken pipe on either side).
    #[error("relay failed: {0}")]
    RelayFailed(io::Error),
    /// Refused before relaying; logged at warn where it happened.
    #[error("refused")]
    Refused,
    /// `drop_all_connections` was called.
    #[error("reset by drop_all_connections")]
    Dropped,
}

async fn serve_connection(
    id: u64,
    mut client: TcpStream,
    peer: SocketAddr,
    mut dropped: watch::Receiver<u64>,
    live: LiveGuard,
) {
    let shared = Arc::clone(&live.0);
    let started = Instant::now();
    let counts = ByteCounts::default();
    let mut log = ConnLog::default();
    let mut backend: Option<TcpStream> = None;
    debug!(target: LOG_TARGET, conn = id, %peer, "accepted");

    let end = tokio::select! {
        end = route_and_relay(id, &mut client, &mut backend, &shared, &counts, &mut log) => end,
        // `changed` only fails if the sender is gone, and `shared` keeps it alive.
        _ = dropped.changed() => End::Dropped,
    };
    if matches!(end, End::Dropped) {
        // Zero linger turns the close into a reset, as when a real gateway vanishes.
        for stream in std::iter::once(&client).chain(backend.as_ref()) {
            if let Err(err) = stream.set_zero_linger() {
                debug!(target: LOG_TARGET, conn = id, %err, "cannot set zero linger; closing normally");
            }
        }
    }
    debug!(
        target: LOG_TARGET,
        conn = id,
        %peer,
        sni = log.sni.as_deref().unwrap_or("-"),
        mode = log.mode.map(|m| m.to_string()).unwrap_or_else(|| "-".to_owned()),
        backend = log.backend.map(|b| b.to_string()).unwrap_or_else(|| "-".to_owned()),
        bytes_to_backend = counts.to_backend.load(Ordering::Relaxed),
        bytes_to_client = counts.to_client.load(Ordering::Relaxed),
        elapsed_ms = started.elapsed().as_millis() as u64,
        end = %end,
        "connection closed"
    );
}

async fn route_and_relay(
    id: u64,
    client: &mut TcpStream,
    backend_slot: &mut Option<TcpStream>,
    shared: &Shared,
    counts: &ByteCounts,
    log: &mut ConnLog,
) -> End {
    let (hello, sni) = match timeout(HELLO_TIMEOUT, read_client_hello(client)).await {
        Ok(Ok(read)) => read,
        Ok(Err(reason)) => {
            warn!(target: LOG_TARGET, conn = id, sni = "-", %reason, "refused: no usable TLS ClientHello");
            return End::Refused;
        }
        Err(_) => {
            warn!(target: LOG_TARGET, conn = id, sni = "-", timeout_s = HELLO_TIMEOUT.as_secs(), "refused: no complete ClientHello in time");
            return End::Refused;
        }
    };
    let Some(sni) = sni else {
        warn!(target: LOG_TARGET, conn = id, sni = "-", "refused: the ClientHello has no SNI; connect by host name <app_id>-<port>[s|g].{}", shared.domain);
        return End::Refused;
    };
    let sni = log.sni.insert(sni);
    let name = match GatewayName::parse(sni, &shared.domain) {
        Ok(name) => name,
        Err(err) => {
            warn!(target: LOG_TARGET, conn = id, sni = %sni, %err, "refused: SNI does not name a gateway route");
            return End::Refused;
        }
    };
    log.mode = Some(name.mode);
    let Some(host) = shared.routes.get(&name.app_id) else {
        warn!(target: LOG_TARGET, conn = id, sni = %sni, app_id = %name.app_id, "refused: no route for this app id; register it (--gateway.route or add_route)");
        return End::Refused;
    };
    let backend_addr = SocketAddr::new(host, name.port);
    log.backend = Some(backend_addr);
    debug!(target: LOG_TARGET, conn = id, sni = %sni, mode = %name.mode, backend = %backend_addr, "routing");

    let backend = match timeout(CONNECT_TIMEOUT, TcpStream::connect(backend_addr)).await {
        Ok(Ok(stream)) => backend_slot.insert(stream),
        Ok(Err(err)) => {
            warn!(target: LOG_TARGET, conn = id, sni = %sni, backend = %backend_addr, %err, "refused: cannot connect to the backend");
            return End::Refused;
        }
        Err(_) => {
            warn!(target: LOG_TARGET, conn = id, sni = %sni, backend = %backend_addr, "refused: backend connect timed out");
            return End::Refused;
        }
    };
    // Small writes (WireGuard datagrams, gRPC frames) should not wait for Nagle.
    for stream in [&*client, &*backend] {
        if let Err(err) = stream.set_nodelay(true) {
            debug!(target: LOG_TARGET, conn = id, %err, "cannot set TCP_NODELAY");
        }
    }

    let relayed = match name.mode {
        RouteMode::Passthrough => {
            // The backend terminates TLS: it gets the ClientHello exactly as the client sent it.
            if let Err(err) = backend.write_all(&hello).await {
                return End::RelayFailed(err);
            }
            counts
                .to_backend
                .fetch_add(hello.len() as u64, Ordering::Relaxed);
            relay(&mut *client, backend, &shared.delays, counts).await
        }
        RouteMode::Terminate | RouteMode::TerminateH2 => {
            let config = match name.mode {
                RouteMode::TerminateH2 => &shared.tls.terminate_h2,
                _ => &shared.tls.terminate,
            };
            let acceptor = TlsAcceptor::from(Arc::clone(config));
            // rustls re-reads the ClientHello from the replayed bytes.
            let handshake = acceptor.accept(Replay::new(hello, &mut *client));
            let tls = match timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(err)) => {
                    warn!(target: LOG_TARGET, conn = id, sni = %sni, %err, "TLS handshake with the client failed (does it trust the gateway CA? does it offer h2 on a g route?)");
                    return End::Refused;
                }
                Err(_) => {
                    warn!(target: LOG_TARGET, conn = id, sni = %sni, "TLS handshake with the client timed out");
                    return End::Refused;
                }
            };
            let alpn = tls
                .get_ref()
                .1
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned());
            debug!(target: LOG_TARGET, conn = id, sni = %sni, alpn = alpn.as_deref().unwrap_or("none"), "TLS terminated");
            relay(tls, backend, &shared.delays, counts).await
        }
    };
    match relayed {
        Ok(()) => End::Closed,
        Err(err) => End::RelayFailed(err),
    }
}

/// Why no usable ClientHello arrived.
#[derive(Debug, thiserror::Error)]
enum HelloError {
    #[error("the client closed after {0} bytes, before a complete ClientHello")]
    Eof(usize),
    #[error("reading the ClientHello failed: {0}")]
    Io(#[from] io::Error),
    #[error("no acceptable TLS ClientHello: {0}")]
    NotTls(rustls::Error),
    #[error("the ClientHello exceeds {MAX_HELLO_BYTES} bytes")]
    TooLarge,
}

/// Read until rustls has parsed a complete ClientHello; return every byte read (to replay to
/// the backend or to the TLS acceptor) and the SNI, if the client sent one.
async fn read_client_hello(
    client: &mut TcpStream,
) -> std::result::Result<(Vec<u8>, Option<String>), HelloError> {
    let mut acceptor = Acceptor::default();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = client.read(&mut buf).await?;
        if n == 0 {
            return Err(HelloError::Eof(seen.len()));
        }
        let mut chunk = buf.get(..n).unwrap_or_default();
        seen.extend_from_slice(chunk);
        if seen.len() > MAX_HELLO_BYTES {
            return Err(HelloError::TooLarge);
        }
        while !chunk.is_empty() {
            // Reading from a slice advances it; 0 means rustls would take no more.
            if acceptor.read_tls(&mut chunk)? == 0 {
                return Err(HelloError::TooLarge);
            }
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let sni = accepted.client_hello().server_name().map(str::to_owned);
                return Ok((seen, sni));
            }
            Ok(None) => {}
            Err((err, _alert)) => return Err(HelloError::NotTls(err)),
        }
    }
}
