//! `eth_estimateUserOperationGas`, measured the way production bundlers measure, on the chain
//! itself, piece by piece:
//!
//! * **verificationGasLimit**: `eth_estimateGas` of `validateUserOp(op, userOpHash, missing)`
//!   sent *from the EntryPoint address* to the sender. The client's dummy signature is
//!   well-formed, so the account runs its full signature check and returns 1 (failed) instead of
//!   reverting. `missing` is 0 with a paymaster (the EntryPoint asks the account for nothing)
//!   and 1 wei without one, so the account's prefund payment is part of the measurement.
//! * **paymasterVerificationGasLimit**: the same on `validatePaymasterUserOp(op, userOpHash,
//!   maxCost)` with the client's stub paymaster data (final length, dummy signature).
//! * **paymasterPostOpGasLimit**: 0 when the paymaster's validation returns an empty context
//!   (the EntryPoint then never calls `postOp`), else a fixed [`POST_OP_ALLOWANCE`]: `postOp`
//!   is not simulated here.
//! * **callGasLimit**: `eth_estimateGas` of the callData sent from the EntryPoint to the sender.
//! * **preVerificationGas**: calldata cost of the packed op (16 gas per non-zero byte, 4 per zero
//!   byte), counting every field that changes after estimation (gas words, paymaster data,
//!   signature) as non-zero bytes, plus the 21000 transaction base cost; then the margin; then
//!   [`PER_OP_OVERHEAD`] for the EntryPoint's bookkeeping outside the op's own gas windows.
//!
//! Margins: each `eth_estimateGas` result has its intrinsic cost (21000 + calldata of that
//! probe call) subtracted, because the EntryPoint's inner call pays neither; then
//! [`MARGIN_PERCENT`] is added; the two verification limits also get an overhead for the
//! EntryPoint's own work that it counts against them ([`VERIFICATION_OVERHEAD`]: the nonce
//! SSTORE alone is 22100 gas the first time; [`PAYMASTER_VERIFICATION_OVERHEAD`]; plus
//! [`OVERHEAD_PER_OP_BYTE`] for copying and hashing the op). Unused
//! verification gas is not charged in v0.7, so generous verification limits cost nothing;
//! unused call gas is charged 10%, so the call margin stays small.
//!
//! Limits: the state is the latest block's and probes run cold, so an estimate is an upper bound
//! for one op in its own bundle (what this bundler sends). An **undeployed sender** (factory
//! set) is not estimated: its `validateUserOp` and callData cannot run before the factory
//! deploys it, and emulating the deployment by state override would need the account's runtime
//! code and constructor storage, which a generic bundler cannot know. The factory call is
//! still measured (from the EntryPoint's SenderCreator) so a broken factoryData is reported,
//! and the error says what to do: deploy the account first, or estimate with @pimlico/alto,
//! which simulates the deployment with EntryPointSimulations.

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::{SolCall, SolValue};
use attestmesh_bindings::member_account::MemberAccount;
use attestmesh_bindings::paymaster::VerifyingPaymaster;
use attestmesh_chain::{ChainClient, dummy_signature, revert};
use attestmesh_types::jsonrpc::{ErrorObject, codes};
use attestmesh_types::userop::PackedUserOp;
use attestmesh_types::{UserOperation, UserOperationGasEstimate};

use super::chain_calls::{chain_failure, revert_data};
use super::jsonrpc_server::invalid_params;
use super::packed;

/// Added to every measured gas value, in percent.
pub const MARGIN_PERCENT: u64 = 10;
/// Fixed addition to verificationGasLimit: EntryPoint work counted against it (the cold call
/// into the account, the nonce SSTORE of 22100 gas on first use, the deposit bookkeeping, the
/// AA26 check). Measured at about 43k for a registration op on anvil.
pub const VERIFICATION_OVERHEAD: u64 = 60_000;
/// Fixed addition to paymasterVerificationGasLimit: the paymaster's deposit (cold SLOAD and
/// SSTORE) and the cold call into it, counted against it.
pub const PAYMASTER_VERIFICATION_OVERHEAD: u64 = 20_000;
/// Added to both verification limits per byte of the op's dynamic fields (initCode, callData,
/// paymasterAndData, signature): inside both windows the EntryPoint copies, hashes and
/// re-encodes the op, which grows with its size.
pub const OVERHEAD_PER_OP_BYTE: u64 = 16;
/// paymasterPostOpGasLimit when the paymaster returns a non-empty context (postOp not simulated).
pub const POST_OP_ALLOWANCE: u64 = 50_000;
/// The transaction base cost the bundle pays once; one op per bundle here.
pub const TX_BASE_GAS: u64 = 21_000;
/// EntryPoint work per op outside the op's gas windows: the handleOps loop, BeforeExecution and
/// UserOperationEvent, paying the beneficiary.
pub const PER_OP_OVERHEAD: u64 = 10_000;

/// Gas of `data` as transaction calldata (EIP-2028: 16 per non-zero byte, 4 per zero byte).
pub fn calldata_cost(data: &[u8]) -> u64 {
    data.iter()
        .map(|&byte| if byte == 0 { 4u64 } else { 16 })
        .sum()
}

/// `gas` plus [`MARGIN_PERCENT`].
pub fn with_margin(gas: u64) -> u64 {
    gas.saturating_add(gas.saturating_mul(MARGIN_PERCENT) / 100)
}

/// The preVerificationGas this bundler requires of `packed` at submission: its calldata cost as
/// sent, the transaction base cost and the per-op overhead (no margin, so an estimate made on
/// the worst case always passes).
pub fn required_pre_verification_gas(packed: &PackedUserOp) -> u64 {
    let encoded = packed::for_entry_point(packed).abi_encode();
    calldata_cost(&encoded) + TX_BASE_GAS + PER_OP_OVERHEAD
}

/// The preVerificationGas to advise for `packed` before its gas fields, paymaster data and
/// signature are final: those bytes are counted as non-zero, then the margin is added.
pub fn estimated_pre_verification_gas(packed: &PackedUserOp) -> u64 {
    let mut worst = packed.clone();
    worst.account_gas_limits = B256::repeat_byte(0xff);
    worst.gas_fees = B256::repeat_byte(0xff);
    worst.pre_verification_gas = U256::MAX;
    if worst.paymaster_and_data.len() > 20 {
        let mut data = worst.paymaster_and_data.to_vec();
        data[20..].fill(0xff);
        worst.paymaster_and_data = data.into();
    }
    worst.signature = vec![0xff; worst.signature.len().max(65)].into();
    let encoded = packed::for_entry_point(&worst).abi_encode();
    with_margin(calldata_cost(&encoded) + TX_BASE_GAS) + PER_OP_OVERHEAD
}

/// Measures one operation against the chain.
pub(super) struct Estimator<'a> {
    pub chain: &'a ChainClient,
    pub entry_point: Address,
    pub chain_id: u64,
}

impl Estimator<'_> {
    /// The gas estimate of `op`, or the AA error / chain failure that prevents one.
    pub async fn estimate(
        &self,
        mut op: UserOperation,
    ) -> Result<UserOperationGasEstimate, ErrorObject> {
        if op.signature.is_empty() {
            // An empty signature would take the account's cheap failure path and under-measure.
            op.signature = dummy_signature();
        }
        let provider = self.chain.provider();
        let code = provider
            .get_code_at(op.sender)
            .await
            .map_err(|e| chain_failure("eth_getCode (sender)", self.chain.endpoint(), &e))?;
        match (code.is_empty(), op.factory) {
            (false, Some(factory)) => {
                return Err(rejected(format!(
                    "AA10 sender already constructed: {} exists, so factory {factory} must not be given (drop factory and factoryData)",
                    op.sender
                )));
            }
            (true, None) => {
                return Err(rejected(format!(
                    "AA20 account not deployed: {} has no code and the op has no factory (deploy the account or add factory and factoryData)",
                    op.sender
                )));
            }
            (true, Some(factory)) => return Err(self.undeployed(&op, factory).await),
            (false, None) => {}
        }

        let hash = op.hash(self.entry_point, self.chain_id);
        let packed = op.pack();

        // Without a paymaster the account pays its prefund inside validateUserOp (a value call
        // into the EntryPoint, whose receive() books a deposit): asking for 1 wei runs that path,
        // so it is measured, not guessed. With a paymaster the EntryPoint asks for nothing.
        let missing_funds = if op.paymaster.is_none() {
            U256::from(1)
        } else {
            U256::ZERO
        };
        let validate = MemberAccount::validateUserOpCall {
            userOp: packed::for_account(&packed),
            userOpHash: hash,
            missingAccountFunds: missing_funds,
        }
        .abi_encode();
        let account_gas = self
            .measure(
                "validateUserOp",
                self.entry_point,
                op.sender,
                validate.into(),
                |reason| {
                    rejected(format!(
                        "AA23 reverted: the account's validateUserOp reverts: {reason}"
                    ))
                },
            )
            .await?;
        let size_overhead = op_size_overhead(&packed);
        let verification_gas_limit =
            with_margin(account_gas) + VERIFICATION_OVERHEAD + size_overhead;

        let (paymaster_verification_gas_limit, paymaster_post_op_gas_limit) = match op.paymaster {
            Some(paymaster) => {
                let (verification, post_op) =
                    self.paymaster_gas(&op, &packed, paymaster, hash).await?;
                (Some(U256::from(verification)), Some(U256::from(post_op)))
            }
            None => (None, None),
        };

        let call_gas = if op.call_data.is_empty() {
            0
        } else {
            self.measure("callData", self.entry_point, op.sender, op.call_data.clone(), |reason| {
                ErrorObject::new(
                    codes::EXECUTION_REVERTED,
                    format!("the op's callData reverts when the EntryPoint calls the account: {reason}"),
                )
            })
            .await?
        };

        Ok(UserOperationGasEstimate {
            pre_verification_gas: U256::from(estimated_pre_verification_gas(&packed)),
            verification_gas_limit: U256::from(verification_gas_limit),
            call_gas_limit: U256::from(with_margin(call_gas)),
            paymaster_verification_gas_limit,
            paymaster_post_op_gas_limit,
        })
    }

    async fn paymaster_gas(
        &self,
        op: &UserOperation,
        packed: &PackedUserOp,
        paymaster: Address,
        hash: B256,
    ) -> Result<(u64, u64), ErrorObject> {
        let code = self
            .chain
            .provider()
            .get_code_at(paymaster)
            .await
            .map_err(|e| chain_failure("eth_getCode (paymaster)", self.chain.endpoint(), &e))?;
        if code.is_empty() {
            return Err(paymaster_rejected(format!(
                "AA30 paymaster not deployed: no code at {paymaster}"
            )));
        }
        let call = VerifyingPaymaster::validatePaymasterUserOpCall {
            userOp: packed::for_paymaster(packed),
            _1: hash,
            maxCost: op.max_cost(),
        };
        let input: Bytes = call.abi_encode().into();
        let measured = self
            .measure(
                "validatePaymasterUserOp",
                self.entry_point,
                paymaster,
                input.clone(),
                |reason| {
                    paymaster_rejected(format!(
                        "AA33 reverted: the paymaster's validatePaymasterUserOp reverts: {reason}"
                    ))
                },
            )
            .await?;
        // The context decides whether the EntryPoint will call postOp at all.
        let request = TransactionRequest::default()
            .with_from(self.entry_point)
            .with_to(paymaster)
            .with_input(input);
        let output =
            self.chain
                .provider()
                .call(request)
                .await
                .map_err(|e| match revert_data(&e) {
                    Some(data) => paymaster_rejected(format!(
                        "AA33 reverted: the paymaster's validatePaymasterUserOp reverts: {}",
                        revert::decode(&data)
                    )),
                    None => chain_failure(
                        "eth_call (validatePaymasterUserOp)",
                        self.chain.endpoint(),
                        &e,
                    ),
                })?;
        let returned = VerifyingPaymaster::validatePaymasterUserOpCall::abi_decode_returns(&output).map_err(|e| {
            paymaster_rejected(format!(
                "AA33 reverted: validatePaymasterUserOp of {paymaster} returned data that is not (bytes context, uint256 validationData): {e}"
            ))
        })?;
        let post_op = if returned.context.is_empty() {
            0
        } else {
            POST_OP_ALLOWANCE
        };
        Ok((
            with_margin(measured) + PAYMASTER_VERIFICATION_OVERHEAD + op_size_overhead(packed),
            post_op,
        ))
    }

    /// The factory call is measured so a broken factoryData is named; the rest is unsupported
    /// (see the module documentation).
    async fn undeployed(&self, op: &UserOperation, factory: Address) -> ErrorObject {
        // The EntryPoint's SenderCreator, its first CREATE, is who calls the factory.
        let sender_creator = self.entry_point.create(1);
        let data = op.factory_data.clone().unwrap_or_default();
        let factory_gas = self
            .measure("factory call", sender_creator, factory, data, |reason| {
                rejected(format!(
                    "AA13 initCode failed or OOG: the factory call reverts: {reason}"
                ))
            })
            .await;
        match factory_gas {
            Err(error) => error,
            Ok(gas) => invalid_params(format!(
                "factory: sender {} is not deployed yet. The factory call measures {gas} gas, but this devnet bundler \
                 estimates an account by calling the deployed account (validateUserOp and callData from the EntryPoint), \
                 which it cannot do before the factory ran. Deploy the account first (ClusterFactory.createMemberAccount; \
                 LocalChain::add_member_account does it) and estimate without factory, or estimate with @pimlico/alto, \
                 which simulates the deployment. Sending ops with a factory is supported.",
                op.sender
            )),
        }
    }

    /// `eth_estimateGas` of `input` from `from` to `to`, minus its intrinsic cost. A revert
    /// becomes `on_revert(decoded reason)`; any other failure is a chain failure.
    async fn measure(
        &self,
        what: &str,
        from: Address,
        to: Address,
        input: Bytes,
        on_revert: impl FnOnce(String) -> ErrorObject,
    ) -> Result<u64, ErrorObject> {
        let intrinsic = TX_BASE_GAS + calldata_cost(&input);
        let request = TransactionRequest::default()
            .with_from(from)
            .with_to(to)
            .with_input(input);
        match self.chain.provider().estimate_gas(request).await {
            Ok(gas) => Ok(gas.saturating_sub(intrinsic)),
            Err(err) => Err(match revert_data(&err) {
                Some(data) => on_revert(revert::decode(&data)),
                None => chain_failure(
                    &format!("eth_estimateGas ({what})"),
                    self.chain.endpoint(),
                    &err,
                ),
            }),
        }
    }
}

/// [`OVERHEAD_PER_OP_BYTE`] for every byte of the op's dynamic fields.
fn op_size_overhead(packed: &PackedUserOp) -> u64 {
    let bytes = packed.init_code.len()
        + packed.call_data.len()
        + packed.paymaster_and_data.len()
        + packed.signature.len();
    u64::try_from(bytes)
        .unwrap_or(u64::MAX)
        .saturating_mul(OVERHEAD_PER_OP_BYTE)
}

/// -32500: the EntryPoint would reject the op in validation (an AA error, explained).
pub(super) fn rejected(reason: impl AsRef<str>) -> ErrorObject {
    ErrorObject::new(
        codes::REJECTED_BY_ENTRY_POINT,
        attestmesh_types::aa_errors::describe(reason.as_ref()),
    )
}

/// -32501: the paymaster would reject the op (ERC-7769's code for AA3x).
pub(super) fn paymaster_rejected(reason: impl AsRef<str>) -> ErrorObject {
    ErrorObject::new(
        codes::REJECTED_BY_PAYMASTER,
        attestmesh_types::aa_errors::describe(reason.as_ref()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calldata_cost_counts_zero_and_non_zero_bytes() {
        assert_eq!(calldata_cost(&[0, 0, 1, 0xff]), 4 + 4 + 16 + 16);
        assert_eq!(with_margin(1000), 1100);
    }

    #[test]
    fn worst_case_pre_verification_gas_covers_the_signed_op() {
        let op = PackedUserOp {
            sender: Address::repeat_byte(1),
            nonce: U256::ZERO,
            init_code: Bytes::new(),
            call_data: Bytes::from(vec![0u8; 100]),
            account_gas_limits: B256::ZERO,
            pre_verification_gas: U256::ZERO,
            gas_fees: B256::ZERO,
            paymaster_and_data: Bytes::from([vec![0x55u8; 20], vec![0u8; 32 + 96 + 65]].concat()),
            signature: Bytes::new(),
        };
        let mut signed = op.clone();
        signed.account_gas_limits = B256::repeat_byte(0x11);
        signed.gas_fees = B256::repeat_byte(0x22);
        signed.pre_verification_gas = U256::from(123_456);
        signed.paymaster_and_data =
            Bytes::from([vec![0x55u8; 20], vec![0x33u8; 32 + 96 + 65]].concat());
        signed.signature = Bytes::from(vec![0x44u8; 65]);
        assert!(estimated_pre_verification_gas(&op) >= required_pre_verification_gas(&signed));
    }
}
