//! The `attestmesh-webhook` binary: flags and environment, JSON logs a deploy routine can
//! scrape, start-up refusal, and SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use alloy::primitives::Address;
use attestmesh_webhook::cli::{Cli, LogFormat};
use clap::Parser;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

use crate::{CHAIN_ID, ClusterChain, POLICY, SECRET};

const BIN: &str = env!("CARGO_BIN_EXE_attestmesh-webhook");
const CLUSTER: &str = "0x5FbDB2315678afecb367f032d93F642f64180aa3";

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    let mut argv = vec!["attestmesh-webhook"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv)
}

#[test]
fn flags_build_the_config_with_defaults() {
    let cli = parse(&[
        "--policy",
        &format!("pol-a={CLUSTER}"),
        "--policy",
        &format!("pol-b={CLUSTER}"),
        "--rpc-url",
        "http://127.0.0.1:8545",
        "--chain-id",
        "8453",
        "--secret",
        SECRET,
    ])
    .unwrap();
    let config = cli.config().unwrap();
    let ids: Vec<_> = config
        .policies
        .iter()
        .map(|p| p.policy_id.as_str())
        .collect();
    assert_eq!(ids, ["pol-a", "pol-b"]);
    assert_eq!(
        config.policies[0].cluster,
        CLUSTER.parse::<Address>().unwrap()
    );
    assert_eq!(config.chain_id, 8453);
    assert_eq!(config.listen.to_string(), "127.0.0.1:8787");
    assert_eq!(config.rate_limit_per_minute, 30);
    assert_eq!(config.message_rate_limit_per_minute, 128);
    assert_eq!(config.pending_window.as_secs(), 120);
    assert_eq!(config.caps, attestmesh_webhook::GasCaps::default());
    assert_eq!(
        config.caps.max_fee_per_gas,
        alloy::primitives::U256::from(1_000_000_000u64)
    );
    assert_eq!(config.max_body_bytes, 64 * 1024);
    assert_eq!(cli.log_format, LogFormat::Human);
}

#[test]
fn caps_and_message_limits_come_from_flags() {
    use alloy::primitives::U256;
    let cli = parse(&[
        "--policy",
        &format!("pol-a={CLUSTER}"),
        "--rpc-url",
        "http://127.0.0.1:8545",
        "--chain-id",
        "8453",
        "--secret",
        SECRET,
        "--cap-max-fee-per-gas",
        "2000000000",
        "--cap-pre-verification-gas",
        "500000",
        "--cap-verification-gas-limit",
        "0x0f4240",
        "--cap-call-gas-limit",
        "3000000",
        "--cap-max-cost-wei",
        "1000000000000000",
        "--message-rate-limit",
        "64",
        "--pending-window-secs",
        "60",
    ])
    .unwrap();
    let config = cli.config().unwrap();
    assert_eq!(config.caps.max_fee_per_gas, U256::from(2_000_000_000u64));
    assert_eq!(config.caps.pre_verification_gas, U256::from(500_000));
    assert_eq!(config.caps.verification_gas_limit, U256::from(1_000_000));
    assert_eq!(config.caps.call_gas_limit, U256::from(3_000_000));
    assert_eq!(config.caps.max_cost, U256::from(1_000_000_000_000_000u64));
    assert_eq!(config.message_rate_limit_per_minute, 64);
    assert_eq!(config.pending_window.as_secs(), 60);
    assert!(
        parse(&[
            "--policy",
            &format!("pol-a={CLUSTER}"),
            "--rpc-url",
            "http://127.0.0.1:8545",
            "--chain-id",
            "8453",
            "--secret",
            SECRET,
            "--message-rate-limit",
            "0",
        ])
        .is_err()
    );
}

#[test]
fn secret_comes_from_a_flag_or_a_file_never_both() {
    let base = [
        "--policy",
        "p=0x5FbDB2315678afecb367f032d93F642f64180aa3",
        "--rpc-url",
        "http://x:1",
        "--chain-id",
        "1",
    ];
    // Neither: clap says what is missing.
    assert_eq!(
        parse(&base).unwrap_err().kind(),
        clap::error::ErrorKind::MissingRequiredArgument
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    let path = path.to_str().unwrap();
    let mut args = base.to_vec();
    args.extend(["--secret-file", path]);
    assert_eq!(
        parse(&args).unwrap().config().unwrap().secret.expose(),
        SECRET
    );

    args.extend(["--secret", SECRET]);
    assert_eq!(
        parse(&args).unwrap_err().kind(),
        clap::error::ErrorKind::ArgumentConflict
    );

    // A short secret is refused with advice.
    let mut args = base.to_vec();
    args.extend(["--secret", "hunter2"]);
    let err = parse(&args).unwrap().config().unwrap_err();
    assert!(err.to_string().contains("at least 16"), "{err}");

    // A malformed policy is a parse error naming the value.
    let err = parse(&[
        "--policy",
        "pol-without-cluster",
        "--rpc-url",
        "http://x:1",
        "--chain-id",
        "1",
        "--secret",
        SECRET,
    ])
    .unwrap_err();
    assert!(err.to_string().contains("pol-without-cluster"), "{err}");
}

/// Reads JSON log lines from the child's stderr until one has `message`; returns it.
async fn wait_for_log(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
    message: &str,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no {message:?} log line within 60 s"))
            .unwrap()
            .unwrap_or_else(|| panic!("stderr closed before {message:?}"));
        // Field note 9: captured logs must be free of escape codes.
        assert!(
            !line.contains('\u{1b}'),
            "escape code in a captured log line: {line:?}"
        );
        let entry: Value = serde_json::from_str(&line)
            .unwrap_or_else(|err| panic!("not a JSON log line ({err}): {line}"));
        if entry["fields"]["message"] == json!(message) {
            return entry;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_serves_from_env_config_logs_json_and_exits_on_sigterm() {
    let chain = ClusterChain::start().await;
    let mut child = Command::new(BIN)
        .env_clear()
        .env(
            "ATTESTMESH_WEBHOOK_POLICIES",
            format!("{POLICY}={}", chain.cluster),
        )
        .env("ATTESTMESH_WEBHOOK_RPC_URL", chain.chain.rpc_url().as_str())
        .env("ATTESTMESH_WEBHOOK_CHAIN_ID", CHAIN_ID.to_string())
        .env("ATTESTMESH_WEBHOOK_SECRET", SECRET)
        .env("ATTESTMESH_WEBHOOK_LISTEN", "127.0.0.1:0")
        .env("ATTESTMESH_WEBHOOK_LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();

    // The address is scraped from the log, as a deploy routine would.
    let listening = wait_for_log(&mut lines, "paymaster webhook listening").await;
    assert_eq!(
        listening["target"],
        json!("attestmesh::webhook"),
        "{listening}"
    );
    let addr = listening["fields"]["local_addr"]
        .as_str()
        .unwrap()
        .to_owned();

    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    let (status, body) = crate::into_json(health).await;
    assert_eq!(status, 200);
    assert_eq!(body["chain_id"], json!(CHAIN_ID));

    // A wrong secret is logged at warn with the peer, and the presented value never appears.
    let presented = "presented-wrong-secret-value";
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/"))
        .bearer_auth(presented)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let rejected = wait_for_log(&mut lines, "unauthenticated webhook request rejected").await;
    assert_eq!(rejected["level"], json!("WARN"), "{rejected}");
    assert!(
        rejected["fields"]["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{rejected}"
    );
    assert!(!rejected.to_string().contains(presented), "{rejected}");
    assert!(!rejected.to_string().contains(SECRET), "{rejected}");

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_refuses_to_start_without_cluster_code_and_says_why() {
    let chain = ClusterChain::start().await;
    let nowhere = Address::repeat_byte(0x99);
    let mut child = Command::new(BIN)
        .env_clear()
        .args(["--policy", &format!("{POLICY}={nowhere}")])
        .args(["--rpc-url", chain.chain.rpc_url().as_str()])
        .args(["--chain-id", &CHAIN_ID.to_string()])
        .args(["--listen", "127.0.0.1:0"])
        .env("ATTESTMESH_WEBHOOK_SECRET", SECRET)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        !status.success(),
        "started although the cluster has no code:\n{stderr}"
    );
    assert!(stderr.contains("refused to start"), "{stderr}");
    assert!(
        stderr.contains("no contract") && stderr.contains(&nowhere.to_string()),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "escape codes on a non-terminal stderr: {stderr:?}"
    );
}
