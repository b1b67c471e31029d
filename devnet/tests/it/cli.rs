//! The `attestmesh-devnet` command line: argument parsing, and the real binary end to end.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use attestmesh_devnet::cli::{Cli, Command as DevnetCommand};
use attestmesh_devnet::dstack_simulator::{DstackSimulatorArgs, KeySource};
use attestmesh_dstack::{DstackClient, Endpoint};
use clap::Parser;

const APP_ID: &str = "5bb4ff9a3837357f19dc176407a5709c62eb6c56";

fn parse(args: &[&str]) -> Result<DstackSimulatorArgs, clap::Error> {
    let mut argv = vec!["attestmesh-devnet", "dstack-simulator"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).map(|cli| match cli.command {
        DevnetCommand::DstackSimulator(args) => args,
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

/// Kills the child if the test fails before it exits by itself.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_socket(child: &mut Child, path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the simulator exited early with {status}");
        }
        assert!(
            Instant::now() < deadline,
            "the simulator never created {path:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The real binary serves, answers the client, and exits cleanly on SIGTERM.
#[tokio::test]
async fn binary_serves_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("dstack.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_attestmesh-devnet"))
        .args([
            "dstack-simulator",
            "--dstack.app-id",
            APP_ID,
            "--dstack.socket",
        ])
        .arg(&socket)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    wait_for_socket(&mut child.0, &socket);

    let info = DstackClient::new(Endpoint::Unix(socket.clone()))
        .info()
        .await
        .unwrap();
    assert_eq!(hex::encode(info.app_id.as_bytes()), APP_ID);

    let kill = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.0.wait().unwrap();
    let mut stderr = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "exit {status}: {stderr}");
    assert!(stderr.contains("dstack simulator listening"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "no ANSI codes when not on a terminal: {stderr}"
    );
    assert!(!socket.exists(), "the socket file is removed on exit");
}
