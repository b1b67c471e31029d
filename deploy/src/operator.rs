//! Cluster administration, as the operator does it: create a cluster, edit its allowlists,
//! predict and create member accounts (a node's account is its dstack app id, known before it
//! boots), revoke members, register indexers, and show a cluster's state. Every write checks
//! first what would make it fail (the signer is not the owner, the cluster is not there, an
//! empty KMS root list) and says so, and a write that would change nothing is not sent.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use alloy::primitives::{Address, B256, keccak256};
use attestmesh_chain::ChainClient;

use crate::error::{DeployError, Result};

mod account;
mod allowlist;
mod cluster;
mod csk;
mod indexer;
mod revoke;
mod show;

pub use account::{AccountReport, create_account, predict_account};
pub use allowlist::{
    AllowKind, AllowReport, PinReport, allow, allow_advisory, pin_instance, set_allow_any_device,
};
pub use cluster::{ClusterCreated, NewCluster, create_cluster};
pub use csk::{CskReport, rotate_csk, set_csk_grace};
pub use indexer::{IndexerReport, register_indexer};
pub use revoke::{RevokeReport, revoke};
pub use show::{
    Allowlists, ClusterView, CskEpochView, MemberView, MeshView, MessageSummary, PinnedInstance,
    show,
};

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

const MEMBER_ACTIVE: u8 = 1;
const MEMBER_REVOKED: u8 = 2;

fn status_name(status: u8) -> &'static str {
    match status {
        MEMBER_ACTIVE => "active",
        MEMBER_REVOKED => "revoked",
        _ => "none",
    }
}

/// Items joined for display, or `(none)`.
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
