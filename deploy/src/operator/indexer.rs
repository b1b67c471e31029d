//! Registering an indexer in the factory's registry (its endpoint and Ed25519 key).

use std::fmt;

use alloy::primitives::{Address, B256};
use alloy::sol_types::SolCall;
use attestmesh_bindings::indexer_registry::IndexerRegistry;
use serde::Serialize;

use super::Operator;
use crate::error::{DeployError, Result};

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
