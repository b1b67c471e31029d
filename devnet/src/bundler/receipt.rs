//! `eth_getUserOperationReceipt`: the op's receipt, read from the bundle transaction's receipt.
//!
//! The op's outcome is its `UserOperationEvent`; its logs are those the EntryPoint emitted for
//! it, i.e. everything after the bundle's `BeforeExecution` (or the previous op's event) up to
//! its own event, which includes a `UserOperationRevertReason` when its call reverted. Logs are
//! written with even-length hex quantities (field note 2), in the shape `eth_getLogs` uses, so
//! clients parse them as ordinary logs.

use alloy::primitives::{Address, B256, U256};
use alloy::rpc::types::{Log, TransactionReceipt};
use alloy::sol_types::SolEvent;
use attestmesh_bindings::entry_point::EntryPoint;
use attestmesh_types::UserOperationReceipt;
use attestmesh_types::hex::even_quantity;
use attestmesh_types::jsonrpc::ErrorObject;
use attestmesh_types::userop::TransactionReceiptSummary;
use serde_json::{Value, json};

use super::jsonrpc_server::internal_error;

/// The op's receipt from the mined bundle transaction `receipt`.
pub(super) fn from_bundle(
    hash: B256,
    entry_point: Address,
    receipt: &TransactionReceipt,
) -> Result<UserOperationReceipt, ErrorObject> {
    let tx = receipt.transaction_hash;
    let logs = receipt.inner.logs();
    let is_entry_point_event = |log: &Log, signature: B256| {
        log.address() == entry_point && log.topic0() == Some(&signature)
    };
    let Some(index) = logs.iter().position(|log| {
        is_entry_point_event(log, EntryPoint::UserOperationEvent::SIGNATURE_HASH)
            && log.topics().get(1) == Some(&hash)
    }) else {
        return Err(if receipt.status() {
            internal_error(format!(
                "bundle transaction {tx} has no UserOperationEvent for operation {hash}"
            ))
        } else {
            internal_error(format!(
                "the bundle transaction {tx} of operation {hash} reverted on chain (the state changed after simulation); \
                 the operation was not executed: send it again with a fresh nonce and signature"
            ))
        });
    };
    let event = logs[index]
        .log_decode::<EntryPoint::UserOperationEvent>()
        .map_err(|e| {
            internal_error(format!(
                "the UserOperationEvent of {hash} in transaction {tx} does not decode: {e}"
            ))
        })?;
    let event = event.inner.data;
    let start = logs[..index]
        .iter()
        .rposition(|log| {
            is_entry_point_event(log, EntryPoint::BeforeExecution::SIGNATURE_HASH)
                || is_entry_point_event(log, EntryPoint::UserOperationEvent::SIGNATURE_HASH)
        })
        .map_or(0, |position| position + 1);
    let own_logs = &logs[start..index];
    let reason = if event.success {
        None
    } else {
        own_logs
            .iter()
            .filter(|log| {
                is_entry_point_event(log, EntryPoint::UserOperationRevertReason::SIGNATURE_HASH)
            })
            .find_map(|log| {
                log.log_decode::<EntryPoint::UserOperationRevertReason>()
                    .ok()
            })
            .map(|log| attestmesh_chain::revert::decode(&log.inner.data.revertReason))
    };
    let block_number = receipt.block_number.ok_or_else(|| {
        internal_error(format!(
            "the chain RPC's receipt of {tx} has no block number"
        ))
    })?;
    Ok(UserOperationReceipt {
        user_op_hash: hash,
        entry_point,
        sender: event.sender,
        nonce: event.nonce,
        paymaster: (event.paymaster != Address::ZERO).then_some(event.paymaster),
        actual_gas_cost: event.actualGasCost,
        actual_gas_used: event.actualGasUsed,
        success: event.success,
        reason,
        logs: own_logs.iter().map(log_json).collect(),
        receipt: TransactionReceiptSummary {
            transaction_hash: tx,
            block_number: U256::from(block_number),
            block_hash: receipt.block_hash,
        },
    })
}

/// A log in `eth_getLogs` shape with even-length hex quantities.
pub(super) fn log_json(log: &Log) -> Value {
    let quantity = |value: Option<u64>| value.map(|v| even_quantity(U256::from(v)));
    json!({
        "address": log.address(),
        "topics": log.topics(),
        "data": log.data().data,
        "blockNumber": quantity(log.block_number),
        "blockHash": log.block_hash,
        "transactionHash": log.transaction_hash,
        "transactionIndex": quantity(log.transaction_index),
        "logIndex": quantity(log.log_index),
        "removed": log.removed,
    })
}
