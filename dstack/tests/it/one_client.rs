//! Field note 1: the indexer once carried its own copy of the guest-agent client and met dstack
//! 0.5's removal of `/DeriveKey` a second time, months after the sidecar did. One client is the
//! rule: nothing outside this crate names a guest-agent endpoint or builds one of its requests.

use std::path::{Path, PathBuf};

/// What only a guest-agent client writes: its endpoints, the removed ones included, and the
/// request types of the wire format.
const GUEST_AGENT_MARKERS: [&str; 8] = [
    "\"/GetKey\"",
    "\"/GetQuote\"",
    "\"/Info\"",
    "\"/GetTlsKey\"",
    "DeriveKey",
    "/prpc/Tappd",
    "GetKeyRequest",
    "GetQuoteRequest",
];

/// Where they may appear, and why: the client itself, its tests, and the devnet's simulator,
/// which is the server side of the same wire format (and whose tests speak it raw on purpose).
const ALLOWED: [&str; 4] = [
    "dstack/",
    "devnet/src/dstack_simulator.rs",
    "devnet/src/dstack_simulator/",
    "devnet/tests/it/dstack_simulator.rs",
];

/// Directories that hold no project source.
const SKIPPED_DIRS: [&str; 7] = [
    "target",
    "node_modules",
    ".git",
    "lib",
    "out",
    "cache",
    "broadcast",
];

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the dstack crate sits in the repository root")
        .to_path_buf()
}

fn rust_sources(dir: &Path, found: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !SKIPPED_DIRS.contains(&name.as_str()) {
                rust_sources(&path, found);
            }
        } else if name.ends_with(".rs") {
            found.push(path);
        }
    }
}

/// Every `(file:line, marker)` outside the allowed places.
fn guest_agent_requests_outside_the_client(root: &Path) -> Vec<String> {
    let mut sources = Vec::new();
    rust_sources(root, &mut sources);
    assert!(
        sources.len() > 50,
        "found only {} Rust files under {}: the walk is broken",
        sources.len(),
        root.display()
    );
    let mut offences = Vec::new();
    for source in sources {
        let relative = source
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if ALLOWED.iter().any(|allowed| relative.starts_with(allowed)) {
            continue;
        }
        let text = std::fs::read_to_string(&source).unwrap();
        for (number, line) in text.lines().enumerate() {
            for marker in GUEST_AGENT_MARKERS {
                if line.contains(marker) {
                    offences.push(format!("{relative}:{}: {marker}", number + 1));
                }
            }
        }
    }
    offences
}

#[test]
fn nothing_outside_the_dstack_crate_speaks_to_the_guest_agent() {
    let offences = guest_agent_requests_outside_the_client(&repository_root());
    assert!(
        offences.is_empty(),
        "guest-agent requests built outside dstack/ (use attestmesh_dstack::DstackClient, the \
         one client, so an API change is met once):\n{}",
        offences.join("\n")
    );
}

/// The check itself can fail: a second client in a scratch tree is found.
#[test]
fn a_second_client_is_found() {
    let tree = tempfile::tempdir().unwrap();
    for i in 0..60 {
        let dir = tree.path().join(format!("crate{}/src", i % 3));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("m{i}.rs")), "fn f() {}\n").unwrap();
    }
    std::fs::write(
        tree.path().join("crate1/src/keys.rs"),
        "let url = format!(\"http://localhost{}\", \"/GetKey\");\n",
    )
    .unwrap();
    let offences = guest_agent_requests_outside_the_client(tree.path());
    assert_eq!(offences, ["crate1/src/keys.rs:1: \"/GetKey\""]);
}
