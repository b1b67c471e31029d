//! The command line's flags and subcommands (clap), and where the project root is.

use std::path::{Path, PathBuf};

use alloy::primitives::{Address, B256, U256};
use clap::{ArgAction, Args, Parser, Subcommand};
use url::Url;

use crate::deploy;
use crate::deployments::{self, Deployments};
use crate::error::{DeployError, Result};
use crate::operator::AllowKind;
use crate::signer::{self, KeySource};
use crate::webhook_check::ExpectedPolicy;

/// AttestMesh operator tool: deploys the contracts with asserted pre- and postconditions,
/// administers clusters, and checks that live webhook and indexer routes reach the right service.
#[derive(Debug, Parser)]
#[command(name = "attestmesh-operator", version, about)]
pub struct Cli {
    /// Print one JSON document on stdout instead of text (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The chain every chain command talks to.
#[derive(Debug, Clone, Args)]
pub struct ChainArgs {
    /// The chain's JSON-RPC URL (its path and query, where hosted RPCs keep API keys, are never
    /// printed).
    #[arg(
        long = "rpc-url",
        env = "ATTESTMESH_OPERATOR_RPC_URL",
        hide_env_values = true
    )]
    pub rpc_url: Url,
    /// The chain id the RPC must serve (8453 on Base); anything else is refused before acting.
    #[arg(long = "expected-chain-id", env = "ATTESTMESH_OPERATOR_CHAIN_ID")]
    pub expected_chain_id: u64,
}

/// The operator's key, for commands that send transactions. Never a raw key on the command
/// line: argv is visible to every local user.
#[derive(Debug, Clone, Default, Args)]
pub struct SignerArgs {
    /// File holding the hex private key (chmod 600).
    #[arg(
        long = "private-key-file",
        env = "ATTESTMESH_OPERATOR_KEY_FILE",
        conflicts_with = "private_key_env"
    )]
    pub private_key_file: Option<PathBuf>,
    /// Name of the environment variable holding the hex private key.
    #[arg(long = "private-key-env")]
    pub private_key_env: Option<String>,
}

impl SignerArgs {
    fn source(&self) -> Option<KeySource> {
        match (&self.private_key_file, &self.private_key_env) {
            (Some(path), _) => Some(KeySource::File(path.clone())),
            (None, Some(name)) => Some(KeySource::Env(name.clone())),
            (None, None) => None,
        }
    }

    pub(super) fn required(&self) -> Result<alloy::signers::local::PrivateKeySigner> {
        let source = self.source().ok_or_else(|| {
            DeployError::input(
                "signer",
                "this command sends transactions: pass --private-key-file <path> or --private-key-env <VAR>",
            )
        })?;
        signer::load_signer(&source)
    }
}

/// Where the deployed contracts are: the deployments file, or explicit addresses.
#[derive(Debug, Clone, Default, Args)]
pub struct ContractArgs {
    /// The deployments file `deploy` wrote (default: <project root>/deployments/<chainId>.json).
    #[arg(long = "deployments", env = "ATTESTMESH_DEPLOYMENTS_FILE")]
    pub deployments: Option<PathBuf>,
    /// The ClusterFactory (instead of the deployments file).
    #[arg(long = "factory")]
    pub factory: Option<Address>,
    /// The IndexerRegistry (instead of the deployments file).
    #[arg(long = "indexer-registry")]
    pub indexer_registry: Option<Address>,
    /// The project root (foundry.toml, script/, node_modules/). Default: the current directory
    /// when it is the project, else the tree this binary was built from.
    #[arg(long = "project-root", env = "ATTESTMESH_ROOT")]
    pub project_root: Option<PathBuf>,
}

impl ContractArgs {
    fn deployments(&self, chain_id: u64) -> Result<Deployments> {
        let path = match &self.deployments {
            Some(path) => path.clone(),
            None => project_root(self.project_root.clone())
                .join(deployments::default_relative_path(chain_id)),
        };
        if !path.is_file() {
            return Err(DeployError::precondition(
                format!("no deployments file at {}", path.display()),
                "deploy first (`attestmesh-operator deploy`), or pass --deployments <file> or the contract address (--factory / --indexer-registry)",
            ));
        }
        let d = Deployments::read(&path)?;
        if d.chain_id != chain_id {
            return Err(DeployError::precondition(
                format!(
                    "{} records chain {}, but the RPC serves chain {chain_id}",
                    path.display(),
                    d.chain_id
                ),
                "pass the deployments file of this chain",
            ));
        }
        Ok(d)
    }

    pub(super) fn factory(&self, chain_id: u64) -> Result<Address> {
        match self.factory {
            Some(factory) => Ok(factory),
            None => Ok(self.deployments(chain_id)?.cluster_factory),
        }
    }

    pub(super) fn indexer_registry(&self, chain_id: u64) -> Result<Address> {
        match self.indexer_registry {
            Some(registry) => Ok(registry),
            None => Ok(self.deployments(chain_id)?.indexer_registry),
        }
    }
}

/// The cluster a command acts on.
#[derive(Debug, Clone, Args)]
pub struct ClusterArg {
    /// The cluster diamond (create-cluster prints it).
    #[arg(long = "cluster", env = "ATTESTMESH_CLUSTER")]
    pub cluster: Address,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Deploy the contracts with script/Deploy.s.sol (idempotent), asserting the chain before and
    /// the deployment after.
    Deploy(Box<DeployArgs>),
    /// Run only the post-deploy assertions on an existing deployments file.
    VerifyDeployment {
        #[command(flatten)]
        chain: ChainArgs,
        #[command(flatten)]
        contracts: ContractArgs,
    },
    /// Create a cluster (CREATE2 by signer and salt; a no-op when it exists).
    CreateCluster(Box<CreateClusterArgs>),
    /// Add (or with --remove, remove) a value of one of the cluster's allowlists.
    Allow {
        #[command(flatten)]
        chain: ChainArgs,
        #[command(flatten)]
        signer: SignerArgs,
        #[command(flatten)]
        cluster: ClusterArg,
        /// Which allowlist.
        #[arg(value_enum)]
        kind: AllowKind,
        /// The value: 32-byte hex for compose-hash and device, an address for kms-root and app-id.
        value: String,
        /// Remove the value instead of adding it.
        #[arg(long)]
        remove: bool,
    },
    /// Whether any device may boot (true) or only allowlisted device ids (false).
    AllowAnyDevice {
        #[command(flatten)]
        chain: ChainArgs,
        #[command(flatten)]
        signer: SignerArgs,
        #[command(flatten)]
        cluster: ClusterArg,
        /// true or false.
        #[arg(action = ArgAction::Set, value_parser = clap::value_parser!(bool))]
        allow: bool,
    },
    /// Put a TCB advisory id (e.g. INTEL-SA-00837) on the boot gate's grace list, or take it
    /// off with --remove. The gate admits only TCB status UpToDate, with advisories from this
    /// list.
    AllowAdvisory {
        #[command(flatten)]
        chain: ChainArgs,
        #[command(flatten)]
        signer: SignerArgs,
        #[command(flatten)]
        cluster: ClusterArg,
        /// The advisory id the TEE reports.
        advisory_id: String,
        /// Take it off the grace list instead.
        #[arg(long)]
        remove: bool,
    },
    /// Pin the dstack instance id a member account (= app id) may boot as, or --unpin it.
    PinInstance {
        #[command(flatten)]
        chain: ChainArgs,
        #[command(flatten)]
        signer: SignerArgs,
        #[command(flatten)]
        cluster: ClusterArg,
        /// The member account (= dstack app id).
        app_id: Address,
        /// The only instance id it may boot as.
        #[arg(required_unless_present = "unpin", conflicts_with = "unpin")]
        instance_id: Option<Address>,
        /// Let any instance of the app id boot again.
        #[arg(long)]
        unpin: bool,
    },
    /// The member account (= dstack app id) a node will have, before it boots.
    PredictAccount {
        #[command(flatten)]
        chain: ChainArgs,
        #[command(flatten)]
        cluster: ClusterArg,
        /// The node's name; the account salt is keccak256(name).
        #[arg(long = "node-name")]
        node_name: String,
    },
    /// Deploy a node's member account (a no-op when it exists).
    CreateAccount {
        #[command(flatten)]
        chain: ChainArgs,
        #[command(flatten)]
        signer: SignerArgs,
        #[command(flatten)]
        cluster: ClusterArg,
        /// The node's name; the account salt is keccak256(name).
        #[arg(long = "node-name")]
        node_name: String,
    },
    /// Revoke a member (its id and mesh IP are never reused).
    Revoke {
        #[command(flatten)]
        chain: ChainArgs,
        #[command(flatten)]
        signer: SignerArgs,
        #[command(flatten)]
        cluster: ClusterArg,
        #[arg(long = "member-id")]
        member_id: u64,
    },
    /// Open a new CSK epoch without revoking anyone: the members rotate to a new key and keep
    /// the old one for the grace period.
    RotateCsk {
        #[command(flatten)]
        chain: ChainArgs,
        #[command(flatten)]
        signer: SignerArgs,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Set how long (seconds) the previous epoch's key stays available after a rotation, so
    /// apps can re-encrypt (at most 30 days; applies to later rotations).
    SetCskGrace {
        #[command(flatten)]
        chain: ChainArgs,
        #[command(flatten)]
        signer: SignerArgs,
        #[command(flatten)]
        cluster: ClusterArg,
        #[arg(long = "seconds")]
        seconds: u32,
    },
    /// Register an indexer endpoint and its Ed25519 public key.
    RegisterIndexer {
        #[command(flatten)]
        chain: ChainArgs,
        #[command(flatten)]
        signer: SignerArgs,
        #[command(flatten)]
        contracts: ContractArgs,
        /// Where nodes reach the indexer (e.g. https://<app id>-50051g.<gateway domain>).
        #[arg(long)]
        endpoint: String,
        /// The indexer's boot-derived Ed25519 public key (32 bytes hex; see check-indexer).
        #[arg(long = "ed25519-key")]
        ed25519_key: B256,
    },
    /// Show a cluster: members, CSK commitment, allowlists, recent message activity.
    Show {
        #[command(flatten)]
        chain: ChainArgs,
        #[command(flatten)]
        cluster: ClusterArg,
        /// How many recent blocks to count MessageSent events in (counts and blocks only).
        #[arg(long = "message-blocks", default_value_t = 10_000)]
        message_blocks: u64,
    },
    /// Assert that a live webhook route reaches the AttestMesh webhook with the expected chain
    /// and policy → cluster mapping (field note 4).
    CheckWebhook {
        /// The public URL the gas manager calls.
        #[arg(long)]
        url: Url,
        #[arg(long = "expected-chain-id")]
        expected_chain_id: u64,
        /// `<policyId>=<cluster>`; repeatable.
        #[arg(long = "expected-policy", required = true)]
        expected_policy: Vec<ExpectedPolicy>,
    },
    /// Read an indexer's boot-derived public key from its health endpoint or its logs (escape
    /// codes stripped, field note 9), optionally asserting it is registered.
    CheckIndexer(Box<CheckIndexerArgs>),
}

/// Flags of `deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    #[command(flatten)]
    pub chain: ChainArgs,
    #[command(flatten)]
    pub signer: SignerArgs,
    /// Owner of the paymaster and the indexer registry (default: the deployer).
    #[arg(long)]
    pub operator: Option<Address>,
    /// The paymaster's verifying signer, the key the gas manager signs with (default: the
    /// operator).
    #[arg(long = "sponsor-signer")]
    pub sponsor_signer: Option<Address>,
    /// Top the paymaster's EntryPoint deposit up to this many wei.
    #[arg(long = "paymaster-deposit", default_value = "0")]
    pub paymaster_deposit: U256,
    /// Refuse to start when the deployer holds less than this (plus the deposit top-up).
    #[arg(long = "min-balance-wei", default_value_t = U256::from(deploy::DEFAULT_MIN_BALANCE_WEI))]
    pub min_balance_wei: U256,
    /// The deployments file to write, inside deployments/ (default deployments/<chainId>.json).
    #[arg(long = "deployments-file")]
    pub deployments_file: Option<PathBuf>,
    /// The project root (see --help of the other commands).
    #[arg(long = "project-root", env = "ATTESTMESH_ROOT")]
    pub project_root: Option<PathBuf>,
    /// Where forge writes its broadcast records (default: the project's broadcast/).
    #[arg(long = "forge-broadcast-dir")]
    pub broadcast_dir: Option<PathBuf>,
    /// Kill forge after this many seconds.
    #[arg(long = "forge-timeout-secs", default_value_t = crate::forge::DEFAULT_FORGE_TIMEOUT.as_secs())]
    pub forge_timeout_secs: u64,
    /// The paymaster webhook's public URL (the one the gas manager calls). When given, deploy
    /// runs the check-webhook checks first and refuses to send anything on a mismatch.
    #[arg(long = "webhook-url", env = "ATTESTMESH_OPERATOR_WEBHOOK_URL")]
    pub webhook_url: Option<Url>,
    /// `<policyId>=<cluster>` the webhook must serve; repeatable (needs --webhook-url).
    #[arg(long = "webhook-policy", requires = "webhook_url")]
    pub webhook_policies: Vec<ExpectedPolicy>,
}

/// Flags of `create-cluster`.
#[derive(Debug, Args)]
pub struct CreateClusterArgs {
    #[command(flatten)]
    pub chain: ChainArgs,
    #[command(flatten)]
    pub signer: SignerArgs,
    #[command(flatten)]
    pub contracts: ContractArgs,
    /// CREATE2 salt: 32-byte hex as is, any other text hashed with keccak256.
    #[arg(long)]
    pub salt: String,
    /// The mesh network, e.g. 10.88.0.0/16 (prefix /8../30; member n gets network + n).
    #[arg(long = "mesh-cidr")]
    pub mesh_cidr: String,
    /// A dstack KMS root address to trust; repeatable.
    #[arg(long = "kms-root", num_args = 1..)]
    pub kms_roots: Vec<Address>,
    /// Read a KMS root from dstack's DstackKms contract (`kmsInfo().k256Pubkey`); on Base
    /// 0x2f83172A49584C017F2B256F0FB2Dca14126Ba9C.
    #[arg(long = "kms-root-from-dstack-kms")]
    pub kms_root_from_dstack_kms: Option<Address>,
    /// A dstack compose hash allowed to boot; repeatable.
    #[arg(long = "compose-hash", num_args = 1..)]
    pub compose_hashes: Vec<B256>,
    /// Let any device boot. Off by default: only device ids allowlisted with `allow device`
    /// may boot, so an operator opts into "any device" explicitly.
    #[arg(long = "allow-any-device")]
    pub allow_any_device: bool,
    /// The cluster's owner (default: the signer).
    #[arg(long)]
    pub owner: Option<Address>,
}

/// Flags of `check-indexer`.
#[derive(Debug, Args)]
pub struct CheckIndexerArgs {
    /// The indexer's health endpoint, e.g. https://<host>/healthz (JSON with public_key).
    #[arg(
        long = "health-url",
        conflicts_with = "log_file",
        required_unless_present = "log_file"
    )]
    pub health_url: Option<Url>,
    /// A log file of the indexer's boot (e.g. saved CVM logs, colours and all).
    #[arg(long = "log-file")]
    pub log_file: Option<PathBuf>,
    /// The log field that carries the key; repeatable (default: ed25519_public_key, public_key).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Fail unless the key is this one.
    #[arg(long = "expected-key")]
    pub expected_key: Option<B256>,
    /// The chain the indexer must follow (checked against its health answer, and the RPC's).
    #[arg(long = "expected-chain-id")]
    pub expected_chain_id: Option<u64>,
    /// Also assert the key is registered in the IndexerRegistry: the chain's RPC.
    #[arg(long = "rpc-url", requires = "expected_chain_id")]
    pub rpc_url: Option<Url>,
    /// The registered endpoint must be this one.
    #[arg(long = "endpoint", requires = "rpc_url")]
    pub endpoint: Option<String>,
    #[command(flatten)]
    pub contracts: ContractArgs,
}

/// The project root: `given` (flag or ATTESTMESH_ROOT), else the current directory when it
/// holds the project, else the tree this binary was built from.
pub fn project_root(given: Option<PathBuf>) -> PathBuf {
    if let Some(root) = given {
        return root;
    }
    if let Ok(cwd) = std::env::current_dir()
        && cwd.join("foundry.toml").is_file()
        && cwd.join("script/Deploy.s.sol").is_file()
    {
        return cwd;
    }
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    built_from.canonicalize().unwrap_or(built_from)
}
