//! Member accounts: a node's account (its dstack app id) predicted from the cluster and the
//! node's name before it boots, and created through the factory.

use std::fmt;

use alloy::primitives::{Address, B256};
use alloy::sol_types::SolCall;
use attestmesh_bindings::factory::ClusterFactory::{self};
use serde::Serialize;
use tracing::info;

use super::{Operator, member_salt};
use crate::LOG_TARGET;
use crate::error::{DeployError, Result};

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
