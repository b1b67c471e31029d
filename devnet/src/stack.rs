//! The whole local devnet in one process: the chain (anvil + EntryPoint + contracts), one
//! cluster, the paymaster webhook, the bundler, the gas manager, the gateway emulator, and a
//! dstack guest-agent simulator per node. `attestmesh-devnet up`, the end-to-end tests and the
//! benchmarks all start it through [`Stack::start`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use alloy::primitives::{Address, B256, keccak256};
use alloy::signers::local::PrivateKeySigner;
use attestmesh_dstack::EthAddress;
use attestmesh_webhook::{Webhook, WebhookConfig, WebhookHandle};
use tracing::info;

use crate::bundler::{Bundler, BundlerConfig, BundlerHandle};
use crate::dstack_simulator::keys::{DEFAULT_DEVNET_SEED, kms_root_from_seed};
use crate::dstack_simulator::{DstackSimulator, KeySource, SimulatorConfig, SimulatorHandle};
use crate::gas_manager::{GasManager, GasManagerConfig, GasManagerHandle};
use crate::gateway::{GatewayConfig, GatewayEmulator, GatewayHandle};
use crate::local_chain::{LocalChain, LocalChainConfig};

/// Base mainnet's chain id.
pub const BASE_CHAIN_ID: u64 = 8453;

/// Base's block time in seconds: the devnet, the demo and the benchmarks run at it.
pub const BASE_BLOCK_TIME_SECS: u64 = 2;

/// 127.0.0.1 on a free port.
pub const ANY_LOOPBACK_PORT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// How to start the devnet.
#[derive(Debug, Clone)]
pub struct StackConfig {
    pub chain: LocalChainConfig,
    /// The gas manager policy id the nodes use.
    pub policy_id: String,
    /// Shared by the gas manager and the webhook.
    pub webhook_secret: String,
    /// The cluster's mesh CIDR (10.88.0.0/16 by default).
    pub mesh_network: u32,
    pub mesh_prefix_length: u8,
    /// The devnet KMS root seed (every simulator issues app keys from it).
    pub kms_seed: String,
    /// Where sockets and the gateway CA go.
    pub state_dir: PathBuf,
    /// Listen addresses of the services (loopback, port 0 = any free port).
    pub webhook_listen: SocketAddr,
    pub bundler_listen: SocketAddr,
    pub gas_manager_listen: SocketAddr,
    pub gateway_listen: SocketAddr,
    /// Bundle through the real `@pimlico/alto` on this port (0: one its server picks) instead of the project's bundler
    /// (which still runs, unused by the nodes).
    pub alto_port: Option<u16>,
    /// Put a [`FaultProxy`](crate::fault_proxy::FaultProxy) between the gas manager and the
    /// webhook (tests take the webhook down through it).
    pub webhook_fault_proxy: bool,
}

impl StackConfig {
    /// The end-to-end configuration: Base's chain id 8453 and Base's 2 s blocks on a local
    /// chain with the EntryPoint at its canonical address, or — with `FORK_URL` set — anvil
    /// forking Base itself, where the real EntryPoint v0.7 already is.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        let fork_url = std::env::var("FORK_URL").ok().filter(|url| !url.is_empty());
        Self {
            chain: LocalChainConfig {
                chain_id: BASE_CHAIN_ID,
                block_time: Some(BASE_BLOCK_TIME_SECS),
                fork_url,
                ..LocalChainConfig::default()
            },
            policy_id: "attestmesh-devnet-policy".into(),
            webhook_secret: "attestmesh-devnet-webhook-secret".into(),
            mesh_network: 0x0a58_0000,
            mesh_prefix_length: 16,
            kms_seed: DEFAULT_DEVNET_SEED.into(),
            state_dir: state_dir.into(),
            webhook_listen: ANY_LOOPBACK_PORT,
            bundler_listen: ANY_LOOPBACK_PORT,
            gas_manager_listen: ANY_LOOPBACK_PORT,
            gateway_listen: ANY_LOOPBACK_PORT,
            alto_port: None,
            webhook_fault_proxy: false,
        }
    }

    /// A block per transaction instead of Base's cadence: the one setting tests use where the
    /// block time is not the point (they then run in seconds, not blocks).
    pub fn with_instant_mining(mut self) -> Self {
        self.chain.block_time = None;
        self
    }

    /// What the chain's cadence is, for output: "2 s blocks" or "instant mining".
    pub fn cadence(&self) -> String {
        match self.chain.block_time {
            Some(secs) => format!("{secs} s blocks"),
            None => "instant mining (a block per transaction)".into(),
        }
    }
}

/// A failure bringing up the devnet, naming the part.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("local chain: {0}")]
    Chain(#[from] crate::local_chain::LocalChainError),
    #[error("paymaster webhook: {0}")]
    Webhook(#[from] attestmesh_webhook::WebhookError),
    #[error("bundler: {0}")]
    Bundler(#[from] crate::bundler::BundlerError),
    #[error("gas manager: {0}")]
    GasManager(#[from] crate::gas_manager::GasManagerError),
    #[error("gateway emulator: {0}")]
    Gateway(#[from] crate::gateway::GatewayError),
    #[error("dstack simulator for {node}: {source}")]
    Dstack {
        node: String,
        #[source]
        source: crate::dstack_simulator::SimulatorError,
    },
    #[error("cannot prepare {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("alto bundler: {0}")]
    Alto(#[from] crate::alto::AltoError),
    #[error("{0}")]
    Other(String),
}

/// One node's TEE stand-in: its member account (= app id) and dstack simulator.
#[derive(Debug)]
pub struct DevnetNode {
    pub name: String,
    pub account: Address,
    pub dstack_socket: PathBuf,
    pub dstack: SimulatorHandle,
}

/// The running devnet. Dropping it stops every part.
#[derive(Debug)]
pub struct Stack {
    pub config: StackConfig,
    pub chain: LocalChain,
    pub webhook: WebhookHandle,
    pub bundler: BundlerHandle,
    /// The real alto bundler, when [`StackConfig::alto_port`] asked for it.
    pub alto: Option<crate::alto::Alto>,
    /// Between the gas manager and the webhook, when [`StackConfig::webhook_fault_proxy`].
    pub webhook_proxy: Option<crate::fault_proxy::FaultProxy>,
    pub gas_manager: GasManagerHandle,
    pub gateway: GatewayHandle,
    pub cluster: Address,
    pub kms_root: Address,
    pub nodes: Vec<DevnetNode>,
}

/// The compose hash the simulators report (allowlisted in the devnet cluster).
pub fn devnet_compose_hash() -> B256 {
    keccak256(b"attestmesh-devnet:compose-hash")
}

impl Stack {
    /// Brings up every part, in dependency order.
    pub async fn start(config: StackConfig) -> Result<Self, StackError> {
        std::fs::create_dir_all(&config.state_dir).map_err(|source| StackError::StateDir {
            path: config.state_dir.clone(),
            source,
        })?;
        let chain = LocalChain::start(config.chain.clone()).await?;
        let chain_id = config.chain.chain_id;

        let root = kms_root_from_seed(&config.kms_seed).map_err(|source| StackError::Dstack {
            node: "KMS root".into(),
            source,
        })?;
        let kms_root = PrivateKeySigner::from_slice(&root.to_bytes())
            .map_err(|e| StackError::Other(format!("KMS root key: {e}")))?
            .address();
        let cluster = chain
            .create_cluster(
                keccak256(b"attestmesh-devnet-cluster"),
                config.mesh_network,
                config.mesh_prefix_length,
                vec![kms_root],
                vec![devnet_compose_hash()],
            )
            .await?;
        info!(target: "attestmesh::devnet", %cluster, %kms_root, "cluster created");

        let secret = attestmesh_webhook::WebhookSecret::new(config.webhook_secret.clone())?;
        let webhook_config = WebhookConfig::new(chain.rpc_url().clone(), chain_id, secret)
            .with_policy(config.policy_id.clone(), cluster);
        let webhook_config = WebhookConfig {
            listen: config.webhook_listen,
            ..webhook_config
        };
        let webhook = Webhook::spawn(webhook_config).await?;

        let executor = chain
            .dev_key(2)
            .ok_or_else(|| StackError::Other("anvil has no third dev key".into()))?;
        let bundler = Bundler::spawn(BundlerConfig {
            listen: config.bundler_listen,
            ..BundlerConfig::new(chain.rpc_url().clone(), chain_id, executor)
        })
        .await?;

        let alto = match config.alto_port {
            Some(port) => {
                // Dev keys 3 and 5..=9 execute bundles, 4 is alto's utility key (0-2: operator,
                // sponsor, the project's bundler).
                let executors: Vec<PrivateKeySigner> = [3, 5, 6, 7, 8, 9]
                    .into_iter()
                    .filter_map(|i| chain.dev_key(i))
                    .collect();
                let (false, Some(utility)) = (executors.is_empty(), chain.dev_key(4)) else {
                    return Err(StackError::Other(
                        "anvil has too few dev keys for alto".into(),
                    ));
                };
                Some(
                    crate::alto::Alto::start(
                        chain.rpc_url(),
                        port,
                        &executors,
                        &utility,
                        &config.state_dir,
                    )
                    .await?,
                )
            }
            None => None,
        };
        let bundler_url = alto
            .as_ref()
            .map_or_else(|| bundler.url().clone(), |a| a.url().clone());

        let mut webhook_url: url::Url = webhook
            .url()
            .parse()
            .map_err(|e| StackError::Other(format!("webhook URL: {e}")))?;
        let webhook_proxy = if config.webhook_fault_proxy {
            let proxy = crate::fault_proxy::FaultProxy::start(webhook_url.clone())
                .await
                .map_err(|e| StackError::Other(format!("webhook fault proxy: {e}")))?;
            webhook_url = proxy.url().clone();
            Some(proxy)
        } else {
            None
        };
        let gas_manager = GasManager::spawn(GasManagerConfig {
            listen: config.gas_manager_listen,
            ..GasManagerConfig::new(
                chain.rpc_url().clone(),
                chain_id,
                bundler_url,
                chain.deployment().verifying_paymaster,
                chain.sponsor().clone(),
                webhook_url,
                crate::gas_manager::WebhookSecret::new(config.webhook_secret.clone()),
                vec![config.policy_id.clone()],
            )
        })
        .await?;

        let gateway = GatewayEmulator::spawn(GatewayConfig {
            listen: config.gateway_listen,
            ca_cert_path: Some(config.state_dir.join("gateway-ca.pem")),
            ..GatewayConfig::default()
        })?;
        info!(
            target: "attestmesh::devnet",
            webhook = %webhook.url(),
            bundler = %bundler.url(),
            gas_manager = %gas_manager.url(),
            gateway = %gateway.local_addr(),
            "services up"
        );
        Ok(Self {
            config,
            chain,
            webhook,
            bundler,
            alto,
            webhook_proxy,
            gas_manager,
            gateway,
            cluster,
            kms_root,
            nodes: Vec::new(),
        })
    }

    /// The bundler the nodes use: alto when configured, else the project's.
    pub fn bundler_url(&self) -> &url::Url {
        self.alto
            .as_ref()
            .map_or_else(|| self.bundler.url(), |a| a.url())
    }

    /// Adds a node the way an operator does (allowlist + deploy its member account) and starts
    /// its dstack simulator, whose app id is that account.
    pub async fn add_node(&mut self, name: &str) -> Result<&DevnetNode, StackError> {
        self.add_nodes(&[name]).await?;
        self.nodes
            .last()
            .ok_or_else(|| StackError::Other("node list empty after push".into()))
    }

    /// [`Stack::add_node`] for several nodes at once: their accounts are allowlisted and
    /// deployed in one round of transactions (O(1) blocks whatever their number).
    pub async fn add_nodes(&mut self, names: &[&str]) -> Result<(), StackError> {
        let accounts = self.chain.add_member_accounts(self.cluster, names).await?;
        for (name, account) in names.iter().zip(accounts) {
            let socket = self.config.state_dir.join(format!("{name}.dstack.sock"));
            let simulator = SimulatorConfig::new(
                EthAddress(account.into_array()),
                KeySource::DevnetSeed(self.config.kms_seed.clone()),
            );
            let dstack = DstackSimulator::spawn(simulator, &socket).map_err(|source| {
                StackError::Dstack {
                    node: name.to_string(),
                    source,
                }
            })?;
            info!(target: "attestmesh::devnet", node = name, %account, socket = %socket.display(), "node prepared");
            self.nodes.push(DevnetNode {
                name: name.to_string(),
                account,
                dstack_socket: socket,
                dstack,
            });
        }
        Ok(())
    }

    /// Every endpoint and address, as `.devnet/endpoints.json` records them.
    pub fn endpoints(&self) -> serde_json::Value {
        let deployment = self.chain.deployment();
        serde_json::json!({
            "chain": {
                "rpcUrl": self.chain.rpc_url().as_str(),
                "chainId": self.config.chain.chain_id,
                "blockTimeSeconds": self.config.chain.block_time,
            },
            "contracts": {
                "entryPoint": deployment.entry_point,
                "clusterFactory": deployment.cluster_factory,
                "indexerRegistry": deployment.indexer_registry,
                "verifyingPaymaster": deployment.verifying_paymaster,
                "cluster": self.cluster,
            },
            "kmsRoot": self.kms_root,
            "operator": self.chain.operator().address(),
            "services": {
                "bundler": self.bundler_url().as_str(),
                "gasManager": self.gas_manager.url().as_str(),
                "gasManagerPolicyId": self.config.policy_id,
                "webhook": self.webhook.url(),
                "gateway": self.gateway.local_addr().to_string(),
                "gatewayDomain": self.gateway.domain(),
                "gatewayCa": self.gateway.ca_cert_path().map(Path::display).map(|p| p.to_string()),
            },
            "nodes": self.nodes.iter().map(|n| serde_json::json!({
                "name": n.name,
                "account": n.account,
                "dstackSocket": n.dstack_socket.display().to_string(),
            })).collect::<Vec<_>>(),
        })
    }
}
