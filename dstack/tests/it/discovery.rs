//! Socket discovery order and endpoint parsing.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use attestmesh_dstack::{DstackError, Endpoint};

#[test]
fn discovery_prefers_override_then_env_then_first_existing_socket() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("missing.sock");
    let second = dir.path().join("present.sock");
    let third = dir.path().join("also-present.sock");
    std::fs::write(&second, b"").unwrap();
    std::fs::write(&third, b"").unwrap();
    let candidates = [first.as_path(), second.as_path(), third.as_path()];

    let chosen = Endpoint::discover_from(
        Some(Path::new("/explicit.sock")),
        Some(OsStr::new("/env.sock")),
        &candidates,
    )
    .unwrap();
    assert_eq!(chosen, Endpoint::Unix(PathBuf::from("/explicit.sock")));

    let chosen = Endpoint::discover_from(None, Some(OsStr::new("/env.sock")), &candidates).unwrap();
    assert_eq!(chosen, Endpoint::Unix(PathBuf::from("/env.sock")));

    // An empty variable counts as unset.
    let chosen = Endpoint::discover_from(None, Some(OsStr::new("")), &candidates).unwrap();
    assert_eq!(chosen, Endpoint::Unix(second.clone()));

    let chosen = Endpoint::discover_from(None, None, &candidates).unwrap();
    assert_eq!(chosen, Endpoint::Unix(second));
}

#[test]
fn discovery_accepts_an_http_url_in_the_environment() {
    let chosen =
        Endpoint::discover_from(None, Some(OsStr::new("http://127.0.0.1:8090/")), &[]).unwrap();
    assert_eq!(chosen, Endpoint::Tcp("127.0.0.1:8090".to_owned()));
    assert_eq!(chosen.to_string(), "http://127.0.0.1:8090");
}

#[test]
fn discovery_without_any_socket_says_what_was_tried_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("dstack.sock");
    let err = Endpoint::discover_from(None, None, &[missing.as_path()]).unwrap_err();
    assert!(matches!(err, DstackError::NoSocket { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&missing.display().to_string()), "{text}");
    assert!(text.contains("DSTACK_SIMULATOR_ENDPOINT"), "{text}");
    assert!(text.contains("/var/run/dstack.sock"), "{text}");
}

#[test]
fn endpoint_parse_accepts_paths_and_rejects_tls_and_missing_ports() {
    assert_eq!(
        Endpoint::parse("/run/dstack.sock").unwrap(),
        Endpoint::Unix(PathBuf::from("/run/dstack.sock"))
    );
    assert_eq!(
        Endpoint::parse("unix:/run/dstack.sock").unwrap(),
        Endpoint::Unix(PathBuf::from("/run/dstack.sock"))
    );
    for bad in [
        "",
        "https://agent:8090",
        "http://agent",
        "http://agent:x",
        "http://a:1/x",
    ] {
        let err = Endpoint::parse(bad).unwrap_err();
        assert!(
            matches!(err, DstackError::InvalidEndpoint { .. }),
            "{bad}: {err:?}"
        );
    }
}
