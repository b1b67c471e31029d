//! Cluster administration, as the operator does it: create a cluster, edit its allowlists,
//! predict and create member accounts (a node's account is its dstack app id, known before it
//! boots), revoke members, register indexers, and show a cluster's state. Every write checks
//! first what would make it fail (the signer is not the owner, the cluster is not there, an
//! empty KMS root list) and says so, and a write that would change nothing is not sent.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use alloy::primitives::{Address, B256, keccak256};
use alloy::rpc::types::Filter;
use alloy::sol_types::{SolCall, SolEvent};
use attestmesh_bindings::cluster::Cluster;
use attestmesh_bindings::factory::ClusterFactory::{self, ClusterConfig};
use attestmesh_bindings::indexer_registry::IndexerRegistry;
use attestmesh_chain::ChainClient;
use serde::Serialize;
use tracing::info;

use crate::LOG_TARGET;
use crate::error::{DeployError, Result};

/// Largest block range asked of `eth_getLogs` at once (hosted RPCs cap ranges).
pub const LOG_RANGE: u64 = 2_000;

/// The CREATE2 salt of a node's member account: keccak256 of its name (the devnet and the
/// operator agree on it, so `predict-account` names the same account the devnet creates).
pub fn member_salt(node_name: &str) -> B256 {
    keccak256(node_name.as_bytes())
}

/// A salt given on the command line: 32 bytes of hex as is, any other text hashed.
pub fn parse_salt(text: &str) -> B256 {
    match B256::from_str(text) {
        Ok(salt) if text.starts_with("0x") => salt,
        _ => keccak256(text.as_bytes()),
    }
}

/// The cluster's mesh CIDR, e.g. `10.88.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub network: Ipv4Addr,
    pub prefix_length: u8,
}

impl FromStr for Cidr {
    type Err = DeployError;

    fn from_str(text: &str) -> Result<Self> {
        let bad =
            |problem: String| DeployError::input("--mesh-cidr", format!("{text:?}: {problem}"));
        let (ip, prefix) = text
            .split_once('/')
            .ok_or_else(|| bad("expected <IPv4 network>/<prefix>, e.g. 10.88.0.0/16".into()))?;
        let network: Ipv4Addr = ip
            .parse()
            .map_err(|e| bad(format!("{ip:?} is not an IPv4 address ({e})")))?;
        let prefix_length: u8 = prefix
            .parse()
            .map_err(|e| bad(format!("{prefix:?} is not a prefix length ({e})")))?;
        if !(8..=30).contains(&prefix_length) {
            return Err(bad(format!(
                "prefix /{prefix_length} is outside /8../30 (the contract's bounds)"
            )));
        }
        let host_mask = u32::MAX >> prefix_length;
        if u32::from(network) & host_mask != 0 {
            let base = Ipv4Addr::from(u32::from(network) & !host_mask);
            return Err(bad(format!(
                "host bits are set; the network address is {base}/{prefix_length}"
            )));
        }
        Ok(Self {
            network,
            prefix_length,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_length)
    }
}

/// A chain client and, for writes, the address that signs.
#[derive(Debug, Clone)]
pub struct Operator {
    pub client: ChainClient,
    /// `None` for read-only commands.
    pub sender: Option<Address>,
}

impl Operator {
    fn sender(&self) -> Result<Address> {
        self.sender.ok_or_else(|| {
            DeployError::input(
                "signer",
                "this command sends transactions: pass --private-key-file <path> or --private-key-env <VAR>",
            )
        })
    }

    async fn require_contract(&self, what: &str, address: Address, advice: &str) -> Result<()> {
        self.client
            .require_code(what, address)
            .await
            .map_err(|e| match e {
                attestmesh_chain::ChainError::NoCode { .. } => DeployError::precondition(
                    format!("no {what} at {address} on chain {}", self.client.chain_id()),
                    advice.to_string(),
                ),
                other => other.into(),
            })
    }

    async fn require_factory(&self, factory: Address) -> Result<()> {
        self.require_contract(
            "ClusterFactory",
            factory,
            "deploy first (`attestmesh-operator deploy`) or pass the right --deployments / --factory",
        )
        .await
    }

    async fn require_cluster(&self, cluster: Address) -> Result<()> {
        self.require_contract(
            "cluster",
            cluster,
            "check --cluster (the address create-cluster printed) and the chain",
        )
        .await?;
        self.client
            .cluster(cluster)
            .meshConfig()
            .call()
            .await
            .map_err(|e| {
                DeployError::precondition(
                    format!(
                        "{cluster} does not answer the cluster's meshConfig() ({})",
                        self.client.call_error("Cluster.meshConfig", e)
                    ),
                    "it is not an AttestMesh cluster diamond: check --cluster",
                )
            })?;
        Ok(())
    }

    /// The signer must own the cluster: every allowlist edit and revocation is owner-only.
    async fn require_owner(&self, cluster: Address) -> Result<Address> {
        let sender = self.sender()?;
        self.require_cluster(cluster).await?;
        let owner = self
            .client
            .cluster(cluster)
            .owner()
            .call()
            .await
            .map_err(|e| self.client.call_error("Cluster.owner", e))?;
        if owner != sender {
            return Err(DeployError::precondition(
                format!("the signer {sender} is not the owner {owner} of cluster {cluster}"),
                "sign with the owner's key (--private-key-file / --private-key-env)",
            ));
        }
        Ok(sender)
    }

    async fn factory_of(&self, cluster: Address) -> Result<Address> {
        self.require_cluster(cluster).await?;
        self.client
            .cluster(cluster)
            .clusterFactory()
            .call()
            .await
            .map_err(|e| self.client.call_error("Cluster.clusterFactory", e).into())
    }
}

/// What `create-cluster` asks for.
#[derive(Debug, Clone)]
pub struct NewCluster {
    pub salt: B256,
    pub cidr: Cidr,
    pub kms_roots: Vec<Address>,
    pub compose_hashes: Vec<B256>,
    pub allow_any_device: bool,
    /// Default: the signer.
    pub owner: Option<Address>,
}

/// The outcome of `create-cluster`.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterCreated {
    pub cluster: Address,
    /// False when a cluster already existed at the predicted address (nothing was sent).
    pub created: bool,
    pub owner: Address,
    pub salt: B256,
    pub mesh_cidr: String,
    pub kms_roots: Vec<Address>,
    pub compose_hashes: Vec<B256>,
    pub allow_any_device: bool,
}

impl fmt::Display for ClusterCreated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.created {
            writeln!(f, "cluster created: {}", self.cluster)?;
        } else {
            writeln!(
                f,
                "cluster already exists at {} for this creator and salt: nothing sent (use `allow` to change its allowlists)",
                self.cluster
            )?;
        }
        writeln!(f, "owner: {}", self.owner)?;
        writeln!(f, "mesh: {}", self.mesh_cidr)?;
        writeln!(f, "KMS roots: {}", join(&self.kms_roots))?;
        writeln!(f, "compose hashes: {}", join(&self.compose_hashes))?;
        write!(f, "any device may boot: {}", self.allow_any_device)
    }
}

/// Creates a cluster through `factory` (CREATE2 by signer and salt). Refuses an empty KMS root
/// list before sending: such a cluster could never register a node.
pub async fn create_cluster(
    op: &Operator,
    factory: Address,
    request: NewCluster,
) -> Result<ClusterCreated> {
    let sender = op.sender()?;
    if request.kms_roots.is_empty() {
        return Err(DeployError::precondition(
            "no KMS root given: a cluster must trust at least one dstack KMS root, or no node can ever register",
            format!(
                "pass --kms-root <address> (repeatable), or --kms-root-from-dstack-kms <DstackKms address> to read it from dstack's contract (on Base: {})",
                crate::dstack_kms::DSTACK_KMS_BASE
            ),
        ));
    }
    if request.kms_roots.contains(&Address::ZERO) {
        return Err(DeployError::input(
            "--kms-root",
            "the zero address is not a KMS root",
        ));
    }
    op.require_factory(factory).await?;
    let owner = request.owner.unwrap_or(sender);
    let instance = ClusterFactory::new(factory, op.client.provider().clone());
    let cluster = instance
        .predictClusterAddress(sender, request.salt)
        .call()
        .await
        .map_err(|e| {
            op.client
                .call_error("ClusterFactory.predictClusterAddress", e)
        })?;
    let mut report = ClusterCreated {
        cluster,
        created: false,
        owner,
        salt: request.salt,
        mesh_cidr: request.cidr.to_string(),
        kms_roots: request.kms_roots.clone(),
        compose_hashes: request.compose_hashes.clone(),
        allow_any_device: request.allow_any_device,
    };
    if op.client.require_code("cluster", cluster).await.is_ok() {
        // Report what is on chain, not what was asked.
        let view = show(op, cluster, 1).await?;
        report.owner = view.owner;
        report.mesh_cidr = view.mesh.cidr;
        report.kms_roots = view.allowlists.kms_roots;
        report.compose_hashes = view.allowlists.compose_hashes;
        report.allow_any_device = view.allowlists.allow_any_device;
        return Ok(report);
    }
    let config = ClusterConfig {
        owner,
        meshNetwork: u32::from(request.cidr.network),
        meshPrefixLength: request.cidr.prefix_length,
        kmsRoots: request.kms_roots,
        composeHashes: request.compose_hashes,
        allowAnyDevice: request.allow_any_device,
    };
    let data = ClusterFactory::createClusterCall {
        salt: request.salt,
        config,
    }
    .abi_encode();
    op.client
        .send_transaction("ClusterFactory.createCluster", factory, data.into())
        .await?;
    op.require_cluster(cluster).await?;
    info!(target: LOG_TARGET, %cluster, %owner, "cluster created");
    report.created = true;
    Ok(report)
}

/// The allowlists `allow` edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AllowKind {
    /// A dstack compose hash (32 bytes) allowed to boot.
    ComposeHash,
    /// A dstack device id (32 bytes) allowed to boot (when not any device may).
    Device,
    /// A dstack KMS root address whose signature chains are accepted.
    KmsRoot,
    /// A member account (= dstack app id) allowed to register.
    AppId,
}

impl fmt::Display for AllowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AllowKind::ComposeHash => "compose hash",
            AllowKind::Device => "device",
            AllowKind::KmsRoot => "KMS root",
            AllowKind::AppId => "app id",
        })
    }
}

/// The outcome of `allow` and `allow-any-device`.
#[derive(Debug, Clone, Serialize)]
pub struct AllowReport {
    pub cluster: Address,
    pub kind: String,
    pub value: String,
    pub allowed: bool,
    /// False when it already was in that state (nothing was sent).
    pub changed: bool,
}

impl fmt::Display for AllowReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.allowed {
            "allowed"
        } else {
            "not allowed"
        };
        if self.changed {
            write!(
                f,
                "{} {} is now {state} in cluster {}",
                self.kind, self.value, self.cluster
            )
        } else {
            write!(
                f,
                "{} {} was already {state} in cluster {}: nothing sent",
                self.kind, self.value, self.cluster
            )
        }
    }
}

/// Adds (`allowed`) or removes a value of one allowlist.
pub async fn allow(
    op: &Operator,
    cluster: Address,
    kind: AllowKind,
    value: &str,
    allowed: bool,
) -> Result<AllowReport> {
    op.require_owner(cluster).await?;
    let instance = op.client.cluster(cluster);
    let (current, call, data, shown) = match kind {
        AllowKind::ComposeHash | AllowKind::Device => {
            let word = B256::from_str(value).map_err(|_| {
                DeployError::input(
                    kind.to_string(),
                    format!("{value:?} is not 32 bytes of hex"),
                )
            })?;
            if word == B256::ZERO {
                return Err(DeployError::input(
                    kind.to_string(),
                    "the zero hash is not allowed",
                ));
            }
            if kind == AllowKind::ComposeHash {
                let list = instance
                    .composeHashes()
                    .call()
                    .await
                    .map_err(|e| op.client.call_error("Cluster.composeHashes", e))?;
                let data = Cluster::setComposeHashAllowedCall {
                    composeHash: word,
                    allowed,
                }
                .abi_encode();
                (
                    list.contains(&word),
                    "Cluster.setComposeHashAllowed",
                    data,
                    word.to_string(),
                )
            } else {
                let list = instance
                    .deviceIds()
                    .call()
                    .await
                    .map_err(|e| op.client.call_error("Cluster.deviceIds", e))?;
                let data = Cluster::setDeviceAllowedCall {
                    deviceId: word,
                    allowed,
                }
                .abi_encode();
                (
                    list.contains(&word),
                    "Cluster.setDeviceAllowed",
                    data,
                    word.to_string(),
                )
            }
        }
        AllowKind::KmsRoot | AllowKind::AppId => {
            let address = Address::from_str(value).map_err(|_| {
                DeployError::input(kind.to_string(), format!("{value:?} is not an address"))
            })?;
            if address == Address::ZERO {
                return Err(DeployError::input(
                    kind.to_string(),
                    "the zero address is not allowed",
                ));
            }
            if kind == AllowKind::KmsRoot {
                let current = instance
                    .isKmsRootAllowed(address)
                    .call()
                    .await
                    .map_err(|e| op.client.call_error("Cluster.isKmsRootAllowed", e))?;
                if current && !allowed {
                    let roots = instance
                        .kmsRoots()
                        .call()
                        .await
                        .map_err(|e| op.client.call_error("Cluster.kmsRoots", e))?;
                    if roots.len() == 1 {
                        return Err(DeployError::precondition(
                            format!("{address} is the cluster's only KMS root"),
                            "allow the new KMS root first, then remove this one (a cluster without a KMS root can register no node)",
                        ));
                    }
                }
                let data = Cluster::setKmsRootAllowedCall {
                    kmsRoot: address,
                    allowed,
                }
                .abi_encode();
                (
                    current,
                    "Cluster.setKmsRootAllowed",
                    data,
                    address.to_string(),
                )
            } else {
                let current = instance
                    .isAppIdAllowed(address)
                    .call()
                    .await
                    .map_err(|e| op.client.call_error("Cluster.isAppIdAllowed", e))?;
                let data = Cluster::setAppIdAllowedCall {
                    appId: address,
                    allowed,
                }
                .abi_encode();
                (
                    current,
                    "Cluster.setAppIdAllowed",
                    data,
                    address.to_string(),
                )
            }
        }
    };
    let changed = current != allowed;
    if changed {
        op.client
            .send_transaction(call, cluster, data.into())
            .await?;
        info!(target: LOG_TARGET, %cluster, %kind, value = %shown, allowed, "allowlist changed");
    }
    Ok(AllowReport {
        cluster,
        kind: kind.to_string(),
        value: shown,
        allowed,
        changed,
    })
}

/// Whether any device may boot (otherwise only allowlisted device ids).
pub async fn set_allow_any_device(
    op: &Operator,
    cluster: Address,
    allow: bool,
) -> Result<AllowReport> {
    op.require_owner(cluster).await?;
    let current = op
        .client
        .cluster(cluster)
        .allowAnyDevice()
        .call()
        .await
        .map_err(|e| op.client.call_error("Cluster.allowAnyDevice", e))?;
    let changed = current != allow;
    if changed {
        let data = Cluster::setAllowAnyDeviceCall { allowAny: allow }.abi_encode();
        op.client
            .send_transaction("Cluster.setAllowAnyDevice", cluster, data.into())
            .await?;
    }
    Ok(AllowReport {
        cluster,
        kind: "any device".into(),
        value: "(every device id)".into(),
        allowed: allow,
        changed,
    })
}

/// Puts a TCB advisory id (e.g. `INTEL-SA-00837`) on the boot gate's grace list (`allowed`) or
/// takes it off. The boot gate refuses a TEE whose TCB status is not UpToDate, and one reporting
/// an advisory that is not on this list.
pub async fn allow_advisory(
    op: &Operator,
    cluster: Address,
    advisory_id: &str,
    allowed: bool,
) -> Result<AllowReport> {
    let advisory_id = advisory_id.trim();
    if advisory_id.is_empty() {
        return Err(DeployError::input(
            "advisory id",
            "it is empty; pass the id the TEE reports, e.g. INTEL-SA-00837",
        ));
    }
    if advisory_id
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(DeployError::input(
            "advisory id",
            format!("{advisory_id:?} contains whitespace; pass one id, e.g. INTEL-SA-00837"),
        ));
    }
    op.require_owner(cluster).await?;
    let current = op
        .client
        .cluster(cluster)
        .isAdvisoryAllowed(advisory_id.to_string())
        .call()
        .await
        .map_err(|e| op.client.call_error("Cluster.isAdvisoryAllowed", e))?;
    let changed = current != allowed;
    if changed {
        let data = Cluster::setAdvisoryAllowedCall {
            advisoryId: advisory_id.to_string(),
            allowed,
        }
        .abi_encode();
        op.client
            .send_transaction("Cluster.setAdvisoryAllowed", cluster, data.into())
            .await?;
        info!(target: LOG_TARGET, %cluster, advisory_id, allowed, "TCB advisory grace list changed");
    }
    Ok(AllowReport {
        cluster,
        kind: "TCB advisory".into(),
        value: advisory_id.to_string(),
        allowed,
        changed,
    })
}

/// The outcome of `pin-instance`.
#[derive(Debug, Clone, Serialize)]
pub struct PinReport {
    pub cluster: Address,
    /// The member account (= dstack app id).
    pub app_id: Address,
    /// The one instance id it may boot as; `None`: any instance.
    pub instance_id: Option<Address>,
    /// False when it was already so (nothing was sent).
    pub changed: bool,
    /// Whether the app id is allowlisted (a pin on an app id that may not register is inert).
    pub app_id_allowed: bool,
}

impl fmt::Display for PinReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.instance_id {
            Some(instance) => format!("may boot only as instance {instance}"),
            None => "may boot as any instance".into(),
        };
        if self.changed {
            write!(
                f,
                "app id {} {state} in cluster {}",
                self.app_id, self.cluster
            )?;
        } else {
            write!(
                f,
                "app id {} already {state} in cluster {}: nothing sent",
                self.app_id, self.cluster
            )?;
        }
        if !self.app_id_allowed {
            write!(
                f,
                " (note: the app id is not allowlisted; `allow app-id` it)"
            )?;
        }
        Ok(())
    }
}

/// Pins the dstack instance id a member account (= app id) may boot as, or with `None` unpins
/// it. The boot gate refuses any other instance of that app id.
pub async fn pin_instance(
    op: &Operator,
    cluster: Address,
    app_id: Address,
    instance_id: Option<Address>,
) -> Result<PinReport> {
    if app_id == Address::ZERO {
        return Err(DeployError::input(
            "app id",
            "the zero address is not an app id",
        ));
    }
    if instance_id == Some(Address::ZERO) {
        return Err(DeployError::input(
            "instance id",
            "the zero address means \"any instance\": use --unpin",
        ));
    }
    op.require_owner(cluster).await?;
    let instance = op.client.cluster(cluster);
    let current = instance
        .pinnedInstance(app_id)
        .call()
        .await
        .map_err(|e| op.client.call_error("Cluster.pinnedInstance", e))?;
    let app_id_allowed = instance
        .isAppIdAllowed(app_id)
        .call()
        .await
        .map_err(|e| op.client.call_error("Cluster.isAppIdAllowed", e))?;
    let target = instance_id.unwrap_or(Address::ZERO);
    let changed = current != target;
    if changed {
        let data = Cluster::setInstancePinnedCall {
            appId: app_id,
            instanceId: target,
        }
        .abi_encode();
        op.client
            .send_transaction("Cluster.setInstancePinned", cluster, data.into())
            .await?;
        info!(target: LOG_TARGET, %cluster, %app_id, instance = %target, "instance pin changed");
    }
    Ok(PinReport {
        cluster,
        app_id,
        instance_id,
        changed,
        app_id_allowed,
    })
}

/// A node's member account: predicted, and whether it is deployed and allowlisted.
#[derive(Debug, Clone, Serialize)]
pub struct AccountReport {
    pub cluster: Address,
    pub node_name: String,
    pub salt: B256,
    /// The member account = the node's dstack app id.
    pub account: Address,
    pub deployed: bool,
    pub app_id_allowed: bool,
    /// True when this run deployed it.
    pub created: bool,
}

impl fmt::Display for AccountReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "node {:?} in cluster {}: member account {} (its dstack app id)",
            self.node_name, self.cluster, self.account
        )?;
        let deployed = match (self.created, self.deployed) {
            (true, _) => "deployed now",
            (false, true) => "already deployed",
            (false, false) => "not deployed yet (create-account deploys it)",
        };
        writeln!(f, "account: {deployed}")?;
        if self.app_id_allowed {
            write!(f, "app id: allowlisted")
        } else {
            write!(
                f,
                "app id: NOT allowlisted; the node cannot register until you run: attestmesh-operator allow app-id {} --cluster {}",
                self.account, self.cluster
            )
        }
    }
}

async fn account_report(
    op: &Operator,
    cluster: Address,
    node_name: &str,
) -> Result<(AccountReport, Address)> {
    if node_name.is_empty() {
        return Err(DeployError::input(
            "--node-name",
            "empty; the account salt is keccak256(node name)",
        ));
    }
    let factory = op.factory_of(cluster).await?;
    let salt = member_salt(node_name);
    let account = ClusterFactory::new(factory, op.client.provider().clone())
        .predictMemberAccount(cluster, salt)
        .call()
        .await
        .map_err(|e| {
            op.client
                .call_error("ClusterFactory.predictMemberAccount", e)
        })?;
    let deployed = op
        .client
        .require_code("member account", account)
        .await
        .is_ok();
    let app_id_allowed = op
        .client
        .cluster(cluster)
        .isAppIdAllowed(account)
        .call()
        .await
        .map_err(|e| op.client.call_error("Cluster.isAppIdAllowed", e))?;
    Ok((
        AccountReport {
            cluster,
            node_name: node_name.to_string(),
            salt,
            account,
            deployed,
            app_id_allowed,
            created: false,
        },
        factory,
    ))
}

/// The CREATE2 address of `node_name`'s member account (its dstack app id), before it boots.
pub async fn predict_account(
    op: &Operator,
    cluster: Address,
    node_name: &str,
) -> Result<AccountReport> {
    Ok(account_report(op, cluster, node_name).await?.0)
}

/// Deploys `node_name`'s member account (a no-op when it exists).
pub async fn create_account(
    op: &Operator,
    cluster: Address,
    node_name: &str,
) -> Result<AccountReport> {
    op.sender()?;
    let (mut report, factory) = account_report(op, cluster, node_name).await?;
    if !report.deployed {
        let data = ClusterFactory::createMemberAccountCall {
            cluster,
            salt: report.salt,
        }
        .abi_encode();
        op.client
            .send_transaction("ClusterFactory.createMemberAccount", factory, data.into())
            .await?;
        op.client
            .require_code("member account", report.account)
            .await?;
        report.deployed = true;
        report.created = true;
        info!(target: LOG_TARGET, %cluster, account = %report.account, node = node_name, "member account created");
    }
    Ok(report)
}

/// The outcome of `rotate-csk` and `set-csk-grace`: the cluster's CSK epoch afterwards.
#[derive(Debug, Clone, Serialize)]
pub struct CskReport {
    pub cluster: Address,
    /// What was done, in words.
    pub action: String,
    pub csk: CskEpochView,
}

impl fmt::Display for CskReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} in cluster {}: CSK epoch {} (originator member {}), grace period {} s",
            self.action, self.cluster, self.csk.epoch, self.csk.originator, self.csk.grace_seconds
        )
    }
}

/// Opens a new CSK epoch without revoking anyone: the current epoch's lowest active member
/// derives and commits a new key; members keep the old one for the grace period.
pub async fn rotate_csk(op: &Operator, cluster: Address) -> Result<CskReport> {
    op.require_owner(cluster).await?;
    let before = op.client.current_csk_epoch(cluster).await?;
    let data = Cluster::rotateClusterSharedKeyCall {}.abi_encode();
    op.client
        .send_transaction("Cluster.rotateClusterSharedKey", cluster, data.into())
        .await?;
    info!(target: LOG_TARGET, %cluster, from = before.epoch, "CSK epoch rotated");
    Ok(CskReport {
        cluster,
        action: format!("CSK rotated from epoch {}", before.epoch),
        csk: csk_epoch_view(&op.client, cluster).await?,
    })
}

/// Sets how long the previous epoch's key stays available after the next commitment.
pub async fn set_csk_grace(op: &Operator, cluster: Address, seconds: u32) -> Result<CskReport> {
    const MAX_GRACE_SECONDS: u32 = 30 * 24 * 3600;
    if seconds > MAX_GRACE_SECONDS {
        return Err(DeployError::input(
            "--seconds",
            format!(
                "{seconds} s is longer than the contract's maximum of 30 days ({MAX_GRACE_SECONDS} s)"
            ),
        ));
    }
    op.require_owner(cluster).await?;
    let data = Cluster::setCskGracePeriodCall {
        graceSeconds: seconds,
    }
    .abi_encode();
    op.client
        .send_transaction("Cluster.setCskGracePeriod", cluster, data.into())
        .await?;
    info!(target: LOG_TARGET, %cluster, seconds, "CSK grace period set");
    Ok(CskReport {
        cluster,
        action: format!("CSK grace period set to {seconds} s"),
        csk: csk_epoch_view(&op.client, cluster).await?,
    })
}

/// The cluster's current CSK epoch and grace period, as `show` prints them.
async fn csk_epoch_view(c: &ChainClient, cluster: Address) -> Result<CskEpochView> {
    let epoch = c.current_csk_epoch(cluster).await?;
    let grace_seconds = c
        .cluster(cluster)
        .cskGracePeriod()
        .call()
        .await
        .map_err(|e| c.call_error("Cluster.cskGracePeriod", e))?;
    let in_grace = epoch.previousKeyUntil != 0;
    Ok(CskEpochView {
        epoch: epoch.epoch,
        originator: epoch.originator,
        revoked_member: epoch.revokedMember,
        commitment: (!epoch.commitment.is_zero()).then_some(epoch.commitment),
        previous_epoch: in_grace.then_some(epoch.previousEpoch),
        previous_key_until: in_grace.then_some(epoch.previousKeyUntil),
        grace_seconds,
    })
}

/// The outcome of `revoke`.
#[derive(Debug, Clone, Serialize)]
pub struct RevokeReport {
    pub cluster: Address,
    pub member_id: u64,
    pub account: Address,
    /// False when it was already revoked (nothing sent).
    pub changed: bool,
}

impl fmt::Display for RevokeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changed {
            write!(
                f,
                "member {} ({}) revoked in cluster {}; its id and mesh IP are retired for good, and \
                 a new CSK epoch opened (the other members rotate to a key it never gets)",
                self.member_id, self.account, self.cluster
            )
        } else {
            write!(
                f,
                "member {} ({}) was already revoked: nothing sent",
                self.member_id, self.account
            )
        }
    }
}

/// Revokes member `member_id`.
pub async fn revoke(op: &Operator, cluster: Address, member_id: u64) -> Result<RevokeReport> {
    op.require_owner(cluster).await?;
    let instance = op.client.cluster(cluster);
    let count = instance
        .memberCount()
        .call()
        .await
        .map_err(|e| op.client.call_error("Cluster.memberCount", e))?;
    if member_id == 0 || member_id > count {
        return Err(DeployError::input(
            "--member-id",
            format!(
                "cluster {cluster} has members 1..={count}; there is no member {member_id} (see `show`)"
            ),
        ));
    }
    let member = instance
        .getMember(member_id)
        .call()
        .await
        .map_err(|e| op.client.call_error("Cluster.getMember", e))?;
    let changed = member.status == MEMBER_ACTIVE;
    if changed {
        let data = Cluster::revokeMemberCall {
            memberId: member_id,
        }
        .abi_encode();
        op.client
            .send_transaction("Cluster.revokeMember", cluster, data.into())
            .await?;
        info!(target: LOG_TARGET, %cluster, member_id, "member revoked");
    }
    Ok(RevokeReport {
        cluster,
        member_id,
        account: member.account,
        changed,
    })
}

/// The outcome of `register-indexer`.
#[derive(Debug, Clone, Serialize)]
pub struct IndexerReport {
    pub registry: Address,
    pub indexer_id: u64,
    pub endpoint: String,
    pub ed25519_public_key: B256,
    /// False when the same endpoint and key were already registered (nothing sent).
    pub changed: bool,
}

impl fmt::Display for IndexerReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.changed {
            "registered"
        } else {
            "already registered (nothing sent)"
        };
        write!(
            f,
            "indexer {} {what} in {}: {} with Ed25519 key {}",
            self.indexer_id, self.registry, self.endpoint, self.ed25519_public_key
        )
    }
}

/// Registers an indexer endpoint and its Ed25519 key (a no-op when that pair is active).
pub async fn register_indexer(
    op: &Operator,
    registry: Address,
    endpoint: &str,
    ed25519_public_key: B256,
) -> Result<IndexerReport> {
    let sender = op.sender()?;
    if endpoint.trim().is_empty() {
        return Err(DeployError::input("--endpoint", "empty"));
    }
    if ed25519_public_key == B256::ZERO {
        return Err(DeployError::input(
            "--ed25519-key",
            "the zero key is not a key",
        ));
    }
    op.require_contract(
        "IndexerRegistry",
        registry,
        "deploy first or pass the right --deployments / --indexer-registry",
    )
    .await?;
    let instance = IndexerRegistry::new(registry, op.client.provider().clone());
    let owner = instance
        .owner()
        .call()
        .await
        .map_err(|e| op.client.call_error("IndexerRegistry.owner", e))?;
    if owner != sender {
        return Err(DeployError::precondition(
            format!(
                "the signer {sender} is not the owner {owner} of the indexer registry {registry}"
            ),
            "sign with the operator key the deployment was made with",
        ));
    }
    let existing = instance
        .listIndexers()
        .call()
        .await
        .map_err(|e| op.client.call_error("IndexerRegistry.listIndexers", e))?;
    if let Some(id) = existing.iter().position(|i| {
        i.active && i.endpoint == endpoint && i.ed25519PublicKey == ed25519_public_key
    }) {
        return Ok(IndexerReport {
            registry,
            indexer_id: id as u64,
            endpoint: endpoint.to_string(),
            ed25519_public_key,
            changed: false,
        });
    }
    let data = IndexerRegistry::registerIndexerCall {
        endpoint: endpoint.to_string(),
        ed25519PublicKey: ed25519_public_key,
    }
    .abi_encode();
    op.client
        .send_transaction("IndexerRegistry.registerIndexer", registry, data.into())
        .await?;
    Ok(IndexerReport {
        registry,
        indexer_id: existing.len() as u64,
        endpoint: endpoint.to_string(),
        ed25519_public_key,
        changed: true,
    })
}

const MEMBER_ACTIVE: u8 = 1;
const MEMBER_REVOKED: u8 = 2;

fn status_name(status: u8) -> &'static str {
    match status {
        MEMBER_ACTIVE => "active",
        MEMBER_REVOKED => "revoked",
        _ => "none",
    }
}

/// A cluster's state, as `show` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    pub chain_id: u64,
    pub cluster: Address,
    pub owner: Address,
    pub factory: Address,
    pub mesh: MeshView,
    pub member_count: u64,
    pub active_member_count: u64,
    /// The current CSK epoch.
    pub csk: CskEpochView,
    pub allowlists: Allowlists,
    pub members: Vec<MemberView>,
    pub messages: MessageSummary,
}

/// The cluster's current CSK epoch.
#[derive(Debug, Clone, Serialize)]
pub struct CskEpochView {
    pub epoch: u64,
    /// The member that derives and commits this epoch's key (0: none active).
    pub originator: u64,
    /// The member whose revocation opened it (0: none).
    pub revoked_member: u64,
    /// keccak256(CSK of this epoch), once its originator committed it.
    pub commitment: Option<B256>,
    /// The previous committed epoch whose key members still hand out, and until when (unix s).
    pub previous_epoch: Option<u64>,
    pub previous_key_until: Option<u64>,
    /// How long the previous key stays available after the next commitment (seconds).
    pub grace_seconds: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct MeshView {
    pub cidr: String,
    pub capacity: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Allowlists {
    pub kms_roots: Vec<Address>,
    pub compose_hashes: Vec<B256>,
    pub allow_any_device: bool,
    pub device_ids: Vec<B256>,
    pub app_ids: Vec<Address>,
    /// The TCB status the boot gate requires ("UpToDate").
    pub required_tcb_status: String,
    /// TCB advisory ids on the boot gate's grace list.
    pub advisories: Vec<String>,
    /// App ids pinned to one instance id.
    pub pinned_instances: Vec<PinnedInstance>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PinnedInstance {
    pub app_id: Address,
    pub instance_id: Address,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    pub id: u64,
    pub account: Address,
    pub signer: Address,
    pub mesh_ip: Ipv4Addr,
    /// `active` or `revoked`.
    pub status: String,
    pub registered_at: u64,
}

/// `MessageSent` events of a recent block window: how many and the last block, never contents.
#[derive(Debug, Clone, Serialize)]
pub struct MessageSummary {
    pub from_block: u64,
    pub to_block: u64,
    pub count: u64,
    pub last_block: Option<u64>,
}

impl fmt::Display for ClusterView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "cluster {} on chain {}", self.cluster, self.chain_id)?;
        writeln!(f, "owner {}, factory {}", self.owner, self.factory)?;
        writeln!(
            f,
            "mesh {} (capacity {}), members {} ({} active)",
            self.mesh.cidr, self.mesh.capacity, self.member_count, self.active_member_count
        )?;
        let csk = &self.csk;
        match csk.commitment {
            Some(c) => writeln!(
                f,
                "CSK epoch {}: committed by member {}: {c}",
                csk.epoch, csk.originator
            )?,
            None => writeln!(
                f,
                "CSK epoch {}: not committed yet (its originator is member {})",
                csk.epoch, csk.originator
            )?,
        }
        if let (Some(epoch), Some(until)) = (csk.previous_epoch, csk.previous_key_until) {
            writeln!(
                f,
                "  epoch {epoch}'s key stays available until unix time {until}"
            )?;
        }
        writeln!(
            f,
            "  grace period after a rotation: {} s",
            csk.grace_seconds
        )?;
        writeln!(f, "allowlists:")?;
        writeln!(f, "  KMS roots:      {}", join(&self.allowlists.kms_roots))?;
        writeln!(
            f,
            "  compose hashes: {}",
            join(&self.allowlists.compose_hashes)
        )?;
        if self.allowlists.allow_any_device {
            writeln!(f, "  devices:        any device may boot")?;
        } else {
            writeln!(f, "  devices:        {}", join(&self.allowlists.device_ids))?;
        }
        writeln!(f, "  app ids:        {}", join(&self.allowlists.app_ids))?;
        writeln!(
            f,
            "  TCB:            {} required; advisories allowed: {}",
            self.allowlists.required_tcb_status,
            join(&self.allowlists.advisories)
        )?;
        for pin in &self.allowlists.pinned_instances {
            writeln!(
                f,
                "  pinned:         app id {} boots only as instance {}",
                pin.app_id, pin.instance_id
            )?;
        }
        writeln!(f, "members:")?;
        if self.members.is_empty() {
            writeln!(f, "  (none registered yet)")?;
        }
        for m in &self.members {
            writeln!(
                f,
                "  {:>4}  {}  {:<15}  {:<7}  registered at {}",
                m.id, m.account, m.mesh_ip, m.status, m.registered_at
            )?;
        }
        let last = match self.messages.last_block {
            Some(block) => format!("last at block {block}"),
            None => "none".into(),
        };
        write!(
            f,
            "messages (MessageSent, blocks {}..={}): {}, {last}",
            self.messages.from_block, self.messages.to_block, self.messages.count
        )
    }
}

/// Reads everything `show` prints; `message_blocks` bounds the MessageSent scan.
pub async fn show(op: &Operator, cluster: Address, message_blocks: u64) -> Result<ClusterView> {
    op.require_cluster(cluster).await?;
    let c = &op.client;
    let instance = c.cluster(cluster);
    let owner = instance
        .owner()
        .call()
        .await
        .map_err(|e| c.call_error("Cluster.owner", e))?;
    let factory = instance
        .clusterFactory()
        .call()
        .await
        .map_err(|e| c.call_error("Cluster.clusterFactory", e))?;
    let mesh = instance
        .meshConfig()
        .call()
        .await
        .map_err(|e| c.call_error("Cluster.meshConfig", e))?;
    let member_count = instance
        .memberCount()
        .call()
        .await
        .map_err(|e| c.call_error("Cluster.memberCount", e))?;
    let active_member_count = instance
        .activeMemberCount()
        .call()
        .await
        .map_err(|e| c.call_error("Cluster.activeMemberCount", e))?;
    let csk = csk_epoch_view(c, cluster).await?;
    let app_ids = instance
        .appIds()
        .call()
        .await
        .map_err(|e| c.call_error("Cluster.appIds", e))?;
    let tcb = instance
        .tcbPolicy()
        .call()
        .await
        .map_err(|e| c.call_error("Cluster.tcbPolicy", e))?;
    let mut pinned_instances = Vec::new();
    for app_id in &app_ids {
        let pinned = instance
            .pinnedInstance(*app_id)
            .call()
            .await
            .map_err(|e| c.call_error("Cluster.pinnedInstance", e))?;
        if pinned != Address::ZERO {
            pinned_instances.push(PinnedInstance {
                app_id: *app_id,
                instance_id: pinned,
            });
        }
    }
    let allowlists = Allowlists {
        kms_roots: instance
            .kmsRoots()
            .call()
            .await
            .map_err(|e| c.call_error("Cluster.kmsRoots", e))?,
        compose_hashes: instance
            .composeHashes()
            .call()
            .await
            .map_err(|e| c.call_error("Cluster.composeHashes", e))?,
        allow_any_device: instance
            .allowAnyDevice()
            .call()
            .await
            .map_err(|e| c.call_error("Cluster.allowAnyDevice", e))?,
        device_ids: instance
            .deviceIds()
            .call()
            .await
            .map_err(|e| c.call_error("Cluster.deviceIds", e))?,
        app_ids,
        required_tcb_status: tcb.requiredTcbStatus,
        advisories: tcb.allowedAdvisoryIds,
        pinned_instances,
    };
    let mut members = Vec::new();
    let mut next = 1u64;
    while next <= member_count {
        let page = instance
            .listMembers(next, 100)
            .call()
            .await
            .map_err(|e| c.call_error("Cluster.listMembers", e))?;
        if page.is_empty() {
            break;
        }
        for m in &page {
            members.push(MemberView {
                id: m.id,
                account: m.account,
                signer: m.signer,
                mesh_ip: Ipv4Addr::from(m.meshIp),
                status: status_name(m.status).to_string(),
                registered_at: m.registeredAt,
            });
        }
        next += page.len() as u64;
    }
    let messages = message_summary(c, cluster, message_blocks).await?;
    Ok(ClusterView {
        chain_id: c.chain_id(),
        cluster,
        owner,
        factory,
        mesh: MeshView {
            cidr: format!("{}/{}", Ipv4Addr::from(mesh.network), mesh.prefixLength),
            capacity: mesh.capacity,
        },
        member_count,
        active_member_count,
        csk,
        allowlists,
        members,
        messages,
    })
}

async fn message_summary(c: &ChainClient, cluster: Address, window: u64) -> Result<MessageSummary> {
    let head = c.block_number().await?;
    let from_block = head.saturating_sub(window.saturating_sub(1));
    let mut count = 0u64;
    let mut last_block = None;
    let mut start = from_block;
    while start <= head {
        let end = head.min(start.saturating_add(LOG_RANGE - 1));
        let filter = Filter::new()
            .address(cluster)
            .event_signature(Cluster::MessageSent::SIGNATURE_HASH)
            .from_block(start)
            .to_block(end);
        let logs = c.logs(&filter).await?;
        count += logs.len() as u64;
        if let Some(block) = logs.iter().filter_map(|l| l.block_number).max() {
            last_block = Some(block);
        }
        start = end + 1;
    }
    Ok(MessageSummary {
        from_block,
        to_block: head,
        count,
        last_block,
    })
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "(none)".into();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_the_network_and_refuses_host_bits() {
        let cidr: Cidr = "10.88.0.0/16".parse().unwrap();
        assert_eq!(u32::from(cidr.network), 0x0a58_0000);
        assert_eq!(cidr.prefix_length, 16);
        assert_eq!(cidr.to_string(), "10.88.0.0/16");
        let err = "10.88.1.0/16".parse::<Cidr>().unwrap_err().to_string();
        assert!(err.contains("10.88.0.0/16"), "{err}");
        assert!("10.0.0.0/31".parse::<Cidr>().is_err());
        assert!("10.0.0.0".parse::<Cidr>().is_err());
        assert!("10.0.0/8".parse::<Cidr>().is_err());
    }

    #[test]
    fn salt_is_hex_as_is_or_a_hash_of_text() {
        let hex = format!("0x{}", "11".repeat(32));
        assert_eq!(parse_salt(&hex), B256::repeat_byte(0x11));
        assert_eq!(parse_salt("prod-cluster"), keccak256(b"prod-cluster"));
    }

    #[test]
    fn member_salt_matches_the_devnet_convention() {
        assert_eq!(member_salt("node-1"), keccak256(b"node-1"));
    }
}
