//! One peer's task: it owns the peer's `Tunn`, its timers and its transport connection, and is
//! the only code that touches them.

use std::future::{Future, pending};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::{Tunn, TunnResult};
use rand_core::{OsRng, RngCore};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior, interval, sleep_until};
use tracing::{debug, info, trace, warn};
use tun::AsyncDevice;

use super::transport::{self, Accepted, ConnEvent, Dialer, Stream};
use super::{LOG_TARGET, PeerConfig, PeerStats, frame};

/// WireGuard persistent keepalive: an idle tunnel still sends something this often, so the
/// other end can tell a live connection from a dead one.
pub(super) const KEEPALIVE_SECS: u16 = 10;

/// A connection that carried nothing for this long is dead (3.5 keepalive periods).
const IDLE_TIMEOUT: Duration = Duration::from_secs(35);

/// A new connection that has not carried a valid WireGuard message by then (the handshake
/// answer takes a round trip) is not going to: close it and redial.
const UNPROVEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Failed attempts in a row before a warning (then debug again until a connection works).
const WARN_AFTER_FAILURES: u32 = 5;

/// How often the tunnel's timers run (boringtun asks for at least every 250 ms).
const TIMER_TICK: Duration = Duration::from_millis(100);

/// First and largest pause between two dials.
const BACKOFF_INITIAL: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Packets from the TUN waiting for this peer; beyond it they are dropped, like a full socket
/// buffer.
const PACKET_QUEUE: usize = 512;

/// Frames waiting for the connection's writer.
const WRITE_QUEUE: usize = 512;

/// Frames read from the connection waiting for this task.
const EVENT_QUEUE: usize = 256;

/// Buffer for one datagram or packet, with room for boringtun's overhead: `encapsulate` wants
/// the packet + 32 bytes and at least 148, `decapsulate` the datagram's length.
const BUF_LEN: usize = frame::MAX_FRAME + 64;

/// WireGuard message type of a handshake response (the first byte, little-endian u32).
const HANDSHAKE_RESPONSE: u8 = 2;

/// What the rest of the mesh holds of a peer: where to send its packets and connections, and
/// its stats.
pub(super) struct PeerLink {
    pub config: PeerConfig,
    pub dials: bool,
    pub packets: mpsc::Sender<Vec<u8>>,
    pub accepted: mpsc::Sender<Accepted>,
    stats: Arc<Mutex<StatsState>>,
}

impl PeerLink {
    pub fn stats(&self) -> PeerStats {
        let state = *lock(&self.stats);
        PeerStats {
            member_id: self.config.member_id,
            mesh_ip: self.config.mesh_ip,
            dials: self.dials,
            transport_connected: state.transport_connected,
            transport_connects: state.transport_connects,
            handshake_completed: state.handshake_at.is_some(),
            last_handshake_age: state.handshake_at.map(|at| at.elapsed()),
            tx_bytes: state.tx_bytes,
            rx_bytes: state.rx_bytes,
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct StatsState {
    transport_connected: bool,
    transport_connects: u64,
    /// When the current session's handshake completed.
    handshake_at: Option<Instant>,
    tx_bytes: u64,
    rx_bytes: u64,
}

// The state is plain data written in one assignment, so a poisoned lock still holds a
// consistent value.
fn lock(stats: &Mutex<StatsState>) -> std::sync::MutexGuard<'_, StatsState> {
    stats.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The connection in use.
struct Conn {
    id: u64,
    frames: mpsc::Sender<Vec<u8>>,
    reader: AbortHandle,
    writer: AbortHandle,
    /// Carried a WireGuard message the tunnel accepted ([`PeerActor::mark_proven`]).
    proven: bool,
    last_rx: Instant,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Ending both tasks drops the stream, which closes the TCP connection.
        self.reader.abort();
        self.writer.abort();
    }
}

type Dialing = Pin<Box<dyn Future<Output = Result<Stream, String>> + Send>>;

pub(super) struct PeerActor {
    config: PeerConfig,
    tunn: Tunn,
    device: Arc<AsyncDevice>,
    stats: Arc<Mutex<StatsState>>,
    packets: mpsc::Receiver<Vec<u8>>,
    accepted: mpsc::Receiver<Accepted>,
    events_tx: mpsc::Sender<ConnEvent>,
    events: mpsc::Receiver<ConnEvent>,
    /// `Some` when this node dials the peer.
    dialer: Option<Dialer>,
    conn: Option<Conn>,
    next_conn: u64,
    /// Connection tasks; dropping the actor drops the set, which aborts them.
    tasks: JoinSet<()>,
    dialing: Option<Dialing>,
    next_dial: Option<Instant>,
    backoff: Duration,
    /// Failed attempts since the last working connection (to warn once, not every attempt).
    failed_dials: u32,
    /// The tunnel state last logged at info.
    up: bool,
    buf: Vec<u8>,
}

impl PeerActor {
    pub fn new(
        config: PeerConfig,
        dials: bool,
        tunn: Tunn,
        device: Arc<AsyncDevice>,
        dialer: Option<Dialer>,
    ) -> (Arc<PeerLink>, Self) {
        let (packets_tx, packets) = mpsc::channel(PACKET_QUEUE);
        // Room for one connection being adopted and one more; extra ones are closed.
        let (accepted_tx, accepted) = mpsc::channel(2);
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let stats = Arc::new(Mutex::new(StatsState::default()));
        let link = Arc::new(PeerLink {
            config: config.clone(),
            dials,
            packets: packets_tx,
            accepted: accepted_tx,
            stats: Arc::clone(&stats),
        });
        let next_dial = dialer.as_ref().map(|_| Instant::now());
        let actor = Self {
            config,
            tunn,
            device,
            stats,
            packets,
            accepted,
            events_tx,
            events,
            dialer,
            conn: None,
            next_conn: 0,
            tasks: JoinSet::new(),
            dialing: None,
            next_dial,
            backoff: BACKOFF_INITIAL,
            failed_dials: 0,
            up: false,
            buf: vec![0u8; BUF_LEN],
        };
        (link, actor)
    }

    pub async fn run(mut self) {
        let mut tick = interval(TIMER_TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let dial_at = if self.conn.is_none() && self.dialing.is_none() {
                self.next_dial
            } else {
                None
            };
            tokio::select! {
                packet = self.packets.recv() => match packet {
                    Some(packet) => self.outbound(&packet),
                    // The supervisor dropped this peer.
                    None => break,
                },
                Some(event) = self.events.recv() => self.on_event(event).await,
                Some(accepted) = self.accepted.recv() => self.on_accepted(accepted),
                dialed = poll_dialing(&mut self.dialing) => {
                    self.dialing = None;
                    self.on_dialed(dialed);
                }
                () = sleep_until_opt(dial_at) => self.start_dial(),
                _ = tick.tick() => self.on_tick(),
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
            }
            self.publish();
        }
    }

    /// A packet from the TUN for this peer.
    fn outbound(&mut self, packet: &[u8]) {
        match self.tunn.encapsulate(packet, &mut self.buf) {
            TunnResult::WriteToNetwork(datagram) => send(&self.conn, datagram),
            TunnResult::Err(err) => {
                debug!(target: LOG_TARGET, member = self.config.member_id, ?err, "cannot encapsulate; packet dropped");
            }
            // No session yet: boringtun queued the packet (and a handshake is in progress).
            _ => {}
        }
    }

    async fn on_event(&mut self, event: ConnEvent) {
        match event {
            ConnEvent::Frame { conn, datagram } => {
                if !self.is_current(conn) {
                    return;
                }
                // Anything that is not a WireGuard message means the stream is not what this
                // peer should be sending: give up on the connection rather than guess.
                if Tunn::parse_incoming_packet(&datagram).is_err() {
                    warn!(target: LOG_TARGET, member = self.config.member_id, len = datagram.len(), "malformed frame (not a WireGuard message); closing the connection");
                    self.close("malformed frame");
                    return;
                }
                if self.inbound(&datagram).await {
                    self.mark_proven();
                }
            }
            ConnEvent::Closed { conn, reason } => {
                if self.is_current(conn) {
                    self.close(&reason);
                }
            }
        }
    }

    fn is_current(&self, conn: u64) -> bool {
        self.conn.as_ref().is_some_and(|c| c.id == conn)
    }

    /// Decapsulate one datagram and do what the tunnel asks; true when the tunnel accepted it.
    async fn inbound(&mut self, datagram: &[u8]) -> bool {
        let mut result = self.tunn.decapsulate(None, datagram, &mut self.buf);
        loop {
            match result {
                TunnResult::WriteToNetwork(reply) => {
                    send(&self.conn, reply);
                    // boringtun: repeat with an empty datagram until Done, which sends the
                    // packets it queued while the handshake was in progress.
                    result = self.tunn.decapsulate(None, &[], &mut self.buf);
                }
                TunnResult::WriteToTunnelV4(packet, src) => {
                    if src != self.config.mesh_ip {
                        debug!(target: LOG_TARGET, member = self.config.member_id, %src, "packet from outside the peer's allowed IP dropped");
                    } else if let Err(err) = self.device.send(packet).await {
                        trace!(target: LOG_TARGET, %err, "cannot write to the TUN; packet dropped");
                    }
                    return true;
                }
                TunnResult::WriteToTunnelV6(_, src) => {
                    debug!(target: LOG_TARGET, member = self.config.member_id, %src, "IPv6 packet dropped (the mesh is IPv4)");
                    return true;
                }
                // A keepalive, a cookie, or the end of the queue.
                TunnResult::Done => return true,
                TunnResult::Err(err) => {
                    debug!(target: LOG_TARGET, member = self.config.member_id, ?err, "datagram dropped");
                    return false;
                }
            }
        }
    }

    /// A connection from the listener whose first frame is a handshake initiation from this
    /// peer's key. Adopted only if the tunnel accepts the initiation and answers it.
    fn on_accepted(&mut self, accepted: Accepted) {
        let Accepted {
            stream,
            first,
            remote,
        } = accepted;
        let response = match self.tunn.decapsulate(None, &first, &mut self.buf) {
            TunnResult::WriteToNetwork(reply) if reply.first() == Some(&HANDSHAKE_RESPONSE) => {
                reply.to_vec()
            }
            TunnResult::Err(err) => {
                debug!(target: LOG_TARGET, member = self.config.member_id, %remote, ?err, "accepted connection's handshake refused; closing it");
                return;
            }
            _ => {
                // A cookie reply (handshake rate limit) or nothing: not proven, not adopted.
                debug!(target: LOG_TARGET, member = self.config.member_id, %remote, "accepted connection's handshake not answered; closing it");
                return;
            }
        };
        debug!(target: LOG_TARGET, member = self.config.member_id, %remote, "accepted connection proved the peer's key; adopting it");
        self.adopt(stream);
        self.mark_proven();
        send(&self.conn, &response);
        self.flush_queue();
    }

    /// The current connection carried a message the tunnel accepted: it reaches the peer (a
    /// TLS handshake alone only shows it reaches the pinned certificate's holder's listener,
    /// which may still refuse it). Only now does it count as connected, and the dial backoff
    /// resets.
    fn mark_proven(&mut self) {
        let Some(conn) = &mut self.conn else {
            return;
        };
        conn.last_rx = Instant::now();
        if conn.proven {
            return;
        }
        conn.proven = true;
        self.backoff = BACKOFF_INITIAL;
        self.failed_dials = 0;
        let mut stats = lock(&self.stats);
        stats.transport_connected = true;
        stats.transport_connects += 1;
    }

    /// Send what boringtun queued (packets waiting for a session).
    fn flush_queue(&mut self) {
        while let TunnResult::WriteToNetwork(datagram) =
            self.tunn.decapsulate(None, &[], &mut self.buf)
        {
            send(&self.conn, datagram);
        }
    }

    fn start_dial(&mut self) {
        self.next_dial = None;
        if let Some(dialer) = &self.dialer {
            debug!(target: LOG_TARGET, member = self.config.member_id, via = %dialer.via, sni = %dialer.sni, "dialing");
            self.dialing = Some(Box::pin(Dialer::dial(
                dialer.via,
                dialer.name.clone(),
                Arc::clone(&dialer.tls),
            )));
        }
    }

    fn on_dialed(&mut self, dialed: Result<Stream, String>) {
        match dialed {
            Ok(stream) => {
                debug!(target: LOG_TARGET, member = self.config.member_id, "transport connected; sending a handshake initiation");
                self.adopt(stream);
                // Every connection opens with a fresh initiation: it is how the listener
                // identifies the connection, and it re-keys over the new path at once.
                match self.tunn.format_handshake_initiation(&mut self.buf, true) {
                    TunnResult::WriteToNetwork(init) => send(&self.conn, init),
                    other => {
                        debug!(target: LOG_TARGET, member = self.config.member_id, result = ?other, "no handshake initiation to send");
                    }
                }
            }
            Err(reason) => {
                let retry_in = self.schedule_redial();
                debug!(target: LOG_TARGET, member = self.config.member_id, %reason, ?retry_in, "dial failed");
                self.note_failure(&reason, retry_in);
            }
        }
    }

    /// Use `stream` as the peer's connection, replacing (closing) any current one.
    fn adopt(&mut self, stream: Stream) {
        if self.conn.take().is_some() {
            debug!(target: LOG_TARGET, member = self.config.member_id, "replacing the current connection");
        }
        self.next_conn += 1;
        let id = self.next_conn;
        let (read, write) = tokio::io::split(stream);
        let (frames_tx, frames) = mpsc::channel(WRITE_QUEUE);
        let reader = self
            .tasks
            .spawn(transport::read_loop(id, read, self.events_tx.clone()));
        let writer = self.tasks.spawn(transport::write_loop(
            id,
            write,
            frames,
            self.events_tx.clone(),
        ));
        self.conn = Some(Conn {
            id,
            frames: frames_tx,
            reader,
            writer,
            proven: false,
            last_rx: Instant::now(),
        });
        lock(&self.stats).transport_connected = false;
    }

    /// Drop the current connection; a dialer redials after its backoff.
    fn close(&mut self, reason: &str) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        lock(&self.stats).transport_connected = false;
        if self.dialer.is_some() {
            let retry_in = self.schedule_redial();
            debug!(target: LOG_TARGET, member = self.config.member_id, %reason, ?retry_in, "connection closed; redialing");
            if !conn.proven {
                // Reached a listener, but the peer never answered: e.g. it does not have this
                // node among its peers (yet).
                self.note_failure(
                    &format!("the peer did not accept the connection ({reason})"),
                    retry_in,
                );
            }
        } else {
            debug!(target: LOG_TARGET, member = self.config.member_id, %reason, "connection closed; waiting for the peer to redial");
        }
    }

    /// Count a failed attempt to reach the peer; warn once when they keep failing.
    fn note_failure(&mut self, reason: &str, retry_in: Duration) {
        self.failed_dials = self.failed_dials.saturating_add(1);
        if self.failed_dials == WARN_AFTER_FAILURES {
            warn!(target: LOG_TARGET, member = self.config.member_id, %reason, ?retry_in, "still cannot reach the peer; retrying with backoff");
        }
    }

    /// Set the next dial after the current backoff (with ±25 % jitter, so that many nodes that
    /// lost the gateway at once do not redial in lockstep), and double the backoff.
    fn schedule_redial(&mut self) -> Duration {
        let jitter = 0.75 + f64::from(OsRng.next_u32() % 1000) / 2000.0;
        let wait = self.backoff.mul_f64(jitter);
        self.next_dial = Some(Instant::now() + wait);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        wait
    }

    fn on_tick(&mut self) {
        match self.tunn.update_timers(&mut self.buf) {
            TunnResult::WriteToNetwork(datagram) => send(&self.conn, datagram),
            // No session and none coming (REKEY_ATTEMPT_TIME passed): the stats show it; a new
            // connection or packet starts a new handshake.
            TunnResult::Err(WireGuardError::ConnectionExpired) => {}
            TunnResult::Err(err) => {
                trace!(target: LOG_TARGET, member = self.config.member_id, ?err, "timer error");
            }
            _ => {}
        }
        let stale = self.conn.as_ref().and_then(|conn| {
            let quiet = conn.last_rx.elapsed();
            if !conn.proven && quiet > UNPROVEN_TIMEOUT {
                Some("no valid WireGuard message from the peer on a new connection")
            } else if quiet > IDLE_TIMEOUT {
                Some("nothing received within the idle timeout")
            } else {
                None
            }
        });
        if let Some(reason) = stale {
            self.close(reason);
        }
    }

    /// Update the shared stats and log tunnel transitions.
    fn publish(&mut self) {
        let (since_handshake, tx, rx, _, _) = self.tunn.stats();
        let now = Instant::now();
        let connected = self.conn.as_ref().is_some_and(|conn| conn.proven);
        {
            let mut stats = lock(&self.stats);
            stats.handshake_at = since_handshake.and_then(|age| now.checked_sub(age));
            stats.tx_bytes = tx as u64;
            stats.rx_bytes = rx as u64;
        }
        let up = connected && since_handshake.is_some();
        if up != self.up {
            self.up = up;
            if up {
                info!(target: LOG_TARGET, member = self.config.member_id, mesh_ip = %self.config.mesh_ip, "peer tunnel up");
            } else {
                info!(target: LOG_TARGET, member = self.config.member_id, mesh_ip = %self.config.mesh_ip, "peer tunnel down");
            }
        }
    }
}

/// Queue `datagram` on the connection; without one (or with a full queue) it is lost, as a
/// UDP datagram would be, and WireGuard's and the inner protocols' retries take over.
fn send(conn: &Option<Conn>, datagram: &[u8]) {
    let Some(conn) = conn else {
        trace!(target: LOG_TARGET, "no connection; datagram dropped");
        return;
    };
    match conn.frames.try_send(datagram.to_vec()) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            trace!(target: LOG_TARGET, "write queue full; datagram dropped")
        }
        // The writer ended; its Closed event is on the way.
        Err(TrySendError::Closed(_)) => {}
    }
}

async fn poll_dialing(dialing: &mut Option<Dialing>) -> Result<Stream, String> {
    match dialing {
        Some(dial) => dial.await,
        None => pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => pending().await,
    }
}
