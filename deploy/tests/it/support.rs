//! Shared by the tests: anvil with EntryPoint v0.7 placed, the operator binary, key files.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use alloy::node_bindings::{Anvil, AnvilInstance};
use alloy::primitives::{Address, Bytes};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use attestmesh_chain::ChainClient;
use attestmesh_devnet::local_chain::{foundry_binary, project_root};
use url::Url;

/// Logs to the test's captured output (shown when a test fails), debug for the project.
pub fn init_logs() {
    attestmesh_devnet::test_logs::init("info,attestmesh=debug");
}

/// A plain anvil (no contracts, no EntryPoint), killed on drop.
pub struct Chain {
    pub anvil: AnvilInstance,
    pub rpc_url: Url,
    /// anvil's first dev key (funded).
    pub deployer: PrivateKeySigner,
}

impl Chain {
    pub fn start(chain_id: u64) -> Self {
        Self::spawn(Anvil::at(foundry_binary("anvil")).chain_id(chain_id))
    }

    /// anvil forking `fork_url` (its chain id is the fork's).
    pub fn fork(fork_url: &str) -> Self {
        // Forking fetches state over the network: give it longer than a local start.
        Self::spawn(
            Anvil::at(foundry_binary("anvil"))
                .fork(fork_url)
                .timeout(120_000),
        )
    }

    fn spawn(anvil: Anvil) -> Self {
        let anvil = anvil.try_spawn().expect("anvil starts (run `make deps`)");
        // 127.0.0.1, not localhost: anvil listens on IPv4 only.
        let rpc_url: Url = format!("http://127.0.0.1:{}", anvil.port())
            .parse()
            .unwrap();
        let deployer = PrivateKeySigner::from(anvil.keys()[0].clone());
        Self {
            anvil,
            rpc_url,
            deployer,
        }
    }

    pub async fn client(&self) -> ChainClient {
        ChainClient::connect_with_signer(&self.rpc_url, self.deployer.clone(), None)
            .await
            .unwrap()
    }

    /// EntryPoint v0.7 at its canonical address from the npm bytecode through the
    /// deterministic deployer, exactly as it exists on Base.
    pub async fn place_entry_point(&self) {
        attestmesh_devnet::local_chain::place_entry_point(&self.client().await)
            .await
            .unwrap();
    }

    /// anvil_setCode.
    pub async fn set_code(&self, address: Address, code: Bytes) {
        let client = self.client().await;
        let _: () = client
            .provider()
            .raw_request("anvil_setCode".into(), (address, code))
            .await
            .unwrap();
    }

    pub async fn nonce(&self, account: Address) -> u64 {
        self.client()
            .await
            .provider()
            .get_transaction_count(account)
            .await
            .unwrap()
    }
}

/// Writes `signer`'s key to a 0600 file in `dir`.
pub fn key_file(dir: &Path, signer: &PrivateKeySigner) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("operator.key");
    std::fs::write(
        &path,
        format!("0x{}\n", alloy::hex::encode(signer.to_bytes())),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// One run of `attestmesh-operator`.
#[derive(Debug)]
pub struct Run {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        assert!(self.success, "the command failed:\n{}", self.stderr);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    /// Asserts a failure whose message contains every one of `needles`.
    pub fn fails_with(&self, needles: &[&str]) {
        assert!(!self.success, "expected a failure, got:\n{}", self.stdout);
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "the error lacks {needle:?}:\n{}",
                self.stderr
            );
        }
    }
}

/// Runs the operator binary with `args` (bounded: a hung command fails the test).
pub async fn operator(args: &[&str]) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_attestmesh-operator"));
    command
        .args(args)
        .env("RUST_LOG", "warn,attestmesh::deploy=info")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for variable in [
        "ATTESTMESH_OPERATOR_RPC_URL",
        "ATTESTMESH_OPERATOR_CHAIN_ID",
        "ATTESTMESH_OPERATOR_KEY_FILE",
        "ATTESTMESH_DEPLOYMENTS_FILE",
        "ATTESTMESH_CLUSTER",
        "ATTESTMESH_OPERATOR_WEBHOOK_URL",
        "OPERATOR",
        "SPONSOR_SIGNER",
    ] {
        command.env_remove(variable);
    }
    let output = tokio::time::timeout(std::time::Duration::from_secs(600), command.output())
        .await
        .expect("attestmesh-operator finished within 10 minutes")
        .expect("attestmesh-operator runs");
    let run = Run {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    eprintln!(
        "$ attestmesh-operator {}\n{}{}",
        args.join(" "),
        run.stdout,
        run.stderr
    );
    run
}

/// Files a test writes inside the project (deployments/ is the only place forge may write),
/// removed when the test ends, however it ends.
pub struct ProjectFiles(pub Vec<PathBuf>);

impl ProjectFiles {
    /// `deployments/test-<tag>.json` (git-ignored) and its forge log.
    pub fn deployments(tag: &str) -> (Self, String) {
        let relative = format!("deployments/test-{tag}.json");
        let root = project_root();
        let files = vec![
            root.join(&relative),
            root.join(format!("deployments/test-{tag}.forge.log")),
        ];
        (Self(files), relative)
    }
}

impl Drop for ProjectFiles {
    fn drop(&mut self) {
        for file in &self.0 {
            let _ = std::fs::remove_file(file);
        }
    }
}
