//! Verifying one push before anything of it reaches intake: the signature with the registered
//! key, the chain id, the emitter, and the log itself read back from the chain.

use alloy::primitives::{Address, B256, Bytes};
use alloy::providers::Provider;
use attestmesh_chain::{ChainClient, ChainError};
use attestmesh_proto::indexer::v1::{self as pb, signed_event::Body, signing_payload};
use ed25519_dalek::{Signature, VerifyingKey};
use tracing::{debug, warn};

use crate::intake::{IntakeEvent, decode_log};

use super::{Client, LOG_TARGET, Rejection};

impl Client {
    /// Verifies one push; returns the intake event to forward (if the node acts on it) and the
    /// cursor after it.
    pub(super) async fn check(
        &self,
        key: &VerifyingKey,
        event: pb::SignedEvent,
    ) -> Result<(Option<IntakeEvent>, Option<pb::Cursor>), Checked> {
        let body = event
            .body
            .as_ref()
            .ok_or(Checked::Rejected(Rejection::Malformed("no body".into())))?;
        let signature: [u8; 64] = event.signature.as_slice().try_into().map_err(|_| {
            Checked::Rejected(Rejection::Malformed(format!(
                "a signature of {} bytes",
                event.signature.len()
            )))
        })?;
        key.verify_strict(
            &signing_payload(event.chain_id, body),
            &Signature::from_bytes(&signature),
        )
        .map_err(|_| Checked::Rejected(Rejection::BadSignature))?;
        if event.chain_id != self.chain.chain_id() {
            return Err(Checked::Rejected(Rejection::WrongChain(event.chain_id)));
        }
        match body {
            Body::Reorg(reorg) => {
                self.stats.reorgs.inc();
                warn!(target: LOG_TARGET, from_block = reorg.from_block, "indexer reports a reorg");
                // Resume from the fork: events at and above it are re-sent from the new chain.
                let cursor = match &self.cursor {
                    Some(cursor) if cursor.block_number >= reorg.from_block => {
                        reorg.from_block.checked_sub(1).map(|block| pb::Cursor {
                            block_number: block,
                            log_index: u64::MAX,
                            // A position between events: nothing there to be orphaned.
                            block_hash: Vec::new(),
                        })
                    }
                    other => other.clone(),
                };
                Ok((
                    Some(IntakeEvent::Reorged {
                        from_block: reorg.from_block,
                    }),
                    cursor,
                ))
            }
            Body::Log(pushed) => {
                let log = to_alloy_log(pushed).map_err(Checked::Rejected)?;
                if log.address() != self.cluster {
                    return Err(Checked::Rejected(Rejection::WrongCluster(log.address())));
                }
                self.cross_check(&log).await?;
                // With its block hash: an indexer that does not have this event (it was
                // orphaned) answers a resumption with a reorg notice.
                let cursor = pb::Cursor {
                    block_number: pushed.block_number,
                    log_index: pushed.log_index,
                    block_hash: pushed.block_hash.clone(),
                };
                debug!(
                    target: LOG_TARGET,
                    block = pushed.block_number,
                    log_index = pushed.log_index,
                    tx = ?log.transaction_hash,
                    "push verified"
                );
                Ok((decode_log(&log), Some(cursor)))
            }
        }
    }

    /// A quorum of the chain RPC endpoints must hold the pushed log (one lying endpoint cannot
    /// confirm a fabricated push). Stops as soon as `k` confirmed.
    async fn cross_check(&self, log: &alloy::rpc::types::Log) -> Result<(), Checked> {
        let (k, n) = self.view.quorum();
        let mut confirmed = 0;
        let mut refusals = Vec::new();
        let mut failures = Vec::new();
        for endpoint in self.view.endpoints() {
            match self.cross_check_on(endpoint, log).await {
                Ok(()) => confirmed += 1,
                Err(Checked::Rejected(rejection)) => {
                    refusals.push(format!("{}: {rejection}", endpoint.endpoint()))
                }
                Err(Checked::Chain(error)) => failures.push(error),
            }
            if confirmed >= k {
                if !refusals.is_empty() {
                    warn!(target: LOG_TARGET, ?refusals, "chain RPC endpoints disagree about a push; the quorum confirmed it");
                }
                return Ok(());
            }
        }
        if !refusals.is_empty() {
            return Err(Checked::Rejected(Rejection::NotOnChain(format!(
                "{confirmed} of {n} chain RPC endpoints confirm it, {k} must: {}",
                refusals.join("; ")
            ))));
        }
        Err(Checked::Chain(failures.into_iter().next().unwrap_or_else(
            || {
                ChainError::Config(format!(
                    "no chain RPC endpoint could check the push ({n} configured)"
                ))
            },
        )))
    }

    /// One endpoint must hold the pushed log: the transaction's receipt in the pushed block, and
    /// the same address, topics and data at the pushed log index.
    async fn cross_check_on(
        &self,
        chain: &ChainClient,
        log: &alloy::rpc::types::Log,
    ) -> Result<(), Checked> {
        let (Some(tx), Some(block_hash), Some(block_number), Some(log_index)) = (
            log.transaction_hash,
            log.block_hash,
            log.block_number,
            log.log_index,
        ) else {
            return Err(Checked::Rejected(Rejection::Malformed(
                "no provenance".into(),
            )));
        };
        let mut attempt = 0;
        let receipt = loop {
            attempt += 1;
            match chain.provider().get_transaction_receipt(tx).await {
                Ok(Some(receipt)) => break receipt,
                Ok(None) if attempt < self.config.chain_check_attempts => {}
                Ok(None) => {
                    return Err(Checked::Rejected(Rejection::NotOnChain(format!(
                        "no receipt for transaction {tx} after {attempt} attempts"
                    ))));
                }
                Err(source) if attempt < self.config.chain_check_attempts => {
                    debug!(target: LOG_TARGET, %tx, %source, "receipt read failed; retrying");
                }
                Err(source) => {
                    return Err(Checked::Chain(ChainError::Transport {
                        call: "eth_getTransactionReceipt".into(),
                        endpoint: chain.endpoint().to_string(),
                        source,
                    }));
                }
            }
            if !self.shutdown.sleep(self.config.chain_check_delay).await {
                return Err(Checked::Rejected(Rejection::NotOnChain(
                    "shut down while checking".into(),
                )));
            }
        };
        if receipt.block_hash != Some(block_hash) || receipt.block_number != Some(block_number) {
            return Err(Checked::Rejected(Rejection::Mismatch(format!(
                "transaction {tx} is in block {:?} ({:?}), the push says {block_number} ({block_hash})",
                receipt.block_number, receipt.block_hash
            ))));
        }
        let Some(on_chain) = receipt
            .inner
            .logs()
            .iter()
            .find(|l| l.log_index == Some(log_index))
        else {
            return Err(Checked::Rejected(Rejection::NotOnChain(format!(
                "transaction {tx} has no log with index {log_index}"
            ))));
        };
        if on_chain.inner != log.inner {
            return Err(Checked::Rejected(Rejection::Mismatch(format!(
                "log {log_index} of transaction {tx} differs in address, topics or data"
            ))));
        }
        if on_chain.transaction_index != log.transaction_index {
            return Err(Checked::Rejected(Rejection::Mismatch(format!(
                "transaction {tx} has index {:?} in its block, the push says {:?}",
                on_chain.transaction_index, log.transaction_index
            ))));
        }
        Ok(())
    }
}

/// The outcome of a failed check.
pub(super) enum Checked {
    Rejected(Rejection),
    Chain(ChainError),
}

/// The alloy log of a push (checking every length).
fn to_alloy_log(pushed: &pb::ChainLog) -> Result<alloy::rpc::types::Log, Rejection> {
    let fixed = |what: &str, bytes: &[u8], len: usize| {
        if bytes.len() == len {
            Ok(())
        } else {
            Err(Rejection::Malformed(format!(
                "{what} of {} bytes, not {len}",
                bytes.len()
            )))
        }
    };
    fixed("a block hash", &pushed.block_hash, 32)?;
    fixed("a transaction hash", &pushed.transaction_hash, 32)?;
    fixed("an address", &pushed.address, 20)?;
    let mut topics = Vec::with_capacity(pushed.topics.len());
    for topic in &pushed.topics {
        fixed("a topic", topic, 32)?;
        topics.push(B256::from_slice(topic));
    }
    let inner = alloy::primitives::Log::new(
        Address::from_slice(&pushed.address),
        topics,
        Bytes::copy_from_slice(&pushed.data),
    )
    .ok_or_else(|| Rejection::Malformed(format!("{} topics", pushed.topics.len())))?;
    Ok(alloy::rpc::types::Log {
        inner,
        block_hash: Some(B256::from_slice(&pushed.block_hash)),
        block_number: Some(pushed.block_number),
        block_timestamp: None,
        transaction_hash: Some(B256::from_slice(&pushed.transaction_hash)),
        transaction_index: Some(pushed.transaction_index),
        log_index: Some(pushed.log_index),
        removed: false,
    })
}
