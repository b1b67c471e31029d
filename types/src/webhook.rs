//! The paymaster webhook contract (Alchemy gas manager custom rules):
//! `POST {userOperation, policyId, chainId, webhookData}` → `{"approved": true|false}`.

use alloy::primitives::{Address, Bytes, U256};
use serde::{Deserialize, Serialize};

use crate::hex::opt_quantity;

/// What the gas manager posts. `userOperation` is kept as JSON: gas managers differ in what they
/// send ([`SponsoredCall`] and [`SponsoredGas`] read the parts the webhook checks). `chainId`
/// comes as a string or a number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookRequest {
    pub user_operation: serde_json::Value,
    pub policy_id: String,
    pub chain_id: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_data: Option<String>,
}

/// The webhook's answer. Alchemy reads `approved`; `reason` is this project's addition so a
/// denial can be shown to the node that asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookResponse {
    pub approved: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the policy needs of the operation: who sends what. `nonce` identifies the operation
/// among the sender's pending ones (ERC-7677 asks the webhook twice for one operation: stub,
/// then final data); absent when a gas manager leaves it out.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SponsoredCall {
    pub sender: Address,
    pub call_data: Bytes,
    #[serde(default, with = "opt_quantity")]
    pub nonce: Option<U256>,
}

/// The operation's gas fields. Each is `None` until set: Alchemy's
/// `alchemy_requestGasAndPaymasterAndData` (and this project's gas manager emulator) asks the
/// webhook before it has estimated gas, ERC-7677's `pm_getPaymasterData` after the wallet set
/// them. Read leniently (hex, decimal string or number), like every quantity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SponsoredGas {
    #[serde(default, with = "opt_quantity")]
    pub call_gas_limit: Option<U256>,
    #[serde(default, with = "opt_quantity")]
    pub verification_gas_limit: Option<U256>,
    #[serde(default, with = "opt_quantity")]
    pub pre_verification_gas: Option<U256>,
    #[serde(default, with = "opt_quantity")]
    pub max_fee_per_gas: Option<U256>,
    #[serde(default, with = "opt_quantity")]
    pub max_priority_fee_per_gas: Option<U256>,
    #[serde(default, with = "opt_quantity")]
    pub paymaster_verification_gas_limit: Option<U256>,
    #[serde(default, with = "opt_quantity")]
    pub paymaster_post_op_gas_limit: Option<U256>,
}

impl SponsoredGas {
    /// The gas fields of a webhook request's `userOperation`, naming the field that does not
    /// read as a quantity. `null` counts as absent.
    pub fn from_user_operation(op: &serde_json::Value) -> Result<Self, String> {
        let field = |name: &str| -> Result<Option<U256>, String> {
            match op.get(name) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(value) => crate::hex::parse_quantity(value)
                    .map(Some)
                    .map_err(|e| format!("userOperation.{name}: {e}")),
            }
        };
        Ok(Self {
            call_gas_limit: field("callGasLimit")?,
            verification_gas_limit: field("verificationGasLimit")?,
            pre_verification_gas: field("preVerificationGas")?,
            max_fee_per_gas: field("maxFeePerGas")?,
            max_priority_fee_per_gas: field("maxPriorityFeePerGas")?,
            paymaster_verification_gas_limit: field("paymasterVerificationGasLimit")?,
            paymaster_post_op_gas_limit: field("paymasterPostOpGasLimit")?,
        })
    }

    /// The EntryPoint's maximum cost of the operation (every gas limit times maxFeePerGas, see
    /// [`crate::UserOperation::max_cost`]), once the account's three gas fields and the fee are
    /// set; absent paymaster limits count as zero, as the EntryPoint reads them.
    pub fn max_cost(&self) -> Option<U256> {
        let gas = self
            .verification_gas_limit?
            .saturating_add(self.call_gas_limit?)
            .saturating_add(self.pre_verification_gas?)
            .saturating_add(self.paymaster_verification_gas_limit.unwrap_or_default())
            .saturating_add(self.paymaster_post_op_gas_limit.unwrap_or_default());
        Some(gas.saturating_mul(self.max_fee_per_gas?))
    }
}

/// Reads a chain id given as `8453`, `"8453"` or `"0x2105"`.
pub fn parse_chain_id(value: &serde_json::Value) -> Result<u64, String> {
    let quantity = crate::hex::parse_quantity(value)?;
    u64::try_from(quantity).map_err(|_| format!("chain id {quantity} does not fit in 64 bits"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_id_as_string_number_or_hex() {
        assert_eq!(parse_chain_id(&serde_json::json!(8453)), Ok(8453));
        assert_eq!(parse_chain_id(&serde_json::json!("8453")), Ok(8453));
        assert_eq!(parse_chain_id(&serde_json::json!("0x2105")), Ok(8453));
        assert!(parse_chain_id(&serde_json::json!("base")).is_err());
    }

    #[test]
    fn gas_fields_are_optional_and_the_cost_needs_all_of_the_accounts() {
        let partial: SponsoredGas = serde_json::from_value(serde_json::json!({
            "sender": "0x1111111111111111111111111111111111111111",
            "nonce": "0x00",
            "callData": "0x",
        }))
        .unwrap();
        assert_eq!(partial, SponsoredGas::default());
        assert_eq!(partial.max_cost(), None);
        let full: SponsoredGas = serde_json::from_value(serde_json::json!({
            "callGasLimit": "0x0186a0",
            "verificationGasLimit": 200000,
            "preVerificationGas": "50000",
            "maxFeePerGas": "0x3b9aca00",
            "paymasterVerificationGasLimit": "0x2710",
        }))
        .unwrap();
        assert_eq!(full.pre_verification_gas, Some(U256::from(50_000)));
        assert_eq!(
            full.max_cost(),
            Some(U256::from(360_000u64) * U256::from(1_000_000_000u64))
        );
        let bad = SponsoredGas::from_user_operation(&serde_json::json!({"callGasLimit": "lots"}));
        assert!(bad.unwrap_err().contains("userOperation.callGasLimit"));
        let same = SponsoredGas::from_user_operation(&serde_json::json!({
            "callGasLimit": "0x0186a0", "verificationGasLimit": 200000, "preVerificationGas": "50000",
            "maxFeePerGas": "0x3b9aca00", "paymasterVerificationGasLimit": "0x2710",
            "paymasterPostOpGasLimit": null,
        }));
        assert_eq!(same, Ok(full));
    }
}
