//! The dstack guest-agent simulator: the vector, the wire format, errors, keys, lifecycle.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use attestmesh_devnet::dstack_simulator::keys::{app_key_from_root, kms_root_from_seed};
use attestmesh_devnet::dstack_simulator::{
    DstackSimulator, KeySource, SimulatedQuote, SimulatorConfig, SimulatorError,
};
use attestmesh_dstack::chain::derive_path_key;
use attestmesh_dstack::{ChainSignature, EthAddress, PublicKey, SecretKeyBytes, SignatureChain};

use crate::{VECTOR_JSON, raw_request};

fn vector() -> serde_json::Value {
    serde_json::from_str(VECTOR_JSON).unwrap()
}

fn text<'a>(json: &'a serde_json::Value, pointer: &str) -> &'a str {
    json.pointer(pointer).unwrap().as_str().unwrap()
}

fn fixture_config(v: &serde_json::Value) -> SimulatorConfig {
    SimulatorConfig::new(
        EthAddress::from_hex(text(v, "/fixture/app_id")).unwrap(),
        KeySource::Fixture {
            app_key: SecretKeyBytes::new(
                hex::decode(text(v, "/fixture/k256_key"))
                    .unwrap()
                    .try_into()
                    .unwrap(),
            ),
            kms_signature: ChainSignature::from_hex(text(v, "/fixture/k256_signature")).unwrap(),
        },
    )
}

fn seeded_config(seed: &str, app_id: [u8; 20]) -> SimulatorConfig {
    SimulatorConfig::new(EthAddress(app_id), KeySource::DevnetSeed(seed.to_owned()))
}

#[tokio::test]
async fn simulator_with_fixture_app_key_reproduces_the_vector() {
    let v = vector();
    let dir = tempfile::tempdir().unwrap();
    let simulator =
        DstackSimulator::spawn(fixture_config(&v), &dir.path().join("dstack.sock")).unwrap();
    let path = text(&v, "/request/path");
    let purpose = text(&v, "/request/purpose");

    let response = simulator.client().get_key(path, purpose).await.unwrap();
    assert_eq!(
        hex::encode(response.key.as_bytes()),
        text(&v, "/response/key")
    );
    // chain[1] is the fixture's KMS signature verbatim; chain[0] is freshly signed (any valid
    // nonce verifies), so it is checked by recovery rather than byte equality.
    assert_eq!(
        response.signature_chain.kms.to_hex(),
        text(&v, "/response/signature_chain/1")
    );

    let app_id = EthAddress::from_hex(text(&v, "/fixture/app_id")).unwrap();
    let recovered = response.recover_chain(app_id.as_bytes(), purpose).unwrap();
    assert_eq!(
        recovered.app.address().to_string(),
        text(&v, "/expect/app_address")
    );
    assert_eq!(
        recovered.kms_root.address().to_string(),
        text(&v, "/expect/kms_root_address")
    );
    assert_eq!(
        recovered.derived.address().to_string(),
        text(&v, "/expect/derived_address")
    );
    let trusted = PublicKey::from_sec1_hex(text(&v, "/expect/kms_root_pubkey_compressed")).unwrap();
    recovered.ensure_kms_root(&trusted).unwrap();
    assert_eq!(simulator.kms_root(), trusted);
}

#[tokio::test]
async fn wire_format_matches_dstack() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("dstack.sock");
    let _simulator = DstackSimulator::spawn(seeded_config("wire", [0x22; 20]), &socket).unwrap();
    let is_plain_hex = |value: &serde_json::Value, bytes: usize| {
        let text = value.as_str().unwrap();
        text.len() == bytes * 2
            && text
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    };

    let (status, body) =
        raw_request(&socket, "POST", "/GetKey", r#"{"path":"/x","purpose":"y"}"#).await;
    assert_eq!(status, 200);
    let object = body.as_object().unwrap();
    assert_eq!(object.len(), 2, "{body}");
    assert!(is_plain_hex(&body["key"], 32), "{body}");
    let chain = body["signature_chain"].as_array().unwrap();
    assert_eq!(chain.len(), 2);
    for signature in chain {
        assert!(is_plain_hex(signature, 65), "{signature}");
        let v = hex::decode(signature.as_str().unwrap()).unwrap()[64];
        assert!(v <= 1, "dstack signatures carry v in {{0,1}}, got {v}");
    }

    let (status, body) = raw_request(&socket, "POST", "/Info", "{}").await;
    assert_eq!(status, 200);
    assert!(is_plain_hex(&body["app_id"], 20), "{body}");
    assert_eq!(body["app_id"], hex::encode([0x22; 20]));
    assert!(is_plain_hex(&body["compose_hash"], 32), "{body}");
    assert!(is_plain_hex(&body["device_id"], 32), "{body}");
    assert!(is_plain_hex(&body["instance_id"], 20), "{body}");
    assert!(body["app_name"].is_string(), "{body}");

    let (status, body) =
        raw_request(&socket, "POST", "/GetQuote", r#"{"report_data":"0102"}"#).await;
    assert_eq!(status, 200);
    let quote = hex::decode(body["quote"].as_str().unwrap()).unwrap();
    let parsed = SimulatedQuote::parse(&quote).unwrap();
    assert_eq!(parsed.report_data[..2], [1, 2]);
    // The event log is a JSON document inside a string, as dstack sends it.
    let events: serde_json::Value =
        serde_json::from_str(body["event_log"].as_str().unwrap()).unwrap();
    assert_eq!(events[0]["event"], "app-id");
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("dstack.sock");
    let _simulator = DstackSimulator::spawn(seeded_config("errors", [0x33; 20]), &socket).unwrap();
    let too_long = format!(r#"{{"report_data":"{}"}}"#, "00".repeat(65));

    let cases = [
        ("/GetKey", "not json", 400, "invalid JSON"),
        ("/GetKey", r#"{"purpose":"p"}"#, 400, "invalid JSON"),
        (
            "/GetKey",
            r#"{"path":"","purpose":"p"}"#,
            400,
            "path must not be empty",
        ),
        ("/GetQuote", r#"{"report_data":"xyz"}"#, 400, "not hex"),
        ("/GetQuote", too_long.as_str(), 400, "at most 64"),
        (
            "/DeriveKey",
            r#"{"path":"/x"}"#,
            404,
            "removed in dstack 0.5",
        ),
        ("/Nope", "{}", 404, "unknown guest-agent endpoint"),
    ];
    for (path, body, expected_status, expected_message) in cases {
        let (status, reply) = raw_request(&socket, "POST", path, body).await;
        assert_eq!(status, expected_status, "{path} {body}: {reply}");
        let message = reply["error"].as_str().unwrap();
        assert!(
            message.contains(expected_message),
            "{path} {body}: {message}"
        );
    }

    let (status, reply) = raw_request(&socket, "GET", "/GetKey", "").await;
    assert_eq!(status, 405);
    assert!(reply["error"].as_str().unwrap().contains("POST"), "{reply}");
}

#[tokio::test]
async fn keys_are_deterministic_across_restarts_and_distinct_per_app() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("dstack.sock");

    let get = |config: SimulatorConfig| {
        let socket = socket.clone();
        async move {
            let simulator = DstackSimulator::spawn(config, &socket).unwrap();
            let response = simulator
                .client()
                .get_key("/wg", "wireguard")
                .await
                .unwrap();
            let roots = (simulator.app_pubkey(), simulator.kms_root());
            simulator.shutdown().await.unwrap();
            (response.key, roots)
        }
    };

    let (first_key, first_roots) = get(seeded_config("restart", [0x44; 20])).await;
    let (again_key, again_roots) = get(seeded_config("restart", [0x44; 20])).await;
    assert_eq!(first_key, again_key);
    assert_eq!(first_roots, again_roots);

    let (other_app_key, other_app_roots) = get(seeded_config("restart", [0x45; 20])).await;
    assert_ne!(first_key, other_app_key);
    assert_ne!(
        first_roots.0, other_app_roots.0,
        "app keys differ per app id"
    );
    assert_eq!(first_roots.1, other_app_roots.1, "one KMS root per seed");

    let (other_seed_key, other_seed_roots) = get(seeded_config("other", [0x44; 20])).await;
    assert_ne!(first_key, other_seed_key);
    assert_ne!(first_roots.1, other_seed_roots.1);
}

#[tokio::test]
async fn explicit_kms_root_key_issues_the_same_chain_as_its_seed() {
    let root = kms_root_from_seed("explicit").unwrap();
    let root_bytes: [u8; 32] = root.to_bytes().into();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("dstack.sock");
    let config = SimulatorConfig::new(
        EthAddress([0x55; 20]),
        KeySource::KmsRootKey(SecretKeyBytes::new(root_bytes)),
    );
    let simulator = DstackSimulator::spawn(config, &socket).unwrap();
    let response = simulator.client().get_key("/k", "p").await.unwrap();

    // The key is HKDF("RATLS", app key, path) with the documented app-key derivation.
    let app_key = app_key_from_root(&root, &[0x55; 20]).unwrap();
    let expected = derive_path_key(&app_key.to_bytes().into(), "/k").unwrap();
    assert_eq!(response.key, expected);
    let recovered = response.recover_chain(&[0x55; 20], "p").unwrap();
    assert_eq!(recovered.kms_root, PublicKey::from(*root.verifying_key()));
}

/// Pins the documented devnet derivations: a change here changes every devnet identity and
/// every allowlisted KMS root, so it must be deliberate. The secret bytes were computed
/// independently (Python hmac/hashlib HKDF-SHA256) from the parameters in `keys.rs`.
#[test]
fn devnet_key_derivation_is_pinned() {
    let root = kms_root_from_seed("attestmesh-devnet").unwrap();
    let app = app_key_from_root(&root, &[0x11; 20]).unwrap();
    assert_eq!(hex::encode(root.to_bytes()), PINNED_ROOT_SECRET);
    assert_eq!(hex::encode(app.to_bytes()), PINNED_APP_SECRET);
    assert_eq!(
        PublicKey::from(*root.verifying_key()).address().to_string(),
        PINNED_ROOT_ADDRESS
    );
    assert_eq!(
        PublicKey::from(*app.verifying_key()).address().to_string(),
        PINNED_APP_ADDRESS
    );
}

const PINNED_ROOT_SECRET: &str = "623c896759e6970762a51fc1b6b72c6a822fc4d04e38161c96d64db04ee65774";
const PINNED_APP_SECRET: &str = "94278436741748db5af4a5a3c5395b1290b1e89470d7f83c543a2f148b915330";
const PINNED_ROOT_ADDRESS: &str = "0x693633ad4dc801355f326a2f63da25748ba2d6db";
const PINNED_APP_ADDRESS: &str = "0x033a3b1b8290b58535df91296823f1d2bd5df138";

#[tokio::test]
async fn stale_socket_is_replaced_and_permissions_are_0660() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nested").join("dstack.sock");
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    // A socket file left behind by a crashed process.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());

    let simulator = DstackSimulator::spawn(seeded_config("stale", [0x66; 20]), &socket).unwrap();
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    simulator.client().info().await.unwrap();

    simulator.shutdown().await.unwrap();
    assert!(!socket.exists(), "shutdown removes the socket file");
}

#[tokio::test]
async fn refuses_to_delete_a_file_that_is_not_a_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("important.txt");
    std::fs::write(&path, b"keep me").unwrap();
    let err = DstackSimulator::spawn(seeded_config("file", [0x77; 20]), &path).unwrap_err();
    assert!(matches!(err, SimulatorError::NotASocket { .. }), "{err:?}");
    assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
}

#[tokio::test]
async fn refuses_to_take_over_a_live_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("dstack.sock");
    let first = DstackSimulator::spawn(seeded_config("live", [0x7a; 20]), &socket).unwrap();
    let err = DstackSimulator::spawn(seeded_config("live", [0x7b; 20]), &socket).unwrap_err();
    assert!(matches!(err, SimulatorError::InUse { .. }), "{err:?}");
    // The first simulator still serves its own identity.
    let info = first.client().info().await.unwrap();
    assert_eq!(info.app_id, EthAddress([0x7a; 20]));
}

#[tokio::test]
async fn dropping_the_handle_stops_serving_and_removes_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("dstack.sock");
    let simulator = DstackSimulator::spawn(seeded_config("drop", [0x88; 20]), &socket).unwrap();
    let client = simulator.client();
    client.info().await.unwrap();
    drop(simulator);
    assert!(!socket.exists());
    assert!(client.info().await.is_err());
}

#[test]
fn spawning_outside_a_runtime_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let err = DstackSimulator::spawn(
        seeded_config("no-runtime", [0x99; 20]),
        &dir.path().join("dstack.sock"),
    )
    .unwrap_err();
    assert!(matches!(err, SimulatorError::NoRuntime), "{err:?}");
}

#[test]
fn a_real_tdx_quote_is_not_taken_for_a_simulated_one() {
    // TDX v4 quotes start with version 4 (LE) and attestation key type 2.
    let mut tdx_like = vec![0x04, 0x00, 0x02, 0x00];
    tdx_like.resize(1000, 0);
    assert_eq!(SimulatedQuote::parse(&tdx_like), None);
}

#[test]
fn chain_signature_round_trips_through_the_wire_list() {
    let v = vector();
    let list = vec![
        text(&v, "/response/signature_chain/0").to_owned(),
        text(&v, "/response/signature_chain/1").to_owned(),
    ];
    assert_eq!(
        SignatureChain::from_hex_list(&list).unwrap().to_hex_list(),
        list
    );
}
