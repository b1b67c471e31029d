//! The VerifyingPaymaster's data: the hash its signer signs, stub data for estimation and the
//! signed `paymasterData` (contracts/paymaster/VerifyingPaymaster.sol).
//!
//! `paymasterAndData = paymaster (20) ‖ verificationGasLimit (16) ‖ postOpGasLimit (16) ‖
//! abi.encode(uint48 validUntil, uint48 validAfter) (64) ‖ signature (65)`; the gas manager
//! returns everything after the first 52 bytes as `paymasterData`.

use alloy::primitives::aliases::U48;
use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolValue;
use attestmesh_chain::DUMMY_SIGNATURE;
use attestmesh_types::UserOperation;

/// Length of the paymasterData this paymaster takes: validity window (64) + signature (65).
pub const PAYMASTER_DATA_LEN: usize = 64 + 65;

/// The paymaster's validity window (`validUntil`, `validAfter`), unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub valid_until: U48,
    pub valid_after: U48,
}

impl Validity {
    /// `abi.encode(uint48 validUntil, uint48 validAfter)`.
    pub fn encode(&self) -> Vec<u8> {
        (self.valid_until, self.valid_after).abi_encode()
    }
}

/// Exactly `VerifyingPaymaster.getHash(op, validUntil, validAfter)` on chain `chain_id` for the
/// paymaster at `paymaster`: keccak256(abi.encode(sender, nonce, keccak(initCode),
/// keccak(callData), accountGasLimits, bytes32(paymasterAndData[20:52]), preVerificationGas,
/// gasFees, chainId, paymaster, validUntil, validAfter)). `op.paymaster` must be set (its gas
/// limits are part of the hash); the op's paymasterData and signature are not.
pub fn paymaster_hash(
    op: &UserOperation,
    chain_id: u64,
    paymaster: Address,
    validity: Validity,
) -> B256 {
    let packed = op.pack();
    // paymasterAndData[20:52]: the paymaster's verification and postOp gas limits, 16 bytes each.
    let mut paymaster_gas = [0u8; 32];
    if let Some(limits) = packed.paymaster_and_data.get(20..52) {
        paymaster_gas.copy_from_slice(limits);
    }
    keccak256(
        (
            packed.sender,
            packed.nonce,
            keccak256(&packed.init_code),
            keccak256(&packed.call_data),
            packed.account_gas_limits,
            B256::from(paymaster_gas),
            packed.pre_verification_gas,
            packed.gas_fees,
            U256::from(chain_id),
            paymaster,
            validity.valid_until,
            validity.valid_after,
        )
            .abi_encode(),
    )
}

/// Stub paymasterData of the final length for gas estimation: the window and a well-formed
/// 65-byte dummy signature (low-s, v = 27), so the paymaster runs its full check (and fails it).
pub fn stub_paymaster_data(validity: Validity) -> Bytes {
    let mut data = validity.encode();
    data.extend_from_slice(&DUMMY_SIGNATURE);
    data.into()
}

/// The sponsor's EIP-191 signature over [`paymaster_hash`], as the final paymasterData.
pub fn signed_paymaster_data(
    sponsor: &PrivateKeySigner,
    op: &UserOperation,
    chain_id: u64,
    paymaster: Address,
    validity: Validity,
) -> Result<Bytes, alloy::signers::Error> {
    let hash = paymaster_hash(op, chain_id, paymaster, validity);
    let signature = sponsor.sign_message_sync(hash.as_slice())?;
    let mut data = validity.encode();
    data.extend_from_slice(&signature.as_bytes());
    Ok(data.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_has_the_final_length_and_even_hex() {
        let validity = Validity {
            valid_until: U48::from(1_700_000_000u64),
            valid_after: U48::ZERO,
        };
        let stub = stub_paymaster_data(validity);
        assert_eq!(stub.len(), PAYMASTER_DATA_LEN);
        assert_eq!(&stub[..64], validity.encode().as_slice());
        assert!(attestmesh_types::hex::is_even_hex(
            &attestmesh_types::hex::bytes_hex(&stub)
        ));
    }
}
