//! The mesh dataplane: one TUN interface (`attestmesh0`), one userspace WireGuard tunnel
//! (boringtun's sans-IO `noise::Tunn`) per peer, and WireGuard datagrams carried over TCP+TLS
//! through the dstack gateway, because dstack CVMs accept no inbound UDP.
//!
//! # Data path
//!
//! * **Out**: the kernel routes a packet for a mesh address into the TUN (the interface's
//!   prefix route covers the whole mesh); the TUN reader picks the peer whose mesh IP is the
//!   IPv4 destination and hands the packet to that peer's task, which encapsulates it and writes
//!   the datagram on the peer's connection. A packet for a mesh address with no peer is answered
//!   with ICMP host-unreachable, so local connects fail at once instead of hanging.
//! * **In**: a peer's connection yields datagrams; its task decapsulates them, drops packets
//!   whose source is not the peer's mesh IP (a peer's allowed IPs are exactly its mesh IP/32),
//!   and writes the rest to the TUN.
//! * Each peer's task owns its `Tunn`, so the tunnel needs no lock; it also owns the timers
//!   (`update_timers` every 100 ms) and follows boringtun's rule of repeating `decapsulate` with
//!   an empty datagram after every `WriteToNetwork`, which flushes packets queued during a
//!   handshake.
//!
//! # Transport
//!
//! * Framing: each datagram is prefixed by its length, u16 big-endian, on a TLS 1.3 stream
//!   (rustls with the `ring` provider chosen explicitly, ALPN `attestmesh-wg/1`).
//! * Reaching a peer: TCP to the gateway (`connect_via`) with SNI
//!   `<hex app_id>-<transport_port>s.<gateway_domain>`; the gateway's `s` route passes the TLS
//!   stream through to the peer's listener. Every node of a cluster is assumed to listen behind
//!   the same transport port and gateway domain ([`MeshConfig::transport_port`] and
//!   [`MeshConfig::gateway_domain`] are used both to listen and to dial), since [`PeerConfig`]
//!   carries neither.
//! * **TLS pinning**: the dialer accepts exactly the certificate whose SHA-256 is the peer's
//!   [`PeerConfig::tls_fingerprint`] (names, CAs and dates are not checked; the handshake
//!   signature is). Each node's certificate is derived from a seed ([`TlsIdentity::from_seed`]),
//!   so a restarted node keeps its fingerprint. The pin is what keeps the gateway (or anyone on
//!   the path) from terminating the transport.
//! * **No client certificates**: the listener authenticates nobody at the TLS layer. WireGuard
//!   authenticates both ends inside the tunnel, and an accepted connection carries nothing until
//!   it has proved a configured peer's WireGuard key (below), so client certificates would add
//!   a second identity to distribute without adding protection.
//! * **Who dials**: exactly one side of each pair dials, so there are never two connections
//!   for one pair: the node with the **lower mesh IP** dials, the other accepts. Both ends know
//!   both mesh IPs from chain state. (The member id would do as well, but the dataplane is not
//!   told its own member id; mesh IPs are unique in a cluster and never reused.)
//! * **Matching accepted connections**: by the first WireGuard handshake they carry, with no
//!   extra hello. The dialer sends a fresh handshake initiation as the first frame of every
//!   connection; the listener decrypts its static-key field with its own key (boringtun's
//!   `parse_handshake_anon`) to find the peer, and hands the connection to that peer's task,
//!   whose `Tunn` must then accept the initiation (MACs, key, replay-protected timestamp) and
//!   answer it. Only then does the connection replace the peer's current one; anything else
//!   closes it. So a connection is bound to a peer by that peer's WireGuard key, and a replayed
//!   or forged initiation cannot take over a peer's transport.
//! * **Unidentified connections**: an accepted connection has 5 s (as long as a dialer waits
//!   for its own TLS handshake) to finish TLS and send its first frame. At most 64 are identified at once; when another arrives, the **oldest** is closed
//!   to make room. Every connection comes from the gateway's address and the gateway route is
//!   public, so refusing the newest instead would let a few stalled handshakes a second keep
//!   every peer out (issue 16.3); with eviction, an attacker must open 64 connections within
//!   one honest handshake's round trip to displace it. Evictions and timeouts are counted
//!   ([`MeshHandle::accept_stats`]) and logged at most once a minute.
//! * **Reconnecting**: the dialer redials with exponential backoff (200 ms doubling to 5 s, with
//!   jitter), reset once the new connection has carried a valid WireGuard message. A connection
//!   that carried nothing for 35 s (peers send keepalives every 10 s) is closed and redialed.
//! * **Bad input**: a frame of length zero, a stream ending inside a frame, or a frame that is
//!   not a WireGuard message closes that connection (logged); a WireGuard message that fails to
//!   decrypt is dropped, as WireGuard drops bad datagrams. Nothing on the wire can panic the
//!   node.
//!
//! # Peers
//!
//! [`MeshHandle::set_peers`] replaces the peer set. A removed (or changed) peer's task, `Tunn`
//! and connection are gone when the call returns, so it carries no more traffic; a new peer
//! starts at once, without a restart. Logs use the target `attestmesh::mesh`: debug per
//! connection and handshake, info when a peer's tunnel goes up or down.

mod device;
mod error;
mod frame;
mod packet;
mod peer;
mod tls;
mod transport;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use attestmesh_service::listen::bind_tcp;
use boringtun::noise::Tunn;
use boringtun::x25519::{PublicKey, StaticSecret};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

pub use error::{MeshError, Result};
pub use tls::{TlsIdentity, client_config as transport_client_config, fingerprint, gateway_sni};
pub use transport::AcceptStats;

use peer::{PeerActor, PeerLink};

/// `tracing` target of the dataplane's log lines.
pub const LOG_TARGET: &str = "attestmesh::mesh";

/// The interface name the agent uses.
pub const DEFAULT_INTERFACE: &str = "attestmesh0";

/// MTU of the mesh interface. Over a TCP transport the outer path MTU does not limit it; 1280
/// (the IPv6 minimum) keeps every packet plus WireGuard (32 bytes) and framing (2 bytes) inside
/// one TLS record and a couple of TCP segments.
pub const MESH_MTU: u16 = 1280;

/// How a node joins the mesh.
#[derive(Clone)]
pub struct MeshConfig {
    /// The TUN interface to create ([`DEFAULT_INTERFACE`]); at most 15 characters.
    pub interface: String,
    /// This node's mesh address.
    pub mesh_ip: Ipv4Addr,
    /// The mesh's prefix length: the interface gets `mesh_ip/prefix_len` and so a route for the
    /// whole mesh.
    pub prefix_len: u8,
    /// This node's WireGuard static private key.
    pub wireguard_secret: [u8; 32],
    /// Where the transport TLS listener binds (e.g. `0.0.0.0:51820`); the gateway's `s` route
    /// forwards here.
    pub listen: SocketAddr,
    /// The certificate the listener presents (peers pin its fingerprint).
    pub tls: TlsIdentity,
    /// The gateway's address: every dial goes there, the SNI picks the peer.
    pub connect_via: SocketAddr,
    /// The gateway domain in the SNI.
    pub gateway_domain: String,
    /// The port in the SNI: the transport port every node listens behind.
    pub transport_port: u16,
}

impl fmt::Debug for MeshConfig {
    // By hand, so that the WireGuard private key never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshConfig")
            .field("interface", &self.interface)
            .field("mesh_ip", &self.mesh_ip)
            .field("prefix_len", &self.prefix_len)
            .field("wireguard_secret", &"<redacted>")
            .field("listen", &self.listen)
            .field("tls", &self.tls)
            .field("connect_via", &self.connect_via)
            .field("gateway_domain", &self.gateway_domain)
            .field("transport_port", &self.transport_port)
            .finish()
    }
}

/// One peer, as pinned from chain state and its endpoint envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub member_id: u64,
    /// The peer's dstack app id: names it at the gateway.
    pub app_id: [u8; 20],
    pub wireguard_public: [u8; 32],
    /// The peer's mesh address: where its traffic is routed, and the only source accepted
    /// from it.
    pub mesh_ip: Ipv4Addr,
    /// SHA-256 of the peer's transport certificate.
    pub tls_fingerprint: [u8; 32],
}

/// What the dataplane knows about one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStats {
    pub member_id: u64,
    pub mesh_ip: Ipv4Addr,
    /// Whether this node dials the peer (lower mesh IP) or waits for its connection.
    pub dials: bool,
    /// A transport connection to the peer is up now and has carried a WireGuard message from
    /// the peer's key (a TLS handshake alone does not count: the peer may still refuse it).
    pub transport_connected: bool,
    /// Transport connections that got that far so far (1 + reconnections).
    pub transport_connects: u64,
    /// A WireGuard session with the peer exists now.
    pub handshake_completed: bool,
    /// Time since the current session's handshake.
    pub last_handshake_age: Option<Duration>,
    /// Bytes of IP packets sent to / received from the peer through the tunnel.
    pub tx_bytes: u64,
    pub rx_bytes: u64,
}

impl PeerStats {
    /// The tunnel carries traffic: a connection and a session.
    pub fn tunnel_up(&self) -> bool {
        self.transport_connected && self.handshake_completed
    }
}

/// The dataplane. See the module documentation.
#[derive(Debug)]
pub struct Mesh;

impl Mesh {
    /// Create the TUN interface, bind the transport listener and start serving, with no peers
    /// yet ([`MeshHandle::set_peers`]). The mesh's tasks run on the calling tokio runtime.
    pub async fn start(config: MeshConfig) -> Result<MeshHandle> {
        validate(&config)?;
        let server_config = config.tls.server_config()?;
        let device = Arc::new(device::create(
            &config.interface,
            config.mesh_ip,
            config.prefix_len,
            MESH_MTU,
        )?);
        let (listener, local_addr) =
            bind_tcp("mesh transport connections (--mesh.listen)", config.listen).await?;
        let secret = StaticSecret::from(config.wireguard_secret);
        let public = PublicKey::from(&secret);
        let keys = Arc::new(StaticKeys { secret, public });
        let shared = Arc::new(Shared::default());
        let fingerprint = config.tls.fingerprint();
        info!(
            target: LOG_TARGET,
            interface = %config.interface,
            mesh_ip = %config.mesh_ip,
            prefix_len = config.prefix_len,
            listen = %local_addr,
            gateway = %config.connect_via,
            tls_fingerprint = %tls::hex32(&fingerprint),
            "mesh dataplane up"
        );

        let accept = OwnedTask(tokio::spawn(transport::accept_loop(
            listener,
            TlsAcceptor::from(server_config),
            Arc::clone(&shared),
            Arc::clone(&keys),
        )));
        let tun = OwnedTask(tokio::spawn(device::read_loop(
            Arc::clone(&device),
            Arc::clone(&shared),
        )));
        let supervisor = Supervisor {
            interface: config.interface,
            mesh_ip: config.mesh_ip,
            prefix_len: config.prefix_len,
            connect_via: config.connect_via,
            gateway_domain: config.gateway_domain,
            transport_port: config.transport_port,
            keys,
            device,
            shared: Arc::clone(&shared),
            peers: BTreeMap::new(),
            next_index: 0,
            background: vec![accept, tun],
        };
        let (commands, commands_rx) = mpsc::channel(16);
        let task = tokio::spawn(supervisor.run(commands_rx));
        Ok(MeshHandle {
            commands,
            shared,
            fingerprint,
            local_addr,
            task,
        })
    }
}

fn validate(config: &MeshConfig) -> Result<()> {
    let invalid = |reason: String| Err(MeshError::InvalidConfig(reason));
    if config.interface.is_empty() || config.interface.len() > 15 {
        return invalid(format!(
            "interface name {:?} must be 1 to 15 characters",
            config.interface
        ));
    }
    if !(1..=30).contains(&config.prefix_len) {
        return invalid(format!(
            "prefix length /{} must be between /1 and /30",
            config.prefix_len
        ));
    }
    if config.mesh_ip.is_unspecified() || config.mesh_ip.is_loopback() {
        return invalid(format!("{} is not a usable mesh address", config.mesh_ip));
    }
    if config.transport_port == 0 {
        return invalid("the transport port must not be 0".to_owned());
    }
    tls::server_name(&gateway_sni(
        &[0; 20],
        config.transport_port,
        &config.gateway_domain,
    ))?;
    Ok(())
}

/// A running mesh. Dropping it stops the mesh (like [`MeshHandle::shutdown`], without
/// waiting). Its methods may be called from any tokio runtime; the mesh's own tasks stay on the
/// runtime that started it (in tests, the one inside the node's network namespace).
#[derive(Debug)]
pub struct MeshHandle {
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    fingerprint: [u8; 32],
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MeshHandle {
    /// Replace the peer set. When this returns, removed peers carry no more traffic (their
    /// tunnel and connection are gone) and new ones are starting. A peer whose configuration
    /// changed is restarted. Invalid entries (this node's own address or key, duplicates) are
    /// skipped with a warning.
    pub async fn set_peers(&self, peers: Vec<PeerConfig>) {
        let (done, applied) = oneshot::channel();
        if self
            .commands
            .send(Command::SetPeers(peers, done))
            .await
            .is_err()
            || applied.await.is_err()
        {
            warn!(target: LOG_TARGET, "the mesh has stopped; peers not applied");
        }
    }

    /// Per-peer state, ordered by member id.
    pub fn stats(&self) -> Vec<PeerStats> {
        self.shared
            .read()
            .by_id
            .values()
            .map(|link| link.stats())
            .collect()
    }

    /// SHA-256 of this node's transport certificate (what peers pin; goes in the endpoint
    /// envelope).
    pub fn tls_fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// The transport listener's bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// What the transport listener did with the connections it accepted: how many were
    /// identified, and how many it shed (evicted in a flood, timed out, refused).
    pub fn accept_stats(&self) -> AcceptStats {
        self.shared.accepts.snapshot()
    }

    /// Stop every peer, close every connection and remove the interface; returns when all of
    /// it is gone.
    pub async fn shutdown(self) {
        let Self { commands, task, .. } = self;
        // The supervisor stops when its command channel closes.
        drop(commands);
        if let Err(err) = task.await
            && err.is_panic()
        {
            warn!(target: LOG_TARGET, %err, "the mesh supervisor panicked");
        }
    }
}

enum Command {
    SetPeers(Vec<PeerConfig>, oneshot::Sender<()>),
}

/// This node's WireGuard keys, for new tunnels and for identifying accepted connections.
struct StaticKeys {
    secret: StaticSecret,
    public: PublicKey,
}

/// The peer table the TUN reader, the listener and the handle read, and the listener's
/// counters.
#[derive(Default)]
struct Shared {
    table: RwLock<PeerTable>,
    accepts: transport::AcceptCounters,
}

#[derive(Default)]
struct PeerTable {
    by_id: BTreeMap<u64, Arc<PeerLink>>,
    by_ip: HashMap<Ipv4Addr, Arc<PeerLink>>,
    by_key: HashMap<[u8; 32], Arc<PeerLink>>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("peers", &self.read().by_id.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Shared {
    // Every write is a handful of map operations that cannot panic halfway, so a poisoned lock
    // still holds a consistent table and is used as is.
    fn read(&self) -> RwLockReadGuard<'_, PeerTable> {
        self.table.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, PeerTable> {
        self.table.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self, link: Arc<PeerLink>) {
        let mut table = self.write();
        table.by_ip.insert(link.config.mesh_ip, Arc::clone(&link));
        table
            .by_key
            .insert(link.config.wireguard_public, Arc::clone(&link));
        table.by_id.insert(link.config.member_id, link);
    }

    fn remove(&self, config: &PeerConfig) {
        let mut table = self.write();
        table.by_id.remove(&config.member_id);
        table.by_ip.remove(&config.mesh_ip);
        table.by_key.remove(&config.wireguard_public);
    }

    fn clear(&self) {
        *self.write() = PeerTable::default();
    }
}

/// A task aborted when dropped, so that whatever owns it cannot leak it.
struct OwnedTask(JoinHandle<()>);

impl OwnedTask {
    /// Abort and wait until the task (and everything it owned) is gone.
    async fn stop(mut self) {
        self.0.abort();
        // Cancelled is the expected outcome; a panic was already reported by tokio.
        let _ = (&mut self.0).await;
    }
}

impl Drop for OwnedTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct RunningPeer {
    config: PeerConfig,
    task: OwnedTask,
}

/// Owns the peer tasks and applies peer sets, one at a time.
struct Supervisor {
    interface: String,
    mesh_ip: Ipv4Addr,
    prefix_len: u8,
    connect_via: SocketAddr,
    gateway_domain: String,
    transport_port: u16,
    keys: Arc<StaticKeys>,
    device: Arc<tun::AsyncDevice>,
    shared: Arc<Shared>,
    peers: BTreeMap<u64, RunningPeer>,
    /// Source of each new tunnel's index (boringtun shifts it left by 8 bits).
    next_index: u32,
    /// The listener and the TUN reader.
    background: Vec<OwnedTask>,
}

impl Supervisor {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        while let Some(command) = commands.recv().await {
            match command {
                Command::SetPeers(peers, done) => {
                    self.apply(peers).await;
                    // The caller may have given up waiting; the peers are applied regardless.
                    let _ = done.send(());
                }
            }
        }
        // The handle is gone or shut down: stop everything, then let the device go, which
        // removes the interface.
        self.shared.clear();
        for task in std::mem::take(&mut self.background) {
            task.stop().await;
        }
        for (_, peer) in std::mem::take(&mut self.peers) {
            peer.task.stop().await;
        }
        info!(target: LOG_TARGET, interface = %self.interface, "mesh dataplane stopped");
    }

    async fn apply(&mut self, peers: Vec<PeerConfig>) {
        let wanted = self.usable(peers);
        // Removed and changed peers go first, so that their addresses and keys are free for
        // the new set.
        let stale: Vec<u64> = self
            .peers
            .iter()
            .filter(|(id, running)| wanted.get(id) != Some(&running.config))
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(running) = self.peers.remove(&id) {
                self.shared.remove(&running.config);
                running.task.stop().await;
                let change = if wanted.contains_key(&id) {
                    "changed; restarting it"
                } else {
                    "removed"
                };
                info!(target: LOG_TARGET, member = id, mesh_ip = %running.config.mesh_ip, "peer {change}");
            }
        }
        for (id, config) in wanted {
            if !self.peers.contains_key(&id) {
                self.add(config);
            }
        }
        debug!(target: LOG_TARGET, peers = ?self.peers.keys().collect::<Vec<_>>(), "peer set applied");
    }

    /// The entries of `peers` that can work, by member id; the others are logged and skipped.
    fn usable(&self, peers: Vec<PeerConfig>) -> BTreeMap<u64, PeerConfig> {
        let mut wanted = BTreeMap::new();
        let mut ips = HashSet::new();
        let mut keys = HashSet::new();
        let network =
            |ip: Ipv4Addr| u32::from(ip) & (u32::MAX << (32 - u32::from(self.prefix_len)));
        for peer in peers {
            let problem = if peer.mesh_ip == self.mesh_ip {
                Some("it has this node's mesh IP")
            } else if peer.wireguard_public == *self.keys.public.as_bytes() {
                Some("it has this node's WireGuard key")
            } else if network(peer.mesh_ip) != network(self.mesh_ip) {
                Some("its mesh IP is outside this node's mesh prefix")
            } else if wanted.contains_key(&peer.member_id) {
                Some("duplicate member id")
            } else if ips.contains(&peer.mesh_ip) {
                Some("another peer has the same mesh IP")
            } else if keys.contains(&peer.wireguard_public) {
                Some("another peer has the same WireGuard key")
            } else {
                None
            };
            if let Some(reason) = problem {
                warn!(target: LOG_TARGET, member = peer.member_id, mesh_ip = %peer.mesh_ip, "peer skipped: {reason}");
                continue;
            }
            ips.insert(peer.mesh_ip);
            keys.insert(peer.wireguard_public);
            wanted.insert(peer.member_id, peer);
        }
        wanted
    }

    fn add(&mut self, config: PeerConfig) {
        let member = config.member_id;
        let dials = u32::from(self.mesh_ip) < u32::from(config.mesh_ip);
        let dialer = if dials {
            let sni = gateway_sni(&config.app_id, self.transport_port, &self.gateway_domain);
            let built = tls::server_name(&sni).and_then(|name| {
                tls::client_config(config.tls_fingerprint).map(|tls| transport::Dialer {
                    via: self.connect_via,
                    sni,
                    name,
                    tls,
                })
            });
            match built {
                Ok(dialer) => Some(dialer),
                Err(err) => {
                    warn!(target: LOG_TARGET, member, %err, "peer skipped: cannot build its transport");
                    return;
                }
            }
        } else {
            None
        };
        self.next_index = (self.next_index + 1) & 0x00ff_ffff;
        let tunn = Tunn::new(
            self.keys.secret.clone(),
            PublicKey::from(config.wireguard_public),
            None,
            Some(peer::KEEPALIVE_SECS),
            self.next_index,
            None,
        );
        let (link, actor) = PeerActor::new(
            config.clone(),
            dials,
            tunn,
            Arc::clone(&self.device),
            dialer,
        );
        self.shared.insert(link);
        let task = OwnedTask(tokio::spawn(actor.run()));
        info!(
            target: LOG_TARGET,
            member,
            mesh_ip = %config.mesh_ip,
            role = if dials { "dials" } else { "accepts" },
            "peer added"
        );
        self.peers.insert(member, RunningPeer { config, task });
    }
}
