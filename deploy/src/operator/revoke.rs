//! Revoking a member: checked against its record first (unknown or already revoked is said,
//! not sent).

use std::fmt;

use alloy::primitives::Address;
use alloy::sol_types::SolCall;
use attestmesh_bindings::cluster::Cluster;
use serde::Serialize;
use tracing::info;

use super::{MEMBER_ACTIVE, Operator};
use crate::LOG_TARGET;
use crate::error::{DeployError, Result};

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
