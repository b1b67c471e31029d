//! TCP+TLS connections that carry WireGuard datagrams: dialing a peer through the gateway,
//! the listener that identifies accepted connections by their first handshake, and the two
//! tasks that move frames on an adopted connection.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, Tunn};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, Id as TaskId, JoinSet};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::{debug, info, warn};

use super::{LOG_TARGET, Shared, StaticKeys, frame};

/// A transport connection, dialed or accepted.
pub(super) type Stream = tokio_rustls::TlsStream<TcpStream>;

/// How long a TCP connect to the gateway may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the dialer's TLS handshake may take.
const TLS_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an accepted connection may take to finish TLS and send its first frame: the
/// pre-authentication window. An honest dialer sends its first frame in the same flight as its
/// TLS Finished, one round trip after its ClientHello reached this node, and gives up its own
/// TLS handshake after [`TLS_TIMEOUT`]; waiting longer than the dialer would only hold a slot
/// for a connection nobody will use.
const IDENTIFY_TIMEOUT: Duration = TLS_TIMEOUT;

/// Accepted connections being identified at once. When a new one arrives and this many are
/// pending, the **oldest** is closed to make room (issue 16.3): every connection arrives from
/// the gateway's address, so the listener cannot tell an attacker's from a peer's before the
/// handshake, and refusing the newest let a few stalled handshakes a second keep every peer
/// out. With eviction, displacing a peer's connection takes this many new connections within
/// that connection's own handshake (one round trip through the gateway), not a trickle.
const MAX_PENDING_ACCEPTS: usize = 64;

/// Connections shed by the listener (evicted or timed out) are logged at most once per window,
/// with the counts since the last line; [`AcceptStats`] has the exact figures.
const SHED_LOG_WINDOW: Duration = Duration::from_secs(60);

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

/// What the listener did with the connections it accepted, since the mesh started
/// ([`super::MeshHandle::accept_stats`]). Every accepted connection ends up in exactly one of
/// `identified`, `evicted`, `timed_out` and `refused` (or is still pending).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AcceptStats {
    /// TCP connections accepted.
    pub accepted: u64,
    /// Handed to a peer's task: the first frame was a handshake initiation from a configured
    /// peer's key (the peer's task may still refuse it).
    pub identified: u64,
    /// Closed while still being identified to make room for a newer connection, the listener
    /// holding its maximum of unidentified ones (64: a flood).
    pub evicted: u64,
    /// Closed because TLS and the first frame did not complete within the pre-authentication
    /// window.
    pub timed_out: u64,
    /// Closed for what they sent: a failed TLS handshake, a first frame that is no handshake
    /// initiation for this node, an unknown key, or a busy peer task.
    pub refused: u64,
}

/// The listener's counters, shared with the handle.
#[derive(Debug, Default)]
pub(super) struct AcceptCounters {
    accepted: AtomicU64,
    identified: AtomicU64,
    evicted: AtomicU64,
    timed_out: AtomicU64,
    refused: AtomicU64,
}

impl AcceptCounters {
    pub fn snapshot(&self) -> AcceptStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        AcceptStats {
            accepted: read(&self.accepted),
            identified: read(&self.identified),
            evicted: read(&self.evicted),
            timed_out: read(&self.timed_out),
            refused: read(&self.refused),
        }
    }

    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// How identifying one accepted connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Identified {
    /// Handed to its peer's task.
    Handed,
    TimedOut,
    Refused,
    /// Aborted to make room for a newer connection.
    Evicted,
}

/// Connections being identified, oldest first, so the oldest can be evicted.
#[derive(Default)]
struct Pending {
    tasks: JoinSet<Identified>,
    order: VecDeque<(TaskId, AbortHandle)>,
}

impl Pending {
    fn len(&self) -> usize {
        self.order.len()
    }

    fn spawn(&mut self, identify: impl Future<Output = Identified> + Send + 'static) {
        let handle = self.tasks.spawn(identify);
        self.order.push_back((handle.id(), handle));
    }

    /// Close the oldest connection still being identified, which frees its place at once. A
    /// task that already finished (and waits to be joined) is no longer pending and is skipped.
    /// The eviction is counted when the aborted task is joined, so a task that finished just
    /// before the abort counts as what it did, never twice.
    fn evict_oldest(&mut self) {
        while let Some((_, oldest)) = self.order.pop_front() {
            if !oldest.is_finished() {
                // Aborting drops the task and with it the TCP stream, which closes it.
                oldest.abort();
                return;
            }
        }
    }

    /// The next finished task's outcome; `None` when no task is left.
    async fn join_next(&mut self) -> Option<Identified> {
        let joined = self.tasks.join_next_with_id().await?;
        let id = match &joined {
            Ok((id, _)) => *id,
            Err(err) => err.id(),
        };
        self.order.retain(|(task, _)| *task != id);
        Some(match joined {
            Ok((_, outcome)) => outcome,
            Err(err) if err.is_cancelled() => Identified::Evicted,
            Err(err) => {
                warn!(target: LOG_TARGET, %err, "identifying an accepted connection panicked; the connection is closed");
                Identified::Refused
            }
        })
    }
}

/// Accept transport connections and hand each, once identified, to its peer's task.
pub(super) async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    keys: Arc<StaticKeys>,
) {
    let mut pending = Pending::default();
    let mut shed_log = ShedLog::default();
    let counters = &shared.accepts;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote)) => {
                    AcceptCounters::count(&counters.accepted);
                    if pending.len() >= MAX_PENDING_ACCEPTS {
                        pending.evict_oldest();
                    }
                    pending.spawn(identify(tcp, remote, acceptor.clone(), Arc::clone(&shared), Arc::clone(&keys)));
                }
                Err(err) => {
                    warn!(target: LOG_TARGET, %err, "accepting a transport connection failed; retrying");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
            Some(outcome) = pending.join_next(), if !pending.tasks.is_empty() => match outcome {
                Identified::Handed => AcceptCounters::count(&counters.identified),
                Identified::Refused => AcceptCounters::count(&counters.refused),
                Identified::TimedOut => {
                    AcceptCounters::count(&counters.timed_out);
                    shed_log.note(Instant::now(), Shed::TimedOut);
                }
                Identified::Evicted => {
                    AcceptCounters::count(&counters.evicted);
                    shed_log.note(Instant::now(), Shed::Evicted);
                }
            },
            () = sleep_until_some(shed_log.due) => shed_log.flush(Instant::now()),
        }
    }
}

/// Why the listener shed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shed {
    Evicted,
    TimedOut,
}

/// Connections shed since the last log line, logged at most once per [`SHED_LOG_WINDOW`]: the
/// first at once, later ones summed and logged when the window ends.
#[derive(Debug, Default)]
struct ShedLog {
    /// When the last line was logged.
    last: Option<Instant>,
    evicted: u64,
    timed_out: u64,
    /// When the counts held back are to be logged.
    due: Option<Instant>,
}

/// One log line's worth of shed connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ShedReport {
    evicted: u64,
    timed_out: u64,
}

impl ShedLog {
    fn note(&mut self, now: Instant, shed: Shed) {
        if let Some(report) = self.record(now, shed) {
            report.log();
        }
    }

    fn flush(&mut self, now: Instant) {
        if let Some(report) = self.take(now) {
            report.log();
        }
    }

    /// Count `shed`; the report to log now, if the window allows one.
    fn record(&mut self, now: Instant, shed: Shed) -> Option<ShedReport> {
        match shed {
            Shed::Evicted => self.evicted += 1,
            Shed::TimedOut => self.timed_out += 1,
        }
        match self.last {
            Some(last) if now < last + SHED_LOG_WINDOW => {
                self.due.get_or_insert(last + SHED_LOG_WINDOW);
                None
            }
            _ => self.take(now),
        }
    }

    /// The counts held back, if any, as a report logged `now`.
    fn take(&mut self, now: Instant) -> Option<ShedReport> {
        self.due = None;
        if self.evicted == 0 && self.timed_out == 0 {
            return None;
        }
        self.last = Some(now);
        Some(ShedReport {
            evicted: std::mem::take(&mut self.evicted),
            timed_out: std::mem::take(&mut self.timed_out),
        })
    }
}

impl ShedReport {
    fn log(self) {
        let window_s = SHED_LOG_WINDOW.as_secs();
        let timeout_s = IDENTIFY_TIMEOUT.as_secs();
        if self.evicted > 0 {
            warn!(target: LOG_TARGET, evicted = self.evicted, timed_out = self.timed_out, max_pending = MAX_PENDING_ACCEPTS, window_s,
                "transport connections that never identified a peer are arriving faster than they finish (a flood through the gateway?): the oldest unidentified ones were closed to make room, so peers still get in; at most one line per window");
        } else {
            info!(target: LOG_TARGET, timed_out = self.timed_out, timeout_s, window_s,
                "accepted transport connections closed without finishing TLS and a first frame in time; at most one line per window");
        }
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
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
) -> Identified {
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
            return Identified::Refused;
        }
        // Counted and logged (once per window) by the accept loop.
        Err(_) => return Identified::TimedOut,
    };
    let peer_key = match Tunn::parse_incoming_packet(&first) {
        Ok(Packet::HandshakeInit(init)) => {
            match parse_handshake_anon(&keys.secret, &keys.public, &init) {
                Ok(half) => half.peer_static_public,
                Err(err) => {
                    debug!(target: LOG_TARGET, %remote, ?err, "accepted connection closed: its handshake is not for this node's key");
                    return Identified::Refused;
                }
            }
        }
        _ => {
            debug!(target: LOG_TARGET, %remote, len = first.len(), "accepted connection closed: the first frame is not a WireGuard handshake initiation");
            return Identified::Refused;
        }
    };
    let link = shared.read().by_key.get(&peer_key).cloned();
    let Some(link) = link else {
        debug!(target: LOG_TARGET, %remote, "accepted connection closed: the handshake's key is no configured peer's");
        return Identified::Refused;
    };
    let accepted = Accepted {
        stream: Stream::Server(tls),
        first,
        remote,
    };
    if link.accepted.try_send(accepted).is_err() {
        debug!(target: LOG_TARGET, %remote, member = link.config.member_id, "accepted connection closed: the peer's task is busy or stopping");
        return Identified::Refused;
    }
    Identified::Handed
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use boringtun::x25519::{PublicKey, StaticSecret};
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::mesh::TlsIdentity;

    #[test]
    fn shed_connections_are_logged_at_most_once_per_window_and_none_are_lost() {
        let start = Instant::now();
        let mut log = ShedLog::default();
        // The first is reported at once.
        assert_eq!(
            log.record(start, Shed::Evicted),
            Some(ShedReport {
                evicted: 1,
                timed_out: 0
            })
        );
        // A flood inside the window: nothing logged, one report due when the window ends.
        for i in 1..=500 {
            let shed = if i % 5 == 0 {
                Shed::TimedOut
            } else {
                Shed::Evicted
            };
            assert_eq!(log.record(start + Duration::from_millis(i), shed), None);
        }
        assert_eq!(log.due, Some(start + SHED_LOG_WINDOW));
        let end = start + SHED_LOG_WINDOW;
        assert_eq!(
            log.take(end),
            Some(ShedReport {
                evicted: 400,
                timed_out: 100
            })
        );
        assert_eq!(log.due, None);
        // The window restarts at that line; with nothing held back, nothing is due.
        assert_eq!(log.take(end + Duration::from_secs(1)), None);
        assert_eq!(
            log.record(end + Duration::from_secs(1), Shed::TimedOut),
            None
        );
        assert_eq!(
            log.record(end + SHED_LOG_WINDOW, Shed::TimedOut),
            Some(ShedReport {
                evicted: 0,
                timed_out: 2
            })
        );
    }

    /// Issue 16.3 regression, at the policy's level: with the listener full of connections
    /// that never speak, a new one closes the oldest instead of being refused itself.
    #[tokio::test]
    async fn a_full_listener_evicts_its_oldest_unidentified_connection_for_a_new_one() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = TlsIdentity::from_seed(&[3; 32]).unwrap();
        let acceptor = TlsAcceptor::from(tls.server_config().unwrap());
        let secret = StaticSecret::from([4; 32]);
        let public = PublicKey::from(&secret);
        let keys = Arc::new(StaticKeys { secret, public });
        let shared = Arc::new(Shared::default());
        let serving = tokio::spawn(accept_loop(listener, acceptor, Arc::clone(&shared), keys));

        let wait_accepted = |count: u64| {
            let shared = Arc::clone(&shared);
            async move {
                timeout(Duration::from_secs(3), async {
                    while shared.accepts.snapshot().accepted < count {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
                .await
                .expect("the listener accepts every connection");
            }
        };
        let mut stalled = Vec::new();
        for _ in 0..MAX_PENDING_ACCEPTS {
            stalled.push(TcpStream::connect(addr).await.unwrap());
        }
        wait_accepted(MAX_PENDING_ACCEPTS as u64).await;
        let mut newest = TcpStream::connect(addr).await.unwrap();
        wait_accepted(MAX_PENDING_ACCEPTS as u64 + 1).await;

        // The oldest is closed (end of stream, or a reset)...
        let mut byte = [0u8; 1];
        let oldest = timeout(Duration::from_secs(2), stalled[0].read(&mut byte))
            .await
            .expect("the oldest unidentified connection is closed at once");
        assert!(matches!(oldest, Ok(0) | Err(_)), "{oldest:?}");
        // ...while the newest is still open, waiting for its TLS handshake.
        assert!(
            timeout(Duration::from_millis(300), newest.read(&mut byte))
                .await
                .is_err(),
            "the newest connection must be kept"
        );
        let stats = shared.accepts.snapshot();
        assert_eq!(
            (stats.evicted, stats.timed_out, stats.identified),
            (1, 0, 0),
            "{stats:?}"
        );
        serving.abort();
    }
}
