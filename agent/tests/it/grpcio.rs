//! The app's gRPC client in another language: a real Python `grpcio` (gRPC C-core, the client
//! of Python, C++ and Ruby apps) on the agent socket.
//!
//! Regression test for issue 16 item 5: C-core sends the socket path as `:authority` on a unix
//! socket (`tmp%2F...agent.sock`), h2 refused it and every call failed with `RST_STREAM`
//! `PROTOCOL_ERROR`; reflection listed the indexer service the socket does not serve and left
//! out the health service.

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::Value;

use crate::harness::*;

/// Where `make python-deps` puts the Python with grpcio (overridable for other layouts).
const PYTHON_ENV: &str = "ATTESTMESH_TEST_PYTHON";

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the agent crate sits in the workspace")
        .to_path_buf()
}

/// The Python with grpcio, or a failure that says how to install it.
async fn python() -> PathBuf {
    let python = std::env::var_os(PYTHON_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/pyenv/bin/python3"));
    let check = tokio::process::Command::new(&python)
        .args([
            "-c",
            "import grpc, grpc_tools, grpc_health.v1, grpc_reflection.v1alpha",
        ])
        .output()
        .await;
    match check {
        Ok(output) if output.status.success() => python,
        other => panic!(
            "no Python with grpcio at {} ({PYTHON_ENV} overrides the path): run `make \
             python-deps` (or `make deps`) to create it from \
             agent/tests/grpcio-requirements.txt; {other:?}",
            python.display()
        ),
    }
}

fn ok<'a>(calls: &'a Value, name: &str) -> &'a Value {
    let result = &calls[name];
    assert!(
        result.get("ok").is_some(),
        "grpcio call {name} failed: {result}"
    );
    &result["ok"]
}

/// GetMeshStatus, GetSelf, the health service and reflection answer a grpcio client, with the
/// authority grpcio picks for a unix target and with the raw socket path (grpc-java's), on
/// several requests per connection; reflection lists exactly the three services served.
#[tokio::test(flavor = "multi_thread")]
async fn grpcio_client_on_the_unix_socket_is_served() {
    let python = python().await;
    let dir = tempfile::tempdir().unwrap();
    let mut stack = stack(dir.path()).await;
    stack.add_node("node-1").await.unwrap();
    let a = start_agent("node-1", agent_config(&stack, 0, dir.path(), None)).await;
    wait_status(&a, "registered", |s| {
        matches!(s.phase.as_str(), "waiting-peers" | "wg-configuring")
    })
    .await;
    let id = member_id(&a).await;

    let run = tokio::process::Command::new(&python)
        .arg(workspace().join("agent/tests/grpcio_client.py"))
        .arg(&a.socket)
        .arg(workspace().join("proto"))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(budget(), run)
        .await
        .expect("the grpcio client finishes")
        .expect("the grpcio client starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!(
        "grpcio client:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "grpcio client: {}", output.status);
    let report: Value = serde_json::from_str(&stdout).expect("the client prints JSON");
    let calls = &report["calls"];

    for channel in ["default", "raw_path"] {
        for i in 0..3 {
            let phase = ok(calls, &format!("{channel}.GetMeshStatus.{i}"));
            assert!(
                phase == "waiting-peers" || phase == "wg-configuring",
                "{phase}"
            );
        }
        assert_eq!(ok(calls, &format!("{channel}.GetSelf")), id);
        for service in ["", "attestmesh.agent.v1.Agent"] {
            assert_eq!(
                ok(calls, &format!("{channel}.Health.Check({service})")),
                "SERVING"
            );
        }
        assert_eq!(
            ok(calls, &format!("{channel}.reflection.list")),
            &serde_json::json!([
                "attestmesh.agent.v1.Agent",
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
            ]),
            "reflection lists exactly the services the socket serves"
        );
        assert!(
            ok(
                calls,
                &format!("{channel}.reflection.symbol(attestmesh.agent.v1.Agent)")
            )["files"]
                .as_u64()
                .is_some_and(|n| n >= 1)
        );
        // Not served here, so not described either: NOT_FOUND (as a status, or in the
        // reflection response).
        let indexer = &calls[format!("{channel}.reflection.symbol(attestmesh.indexer.v1.Indexer)")];
        assert!(
            indexer["error"] == "NOT_FOUND" || indexer["ok"]["error_code"] == 5,
            "the indexer service is described: {indexer}"
        );
    }
    a.stop().await;
}
