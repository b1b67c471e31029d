//! check-indexer: the key from a health endpoint shaped like the indexer's `/healthz` (and from the
//! real indexer's), and from a coloured boot log (field note 9).

use alloy::primitives::{Address, B256};
use axum::routing::get;

use crate::support::operator;

const KEY: &str = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29";

async fn serve(body: serde_json::Value) -> (String, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new().route(
        "/healthz",
        get(move || {
            let body = body.clone();
            async move { axum::Json(body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/healthz", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn check_indexer_reads_the_key_from_health_and_checks_its_identity() {
    let factory = Address::repeat_byte(0xfa);
    let (url, _task) = serve(serde_json::json!({
        "phase": "following",
        "public_key": KEY,
        "chain_id": 8453,
        "factory": factory,
    }))
    .await;
    let report = operator(&[
        "--json",
        "check-indexer",
        "--health-url",
        &url,
        "--expected-key",
        KEY,
    ])
    .await
    .json();
    assert_eq!(
        report["ed25519_public_key"]
            .as_str()
            .unwrap()
            .parse::<B256>()
            .unwrap(),
        KEY.parse::<B256>().unwrap()
    );
    assert_eq!(report["origin"]["kind"], "health");

    operator(&[
        "check-indexer",
        "--health-url",
        &url,
        "--expected-chain-id",
        "31337",
    ])
    .await
    .fails_with(&["follows chain 8453, expected 31337"]);
    operator(&[
        "check-indexer",
        "--health-url",
        &url,
        "--factory",
        &Address::repeat_byte(1).to_string(),
    ])
    .await
    .fails_with(&["follows factory"]);
    operator(&[
        "check-indexer",
        "--health-url",
        &url,
        "--expected-key",
        &"22".repeat(32),
    ])
    .await
    .fails_with(&["the indexer's key is 0x3b6a", "expected 0x2222"]);

    let (other, _other_task) =
        serve(serde_json::json!({"status": "ok", "service": "attestmesh-webhook"})).await;
    operator(&["check-indexer", "--health-url", &other])
        .await
        .fails_with(&[
            "reports service \"attestmesh-webhook\", not \"attestmesh-indexer\"",
            "no public_key",
        ]);
}

#[tokio::test(flavor = "multi_thread")]
async fn check_indexer_scrapes_a_coloured_log_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("indexer.log");
    let old = "11".repeat(32);
    std::fs::write(
        &log,
        format!(
            "\u{1b}[2m2025-06-01T09:00:00Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m identity \u{1b}[3mpublic_key\u{1b}[0m\u{1b}[2m=\u{1b}[0m{old}\n\
             \u{1b}[2m2025-06-01T10:00:00Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \u{1b}[2mattestmesh::indexer\u{1b}[0m\u{1b}[2m:\u{1b}[0m identity \u{1b}[3mpublic_key\u{1b}[0m\u{1b}[2m=\u{1b}[0m{KEY}\n"
        ),
    )
    .unwrap();
    let report = operator(&[
        "--json",
        "check-indexer",
        "--log-file",
        log.to_str().unwrap(),
    ])
    .await
    .json();
    assert_eq!(
        report["ed25519_public_key"]
            .as_str()
            .unwrap()
            .parse::<B256>()
            .unwrap(),
        KEY.parse::<B256>().unwrap(),
        "the last boot's key"
    );
    std::fs::write(&log, "INFO started\n").unwrap();
    operator(&["check-indexer", "--log-file", log.to_str().unwrap()])
        .await
        .fails_with(&["no ed25519_public_key or public_key followed by 64 hex digits"]);
}

/// The real indexer (in-process, its key derived through a dstack simulator): `check-indexer`
/// reads its boot-derived key from its live `/healthz` and checks chain and factory.
#[tokio::test(flavor = "multi_thread")]
async fn check_indexer_against_the_real_indexer() {
    use attestmesh_devnet::dstack_simulator::{DstackSimulator, KeySource, SimulatorConfig};
    use attestmesh_devnet::local_chain::{LocalChain, LocalChainConfig};
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: attestmesh_indexer::config::IndexerArgs,
    }

    let dir = tempfile::tempdir().unwrap();
    let chain = LocalChain::start(LocalChainConfig::default())
        .await
        .unwrap();
    let factory = chain.deployment().cluster_factory;
    let socket = dir.path().join("indexer.dstack.sock");
    let simulator = SimulatorConfig::new(
        attestmesh_dstack::EthAddress([0x1d; 20]),
        KeySource::DevnetSeed("attestmesh-devnet".into()),
    );
    let _dstack = DstackSimulator::spawn(simulator, &socket).unwrap();
    let expected = attestmesh_indexer::derive_key(&attestmesh_dstack::DstackClient::new(
        attestmesh_dstack::Endpoint::Unix(socket.clone()),
    ))
    .await
    .unwrap()
    .verifying_key()
    .to_bytes();

    let config = Cli::parse_from([
        "attestmesh-indexer",
        "--chain.rpc-url",
        chain.rpc_url().as_str(),
        "--factory",
        &factory.to_string(),
        "--grpc.listen",
        "127.0.0.1:0",
        "--health.listen",
        "127.0.0.1:0",
        "--dstack.socket",
        &socket.display().to_string(),
    ])
    .args
    .resolve()
    .unwrap();
    let shutdown = attestmesh_indexer::shutdown::Shutdown::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(attestmesh_indexer::run(
        config,
        shutdown.clone(),
        move |listening| {
            let _ = tx.send(listening.health);
        },
    ));
    let health = rx.await.expect("the indexer's listeners come up");
    let url = format!("http://{health}/healthz");
    let report = operator(&[
        "--json",
        "check-indexer",
        "--health-url",
        &url,
        "--expected-chain-id",
        "31337",
        "--factory",
        &factory.to_string(),
        "--expected-key",
        &alloy::hex::encode(expected),
    ])
    .await
    .json();
    assert_eq!(
        report["ed25519_public_key"]
            .as_str()
            .unwrap()
            .parse::<B256>()
            .unwrap(),
        B256::from(expected)
    );
    shutdown.cancel();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
}
