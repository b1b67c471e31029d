//! The mesh dataplane on real TUN devices. Every node is a `Mesh` in its own network namespace
//! (its own `attestmesh0`, its transport listener on the namespace's veth address) and reaches
//! the others only through a gateway emulator in the root namespace, by SNI and TLS
//! passthrough, as CVMs reach each other through the dstack gateway. App traffic is plain TCP
//! between mesh IPs, from runtimes inside the namespaces.
//!
//! These tests need root, /dev/net/tun and `ip`; without them they fail with what is missing,
//! never pass silently. Every wait is bounded; namespaces are deleted when a test ends, also
//! when it fails.

use crate::harness::init_logs;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use attestmesh_agent::mesh::{
    Mesh, MeshConfig, MeshHandle, PeerConfig, PeerStats, TlsIdentity, gateway_sni,
    transport_client_config,
};
use attestmesh_devnet::gateway::{GatewayConfig, GatewayEmulator, GatewayHandle};
use attestmesh_dstack::EthAddress;
use attestmesh_testbed::netns::{self, Netns, NsTask};
use boringtun::noise::{Tunn, TunnResult};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep, timeout};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The port every node's transport listens on (inside its own namespace) and puts in the SNI.
const TRANSPORT_PORT: u16 = 51820;

/// The app port the echo servers listen on, on their mesh IP.
const APP_PORT: u16 = 7000;

/// Bound on any single wait: far above what an honest step takes here.
const STEP: Duration = Duration::from_secs(30);

/// Bound on one app connect: a working tunnel connects in milliseconds.
const CONNECT: Duration = Duration::from_secs(3);

/// Fail (not skip) without the privileges these tests need.
fn require_root() {
    init_logs();
    if let Err(missing) = netns::require_privileges() {
        panic!("{missing}");
    }
}

fn mesh_ip(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 88, 0, index)
}

fn app_id(index: u8) -> [u8; 20] {
    let mut id = [0xa7; 20];
    id[19] = index;
    id
}

fn wireguard_secret(index: u8) -> [u8; 32] {
    [index; 32]
}

fn wireguard_public(index: u8) -> [u8; 32] {
    let secret = boringtun::x25519::StaticSecret::from(wireguard_secret(index));
    boringtun::x25519::PublicKey::from(&secret).to_bytes()
}

async fn gateway() -> GatewayHandle {
    GatewayEmulator::spawn(GatewayConfig {
        // All interfaces: the namespaces reach it on their veth's host-side address.
        listen: SocketAddr::from(([0, 0, 0, 0], 0)),
        ..GatewayConfig::default()
    })
    .unwrap()
}

/// A mesh node in its own namespace. Field order is drop order: the mesh stops, its runtime
/// ends, then the namespace is deleted.
struct Node {
    index: u8,
    /// How the other nodes configure this one.
    peer: PeerConfig,
    handle: MeshHandle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<NsTask<()>>,
    ns: Netns,
}

impl Node {
    async fn start(gateway: &GatewayHandle, index: u8) -> Self {
        let ns = Netns::create_unique().unwrap();
        gateway.add_route(EthAddress(app_id(index)), IpAddr::V4(ns.ns_ip()));
        let config = MeshConfig {
            interface: "attestmesh0".to_owned(),
            mesh_ip: mesh_ip(index),
            prefix_len: 16,
            wireguard_secret: wireguard_secret(index),
            listen: SocketAddr::from(([0, 0, 0, 0], TRANSPORT_PORT)),
            tls: TlsIdentity::from_seed(&[100 + index; 32]).unwrap(),
            connect_via: SocketAddr::new(IpAddr::V4(ns.host_ip()), gateway.local_addr().port()),
            gateway_domain: gateway.domain().to_owned(),
            transport_port: TRANSPORT_PORT,
        };
        let (handle_tx, handle_rx) = oneshot::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        // The mesh's tasks live on this runtime, inside the namespace, until `stop` fires or
        // is dropped; the handle works from the test's runtime.
        let thread = ns.run(move || async move {
            match Mesh::start(config).await {
                Ok(handle) => {
                    let _ = handle_tx.send(Ok(handle));
                    let _ = stopped.await;
                }
                Err(err) => {
                    let _ = handle_tx.send(Err(err));
                }
            }
        });
        let handle = timeout(STEP, handle_rx)
            .await
            .expect("the mesh starts in time")
            .expect("the node's thread runs")
            .unwrap_or_else(|err| panic!("node {index}: {err}"));
        let peer = PeerConfig {
            member_id: u64::from(index),
            app_id: app_id(index),
            wireguard_public: wireguard_public(index),
            mesh_ip: mesh_ip(index),
            tls_fingerprint: handle.tls_fingerprint(),
        };
        Self {
            index,
            peer,
            handle,
            stop: Some(stop),
            thread: Some(thread),
            ns,
        }
    }

    fn stats_for(&self, other: &Node) -> Option<PeerStats> {
        self.handle
            .stats()
            .into_iter()
            .find(|s| s.member_id == other.peer.member_id)
    }

    fn tunnel_up(&self, other: &Node) -> bool {
        self.stats_for(other).is_some_and(|s| s.tunnel_up())
    }

    fn connects_to(&self, other: &Node) -> u64 {
        self.stats_for(other).map_or(0, |s| s.transport_connects)
    }

    fn app_addr(&self) -> SocketAddr {
        SocketAddr::from((mesh_ip(self.index), APP_PORT))
    }

    /// Stop the mesh, check that it removed its interface, end the thread, delete the
    /// namespace.
    async fn stop(self) {
        let Node {
            handle,
            stop,
            thread,
            ns,
            ..
        } = self;
        timeout(STEP, handle.shutdown())
            .await
            .expect("the mesh stops in time");
        let link = ns
            .exec("ip")
            .args(["link", "show", "attestmesh0"])
            .output()
            .unwrap();
        assert!(
            !link.status.success(),
            "attestmesh0 must be gone after shutdown: {}",
            String::from_utf8_lossy(&link.stdout)
        );
        drop(stop);
        if let Some(thread) = thread {
            timeout(STEP, thread.join())
                .await
                .expect("the node's thread ends")
                .unwrap();
        }
        let name = ns.name().to_owned();
        drop(ns);
        let named = |line: &str| line.split_whitespace().next() == Some(name.as_str());
        let list = std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&list.stdout).lines().any(named),
            "namespace {name} must be deleted"
        );
    }
}

/// Wait until `ready` holds, failing after [`STEP`] with `what`.
async fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + STEP;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_tunnel(a: &Node, b: &Node) {
    wait_until(
        &format!("the tunnel {}<->{} is up on both ends", a.index, b.index),
        || a.tunnel_up(b) && b.tunnel_up(a),
    )
    .await;
}

/// An echo server on the node's mesh IP; stops when dropped.
struct Echo {
    _stop: oneshot::Sender<()>,
    _task: NsTask<()>,
}

async fn echo_server(node: &Node) -> Echo {
    let addr = node.app_addr();
    let (ready_tx, ready) = oneshot::channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = node.ns.run(move || async move {
        let listener = TcpListener::bind(addr).await.unwrap();
        let _ = ready_tx.send(());
        let serve = async {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        };
        tokio::select! {
            () = serve => {}
            _ = stopped => {}
        }
    });
    timeout(STEP, ready).await.unwrap().unwrap();
    Echo {
        _stop: stop,
        _task: task,
    }
}

/// Connect from inside `from`'s namespace, send `len` bytes, read the echo back.
async fn echo(from: &Node, to: SocketAddr, len: usize) -> Result<(), std::io::Error> {
    from.ns
        .run(move || async move {
            let mut stream = timeout(CONNECT, TcpStream::connect(to))
                .await
                .map_err(|_| std::io::Error::new(ErrorKind::TimedOut, "connect timed out"))??;
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let (mut read, mut write) = stream.split();
            let send = async {
                write.write_all(&payload).await?;
                write.shutdown().await
            };
            let mut got = Vec::with_capacity(len);
            let receive = read.read_to_end(&mut got);
            timeout(STEP, async { tokio::try_join!(send, receive) })
                .await
                .map_err(|_| std::io::Error::new(ErrorKind::TimedOut, "echo timed out"))??;
            assert!(got == payload, "the echo differs from what was sent");
            Ok(())
        })
        .join()
        .await
        .unwrap()
}

async fn set_peers(node: &Node, peers: &[&Node]) {
    node.handle
        .set_peers(peers.iter().map(|p| p.peer.clone()).collect())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_namespaced_nodes_handshake_through_the_gateway_and_carry_tcp_both_ways() {
    require_root();
    let gateway = gateway().await;
    let one = Node::start(&gateway, 1).await;
    let two = Node::start(&gateway, 2).await;
    set_peers(&one, &[&two]).await;
    set_peers(&two, &[&one]).await;
    wait_tunnel(&one, &two).await;

    let at_one = one.stats_for(&two).unwrap();
    let at_two = two.stats_for(&one).unwrap();
    assert!(at_one.dials && !at_two.dials, "the lower mesh IP dials");
    assert_eq!(
        (at_one.transport_connects, at_two.transport_connects),
        (1, 1)
    );
    assert!(at_one.last_handshake_age.unwrap() < STEP);

    let echo_one = echo_server(&one).await;
    let echo_two = echo_server(&two).await;
    // Both directions of app connections, with more data than fits in one window.
    echo(&one, two.app_addr(), 256 * 1024).await.unwrap();
    echo(&two, one.app_addr(), 256 * 1024).await.unwrap();

    let at_one = one.stats_for(&two).unwrap();
    let at_two = two.stats_for(&one).unwrap();
    for stats in [&at_one, &at_two] {
        assert!(stats.tx_bytes > 512 * 1024, "{stats:?}");
        assert!(stats.rx_bytes > 512 * 1024, "{stats:?}");
    }
    drop((echo_one, echo_two));
    one.stop().await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_tls_pin_keeps_that_pair_down_and_leaves_the_other_pairs_up() {
    require_root();
    let gateway = gateway().await;
    let one = Node::start(&gateway, 1).await;
    let two = Node::start(&gateway, 2).await;
    let three = Node::start(&gateway, 3).await;
    // Node 1 dials node 2 (lower mesh IP) but pins a certificate node 2 does not have.
    let mut two_wrong_pin = two.peer.clone();
    two_wrong_pin.tls_fingerprint[0] ^= 0xff;
    one.handle
        .set_peers(vec![two_wrong_pin, three.peer.clone()])
        .await;
    set_peers(&two, &[&one, &three]).await;
    set_peers(&three, &[&one, &two]).await;

    wait_tunnel(&one, &three).await;
    wait_tunnel(&two, &three).await;
    let echo_three = echo_server(&three).await;
    let echo_two = echo_server(&two).await;
    echo(&one, three.app_addr(), 64 * 1024).await.unwrap();
    echo(&two, three.app_addr(), 64 * 1024).await.unwrap();

    // Several dials later (200 ms backoff doubling), the pair 1-2 never had a transport.
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        let at_one = one.stats_for(&two).unwrap();
        let at_two = two.stats_for(&one).unwrap();
        assert!(
            at_one.transport_connects == 0 && !at_one.handshake_completed,
            "{at_one:?}"
        );
        assert!(
            at_two.transport_connects == 0 && !at_two.handshake_completed,
            "{at_two:?}"
        );
        sleep(Duration::from_millis(100)).await;
    }
    let refused = echo(&one, two.app_addr(), 1024).await;
    assert!(refused.is_err(), "no app traffic without a transport");
    // The pairs with node 3 stayed up throughout.
    assert!(one.tunnel_up(&three) && three.tunnel_up(&two));

    // The right pin, applied without a restart, brings the pair up: the pin was the cause.
    set_peers(&one, &[&two, &three]).await;
    wait_tunnel(&one, &two).await;
    echo(&one, two.app_addr(), 64 * 1024).await.unwrap();

    drop((echo_two, echo_three));
    one.stop().await;
    two.stop().await;
    three.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_peer_stops_carrying_traffic_at_once_and_can_be_added_back() {
    require_root();
    let gateway = gateway().await;
    let one = Node::start(&gateway, 1).await;
    let two = Node::start(&gateway, 2).await;
    set_peers(&one, &[&two]).await;
    set_peers(&two, &[&one]).await;
    wait_tunnel(&one, &two).await;
    let echo_one = echo_server(&one).await;
    let echo_two = echo_server(&two).await;
    echo(&one, two.app_addr(), 16 * 1024).await.unwrap();

    two.handle.set_peers(vec![]).await;
    assert!(two.handle.stats().is_empty());
    // Right after the call: node 2 has no route into the tunnel, and says so at once
    // (ICMP host unreachable from the dataplane) rather than letting the connect hang.
    let err = echo(&two, one.app_addr(), 1024).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HostUnreachable, "{err}");
    // Node 1 still has node 2 configured, but nothing it sends arrives any more.
    let err = echo(&one, two.app_addr(), 1024).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    wait_until("node 1 sees the transport to node 2 gone", || {
        !one.stats_for(&two).unwrap().transport_connected
    })
    .await;

    // Added back without a restart: node 1's redial is accepted again.
    set_peers(&two, &[&one]).await;
    wait_tunnel(&one, &two).await;
    echo(&one, two.app_addr(), 16 * 1024).await.unwrap();
    echo(&two, one.app_addr(), 16 * 1024).await.unwrap();

    drop((echo_one, echo_two));
    one.stop().await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_resumes_after_the_gateway_drops_every_connection() {
    require_root();
    let gateway = gateway().await;
    let one = Node::start(&gateway, 1).await;
    let two = Node::start(&gateway, 2).await;
    set_peers(&one, &[&two]).await;
    set_peers(&two, &[&one]).await;
    wait_tunnel(&one, &two).await;
    let echo_two = echo_server(&two).await;

    // One app connection that lives across the outage: an echo before, one after.
    let to = two.app_addr();
    let (first_done_tx, first_done) = oneshot::channel();
    let (go_on, go) = oneshot::channel::<()>();
    let session = one.ns.run(move || async move {
        let mut stream = timeout(CONNECT, TcpStream::connect(to))
            .await
            .unwrap()
            .unwrap();
        let mut buf = [0u8; 4096];
        stream.write_all(&[1u8; 4096]).await.unwrap();
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, [1u8; 4096]);
        first_done_tx.send(()).unwrap();
        go.await.unwrap();
        // TCP retransmits what the outage lost, once the tunnel is back.
        timeout(STEP, async {
            stream.write_all(&[2u8; 4096]).await.unwrap();
            stream.read_exact(&mut buf).await.unwrap();
        })
        .await
        .expect("the same app connection carries data after the outage");
        assert_eq!(buf, [2u8; 4096]);
    });
    timeout(STEP, first_done).await.unwrap().unwrap();

    let dropped = gateway.drop_all_connections();
    assert!(dropped >= 1, "the transport went through the gateway");
    wait_until("both ends reconnected through the gateway", || {
        one.connects_to(&two) >= 2 && two.connects_to(&one) >= 2
    })
    .await;
    wait_tunnel(&one, &two).await;

    go_on.send(()).unwrap();
    timeout(STEP, session.join()).await.unwrap().unwrap();
    echo(&one, two.app_addr(), 64 * 1024).await.unwrap();

    drop(echo_two);
    one.stop().await;
    two.stop().await;
}

/// TLS to `node`'s transport listener straight from the root namespace (the gateway would
/// splice the same bytes), pinning its real certificate.
async fn transport_to(node: &Node) -> TlsStream<TcpStream> {
    let listener = SocketAddr::new(IpAddr::V4(node.ns.ns_ip()), TRANSPORT_PORT);
    let tcp = timeout(CONNECT, TcpStream::connect(listener))
        .await
        .unwrap()
        .unwrap();
    let tls = transport_client_config(node.peer.tls_fingerprint).unwrap();
    let name = ServerName::try_from("anything.devnet.attestmesh.local").unwrap();
    timeout(STEP, TlsConnector::from(tls).connect(name, tcp))
        .await
        .unwrap()
        .unwrap()
}

async fn write_frame<S: AsyncWrite + Unpin>(stream: &mut S, datagram: &[u8]) {
    let len = u16::try_from(datagram.len()).unwrap().to_be_bytes();
    stream.write_all(&len).await.unwrap();
    stream.write_all(datagram).await.unwrap();
    stream.flush().await.unwrap();
}

async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    let mut len = [0u8; 2];
    timeout(STEP, stream.read_exact(&mut len))
        .await
        .unwrap()
        .unwrap();
    let mut datagram = vec![0u8; usize::from(u16::from_be_bytes(len))];
    timeout(STEP, stream.read_exact(&mut datagram))
        .await
        .unwrap()
        .unwrap();
    datagram
}

/// Wait for the node to close the connection; with `silently`, it must send nothing first.
async fn expect_closed<S: AsyncRead + Unpin>(stream: &mut S, what: &str, silently: bool) {
    let mut buf = [0u8; 2048];
    loop {
        match timeout(STEP, stream.read(&mut buf)).await {
            Err(_) => panic!("{what}: the node kept the connection open"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => assert!(!silently, "{what}: the node answered {n} bytes"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_replayed_handshakes_close_only_their_own_connection() {
    require_root();
    let gateway = gateway().await;
    let one = Node::start(&gateway, 1).await;
    let two = Node::start(&gateway, 2).await;
    set_peers(&one, &[&two]).await;
    set_peers(&two, &[&one]).await;
    wait_tunnel(&one, &two).await;
    let echo_two = echo_server(&two).await;

    // Not TLS at all.
    let listener = SocketAddr::new(IpAddr::V4(two.ns.ns_ip()), TRANSPORT_PORT);
    let mut raw = TcpStream::connect(listener).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    expect_closed(&mut raw, "plain HTTP", false).await;

    // TLS, then frames that are no WireGuard handshake from a configured peer.
    let mut tls = transport_to(&two).await;
    tls.write_all(&[0, 0]).await.unwrap();
    tls.flush().await.unwrap();
    expect_closed(&mut tls, "a zero-length frame", true).await;
    let mut tls = transport_to(&two).await;
    let mut fake_init = vec![0x5au8; 148];
    fake_init[..4].copy_from_slice(&1u32.to_le_bytes());
    write_frame(&mut tls, &fake_init).await;
    expect_closed(&mut tls, "a forged handshake initiation", true).await;

    // A genuine initiation with node 1's key is adopted (it is node 1, as far as keys go) and
    // answered; a malformed frame after it closes that connection.
    let mut impostor = Tunn::new(
        boringtun::x25519::StaticSecret::from(wireguard_secret(1)),
        boringtun::x25519::PublicKey::from(wireguard_public(2)),
        None,
        None,
        4242,
        None,
    );
    let mut buf = vec![0u8; 2048];
    let TunnResult::WriteToNetwork(init) = impostor.format_handshake_initiation(&mut buf, true)
    else {
        panic!("boringtun makes an initiation");
    };
    let init = init.to_vec();
    let mut tls = transport_to(&two).await;
    write_frame(&mut tls, &init).await;
    let response = read_frame(&mut tls).await;
    assert_eq!(response.first(), Some(&2), "a handshake response");
    write_frame(&mut tls, &[0xff; 3]).await;
    expect_closed(
        &mut tls,
        "a malformed frame on an adopted connection",
        false,
    )
    .await;

    // The same initiation replayed on a new connection is refused (its timestamp is old).
    let mut tls = transport_to(&two).await;
    write_frame(&mut tls, &init).await;
    expect_closed(&mut tls, "a replayed handshake initiation", true).await;

    // The real node 1 lost its connection to the impostor's, redials, and the mesh is whole.
    wait_tunnel(&one, &two).await;
    echo(&one, two.app_addr(), 64 * 1024).await.unwrap();

    drop(echo_two);
    one.stop().await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_its_fingerprint_and_its_peer_reconnects_unchanged() {
    require_root();
    let gateway = gateway().await;
    let one = Node::start(&gateway, 1).await;
    let two = Node::start(&gateway, 2).await;
    set_peers(&one, &[&two]).await;
    set_peers(&two, &[&one]).await;
    wait_tunnel(&one, &two).await;
    let fingerprint = two.handle.tls_fingerprint();

    // Node 2 goes away entirely and comes back (a new namespace and address, the same seeds):
    // node 1's configuration is not touched.
    two.stop().await;
    let two = Node::start(&gateway, 2).await;
    assert_eq!(two.handle.tls_fingerprint(), fingerprint);
    set_peers(&two, &[&one]).await;
    wait_tunnel(&one, &two).await;
    let echo_two = echo_server(&two).await;
    echo(&one, two.app_addr(), 64 * 1024).await.unwrap();

    drop(echo_two);
    one.stop().await;
    two.stop().await;
}

/// Stalled TLS handshakes for one node, arriving through the gateway as an attacker's would
/// (the gateway route is public, and every connection reaches the node from the gateway's
/// address): each connection sends a complete ClientHello for the node's gateway name, so the
/// gateway passes it through and the node's TLS handshake starts, then nothing more; it is held
/// open until the flood stops. Paced at `rate` a second, at most `max` in all. Dropping the
/// flood closes every connection.
struct Flood {
    sent: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Flood {
    fn start(gateway: &GatewayHandle, target: &Node, rate: u32, max: usize) -> Self {
        // The gateway listens on every interface; the flood stays on loopback.
        let via = SocketAddr::from((Ipv4Addr::LOCALHOST, gateway.local_addr().port()));
        let sni = gateway_sni(&app_id(target.index), TRANSPORT_PORT, gateway.domain());
        let tls = transport_client_config(target.peer.tls_fingerprint).unwrap();
        let mut client = rustls::ClientConnection::new(tls, ServerName::try_from(sni).unwrap())
            .expect("a TLS client for the ClientHello");
        let mut hello = Vec::new();
        client.write_tls(&mut hello).unwrap();
        let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (sent_by_task, failed_by_task) = (Arc::clone(&sent), Arc::clone(&failed));
        let task = tokio::spawn(async move {
            let mut held = Vec::with_capacity(max);
            let mut pace = tokio::time::interval(Duration::from_secs(1) / rate);
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while held.len() + failed_by_task.load(Ordering::Relaxed) < max {
                pace.tick().await;
                let opened = async {
                    let mut tcp = timeout(CONNECT, TcpStream::connect(via)).await??;
                    tcp.write_all(&hello).await?;
                    Ok::<_, std::io::Error>(tcp)
                };
                match timeout(CONNECT, opened).await {
                    Ok(Ok(tcp)) => {
                        held.push(tcp);
                        sent_by_task.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed_by_task.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            // Keep the last ones stalled until the test stops the flood.
            std::future::pending::<()>().await;
        });
        Self { sent, failed, task }
    }

    /// Stalled handshakes opened so far.
    fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }

    /// Connections to the gateway that could not be opened (they would make the flood weaker
    /// than it claims).
    fn failed(&self) -> usize {
        self.failed.load(Ordering::Relaxed)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        // Ending the task drops every held connection.
        self.task.abort();
    }
}

/// Issue 16.3 regression: the listener used to hold at most 64 unidentified connections for up
/// to 10 s and refuse new ones while full, so a few stalled TLS handshakes a second through
/// the public gateway route kept every peer out. Now the oldest unidentified connection makes
/// room for a new one: with hundreds of stalled handshakes arriving through the gateway (100 a
/// second, every one held open), node 1 still connects to node 2, completes the WireGuard
/// handshake and carries app traffic within seconds, while the flood goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_joins_and_carries_traffic_while_hundreds_of_stalled_handshakes_arrive() {
    /// Stalled handshakes a second: fifteen times what filled the old listener for good.
    const RATE: u32 = 100;
    /// Upper bound of the flood (20 s at that rate); the test stops it long before.
    const MAX: usize = 2_000;
    /// Sent before the peers are configured: the listener is full of them by then.
    const BEFORE_JOIN: usize = 300;

    require_root();
    let gateway = gateway().await;
    let one = Node::start(&gateway, 1).await;
    let two = Node::start(&gateway, 2).await;
    let echo_one = echo_server(&one).await;
    let echo_two = echo_server(&two).await;
    // Node 1 dials node 2 (lower mesh IP): node 2's listener is the one flooded.
    let flood = Flood::start(&gateway, &two, RATE, MAX);
    wait_until(&format!("{BEFORE_JOIN} stalled handshakes sent"), || {
        flood.sent() >= BEFORE_JOIN
    })
    .await;

    set_peers(&one, &[&two]).await;
    set_peers(&two, &[&one]).await;
    // No time limit of its own: what must hold is that the peer joins while the flood still
    // arrives, so the wait ends with the flood (the old listener, once full, never let it in).
    while !(one.tunnel_up(&two) && two.tunnel_up(&one)) {
        assert!(
            !flood.task.is_finished(),
            "node 1 did not get through to node 2 before the flood of {} stalled handshakes ended ({} failed to open); node 2's listener: {:?}; node 1's view: {:?}",
            flood.sent(),
            flood.failed(),
            two.handle.accept_stats(),
            one.stats_for(&two),
        );
        sleep(Duration::from_millis(50)).await;
    }
    let sent_at_join = flood.sent();
    echo(&one, two.app_addr(), 64 * 1024).await.unwrap();
    echo(&two, one.app_addr(), 64 * 1024).await.unwrap();
    // A hundred more stalled handshakes later, the same connection still carries traffic: an
    // identified connection is no longer the listener's to evict.
    wait_until("a hundred more stalled handshakes sent", || {
        flood.sent() >= sent_at_join + 100
    })
    .await;
    assert!(one.tunnel_up(&two) && two.tunnel_up(&one));
    assert_eq!((one.connects_to(&two), two.connects_to(&one)), (1, 1));
    echo(&one, two.app_addr(), 64 * 1024).await.unwrap();
    let sent = flood.sent();
    assert!(
        sent < MAX && !flood.task.is_finished(),
        "the flood was still arriving when the peer joined and carried traffic ({sent} sent)"
    );
    assert_eq!(
        flood.failed(),
        0,
        "every stalled handshake reached the gateway"
    );
    let stats = two.handle.accept_stats();
    eprintln!(
        "joined with {sent_at_join} stalled handshakes sent ({sent} by the end); node 2's listener: {stats:?}"
    );
    // At least what arrived before the join beyond the listener's 64 places was evicted.
    assert!(
        stats.evicted >= (BEFORE_JOIN - 64) as u64,
        "the flood filled node 2's listener, which made room by eviction: {stats:?}"
    );
    assert!(stats.identified >= 1, "{stats:?}");

    drop(flood);
    drop((echo_one, echo_two));
    one.stop().await;
    two.stop().await;
}
