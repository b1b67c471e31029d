//! The paymaster webhook contract (Alchemy gas manager custom rules):
//! `POST {userOperation, policyId, chainId, webhookData}` → `{"approved": true|false}`.

use alloy::primitives::{Address, Bytes};
use serde::{Deserialize, Serialize};

/// What the gas manager posts. `userOperation` is kept as JSON: only `sender` and `callData` are
/// read, and gas managers differ in the rest. `chainId` comes as a string or a number.
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

/// The two fields of the operation the policy needs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SponsoredCall {
    pub sender: Address,
    pub call_data: Bytes,
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
}
