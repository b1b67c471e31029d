//! The dstack gateway emulator over real sockets on 127.0.0.1: SNI routing, passthrough vs
//! termination, ALPN per route (field note 10), refusals, the CA file, and the fault hooks.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use attestmesh_devnet::gateway::{
    DEFAULT_DOMAIN, GatewayConfig, GatewayEmulator, GatewayError, GatewayHandle, GatewayName,
    NameError, PathDelay, RouteMode, crypto_provider, load_routes_file, parse_route,
    validate_domain,
};
use attestmesh_dstack::EthAddress;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

pub(crate) const APP_ID: &str = "5bb4ff9a3837357f19dc176407a5709c62eb6c56";
pub(crate) const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

pub(crate) fn app_id() -> EthAddress {
    EthAddress::from_hex(APP_ID).unwrap()
}

/// A gateway on a free loopback port routing [`APP_ID`] to 127.0.0.1.
fn gateway() -> GatewayHandle {
    GatewayEmulator::spawn(GatewayConfig {
        routes: vec![(app_id(), LOCALHOST)],
        ..GatewayConfig::default()
    })
    .unwrap()
}

/// Fails the test instead of hanging it when the gateway neither answers nor closes.
pub(crate) async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 10 s"))
}

async fn echo<S: AsyncRead + AsyncWrite>(stream: S) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let _ = tokio::io::copy(&mut reader, &mut writer).await;
    let _ = writer.shutdown().await;
}

/// A plain TCP echo server on 127.0.0.1; returns its port.
pub(crate) async fn tcp_echo_backend() -> u16 {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(echo(stream));
        }
    });
    port
}

/// A TLS echo server with its own self-signed certificate for its passthrough name through
/// `gateway` (as an AttestMesh node's transport has). Returns that name and the certificate.
async fn tls_echo_backend(gateway: &GatewayHandle) -> (String, CertificateDer<'static>) {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let name = gateway.hostname(app_id(), port, RouteMode::Passthrough);
    let certified = rcgen::generate_simple_self_signed(vec![name.clone()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config = ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(stream).await {
                    echo(tls).await;
                }
            });
        }
    });
    (name, cert)
}

pub(crate) fn client_config(
    trusted: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let mut config = ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

pub(crate) fn dns(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_owned()).unwrap()
}

/// TCP to the gateway, then a TLS handshake for `name` (an IP name sends no SNI).
pub(crate) async fn connect(
    gateway: SocketAddr,
    name: ServerName<'static>,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(gateway).await?;
    TlsConnector::from(config).connect(name, tcp).await
}

/// Send `message`, read the echo, return how long it took.
pub(crate) async fn round_trip<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    message: &[u8],
) -> Duration {
    let start = Instant::now();
    within("echo round trip", async {
        stream.write_all(message).await.unwrap();
        stream.flush().await.unwrap();
        let mut back = vec![0u8; message.len()];
        stream.read_exact(&mut back).await.unwrap();
        assert_eq!(back, message, "the echo came back altered");
    })
    .await;
    start.elapsed()
}

/// The connection was closed on us: EOF or an error, but no data.
async fn assert_closed<S: AsyncRead + Unpin>(stream: &mut S, what: &str) {
    let mut buf = [0u8; 64];
    match within(what, stream.read(&mut buf)).await {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("{what}: expected the connection closed, read {n} bytes"),
    }
}

async fn wait_for_live(gateway: &GatewayHandle, expected: usize) {
    within("live connection count", async {
        while gateway.live_connections() != expected {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[test]
fn gateway_names_parse_and_format() {
    let name = GatewayName::parse(
        &format!("{APP_ID}-51820s.devnet.attestmesh.local"),
        DEFAULT_DOMAIN,
    )
    .unwrap();
    assert_eq!(
        name,
        GatewayName {
            app_id: app_id(),
            port: 51820,
            mode: RouteMode::Passthrough
        }
    );
    // SNI is a DNS name: case does not matter.
    let upper = format!(
        "{}-443G.DEVNET.attestmesh.local",
        APP_ID.to_ascii_uppercase()
    );
    let name = GatewayName::parse(&upper, DEFAULT_DOMAIN).unwrap();
    assert_eq!((name.port, name.mode), (443, RouteMode::TerminateH2));

    for mode in [
        RouteMode::Passthrough,
        RouteMode::Terminate,
        RouteMode::TerminateH2,
    ] {
        let name = GatewayName {
            app_id: app_id(),
            port: 8080,
            mode,
        };
        let host = name.hostname(DEFAULT_DOMAIN);
        assert_eq!(GatewayName::parse(&host, DEFAULT_DOMAIN).unwrap(), name);
    }
    assert_eq!(
        GatewayName {
            app_id: app_id(),
            port: 8080,
            mode: RouteMode::Terminate
        }
        .hostname(DEFAULT_DOMAIN),
        format!("{APP_ID}-8080.devnet.attestmesh.local")
    );

    for wrong_domain in [
        format!("{APP_ID}-443.example.com"),
        "devnet.attestmesh.local".to_owned(),
        format!("{APP_ID}-443evil-devnet.attestmesh.local"),
    ] {
        assert!(
            matches!(
                GatewayName::parse(&wrong_domain, DEFAULT_DOMAIN),
                Err(NameError::WrongDomain { .. })
            ),
            "{wrong_domain}"
        );
    }
    for bad_label in [
        format!("0x{APP_ID}-443.devnet.attestmesh.local"),
        format!("{}-443.devnet.attestmesh.local", &APP_ID[1..]),
        format!("{}-443.devnet.attestmesh.local", APP_ID.replace('b', "x")),
        format!("{APP_ID}.devnet.attestmesh.local"),
        format!("{APP_ID}-.devnet.attestmesh.local"),
        format!("{APP_ID}-s.devnet.attestmesh.local"),
        format!("{APP_ID}-0.devnet.attestmesh.local"),
        format!("{APP_ID}-65536.devnet.attestmesh.local"),
        format!("{APP_ID}-443x.devnet.attestmesh.local"),
        format!("{APP_ID}-443sg.devnet.attestmesh.local"),
        format!("www.{APP_ID}-443.devnet.attestmesh.local"),
    ] {
        assert!(
            matches!(
                GatewayName::parse(&bad_label, DEFAULT_DOMAIN),
                Err(NameError::BadLabel { .. })
            ),
            "{bad_label}"
        );
    }
}

#[tokio::test]
async fn gateway_domains_are_validated() {
    assert_eq!(validate_domain("Devnet.Example").unwrap(), "devnet.example");
    for bad in ["", "localhost", "a..b", "-a.b", "a-.b", "a_b.c", "a.b."] {
        assert!(
            matches!(
                validate_domain(bad),
                Err(GatewayError::InvalidDomain { .. })
            ),
            "{bad:?}"
        );
    }
    let err = GatewayEmulator::spawn(GatewayConfig {
        domain: "localhost".to_owned(),
        ..GatewayConfig::default()
    })
    .unwrap_err();
    assert!(matches!(err, GatewayError::InvalidDomain { .. }), "{err}");
}

#[test]
fn routes_parse_from_flags_and_file() {
    let (app, host) = parse_route(&format!("0x{}=10.0.0.2", APP_ID.to_ascii_uppercase())).unwrap();
    assert_eq!((app, host), (app_id(), "10.0.0.2".parse().unwrap()));
    assert_eq!(
        parse_route(&format!("{APP_ID}=::1")).unwrap().1,
        "::1".parse::<IpAddr>().unwrap()
    );
    for bad in [
        APP_ID.to_owned(),
        format!("{APP_ID}=host.example"),
        "1234=10.0.0.2".to_owned(),
    ] {
        assert!(
            matches!(parse_route(&bad), Err(GatewayError::InvalidRoute { .. })),
            "{bad}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.json");
    std::fs::write(&path, format!(r#"{{"{APP_ID}": "10.0.0.7"}}"#)).unwrap();
    assert_eq!(
        load_routes_file(&path).unwrap(),
        vec![(app_id(), "10.0.0.7".parse().unwrap())]
    );
    std::fs::write(&path, r#"["not", "an", "object"]"#).unwrap();
    assert!(matches!(
        load_routes_file(&path),
        Err(GatewayError::RoutesFileFormat { .. })
    ));
    assert!(matches!(
        load_routes_file(&dir.path().join("missing.json")),
        Err(GatewayError::RoutesFileRead { .. })
    ));
}

/// Suffix `s`: the client's TLS session is with the backend itself, through the gateway.
#[tokio::test]
async fn passthrough_route_splices_the_clients_tls_to_the_backend() {
    let gw = gateway();
    let (name, backend_cert) = tls_echo_backend(&gw).await;

    // Trusting only the backend's own certificate, the handshake completes: the gateway did
    // not terminate, the ClientHello reached the backend untouched.
    let config = client_config(&backend_cert, &[b"h2"]);
    let mut tls = within(
        "passthrough handshake",
        connect(gw.local_addr(), dns(&name), config),
    )
    .await
    .unwrap();
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        None,
        "the backend negotiates no ALPN"
    );
    round_trip(&mut tls, b"wireguard datagram over tls").await;
    // A larger transfer crosses many relay chunks in order.
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    round_trip(&mut tls, &big).await;

    // Trusting only the gateway CA fails: nobody on this route presents the gateway's cert.
    let gateway_only = client_config(gw.ca_der(), &[]);
    let result = within(
        "handshake with the wrong trust",
        connect(gw.local_addr(), dns(&name), gateway_only),
    )
    .await;
    assert!(result.is_err(), "the gateway must not terminate an s route");
}

/// No suffix: the gateway terminates TLS and negotiates no ALPN, even when h2 is offered.
#[tokio::test]
async fn terminate_route_negotiates_no_alpn_and_forwards_plaintext() {
    let gw = gateway();
    let port = tcp_echo_backend().await;
    let name = gw.hostname(app_id(), port, RouteMode::Terminate);

    let config = client_config(gw.ca_der(), &[b"h2", b"http/1.1"]);
    let mut tls = within(
        "terminate handshake",
        connect(gw.local_addr(), dns(&name), config),
    )
    .await
    .unwrap();
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        None,
        "no-suffix routes negotiate no ALPN (field note 10)"
    );
    // The backend is plain TCP: the bytes it echoes were decrypted by the gateway.
    round_trip(&mut tls, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
}

/// Suffix `g`: the gateway terminates TLS and negotiates h2, and only h2.
#[tokio::test]
async fn g_route_negotiates_h2_only() {
    let gw = gateway();
    let port = tcp_echo_backend().await;
    let name = gw.hostname(app_id(), port, RouteMode::TerminateH2);

    let config = client_config(gw.ca_der(), &[b"h2", b"http/1.1"]);
    let mut tls = within("g handshake", connect(gw.local_addr(), dns(&name), config))
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    round_trip(&mut tls, b"h2 frames").await;

    let http1_only = client_config(gw.ca_der(), &[b"http/1.1"]);
    let result = within(
        "g handshake offering http/1.1",
        connect(gw.local_addr(), dns(&name), http1_only),
    )
    .await;
    assert!(
        result.is_err(),
        "a g route must refuse a client that does not offer h2"
    );
}

/// Field note 10 with a real tonic client: through a no-suffix route, a gRPC health check
/// fails with "HTTP/2 was not negotiated" unless the client sets `assume_http2(true)`; through
/// a `g` route it works either way.
#[tokio::test]
async fn tonic_needs_assume_http2_behind_a_terminate_route() {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Server, server::TcpIncoming};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let gw = gateway();
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let grpc_port = listener.local_addr().unwrap().port();
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        Server::builder()
            .add_service(health)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );

    let gateway_addr = gw.local_addr();
    let channel = |mode: RouteMode, assume_http2: bool| {
        let host = gw.hostname(app_id(), grpc_port, mode);
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(gw.ca_pem()))
            .domain_name(host.clone())
            .assume_http2(assume_http2);
        let endpoint = Endpoint::from_shared(format!("https://{host}:{}", gateway_addr.port()))
            .unwrap()
            .tls_config(tls)
            .unwrap();
        // The name does not resolve: dial the gateway, and let tonic do TLS with that name.
        let connector = tower::service_fn(move |_: tonic::codegen::http::Uri| async move {
            TcpStream::connect(gateway_addr)
                .await
                .map(hyper_util::rt::TokioIo::new)
        });
        async move { endpoint.connect_with_connector(connector).await }
    };

    let err = within(
        "tonic without assume_http2",
        channel(RouteMode::Terminate, false),
    )
    .await
    .unwrap_err();
    let chain = attestmesh_service::report::error_chain(&err);
    assert!(
        chain.contains("HTTP/2 was not negotiated"),
        "expected tonic's ALPN refusal, got: {chain}"
    );

    for (mode, assume_http2) in [
        (RouteMode::Terminate, true),
        (RouteMode::TerminateH2, false),
    ] {
        let channel = within("tonic connect", channel(mode, assume_http2))
            .await
            .unwrap_or_else(|err| {
                panic!(
                    "{mode}, assume_http2={assume_http2}: {}",
                    attestmesh_service::report::error_chain(&err)
                )
            });
        let response = within(
            "health check",
            HealthClient::new(channel).check(HealthCheckRequest {
                service: String::new(),
            }),
        )
        .await
        .unwrap();
        assert_eq!(
            response.into_inner().status(),
            ServingStatus::Serving,
            "{mode}"
        );
    }
}

#[tokio::test]
async fn unroutable_connections_are_refused_and_the_gateway_keeps_serving() {
    let gw = gateway();
    let port = tcp_echo_backend().await;
    let trusted = client_config(gw.ca_der(), &[]);
    let other_app = "00".repeat(20);

    let refused = [
        // Unknown app id.
        dns(&format!("{other_app}-{port}.{DEFAULT_DOMAIN}")),
        // Malformed name under the domain, and a name under another domain.
        dns(&format!("not-a-route.{DEFAULT_DOMAIN}")),
        dns(&format!("{APP_ID}-{port}.example.com")),
        // An IP address as server name: rustls sends no SNI at all.
        ServerName::IpAddress(Ipv4Addr::LOCALHOST.into()),
    ];
    for name in refused {
        let result = within(
            "refused handshake",
            connect(gw.local_addr(), name.clone(), Arc::clone(&trusted)),
        )
        .await;
        assert!(result.is_err(), "{name:?} must be refused");
    }

    // Not TLS at all: closed without an answer.
    let mut plain = TcpStream::connect(gw.local_addr()).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert_closed(&mut plain, "plain HTTP to the gateway").await;

    // A backend that is not listening: closed.
    let closed_port = {
        let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
        listener.local_addr().unwrap().port()
    };
    let name = gw.hostname(app_id(), closed_port, RouteMode::Terminate);
    let result = within(
        "dead backend",
        connect(gw.local_addr(), dns(&name), Arc::clone(&trusted)),
    )
    .await;
    assert!(result.is_err(), "a dead backend must close the connection");

    let name = gw.hostname(app_id(), port, RouteMode::Terminate);
    let mut tls = within(
        "handshake after refusals",
        connect(gw.local_addr(), dns(&name), trusted),
    )
    .await
    .unwrap();
    round_trip(&mut tls, b"still serving").await;
}

#[tokio::test]
async fn routes_added_and_removed_at_runtime_apply_to_new_connections() {
    let gw = GatewayEmulator::spawn(GatewayConfig::default()).unwrap();
    let port = tcp_echo_backend().await;
    let name = gw.hostname(app_id(), port, RouteMode::Terminate);
    let trusted = client_config(gw.ca_der(), &[]);

    let before = within(
        "before add_route",
        connect(gw.local_addr(), dns(&name), Arc::clone(&trusted)),
    )
    .await;
    assert!(before.is_err(), "no route yet");

    assert_eq!(gw.add_route(app_id(), LOCALHOST), None);
    assert_eq!(gw.routes().get(&app_id()), Some(LOCALHOST));
    let mut live = within(
        "after add_route",
        connect(gw.local_addr(), dns(&name), Arc::clone(&trusted)),
    )
    .await
    .unwrap();
    round_trip(&mut live, b"routed").await;

    assert_eq!(gw.remove_route(&app_id()), Some(LOCALHOST));
    assert!(gw.routes().snapshot().is_empty());
    let after = within(
        "after remove_route",
        connect(gw.local_addr(), dns(&name), trusted),
    )
    .await;
    assert!(after.is_err(), "route removed");
    // A connection made before the removal stays up.
    round_trip(&mut live, b"still routed").await;
}

/// Another process (an agent) trusts the gateway through the PEM file it writes at start.
#[tokio::test]
async fn ca_pem_file_lets_clients_trust_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devnet").join("gateway-ca.pem");
    let gw = GatewayEmulator::spawn(GatewayConfig {
        routes: vec![(app_id(), LOCALHOST)],
        ca_cert_path: Some(path.clone()),
        ..GatewayConfig::default()
    })
    .unwrap();
    assert_eq!(gw.ca_cert_path(), Some(path.as_path()));
    let pem = std::fs::read_to_string(&path).unwrap();
    assert_eq!(pem, gw.ca_pem());
    let ca = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    assert_eq!(&ca, gw.ca_der());

    let port = tcp_echo_backend().await;
    let name = gw.hostname(app_id(), port, RouteMode::TerminateH2);
    let mut tls = within(
        "handshake trusting the file",
        connect(gw.local_addr(), dns(&name), client_config(&ca, &[b"h2"])),
    )
    .await
    .unwrap();
    round_trip(&mut tls, b"trusted").await;
}

/// The hook behind "the transport survives the gateway dropping its TCP connections".
#[tokio::test]
async fn drop_all_connections_resets_live_connections_and_new_ones_still_work() {
    let gw = gateway();
    let (pass_name, backend_cert) = tls_echo_backend(&gw).await;
    let port = tcp_echo_backend().await;
    let term_name = gw.hostname(app_id(), port, RouteMode::Terminate);
    let pass_config = client_config(&backend_cert, &[]);
    let term_config = client_config(gw.ca_der(), &[]);

    let mut passthrough = within(
        "passthrough",
        connect(gw.local_addr(), dns(&pass_name), Arc::clone(&pass_config)),
    )
    .await
    .unwrap();
    let mut terminated = within(
        "terminate",
        connect(gw.local_addr(), dns(&term_name), Arc::clone(&term_config)),
    )
    .await
    .unwrap();
    round_trip(&mut passthrough, b"one").await;
    round_trip(&mut terminated, b"two").await;
    assert_eq!(gw.live_connections(), 2);

    assert_eq!(gw.drop_all_connections(), 2);
    assert_closed(&mut passthrough, "dropped passthrough connection").await;
    assert_closed(&mut terminated, "dropped terminated connection").await;
    wait_for_live(&gw, 0).await;

    let mut again = within(
        "reconnect",
        connect(gw.local_addr(), dns(&pass_name), pass_config),
    )
    .await
    .unwrap();
    round_trip(&mut again, b"three").await;
    assert_eq!(gw.live_connections(), 1);
}

/// The added delay is on the path: a correctness check of the hook, not a benchmark.
#[tokio::test]
async fn added_delay_shows_on_an_echo_round_trip() {
    let configured = PathDelay::symmetric(Duration::from_millis(60));
    let gw = GatewayEmulator::spawn(GatewayConfig {
        routes: vec![(app_id(), LOCALHOST)],
        delay: configured,
        ..GatewayConfig::default()
    })
    .unwrap();
    assert_eq!(gw.delay(), configured);
    let (name, backend_cert) = tls_echo_backend(&gw).await;
    let mut tls = within(
        "delayed handshake",
        connect(
            gw.local_addr(),
            dns(&name),
            client_config(&backend_cert, &[]),
        ),
    )
    .await
    .unwrap();

    let elapsed = round_trip(&mut tls, b"ping").await;
    assert!(
        elapsed >= Duration::from_millis(120),
        "round trip took {elapsed:?}"
    );

    // Changed at runtime, on the live connection, per direction.
    let asymmetric = PathDelay {
        to_backend: Duration::from_millis(150),
        to_client: Duration::from_millis(50),
    };
    gw.set_delay(asymmetric);
    assert_eq!(gw.delay(), asymmetric);
    let elapsed = round_trip(&mut tls, b"ping").await;
    assert!(
        elapsed >= Duration::from_millis(200),
        "round trip took {elapsed:?}"
    );

    gw.set_delay(PathDelay::NONE);
    assert_eq!(gw.delay(), PathDelay::NONE);
    round_trip(&mut tls, b"ping").await;
}

#[tokio::test]
async fn listen_address_in_use_is_reported() {
    let gw = gateway();
    let err = GatewayEmulator::spawn(GatewayConfig {
        listen: gw.local_addr(),
        ..GatewayConfig::default()
    })
    .unwrap_err();
    assert!(matches!(err, GatewayError::Listen { .. }), "{err}");
    gw.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_and_drop_stop_listening_and_close_connections() {
    let port = tcp_echo_backend().await;
    for explicit_shutdown in [true, false] {
        let gw = gateway();
        let addr = gw.local_addr();
        let name = gw.hostname(app_id(), port, RouteMode::Terminate);
        let mut tls = within(
            "connect",
            connect(addr, dns(&name), client_config(gw.ca_der(), &[])),
        )
        .await
        .unwrap();
        round_trip(&mut tls, b"before").await;
        if explicit_shutdown {
            gw.shutdown().await.unwrap();
        } else {
            drop(gw);
        }
        assert_closed(&mut tls, "connection of a stopped gateway").await;
        within("listener closed", async {
            while TcpStream::connect(addr).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
}
