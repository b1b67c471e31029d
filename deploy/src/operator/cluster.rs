//! Creating a cluster: its CREATE2 address predicted, the factory's preconditions checked, the
//! creation sent once (a cluster already there is reported, not created again).

use std::fmt;

use alloy::primitives::{Address, B256};
use alloy::sol_types::SolCall;
use attestmesh_bindings::factory::ClusterFactory::{self, ClusterConfig};
use serde::Serialize;
use tracing::info;

use super::show::show;
use super::{Cidr, Operator, join};
use crate::LOG_TARGET;
use crate::error::{DeployError, Result};

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
