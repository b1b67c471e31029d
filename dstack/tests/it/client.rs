//! The client against the devnet's dstack simulator (and a few hand-written fake agents) over
//! real unix sockets.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use attestmesh_devnet::dstack_simulator::{
    DstackSimulator, KeySource, SimulatedQuote, SimulatorConfig, SimulatorHandle,
};
use attestmesh_dstack::{DstackClient, DstackError, Endpoint, EthAddress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

const APP_ID: &str = "0x1111111111111111111111111111111111111111";

fn app_id() -> EthAddress {
    EthAddress::from_hex(APP_ID).unwrap()
}

fn spawn_simulator(dir: &Path) -> SimulatorHandle {
    let config = SimulatorConfig::new(app_id(), KeySource::DevnetSeed("client-tests".to_owned()));
    DstackSimulator::spawn(config, &dir.join("dstack.sock")).unwrap()
}

#[tokio::test]
async fn get_key_round_trip_verifies_to_the_simulator_keys() {
    let dir = tempfile::tempdir().unwrap();
    let simulator = spawn_simulator(dir.path());
    let client = simulator.client();

    let response = client
        .get_key("/attestmesh/owner", "erc4337-owner")
        .await
        .unwrap();
    let recovered = response
        .recover_chain(app_id().as_bytes(), "erc4337-owner")
        .unwrap();
    assert_eq!(recovered.app, simulator.app_pubkey());
    assert_eq!(recovered.kms_root, simulator.kms_root());
    recovered.ensure_kms_root(&simulator.kms_root()).unwrap();
    assert_eq!(recovered.derived, response.key.public_key().unwrap());

    simulator.shutdown().await.unwrap();
}

#[tokio::test]
async fn get_key_depends_on_path_only() {
    let dir = tempfile::tempdir().unwrap();
    let simulator = spawn_simulator(dir.path());
    let client = simulator.client();

    let a = client.get_key("/a", "one").await.unwrap();
    let a_again = client.get_key("/a", "two").await.unwrap();
    let b = client.get_key("/b", "one").await.unwrap();
    assert_eq!(a.key, a_again.key);
    assert_ne!(a.key, b.key);
    // The purpose is only signed: chain[0] differs, chain[1] (KMS over app key) does not.
    assert_ne!(a.signature_chain.app, a_again.signature_chain.app);
    assert_eq!(a.signature_chain.kms, a_again.signature_chain.kms);
}

#[tokio::test]
async fn info_round_trip_reports_the_configured_identity() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = SimulatorConfig::new(app_id(), KeySource::DevnetSeed("info".to_owned()));
    config.instance_id = vec![0xab; 20];
    config.compose_hash = [0x42; 32];
    config.device_id = [0x07; 32];
    config.app_name = "node-7".to_owned();
    let simulator = DstackSimulator::spawn(config, &dir.path().join("agent.sock")).unwrap();

    let info = simulator.client().info().await.unwrap();
    assert_eq!(info.app_id, app_id());
    assert_eq!(info.instance_id, vec![0xab; 20]);
    assert_eq!(info.compose_hash, [0x42; 32]);
    assert_eq!(info.device_id, [0x07; 32]);
    assert_eq!(info.app_name, "node-7");
    let key_provider: serde_json::Value =
        serde_json::from_str(info.key_provider_info.as_deref().unwrap()).unwrap();
    assert_eq!(key_provider["id"], simulator.kms_root().to_string());
}

#[tokio::test]
async fn get_quote_round_trip_embeds_the_report_data() {
    let dir = tempfile::tempdir().unwrap();
    let simulator = spawn_simulator(dir.path());
    let report_data = [0x5a; 40];

    let quote = simulator.client().get_quote(&report_data).await.unwrap();
    let parsed = SimulatedQuote::parse(&quote.quote).expect("a simulated quote");
    assert_eq!(parsed.report_data[..40], report_data);
    assert_eq!(parsed.report_data[40..], [0u8; 24]);
    assert_eq!(&parsed.app_id, app_id().as_bytes());
    assert_eq!(quote.report_data.as_deref(), Some(&parsed.report_data[..]));
    let events: serde_json::Value = serde_json::from_str(&quote.event_log).unwrap();
    assert!(events.as_array().is_some_and(|events| !events.is_empty()));
}

#[tokio::test]
async fn get_quote_refuses_more_than_64_bytes_before_sending() {
    // No agent listens here: the error must come from the client's own check.
    let client = DstackClient::new(Endpoint::Unix(PathBuf::from("/nonexistent/dstack.sock")));
    let err = client.get_quote(&[0u8; 65]).await.unwrap_err();
    assert!(
        matches!(
            err,
            DstackError::InvalidRequest {
                endpoint: "/GetQuote",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("65 bytes"), "{err}");
}

#[tokio::test]
async fn agent_error_reply_is_surfaced_with_endpoint_status_and_message() {
    let dir = tempfile::tempdir().unwrap();
    let simulator = spawn_simulator(dir.path());

    // The simulator answers an empty path with {"error": ...} and HTTP 400.
    let err = simulator.client().get_key("", "p").await.unwrap_err();
    match &err {
        DstackError::Agent {
            endpoint,
            status,
            message,
        } => {
            assert_eq!(*endpoint, "/GetKey");
            assert_eq!(*status, 400);
            assert!(message.contains("path must not be empty"), "{message}");
        }
        other => panic!("expected an agent error, got {other:?}"),
    }
    assert!(err.to_string().contains("HTTP 400"), "{err}");
}

#[tokio::test]
async fn missing_socket_gives_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-agent-here.sock");
    let err = DstackClient::new(Endpoint::Unix(path.clone()))
        .info()
        .await
        .unwrap_err();
    assert!(matches!(err, DstackError::Connect { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("DSTACK_SIMULATOR_ENDPOINT"), "{text}");
}

#[tokio::test]
async fn tcp_endpoint_round_trip() {
    let config = SimulatorConfig::new(app_id(), KeySource::DevnetSeed("tcp".to_owned()));
    let simulator = DstackSimulator::spawn_tcp(config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let Endpoint::Tcp(authority) = simulator.endpoint().clone() else {
        panic!("expected a TCP endpoint");
    };
    // Reached the way DSTACK_SIMULATOR_ENDPOINT=http://host:port would.
    let client = DstackClient::new(Endpoint::parse(&format!("http://{authority}")).unwrap());
    let info = client.info().await.unwrap();
    assert_eq!(info.app_id, app_id());
}

/// A fake agent that answers every connection with `status` and `body`, or never answers.
fn fake_agent(path: &Path, reply: Option<(u16, &'static str)>) {
    let listener = UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Read the request head and its (small) body before answering.
                while !request_complete(&request) {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                match reply {
                    Some((status, body)) => {
                        let response = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = stream.write_all(response.as_bytes()).await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(60)).await,
                }
            });
        }
    });
}

fn request_complete(request: &[u8]) -> bool {
    let Some(head_end) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |value| value.trim().parse::<usize>().unwrap());
    request.len() >= head_end + 4 + length
}

#[tokio::test]
async fn malformed_success_body_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fake.sock");
    fake_agent(&path, Some((200, r#"{"key":"zz","signature_chain":[]}"#)));
    let err = DstackClient::new(Endpoint::Unix(path))
        .get_key("/p", "q")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            DstackError::InvalidResponse {
                endpoint: "/GetKey",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("field key"), "{err}");
}

#[tokio::test]
async fn non_json_error_body_is_passed_on_verbatim() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fake.sock");
    fake_agent(
        &path,
        Some((500, "quote generation failed: tdx unavailable")),
    );
    let err = DstackClient::new(Endpoint::Unix(path))
        .get_quote(b"x")
        .await
        .unwrap_err();
    let DstackError::Agent {
        status, message, ..
    } = &err
    else {
        panic!("expected an agent error, got {err:?}");
    };
    assert_eq!(*status, 500);
    assert_eq!(message, "quote generation failed: tdx unavailable");
}

#[tokio::test]
async fn silent_agent_times_out_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("silent.sock");
    fake_agent(&path, None);
    let err = DstackClient::new(Endpoint::Unix(path))
        .with_timeout(Duration::from_millis(200))
        .info()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            DstackError::Timeout {
                endpoint: "/Info",
                ..
            }
        ),
        "{err:?}"
    );
}

/// The client against a reply it did not make: the vector's `/GetKey` answer, in the real guest
/// agent's format and signed by dstack's public simulator fixture (not by our simulator), served
/// byte for byte. The client must send the request the guest agent reads and verify the answer
/// to the fixture's KMS root.
#[tokio::test]
async fn get_key_reads_a_reply_of_the_real_guest_agent_format() {
    let v = crate::vector();
    let json: serde_json::Value = serde_json::from_str(crate::VECTOR_JSON).unwrap();
    let reply: &'static str = Box::leak(json["response"].to_string().into_boxed_str());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("guest-agent.sock");
    let requests = recording_agent(&path, reply);

    let response = DstackClient::new(Endpoint::Unix(path))
        .get_key(&v.path, &v.purpose)
        .await
        .unwrap();

    let request = requests
        .lock()
        .unwrap()
        .pop()
        .expect("the client sent a request");
    let (head, body) = request.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("POST /GetKey HTTP/1.1\r\n"), "{head}");
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({ "path": v.path, "purpose": v.purpose })
    );
    assert_eq!(response.key.as_bytes(), &v.key);
    let recovered = response.recover_chain(&v.app_id, &v.purpose).unwrap();
    assert_eq!(
        hex::encode(recovered.kms_root.compressed()),
        v.expect("kms_root_pubkey_compressed")
    );
    assert_eq!(
        recovered.derived.address().to_string(),
        v.expect("derived_address")
    );
}

/// A fake agent that answers every request with 200 and `body`, and keeps each request's text.
fn recording_agent(path: &Path, body: &'static str) -> Arc<Mutex<Vec<String>>> {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let listener = UnixListener::bind(path).unwrap();
    let seen = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request_complete(&request) {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            seen.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&request).into_owned());
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        }
    });
    requests
}
