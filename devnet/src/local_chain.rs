//! A local chain as a user's would be on Base: anvil, EntryPoint v0.7 at its canonical address
//! (the npm bytecode through the deterministic CREATE2 deployer), and the AttestMesh contracts
//! deployed by the real deploy script (`forge script script/Deploy.s.sol`), plus helpers to create
//! a cluster and its member accounts the way an operator does.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use alloy::node_bindings::{Anvil, AnvilInstance};
use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use attestmesh_bindings::ENTRY_POINT_V07;
use attestmesh_bindings::cluster::Cluster;
use attestmesh_bindings::factory::ClusterFactory::{self, ClusterConfig};
use attestmesh_chain::ChainClient;
use serde::Deserialize;
use tracing::{debug, info};
use url::Url;

/// The deterministic CREATE2 deployer every anvil (and Base) has.
pub const CREATE2_DEPLOYER: Address =
    alloy::primitives::address!("0x4e59b44847b379578588920cA78FbF26c0B4956C");
/// The salt under which the npm EntryPoint v0.7 bytecode lands at its canonical address.
pub const ENTRY_POINT_SALT: B256 =
    alloy::primitives::b256!("0x90d8084deab30c2a37c45e8d47f49f2f7965183cb6990a98943ef94940681de3");

/// Failures of the local chain.
#[derive(Debug, thiserror::Error)]
pub enum LocalChainError {
    #[error(
        "cannot start anvil from {path}: {message} (run `make deps` to install Foundry from npm)"
    )]
    Anvil { path: PathBuf, message: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} is malformed: {message}")]
    Malformed { what: String, message: String },
    #[error(transparent)]
    Chain(#[from] attestmesh_chain::ChainError),
    #[error(
        "EntryPoint v0.7 did not land at {ENTRY_POINT_V07}: the npm bytecode or the salt changed"
    )]
    EntryPointMisplaced,
    #[error("the deploy script failed (exit {status}); its output:\n{output}")]
    DeployScript { status: String, output: String },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// Result alias of this module.
pub type Result<T, E = LocalChainError> = std::result::Result<T, E>;

/// How to start the chain.
#[derive(Debug, Clone)]
pub struct LocalChainConfig {
    /// Seconds between blocks; `None` mines a block per transaction (fast tests).
    pub block_time: Option<u64>,
    /// The chain id (31337 by default; Base's 8453 to mimic it).
    pub chain_id: u64,
    /// The genesis block number (field note 8: mainnet has history; tests start high).
    pub genesis_block: Option<u64>,
    /// Listen port; `None` picks a free one.
    pub port: Option<u16>,
    /// Listen address; `None` is anvil's loopback. Tests with network namespaces use 0.0.0.0 so
    /// nodes reach the chain through their veth.
    pub host: Option<std::net::IpAddr>,
    /// Fork this chain (e.g. Base) instead of starting empty: the real EntryPoint is there.
    pub fork_url: Option<String>,
}

impl Default for LocalChainConfig {
    fn default() -> Self {
        Self {
            block_time: None,
            chain_id: 31337,
            genesis_block: None,
            port: None,
            host: None,
            fork_url: None,
        }
    }
}

/// Every address of a deployment, as `script/Deploy.s.sol` writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub chain_id: u64,
    pub entry_point: Address,
    pub cluster_factory: Address,
    pub indexer_registry: Address,
    pub verifying_paymaster: Address,
    pub cluster_init: Address,
}

/// A running anvil with the contracts deployed. Dropping it stops anvil.
#[derive(Debug)]
pub struct LocalChain {
    anvil: AnvilInstance,
    rpc_url: Url,
    deployment: Deployment,
    operator: PrivateKeySigner,
    sponsor: PrivateKeySigner,
    client: ChainClient,
}

/// The project root (where foundry.toml and node_modules are), overridable for installed builds.
pub fn project_root() -> PathBuf {
    match std::env::var_os("ATTESTMESH_ROOT") {
        Some(root) => PathBuf::from(root),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
    }
}

/// The native Foundry binary `tool` (forge, anvil, cast) installed from npm. Not the
/// node_modules/.bin wrapper: it exits 0 even when the tool fails.
pub fn foundry_binary(tool: &str) -> PathBuf {
    project_root().join(format!(
        "node_modules/@foundry-rs/{tool}-linux-amd64/bin/{tool}"
    ))
}

impl LocalChain {
    /// Starts anvil, places EntryPoint v0.7 and deploys the contracts with the deploy script.
    /// anvil's first dev key is the operator (deployer, registry and paymaster owner); its
    /// second is the paymaster's sponsor signer (the gas manager holds it).
    pub async fn start(config: LocalChainConfig) -> Result<Self> {
        let anvil_path = foundry_binary("anvil");
        let mut anvil = Anvil::at(&anvil_path).chain_id(config.chain_id);
        if let Some(seconds) = config.block_time {
            anvil = anvil.block_time(seconds);
        }
        if let Some(port) = config.port {
            anvil = anvil.port(port);
        }
        if let Some(url) = &config.fork_url {
            anvil = anvil.fork(url.clone());
        }
        if let Some(host) = config.host {
            anvil = anvil.args(["--host", &host.to_string()]);
        }
        if let Some(number) = config.genesis_block {
            anvil = anvil.args(["--number", &number.to_string()]);
        }
        let anvil = anvil.try_spawn().map_err(|e| LocalChainError::Anvil {
            path: anvil_path.clone(),
            message: e.to_string(),
        })?;
        // 127.0.0.1, not the "localhost" alloy reports: Node resolves localhost to ::1 first and
        // anvil listens on IPv4 only, so alto could not connect.
        let rpc_url: Url = format!("http://127.0.0.1:{}", anvil.port())
            .parse()
            .map_err(|e| LocalChainError::Malformed {
                what: "anvil endpoint".into(),
                message: format!("{e}"),
            })?;
        let keys = anvil.keys();
        let (Some(operator_key), Some(sponsor_key)) = (keys.first(), keys.get(1)) else {
            return Err(LocalChainError::Anvil {
                path: anvil_path,
                message: "anvil reported no dev keys".into(),
            });
        };
        let operator = PrivateKeySigner::from(operator_key.clone());
        let sponsor = PrivateKeySigner::from(sponsor_key.clone());
        info!(target: "attestmesh::devnet", rpc = %rpc_url, chain_id = config.chain_id, "anvil started");

        let client =
            ChainClient::connect_with_signer(&rpc_url, operator.clone(), Some(config.chain_id))
                .await?;
        place_entry_point(&client).await?;
        let deployment = deploy_contracts(
            &rpc_url,
            &operator,
            sponsor.address(),
            anvil.port(),
            config.block_time.is_none(),
        )
        .await?;
        info!(
            target: "attestmesh::devnet",
            factory = %deployment.cluster_factory,
            paymaster = %deployment.verifying_paymaster,
            registry = %deployment.indexer_registry,
            "contracts deployed"
        );
        Ok(Self {
            anvil,
            rpc_url,
            deployment,
            operator,
            sponsor,
            client,
        })
    }

    pub fn rpc_url(&self) -> &Url {
        &self.rpc_url
    }

    /// anvil's process id (recorded so `attestmesh-devnet down` can clean up after a crash).
    pub fn anvil_pid(&self) -> u32 {
        self.anvil.child().id()
    }

    pub fn deployment(&self) -> &Deployment {
        &self.deployment
    }

    /// A client signing with the operator key.
    pub fn operator_client(&self) -> &ChainClient {
        &self.client
    }

    pub fn operator(&self) -> &PrivateKeySigner {
        &self.operator
    }

    /// The paymaster's verifying signer (the gas manager signs with it).
    pub fn sponsor(&self) -> &PrivateKeySigner {
        &self.sponsor
    }

    /// anvil's dev key `index` (0 = operator, 1 = sponsor; others free for bundler executors).
    pub fn dev_key(&self, index: usize) -> Option<PrivateKeySigner> {
        self.anvil
            .keys()
            .get(index)
            .map(|key| PrivateKeySigner::from(key.clone()))
    }

    /// Creates a cluster owned by the operator, allowing `kms_roots` and `compose_hashes`.
    pub async fn create_cluster(
        &self,
        salt: B256,
        mesh_network: u32,
        mesh_prefix_length: u8,
        kms_roots: Vec<Address>,
        compose_hashes: Vec<B256>,
    ) -> Result<Address> {
        let config = ClusterConfig {
            owner: self.operator.address(),
            meshNetwork: mesh_network,
            meshPrefixLength: mesh_prefix_length,
            kmsRoots: kms_roots,
            composeHashes: compose_hashes,
            allowAnyDevice: true,
        };
        let factory = self.deployment.cluster_factory;
        let predicted = ClusterFactory::new(factory, self.client.provider().clone())
            .predictClusterAddress(self.operator.address(), salt)
            .call()
            .await
            .map_err(|e| {
                self.client
                    .call_error("ClusterFactory.predictClusterAddress", e)
            })?;
        let data = ClusterFactory::createClusterCall { salt, config }.abi_encode();
        self.client
            .send_transaction("ClusterFactory.createCluster", factory, data.into())
            .await?;
        debug!(target: "attestmesh::devnet", cluster = %predicted, "cluster created");
        Ok(predicted)
    }

    /// The member account (= dstack app id) of `node_name` in `cluster`, allowlisted and deployed.
    pub async fn add_member_account(&self, cluster: Address, node_name: &str) -> Result<Address> {
        let accounts = self.add_member_accounts(cluster, &[node_name]).await?;
        accounts
            .first()
            .copied()
            .ok_or_else(|| LocalChainError::Malformed {
                what: "member accounts".into(),
                message: "none created".into(),
            })
    }

    /// The member accounts of `node_names` in `cluster`, allowlisted and deployed, in order.
    /// Every transaction is sent before any receipt is awaited, so N nodes take O(1) blocks on
    /// a chain with a block time (as on Base), not 2N.
    pub async fn add_member_accounts(
        &self,
        cluster: Address,
        node_names: &[&str],
    ) -> Result<Vec<Address>> {
        let factory = ClusterFactory::new(
            self.deployment.cluster_factory,
            self.client.provider().clone(),
        );
        let mut accounts = Vec::with_capacity(node_names.len());
        let mut transactions = Vec::with_capacity(2 * node_names.len());
        for name in node_names {
            let salt = member_salt(name);
            let account = factory
                .predictMemberAccount(cluster, salt)
                .call()
                .await
                .map_err(|e| {
                    self.client
                        .call_error("ClusterFactory.predictMemberAccount", e)
                })?;
            let allow = Cluster::setAppIdAllowedCall {
                appId: account,
                allowed: true,
            }
            .abi_encode();
            let create = ClusterFactory::createMemberAccountCall { cluster, salt }.abi_encode();
            transactions.push((
                format!("Cluster.setAppIdAllowed({name})"),
                cluster,
                allow.into(),
            ));
            transactions.push((
                format!("ClusterFactory.createMemberAccount({name})"),
                self.deployment.cluster_factory,
                create.into(),
            ));
            accounts.push(account);
        }
        self.client.send_transactions(transactions).await?;
        Ok(accounts)
    }
}

/// The CREATE2 salt of a node's member account: keccak256 of its name.
pub fn member_salt(node_name: &str) -> B256 {
    keccak256(node_name.as_bytes())
}

/// Puts EntryPoint v0.7 at its canonical address (npm bytecode through the deterministic
/// deployer, as on Base) unless code is already there. `client` must sign with a funded key.
pub async fn place_entry_point(client: &ChainClient) -> Result<()> {
    if client
        .require_code("EntryPoint v0.7", ENTRY_POINT_V07)
        .await
        .is_ok()
    {
        return Ok(());
    }
    let artifact_path = project_root()
        .join("node_modules/@account-abstraction/contracts/artifacts/EntryPoint.json");
    let text = std::fs::read_to_string(&artifact_path).map_err(|source| LocalChainError::Read {
        path: artifact_path.clone(),
        source,
    })?;
    #[derive(Deserialize)]
    struct Artifact {
        bytecode: Bytes,
    }
    let artifact: Artifact =
        serde_json::from_str(&text).map_err(|e| LocalChainError::Malformed {
            what: artifact_path.display().to_string(),
            message: e.to_string(),
        })?;
    let mut data = ENTRY_POINT_SALT.to_vec();
    data.extend_from_slice(&artifact.bytecode);
    client
        .send_transaction(
            "CREATE2 deployer (EntryPoint v0.7)",
            CREATE2_DEPLOYER,
            data.into(),
        )
        .await?;
    client
        .require_code("EntryPoint v0.7", ENTRY_POINT_V07)
        .await
        .map_err(|_| LocalChainError::EntryPointMisplaced)?;
    Ok(())
}

async fn deploy_contracts(
    rpc_url: &Url,
    operator: &PrivateKeySigner,
    sponsor: Address,
    port: u16,
    instant_mining: bool,
) -> Result<Deployment> {
    let root = project_root();
    // forge may only write under deployments/ (foundry.toml fs_permissions); test-* is git-ignored.
    let relative = format!("deployments/test-devnet-{port}.json");
    let forge = foundry_binary("forge");
    let key = format!("0x{}", alloy::hex::encode(operator.to_bytes()));
    // forge's output goes to a file, not a pipe: waiting for the exit status cannot then be held
    // up by a pipe some grandchild process still holds open.
    let log_path = std::env::temp_dir().join(format!("attestmesh-deploy-{port}.log"));
    let log = std::fs::File::create(&log_path).map_err(|source| LocalChainError::Read {
        path: log_path.clone(),
        source,
    })?;
    let log_err = log.try_clone().map_err(|source| LocalChainError::Read {
        path: log_path.clone(),
        source,
    })?;
    let mut child = tokio::process::Command::new(&forge)
        .current_dir(&root)
        .args([
            "script",
            "script/Deploy.s.sol",
            "--rpc-url",
            rpc_url.as_str(),
            "--private-key",
            &key,
            "--broadcast",
        ])
        // With instant mining, forge's concurrent sends can reach anvil out of nonce order; anvil
        // then mines the first and leaves the later ones queued for ever (seen under CI load: 11
        // transactions queued behind a nonce already mined, the devnet never up). `--slow` sends
        // each after the previous one's receipt. At a block interval the order does not matter
        // and one block holds them all.
        .args(instant_mining.then_some("--slow"))
        .env("DEPLOYMENTS_FILE", &relative)
        .env("SPONSOR_SIGNER", sponsor.to_string())
        .env(
            "PAYMASTER_DEPOSIT",
            U256::from(10u64).pow(U256::from(20u64)).to_string(),
        )
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| LocalChainError::Spawn {
            program: forge.display().to_string(),
            source,
        })?;
    // Bounded: a deploy that hangs must fail the caller, not hold it forever.
    let status = tokio::time::timeout(std::time::Duration::from_secs(300), child.wait())
        .await
        .map_err(|_| LocalChainError::DeployScript {
            status: "timeout".into(),
            output: format!("forge script ran for 300 s; see {}", log_path.display()),
        })?
        .map_err(|source| LocalChainError::Spawn {
            program: forge.display().to_string(),
            source,
        })?;
    if !status.success() {
        let output = std::fs::read_to_string(&log_path)
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", log_path.display()));
        return Err(LocalChainError::DeployScript {
            status: status.to_string(),
            output,
        });
    }
    let _ = std::fs::remove_file(&log_path);
    let path = root.join(&relative);
    let text = std::fs::read_to_string(&path).map_err(|source| LocalChainError::Read {
        path: path.clone(),
        source,
    })?;
    // The file is a by-product of this chain only; the parsed copy is what we keep.
    let _ = std::fs::remove_file(&path);
    serde_json::from_str(&text).map_err(|e| LocalChainError::Malformed {
        what: path.display().to_string(),
        message: e.to_string(),
    })
}
