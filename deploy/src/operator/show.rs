//! `show`: a cluster's whole state in one read — its configuration, mesh, allowlists, CSK
//! epoch, members and recent messages.

use std::fmt;
use std::net::Ipv4Addr;

use alloy::primitives::{Address, B256};
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use attestmesh_bindings::cluster::Cluster;
use attestmesh_chain::ChainClient;
use serde::Serialize;

use super::{LOG_RANGE, Operator, join, status_name};
use crate::error::Result;

use super::csk::csk_epoch_view;

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
