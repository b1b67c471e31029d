//! A gas manager emulator: a stand-in for Alchemy's Gas Manager in front of the project's
//! VerifyingPaymaster, for EntryPoint v0.7.
//!
//! * `alchemy_requestGasAndPaymasterAndData [{policyId, entryPoint, dummySignature,
//!   userOperation, webhookData?}]` → gas, fees and signed paymaster data in one call.
//! * ERC-7677 `pm_getPaymasterStubData` / `pm_getPaymasterData [userOp, entryPoint, chainId,
//!   {policyId, webhookData?}]` → stub data for estimation, then the signed data.
//!
//! Every request goes the same way: the policy id must be one it serves and the EntryPoint
//! v0.7; the paymaster **webhook** is asked (`POST {userOperation, policyId, chainId,
//! webhookData}` with `Authorization: Bearer <secret>`), and a denial comes back as -32600
//! "sponsorship denied by the paymaster webhook: <reason>"; fees are read from the chain
//! (priority fee from `eth_maxPriorityFeePerGas`, max fee = 2 × base fee + priority); gas comes
//! from the bundler's `eth_estimateUserOperationGas` (this crate's bundler or @pimlico/alto) on
//! the op with the client's dummy signature and stub paymaster data of the final length; then
//! the sponsor key signs exactly `VerifyingPaymaster.getHash` ([`paymaster_data`]) with EIP-191,
//! over the op and its terms: the validity window and maxCost, the op's EntryPoint maximum cost.
//!
//! It never signs what it would not have chosen itself (issue 14: a member's send with
//! preVerificationGas 40M and 200 gwei fees was signed as given and drained 8 ETH): in
//! `pm_getPaymasterData` each gas field may be at most [`GAS_FIELD_MARGIN_PERCENT`] of its own
//! estimate and each fee at most [`FEE_MARGIN_PERCENT`] of its own quote, and no operation whose
//! maximum cost is above the operator's per-operation cap
//! ([`GasManagerConfig::max_cost_per_op`], [`DEFAULT_MAX_COST_PER_OP_WEI`]) is signed in either
//! flow. A refusal is -32600 "sponsorship refused by the gas manager: cap: <field> <value> is
//! above … <cap>" and costs the sponsor nothing.
//!
//! Before serving it checks its preconditions: the chain id, the paymaster's code, that the
//! sponsor key is the paymaster's `verifyingSigner`, and that the bundler serves the EntryPoint.
//! Bad input gets a JSON-RPC error naming the field and the service keeps serving; every hex
//! value it writes is even-length (field note 2).

mod args;
mod error;
pub mod paymaster_data;
mod server;
mod service;
mod webhook;

pub use args::{GasManagerArgs, run};
pub use error::{GasManagerError, Result};
pub use server::{
    DEFAULT_MAX_COST_PER_OP_WEI, DEFAULT_VALIDITY, GasManager, GasManagerConfig, GasManagerHandle,
};
pub use service::{FEE_MARGIN_PERCENT, GAS_FIELD_MARGIN_PERCENT, METHODS};
pub use webhook::{WEBHOOK_TIMEOUT, WebhookError, WebhookSecret};

/// `tracing` target of the gas manager's log lines (requests are logged under
/// `attestmesh::devnet::jsonrpc`).
pub const LOG_TARGET: &str = "attestmesh::devnet::gas_manager";
