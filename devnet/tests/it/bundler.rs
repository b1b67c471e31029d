//! The devnet bundler on a real local chain: estimation, simulation, submission, receipts and
//! lookups of real member-account operations, the AA reasons of failing ones, and bad input.
//! The helpers here (registration proofs, raw JSON-RPC, the even-hex check) are shared with the
//! gas manager tests.

use std::time::Duration;

use alloy::eips::BlockNumberOrTag;
use alloy::network::TransactionBuilder;
use alloy::primitives::aliases::{U48, U192};
use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use attestmesh_bindings::ENTRY_POINT_V07;
use attestmesh_bindings::cluster::Cluster;
use attestmesh_bindings::factory::ClusterFactory;
use attestmesh_bindings::member_account::MemberAccount;
use attestmesh_chain::{dummy_signature, proof};
use attestmesh_devnet::bundler::{Bundler, BundlerConfig, BundlerError, BundlerHandle};
use attestmesh_devnet::dstack_simulator::{DstackSimulator, KeySource, SimulatorConfig};
use attestmesh_devnet::gas_manager::paymaster_data::{
    SponsorTerms, signed_paymaster_data, stub_paymaster_data,
};
use attestmesh_devnet::local_chain::{LocalChain, LocalChainConfig, member_salt};
use attestmesh_dstack::chain::SecretKeyBytes;
use attestmesh_types::hex::is_even_hex;
use attestmesh_types::{UserOperation, UserOperationGasEstimate, UserOperationReceipt};
use serde_json::{Value, json};
use url::Url;

use attestmesh_chain::proof::{OWNER_PATH, OWNER_PURPOSE};
/// The mesh CIDR of test clusters: 10.88.0.0/16.
pub const MESH_NETWORK: u32 = 0x0a58_0000;

/// A test cluster: its address and the KMS root key it allows (held by the test).
pub struct TestCluster {
    pub address: Address,
    pub kms: PrivateKeySigner,
}

/// A cluster allowing a fresh KMS root key.
pub async fn create_cluster(chain: &LocalChain) -> TestCluster {
    let kms = PrivateKeySigner::random();
    let address = chain
        .create_cluster(
            B256::repeat_byte(0x42),
            MESH_NETWORK,
            16,
            vec![kms.address()],
            vec![keccak256("compose")],
        )
        .await
        .unwrap();
    TestCluster { address, kms }
}

/// A simulated dstack node's registration: its owner (derived) key and the `register` calldata.
pub struct Registration {
    pub owner: PrivateKeySigner,
    pub call_data: Bytes,
}

/// The registration of `account` as a node makes it: a dstack simulator whose KMS root is the
/// cluster's answers `/GetKey` for the owner key (the guest agent's format, v in {0,1}), and the
/// project's one builder turns the reply and the chain's registration digest into the
/// `register` call.
pub async fn registration(
    chain: &LocalChain,
    cluster: &TestCluster,
    account: Address,
    name: &str,
) -> Registration {
    let dstack = DstackSimulator::spawn_tcp(
        SimulatorConfig::new(
            account.into_array().into(),
            KeySource::KmsRootKey(SecretKeyBytes::new(cluster.kms.to_bytes().0)),
        ),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let reply = dstack
        .client()
        .get_key(OWNER_PATH, OWNER_PURPOSE)
        .await
        .unwrap();
    let keys = Cluster::NodeKeys {
        x25519: keccak256(format!("x25519:{name}")),
        ed25519: keccak256(format!("ed25519:{name}")),
        wireguard: keccak256(format!("wireguard:{name}")),
    };
    let digest = chain
        .operator_client()
        .registration_digest(cluster.address, account, keys.clone())
        .await
        .unwrap();
    let proof = proof::dstack_proof(account, OWNER_PURPOSE, &reply, digest).unwrap();
    Registration {
        owner: proof::owner_signer(&reply).unwrap(),
        call_data: proof::register_call_data(proof, &keys),
    }
}

/// `execute(data)` calldata of a member account.
pub fn execute(data: impl SolCall) -> Bytes {
    MemberAccount::executeCall {
        data: data.abi_encode().into(),
    }
    .abi_encode()
    .into()
}

/// Fails the test when any string in `value` that starts with 0x is odd-length or not hex.
pub fn assert_even_hex(value: &Value, path: &str) {
    match value {
        Value::String(text) if text.starts_with("0x") => {
            assert!(
                is_even_hex(text),
                "{path} = {text:?} is not even-length hex (field note 2)"
            );
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                assert_even_hex(item, &format!("{path}[{i}]"));
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                assert_even_hex(item, &format!("{path}.{key}"));
            }
        }
        _ => {}
    }
}

/// POSTs `body` as is; the HTTP status and the body as JSON.
pub async fn post_raw(url: &Url, body: impl Into<String>) -> (u16, Value) {
    let reply = reqwest::Client::new()
        .post(url.clone())
        .header("content-type", "application/json")
        .body(body.into())
        .send()
        .await
        .unwrap();
    let status = reply.status().as_u16();
    let text = reply.text().await.unwrap();
    let json =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("reply is not JSON ({e}): {text:?}"));
    (status, json)
}

/// One JSON-RPC call, raw: the whole response object, checked for even-length hex everywhere.
pub async fn rpc(url: &Url, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}).to_string();
    let (status, response) = post_raw(url, body).await;
    assert_eq!(status, 200, "{method}: HTTP {status}: {response}");
    assert_eq!(response["id"], 7, "{method}: the id comes back");
    assert_even_hex(&response, method);
    response
}

/// The `result` of a call that must succeed.
pub async fn rpc_ok(url: &Url, method: &str, params: Value) -> Value {
    let response = rpc(url, method, params).await;
    assert!(
        response.get("error").is_none(),
        "{method} failed: {}",
        response["error"]
    );
    response["result"].clone()
}

/// The `error` of a call that must fail: (code, message).
pub async fn rpc_err(url: &Url, method: &str, params: Value) -> (i64, String) {
    let response = rpc(url, method, params).await;
    let error = response
        .get("error")
        .unwrap_or_else(|| panic!("{method} unexpectedly succeeded: {response}"));
    (
        error["code"].as_i64().unwrap(),
        error["message"].as_str().unwrap().to_string(),
    )
}

/// A bundler on `chain`, executing with anvil's dev key 2.
pub async fn start_bundler(chain: &LocalChain) -> BundlerHandle {
    let config = BundlerConfig::new(chain.rpc_url().clone(), 31337, chain.dev_key(2).unwrap());
    Bundler::spawn(config).await.unwrap()
}

/// Fees the bundler accepts now: 2 × base fee + 1 gwei, priority 1 gwei.
async fn fees(chain: &LocalChain) -> (U256, U256) {
    let block = chain
        .operator_client()
        .provider()
        .get_block_by_number(BlockNumberOrTag::Latest)
        .await
        .unwrap()
        .unwrap();
    let base = U256::from(block.header.base_fee_per_gas.unwrap());
    let priority = U256::from(1_000_000_000u64);
    (base * U256::from(2) + priority, priority)
}

/// An unsponsored op from `account` with `call_data`, fees set, gas zero, dummy signature.
async fn unsponsored_op(chain: &LocalChain, account: Address, call_data: Bytes) -> UserOperation {
    let nonce = chain
        .operator_client()
        .entry_point_nonce(ENTRY_POINT_V07, account, U192::ZERO)
        .await
        .unwrap();
    let (max_fee, priority) = fees(chain).await;
    UserOperation {
        sender: account,
        nonce,
        factory: None,
        factory_data: None,
        call_data,
        call_gas_limit: U256::ZERO,
        verification_gas_limit: U256::ZERO,
        pre_verification_gas: U256::ZERO,
        max_fee_per_gas: max_fee,
        max_priority_fee_per_gas: priority,
        paymaster: None,
        paymaster_verification_gas_limit: None,
        paymaster_post_op_gas_limit: None,
        paymaster_data: None,
        signature: dummy_signature(),
    }
}

/// Signs `op` for the member account (EIP-191 over the userOpHash).
fn sign(op: &mut UserOperation, owner: &PrivateKeySigner) -> B256 {
    let hash = op.hash(ENTRY_POINT_V07, 31337);
    op.signature = Bytes::from(
        owner
            .sign_message_sync(hash.as_slice())
            .unwrap()
            .as_bytes()
            .to_vec(),
    );
    hash
}

/// The receipt, polled until the bundle is mined.
pub async fn wait_for_receipt(url: &Url, hash: B256) -> UserOperationReceipt {
    for _ in 0..100 {
        let result = rpc_ok(url, "eth_getUserOperationReceipt", json!([hash])).await;
        if !result.is_null() {
            return serde_json::from_value(result).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("operation {hash} was not included");
}

/// Funds `account` so it can pay its own prefund (ops without a paymaster).
async fn fund(chain: &LocalChain, account: Address) {
    let request = TransactionRequest::default()
        .with_to(account)
        .with_value(U256::from(10u64).pow(U256::from(18)));
    let pending = chain
        .operator_client()
        .provider()
        .send_transaction(request)
        .await
        .unwrap();
    pending.get_receipt().await.unwrap();
}

/// A fresh chain with a bundler, and on it a deployed, funded member account of a cluster with
/// its registration (built, not sent): the one set-up of the tests of real operations.
struct Registered {
    chain: LocalChain,
    cluster: TestCluster,
    bundler: BundlerHandle,
    account: Address,
    registration: Registration,
}

/// A fresh chain (instant mining) with the test cluster and node-1's member account deployed.
pub async fn chain_with_member() -> (LocalChain, TestCluster, Address) {
    let chain = LocalChain::start(LocalChainConfig::default())
        .await
        .unwrap();
    let cluster = create_cluster(&chain).await;
    let account = chain
        .add_member_account(cluster.address, "node-1")
        .await
        .unwrap();
    (chain, cluster, account)
}

/// A deployed, funded member account with its registration, on a fresh chain with a bundler.
async fn registered_setup() -> Registered {
    let (chain, cluster, account) = chain_with_member().await;
    fund(&chain, account).await;
    let registration = registration(&chain, &cluster, account, "node-1").await;
    let bundler = start_bundler(&chain).await;
    Registered {
        chain,
        cluster,
        bundler,
        account,
        registration,
    }
}

impl Registered {
    fn url(&self) -> &Url {
        self.bundler.url()
    }

    /// An unsponsored op of the account with `call_data` (fees set, gas zero, dummy signature).
    async fn op(&self, call_data: Bytes) -> UserOperation {
        unsponsored_op(&self.chain, self.account, call_data).await
    }

    /// The account's registration, sponsored and estimated; not yet signed by the owner.
    async fn sponsored_registration(&self) -> UserOperation {
        let mut op = self.op(self.registration.call_data.clone()).await;
        sponsor_into(&self.chain, self.url(), &mut op).await;
        op
    }

    /// Registers the account for real: the sponsored registration, signed, sent and included.
    async fn register(&self) {
        let mut op = self.sponsored_registration().await;
        let hash = sign(&mut op, &self.registration.owner);
        rpc_ok(
            self.url(),
            "eth_sendUserOperation",
            json!([op, ENTRY_POINT_V07]),
        )
        .await;
        assert!(wait_for_receipt(self.url(), hash).await.success);
    }

    /// Sends `op`, which the bundler must refuse: (code, message).
    async fn send_refused(&self, op: &UserOperation) -> (i64, String) {
        rpc_err(
            self.url(),
            "eth_sendUserOperation",
            json!([op, ENTRY_POINT_V07]),
        )
        .await
    }

    /// Estimates `op`, which the bundler must refuse: (code, message).
    async fn estimate_refused(&self, op: &UserOperation) -> (i64, String) {
        rpc_err(
            self.url(),
            "eth_estimateUserOperationGas",
            json!([op, ENTRY_POINT_V07]),
        )
        .await
    }

    /// An op of the not yet deployed member account "node-2" (its address predicted by the
    /// factory), with the factory call that would deploy it.
    async fn undeployed_op_with_factory(&self) -> UserOperation {
        let salt = member_salt("node-2");
        let predicted = ClusterFactory::new(
            self.chain.deployment().cluster_factory,
            self.chain.operator_client().provider().clone(),
        )
        .predictMemberAccount(self.cluster.address, salt)
        .call()
        .await
        .unwrap();
        let mut op =
            unsponsored_op(&self.chain, predicted, self.registration.call_data.clone()).await;
        op.factory = Some(self.chain.deployment().cluster_factory);
        op.factory_data = Some(
            ClusterFactory::createMemberAccountCall {
                cluster: self.cluster.address,
                salt,
            }
            .abi_encode()
            .into(),
        );
        op
    }
}

/// Estimates `op` with the bundler and fills its gas fields.
/// Asks the bundler at `url` to estimate `op` and writes the estimate's gas fields into it.
pub async fn estimate_into(url: &Url, op: &mut UserOperation) -> UserOperationGasEstimate {
    let estimate: UserOperationGasEstimate = serde_json::from_value(
        rpc_ok(
            url,
            "eth_estimateUserOperationGas",
            json!([op, ENTRY_POINT_V07]),
        )
        .await,
    )
    .unwrap();
    op.call_gas_limit = estimate.call_gas_limit;
    op.verification_gas_limit = estimate.verification_gas_limit;
    op.pre_verification_gas = estimate.pre_verification_gas;
    estimate
}

/// Sponsors `op` through the devnet's paymaster as the gas manager does: stub paymaster data of
/// the final length for the estimate, then the sponsor's signature over the final gas fields.
/// (`register` must be sponsored: the member account refuses to pay for it itself.)
async fn sponsor_into(
    chain: &LocalChain,
    url: &Url,
    op: &mut UserOperation,
) -> UserOperationGasEstimate {
    op.paymaster = Some(chain.deployment().verifying_paymaster);
    op.paymaster_verification_gas_limit = Some(U256::ZERO);
    op.paymaster_post_op_gas_limit = Some(U256::ZERO);
    op.paymaster_data = Some(stub_paymaster_data());
    let estimate = estimate_into(url, op).await;
    op.paymaster_verification_gas_limit = estimate.paymaster_verification_gas_limit;
    op.paymaster_post_op_gas_limit = Some(estimate.paymaster_post_op_gas_limit.unwrap_or_default());
    sign_sponsorship(chain, op);
    estimate
}

/// The sponsor's paymaster data for `op` as it is now (no expiry, its exact maximum cost).
fn sign_sponsorship(chain: &LocalChain, op: &mut UserOperation) {
    let terms = SponsorTerms {
        valid_until: U48::ZERO,
        valid_after: U48::ZERO,
        max_cost: op.max_cost(),
    };
    op.paymaster_data = Some(
        signed_paymaster_data(
            chain.sponsor(),
            op,
            31337,
            chain.deployment().verifying_paymaster,
            terms,
        )
        .unwrap(),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bundler_includes_an_estimated_op_and_serves_its_receipt_and_lookup() {
    let Registered {
        chain,
        cluster,
        bundler,
        account,
        registration,
    } = registered_setup().await;
    let url = bundler.url();

    assert_eq!(rpc_ok(url, "eth_chainId", json!([])).await, json!("0x7a69"));
    let served: Vec<Address> =
        serde_json::from_value(rpc_ok(url, "eth_supportedEntryPoints", json!([])).await).unwrap();
    assert_eq!(served, vec![ENTRY_POINT_V07]);

    let mut op = unsponsored_op(&chain, account, registration.call_data.clone()).await;
    let estimate = sponsor_into(&chain, url, &mut op).await;
    assert!(
        estimate.paymaster_verification_gas_limit > Some(U256::ZERO),
        "a paymaster, paymaster gas: {estimate:?}"
    );
    assert!(
        estimate.verification_gas_limit > U256::from(50_000),
        "{estimate:?}"
    );
    assert!(estimate.call_gas_limit > U256::ZERO, "{estimate:?}");
    let hash = sign(&mut op, &registration.owner);

    let returned = rpc_ok(url, "eth_sendUserOperation", json!([op, ENTRY_POINT_V07])).await;
    assert_eq!(
        returned,
        json!(hash),
        "the bundler answers the v0.7 userOpHash"
    );
    let receipt = wait_for_receipt(url, hash).await;
    assert!(receipt.success, "{receipt:?}");
    assert_eq!(receipt.user_op_hash, hash);
    assert_eq!(receipt.sender, account);
    assert_eq!(receipt.nonce, U256::ZERO);
    assert_eq!(
        receipt.paymaster,
        Some(chain.deployment().verifying_paymaster)
    );
    assert!(receipt.actual_gas_used > U256::ZERO && receipt.actual_gas_cost > U256::ZERO);
    assert!(
        receipt.logs.iter().any(|log| log["address"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case(&cluster.address.to_string())),
        "the op's own logs include the cluster's registration event: {:?}",
        receipt.logs
    );
    // Estimation limits held: the op used less than it was allowed.
    let limit = op.call_gas_limit
        + op.verification_gas_limit
        + op.pre_verification_gas
        + op.paymaster_verification_gas_limit.unwrap_or_default();
    assert!(
        receipt.actual_gas_used <= limit,
        "used {} of {limit}",
        receipt.actual_gas_used
    );

    let member = chain
        .operator_client()
        .member_of(cluster.address, account)
        .await
        .unwrap()
        .expect("registered");
    assert_eq!(member.signer, registration.owner.address());

    let found = rpc_ok(url, "eth_getUserOperationByHash", json!([hash])).await;
    assert_eq!(found["entryPoint"], json!(ENTRY_POINT_V07));
    assert_eq!(
        found["transactionHash"],
        json!(receipt.receipt.transaction_hash)
    );
    assert_eq!(found["blockHash"], json!(receipt.receipt.block_hash));
    let back: UserOperation = serde_json::from_value(found["userOperation"].clone()).unwrap();
    assert_eq!(back, op);

    // The same op again is known, not sent twice.
    let (code, message) = rpc_err(url, "eth_sendUserOperation", json!([op, ENTRY_POINT_V07])).await;
    assert_eq!(code, -32602);
    assert!(message.contains("already known"), "{message}");

    // An unsponsored op of the registered account (funded): no paymaster, no paymaster gas, and
    // the account pays its own prefund.
    let message = execute(Cluster::sendCall {
        recipientMemberId: member.id,
        envelopeId: B256::repeat_byte(1),
        ciphertext: Bytes::from(vec![0xc1; 32]),
    });
    let mut own = unsponsored_op(&chain, account, message).await;
    let estimate = estimate_into(url, &mut own).await;
    assert!(
        estimate.paymaster_verification_gas_limit.is_none(),
        "no paymaster, no paymaster gas"
    );
    let own_hash = sign(&mut own, &registration.owner);
    rpc_ok(url, "eth_sendUserOperation", json!([own, ENTRY_POINT_V07])).await;
    let own_receipt = wait_for_receipt(url, own_hash).await;
    assert!(
        own_receipt.success && own_receipt.paymaster.is_none(),
        "{own_receipt:?}"
    );
    // Unknown hashes are null, not errors.
    assert!(
        rpc_ok(
            url,
            "eth_getUserOperationReceipt",
            json!([B256::repeat_byte(9)])
        )
        .await
        .is_null()
    );
    assert!(
        rpc_ok(
            url,
            "eth_getUserOperationByHash",
            json!([B256::repeat_byte(9)])
        )
        .await
        .is_null()
    );
}

/// An unsponsored registration: the account refuses to pay for it (its validation cannot see
/// the KMS-root allowlist), so the EntryPoint reports the prefund unpaid.
#[tokio::test(flavor = "multi_thread")]
async fn an_unsponsored_registration_is_refused_with_aa21() {
    let setup = registered_setup().await;
    let mut op = setup.op(setup.registration.call_data.clone()).await;
    op.call_gas_limit = U256::from(500_000);
    op.verification_gas_limit = U256::from(500_000);
    op.pre_verification_gas = U256::from(100_000);
    sign(&mut op, &setup.registration.owner);
    let (code, message) = setup.send_refused(&op).await;
    assert_eq!(code, -32500, "{message}");
    assert!(message.contains("AA21"), "{message}");
}

/// Signed by a key the account does not expect: AA24, decoded, with advice.
#[tokio::test(flavor = "multi_thread")]
async fn an_op_signed_by_an_unexpected_key_is_refused_with_aa24_and_advice() {
    let setup = registered_setup().await;
    let mut op = setup.sponsored_registration().await;
    sign(&mut op, &PrivateKeySigner::random());
    let (code, message) = setup.send_refused(&op).await;
    assert_eq!(code, -32500, "{message}");
    assert!(message.contains("AA24 signature error"), "{message}");
    assert!(
        message.contains("not signed by the key the account expects"),
        "advice: {message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_op_with_a_wrong_nonce_is_refused_with_aa25() {
    let setup = registered_setup().await;
    let mut op = setup.sponsored_registration().await;
    op.nonce = U256::from(5);
    sign_sponsorship(&setup.chain, &mut op);
    sign(&mut op, &setup.registration.owner);
    let (code, message) = setup.send_refused(&op).await;
    assert_eq!(code, -32500, "{message}");
    assert!(message.contains("AA25"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_op_with_too_little_pre_verification_gas_is_refused_before_simulation() {
    let setup = registered_setup().await;
    let mut op = setup.sponsored_registration().await;
    op.pre_verification_gas = U256::from(21_000);
    sign_sponsorship(&setup.chain, &mut op);
    sign(&mut op, &setup.registration.owner);
    let (code, message) = setup.send_refused(&op).await;
    assert_eq!(code, -32602, "{message}");
    assert!(message.contains("preVerificationGas"), "{message}");
}

/// A registered account's op whose call reverts (only the cluster owner may revoke).
#[tokio::test(flavor = "multi_thread")]
async fn estimating_an_op_whose_call_reverts_names_the_revert() {
    let setup = registered_setup().await;
    setup.register().await;
    let op = setup
        .op(execute(Cluster::revokeMemberCall { memberId: 1 }))
        .await;
    let (code, message) = setup.estimate_refused(&op).await;
    assert_eq!(code, -32521, "{message}");
    assert!(message.contains("NotContractOwner"), "{message}");
}

/// The same reverting op sent anyway: included, failed, the reason in its receipt, nothing done.
#[tokio::test(flavor = "multi_thread")]
async fn an_op_whose_call_reverts_lands_failed_with_the_reason_in_its_receipt() {
    let setup = registered_setup().await;
    setup.register().await;
    let mut op = setup
        .op(execute(Cluster::revokeMemberCall { memberId: 1 }))
        .await;
    op.call_gas_limit = U256::from(200_000);
    op.verification_gas_limit = U256::from(300_000);
    op.pre_verification_gas = U256::from(60_000);
    let hash = sign(&mut op, &setup.registration.owner);
    let url = setup.url();
    rpc_ok(url, "eth_sendUserOperation", json!([op, ENTRY_POINT_V07])).await;
    let receipt = wait_for_receipt(url, hash).await;
    assert!(!receipt.success);
    let reason = receipt
        .reason
        .clone()
        .expect("a failed op's receipt says why");
    assert!(reason.contains("NotContractOwner"), "{reason}");
    // Its logs parse as ordinary logs (even-length quantities included) for the project's client.
    let decoded =
        attestmesh_chain::revert_reason(&receipt).expect("UserOperationRevertReason in the logs");
    assert!(decoded.contains("NotContractOwner"), "{decoded}");
    assert!(
        setup
            .chain
            .operator_client()
            .member_of(setup.cluster.address, setup.account)
            .await
            .unwrap()
            .is_some(),
        "not revoked"
    );
}

/// An undeployed sender with a factory: the factory is measured, the rest is said to be
/// unsupported, with what to do.
#[tokio::test(flavor = "multi_thread")]
async fn an_undeployed_sender_with_a_factory_is_refused_as_unsupported_with_what_to_do() {
    let setup = registered_setup().await;
    let op = setup.undeployed_op_with_factory().await;
    let (code, message) = setup.estimate_refused(&op).await;
    assert_eq!(code, -32602, "{message}");
    assert!(
        message.contains("not deployed yet") && message.contains("factory call measures"),
        "{message}"
    );
    assert!(message.contains("Deploy the account first"), "{message}");
}

/// Without a factory, the same undeployed sender is AA20.
#[tokio::test(flavor = "multi_thread")]
async fn an_undeployed_sender_without_a_factory_is_refused_with_aa20() {
    let setup = registered_setup().await;
    let mut op = setup.undeployed_op_with_factory().await;
    op.factory = None;
    op.factory_data = None;
    let (code, message) = setup.estimate_refused(&op).await;
    assert_eq!(code, -32500);
    assert!(message.contains("AA20"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bundler_answers_bad_input_with_clear_errors_and_keeps_serving() {
    let chain = LocalChain::start(LocalChainConfig::default())
        .await
        .unwrap();
    let bundler = start_bundler(&chain).await;
    let url = bundler.url();
    let op = unsponsored_op(&chain, Address::repeat_byte(0x11), Bytes::new()).await;

    let (status, reply) = post_raw(url, "{not json").await;
    assert_eq!(
        (status, reply["error"]["code"].as_i64()),
        (200, Some(-32700)),
        "{reply}"
    );
    let (_, reply) = post_raw(url, r#"{"jsonrpc":"1.0","id":1,"method":"eth_chainId"}"#).await;
    assert_eq!(reply["error"]["code"], -32600, "{reply}");
    assert_eq!(reply["id"], 1, "the id is echoed when it could be read");
    let (_, reply) = post_raw(url, r#"[1, 2]"#).await;
    assert_eq!(reply[0]["error"]["code"], -32600, "{reply}");
    let (_, reply) = post_raw(url, r#"{"jsonrpc":"2.0","id":1}"#).await;
    assert_eq!(reply["error"]["code"], -32600, "{reply}");
    let (_, reply) = post_raw(
        url,
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":5}"#,
    )
    .await;
    assert_eq!(reply["error"]["code"], -32600, "{reply}");

    let (code, message) = rpc_err(url, "eth_sendUserOperations", json!([])).await;
    assert_eq!(code, -32601);
    assert!(
        message.contains("eth_sendUserOperation,"),
        "lists what is served: {message}"
    );

    let mut missing = serde_json::to_value(&op).unwrap();
    missing.as_object_mut().unwrap().remove("callData");
    let (code, message) = rpc_err(
        url,
        "eth_sendUserOperation",
        json!([missing, ENTRY_POINT_V07]),
    )
    .await;
    assert_eq!(code, -32602);
    assert!(
        message.contains("userOperation") && message.contains("callData"),
        "{message}"
    );

    let mut bad_nonce = serde_json::to_value(&op).unwrap();
    bad_nonce["nonce"] = json!("0xzz");
    let (code, message) = rpc_err(
        url,
        "eth_sendUserOperation",
        json!([bad_nonce, ENTRY_POINT_V07]),
    )
    .await;
    assert_eq!(code, -32602);
    assert!(message.contains("field nonce"), "{message}");

    let (code, message) = rpc_err(url, "eth_sendUserOperation", json!([op])).await;
    assert_eq!(code, -32602);
    assert!(
        message.contains("params[1] (entryPoint) is missing"),
        "{message}"
    );

    let other = Address::repeat_byte(0xee);
    let (code, message) = rpc_err(url, "eth_sendUserOperation", json!([op, other])).await;
    assert_eq!(code, -32602);
    assert!(
        message.contains("not supported") && message.contains(&ENTRY_POINT_V07.to_string()),
        "{message}"
    );
    let (code, _) = rpc_err(url, "eth_estimateUserOperationGas", json!([op, other])).await;
    assert_eq!(code, -32602);

    let (code, message) = rpc_err(url, "eth_getUserOperationReceipt", json!(["0x1234"])).await;
    assert_eq!(code, -32602);
    assert!(message.contains("userOpHash"), "{message}");

    let mut no_base_fee = op.clone();
    no_base_fee.max_fee_per_gas = U256::ZERO;
    no_base_fee.max_priority_fee_per_gas = U256::ZERO;
    let (code, message) = rpc_err(
        url,
        "eth_sendUserOperation",
        json!([no_base_fee, ENTRY_POINT_V07]),
    )
    .await;
    assert_eq!(code, -32602);
    assert!(
        message.contains("maxFeePerGas") && message.contains("base fee"),
        "{message}"
    );

    let (status, reply) = post_raw(url, format!("[{}]", "1,".repeat(600_000) + "1")).await;
    assert_eq!(status, 413, "{reply}");
    assert_eq!(reply["error"]["code"], -32600);

    // Still serving after all of that.
    assert_eq!(rpc_ok(url, "eth_chainId", json!([])).await, json!("0x7a69"));

    // The wrong chain id, or no EntryPoint, is refused at start with what to fix.
    let mut config = BundlerConfig::new(chain.rpc_url().clone(), 8453, chain.dev_key(3).unwrap());
    let err = Bundler::spawn(config.clone()).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("serves chain 31337, but 8453 was configured"),
        "{err}"
    );
    config.chain_id = 31337;
    config.entry_point = Address::repeat_byte(0x77);
    let err = Bundler::spawn(config).await.unwrap_err();
    assert!(matches!(err, BundlerError::NoEntryPoint { .. }), "{err}");

    bundler.shutdown().await.unwrap();
}
