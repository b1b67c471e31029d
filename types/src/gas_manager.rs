//! The gas manager contract: Alchemy's `alchemy_requestGasAndPaymasterAndData` and ERC-7677's
//! `pm_getPaymasterStubData` / `pm_getPaymasterData`, for EntryPoint v0.7.

use alloy::primitives::{Address, Bytes, U256};
use serde::{Deserialize, Serialize};

use crate::hex::{opt_quantity, quantity};

/// The operation as the client knows it before gas and paymaster data are filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartialUserOperation {
    pub sender: Address,
    #[serde(with = "quantity")]
    pub nonce: U256,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factory: Option<Address>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factory_data: Option<Bytes>,
    pub call_data: Bytes,
}

/// `alchemy_requestGasAndPaymasterAndData` params[0].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestGasAndPaymasterData {
    pub policy_id: String,
    pub entry_point: Address,
    /// A well-formed, even-length, 65-byte signature for estimation (field note 2).
    pub dummy_signature: Bytes,
    pub user_operation: PartialUserOperation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_data: Option<String>,
}

/// `alchemy_requestGasAndPaymasterAndData` result (v0.7 fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GasAndPaymasterData {
    pub paymaster: Address,
    pub paymaster_data: Bytes,
    #[serde(with = "quantity")]
    pub paymaster_verification_gas_limit: U256,
    #[serde(with = "quantity")]
    pub paymaster_post_op_gas_limit: U256,
    #[serde(with = "quantity")]
    pub call_gas_limit: U256,
    #[serde(with = "quantity")]
    pub verification_gas_limit: U256,
    #[serde(with = "quantity")]
    pub pre_verification_gas: U256,
    #[serde(with = "quantity")]
    pub max_fee_per_gas: U256,
    #[serde(with = "quantity")]
    pub max_priority_fee_per_gas: U256,
}

/// ERC-7677 result of `pm_getPaymasterStubData` and `pm_getPaymasterData` (v0.7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymasterData {
    pub paymaster: Address,
    pub paymaster_data: Bytes,
    #[serde(
        default,
        with = "opt_quantity",
        skip_serializing_if = "Option::is_none"
    )]
    pub paymaster_verification_gas_limit: Option<U256>,
    #[serde(
        default,
        with = "opt_quantity",
        skip_serializing_if = "Option::is_none"
    )]
    pub paymaster_post_op_gas_limit: Option<U256>,
    /// ERC-7677: true when the stub data is already final (no pm_getPaymasterData needed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_final: Option<bool>,
}
