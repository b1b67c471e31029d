//! ERC-4337 v0.7 UserOperations: the unpacked JSON-RPC form bundlers and gas managers speak,
//! the packed form the EntryPoint takes, and the userOpHash.

use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::sol_types::SolValue;
use serde::{Deserialize, Serialize};

use crate::hex::{opt_quantity, quantity};

/// A v0.7 UserOperation as sent to `eth_sendUserOperation` (unpacked fields, camelCase JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserOperation {
    pub sender: Address,
    #[serde(with = "quantity")]
    pub nonce: U256,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factory: Option<Address>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factory_data: Option<Bytes>,
    pub call_data: Bytes,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paymaster: Option<Address>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paymaster_data: Option<Bytes>,
    pub signature: Bytes,
}

/// The EntryPoint's packed form of a UserOperation (`PackedUserOperation` in Solidity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedUserOp {
    pub sender: Address,
    pub nonce: U256,
    pub init_code: Bytes,
    pub call_data: Bytes,
    pub account_gas_limits: B256,
    pub pre_verification_gas: U256,
    pub gas_fees: B256,
    pub paymaster_and_data: Bytes,
    pub signature: Bytes,
}

/// Two 128-bit values in one word, high then low, as v0.7 packs gas limits and fees.
pub fn pack_u128_pair(high: U256, low: U256) -> B256 {
    B256::from((high << 128) | (low & U256::from(u128::MAX)))
}

impl UserOperation {
    /// initCode = factory ‖ factoryData, or empty when the account exists.
    pub fn init_code(&self) -> Bytes {
        match self.factory {
            Some(factory) => {
                let mut out = factory.to_vec();
                if let Some(data) = &self.factory_data {
                    out.extend_from_slice(data);
                }
                out.into()
            }
            None => Bytes::new(),
        }
    }

    /// paymasterAndData = paymaster ‖ verificationGasLimit (16) ‖ postOpGasLimit (16) ‖ data.
    pub fn paymaster_and_data(&self) -> Bytes {
        match self.paymaster {
            Some(paymaster) => {
                let mut out = paymaster.to_vec();
                let verification = self.paymaster_verification_gas_limit.unwrap_or(U256::ZERO);
                let post_op = self.paymaster_post_op_gas_limit.unwrap_or(U256::ZERO);
                out.extend_from_slice(&verification.to_be_bytes::<32>()[16..]);
                out.extend_from_slice(&post_op.to_be_bytes::<32>()[16..]);
                if let Some(data) = &self.paymaster_data {
                    out.extend_from_slice(data);
                }
                out.into()
            }
            None => Bytes::new(),
        }
    }

    /// The packed form the EntryPoint's `handleOps` takes.
    pub fn pack(&self) -> PackedUserOp {
        PackedUserOp {
            sender: self.sender,
            nonce: self.nonce,
            init_code: self.init_code(),
            call_data: self.call_data.clone(),
            account_gas_limits: pack_u128_pair(self.verification_gas_limit, self.call_gas_limit),
            pre_verification_gas: self.pre_verification_gas,
            gas_fees: pack_u128_pair(self.max_priority_fee_per_gas, self.max_fee_per_gas),
            paymaster_and_data: self.paymaster_and_data(),
            signature: self.signature.clone(),
        }
    }

    /// The v0.7 userOpHash: keccak256(abi.encode(keccak256(pack(op)), entryPoint, chainId)),
    /// where pack hashes the dynamic fields and leaves the signature out.
    pub fn hash(&self, entry_point: Address, chain_id: u64) -> B256 {
        let packed = self.pack();
        let inner = (
            packed.sender,
            packed.nonce,
            keccak256(&packed.init_code),
            keccak256(&packed.call_data),
            packed.account_gas_limits,
            packed.pre_verification_gas,
            packed.gas_fees,
            keccak256(&packed.paymaster_and_data),
        )
            .abi_encode();
        keccak256((keccak256(inner), entry_point, U256::from(chain_id)).abi_encode())
    }

    /// The most the EntryPoint may charge for this operation (its `requiredPreFund` in v0.7):
    /// (verificationGasLimit + callGasLimit + paymasterVerificationGasLimit +
    /// paymasterPostOpGasLimit + preVerificationGas) × maxFeePerGas. Saturating: a value that
    /// overflows is above every cap.
    pub fn max_cost(&self) -> U256 {
        let gas = self
            .verification_gas_limit
            .saturating_add(self.call_gas_limit)
            .saturating_add(self.paymaster_verification_gas_limit.unwrap_or_default())
            .saturating_add(self.paymaster_post_op_gas_limit.unwrap_or_default())
            .saturating_add(self.pre_verification_gas);
        gas.saturating_mul(self.max_fee_per_gas)
    }

    /// Every gas field, for logs (no calldata, no signature).
    pub fn gas_summary(&self) -> String {
        format!(
            "callGas={} verificationGas={} preVerificationGas={} maxFee={} maxPriorityFee={} pmVerificationGas={} pmPostOpGas={}",
            self.call_gas_limit,
            self.verification_gas_limit,
            self.pre_verification_gas,
            self.max_fee_per_gas,
            self.max_priority_fee_per_gas,
            self.paymaster_verification_gas_limit.unwrap_or(U256::ZERO),
            self.paymaster_post_op_gas_limit.unwrap_or(U256::ZERO),
        )
    }
}

/// `eth_estimateUserOperationGas` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserOperationGasEstimate {
    #[serde(with = "quantity")]
    pub pre_verification_gas: U256,
    #[serde(with = "quantity")]
    pub verification_gas_limit: U256,
    #[serde(with = "quantity")]
    pub call_gas_limit: U256,
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
}

/// `eth_getUserOperationReceipt` result. Real bundlers differ in the optional parts (alto sends
/// no `reason`), so only what every bundler sends is required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserOperationReceipt {
    pub user_op_hash: B256,
    pub entry_point: Address,
    pub sender: Address,
    #[serde(with = "quantity")]
    pub nonce: U256,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paymaster: Option<Address>,
    #[serde(with = "quantity")]
    pub actual_gas_cost: U256,
    #[serde(with = "quantity")]
    pub actual_gas_used: U256,
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub logs: Vec<serde_json::Value>,
    pub receipt: TransactionReceiptSummary,
}

/// The parts of the bundle transaction's receipt the project reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionReceiptSummary {
    pub transaction_hash: B256,
    #[serde(with = "quantity")]
    pub block_number: U256,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_hash: Option<B256>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::address;

    fn sample() -> UserOperation {
        UserOperation {
            sender: address!("0x1111111111111111111111111111111111111111"),
            nonce: U256::from(5),
            factory: None,
            factory_data: None,
            call_data: Bytes::from(vec![0xde, 0xad]),
            call_gas_limit: U256::from(100_000),
            verification_gas_limit: U256::from(200_000),
            pre_verification_gas: U256::from(50_000),
            max_fee_per_gas: U256::from(2_000_000_000u64),
            max_priority_fee_per_gas: U256::from(1_000_000_000u64),
            paymaster: Some(address!("0x2222222222222222222222222222222222222222")),
            paymaster_verification_gas_limit: Some(U256::from(70_000)),
            paymaster_post_op_gas_limit: Some(U256::ZERO),
            paymaster_data: Some(Bytes::from(vec![1, 2, 3])),
            signature: Bytes::from(vec![0u8; 65]),
        }
    }

    #[test]
    fn json_uses_camel_case_and_even_hex() {
        let json = serde_json::to_value(sample()).unwrap();
        assert_eq!(json["nonce"], "0x05");
        assert_eq!(json["callGasLimit"], "0x0186a0");
        assert_eq!(json["paymasterPostOpGasLimit"], "0x00");
        assert!(
            json.get("factory").is_none(),
            "absent optionals are omitted"
        );
        let back: UserOperation = serde_json::from_value(json).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn paymaster_and_data_layout() {
        let pnd = sample().paymaster_and_data();
        assert_eq!(pnd.len(), 20 + 16 + 16 + 3);
        assert_eq!(&pnd[..20], sample().paymaster.unwrap().as_slice());
        assert_eq!(U256::from_be_slice(&pnd[20..36]), U256::from(70_000));
        assert_eq!(&pnd[52..], &[1, 2, 3]);
    }

    #[test]
    fn max_cost_is_every_gas_limit_times_the_max_fee() {
        // (200k + 100k + 70k + 0 + 50k) × 2 gwei.
        assert_eq!(
            sample().max_cost(),
            U256::from(420_000u64) * U256::from(2_000_000_000u64)
        );
        let mut huge = sample();
        huge.pre_verification_gas = U256::MAX;
        assert_eq!(huge.max_cost(), U256::MAX);
    }

    #[test]
    fn packing_puts_high_then_low() {
        let packed = sample().pack();
        assert_eq!(
            U256::from_be_slice(&packed.account_gas_limits[..16]),
            U256::from(200_000)
        );
        assert_eq!(
            U256::from_be_slice(&packed.account_gas_limits[16..]),
            U256::from(100_000)
        );
        assert_eq!(
            U256::from_be_slice(&packed.gas_fees[..16]),
            U256::from(1_000_000_000u64)
        );
    }
}
