//! The indexer's view of the chain RPC: the project's one [`ChainClient`] underneath, every call
//! counted per method and logged at debug, and the two answers the indexer must tell apart
//! classified once, here:
//!
//! * "this block does not exist (or its state is not served)" — anvil's `BlockOutOfRangeError`,
//!   geth's `header not found`, a pruned node's `missing trie node` — is [`CodeAt::BlockMissing`],
//!   never "no code" (TOOLCHAIN.md; field note 8);
//! * "your log range is too large" — every provider words it differently — is
//!   [`LogsError::RangeTooLarge`], which makes the follower halve its range.
//!
//! No RPC result is ever defaulted (field note 5): a failed call is an error naming the call.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use alloy::primitives::{Address, B256};
use alloy::providers::Provider;
use alloy::rpc::types::{BlockNumberOrTag, Filter, Log};
use alloy::transports::{RpcError, TransportError, TransportErrorKind};
use attestmesh_chain::{ChainClient, ChainError};
use tracing::debug;

use crate::LOG_TARGET;

/// Hash and parent hash of one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    pub number: u64,
    pub hash: B256,
    pub parent_hash: B256,
}

/// What `eth_getCode(address, block)` says about one block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeAt {
    /// The address holds code of this many bytes at that block.
    Code(usize),
    /// The block exists and the address holds no code there.
    NoCode,
    /// The RPC has no such block (below genesis, above head, or its state is not served);
    /// the reason is the RPC's own words.
    BlockMissing(String),
}

/// Why `eth_getLogs` failed.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// The RPC refused the range or the result size: retry with a smaller range.
    #[error("the RPC refused a log range of {blocks} blocks: {message}")]
    RangeTooLarge { blocks: u64, message: String },
    /// Anything else.
    #[error(transparent)]
    Chain(#[from] ChainError),
}

/// The chain client with per-method call counters. Cheap to clone; clones share the counters.
#[derive(Debug, Clone)]
pub struct IndexerRpc {
    chain: ChainClient,
    calls: Arc<Mutex<BTreeMap<&'static str, u64>>>,
}

impl IndexerRpc {
    pub fn new(chain: ChainClient) -> Self {
        Self {
            chain,
            calls: Arc::default(),
        }
    }

    /// The underlying client (typed contract calls go through it; count them with [`Self::count`]).
    pub fn chain(&self) -> &ChainClient {
        &self.chain
    }

    pub fn chain_id(&self) -> u64 {
        self.chain.chain_id()
    }

    /// Calls made so far, per JSON-RPC method.
    pub fn calls(&self) -> BTreeMap<&'static str, u64> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Calls made so far, all methods.
    pub fn total_calls(&self) -> u64 {
        self.calls().values().sum()
    }

    /// Records one call of `method` (for calls made through [`Self::chain`]).
    pub fn count(&self, method: &'static str) {
        if let Ok(mut calls) = self.calls.lock() {
            *calls.entry(method).or_default() += 1;
        }
    }

    fn transport(&self, call: &str, source: TransportError) -> ChainError {
        ChainError::Transport {
            call: call.into(),
            endpoint: self.chain.endpoint().to_string(),
            source,
        }
    }

    /// `eth_blockNumber`.
    pub async fn block_number(&self) -> Result<u64, ChainError> {
        self.count("eth_blockNumber");
        let head = self.chain.block_number().await?;
        debug!(target: LOG_TARGET, rpc = "eth_blockNumber", head, "chain head");
        Ok(head)
    }

    /// `eth_getBlockByNumber(number, false)`: `None` when the RPC has no such block.
    pub async fn block(&self, number: u64) -> Result<Option<BlockRef>, ChainError> {
        self.count("eth_getBlockByNumber");
        let started = Instant::now();
        let block = self
            .chain
            .provider()
            .get_block_by_number(BlockNumberOrTag::Number(number))
            .await
            .map_err(|e| self.transport("eth_getBlockByNumber", e))?;
        let block = block.map(|b| BlockRef {
            number,
            hash: b.header.hash,
            parent_hash: b.header.parent_hash,
        });
        debug!(
            target: LOG_TARGET,
            rpc = "eth_getBlockByNumber",
            number,
            found = block.is_some(),
            hash = ?block.map(|b| b.hash),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "block"
        );
        Ok(block)
    }

    /// `eth_getCode(address, number)`, with "no such block" told apart from "no code".
    pub async fn code_at(&self, address: Address, number: u64) -> Result<CodeAt, ChainError> {
        self.count("eth_getCode");
        let answer = self
            .chain
            .provider()
            .get_code_at(address)
            .number(number)
            .await;
        let result = match answer {
            Ok(code) if code.is_empty() => CodeAt::NoCode,
            Ok(code) => CodeAt::Code(code.len()),
            Err(error) => match error.as_error_resp() {
                Some(payload) if is_missing_block(&payload.message) => {
                    CodeAt::BlockMissing(payload.message.to_string())
                }
                _ => return Err(self.transport("eth_getCode", error)),
            },
        };
        debug!(target: LOG_TARGET, rpc = "eth_getCode", %address, number, ?result, "code probe");
        Ok(result)
    }

    /// `eth_getLogs(filter)`; the filter must carry a block range of `blocks` blocks.
    pub async fn logs(&self, filter: &Filter, blocks: u64) -> Result<Vec<Log>, LogsError> {
        self.count("eth_getLogs");
        let started = Instant::now();
        match self.chain.provider().get_logs(filter).await {
            Ok(logs) => {
                debug!(
                    target: LOG_TARGET,
                    rpc = "eth_getLogs",
                    from = ?filter.get_from_block(),
                    to = ?filter.get_to_block(),
                    logs = logs.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "logs"
                );
                Ok(logs)
            }
            Err(error) => {
                debug!(
                    target: LOG_TARGET,
                    rpc = "eth_getLogs",
                    from = ?filter.get_from_block(),
                    to = ?filter.get_to_block(),
                    %error,
                    "logs failed"
                );
                match range_refusal(&error) {
                    Some(message) => Err(LogsError::RangeTooLarge { blocks, message }),
                    None => Err(self.transport("eth_getLogs", error).into()),
                }
            }
        }
    }
}

/// Whether an error answer's message means "no such block / no state for it" rather than a
/// failure.
pub fn is_missing_block(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        "blockoutofrange",
        "block out of range",
        "header not found",
        "block not found",
        "unknown block",
        "missing trie node",
        "state not available",
        "state is not available",
        "historical state",
        "pruned",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}

/// The RPC's words when an error refuses a log range or result size.
fn range_refusal(error: &RpcError<TransportErrorKind>) -> Option<String> {
    // Some providers answer an oversized query with HTTP 413 or a body that is not JSON-RPC.
    if let RpcError::Transport(TransportErrorKind::HttpError(http)) = error
        && http.status == 413
    {
        return Some(format!("HTTP 413: {}", http.body));
    }
    let payload = error.as_error_resp()?;
    is_range_refusal(payload.code, &payload.message).then(|| payload.message.to_string())
}

/// Whether an error answer refuses the size of a log query. Providers word it in many ways:
/// "query returned more than 10000 results", "Log response size exceeded", "block range is
/// too wide", "exceed maximum block range: 5000", "eth_getLogs is limited to a 10,000 range",
/// code -32005 ("limit exceeded").
pub fn is_range_refusal(code: i64, message: &str) -> bool {
    if code == -32005 {
        return true;
    }
    let lower = message.to_ascii_lowercase();
    let about_size = [
        "range",
        "more than",
        "too many",
        "too large",
        "too big",
        "response size",
        "result size",
        "results",
        "limit",
        "exceed",
    ]
    .iter()
    .any(|needle| lower.contains(needle));
    about_size && !is_missing_block(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_block_is_not_a_range_refusal_and_vice_versa() {
        let anvil = "BlockOutOfRangeError: block height is 47000000 but requested was 256";
        assert!(is_missing_block(anvil));
        assert!(!is_range_refusal(-32602, anvil));
        for refusal in [
            "query returned more than 10000 results",
            "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range",
            "exceed maximum block range: 5000",
            "block range is too wide",
        ] {
            assert!(is_range_refusal(-32602, refusal), "{refusal}");
            assert!(!is_missing_block(refusal), "{refusal}");
        }
        assert!(is_range_refusal(-32005, "limit exceeded"));
        assert!(!is_range_refusal(-32000, "execution reverted"));
        assert!(is_missing_block("header not found"));
        assert!(is_missing_block(
            "missing trie node 1234 (path ) state 0x12 is not available"
        ));
    }
}
