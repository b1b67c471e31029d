//! The paymaster hash and data the gas manager signs, against the VerifyingPaymaster contract
//! on a real chain: the same hash, the same layout, a signature that verifies, and the signed
//! maximum cost enforced.

use alloy::network::TransactionBuilder;
use alloy::primitives::aliases::U48;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use attestmesh_bindings::ENTRY_POINT_V07;
use attestmesh_bindings::paymaster::VerifyingPaymaster;
use attestmesh_devnet::bundler::packed;
use attestmesh_devnet::gas_manager::paymaster_data::{
    PAYMASTER_DATA_LEN, SponsorTerms, paymaster_hash, signed_paymaster_data, stub_paymaster_data,
};
use attestmesh_devnet::local_chain::{LocalChain, LocalChainConfig};
use attestmesh_types::UserOperation;

/// A chain with the paymaster, an operation and the terms signed for it.
struct Signing {
    chain: LocalChain,
    paymaster: Address,
    op: UserOperation,
    terms: SponsorTerms,
}

async fn signing() -> Signing {
    let chain = LocalChain::start(LocalChainConfig::default())
        .await
        .unwrap();
    let paymaster = chain.deployment().verifying_paymaster;
    // Every field distinct and non-trivial, an initCode and paymaster limits of both sizes.
    let op = UserOperation {
        sender: Address::repeat_byte(0x5a),
        nonce: U256::from(0x0102_0304_0506u64) << 64,
        factory: Some(Address::repeat_byte(0xfa)),
        factory_data: Some(Bytes::from(vec![0xde, 0xad, 0xbe, 0xef])),
        call_data: Bytes::from(vec![0x11; 77]),
        call_gas_limit: U256::from(123_456),
        verification_gas_limit: U256::from(654_321),
        pre_verification_gas: U256::from(55_555),
        max_fee_per_gas: U256::from(3_000_000_007u64),
        max_priority_fee_per_gas: U256::from(1_000_000_009u64),
        paymaster: Some(paymaster),
        paymaster_verification_gas_limit: Some(U256::from(98_765)),
        paymaster_post_op_gas_limit: Some(U256::from(4_321)),
        paymaster_data: Some(Bytes::from(vec![0u8; PAYMASTER_DATA_LEN])),
        signature: Bytes::from(vec![0x99; 65]),
    };
    let terms = SponsorTerms {
        valid_until: U48::from(1_900_000_000u64),
        valid_after: U48::from(1_700_000_000u64),
        max_cost: op.max_cost(),
    };
    Signing {
        chain,
        paymaster,
        op,
        terms,
    }
}

impl Signing {
    fn instance(&self) -> VerifyingPaymaster::VerifyingPaymasterInstance<DynProvider> {
        VerifyingPaymaster::new(
            self.paymaster,
            self.chain.operator_client().provider().clone(),
        )
    }

    /// The paymaster data `key` signs for the op under the terms.
    fn data_signed_by(&self, key: &PrivateKeySigner) -> Bytes {
        signed_paymaster_data(key, &self.op, 31337, self.paymaster, self.terms).unwrap()
    }

    /// The op carrying `paymaster_data`.
    fn with_data(&self, paymaster_data: Bytes) -> UserOperation {
        let mut op = self.op.clone();
        op.paymaster_data = Some(paymaster_data);
        op
    }

    /// validatePaymasterUserOp of `signed`, called as the EntryPoint with `max_cost`.
    fn validate(&self, signed: &UserOperation, max_cost: U256) -> TransactionRequest {
        let input = VerifyingPaymaster::validatePaymasterUserOpCall {
            userOp: packed::for_paymaster(&signed.pack()),
            _1: B256::ZERO,
            maxCost: max_cost,
        }
        .abi_encode();
        TransactionRequest::default()
            .with_from(ENTRY_POINT_V07)
            .with_to(self.paymaster)
            .with_input(input)
    }

    /// The validationData validatePaymasterUserOp returns (it must not revert).
    async fn validation_data(&self, signed: &UserOperation, max_cost: U256) -> U256 {
        let output = self
            .chain
            .operator_client()
            .provider()
            .call(self.validate(signed, max_cost))
            .await
            .unwrap();
        VerifyingPaymaster::validatePaymasterUserOpCall::abi_decode_returns(&output)
            .unwrap()
            .validationData
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn paymaster_hash_matches_the_contracts_get_hash() {
    let s = signing().await;

    let packed_op = packed::for_paymaster(&s.op.pack());
    let on_chain = s
        .instance()
        .getHash(
            packed_op,
            s.terms.valid_until,
            s.terms.valid_after,
            s.terms.max_cost,
        )
        .call()
        .await
        .unwrap();
    assert_eq!(paymaster_hash(&s.op, 31337, s.paymaster, s.terms), on_chain);
}

/// The layout is the contract's: it parses back the terms that were signed, and the signature.
#[tokio::test(flavor = "multi_thread")]
async fn signed_paymaster_data_parses_back_on_chain_to_the_signed_terms() {
    let s = signing().await;

    let data = s.data_signed_by(s.chain.sponsor());
    assert_eq!(data.len(), PAYMASTER_DATA_LEN);
    let parsed = s
        .instance()
        .parsePaymasterAndData(s.with_data(data.clone()).paymaster_and_data())
        .call()
        .await
        .unwrap();
    assert_eq!(
        (parsed.validUntil, parsed.validAfter, parsed.maxCost),
        (s.terms.valid_until, s.terms.valid_after, s.terms.max_cost)
    );
    assert_eq!(parsed.signature.as_ref(), &data[96..]);
}

/// The sponsor's data verifies on chain: validatePaymasterUserOp (called as the EntryPoint with
/// the op's maximum cost) reports no signature failure and the window that was signed; the same
/// data signed by a different key does not verify.
#[tokio::test(flavor = "multi_thread")]
async fn only_the_sponsors_paymaster_data_verifies_on_chain_with_the_signed_valid_until() {
    let s = signing().await;

    let signed = s.with_data(s.data_signed_by(s.chain.sponsor()));
    let validation_data = s.validation_data(&signed, s.op.max_cost()).await;
    assert_eq!(
        validation_data & U256::from(1),
        U256::ZERO,
        "the sponsor's signature verifies"
    );
    assert_eq!(
        (validation_data >> 160) & U256::from(u64::MAX >> 16),
        U256::from(1_900_000_000u64),
        "validUntil"
    );

    let other = s.with_data(s.data_signed_by(&PrivateKeySigner::random()));
    let validation_data = s.validation_data(&other, s.op.max_cost()).await;
    assert_eq!(validation_data & U256::from(1), U256::from(1));
}

/// A maximum cost above the signed one reverts CostAboveSignedMaximum (AA33 in handleOps).
#[tokio::test(flavor = "multi_thread")]
async fn a_max_cost_above_the_signed_one_reverts_cost_above_signed_maximum() {
    let s = signing().await;

    let signed = s.with_data(s.data_signed_by(s.chain.sponsor()));
    let err = s
        .chain
        .operator_client()
        .provider()
        .call(s.validate(&signed, s.op.max_cost() + U256::from(1)))
        .await
        .unwrap_err();
    let revert = err
        .as_error_resp()
        .and_then(|e| e.as_revert_data())
        .expect("revert data");
    assert!(
        attestmesh_chain::revert::decode(&revert).contains("CostAboveSignedMaximum"),
        "{}",
        attestmesh_chain::revert::decode(&revert)
    );
}

/// The stub never trips the cost check (its maximum is the largest there is); its dummy
/// signature fails verification instead.
#[tokio::test(flavor = "multi_thread")]
async fn stub_paymaster_data_passes_any_max_cost_and_fails_only_the_signature() {
    let s = signing().await;

    let stubbed = s.with_data(stub_paymaster_data());
    let validation_data = s.validation_data(&stubbed, U256::from(u128::MAX)).await;
    assert_eq!(
        validation_data & U256::from(1),
        U256::from(1),
        "dummy signature fails"
    );
}
