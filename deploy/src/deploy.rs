//! The asserted deploy: check what must hold before (chain, funds, EntryPoint v0.7, the
//! deterministic deployer, the toolchain), run `script/Deploy.s.sol` (idempotent CREATE2), and
//! check what must hold after (the deployments file, code at every address, the factory's
//! EntryPoint, the paymaster's owner, signer and deposit). Field note 4: infra invariants live in
//! the routine, not in someone's memory.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::primitives::{Address, U256, address};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use attestmesh_bindings::ENTRY_POINT_V07;
use attestmesh_bindings::entry_point::EntryPoint;
use attestmesh_bindings::factory::ClusterFactory;
use attestmesh_bindings::paymaster::VerifyingPaymaster;
use attestmesh_chain::{ChainClient, ChainError};
use serde::Serialize;
use tracing::info;
use url::Url;

use crate::LOG_TARGET;
use crate::deployments::{self, Deployments};
use crate::error::{DeployError, Result};
use crate::forge::{self, ScriptRun};
use crate::webhook_check::{self, ExpectedPolicy, WebhookCheckReport};

/// The deterministic CREATE2 deployer (Arachnid's) every anvil and Base have.
pub const CREATE2_DEPLOYER: Address = address!("0x4e59b44847b379578588920cA78FbF26c0B4956C");

/// Default minimum deployer balance (0.01 ETH): a full first deployment on Base costs far less.
pub const DEFAULT_MIN_BALANCE_WEI: u128 = 10_000_000_000_000_000;

/// What to deploy, where, and with which key.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    pub rpc_url: Url,
    pub expected_chain_id: u64,
    /// Owner of the registry and paymaster (`OPERATOR`); default: the deployer.
    pub operator: Option<Address>,
    /// The paymaster's verifying signer (`SPONSOR_SIGNER`); default: the operator.
    pub sponsor_signer: Option<Address>,
    /// The paymaster's EntryPoint deposit is topped up to this (wei).
    pub paymaster_deposit: U256,
    /// The deployer must hold at least this (plus any deposit top-up) before anything is sent.
    pub min_balance: U256,
    /// The project root: foundry.toml, script/, node_modules/.
    pub root: PathBuf,
    /// The deployments file (inside deployments/); default deployments/<chainId>.json.
    pub deployments_file: Option<PathBuf>,
    /// Override of the forge binary (default: the npm native one under `root`).
    pub forge: Option<PathBuf>,
    /// Where forge writes broadcast records (default: the project's broadcast/).
    pub broadcast_dir: Option<PathBuf>,
    pub forge_timeout: Duration,
    /// The paymaster webhook's public route: when set, deploy asserts it (the `check-webhook`
    /// checks) before sending anything and fails on a mismatch (field note 4).
    pub webhook: Option<WebhookRoute>,
}

/// The webhook route a deploy asserts, and the policy → cluster routes it must serve.
#[derive(Debug, Clone)]
pub struct WebhookRoute {
    pub url: Url,
    pub expected_policies: Vec<ExpectedPolicy>,
}

impl DeployOptions {
    /// Defaults for everything but the chain and the project root.
    pub fn new(rpc_url: Url, expected_chain_id: u64, root: PathBuf) -> Self {
        Self {
            rpc_url,
            expected_chain_id,
            operator: None,
            sponsor_signer: None,
            paymaster_deposit: U256::ZERO,
            min_balance: U256::from(DEFAULT_MIN_BALANCE_WEI),
            root,
            deployments_file: None,
            forge: None,
            broadcast_dir: None,
            forge_timeout: forge::DEFAULT_FORGE_TIMEOUT,
            webhook: None,
        }
    }
}

/// What a deploy did.
#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    pub chain_id: u64,
    pub deployer: Address,
    /// Transactions the deployer sent in this run (0: everything was already in place).
    pub transactions_sent: u64,
    /// The deployments file, absolute.
    pub deployments_file: PathBuf,
    pub forge_log: PathBuf,
    pub factory_deploy_block: u64,
    pub paymaster_deposit_wei: String,
    pub deployment: Deployments,
    /// The webhook route check, when a webhook URL was given.
    pub webhook: Option<WebhookCheckReport>,
}

impl fmt::Display for DeployReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.transactions_sent == 0 {
            "nothing to do: every contract was already deployed (0 transactions)".to_string()
        } else {
            format!("{} transaction(s) sent", self.transactions_sent)
        };
        writeln!(
            f,
            "deployed on chain {} by {}: {what}",
            self.chain_id, self.deployer
        )?;
        writeln!(f, "deployments file: {}", self.deployments_file.display())?;
        writeln!(
            f,
            "factory deploy block: {} (INDEXER_START_BLOCK)",
            self.factory_deploy_block
        )?;
        writeln!(f, "paymaster deposit: {} wei", self.paymaster_deposit_wei)?;
        for (name, address) in self.deployment.contracts() {
            writeln!(f, "  {name:<20} {address}")?;
        }
        match &self.webhook {
            Some(check) => writeln!(f, "webhook route {check}")?,
            None => writeln!(
                f,
                "webhook route: not checked (pass --webhook-url to assert it on every deploy, field note 4)"
            )?,
        }
        write!(
            f,
            "checks passed: every address has code, factory and paymaster use EntryPoint v0.7 at {ENTRY_POINT_V07}"
        )
    }
}

/// Runs the whole asserted deploy.
pub async fn deploy(options: &DeployOptions, signer: PrivateKeySigner) -> Result<DeployReport> {
    let deployer = signer.address();
    let forge_path = options
        .forge
        .clone()
        .unwrap_or_else(|| forge::forge_binary(&options.root));
    check_toolchain(&options.root, &forge_path)?;
    let client = connect(
        &options.rpc_url,
        options.expected_chain_id,
        Some(signer.clone()),
    )
    .await?;
    let chain_id = client.chain_id();
    let relative = deployments::relative_to_root(
        &options.root,
        &options
            .deployments_file
            .clone()
            .unwrap_or_else(|| deployments::default_relative_path(chain_id)),
    )?;
    let deployments_path = options.root.join(&relative);

    // Before: nothing is sent unless all of these hold.
    check_chain_prerequisites(&client).await?;
    let webhook = match &options.webhook {
        Some(route) => Some(check_webhook_route(route, chain_id).await?),
        None => None,
    };
    let top_up = deposit_top_up(&client, &deployments_path, options.paymaster_deposit).await?;
    check_balance(&client, deployer, options.min_balance, top_up).await?;
    let nonce_before = nonce(&client, deployer).await?;

    let log = options
        .root
        .join(deployments::DEPLOYMENTS_DIR)
        .join(format!(
            "{}.forge.log",
            relative
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| chain_id.to_string())
        ));
    let run = ScriptRun {
        forge: forge_path,
        root: options.root.clone(),
        rpc_url: options.rpc_url.clone(),
        operator: options.operator,
        sponsor_signer: options.sponsor_signer,
        paymaster_deposit: options.paymaster_deposit,
        deployments_file: relative,
        log: log.clone(),
        broadcast_dir: options.broadcast_dir.clone(),
        timeout: options.forge_timeout,
    };
    forge::run_deploy_script(&run, &signer).await?;
    let nonce_after = nonce(&client, deployer).await?;

    // After: the file and the chain agree, and the wiring is right.
    let operator = options.operator.unwrap_or(deployer);
    let expectation = Expectation {
        operator: Some(operator),
        sponsor_signer: Some(options.sponsor_signer.unwrap_or(operator)),
        min_paymaster_deposit: options.paymaster_deposit,
    };
    let checked = verify_deployment(&client, &deployments_path, &expectation).await?;
    let report = DeployReport {
        chain_id,
        deployer,
        transactions_sent: nonce_after.saturating_sub(nonce_before),
        deployments_file: deployments_path,
        forge_log: log,
        factory_deploy_block: checked.factory_deploy_block,
        paymaster_deposit_wei: checked.paymaster_deposit.to_string(),
        deployment: checked.deployment,
        webhook,
    };
    info!(target: LOG_TARGET, chain_id, transactions = report.transactions_sent, "deploy verified");
    Ok(report)
}

/// The `check-webhook` checks on the configured route, as a precondition of the deploy: a route
/// that reaches another service, serves another chain or maps a policy elsewhere stops the
/// deploy before anything is sent (field note 4: a route once pointed at another project's
/// worker, and sponsorship failed with opaque 401s).
async fn check_webhook_route(route: &WebhookRoute, chain_id: u64) -> Result<WebhookCheckReport> {
    webhook_check::check_webhook(&route.url, chain_id, &route.expected_policies)
        .await
        .map_err(|e| {
            DeployError::precondition(
                format!("the paymaster webhook route does not check out, so nothing was sent: {e}"),
                "point the route (DNS, proxy, worker binding) at the AttestMesh webhook of this chain and fix its --policy mapping, or correct --webhook-url / --webhook-policy (field note 4)",
            )
        })
}

/// Connects, refusing an RPC that serves another chain with the advice to fix it.
pub async fn connect(
    rpc_url: &Url,
    expected_chain_id: u64,
    signer: Option<PrivateKeySigner>,
) -> Result<ChainClient> {
    let connected = match signer {
        Some(signer) => {
            ChainClient::connect_with_signer(rpc_url, signer, Some(expected_chain_id)).await
        }
        None => ChainClient::connect(rpc_url, Some(expected_chain_id)).await,
    };
    connected.map_err(|e| match e {
        ChainError::WrongChain {
            endpoint,
            expected,
            actual,
        } => DeployError::precondition(
            format!("the RPC at {endpoint} serves chain {actual}, but --expected-chain-id is {expected}"),
            format!("point --rpc-url at an RPC of chain {expected} (Base mainnet is 8453), or fix --expected-chain-id if chain {actual} is really meant"),
        ),
        ChainError::Transport { call, endpoint, source } => DeployError::precondition(
            format!("the RPC at {endpoint} did not answer {call}: {source}"),
            "check --rpc-url and that the RPC is up",
        ),
        other => other.into(),
    })
}

fn check_toolchain(root: &Path, forge: &Path) -> Result<()> {
    if !root.join("foundry.toml").is_file() || !root.join("script/Deploy.s.sol").is_file() {
        return Err(DeployError::precondition(
            format!(
                "{} is not the AttestMesh project root (no foundry.toml and script/Deploy.s.sol)",
                root.display()
            ),
            "run from the repository root, or pass --project-root (or ATTESTMESH_ROOT)",
        ));
    }
    if !forge.is_file() {
        return Err(DeployError::precondition(
            format!("the native forge binary {} is missing", forge.display()),
            "run `make deps` (npm ci) in the project root; never use node_modules/.bin/forge, whose wrapper exits 0 when forge fails",
        ));
    }
    Ok(())
}

/// EntryPoint v0.7 at its canonical address and the deterministic deployer: the deploy script
/// depends on both, and a chain without them is not Base nor a prepared devnet.
pub async fn check_chain_prerequisites(client: &ChainClient) -> Result<()> {
    let chain_id = client.chain_id();
    if !has_code(client, ENTRY_POINT_V07).await? {
        return Err(DeployError::precondition(
            format!("no EntryPoint v0.7 code at {ENTRY_POINT_V07} on chain {chain_id}"),
            "deploy to a chain that has the canonical EntryPoint v0.7 (Base has it); on a local anvil, place it first from the npm bytecode through the CREATE2 deployer (see test/deploy/deploy-on-anvil.sh)",
        ));
    }
    // v0.7 answers getUserOpHash(PackedUserOperation); v0.6 has no such function and reverts.
    let probe = EntryPoint::new(ENTRY_POINT_V07, client.provider().clone())
        .getUserOpHash(EntryPoint::PackedUserOperation::default())
        .call()
        .await;
    if let Err(e) = probe {
        return Err(DeployError::precondition(
            format!(
                "the contract at {ENTRY_POINT_V07} on chain {chain_id} does not answer EntryPoint v0.7's getUserOpHash ({})",
                client.call_error("EntryPoint.getUserOpHash", e)
            ),
            "this chain's EntryPoint is not v0.7; AttestMesh needs v0.7 at its canonical address",
        ));
    }
    if !has_code(client, CREATE2_DEPLOYER).await? {
        return Err(DeployError::precondition(
            format!(
                "the deterministic deployer {CREATE2_DEPLOYER} has no code on chain {chain_id}"
            ),
            "the deploy script creates every contract through it; use a chain that has it (Base and anvil do) or deploy it first from its presigned transaction",
        ));
    }
    Ok(())
}

async fn has_code(client: &ChainClient, address: Address) -> Result<bool> {
    let code = client
        .provider()
        .get_code_at(address)
        .await
        .map_err(|source| ChainError::Transport {
            call: "eth_getCode".into(),
            endpoint: client.endpoint().to_string(),
            source,
        })?;
    Ok(!code.is_empty())
}

async fn nonce(client: &ChainClient, account: Address) -> Result<u64> {
    client
        .provider()
        .get_transaction_count(account)
        .await
        .map_err(|source| {
            ChainError::Transport {
                call: "eth_getTransactionCount".into(),
                endpoint: client.endpoint().to_string(),
                source,
            }
            .into()
        })
}

/// How much the script will add to the paymaster's deposit: the requested amount less what a
/// previous deployment (recorded in `path`) already holds.
async fn deposit_top_up(client: &ChainClient, path: &Path, requested: U256) -> Result<U256> {
    if requested.is_zero() || !path.is_file() {
        return Ok(requested);
    }
    let Ok(previous) = Deployments::read(path) else {
        return Ok(requested);
    };
    if previous.chain_id != client.chain_id()
        || !has_code(client, previous.verifying_paymaster).await?
    {
        return Ok(requested);
    }
    let held = EntryPoint::new(ENTRY_POINT_V07, client.provider().clone())
        .balanceOf(previous.verifying_paymaster)
        .call()
        .await
        .map_err(|e| client.call_error("EntryPoint.balanceOf", e))?;
    Ok(requested.saturating_sub(held))
}

async fn check_balance(
    client: &ChainClient,
    deployer: Address,
    min_balance: U256,
    top_up: U256,
) -> Result<()> {
    let balance = client
        .provider()
        .get_balance(deployer)
        .await
        .map_err(|source| ChainError::Transport {
            call: "eth_getBalance".into(),
            endpoint: client.endpoint().to_string(),
            source,
        })?;
    let needed = min_balance.saturating_add(top_up);
    if balance < needed {
        return Err(DeployError::precondition(
            format!(
                "the deployer {deployer} holds {balance} wei on chain {}, below the {needed} wei needed (minimum {min_balance} + paymaster deposit top-up {top_up})",
                client.chain_id()
            ),
            "fund the deployer, or lower --min-balance-wei / --paymaster-deposit if you are sure",
        ));
    }
    Ok(())
}

/// What the deployment must look like beyond "code everywhere".
#[derive(Debug, Clone, Default)]
pub struct Expectation {
    /// Owner of the paymaster and the indexer registry.
    pub operator: Option<Address>,
    /// The paymaster's verifying signer.
    pub sponsor_signer: Option<Address>,
    pub min_paymaster_deposit: U256,
}

/// A deployment that passed [`verify_deployment`].
#[derive(Debug, Clone, Serialize)]
pub struct VerifiedDeployment {
    pub deployment: Deployments,
    pub factory_deploy_block: u64,
    pub paymaster_deposit: U256,
}

impl fmt::Display for VerifiedDeployment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "deployment on chain {} verified: every recorded address has code, EntryPoint v0.7 wired",
            self.deployment.chain_id
        )?;
        writeln!(f, "factory deploy block: {}", self.factory_deploy_block)?;
        writeln!(f, "paymaster deposit: {} wei", self.paymaster_deposit)?;
        let contracts = self.deployment.contracts();
        for (i, (name, address)) in contracts.iter().enumerate() {
            write!(f, "  {name:<20} {address}")?;
            if i + 1 < contracts.len() {
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

/// The post-deploy assertions on the file at `path` against the chain `client` serves.
pub async fn verify_deployment(
    client: &ChainClient,
    path: &Path,
    expect: &Expectation,
) -> Result<VerifiedDeployment> {
    let chain_id = client.chain_id();
    if !path.is_file() {
        return Err(DeployError::postcondition(
            format!("the deployments file {} does not exist", path.display()),
            "the deploy script did not write it: read the forge log, and check DEPLOYMENTS_FILE is inside deployments/",
        ));
    }
    let deployment = Deployments::read(path)?;
    if deployment.chain_id != chain_id {
        return Err(DeployError::postcondition(
            format!(
                "{} records chain {}, but the RPC serves chain {chain_id}",
                path.display(),
                deployment.chain_id
            ),
            "the file belongs to another chain: pass that chain's RPC, or deploy to this one with its own file (deployments/<chainId>.json)",
        ));
    }
    let mut missing = Vec::new();
    for (name, address) in deployment.contracts() {
        if !has_code(client, address).await? {
            missing.push(format!("{name} {address}"));
        }
    }
    if !missing.is_empty() {
        return Err(DeployError::postcondition(
            format!(
                "no code on chain {chain_id} at {} recorded in {}",
                missing.join(", "),
                path.display()
            ),
            "the file is stale or from a reset chain: rerun `attestmesh-operator deploy` (idempotent) to deploy what is missing",
        ));
    }
    if deployment.entry_point != ENTRY_POINT_V07 {
        return Err(DeployError::postcondition(
            format!(
                "{} records EntryPoint {}, not the canonical v0.7 {ENTRY_POINT_V07}",
                path.display(),
                deployment.entry_point
            ),
            "redeploy with the project's script/Deploy.s.sol",
        ));
    }
    let factory = ClusterFactory::new(deployment.cluster_factory, client.provider().clone());
    let factory_entry_point = factory
        .entryPoint()
        .call()
        .await
        .map_err(|e| client.call_error("ClusterFactory.entryPoint", e))?;
    if factory_entry_point != ENTRY_POINT_V07 {
        return Err(DeployError::postcondition(
            format!(
                "the factory {} uses EntryPoint {factory_entry_point}, not the canonical v0.7 {ENTRY_POINT_V07}",
                deployment.cluster_factory
            ),
            "member accounts would be bound to the wrong EntryPoint: redeploy with the project's script",
        ));
    }
    let deploy_block = factory
        .deployBlock()
        .call()
        .await
        .map_err(|e| client.call_error("ClusterFactory.deployBlock", e))?;
    let factory_deploy_block = u64::try_from(deploy_block)
        .ok()
        .filter(|block| *block > 0)
        .ok_or_else(|| {
            DeployError::postcondition(
                format!("the factory reports deploy block {deploy_block}"),
                "the indexer starts from it (field note 8); redeploy with the project's script",
            )
        })?;

    let paymaster =
        VerifyingPaymaster::new(deployment.verifying_paymaster, client.provider().clone());
    let paymaster_entry_point = paymaster
        .entryPoint()
        .call()
        .await
        .map_err(|e| client.call_error("VerifyingPaymaster.entryPoint", e))?;
    if paymaster_entry_point != ENTRY_POINT_V07 {
        return Err(DeployError::postcondition(
            format!("the paymaster uses EntryPoint {paymaster_entry_point}, not {ENTRY_POINT_V07}"),
            "redeploy with the project's script",
        ));
    }
    if let Some(expected) = expect.operator {
        let owner = paymaster
            .owner()
            .call()
            .await
            .map_err(|e| client.call_error("VerifyingPaymaster.owner", e))?;
        if owner != expected {
            return Err(DeployError::postcondition(
                format!(
                    "the paymaster {} is owned by {owner}, not the operator {expected}",
                    deployment.verifying_paymaster
                ),
                "pass the --operator the deployment was made with",
            ));
        }
    }
    if let Some(expected) = expect.sponsor_signer {
        let signer = paymaster
            .verifyingSigner()
            .call()
            .await
            .map_err(|e| client.call_error("VerifyingPaymaster.verifyingSigner", e))?;
        if signer != expected {
            return Err(DeployError::postcondition(
                format!("the paymaster's verifying signer is {signer}, not {expected}"),
                "the gas manager must sign with the paymaster's verifying signer: pass the --sponsor-signer the deployment was made with",
            ));
        }
    }
    let paymaster_deposit = paymaster
        .getDeposit()
        .call()
        .await
        .map_err(|e| client.call_error("VerifyingPaymaster.getDeposit", e))?;
    if paymaster_deposit < expect.min_paymaster_deposit {
        return Err(DeployError::postcondition(
            format!(
                "the paymaster's EntryPoint deposit is {paymaster_deposit} wei, below the requested {} wei",
                expect.min_paymaster_deposit
            ),
            "rerun deploy with --paymaster-deposit to top it up",
        ));
    }
    Ok(VerifiedDeployment {
        deployment,
        factory_deploy_block,
        paymaster_deposit,
    })
}
