//! The bundler's methods: validation, simulation and submission of operations, lookups.

use std::collections::HashMap;

use alloy::eips::BlockNumberOrTag;
use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::SolCall;
use attestmesh_bindings::entry_point::EntryPoint;
use attestmesh_chain::{ChainClient, DUMMY_SIGNATURE, revert};
use attestmesh_types::UserOperation;
use attestmesh_types::hex::{bytes_hex, even_quantity};
use attestmesh_types::jsonrpc::ErrorObject;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use super::LOG_TARGET;
use super::chain_calls::{chain_failure, revert_data};
use super::estimate::{Estimator, paymaster_rejected, rejected, required_pre_verification_gas};
use super::jsonrpc_server::{
    MethodResult, Methods, at_most, internal_error, invalid_params, method_not_found, param,
};
use super::packed;
use super::receipt;

/// Every method this bundler serves.
pub const METHODS: &[&str] = &[
    "eth_sendUserOperation",
    "eth_estimateUserOperationGas",
    "eth_getUserOperationReceipt",
    "eth_getUserOperationByHash",
    "eth_supportedEntryPoints",
    "eth_chainId",
];

/// The EntryPoint's own limit on every gas value (AA94).
const MAX_GAS_VALUE: u128 = (1 << 120) - 1;

/// Reserve in the bundle transaction's gas limit beyond the op's own limits: the EntryPoint
/// keeps 1/64 of the gas at each call and checks `gasleft()` against the call and postOp limits
/// plus its INNER_GAS_OVERHEAD before executing. Unused gas is refunded to the executor.
const BUNDLE_GAS_RESERVE: u64 = 100_000;

/// Gas fields an estimate request may leave out (clients send them before they know them).
const ESTIMATE_DEFAULTED_FIELDS: &[&str] = &[
    "callGasLimit",
    "verificationGasLimit",
    "preVerificationGas",
    "maxFeePerGas",
    "maxPriorityFeePerGas",
];

/// An operation this bundler sent, and the bundle transaction that carries it.
#[derive(Debug, Clone)]
struct Submitted {
    op: UserOperation,
    tx: B256,
}

/// State of one bundler: the executor's chain client, and the operations it sent (in memory:
/// a restarted bundler forgets them, as a real bundler's mempool would).
#[derive(Debug)]
pub(super) struct BundlerService {
    chain: ChainClient,
    executor: Address,
    beneficiary: Address,
    entry_point: Address,
    chain_id: u64,
    sent: Mutex<HashMap<B256, Submitted>>,
    /// One submission at a time: simulation and the executor's nonce must see the previous bundle.
    submitting: Mutex<()>,
}

impl Methods for BundlerService {
    const SERVICE: &'static str = "bundler";

    async fn call(&self, method: &str, params: Value) -> MethodResult {
        match method {
            "eth_sendUserOperation" => self.send(params).await,
            "eth_estimateUserOperationGas" => self.estimate(params).await,
            "eth_getUserOperationReceipt" => self.receipt(params).await,
            "eth_getUserOperationByHash" => self.by_hash(params).await,
            "eth_supportedEntryPoints" => {
                at_most(&params, 0, "eth_supportedEntryPoints takes no params")?;
                Ok(json!([self.entry_point]))
            }
            "eth_chainId" => {
                at_most(&params, 0, "eth_chainId takes no params")?;
                Ok(json!(even_quantity(U256::from(self.chain_id))))
            }
            other => Err(method_not_found(Self::SERVICE, other, METHODS)),
        }
    }
}

impl BundlerService {
    pub(super) fn new(
        chain: ChainClient,
        executor: Address,
        beneficiary: Address,
        entry_point: Address,
        chain_id: u64,
    ) -> Self {
        Self {
            chain,
            executor,
            beneficiary,
            entry_point,
            chain_id,
            sent: Mutex::new(HashMap::new()),
            submitting: Mutex::new(()),
        }
    }

    fn check_entry_point(&self, entry_point: Address) -> Result<(), ErrorObject> {
        if entry_point == self.entry_point {
            return Ok(());
        }
        Err(invalid_params(format!(
            "params[1] (entryPoint) {entry_point} is not supported: this bundler serves only EntryPoint v0.7 at {}",
            self.entry_point
        )))
    }

    async fn send(&self, params: Value) -> MethodResult {
        at_most(
            &params,
            2,
            "eth_sendUserOperation [userOperation, entryPoint]",
        )?;
        let op: UserOperation = param(&params, 0, "userOperation")?;
        let entry_point: Address = param(&params, 1, "entryPoint")?;
        self.check_entry_point(entry_point)?;
        let hash = op.hash(self.entry_point, self.chain_id);
        match self.submit(&op, hash).await {
            Ok(tx) => {
                info!(target: LOG_TARGET, %hash, sender = %op.sender, nonce = %op.nonce, %tx, "operation accepted and sent");
                Ok(json!(hash))
            }
            Err(error) => {
                warn!(target: LOG_TARGET, %hash, sender = %op.sender, nonce = %op.nonce, code = error.code, reason = %error.message, "operation rejected");
                Err(error)
            }
        }
    }

    /// Checks, simulates and sends `op` in a bundle of its own; the bundle transaction's hash.
    async fn submit(&self, op: &UserOperation, hash: B256) -> Result<B256, ErrorObject> {
        check_fields(op)?;
        let _turn = self.submitting.lock().await;
        if let Some(known) = self.sent.lock().await.get(&hash) {
            return Err(invalid_params(format!(
                "operation {hash} is already known (bundle transaction {}); look it up with eth_getUserOperationReceipt",
                known.tx
            )));
        }
        let provider = self.chain.provider();
        let endpoint = self.chain.endpoint();
        // The RPC behind the same URL may have been restarted as another chain; a userOpHash
        // for the wrong chain id would never verify.
        let chain_id = provider
            .get_chain_id()
            .await
            .map_err(|e| chain_failure("eth_chainId", endpoint, &e))?;
        if chain_id != self.chain_id {
            return Err(internal_error(format!(
                "the chain RPC at {endpoint} now serves chain {chain_id}, but this bundler was started for chain {}: restart it against the right chain",
                self.chain_id
            )));
        }
        let block = provider
            .get_block_by_number(BlockNumberOrTag::Latest)
            .await
            .map_err(|e| chain_failure("eth_getBlockByNumber (latest)", endpoint, &e))?
            .ok_or_else(|| {
                internal_error(format!("the chain RPC at {endpoint} has no latest block"))
            })?;
        let base_fee = block.header.base_fee_per_gas.ok_or_else(|| {
            internal_error(format!(
                "the latest block at {endpoint} has no base fee: EIP-1559 chains only"
            ))
        })?;
        if op.max_fee_per_gas < U256::from(base_fee) {
            return Err(invalid_params(format!(
                "params[0] (userOperation) field maxFeePerGas: {} is below the latest base fee {base_fee}, so the bundle could not be included; ask for fresh fees",
                op.max_fee_per_gas
            )));
        }

        let packed = op.pack();
        let required = required_pre_verification_gas(&packed);
        if op.pre_verification_gas < U256::from(required) {
            return Err(invalid_params(format!(
                "params[0] (userOperation) field preVerificationGas: {} is below the {required} this bundler needs for the op's calldata and overhead; re-estimate with eth_estimateUserOperationGas",
                op.pre_verification_gas
            )));
        }
        let gas_limit = bundle_gas_limit(op);
        if gas_limit > block.header.gas_limit {
            return Err(invalid_params(format!(
                "params[0] (userOperation): its gas limits need a bundle of {gas_limit} gas, above the block gas limit {}",
                block.header.gas_limit
            )));
        }

        let input = EntryPoint::handleOpsCall {
            ops: vec![packed::for_entry_point(&packed)],
            beneficiary: self.beneficiary,
        }
        .abi_encode();
        // Simulated with the bundle's own gas limit, so an op the limit cannot carry (AA95) is
        // caught here rather than reverting on chain.
        let simulation = TransactionRequest::default()
            .with_from(self.executor)
            .with_to(self.entry_point)
            .with_input(input.clone())
            .with_gas_limit(gas_limit);
        if let Err(err) = provider.call(simulation).await {
            return Err(match revert_data(&err) {
                Some(data) => simulation_rejection(&revert::decode(&data)),
                None => chain_failure("eth_call (handleOps simulation)", endpoint, &err),
            });
        }
        debug!(target: LOG_TARGET, %hash, gas_limit, "simulation passed");

        // The checks above bound every value to 120 bits.
        let max_fee =
            u128::try_from(op.max_fee_per_gas).map_err(|_| gas_overflow("maxFeePerGas"))?;
        let priority_fee = u128::try_from(op.max_priority_fee_per_gas)
            .map_err(|_| gas_overflow("maxPriorityFeePerGas"))?;
        let bundle = TransactionRequest::default()
            .with_from(self.executor)
            .with_to(self.entry_point)
            .with_input(input)
            .with_gas_limit(gas_limit)
            .with_max_fee_per_gas(max_fee)
            .with_max_priority_fee_per_gas(priority_fee);
        let pending = provider.send_transaction(bundle).await.map_err(|err| {
            internal_error(format!(
                "the chain RPC at {endpoint} refused the bundle transaction of operation {hash} from executor {}: {err} (check the executor's balance and nonce)",
                self.executor
            ))
        })?;
        let tx = *pending.tx_hash();
        self.sent
            .lock()
            .await
            .insert(hash, Submitted { op: op.clone(), tx });
        Ok(tx)
    }

    async fn estimate(&self, mut params: Value) -> MethodResult {
        // A third param (state overrides) is refused rather than silently ignored.
        at_most(
            &params,
            2,
            "eth_estimateUserOperationGas [userOperation, entryPoint] (state overrides are not supported)",
        )?;
        if let Some(op) = params.get_mut(0).and_then(Value::as_object_mut) {
            // Clients ask before they know gas and fees; none of these change the measurement.
            for field in ESTIMATE_DEFAULTED_FIELDS {
                op.entry(*field).or_insert_with(|| json!("0x00"));
            }
            op.entry("signature")
                .or_insert_with(|| json!(bytes_hex(&DUMMY_SIGNATURE)));
        }
        let op: UserOperation = param(&params, 0, "userOperation")?;
        let entry_point: Address = param(&params, 1, "entryPoint")?;
        self.check_entry_point(entry_point)?;
        check_fields(&op)?;
        let sender = op.sender;
        let estimator = Estimator {
            chain: &self.chain,
            entry_point: self.entry_point,
            chain_id: self.chain_id,
        };
        match estimator.estimate(op).await {
            Ok(estimate) => {
                debug!(target: LOG_TARGET, %sender, ?estimate, "estimated");
                serde_json::to_value(estimate)
                    .map_err(|e| internal_error(format!("cannot encode the estimate: {e}")))
            }
            Err(error) => {
                warn!(target: LOG_TARGET, %sender, code = error.code, reason = %error.message, "estimation failed");
                Err(error)
            }
        }
    }

    async fn receipt(&self, params: Value) -> MethodResult {
        at_most(&params, 1, "eth_getUserOperationReceipt [userOpHash]")?;
        let hash: B256 = param(&params, 0, "userOpHash")?;
        let Some(submitted) = self.sent.lock().await.get(&hash).cloned() else {
            return Ok(Value::Null);
        };
        let Some(mined) = self
            .chain
            .provider()
            .get_transaction_receipt(submitted.tx)
            .await
            .map_err(|e| chain_failure("eth_getTransactionReceipt", self.chain.endpoint(), &e))?
        else {
            return Ok(Value::Null);
        };
        let receipt = receipt::from_bundle(hash, self.entry_point, &mined).inspect_err(|error| {
            warn!(target: LOG_TARGET, %hash, tx = %submitted.tx, reason = %error.message, "operation not executed");
        })?;
        serde_json::to_value(receipt)
            .map_err(|e| internal_error(format!("cannot encode the receipt: {e}")))
    }

    async fn by_hash(&self, params: Value) -> MethodResult {
        at_most(&params, 1, "eth_getUserOperationByHash [userOpHash]")?;
        let hash: B256 = param(&params, 0, "userOpHash")?;
        let Some(submitted) = self.sent.lock().await.get(&hash).cloned() else {
            return Ok(Value::Null);
        };
        let mined = self
            .chain
            .provider()
            .get_transaction_receipt(submitted.tx)
            .await
            .map_err(|e| chain_failure("eth_getTransactionReceipt", self.chain.endpoint(), &e))?;
        // Pending bundles have no block yet: null, as bundlers answer.
        let block_number = mined
            .as_ref()
            .and_then(|r| r.block_number)
            .map(|n| even_quantity(U256::from(n)));
        let block_hash = mined.as_ref().and_then(|r| r.block_hash);
        Ok(json!({
            "userOperation": submitted.op,
            "entryPoint": self.entry_point,
            "transactionHash": submitted.tx,
            "blockNumber": block_number,
            "blockHash": block_hash,
        }))
    }
}

/// Field rules the EntryPoint would enforce less clearly (or that the packing would hide).
fn check_fields(op: &UserOperation) -> Result<(), ErrorObject> {
    let field = |name: &str, why: &str| {
        invalid_params(format!("params[0] (userOperation) field {name}: {why}"))
    };
    if op.factory.is_none()
        && op
            .factory_data
            .as_ref()
            .is_some_and(|data| !data.is_empty())
    {
        return Err(field("factoryData", "given without factory"));
    }
    if op.paymaster.is_none() {
        if op.paymaster_verification_gas_limit.is_some()
            || op.paymaster_post_op_gas_limit.is_some()
            || op
                .paymaster_data
                .as_ref()
                .is_some_and(|data| !data.is_empty())
        {
            return Err(field(
                "paymaster",
                "paymaster gas limits or data are given without a paymaster",
            ));
        }
    } else if op.paymaster_verification_gas_limit.is_none() {
        return Err(field(
            "paymasterVerificationGasLimit",
            "required when a paymaster is given",
        ));
    }
    let gas_values = [
        ("callGasLimit", op.call_gas_limit),
        ("verificationGasLimit", op.verification_gas_limit),
        ("preVerificationGas", op.pre_verification_gas),
        ("maxFeePerGas", op.max_fee_per_gas),
        ("maxPriorityFeePerGas", op.max_priority_fee_per_gas),
        (
            "paymasterVerificationGasLimit",
            op.paymaster_verification_gas_limit.unwrap_or_default(),
        ),
        (
            "paymasterPostOpGasLimit",
            op.paymaster_post_op_gas_limit.unwrap_or_default(),
        ),
    ];
    for (name, value) in gas_values {
        if value > U256::from(MAX_GAS_VALUE) {
            return Err(field(name, "AA94 gas values overflow: at most 2^120 - 1"));
        }
    }
    if op.max_priority_fee_per_gas > op.max_fee_per_gas {
        return Err(field("maxPriorityFeePerGas", "above maxFeePerGas"));
    }
    Ok(())
}

fn gas_overflow(name: &str) -> ErrorObject {
    invalid_params(format!(
        "params[0] (userOperation) field {name}: AA94 gas values overflow"
    ))
}

/// The bundle transaction's gas limit: every gas limit of the op, the 1/64 the EntryPoint's
/// calls keep back, and [`BUNDLE_GAS_RESERVE`].
fn bundle_gas_limit(op: &UserOperation) -> u64 {
    let total = op.pre_verification_gas
        + op.verification_gas_limit
        + op.call_gas_limit
        + op.paymaster_verification_gas_limit.unwrap_or_default()
        + op.paymaster_post_op_gas_limit.unwrap_or_default();
    // Every value is below 2^120 (check_fields), so the sum fits a u128 and saturates into u64.
    let total = u64::try_from(total).unwrap_or(u64::MAX);
    total
        .saturating_add(total / 63)
        .saturating_add(BUNDLE_GAS_RESERVE)
}

/// A failed simulation as the client sees it: -32501 when the paymaster is at fault (AA3x),
/// else -32500, with the decoded reason and its advice.
fn simulation_rejection(reason: &str) -> ErrorObject {
    let message = format!("handleOps simulation failed: {reason}");
    if reason.contains(": AA3") {
        paymaster_rejected(message)
    } else {
        rejected(message)
    }
}
