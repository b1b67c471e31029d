//! The gas manager's methods: policy and webhook checks, fees, gas through the bundler, and the
//! sponsor's signature.

use std::collections::BTreeSet;
use std::time::Duration;

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::aliases::U48;
use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use attestmesh_chain::{ChainClient, DUMMY_SIGNATURE, RpcClient, RpcError};
use attestmesh_types::gas_manager::{
    GasAndPaymasterData, PaymasterData, RequestGasAndPaymasterData,
};
use attestmesh_types::hex::{bytes_hex, even_quantity};
use attestmesh_types::jsonrpc::{ErrorObject, codes};
use attestmesh_types::webhook::{WebhookRequest, parse_chain_id};
use attestmesh_types::{UserOperation, UserOperationGasEstimate};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use super::LOG_TARGET;
use super::paymaster_data::{SponsorTerms, signed_paymaster_data, stub_paymaster_data};
use super::webhook::WebhookClient;
use crate::bundler::jsonrpc_server::{
    MethodResult, Methods, at_most, internal_error, invalid_params, method_not_found, param,
};

/// Every method this gas manager serves.
pub const METHODS: &[&str] = &[
    "alchemy_requestGasAndPaymasterAndData",
    "pm_getPaymasterStubData",
    "pm_getPaymasterData",
    "eth_chainId",
];

/// Gas fields a stub request may leave out (ERC-7677 wallets ask before they estimate).
const STUB_DEFAULTED_FIELDS: &[&str] = &[
    "callGasLimit",
    "verificationGasLimit",
    "preVerificationGas",
    "maxFeePerGas",
    "maxPriorityFeePerGas",
];

/// ERC-7677's `context` as Alchemy defines it: which policy pays, and data for the webhook.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PaymasterContext {
    policy_id: String,
    #[serde(default)]
    webhook_data: Option<String>,
}

/// How far above the gas manager's own estimate a gas field of `pm_getPaymasterData` may be, in
/// percent of the estimate. Wallets estimate on their own (often through another bundler), so
/// their numbers differ from this gas manager's a little, never by an order of magnitude.
pub const GAS_FIELD_MARGIN_PERCENT: u64 = 150;

/// How far above the gas manager's own fee quote (2 × base fee + priority fee) a fee of
/// `pm_getPaymasterData` may be, in percent of the quote: the quote already leaves room for the
/// base fee to double.
pub const FEE_MARGIN_PERCENT: u64 = 150;

/// The fee fields the gas manager sets, and the chain time they were read at.
#[derive(Debug, Clone, Copy)]
struct Fees {
    max_fee_per_gas: U256,
    max_priority_fee_per_gas: U256,
    timestamp: u64,
}

/// State of one gas manager.
#[derive(Debug)]
pub(super) struct GasManagerService {
    pub chain: ChainClient,
    pub bundler: RpcClient,
    pub webhook: WebhookClient,
    pub paymaster: Address,
    pub sponsor: PrivateKeySigner,
    pub policies: BTreeSet<String>,
    pub entry_point: Address,
    pub chain_id: u64,
    pub validity: Duration,
    /// The most one operation may cost the paymaster; no larger maxCost is ever signed.
    pub max_cost_per_op: U256,
}

impl Methods for GasManagerService {
    const SERVICE: &'static str = "gas manager";

    async fn call(&self, method: &str, params: Value) -> MethodResult {
        match method {
            "alchemy_requestGasAndPaymasterAndData" => {
                self.request_gas_and_paymaster_data(params).await
            }
            "pm_getPaymasterStubData" => self.paymaster_stub_data(params).await,
            "pm_getPaymasterData" => self.paymaster_data(params).await,
            "eth_chainId" => {
                at_most(&params, 0, "eth_chainId takes no params")?;
                Ok(json!(even_quantity(U256::from(self.chain_id))))
            }
            other => Err(method_not_found(Self::SERVICE, other, METHODS)),
        }
    }
}

impl GasManagerService {
    async fn request_gas_and_paymaster_data(&self, params: Value) -> MethodResult {
        at_most(
            &params,
            1,
            "alchemy_requestGasAndPaymasterAndData [{policyId, entryPoint, dummySignature, userOperation}]",
        )?;
        let request: RequestGasAndPaymasterData = param(&params, 0, "request")?;
        let partial = &request.user_operation;
        let outcome = async {
            self.check_policy(&request.policy_id, "params[0] field policyId")?;
            self.check_entry_point(request.entry_point, "params[0] field entryPoint")?;
            if request.dummy_signature.is_empty() {
                return Err(invalid_params(
                    "params[0] field dummySignature: empty; send a well-formed 65-byte dummy signature (low s, v 27/28) so validation is measured",
                ));
            }
            let user_operation = to_json(partial)?;
            self.ask_webhook(user_operation, &request.policy_id, request.webhook_data.clone()).await?;

            let fees = self.fees().await?;
            let mut op = UserOperation {
                sender: partial.sender,
                nonce: partial.nonce,
                factory: partial.factory,
                factory_data: partial.factory_data.clone(),
                call_data: partial.call_data.clone(),
                call_gas_limit: U256::ZERO,
                verification_gas_limit: U256::ZERO,
                pre_verification_gas: U256::ZERO,
                max_fee_per_gas: fees.max_fee_per_gas,
                max_priority_fee_per_gas: fees.max_priority_fee_per_gas,
                paymaster: Some(self.paymaster),
                paymaster_verification_gas_limit: Some(U256::ZERO),
                paymaster_post_op_gas_limit: Some(U256::ZERO),
                paymaster_data: Some(stub_paymaster_data()),
                signature: request.dummy_signature.clone(),
            };
            let estimate = self.estimate(&op).await?;
            let (paymaster_verification, post_op) = paymaster_limits(&estimate)?;
            op.call_gas_limit = with_headroom(estimate.call_gas_limit);
            op.verification_gas_limit = estimate.verification_gas_limit;
            op.pre_verification_gas = estimate.pre_verification_gas;
            op.paymaster_verification_gas_limit = Some(paymaster_verification);
            op.paymaster_post_op_gas_limit = Some(post_op);
            let terms = self.terms(&op, fees.timestamp)?;
            let paymaster_data = self.sign(&op, terms)?;
            op.paymaster_data = Some(paymaster_data.clone());
            // The userOpHash leaves the account's signature out, so it is final here.
            let hash = op.hash(self.entry_point, self.chain_id);
            info!(target: LOG_TARGET, %hash, sender = %op.sender, gas = %op.gas_summary(), max_cost = %terms.max_cost, "paymaster data signed");
            Ok(GasAndPaymasterData {
                paymaster: self.paymaster,
                paymaster_data,
                paymaster_verification_gas_limit: paymaster_verification,
                paymaster_post_op_gas_limit: post_op,
                call_gas_limit: op.call_gas_limit,
                verification_gas_limit: op.verification_gas_limit,
                pre_verification_gas: op.pre_verification_gas,
                max_fee_per_gas: op.max_fee_per_gas,
                max_priority_fee_per_gas: op.max_priority_fee_per_gas,
            })
        }
        .await;
        self.log_outcome(
            "alchemy_requestGasAndPaymasterAndData",
            &request.policy_id,
            partial.sender,
            partial.nonce,
            &outcome,
        );
        to_json(&outcome?)
    }

    async fn paymaster_stub_data(&self, mut params: Value) -> MethodResult {
        at_most(
            &params,
            4,
            "pm_getPaymasterStubData [userOp, entryPoint, chainId, context]",
        )?;
        if let Some(op) = params.get_mut(0).and_then(Value::as_object_mut) {
            // Wallets ask for stub data before they estimate: gas and fees may be missing.
            for field in STUB_DEFAULTED_FIELDS {
                op.entry(*field).or_insert_with(|| json!("0x00"));
            }
            op.entry("signature")
                .or_insert_with(|| json!(bytes_hex(&DUMMY_SIGNATURE)));
        }
        let (mut op, context) = self.erc7677_params(&params)?;
        let outcome = async {
            self.check_policy(&context.policy_id, "params[3] (context) field policyId")?;
            self.ask_webhook(
                to_json(&op)?,
                &context.policy_id,
                context.webhook_data.clone(),
            )
            .await?;
            // Only the stub's length matters to the estimate; its terms are placeholders.
            let stub = stub_paymaster_data();
            op.paymaster = Some(self.paymaster);
            op.paymaster_verification_gas_limit = Some(U256::ZERO);
            op.paymaster_post_op_gas_limit = Some(U256::ZERO);
            op.paymaster_data = Some(stub.clone());
            let estimate = self.estimate(&op).await?;
            let (paymaster_verification, post_op) = paymaster_limits(&estimate)?;
            Ok(PaymasterData {
                paymaster: self.paymaster,
                paymaster_data: stub,
                paymaster_verification_gas_limit: Some(paymaster_verification),
                paymaster_post_op_gas_limit: Some(post_op),
                is_final: Some(false),
            })
        }
        .await;
        self.log_outcome(
            "pm_getPaymasterStubData",
            &context.policy_id,
            op.sender,
            op.nonce,
            &outcome,
        );
        to_json(&outcome?)
    }

    async fn paymaster_data(&self, params: Value) -> MethodResult {
        at_most(
            &params,
            4,
            "pm_getPaymasterData [userOp, entryPoint, chainId, context]",
        )?;
        let (mut op, context) = self.erc7677_params(&params)?;
        let outcome = async {
            self.check_policy(&context.policy_id, "params[3] (context) field policyId")?;
            // The signature binds these limits: they must be the ones the wallet will send.
            let paymaster_verification = op.paymaster_verification_gas_limit.ok_or_else(|| {
                invalid_params(
                    "params[0] (userOp) field paymasterVerificationGasLimit: required; take it from pm_getPaymasterStubData",
                )
            })?;
            let post_op = op.paymaster_post_op_gas_limit.ok_or_else(|| {
                invalid_params("params[0] (userOp) field paymasterPostOpGasLimit: required; take it from pm_getPaymasterStubData")
            })?;
            self.ask_webhook(to_json(&op)?, &context.policy_id, context.webhook_data.clone()).await?;
            op.paymaster = Some(self.paymaster);
            // The wallet chose these numbers; the sponsor signs them only if they are near what
            // this gas manager would have chosen itself (the drain of issue 14: an ordinary send
            // with preVerificationGas 40M and 200 gwei fees, signed as given).
            let fees = self.fees().await?;
            self.check_fees_against_quote(&op, &fees)?;
            let mut probe = op.clone();
            probe.paymaster_verification_gas_limit = Some(U256::ZERO);
            probe.paymaster_post_op_gas_limit = Some(U256::ZERO);
            probe.paymaster_data = Some(stub_paymaster_data());
            let estimate = self.estimate(&probe).await?;
            check_gas_against_estimate(&op, &estimate)?;
            let terms = self.terms(&op, fees.timestamp)?;
            let paymaster_data = self.sign(&op, terms)?;
            info!(target: LOG_TARGET, sender = %op.sender, nonce = %op.nonce, gas = %op.gas_summary(), max_cost = %terms.max_cost, "paymaster data signed");
            Ok(PaymasterData {
                paymaster: self.paymaster,
                paymaster_data,
                paymaster_verification_gas_limit: Some(paymaster_verification),
                paymaster_post_op_gas_limit: Some(post_op),
                is_final: None,
            })
        }
        .await;
        self.log_outcome(
            "pm_getPaymasterData",
            &context.policy_id,
            op.sender,
            op.nonce,
            &outcome,
        );
        to_json(&outcome?)
    }

    /// ERC-7677's `[userOp, entryPoint, chainId, context]`, with the entry point and chain checked.
    fn erc7677_params(
        &self,
        params: &Value,
    ) -> Result<(UserOperation, PaymasterContext), ErrorObject> {
        let op: UserOperation = param(params, 0, "userOp")?;
        let entry_point: Address = param(params, 1, "entryPoint")?;
        self.check_entry_point(entry_point, "params[1] (entryPoint)")?;
        let chain: Value = param(params, 2, "chainId")?;
        let chain_id = parse_chain_id(&chain)
            .map_err(|e| invalid_params(format!("params[2] (chainId): {e}")))?;
        if chain_id != self.chain_id {
            return Err(invalid_params(format!(
                "params[2] (chainId): chain {chain_id} is not served; this gas manager sponsors on chain {} ({})",
                self.chain_id,
                even_quantity(U256::from(self.chain_id))
            )));
        }
        let context: PaymasterContext = param(params, 3, "context")?;
        Ok((op, context))
    }

    fn check_policy(&self, policy_id: &str, field: &str) -> Result<(), ErrorObject> {
        if self.policies.contains(policy_id) {
            return Ok(());
        }
        let known: Vec<&str> = self.policies.iter().map(String::as_str).collect();
        Err(invalid_params(format!(
            "{field}: policy {policy_id:?} is not served by this gas manager (it serves {})",
            known.join(", ")
        )))
    }

    fn check_entry_point(&self, entry_point: Address, field: &str) -> Result<(), ErrorObject> {
        if entry_point == self.entry_point {
            return Ok(());
        }
        Err(invalid_params(format!(
            "{field}: EntryPoint {entry_point} is not supported; this gas manager sponsors only EntryPoint v0.7 at {}",
            self.entry_point
        )))
    }

    /// Asks the paymaster webhook; a denial or a webhook failure is the request's error.
    async fn ask_webhook(
        &self,
        user_operation: Value,
        policy_id: &str,
        webhook_data: Option<String>,
    ) -> Result<(), ErrorObject> {
        let request = WebhookRequest {
            user_operation,
            policy_id: policy_id.to_string(),
            chain_id: json!(even_quantity(U256::from(self.chain_id))),
            webhook_data,
        };
        debug!(target: LOG_TARGET, url = %self.webhook.url(), policy_id, "asking the paymaster webhook");
        let decision = self
            .webhook
            .decide(&request)
            .await
            .map_err(|e| internal_error(e.to_string()))?;
        if decision.approved {
            return Ok(());
        }
        let reason = decision
            .reason
            .unwrap_or_else(|| "no reason given".to_string());
        Err(ErrorObject::new(
            codes::SPONSORSHIP_DENIED,
            format!("sponsorship denied by the paymaster webhook: {reason}"),
        ))
    }

    /// maxPriorityFeePerGas from the chain, maxFeePerGas = 2 × latest base fee + priority (room
    /// for the base fee to double before inclusion), and the latest block's time.
    async fn fees(&self) -> Result<Fees, ErrorObject> {
        let provider = self.chain.provider();
        let endpoint = self.chain.endpoint();
        let priority = provider.get_max_priority_fee_per_gas().await.map_err(|e| {
            internal_error(format!(
                "chain RPC eth_maxPriorityFeePerGas at {endpoint} failed: {e}"
            ))
        })?;
        let block = provider
            .get_block_by_number(BlockNumberOrTag::Latest)
            .await
            .map_err(|e| {
                internal_error(format!(
                    "chain RPC eth_getBlockByNumber (latest) at {endpoint} failed: {e}"
                ))
            })?
            .ok_or_else(|| {
                internal_error(format!("the chain RPC at {endpoint} has no latest block"))
            })?;
        let base_fee = block.header.base_fee_per_gas.ok_or_else(|| {
            internal_error(format!(
                "the latest block at {endpoint} has no base fee: EIP-1559 chains only"
            ))
        })?;
        let priority = U256::from(priority);
        Ok(Fees {
            max_fee_per_gas: U256::from(base_fee) * U256::from(2) + priority,
            max_priority_fee_per_gas: priority,
            timestamp: block.header.timestamp,
        })
    }

    /// (validUntil, validAfter): valid from now (validAfter 0) until the configured validity past
    /// the chain's time (not the wall clock: the EntryPoint compares with block.timestamp, and a
    /// devnet may warp it).
    fn validity(&self, chain_time: u64) -> Result<(U48, U48), ErrorObject> {
        let until = chain_time.saturating_add(self.validity.as_secs());
        let valid_until = U48::try_from(until).map_err(|_| {
            internal_error(format!(
                "validUntil {until} does not fit in 48 bits: the chain's time is wrong"
            ))
        })?;
        Ok((valid_until, U48::ZERO))
    }

    /// The terms the sponsor signs for `op` (gas and fees final): the validity window from the
    /// chain's time, and maxCost = the EntryPoint's maximum cost of the op, refused above the
    /// operator's per-operation cap.
    fn terms(&self, op: &UserOperation, chain_time: u64) -> Result<SponsorTerms, ErrorObject> {
        let validity = self.validity(chain_time)?;
        let max_cost = op.max_cost();
        if max_cost > self.max_cost_per_op {
            return Err(refused(format!(
                "cap: the operation's maximum cost {max_cost} wei ({}) is above the gas manager's per-operation cap {} wei",
                op.gas_summary(),
                self.max_cost_per_op
            )));
        }
        Ok(SponsorTerms {
            valid_until: validity.0,
            valid_after: validity.1,
            max_cost,
        })
    }

    /// maxFeePerGas and maxPriorityFeePerGas may be at most [`FEE_MARGIN_PERCENT`] of this gas
    /// manager's own maxFeePerGas quote.
    fn check_fees_against_quote(&self, op: &UserOperation, fees: &Fees) -> Result<(), ErrorObject> {
        let limit = percent_of(fees.max_fee_per_gas, FEE_MARGIN_PERCENT);
        for (field, value) in [
            ("maxFeePerGas", op.max_fee_per_gas),
            ("maxPriorityFeePerGas", op.max_priority_fee_per_gas),
        ] {
            if value > limit {
                return Err(refused(format!(
                    "cap: params[0] (userOp) field {field} {value} is above the gas manager's cap {limit} ({FEE_MARGIN_PERCENT} % of its own quote {} = 2 × base fee + priority fee)",
                    fees.max_fee_per_gas
                )));
            }
        }
        Ok(())
    }

    /// The bundler's estimate of `op`; its error (an AA reason) is passed on with its code.
    async fn estimate(&self, op: &UserOperation) -> Result<UserOperationGasEstimate, ErrorObject> {
        self.bundler
            .call::<_, UserOperationGasEstimate>(
                "eth_estimateUserOperationGas",
                (op, self.entry_point),
            )
            .await
            .map_err(|err| match err {
                RpcError::Rpc { error, url, .. } => ErrorObject {
                    code: error.code,
                    message: format!(
                        "the bundler at {url} could not estimate the operation: {}",
                        error.message
                    ),
                    data: error.data,
                },
                other => internal_error(other.to_string()),
            })
    }

    fn sign(&self, op: &UserOperation, terms: SponsorTerms) -> Result<Bytes, ErrorObject> {
        signed_paymaster_data(&self.sponsor, op, self.chain_id, self.paymaster, terms).map_err(
            |e| {
                internal_error(format!(
                    "the sponsor key could not sign the paymaster hash: {e}"
                ))
            },
        )
    }

    fn log_outcome<T>(
        &self,
        method: &str,
        policy_id: &str,
        sender: Address,
        nonce: U256,
        outcome: &Result<T, ErrorObject>,
    ) {
        match outcome {
            Ok(_) => info!(target: LOG_TARGET, method, policy_id, %sender, %nonce, "sponsored"),
            Err(error) => {
                warn!(target: LOG_TARGET, method, policy_id, %sender, %nonce, code = error.code, reason = %error.message, "not sponsored")
            }
        }
    }
}

/// Headroom on the bundler's call-gas estimate, in percent. The estimate is taken against the
/// latest block, but the operation executes after whatever lands before it: at 2 s blocks
/// several nodes register in one block, and a registration estimated before the others ran
/// out of gas behind them through alto (which adds no margin of its own). The EntryPoint
/// charges 10 % of unused call gas, so the headroom costs the sponsor little.
pub const CALL_GAS_HEADROOM_PERCENT: u64 = 25;

fn with_headroom(estimate: U256) -> U256 {
    estimate * U256::from(100 + CALL_GAS_HEADROOM_PERCENT) / U256::from(100)
}

/// The paymaster's limits from an estimate. A bundler that gives no paymaster verification
/// limit for an op with a paymaster cannot be trusted with this op: an error, not a guess.
fn paymaster_limits(estimate: &UserOperationGasEstimate) -> Result<(U256, U256), ErrorObject> {
    let verification = estimate.paymaster_verification_gas_limit.ok_or_else(|| {
        internal_error("the bundler's estimate has no paymasterVerificationGasLimit for an op with a paymaster (not an EntryPoint v0.7 bundler?)")
    })?;
    // An absent postOp limit means the bundler found no postOp to pay for; VerifyingPaymaster
    // returns an empty context, so the EntryPoint never calls postOp.
    let post_op = estimate.paymaster_post_op_gas_limit.unwrap_or(U256::ZERO);
    Ok((verification, post_op))
}

/// `value` × `percent` / 100, saturating.
fn percent_of(value: U256, percent: u64) -> U256 {
    value.saturating_mul(U256::from(percent)) / U256::from(100)
}

/// Each gas field of a wallet's `pm_getPaymasterData` may be at most
/// [`GAS_FIELD_MARGIN_PERCENT`] of this gas manager's own estimate of the same operation; the
/// first one above names itself and its cap.
fn check_gas_against_estimate(
    op: &UserOperation,
    estimate: &UserOperationGasEstimate,
) -> Result<(), ErrorObject> {
    let (paymaster_verification, post_op) = paymaster_limits(estimate)?;
    let fields = [
        (
            "preVerificationGas",
            op.pre_verification_gas,
            estimate.pre_verification_gas,
        ),
        (
            "verificationGasLimit",
            op.verification_gas_limit,
            estimate.verification_gas_limit,
        ),
        // The alchemy_ flow signs the estimate with headroom: a wallet may use as much.
        (
            "callGasLimit",
            op.call_gas_limit,
            with_headroom(estimate.call_gas_limit),
        ),
        (
            "paymasterVerificationGasLimit",
            op.paymaster_verification_gas_limit.unwrap_or_default(),
            paymaster_verification,
        ),
        (
            "paymasterPostOpGasLimit",
            op.paymaster_post_op_gas_limit.unwrap_or_default(),
            post_op,
        ),
    ];
    for (field, value, estimated) in fields {
        let cap = percent_of(estimated, GAS_FIELD_MARGIN_PERCENT);
        if value > cap {
            return Err(refused(format!(
                "cap: params[0] (userOp) field {field} {value} is above the gas manager's cap {cap} ({GAS_FIELD_MARGIN_PERCENT} % of its own estimate {estimated})"
            )));
        }
    }
    Ok(())
}

/// A refusal to sponsor (the gas manager's own rule, before anything is signed).
fn refused(reason: String) -> ErrorObject {
    ErrorObject::new(
        codes::SPONSORSHIP_DENIED,
        format!("sponsorship refused by the gas manager: {reason}"),
    )
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Value, ErrorObject> {
    serde_json::to_value(value).map_err(|e| internal_error(format!("cannot encode the reply: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a registration estimated before other nodes registered in the same block
    /// ran out of gas through alto (estimate 243,374, needed about 258,000). The signed call
    /// gas carries the headroom.
    fn estimate() -> UserOperationGasEstimate {
        UserOperationGasEstimate {
            pre_verification_gas: U256::from(60_000),
            verification_gas_limit: U256::from(150_000),
            call_gas_limit: U256::from(100_000),
            paymaster_verification_gas_limit: Some(U256::from(40_000)),
            paymaster_post_op_gas_limit: None,
        }
    }

    fn op_like_the_estimate() -> UserOperation {
        UserOperation {
            sender: Address::repeat_byte(1),
            nonce: U256::ZERO,
            factory: None,
            factory_data: None,
            call_data: Bytes::new(),
            call_gas_limit: U256::from(100_000),
            verification_gas_limit: U256::from(150_000),
            pre_verification_gas: U256::from(60_000),
            max_fee_per_gas: U256::from(3_000_000_000u64),
            max_priority_fee_per_gas: U256::from(1_000_000_000u64),
            paymaster: Some(Address::repeat_byte(2)),
            paymaster_verification_gas_limit: Some(U256::from(40_000)),
            paymaster_post_op_gas_limit: Some(U256::ZERO),
            paymaster_data: None,
            signature: Bytes::new(),
        }
    }

    /// Issue 14's drain: an ordinary send with preVerificationGas 40M was signed as given.
    #[test]
    fn gas_fields_far_above_the_estimate_are_refused_naming_the_field_and_cap() {
        let op = op_like_the_estimate();
        assert!(check_gas_against_estimate(&op, &estimate()).is_ok());
        let mut inflated = op.clone();
        inflated.pre_verification_gas = U256::from(40_000_000);
        let err = check_gas_against_estimate(&inflated, &estimate()).unwrap_err();
        assert_eq!(err.code, codes::SPONSORSHIP_DENIED);
        assert!(
            err.message
                .contains("cap: params[0] (userOp) field preVerificationGas 40000000 is above the gas manager's cap 90000"),
            "{}",
            err.message
        );
        // Within the margin passes; call gas may use the same headroom the alchemy_ flow signs.
        let mut near = op.clone();
        near.pre_verification_gas = U256::from(90_000);
        near.call_gas_limit = U256::from(187_500);
        assert!(check_gas_against_estimate(&near, &estimate()).is_ok());
        near.call_gas_limit = U256::from(187_501);
        assert!(check_gas_against_estimate(&near, &estimate()).is_err());
        // A postOp limit for a paymaster that has no postOp only inflates the cost.
        let mut post_op = op;
        post_op.paymaster_post_op_gas_limit = Some(U256::from(1));
        let err = check_gas_against_estimate(&post_op, &estimate()).unwrap_err();
        assert!(
            err.message.contains("paymasterPostOpGasLimit"),
            "{}",
            err.message
        );
    }

    #[test]
    fn call_gas_gets_headroom_over_the_estimate() {
        assert_eq!(with_headroom(U256::from(243_374)), U256::from(304_217));
        assert!(with_headroom(U256::from(243_374)) > U256::from(258_022));
        assert_eq!(with_headroom(U256::ZERO), U256::ZERO);
    }
}
