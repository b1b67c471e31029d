//! TCP+TLS connections that carry WireGuard datagrams: dialing a peer through the gateway,
//! the listener that identifies accepted connections by their first handshake, and the two
//! tasks that move frames on an adopted connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, Tunn};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::{debug, warn};

use super::{LOG_TARGET, Shared, StaticKeys, frame};

/// A transport connection, dialed or accepted.
pub(super) type Stream = tokio_rustls::TlsStream<TcpStream>;

/// How long a TCP connect to the gateway may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the dialer's TLS handshake may take.
const TLS_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an accepted connection may take to finish TLS and send its first frame.
const IDENTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepted connections still being identified at once; more are closed at once, so that idle
/// or slow connections cannot pile up.
const MAX_PENDING_ACCEPTS: usize = 64;

/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Largest write gathered from queued frames before it goes to TLS.
const WRITE_BATCH: usize = 64 * 1024;

/// How to reach one peer.
#[derive(Debug)]
pub(super) struct Dialer {
    /// The gateway.
    pub via: SocketAddr,
    /// `<app_id>-<port>s.<domain>`, for logs.
    pub sni: String,
    pub name: ServerName<'static>,
    /// Pins the peer's certificate.
    pub tls: Arc<ClientConfig>,
}

impl Dialer {
    /// TCP to the gateway, then TLS with the peer (passed through by the gateway).
    pub async fn dial(
        via: SocketAddr,
        name: ServerName<'static>,
        tls: Arc<ClientConfig>,
    ) -> Result<Stream, String> {
        let tcp = match timeout(CONNECT_TIMEOUT, TcpStream::connect(via)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(err)) => return Err(format!("TCP connect to the gateway {via}: {err}")),
            Err(_) => return Err(format!("TCP connect to the gateway {via} timed out")),
        };
        set_nodelay(&tcp);
        match timeout(TLS_TIMEOUT, TlsConnector::from(tls).connect(name, tcp)).await {
            Ok(Ok(tls)) => Ok(Stream::Client(tls)),
            Ok(Err(err)) => Err(format!("TLS with the peer through the gateway: {err}")),
            Err(_) => Err("TLS with the peer through the gateway timed out".to_owned()),
        }
    }
}

/// Datagrams are small and latency-bound: Nagle's algorithm would hold them back.
fn set_nodelay(tcp: &TcpStream) {
    if let Err(err) = tcp.set_nodelay(true) {
        debug!(target: LOG_TARGET, %err, "cannot disable Nagle's algorithm; continuing");
    }
}

/// An accepted connection whose first frame is a handshake initiation from a configured peer's
/// key; the peer's task decides whether to adopt it.
pub(super) struct Accepted {
    pub stream: Stream,
    /// The handshake initiation.
    pub first: Vec<u8>,
    pub remote: SocketAddr,
}

/// Accept transport connections and hand each, once identified, to its peer's task.
pub(super) async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    keys: Arc<StaticKeys>,
) {
    let mut pending = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote)) => {
                    if pending.len() >= MAX_PENDING_ACCEPTS {
                        debug!(target: LOG_TARGET, %remote, "too many connections being identified; closing this one");
                        continue;
                    }
                    pending.spawn(identify(tcp, remote, acceptor.clone(), Arc::clone(&shared), Arc::clone(&keys)));
                }
                Err(err) => {
                    warn!(target: LOG_TARGET, %err, "accepting a transport connection failed; retrying");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
            Some(_) = pending.join_next(), if !pending.is_empty() => {}
        }
    }
}

/// TLS, then the first frame, which must be a handshake initiation to this node's key from a
/// configured peer's key.
async fn identify(
    tcp: TcpStream,
    remote: SocketAddr,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    keys: Arc<StaticKeys>,
) {
    set_nodelay(&tcp);
    let opening = async {
        let mut tls = acceptor
            .accept(tcp)
            .await
            .map_err(|err| format!("TLS handshake: {err}"))?;
        match frame::read(&mut tls).await {
            Ok(Some(first)) => Ok((tls, first)),
            Ok(None) => Err("closed before its first frame".to_owned()),
            Err(err) => Err(format!("first frame: {err}")),
        }
    };
    let (tls, first) = match timeout(IDENTIFY_TIMEOUT, opening).await {
        Ok(Ok(opened)) => opened,
        Ok(Err(reason)) => {
            debug!(target: LOG_TARGET, %remote, %reason, "accepted connection closed");
            return;
        }
        Err(_) => {
            debug!(target: LOG_TARGET, %remote, "accepted connection closed: no first frame in time");
            return;
        }
    };
    let peer_key = match Tunn::parse_incoming_packet(&first) {
        Ok(Packet::HandshakeInit(init)) => {
            match parse_handshake_anon(&keys.secret, &keys.public, &init) {
                Ok(half) => half.peer_static_public,
                Err(err) => {
                    debug!(target: LOG_TARGET, %remote, ?err, "accepted connection closed: its handshake is not for this node's key");
                    return;
                }
            }
        }
        _ => {
            debug!(target: LOG_TARGET, %remote, len = first.len(), "accepted connection closed: the first frame is not a WireGuard handshake initiation");
            return;
        }
    };
    let link = shared.read().by_key.get(&peer_key).cloned();
    let Some(link) = link else {
        debug!(target: LOG_TARGET, %remote, "accepted connection closed: the handshake's key is no configured peer's");
        return;
    };
    let accepted = Accepted {
        stream: Stream::Server(tls),
        first,
        remote,
    };
    if link.accepted.try_send(accepted).is_err() {
        debug!(target: LOG_TARGET, %remote, member = link.config.member_id, "accepted connection closed: the peer's task is busy or stopping");
    }
}

/// What a connection's tasks tell the peer's task.
pub(super) enum ConnEvent {
    Frame { conn: u64, datagram: Vec<u8> },
    Closed { conn: u64, reason: String },
}

/// Read frames until the stream ends or breaks.
pub(super) async fn read_loop(
    conn: u64,
    mut read: ReadHalf<Stream>,
    events: mpsc::Sender<ConnEvent>,
) {
    let reason = loop {
        match frame::read(&mut read).await {
            Ok(Some(datagram)) => {
                // Awaiting here is the back-pressure: a busy peer task slows the TCP reader.
                if events
                    .send(ConnEvent::Frame { conn, datagram })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(None) => break "closed by the other end".to_owned(),
            // rustls reports a close without close_notify this way; for a transport whose
            // integrity WireGuard guards, that is just a close.
            Err(frame::FrameError::Io(err)) if err.kind() == std::io::ErrorKind::UnexpectedEof => {
                break "closed by the other end (no TLS close_notify)".to_owned();
            }
            Err(err) => break format!("read: {err}"),
        }
    };
    let _ = events.send(ConnEvent::Closed { conn, reason }).await;
}

/// Write queued frames, gathering what is queued into one write and one flush.
pub(super) async fn write_loop(
    conn: u64,
    mut write: WriteHalf<Stream>,
    mut frames: mpsc::Receiver<Vec<u8>>,
    events: mpsc::Sender<ConnEvent>,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH + frame::MAX_FRAME);
    let reason = loop {
        let Some(first) = frames.recv().await else {
            // The peer task dropped the connection: close the TLS stream politely.
            let _ = write.shutdown().await;
            return;
        };
        batch.clear();
        frame::encode(&first, &mut batch);
        while batch.len() < WRITE_BATCH {
            match frames.try_recv() {
                Ok(datagram) => {
                    frame::encode(&datagram, &mut batch);
                }
                Err(_) => break,
            }
        }
        if let Err(err) = write.write_all(&batch).await {
            break format!("write: {err}");
        }
        if let Err(err) = write.flush().await {
            break format!("flush: {err}");
        }
    };
    let _ = events.send(ConnEvent::Closed { conn, reason }).await;
}
