//! The cluster's CSK epochs: the owner's rotation and the previous key's grace window, each
//! reported as the epoch the chain holds afterwards.

use std::fmt;

use alloy::primitives::Address;
use alloy::sol_types::SolCall;
use attestmesh_bindings::cluster::Cluster;
use attestmesh_chain::ChainClient;
use serde::Serialize;
use tracing::info;

use super::Operator;
use super::show::CskEpochView;
use crate::LOG_TARGET;
use crate::error::{DeployError, Result};

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
pub(super) async fn csk_epoch_view(c: &ChainClient, cluster: Address) -> Result<CskEpochView> {
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
