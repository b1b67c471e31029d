//! The dstack compose file parses, wires the sidecar as the design says, and sets every setting
//! the sidecar needs under the names the agent really reads (taken from agent/src/config.rs, so
//! a renamed variable fails here rather than on a live CVM).

use std::collections::BTreeSet;
use std::path::Path;

use serde_yaml::Value;

const SIDECAR: &str = "cluster-mesh-agent";

/// Settings the sidecar needs in production (the rest have working defaults).
const REQUIRED: [&str; 8] = [
    "ATTESTMESH_CHAIN_RPC_URL",
    "ATTESTMESH_CHAIN_ID",
    "ATTESTMESH_BUNDLER_URL",
    "ATTESTMESH_GAS_MANAGER_URL",
    "ATTESTMESH_GAS_MANAGER_POLICY_ID",
    "ATTESTMESH_GATEWAY_CONNECT",
    "ATTESTMESH_GATEWAY_DOMAIN",
    "ATTESTMESH_LOG_FORMAT",
];

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every `env = "..."` of the agent's configuration.
fn agent_env_vars() -> BTreeSet<String> {
    let source = std::fs::read_to_string(crate_dir().join("../agent/src/config.rs")).unwrap();
    let mut vars = BTreeSet::new();
    let mut rest = source.as_str();
    while let Some(at) = rest.find("env = \"") {
        rest = &rest[at + "env = \"".len()..];
        let end = rest.find('"').unwrap();
        vars.insert(rest[..end].to_string());
        rest = &rest[end..];
    }
    assert!(
        vars.len() >= 15,
        "agent/src/config.rs changed shape: {vars:?}"
    );
    vars
}

fn compose() -> Value {
    let text = std::fs::read_to_string(crate_dir().join("compose/docker-compose.yaml")).unwrap();
    serde_yaml::from_str(&text).expect("docker-compose.yaml is valid YAML")
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn compose_file_wires_the_sidecar_and_names_every_setting() {
    let compose = compose();
    let services = compose["services"].as_mapping().expect("services");
    let sidecar = &compose["services"][SIDECAR];
    assert!(sidecar.is_mapping(), "a {SIDECAR} service");
    let (app_name, app) = services
        .iter()
        .find(|(name, _)| name.as_str() != Some(SIDECAR))
        .expect("an app service");
    let app_name = app_name.as_str().unwrap();

    // The app starts only once the sidecar is healthy, and the health check is /healthz:9090.
    assert_eq!(
        app["depends_on"][SIDECAR]["condition"], "service_healthy",
        "{app_name}"
    );
    let test = strings(&sidecar["healthcheck"]["test"]).join(" ");
    assert!(test.contains("http://localhost:9090/healthz"), "{test}");

    // The socket volume is shared; the dstack socket is mounted into the sidecar only.
    let sidecar_volumes = strings(&sidecar["volumes"]);
    let app_volumes = strings(&app["volumes"]);
    let socket_volume = sidecar_volumes
        .iter()
        .find(|v| v.ends_with(":/var/run/attestmesh"))
        .expect("the sidecar mounts /var/run/attestmesh");
    assert!(
        app_volumes.contains(socket_volume),
        "the app mounts the same volume: {app_volumes:?}"
    );
    let volume_name = socket_volume.split(':').next().unwrap();
    assert!(
        compose["volumes"][volume_name].is_mapping()
            || compose["volumes"].get(volume_name).is_some(),
        "named volume {volume_name} declared"
    );
    assert!(
        sidecar_volumes.contains(&"/var/run/dstack.sock:/var/run/dstack.sock".to_string()),
        "{sidecar_volumes:?}"
    );
    assert!(
        !app_volumes.iter().any(|v| v.contains("dstack.sock")),
        "the app gets no dstack socket"
    );

    // attestmesh0 needs NET_ADMIN and the TUN device; the app shares the sidecar's network.
    assert!(strings(&sidecar["cap_add"]).contains(&"NET_ADMIN".to_string()));
    assert!(
        strings(&sidecar["devices"])
            .iter()
            .any(|d| d.starts_with("/dev/net/tun"))
    );
    assert_eq!(app["network_mode"], format!("service:{SIDECAR}"));

    // Every required setting is set, under a name the agent reads, and nothing else is misspelt.
    let known = agent_env_vars();
    let env = sidecar["environment"]
        .as_mapping()
        .expect("environment as a mapping");
    let set: BTreeSet<String> = env
        .keys()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect();
    for required in REQUIRED {
        assert!(
            known.contains(required),
            "the agent no longer reads {required}"
        );
        assert!(
            set.contains(required),
            "the compose file does not set {required}"
        );
    }
    for name in set.iter().filter(|n| n.starts_with("ATTESTMESH_")) {
        assert!(
            known.contains(name),
            "{name} is not a variable the agent reads: {known:?}"
        );
    }
    assert_eq!(
        env.get("ATTESTMESH_CHAIN_ID").and_then(Value::as_u64),
        Some(8453)
    );
    // The chain RPC hosts are attested (written literally); only keys come from secrets, and
    // there are enough independent endpoints for a majority to outvote one liar.
    let rpc = env
        .get("ATTESTMESH_CHAIN_RPC_URL")
        .and_then(Value::as_str)
        .expect("chain RPC endpoints");
    let urls: Vec<&str> = rpc.split(',').collect();
    assert!(urls.len() >= 3, "at least three endpoints: {rpc}");
    for url in &urls {
        assert!(!url.contains("${"), "no whole URL from a secret: {url}");
        let secret = |name: &str| Some(format!("key-of-{name}"));
        let resolved = cluster_mesh_agent_url(url, secret);
        assert!(resolved.is_ok(), "{url}: {resolved:?}");
    }
    assert_eq!(
        env.get("ATTESTMESH_LOG_FORMAT").and_then(Value::as_str),
        Some("json")
    );
    assert!(
        known.contains("ATTESTMESH_CLUSTER"),
        "optional ATTESTMESH_CLUSTER is documented"
    );
}

fn cluster_mesh_agent_url(
    template: &str,
    secret: impl Fn(&str) -> Option<String>,
) -> Result<url::Url, String> {
    attestmesh_agent::config::rpc_url_from_template(template, secret).map_err(|e| e.to_string())
}

#[test]
fn readme_documents_every_agent_setting() {
    let readme = std::fs::read_to_string(crate_dir().join("README.md")).unwrap();
    let missing: Vec<String> = agent_env_vars()
        .into_iter()
        .filter(|name| !readme.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/README.md does not document {missing:?}"
    );
}

#[test]
fn dockerfiles_are_multi_stage_and_build_the_right_binaries() {
    for (file, package, binary) in [
        (
            "agent.Dockerfile",
            "cluster-mesh-agent",
            "cluster-mesh-agent",
        ),
        (
            "webhook.Dockerfile",
            "attestmesh-webhook",
            "attestmesh-webhook",
        ),
        (
            "indexer.Dockerfile",
            "attestmesh-indexer",
            "attestmesh-indexer",
        ),
    ] {
        let text = std::fs::read_to_string(crate_dir().join("docker").join(file)).unwrap();
        let froms: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().starts_with("FROM "))
            .collect();
        // One recipe, two sources of the binary: `compiled` (the default, last) builds it in the
        // Rust image; `prebuilt` takes the host-built one; both are the same `runtime` stage.
        assert_eq!(
            froms,
            [
                "FROM ${RUST_IMAGE} AS compile",
                "FROM ${BASE} AS runtime",
                "FROM runtime AS prebuilt",
                "FROM runtime AS compiled",
            ],
            "{file}"
        );
        assert!(
            text.contains("ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm"),
            "{file}: the workspace's toolchain"
        );
        assert!(
            text.contains("ARG BASE=docker.io/library/debian:bookworm-slim"),
            "{file}: the toolchain's Debian release (same glibc)"
        );
        assert!(
            text.contains(&format!("COPY {binary} /usr/local/bin/{binary}"))
                && text.contains(&format!(
                    "COPY --from=compile /out/{binary} /usr/local/bin/{binary}"
                )),
            "{file}: both ends install the binary at the same path"
        );
        assert!(
            text.contains(&format!("--package {package}")) && text.contains("--locked"),
            "{file}"
        );
        assert!(text.contains(&format!("--bin {binary}")), "{file}");
        assert!(
            text.contains(&format!("ENTRYPOINT [\"/usr/local/bin/{binary}\"")),
            "{file}"
        );
        // The package really exists in the workspace under that name.
        let manifest_dir = match package {
            "cluster-mesh-agent" => "agent",
            "attestmesh-webhook" => "webhook",
            _ => "indexer",
        };
        let manifest = crate_dir().join("..").join(manifest_dir).join("Cargo.toml");
        if let Ok(manifest) = std::fs::read_to_string(&manifest) {
            assert!(
                manifest.contains(&format!("name = \"{package}\"")),
                "{}",
                manifest_dir
            );
            assert!(
                manifest.contains(&format!("name = \"{binary}\"")),
                "{}",
                manifest_dir
            );
        }
    }
}
