//! The `attestmesh-devnet` command line: argument parsing, and the real binary end to end.

use std::path::Path;
use std::time::Duration;

use attestmesh_devnet::cli::{Cli, Command as DevnetCommand};
use attestmesh_devnet::dstack_simulator::{DstackSimulatorArgs, KeySource};
use attestmesh_devnet::gateway::{GatewayArgs, PathDelay};
use attestmesh_dstack::{DstackClient, Endpoint};
use clap::Parser;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::ServiceProcess;
use crate::gateway as gw;

const APP_ID: &str = "5bb4ff9a3837357f19dc176407a5709c62eb6c56";

fn parse(args: &[&str]) -> Result<DstackSimulatorArgs, clap::Error> {
    let mut argv = vec!["attestmesh-devnet", "dstack-simulator"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).map(|cli| match cli.command {
        DevnetCommand::DstackSimulator(args) => args,
        other => panic!("parsed as another subcommand: {other:?}"),
    })
}

#[test]
fn defaults_to_the_devnet_seed() {
    let args = parse(&["--dstack.app-id", APP_ID]).unwrap();
    let config = args.config();
    assert!(matches!(config.keys, KeySource::DevnetSeed(ref seed) if seed == "attestmesh-devnet"));
    assert_eq!(hex::encode(config.app_id.as_bytes()), APP_ID);
}

#[test]
fn injected_app_key_needs_its_kms_signature() {
    let key = "11".repeat(32);
    let err = parse(&["--dstack.app-id", APP_ID, "--dstack.app-key", &key]).unwrap_err();
    assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);

    let signature = "22".repeat(64) + "00";
    let args = parse(&[
        "--dstack.app-id",
        APP_ID,
        "--dstack.app-key",
        &key,
        "--dstack.kms-signature",
        &signature,
    ])
    .unwrap();
    assert!(matches!(args.config().keys, KeySource::Fixture { .. }));
}

#[test]
fn root_key_and_seed_conflict() {
    let root = "11".repeat(32);
    let err = parse(&[
        "--dstack.app-id",
        APP_ID,
        "--dstack.kms-root-key",
        &root,
        "--dstack.devnet-seed",
        "x",
    ])
    .unwrap_err();
    assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
}

#[test]
fn bad_hex_is_rejected_at_parse_time() {
    assert!(parse(&["--dstack.app-id", "0x1234"]).is_err());
    assert!(parse(&["--dstack.app-id", APP_ID, "--dstack.compose-hash", "zz"]).is_err());
}

/// The socket path the simulator's "listening" line names, once the socket exists.
async fn wait_for_socket(child: &mut ServiceProcess, path: &Path) {
    let logged = child.logged("dstack simulator listening", "socket").await;
    assert_eq!(
        Path::new(logged.trim_matches('"')),
        path,
        "it serves the socket it was given"
    );
    assert!(
        path.exists(),
        "{path:?} exists once the simulator says it listens"
    );
}

/// The real binary serves, answers the client, and exits cleanly on SIGTERM.
#[tokio::test]
async fn binary_serves_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("dstack.sock");
    let mut child = ServiceProcess::start([
        "dstack-simulator".as_ref(),
        "--dstack.app-id".as_ref(),
        APP_ID.as_ref(),
        "--dstack.socket".as_ref(),
        socket.as_os_str(),
    ]);
    wait_for_socket(&mut child, &socket).await;

    let info = DstackClient::new(Endpoint::Unix(socket.clone()))
        .info()
        .await
        .unwrap();
    assert_eq!(hex::encode(info.app_id.as_bytes()), APP_ID);

    let (status, stderr) = child.terminate();
    assert!(status.success(), "exit {status}: {stderr}");
    assert!(stderr.contains("dstack simulator listening"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "no ANSI codes when not on a terminal: {stderr}"
    );
    assert!(!socket.exists(), "the socket file is removed on exit");
}

fn parse_gateway(args: &[&str]) -> Result<GatewayArgs, clap::Error> {
    let mut argv = vec!["attestmesh-devnet", "gateway"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).map(|cli| match cli.command {
        DevnetCommand::Gateway(args) => args,
        other => panic!("parsed as another subcommand: {other:?}"),
    })
}

#[test]
fn gateway_flags_parse() {
    let other_app = "11".repeat(20);
    let args = parse_gateway(&[
        "--gateway.route",
        &format!("{APP_ID}=10.0.0.2"),
        "--gateway.route",
        &format!("0x{other_app}=fd00::3"),
        "--gateway.delay-ms",
        "200",
        "--gateway.domain",
        "gw.example.test",
    ])
    .unwrap();
    let config = args.config().unwrap();
    assert_eq!(config.routes.len(), 2);
    assert_eq!(hex::encode(config.routes[0].0.as_bytes()), APP_ID);
    assert_eq!(
        config.routes[1].1,
        "fd00::3".parse::<std::net::IpAddr>().unwrap()
    );
    assert_eq!(
        config.delay,
        PathDelay::symmetric(Duration::from_millis(200))
    );
    assert_eq!(config.domain, "gw.example.test");

    let err = parse_gateway(&["--gateway.route", "not-a-route"]).unwrap_err();
    assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    let err = parse_gateway(&["--gateway.delay-ms", "-1"]).unwrap_err();
    assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
}

/// The real binary: writes the CA file, routes from the routes file, re-reads it on SIGHUP,
/// and exits cleanly on SIGTERM.
#[tokio::test]
async fn gateway_binary_reloads_routes_on_sighup_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let routes_file = dir.path().join("routes.json");
    let ca_file = dir.path().join("gateway-ca.pem");
    std::fs::write(&routes_file, "{}").unwrap();
    // Port 0: the gateway binds a port of its own and logs it.
    let mut child = ServiceProcess::start([
        "gateway".as_ref(),
        "--gateway.listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--gateway.routes-file".as_ref(),
        routes_file.as_os_str(),
        "--gateway.ca-cert".as_ref(),
        ca_file.as_os_str(),
    ]);
    let gateway: std::net::SocketAddr = child
        .logged("gateway listening", "listen")
        .await
        .parse()
        .unwrap();
    let ca = CertificateDer::from_pem_file(&ca_file).unwrap();
    let trusted = gw::client_config(&ca, &[]);
    let port = gw::tcp_echo_backend().await;
    let name = gw::dns(&format!(
        "{APP_ID}-{port}.{}",
        attestmesh_devnet::gateway::DEFAULT_DOMAIN
    ));

    let before = gw::within(
        "before reload",
        gw::connect(gateway, name.clone(), trusted.clone()),
    )
    .await;
    assert!(before.is_err(), "the routes file is empty: no route yet");

    std::fs::write(&routes_file, format!(r#"{{"{APP_ID}": "127.0.0.1"}}"#)).unwrap();
    child.signal("-HUP");
    let mut tls = gw::within("connect after SIGHUP", async {
        loop {
            if let Ok(tls) = gw::connect(gateway, name.clone(), trusted.clone()).await {
                return tls;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    gw::round_trip(&mut tls, b"reloaded").await;
    drop(tls);

    let (status, stderr) = child.terminate();
    assert!(status.success(), "exit {status}: {stderr}");
    assert!(stderr.contains("gateway listening"), "{stderr}");
    assert!(stderr.contains("SIGHUP: routes reloaded"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "no ANSI codes when not on a terminal: {stderr}"
    );
}
