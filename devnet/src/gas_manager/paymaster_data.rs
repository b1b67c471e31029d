//! The VerifyingPaymaster's data: the hash its signer signs, stub data for estimation and the
//! signed `paymasterData` (contracts/paymaster/VerifyingPaymaster.sol).
//!
//! `paymasterAndData = paymaster (20) ‖ paymasterVerificationGasLimit (16) ‖
//! paymasterPostOpGasLimit (16) ‖ abi.encode(uint48 validUntil, uint48 validAfter, uint256
//! maxCost) (96) ‖ signature (65)`; the gas manager returns everything after the first 52 bytes
//! as `paymasterData`. `maxCost` is the most the sponsor agreed to pay for the operation: the
//! paymaster reverts `CostAboveSignedMaximum(maxCost, signedMaxCost)` (AA33) when the
//! EntryPoint's maximum cost of the operation is above it.

use alloy::primitives::aliases::U48;
use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolValue;
use attestmesh_chain::DUMMY_SIGNATURE;
use attestmesh_types::UserOperation;

/// Length of the sponsor's terms in paymasterData: `abi.encode(uint48, uint48, uint256)`.
pub const TERMS_LEN: usize = 96;

/// Length of the paymasterData this paymaster takes: the terms (96) + signature (65).
pub const PAYMASTER_DATA_LEN: usize = TERMS_LEN + 65;

/// What the sponsor signs beside the operation: the validity window (unix seconds) and the most
/// the operation may cost the paymaster's deposit, in wei.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SponsorTerms {
    pub valid_until: U48,
    pub valid_after: U48,
    pub max_cost: U256,
}

impl SponsorTerms {
    /// `abi.encode(uint48 validUntil, uint48 validAfter, uint256 maxCost)`.
    pub fn encode(&self) -> Vec<u8> {
        (self.valid_until, self.valid_after, self.max_cost).abi_encode()
    }

    /// The terms at the start of a paymasterData, or `None` when it is too short or they do
    /// not decode.
    pub fn decode(paymaster_data: &[u8]) -> Option<Self> {
        let terms = paymaster_data.get(..TERMS_LEN)?;
        let (valid_until, valid_after, max_cost) = <(U48, U48, U256)>::abi_decode(terms).ok()?;
        Some(Self {
            valid_until,
            valid_after,
            max_cost,
        })
    }
}

/// Exactly `VerifyingPaymaster.getHash(op, validUntil, validAfter, maxCost)` on chain
/// `chain_id` for the paymaster at `paymaster`: keccak256(abi.encode(sender, nonce,
/// keccak(initCode), keccak(callData), accountGasLimits, bytes32(paymasterAndData[20:52]),
/// preVerificationGas, gasFees, chainId, paymaster, validUntil, validAfter, maxCost)).
/// `op.paymaster` must be set (its gas limits are part of the hash); the op's paymasterData and
/// signature are not.
pub fn paymaster_hash(
    op: &UserOperation,
    chain_id: u64,
    paymaster: Address,
    terms: SponsorTerms,
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
            terms.valid_until,
            terms.valid_after,
            terms.max_cost,
        )
            .abi_encode(),
    )
}

/// Stub paymasterData of the final length for gas estimation (field note 2): an empty window,
/// `maxCost` at its largest (so the cost check never trips while the gas fields are still
/// being measured, and every byte of it counts as non-zero calldata) and a well-formed 65-byte
/// dummy signature (low-s, v = 27), so the paymaster runs its full check (and fails it).
pub fn stub_paymaster_data() -> Bytes {
    let terms = SponsorTerms {
        valid_until: U48::ZERO,
        valid_after: U48::ZERO,
        max_cost: U256::MAX,
    };
    let mut data = terms.encode();
    data.extend_from_slice(&DUMMY_SIGNATURE);
    data.into()
}

/// The sponsor's EIP-191 signature over [`paymaster_hash`], as the final paymasterData.
pub fn signed_paymaster_data(
    sponsor: &PrivateKeySigner,
    op: &UserOperation,
    chain_id: u64,
    paymaster: Address,
    terms: SponsorTerms,
) -> Result<Bytes, alloy::signers::Error> {
    let hash = paymaster_hash(op, chain_id, paymaster, terms);
    let signature = sponsor.sign_message_sync(hash.as_slice())?;
    let mut data = terms.encode();
    data.extend_from_slice(&signature.as_bytes());
    Ok(data.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stub_has_the_final_length_the_largest_cost_and_even_hex() {
        let stub = stub_paymaster_data();
        assert_eq!(stub.len(), PAYMASTER_DATA_LEN);
        assert_eq!(PAYMASTER_DATA_LEN, 161);
        let terms = SponsorTerms::decode(&stub).unwrap();
        assert_eq!(terms.max_cost, U256::MAX);
        assert_eq!(&stub[TERMS_LEN..], DUMMY_SIGNATURE.as_slice());
        assert!(attestmesh_types::hex::is_even_hex(
            &attestmesh_types::hex::bytes_hex(&stub)
        ));
    }

    #[test]
    fn terms_encode_as_three_words_and_round_trip() {
        let terms = SponsorTerms {
            valid_until: U48::from(1_700_000_000u64),
            valid_after: U48::from(7u64),
            max_cost: U256::from(123_456_789u64),
        };
        let encoded = terms.encode();
        assert_eq!(encoded.len(), TERMS_LEN);
        assert_eq!(
            U256::from_be_slice(&encoded[64..96]),
            U256::from(123_456_789u64)
        );
        assert_eq!(SponsorTerms::decode(&encoded), Some(terms));
        assert_eq!(SponsorTerms::decode(&encoded[..95]), None);
    }
}
