//! Where catch-up starts: the factory's deploy block, found by binary search over `eth_getCode`
//! (field note 8: paging from block 0 of a 47-million-block chain never finishes).
//!
//! The search runs only over blocks the RPC has: first the earliest existing block is found by
//! the same method (a block the RPC does not have answers "no such block", which is neither
//! "code" nor "no code"), then the first block at which the factory has code, between that
//! block and the head. Both are binary searches, so the whole costs about
//! `log2(head) + log2(head - earliest)` calls; every call is counted and logged.

use std::time::Instant;

use alloy::primitives::Address;
use attestmesh_bindings::factory::ClusterFactory;
use attestmesh_chain::ChainError;
use serde::Serialize;
use tracing::{debug, info, warn};

use crate::LOG_TARGET;
use crate::error::{IndexerError, Result};
use crate::rpc::{CodeAt, IndexerRpc};

/// How the start block was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartSource {
    /// `INDEXER_START_BLOCK` / `--start-block`.
    Configured,
    /// Binary search over `eth_getCode`.
    CodeSearch,
    /// The factory already had code at the earliest block the RPC serves state for, so the
    /// search could not see it appear; the factory's own `deployBlock()` was used.
    FactoryRecord,
}

/// The outcome of the search, with its cost.
#[derive(Debug, Clone, Serialize)]
pub struct StartBlockSearch {
    /// The block catch-up starts at.
    pub block: u64,
    pub source: StartSource,
    /// The chain head when the search ran.
    pub head: u64,
    /// The earliest block the RPC has (e.g. anvil's `--number`); 0 on a full archive node.
    pub earliest_block: u64,
    /// What the factory recorded as its deploy block (a cross-check; `None` if unreadable).
    pub recorded_deploy_block: Option<u64>,
    /// RPC calls the search made, all methods.
    pub rpc_calls: u64,
    /// `eth_getCode` probes answered "no such block".
    pub missing_block_probes: u64,
    /// `eth_getCode` probes answered "no code" at an existing block.
    pub no_code_probes: u64,
    /// `eth_getCode` probes that found code.
    pub code_probes: u64,
    pub elapsed_ms: u64,
}

/// A configured start block, recorded in the same shape as a search.
pub fn configured(block: u64) -> StartBlockSearch {
    StartBlockSearch {
        block,
        source: StartSource::Configured,
        head: 0,
        earliest_block: 0,
        recorded_deploy_block: None,
        rpc_calls: 0,
        missing_block_probes: 0,
        no_code_probes: 0,
        code_probes: 0,
        elapsed_ms: 0,
    }
}

struct Prober<'a> {
    rpc: &'a IndexerRpc,
    factory: Address,
    calls: u64,
    missing: u64,
    no_code: u64,
    code: u64,
}

impl Prober<'_> {
    async fn probe(&mut self, block: u64) -> Result<CodeAt, ChainError> {
        self.calls += 1;
        let answer = self.rpc.code_at(self.factory, block).await?;
        match &answer {
            CodeAt::Code(_) => self.code += 1,
            CodeAt::NoCode => self.no_code += 1,
            CodeAt::BlockMissing(_) => self.missing += 1,
        }
        Ok(answer)
    }
}

/// Finds the factory's deploy block between the earliest block the RPC has and the head.
pub async fn find_deploy_block(rpc: &IndexerRpc, factory: Address) -> Result<StartBlockSearch> {
    let started = Instant::now();
    let mut prober = Prober {
        rpc,
        factory,
        calls: 0,
        missing: 0,
        no_code: 0,
        code: 0,
    };
    prober.calls += 1;
    let head = rpc.block_number().await?;
    match prober.probe(head).await? {
        CodeAt::Code(_) => {}
        CodeAt::NoCode => {
            return Err(IndexerError::FactoryMissing {
                factory,
                head,
                chain_id: rpc.chain_id(),
            });
        }
        CodeAt::BlockMissing(message) => {
            return Err(IndexerError::InconsistentRpc {
                factory,
                reason: format!("the head {head} it just reported does not exist: {message}"),
            });
        }
    }

    // The earliest existing block: "missing" below it, present from it up to the head.
    let (earliest, at_earliest) = match prober.probe(0).await? {
        CodeAt::BlockMissing(_) => {
            let (mut missing, mut present) = (0u64, head);
            // Until a lower block is found, the present end is the head, which has code.
            let mut at_present = CodeAt::Code(0);
            while present - missing > 1 {
                let mid = missing + (present - missing) / 2;
                match prober.probe(mid).await? {
                    CodeAt::BlockMissing(_) => missing = mid,
                    answer => {
                        present = mid;
                        at_present = answer;
                    }
                }
            }
            (present, at_present)
        }
        answer => (0, answer),
    };
    debug!(target: LOG_TARGET, %factory, earliest, head, calls = prober.calls, "earliest existing block found");

    let (block, source) = match at_earliest {
        CodeAt::NoCode => {
            // No code at `without`, code at `with`: the deploy block is the first with code.
            let (mut without, mut with) = (earliest, head);
            while with - without > 1 {
                let mid = without + (with - without) / 2;
                match prober.probe(mid).await? {
                    CodeAt::Code(_) => with = mid,
                    CodeAt::NoCode => without = mid,
                    CodeAt::BlockMissing(message) => {
                        return Err(IndexerError::InconsistentRpc {
                            factory,
                            reason: format!(
                                "block {mid} is reported missing although {earliest} and {head} exist: {message}"
                            ),
                        });
                    }
                }
            }
            (with, StartSource::CodeSearch)
        }
        CodeAt::Code(_) => {
            // Deployed at or before the earliest block with state: only the factory knows when.
            let recorded = recorded_deploy_block(rpc, factory).await?;
            warn!(
                target: LOG_TARGET,
                %factory,
                earliest,
                recorded,
                "the factory already has code at the earliest block this RPC serves state for; using its recorded deploy block"
            );
            (recorded, StartSource::FactoryRecord)
        }
        CodeAt::BlockMissing(message) => {
            return Err(IndexerError::InconsistentRpc {
                factory,
                reason: format!(
                    "block {earliest} was found to exist and then reported missing: {message}"
                ),
            });
        }
    };

    // Cross-check with what the factory recorded (one call); a mismatch is logged, not fatal:
    // the code search is what this chain's RPC shows.
    prober.calls += 1;
    let recorded = match recorded_deploy_block(rpc, factory).await {
        Ok(recorded) => {
            if recorded != block {
                warn!(target: LOG_TARGET, %factory, found = block, recorded, "the factory's recorded deploy block differs from where its code appears");
            }
            Some(recorded)
        }
        Err(error) => {
            warn!(target: LOG_TARGET, %factory, %error, "cannot read the factory's recorded deploy block for the cross-check");
            None
        }
    };

    let search = StartBlockSearch {
        block,
        source,
        head,
        earliest_block: earliest,
        recorded_deploy_block: recorded,
        rpc_calls: prober.calls,
        missing_block_probes: prober.missing,
        no_code_probes: prober.no_code,
        code_probes: prober.code,
        elapsed_ms: started.elapsed().as_millis() as u64,
    };
    info!(
        target: LOG_TARGET,
        %factory,
        start_block = search.block,
        source = ?search.source,
        head,
        earliest_block = earliest,
        rpc_calls = search.rpc_calls,
        missing_block_probes = search.missing_block_probes,
        no_code_probes = search.no_code_probes,
        code_probes = search.code_probes,
        elapsed_ms = search.elapsed_ms,
        "factory deploy block found"
    );
    Ok(search)
}

async fn recorded_deploy_block(rpc: &IndexerRpc, factory: Address) -> Result<u64, ChainError> {
    rpc.count("eth_call");
    let block = ClusterFactory::new(factory, rpc.chain().provider().clone())
        .deployBlock()
        .call()
        .await
        .map_err(|e| rpc.chain().call_error("ClusterFactory.deployBlock", e))?;
    u64::try_from(block).map_err(|_| {
        ChainError::Config(format!(
            "ClusterFactory.deployBlock() of {factory} is {block}, beyond any block number"
        ))
    })
}
