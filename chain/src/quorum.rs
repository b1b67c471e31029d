//! [`ChainView`]: reads that decide who is a member, what a member's envelope says and which
//! key an epoch committed, taken from a quorum of independently configured RPC endpoints.
//!
//! One RPC endpoint must not decide membership: whoever controls it (a compromised provider, or
//! whoever set the node's environment) could show the node a member that does not exist and
//! receive the Cluster Shared Key sealed to it. A read is accepted only when `k` of the `n`
//! endpoints answered at the same block hash with the same value:
//!
//! 1. every endpoint is asked for its head; the block read is the k-th highest head, which at
//!    least `k` endpoints have reached;
//! 2. every endpoint that reached it is asked for that block's hash and then for the value at
//!    that hash (EIP-1898), so an endpoint cannot answer from another block;
//! 3. the answers are grouped by (hash, value); a group of at least `k` is the agreed value.
//!    Otherwise the read fails with [`QuorumError::Disagreement`], naming each endpoint's answer
//!    (endpoints by host, never with their credentials).
//!
//! One endpoint (k = 1 of 1) is allowed for a local devnet; the agent logs it as a warning.

use std::fmt::Debug;

use alloy::eips::BlockId;
use alloy::primitives::B256;
use alloy::providers::Provider;
use alloy::rpc::types::BlockNumberOrTag;
use tracing::{debug, warn};

use crate::client::ChainClient;
use crate::error::ChainError;
use crate::targets::CHAIN;

/// A read the quorum could not agree on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QuorumError {
    /// Fewer than `k` endpoints answered at all.
    #[error(
        "{what}: only {answered} of {n} chain RPC endpoints answered, {k} must agree ({failures}); check the endpoints"
    )]
    Unavailable {
        what: String,
        answered: usize,
        n: usize,
        k: usize,
        failures: String,
    },
    /// Enough endpoints answered, but no `k` of them gave the same block hash and value.
    #[error(
        "{what}: the chain RPC endpoints disagree at block {block} (no {k} of {n} gave the same block hash and answer: {answers}); one of them may be lying or on another chain"
    )]
    Disagreement {
        what: String,
        block: u64,
        k: usize,
        n: usize,
        answers: String,
    },
}

/// A value `k` endpoints agreed on, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreed<T> {
    pub value: T,
    pub block: u64,
    pub hash: B256,
}

/// Reads from `k` of `n` endpoints. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ChainView {
    endpoints: Vec<ChainClient>,
    k: usize,
}

impl ChainView {
    /// A view over `endpoints` that needs `k` of them to agree (1 ≤ k ≤ n).
    pub fn new(endpoints: Vec<ChainClient>, k: usize) -> Result<Self, String> {
        if endpoints.is_empty() {
            return Err("no chain RPC endpoint configured".into());
        }
        if k == 0 || k > endpoints.len() {
            return Err(format!(
                "a quorum of {k} is impossible with {} chain RPC endpoint(s): it must be 1..={}",
                endpoints.len(),
                endpoints.len()
            ));
        }
        if k * 2 <= endpoints.len() {
            warn!(target: CHAIN, k, n = endpoints.len(), "the chain quorum is not a majority: two disjoint groups of endpoints could each be agreed");
        }
        Ok(Self { endpoints, k })
    }

    /// How many endpoints must agree, of how many.
    pub fn quorum(&self) -> (usize, usize) {
        (self.k, self.endpoints.len())
    }

    /// The endpoint writes and other single-source reads go to (the first configured).
    pub fn primary(&self) -> &ChainClient {
        &self.endpoints[0]
    }

    /// Every endpoint.
    pub fn endpoints(&self) -> &[ChainClient] {
        &self.endpoints
    }

    /// The endpoints (credentials removed) for messages.
    pub fn describe(&self) -> String {
        self.endpoints
            .iter()
            .map(ChainClient::endpoint)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The latest block at least `k` endpoints have reached (the k-th highest head).
    pub async fn quorum_head(&self, what: &str) -> Result<u64, QuorumError> {
        let heads = futures_join(
            self.endpoints
                .iter()
                .map(|e| async move { e.block_number().await }),
        )
        .await;
        let mut failures = Vec::new();
        let mut reached = Vec::new();
        for (endpoint, head) in self.endpoints.iter().zip(heads) {
            match head {
                Ok(head) => reached.push(head),
                Err(error) => failures.push(format!("{}: {error}", endpoint.endpoint())),
            }
        }
        reached.sort_unstable_by(|a, b| b.cmp(a));
        reached
            .get(self.k - 1)
            .copied()
            .ok_or_else(|| self.unavailable(what, reached.len(), &failures))
    }

    /// The value of `read` at the latest block `k` endpoints have reached, agreed by `k` of
    /// them at the same block hash. `read` gets each endpoint and the block (by hash) to read at.
    pub async fn read<T, F, Fut>(&self, what: &str, read: F) -> Result<Agreed<T>, QuorumError>
    where
        T: PartialEq + Debug,
        F: Fn(ChainClient, BlockId) -> Fut,
        Fut: Future<Output = Result<T, ChainError>>,
    {
        let block = self.quorum_head(what).await?;
        self.read_at(what, block, read).await
    }

    /// Like [`ChainView::read`], at block `block`.
    pub async fn read_at<T, F, Fut>(
        &self,
        what: &str,
        block: u64,
        read: F,
    ) -> Result<Agreed<T>, QuorumError>
    where
        T: PartialEq + Debug,
        F: Fn(ChainClient, BlockId) -> Fut,
        Fut: Future<Output = Result<T, ChainError>>,
    {
        let read = &read;
        let answers = futures_join(self.endpoints.iter().map(|endpoint| async move {
            let hash =
                block_hash(endpoint, block)
                    .await?
                    .ok_or_else(|| ChainError::MissingBlock {
                        endpoint: endpoint.endpoint().to_string(),
                        block,
                    })?;
            let value = read(endpoint.clone(), BlockId::hash(hash)).await?;
            Ok::<_, ChainError>((hash, value))
        }))
        .await;
        let mut failures = Vec::new();
        let mut groups: Vec<(B256, T, Vec<&str>)> = Vec::new();
        for (endpoint, answer) in self.endpoints.iter().zip(answers) {
            match answer {
                Ok((hash, value)) => {
                    match groups
                        .iter_mut()
                        .find(|(h, v, _)| *h == hash && *v == value)
                    {
                        Some(group) => group.2.push(endpoint.endpoint()),
                        None => groups.push((hash, value, vec![endpoint.endpoint()])),
                    }
                }
                Err(error) => failures.push(format!("{}: {error}", endpoint.endpoint())),
            }
        }
        let answered: usize = groups.iter().map(|g| g.2.len()).sum();
        if answered < self.k {
            return Err(self.unavailable(what, answered, &failures));
        }
        if let Some(at) = groups.iter().position(|g| g.2.len() >= self.k) {
            let (hash, value, agreeing) = groups.swap_remove(at);
            if !groups.is_empty() {
                warn!(target: CHAIN, what, block, agreed_by = ?agreeing, outvoted = ?groups.iter().map(|g| g.2.clone()).collect::<Vec<_>>(), "chain RPC endpoints disagree; the quorum's answer is used");
            }
            debug!(target: CHAIN, what, block, %hash, "read agreed by the quorum");
            return Ok(Agreed { value, block, hash });
        }
        let answers = groups
            .iter()
            .map(|(hash, _, endpoints)| {
                format!(
                    "{} answered with block hash {hash}",
                    endpoints.join(" and ")
                )
            })
            .chain(failures)
            .collect::<Vec<_>>()
            .join("; ");
        Err(QuorumError::Disagreement {
            what: what.to_string(),
            block,
            k: self.k,
            n: self.endpoints.len(),
            answers: if groups.len() > 1 && groups.windows(2).all(|w| w[0].0 == w[1].0) {
                format!("{answers} (the same block, different answers)")
            } else {
                answers
            },
        })
    }

    fn unavailable(&self, what: &str, answered: usize, failures: &[String]) -> QuorumError {
        QuorumError::Unavailable {
            what: what.to_string(),
            answered,
            n: self.endpoints.len(),
            k: self.k,
            failures: failures.join("; "),
        }
    }
}

/// The hash of block `number` as `endpoint` has it (None: it has no such block).
pub async fn block_hash(endpoint: &ChainClient, number: u64) -> Result<Option<B256>, ChainError> {
    let block = endpoint
        .provider()
        .get_block_by_number(BlockNumberOrTag::Number(number))
        .await
        .map_err(|source| ChainError::Transport {
            call: "eth_getBlockByNumber".into(),
            endpoint: endpoint.endpoint().to_string(),
            source,
        })?;
    Ok(block.map(|b| b.header.hash))
}

/// Runs the futures concurrently and returns their outputs in order.
async fn futures_join<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let futures: Vec<F> = futures.into_iter().collect();
    let mut outputs = Vec::with_capacity(futures.len());
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, future) in done.iter_mut().zip(pinned.iter_mut()) {
            if slot.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(output) => *slot = Some(output),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    for output in done.into_iter().flatten() {
        outputs.push(output);
    }
    outputs
}
