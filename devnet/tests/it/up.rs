//! `attestmesh-devnet up` / `down` as a user runs them.

use std::process::Stdio;
use std::time::Duration;

/// `up` brings everything up and writes endpoints.json whose services answer; SIGTERM stops
/// everything it started (anvil included); `down` after that finds nothing left.
#[tokio::test(flavor = "multi_thread")]
async fn up_writes_endpoints_and_stops_everything_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // Port 0 everywhere: each service binds a port of its own and endpoints.json says which.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_attestmesh-devnet"))
        .arg("up")
        .args(["--nodes", "2", "--chain.block-time", "1"])
        .args(["--chain.port", "0"])
        .args(["--bundler.port", "0"])
        .args(["--gas-manager.port", "0"])
        .args(["--webhook.port", "0"])
        .args(["--gateway.port", "0"])
        .arg("--state-dir")
        .arg(&state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let endpoints_path = state.join("endpoints.json");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while !endpoints_path.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "endpoints.json never appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "devnet up exited early"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let endpoints: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&endpoints_path).unwrap()).unwrap();
    assert_eq!(endpoints["nodes"].as_array().unwrap().len(), 2);
    let chain: url::Url = endpoints["chain"]["rpcUrl"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let chain = (chain.host_str().unwrap().to_string(), chain.port().unwrap());
    assert_ne!(chain.1, 0, "endpoints.json names the port anvil bound");
    let bundler = endpoints["services"]["bundler"].as_str().unwrap();
    let client = reqwest::Client::new();
    let reply: serde_json::Value = client
        .post(bundler)
        .json(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "eth_supportedEntryPoints", "params": []}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        reply["result"][0].as_str().unwrap().to_lowercase(),
        "0x0000000071727de22e5e9d8baf0edac6f37da032"
    );

    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    assert!(
        std::net::TcpStream::connect((chain.0.as_str(), chain.1)).is_err(),
        "anvil is stopped"
    );

    let down = std::process::Command::new(env!("CARGO_BIN_EXE_attestmesh-devnet"))
        .arg("down")
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    assert!(down.status.success());
    assert!(String::from_utf8_lossy(&down.stdout).contains("nothing was left running"));
}
