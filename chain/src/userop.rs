//! Sponsored ERC-4337 v0.7 UserOperations for one member account: nonce from the EntryPoint,
//! gas and paymaster data from the gas manager, the owner's signature, submission to a bundler,
//! and the receipt, with transient failures retried and every failure said in words.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{Address, B256, Bytes, U256, aliases::U192};
use alloy::rpc::types::Log;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolEvent;
use attestmesh_bindings::entry_point::EntryPoint;
use attestmesh_types::aa_errors;
use attestmesh_types::gas_manager::{
    GasAndPaymasterData, PartialUserOperation, RequestGasAndPaymasterData,
};
use attestmesh_types::{UserOperation, UserOperationReceipt};
use tracing::{debug, info, warn};
use url::Url;

use crate::targets::USEROP;
use crate::{ChainClient, ChainError, RpcClient, RpcError};

/// The account's factory call, for an operation that also deploys the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitCode {
    pub factory: Address,
    pub factory_data: Bytes,
}

/// Timing of one send.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// How long to wait for the operation to be included.
    pub receipt_timeout: Duration,
    /// How often to ask the bundler for the receipt.
    pub poll_interval: Duration,
    /// Attempts for a step that fails transiently (no answer, HTTP 429/5xx).
    pub transient_attempts: u32,
    /// First backoff between attempts; doubles each time.
    pub backoff: Duration,
}

impl Default for SendOptions {
    fn default() -> Self {
        Self {
            receipt_timeout: Duration::from_secs(90),
            poll_interval: Duration::from_millis(500),
            transient_attempts: 5,
            backoff: Duration::from_millis(500),
        }
    }
}

/// A UserOperation that did not succeed, with the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum UserOpError {
    #[error("reading the account nonce failed: {0}")]
    Nonce(#[source] ChainError),
    #[error("the gas manager refused to sponsor the operation from {sender}: {message}")]
    SponsorshipRefused { sender: Address, message: String },
    #[error("the gas manager could not be used: {0}")]
    GasManager(#[source] RpcError),
    #[error("the bundler rejected operation {hash}: {reason}")]
    Rejected { hash: B256, reason: String },
    #[error("the bundler could not be used for operation {hash}: {source}")]
    Bundler {
        hash: B256,
        #[source]
        source: RpcError,
    },
    #[error(
        "the bundler returned userOpHash {returned} for operation {expected}: it serves another EntryPoint or chain"
    )]
    HashMismatch { expected: B256, returned: B256 },
    #[error(
        "operation {hash} was not included within {timeout:?}; it may still land (look it up by hash)"
    )]
    Timeout { hash: B256, timeout: Duration },
    #[error("operation {hash} was included but its call reverted: {reason}")]
    Reverted {
        hash: B256,
        reason: String,
        receipt: Box<UserOperationReceipt>,
    },
    #[error("signing operation {hash} failed: {message}")]
    Signing { hash: B256, message: String },
}

impl UserOpError {
    /// Whether trying the whole operation again later may succeed (a service was down).
    pub fn is_transient(&self) -> bool {
        match self {
            UserOpError::Nonce(e) => {
                matches!(e, ChainError::Rpc { .. } | ChainError::Transport { .. })
            }
            UserOpError::GasManager(e) | UserOpError::Bundler { source: e, .. } => e.is_transient(),
            UserOpError::Timeout { .. } => true,
            _ => false,
        }
    }
}

/// A well-formed placeholder signature for gas estimation: 65 bytes, r = x of the curve's
/// generator (a valid point, so ecrecover does the full work of a real check), s = 1 (low-s),
/// v = 27. Its hex is even-length (field note 2: Alchemy rejects odd-length hex).
pub const DUMMY_SIGNATURE: [u8; 65] = {
    let mut sig = [0u8; 65];
    let r: [u8; 32] = [
        0x79, 0xbe, 0x66, 0x7e, 0xf9, 0xdc, 0xbb, 0xac, 0x55, 0xa0, 0x62, 0x95, 0xce, 0x87, 0x0b,
        0x07, 0x02, 0x9b, 0xfc, 0xdb, 0x2d, 0xce, 0x28, 0xd9, 0x59, 0xf2, 0x81, 0x5b, 0x16, 0xf8,
        0x17, 0x98,
    ];
    let mut i = 0;
    while i < 32 {
        sig[i] = r[i];
        i += 1;
    }
    sig[63] = 1;
    sig[64] = 27;
    sig
};

/// [`DUMMY_SIGNATURE`] as bytes.
pub fn dummy_signature() -> Bytes {
    Bytes::from_static(&DUMMY_SIGNATURE)
}

/// Sends sponsored operations for one member account, signed by its owner key.
#[derive(Debug, Clone)]
pub struct SponsoredSender {
    chain: ChainClient,
    bundler: RpcClient,
    gas_manager: RpcClient,
    policy_id: String,
    entry_point: Address,
    owner: PrivateKeySigner,
    account: Address,
    options: SendOptions,
    /// One lock per nonce key, held from the nonce read to the receipt. Operations on one key
    /// take sequential nonces, so two sent at once would read the same nonce and one would fail
    /// with AA25; every clone of this sender shares the locks, so callers of one key queue while
    /// callers of different keys (independent streams: envelopes, app messages) never wait on
    /// each other's receipts.
    lanes: Arc<std::sync::Mutex<HashMap<NonceKey, Arc<tokio::sync::Mutex<()>>>>>,
}

/// An ERC-4337 nonce key: the EntryPoint keeps an independent nonce sequence per key, so
/// operations on different keys are ordered independently and can be in flight together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NonceKey(pub U192);

impl NonceKey {
    /// Key 0: the account's first sequence (the bootstrap registration uses it).
    pub const DEFAULT: NonceKey = NonceKey(U192::ZERO);

    /// Key `n`.
    pub const fn new(n: u64) -> Self {
        NonceKey(U192::from_limbs([n, 0, 0]))
    }
}

impl SponsoredSender {
    /// A sender for `account`, owned by `owner`, through the given bundler and gas manager.
    pub fn new(
        chain: ChainClient,
        bundler_url: Url,
        gas_manager_url: Url,
        policy_id: impl Into<String>,
        entry_point: Address,
        owner: PrivateKeySigner,
        account: Address,
    ) -> Result<Self, ChainError> {
        Ok(Self {
            chain,
            bundler: RpcClient::new("bundler", bundler_url)?,
            gas_manager: RpcClient::new("gas manager", gas_manager_url)?,
            policy_id: policy_id.into(),
            entry_point,
            owner,
            account,
            options: SendOptions::default(),
            lanes: Arc::new(std::sync::Mutex::new(HashMap::new())),
        })
    }

    /// Replaces the timing options.
    pub fn with_options(mut self, options: SendOptions) -> Self {
        self.options = options;
        self
    }

    /// The member account operations are sent from.
    pub fn account(&self) -> Address {
        self.account
    }

    /// The bundler client (for lookups by hash).
    pub fn bundler(&self) -> &RpcClient {
        &self.bundler
    }

    /// The account's next EntryPoint nonce on key 0.
    pub async fn nonce(&self) -> Result<U256, UserOpError> {
        self.nonce_on(NonceKey::DEFAULT).await
    }

    /// The account's next EntryPoint nonce on `key` (the key is in its upper 192 bits).
    pub async fn nonce_on(&self, key: NonceKey) -> Result<U256, UserOpError> {
        self.retry(
            "EntryPoint.getNonce",
            || {
                self.chain
                    .entry_point_nonce(self.entry_point, self.account, key.0)
            },
            |e| matches!(e, ChainError::Rpc { .. } | ChainError::Transport { .. }),
        )
        .await
        .map_err(UserOpError::Nonce)
    }

    /// Sends one sponsored operation on nonce key 0 calling the account with `call_data` and
    /// waits for it.
    pub async fn send(
        &self,
        call_data: Bytes,
        init: Option<InitCode>,
    ) -> Result<UserOperationReceipt, UserOpError> {
        self.send_on(NonceKey::DEFAULT, call_data, init).await
    }

    /// Sends one sponsored operation on nonce key `key` and waits for it. Operations on other
    /// keys proceed meanwhile; operations on the same key queue behind this one's receipt.
    pub async fn send_on(
        &self,
        key: NonceKey,
        call_data: Bytes,
        init: Option<InitCode>,
    ) -> Result<UserOperationReceipt, UserOpError> {
        let lane = self.lane(key);
        let _turn = lane.lock().await;
        let nonce = self.nonce_on(key).await?;
        let partial = PartialUserOperation {
            sender: self.account,
            nonce,
            factory: init.as_ref().map(|i| i.factory),
            factory_data: init.as_ref().map(|i| i.factory_data.clone()),
            call_data,
        };
        let sponsored = self.sponsor(&partial).await?;
        let mut op = UserOperation {
            sender: partial.sender,
            nonce: partial.nonce,
            factory: partial.factory,
            factory_data: partial.factory_data,
            call_data: partial.call_data,
            call_gas_limit: sponsored.call_gas_limit,
            verification_gas_limit: sponsored.verification_gas_limit,
            pre_verification_gas: sponsored.pre_verification_gas,
            max_fee_per_gas: sponsored.max_fee_per_gas,
            max_priority_fee_per_gas: sponsored.max_priority_fee_per_gas,
            paymaster: Some(sponsored.paymaster),
            paymaster_verification_gas_limit: Some(sponsored.paymaster_verification_gas_limit),
            paymaster_post_op_gas_limit: Some(sponsored.paymaster_post_op_gas_limit),
            paymaster_data: Some(sponsored.paymaster_data),
            signature: Bytes::new(),
        };
        let hash = op.hash(self.entry_point, self.chain.chain_id());
        // The account checks an EIP-191 signature over the userOpHash.
        let signature =
            self.owner
                .sign_message_sync(hash.as_slice())
                .map_err(|e| UserOpError::Signing {
                    hash,
                    message: e.to_string(),
                })?;
        op.signature = Bytes::from(signature.as_bytes().to_vec());
        debug!(target: USEROP, %hash, sender = %op.sender, nonce = %op.nonce, gas = %op.gas_summary(), "operation signed");

        self.submit(&op, hash).await?;
        info!(target: USEROP, %hash, sender = %op.sender, nonce = %op.nonce, "operation accepted by the bundler");
        let receipt = self.wait_for_receipt(hash).await?;
        if !receipt.success {
            let reason = revert_reason(&receipt)
                .unwrap_or_else(|| "no UserOperationRevertReason event".into());
            return Err(UserOpError::Reverted {
                hash,
                reason,
                receipt: Box::new(receipt),
            });
        }
        info!(target: USEROP, %hash, tx = %receipt.receipt.transaction_hash, gas_cost = %receipt.actual_gas_cost, "operation included");
        Ok(receipt)
    }

    /// The lock of nonce key `key` (created on first use).
    fn lane(&self, key: NonceKey) -> Arc<tokio::sync::Mutex<()>> {
        // A poisoned map only means another thread panicked while inserting; the map itself
        // is still a valid set of locks.
        let mut lanes = self
            .lanes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        lanes.entry(key).or_default().clone()
    }

    async fn sponsor(
        &self,
        partial: &PartialUserOperation,
    ) -> Result<GasAndPaymasterData, UserOpError> {
        let request = RequestGasAndPaymasterData {
            policy_id: self.policy_id.clone(),
            entry_point: self.entry_point,
            dummy_signature: dummy_signature(),
            user_operation: partial.clone(),
            webhook_data: None,
        };
        self.retry(
            "alchemy_requestGasAndPaymasterAndData",
            || {
                self.gas_manager.call::<_, GasAndPaymasterData>(
                    "alchemy_requestGasAndPaymasterAndData",
                    [&request],
                )
            },
            RpcError::is_transient,
        )
        .await
        .map_err(|e| match e.rpc_error() {
            Some(error) => UserOpError::SponsorshipRefused {
                sender: partial.sender,
                message: error.message.clone(),
            },
            None => UserOpError::GasManager(e),
        })
    }

    async fn submit(&self, op: &UserOperation, hash: B256) -> Result<(), UserOpError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .bundler
                .call::<_, B256>("eth_sendUserOperation", (op, self.entry_point))
                .await
            {
                Ok(returned) if returned == hash => return Ok(()),
                Ok(returned) => {
                    return Err(UserOpError::HashMismatch {
                        expected: hash,
                        returned,
                    });
                }
                Err(e) if e.is_transient() && attempt < self.options.transient_attempts => {
                    warn!(target: USEROP, %hash, attempt, error = %e, "bundler unavailable; retrying");
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                Err(e) => {
                    // An earlier attempt may have been accepted before the connection failed.
                    if attempt > 1 && self.is_known(hash).await {
                        return Ok(());
                    }
                    return Err(match e.rpc_error() {
                        Some(error) => UserOpError::Rejected {
                            hash,
                            reason: aa_errors::describe(&error.message),
                        },
                        None => UserOpError::Bundler { hash, source: e },
                    });
                }
            }
        }
    }

    async fn is_known(&self, hash: B256) -> bool {
        matches!(
            self.bundler
                .call::<_, Option<serde_json::Value>>("eth_getUserOperationByHash", [hash])
                .await,
            Ok(Some(_))
        )
    }

    /// Polls `eth_getUserOperationReceipt` until the operation is included or the timeout passes.
    pub async fn wait_for_receipt(&self, hash: B256) -> Result<UserOperationReceipt, UserOpError> {
        let deadline = tokio::time::Instant::now() + self.options.receipt_timeout;
        let mut failures = 0;
        loop {
            match self
                .bundler
                .call::<_, Option<UserOperationReceipt>>("eth_getUserOperationReceipt", [hash])
                .await
            {
                Ok(Some(receipt)) => return Ok(receipt),
                Ok(None) => {}
                Err(e) if e.is_transient() && failures + 1 < self.options.transient_attempts => {
                    failures += 1;
                    warn!(target: USEROP, %hash, error = %e, "receipt lookup failed; retrying");
                }
                Err(e) => return Err(UserOpError::Bundler { hash, source: e }),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(UserOpError::Timeout {
                    hash,
                    timeout: self.options.receipt_timeout,
                });
            }
            tokio::time::sleep(self.options.poll_interval).await;
        }
    }

    async fn retry<T, E, F, Fut>(
        &self,
        what: &str,
        mut step: F,
        transient: impl Fn(&E) -> bool,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match step().await {
                Ok(value) => return Ok(value),
                Err(e) if transient(&e) && attempt < self.options.transient_attempts => {
                    warn!(target: USEROP, step = what, attempt, error = %e, "transient failure; retrying");
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        self.options
            .backoff
            .saturating_mul(1 << attempt.saturating_sub(1).min(6))
    }
}

/// The decoded `UserOperationRevertReason` of a failed operation, if the receipt carries one.
pub fn revert_reason(receipt: &UserOperationReceipt) -> Option<String> {
    receipt.logs.iter().find_map(|raw| {
        let log: Log = serde_json::from_value(raw.clone()).ok()?;
        if log.topic0() != Some(&EntryPoint::UserOperationRevertReason::SIGNATURE_HASH) {
            return None;
        }
        let event = EntryPoint::UserOperationRevertReason::decode_log_data(log.data()).ok()?;
        Some(crate::revert::decode(&event.revertReason))
    })
}

/// The EntryPoint binding's `PackedUserOperation` for `op` (what `handleOps` and
/// `getUserOpHash` take).
pub fn packed_for_entry_point(op: &UserOperation) -> EntryPoint::PackedUserOperation {
    let packed = op.pack();
    EntryPoint::PackedUserOperation {
        sender: packed.sender,
        nonce: packed.nonce,
        initCode: packed.init_code,
        callData: packed.call_data,
        accountGasLimits: packed.account_gas_limits,
        preVerificationGas: packed.pre_verification_gas,
        gasFees: packed.gas_fees,
        paymasterAndData: packed.paymaster_and_data,
        signature: packed.signature,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{Signature, keccak256};

    /// The dummy signature's bytes, shared with the Foundry test (test/DummySignature.t.sol).
    const VECTOR: &str = include_str!("../../test/vectors/dummy-signature.json");

    /// secp256k1's group order n.
    fn curve_order() -> U256 {
        U256::from_str_radix(
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141",
            16,
        )
        .unwrap()
    }

    #[test]
    fn dummy_signature_is_the_shared_vector() {
        let vector: serde_json::Value = serde_json::from_str(VECTOR).expect("the vector is JSON");
        let hex = vector["signature"]
            .as_str()
            .expect(".signature is a string");
        let bytes = alloy::hex::decode(hex).expect(".signature is hex");
        assert_eq!(
            bytes,
            DUMMY_SIGNATURE.to_vec(),
            "DUMMY_SIGNATURE differs from test/vectors/dummy-signature.json"
        );
        assert_eq!(dummy_signature().as_ref(), &DUMMY_SIGNATURE[..]);
    }

    /// Field note 2: what estimation needs is a signature the account's ecrecover path handles
    /// like a real one: v in {27, 28}, r and s in range with low s, and r the x-coordinate of a
    /// curve point, so that public-key recovery succeeds (it decompresses r into the point R).
    #[test]
    fn dummy_signature_recovers_a_public_key_from_any_prehash() {
        let v = DUMMY_SIGNATURE[64];
        assert!(
            v == 27 || v == 28,
            "v = {v}: the account's ecrecover takes 27/28 (and 0/1 only by adding 27)"
        );
        let sig =
            Signature::from_raw_array(&DUMMY_SIGNATURE).expect("the 65 bytes parse as r||s||v");
        let n = curve_order();
        assert!(!sig.r().is_zero() && sig.r() < n, "r in [1, n)");
        assert!(
            !sig.s().is_zero() && sig.s() <= n >> 1,
            "s in [1, n/2] (low s)"
        );

        // A few digests of each kind the account recovers over: the EIP-191 form of an operation
        // hash, and raw prehashes.
        let mut prehashes = vec![B256::ZERO, B256::repeat_byte(0xff), B256::with_last_byte(2)];
        for i in 0u8..16 {
            let user_op_hash = keccak256([i]);
            prehashes.push(user_op_hash);
            prehashes.push(alloy::primitives::eip191_hash_message(user_op_hash));
        }
        for prehash in prehashes {
            let recovered = sig
                .recover_address_from_prehash(&prehash)
                .unwrap_or_else(|e| {
                    panic!("no public key recovers from the dummy signature over {prehash}: {e}")
                });
            assert_ne!(recovered, Address::ZERO, "over {prehash}");
        }

        // The check can fail: with R = G and s = 1 the recovered key is r^-1 (1 - z) G, the point
        // at infinity for the one digest z = 1 (no operation hash's EIP-191 digest is 1).
        assert!(
            sig.recover_address_from_prehash(&B256::with_last_byte(1))
                .is_err()
        );
    }
}
