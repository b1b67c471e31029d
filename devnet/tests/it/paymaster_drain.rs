//! Issue 14, money: a member took an ordinary `send`, set preVerificationGas 40M and fees of
//! 200 gwei, had it sponsored through ERC-7677 `pm_getPaymasterData` (the gas manager signed the
//! caller's gas fields) and submitted `handleOps` itself with its own beneficiary: 8 of 10 ETH
//! of the paymaster's deposit moved. Here the same attack, end to end on the devnet (anvil, the
//! EntryPoint, the real webhook, the gas manager, the project's bundler), is refused at every
//! layer: by the webhook's caps, by the gas manager's own estimate, and on chain by the
//! paymaster's signed maximum cost (AA33 CostAboveSignedMaximum), with the deposit and the
//! attacker's balance never the richer for it.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use alloy::network::TransactionBuilder;
use alloy::primitives::aliases::U192;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use attestmesh_bindings::ENTRY_POINT_V07;
use attestmesh_bindings::cluster::Cluster;
use attestmesh_bindings::entry_point::EntryPoint;
use attestmesh_bindings::paymaster::VerifyingPaymaster;
use attestmesh_chain::{ChainClient, ChainError, SendOptions, dummy_signature};
use attestmesh_devnet::bundler::{BundlerHandle, packed};
use attestmesh_devnet::gas_manager::paymaster_data::{SponsorTerms, signed_paymaster_data};
use attestmesh_devnet::gas_manager::{
    GasManager, GasManagerConfig, GasManagerHandle, WebhookSecret,
};
use attestmesh_devnet::local_chain::LocalChain;
use attestmesh_types::UserOperation;
use attestmesh_types::gas_manager::PaymasterData;
use attestmesh_webhook::{GasCaps, Webhook, WebhookConfig, WebhookHandle};
use serde_json::json;
use url::Url;

use crate::bundler::{
    TestCluster, chain_with_member, estimate_into, execute, registration, rpc_err, rpc_ok,
    start_bundler,
};
use crate::gas_manager::sender_via;

const POLICY: &str = "drain-policy";
const SECRET: &str = "drain-test-webhook-secret";
/// The attack's numbers.
const INFLATED_PRE_VERIFICATION_GAS: u64 = 40_000_000;
const INFLATED_FEE: u64 = 200_000_000_000;
/// The webhook's fee cap here. The default (1 gwei) fits Base; anvil's fees start near it
/// (2 × base fee + 1 gwei priority), so the devnet's operator sets 10 gwei.
const DEVNET_FEE_CAP: u64 = 10_000_000_000;

/// A registered member of a cluster on a fresh devnet, sponsored through the real webhook.
struct Devnet {
    chain: LocalChain,
    cluster: TestCluster,
    account: Address,
    owner: PrivateKeySigner,
    member_id: u64,
    bundler: BundlerHandle,
    _webhook: WebhookHandle,
    gas_manager: GasManagerHandle,
}

async fn webhook(chain: &LocalChain, cluster: Address, caps: GasCaps) -> WebhookHandle {
    let config = WebhookConfig {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        caps,
        ..WebhookConfig::new(
            chain.rpc_url().clone(),
            31337,
            attestmesh_webhook::WebhookSecret::new(SECRET).unwrap(),
        )
        .with_policy(POLICY, cluster)
    };
    Webhook::spawn(config).await.unwrap()
}

async fn gas_manager(
    chain: &LocalChain,
    bundler: &BundlerHandle,
    webhook: &WebhookHandle,
) -> GasManagerHandle {
    GasManager::spawn(GasManagerConfig::new(
        chain.rpc_url().clone(),
        31337,
        bundler.url().clone(),
        chain.deployment().verifying_paymaster,
        chain.sponsor().clone(),
        webhook.url().parse().unwrap(),
        WebhookSecret::new(SECRET),
        vec![POLICY.to_string()],
    ))
    .await
    .unwrap()
}

fn devnet_caps() -> GasCaps {
    GasCaps {
        max_fee_per_gas: U256::from(DEVNET_FEE_CAP),
        // 0.05 ETH: a registration at anvil's fees, with room.
        max_cost: U256::from(50_000_000_000_000_000u64),
        ..GasCaps::default()
    }
}

async fn devnet() -> Devnet {
    let (chain, cluster, account) = chain_with_member().await;
    let bundler = start_bundler(&chain).await;
    let webhook = webhook(&chain, cluster.address, devnet_caps()).await;
    let gas_manager = gas_manager(&chain, &bundler, &webhook).await;
    // The member registers the ordinary way (alchemy_requestGasAndPaymasterAndData).
    let registration = registration(&chain, &cluster, account, "node-1").await;
    let sender = sender_via(
        &chain,
        bundler.url(),
        gas_manager.url(),
        POLICY,
        registration.owner.clone(),
        account,
    )
    .with_options(SendOptions {
        receipt_timeout: Duration::from_secs(30),
        poll_interval: Duration::from_millis(100),
        ..SendOptions::default()
    });
    let receipt = sender
        .send(registration.call_data.clone(), None)
        .await
        .unwrap();
    assert!(receipt.success);
    let member_id = chain
        .operator_client()
        .member_of(cluster.address, account)
        .await
        .unwrap()
        .expect("registered")
        .id;
    Devnet {
        chain,
        cluster,
        account,
        owner: registration.owner,
        member_id,
        bundler,
        _webhook: webhook,
        gas_manager,
    }
}

fn send_to_self(devnet: &Devnet, envelope: u8) -> Bytes {
    execute(Cluster::sendCall {
        recipientMemberId: devnet.member_id,
        envelopeId: B256::repeat_byte(envelope),
        ciphertext: Bytes::from(vec![0xc1; 64]),
    })
}

/// An ordinary `send` as an ERC-7677 wallet builds it: stub data, the bundler's estimate, fees
/// like the gas manager quotes them. Not yet sponsored.
async fn ordinary_op(devnet: &Devnet, envelope: u8) -> UserOperation {
    let client = devnet.chain.operator_client();
    let nonce = client
        .entry_point_nonce(ENTRY_POINT_V07, devnet.account, U192::from(1))
        .await
        .unwrap();
    let block = client
        .provider()
        .get_block_by_number(Default::default())
        .await
        .unwrap()
        .unwrap();
    let priority = U256::from(
        client
            .provider()
            .get_max_priority_fee_per_gas()
            .await
            .unwrap(),
    );
    let mut op = UserOperation {
        sender: devnet.account,
        nonce,
        factory: None,
        factory_data: None,
        call_data: send_to_self(devnet, envelope),
        call_gas_limit: U256::ZERO,
        verification_gas_limit: U256::ZERO,
        pre_verification_gas: U256::ZERO,
        max_fee_per_gas: U256::from(block.header.base_fee_per_gas.unwrap()) * U256::from(2)
            + priority,
        max_priority_fee_per_gas: priority,
        paymaster: None,
        paymaster_verification_gas_limit: None,
        paymaster_post_op_gas_limit: None,
        paymaster_data: None,
        signature: dummy_signature(),
    };
    let stub: PaymasterData = serde_json::from_value(
        rpc_ok(
            devnet.gas_manager.url(),
            "pm_getPaymasterStubData",
            json!([op, ENTRY_POINT_V07, "0x7a69", {"policyId": POLICY}]),
        )
        .await,
    )
    .unwrap();
    op.paymaster = Some(stub.paymaster);
    op.paymaster_verification_gas_limit = stub.paymaster_verification_gas_limit;
    op.paymaster_post_op_gas_limit = stub.paymaster_post_op_gas_limit;
    op.paymaster_data = Some(stub.paymaster_data);
    estimate_into(devnet.bundler.url(), &mut op).await;
    op
}

/// The drain's gas fields on `op`: preVerificationGas 40M, both fees 200 gwei.
fn inflate(op: &UserOperation) -> UserOperation {
    let mut inflated = op.clone();
    inflated.pre_verification_gas = U256::from(INFLATED_PRE_VERIFICATION_GAS);
    inflated.max_fee_per_gas = U256::from(INFLATED_FEE);
    inflated.max_priority_fee_per_gas = U256::from(INFLATED_FEE);
    inflated
}

fn sign_account(op: &mut UserOperation, owner: &PrivateKeySigner) {
    let hash = op.hash(ENTRY_POINT_V07, 31337);
    op.signature = Bytes::from(
        owner
            .sign_message_sync(hash.as_slice())
            .unwrap()
            .as_bytes()
            .to_vec(),
    );
}

async fn pm_get_paymaster_data(
    gas_manager: &Url,
    op: &UserOperation,
) -> Result<PaymasterData, (i64, String)> {
    let params = json!([op, ENTRY_POINT_V07, "0x7a69", {"policyId": POLICY}]);
    let response = crate::bundler::rpc(gas_manager, "pm_getPaymasterData", params).await;
    match response.get("error") {
        Some(error) => Err((
            error["code"].as_i64().unwrap(),
            error["message"].as_str().unwrap().to_string(),
        )),
        None => Ok(serde_json::from_value(response["result"].clone()).unwrap()),
    }
}

async fn deposit(devnet: &Devnet) -> U256 {
    VerifyingPaymaster::new(
        devnet.chain.deployment().verifying_paymaster,
        devnet.chain.operator_client().provider().clone(),
    )
    .getDeposit()
    .call()
    .await
    .unwrap()
}

fn handle_ops(op: &UserOperation, beneficiary: Address) -> Bytes {
    EntryPoint::handleOpsCall {
        ops: vec![packed::for_entry_point(&op.pack())],
        beneficiary,
    }
    .abi_encode()
    .into()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_inflated_send_is_refused_by_the_webhook_and_the_gas_manager_before_any_signature() {
    let devnet = devnet().await;
    let deposit_before = deposit(&devnet).await;
    let ordinary = ordinary_op(&devnet, 1).await;

    // The drain as it was done: the webhook's caps refuse it, naming the field and the cap.
    let (code, message) = pm_get_paymaster_data(devnet.gas_manager.url(), &inflate(&ordinary))
        .await
        .unwrap_err();
    assert_eq!(code, -32600);
    assert!(
        message.contains(&format!(
            "sponsorship denied by the paymaster webhook: cap: maxFeePerGas {INFLATED_FEE} above the operator's cap {DEVNET_FEE_CAP}"
        )),
        "{message}"
    );
    // preVerificationGas alone, with ordinary fees.
    let mut pvg_only = ordinary.clone();
    pvg_only.pre_verification_gas = U256::from(INFLATED_PRE_VERIFICATION_GAS);
    let (_, message) = pm_get_paymaster_data(devnet.gas_manager.url(), &pvg_only)
        .await
        .unwrap_err();
    assert!(
        message.contains("cap: preVerificationGas 40000000 above the operator's cap 1000000"),
        "{message}"
    );

    // Defence in depth: behind a webhook whose operator set no useful caps, the gas manager
    // compares with its own estimate and quote and still refuses to sign.
    let cluster = devnet.cluster.address;
    let lax = webhook(
        &devnet.chain,
        cluster,
        GasCaps {
            max_fee_per_gas: U256::MAX,
            pre_verification_gas: U256::MAX,
            verification_gas_limit: U256::MAX,
            call_gas_limit: U256::MAX,
            max_cost: U256::MAX,
        },
    )
    .await;
    let behind_lax = gas_manager(&devnet.chain, &devnet.bundler, &lax).await;
    let (code, message) = pm_get_paymaster_data(behind_lax.url(), &inflate(&ordinary))
        .await
        .unwrap_err();
    assert_eq!(code, -32600);
    assert!(
        message.contains("sponsorship refused by the gas manager: cap: params[0] (userOp) field maxFeePerGas 200000000000 is above the gas manager's cap"),
        "{message}"
    );
    let (_, message) = pm_get_paymaster_data(behind_lax.url(), &pvg_only)
        .await
        .unwrap_err();
    assert!(
        message.contains("field preVerificationGas 40000000 is above the gas manager's cap")
            && message.contains("of its own estimate"),
        "{message}"
    );

    // The ordinary op is sponsored, and the sponsor signed its exact EntryPoint maximum cost.
    let paid = pm_get_paymaster_data(devnet.gas_manager.url(), &ordinary)
        .await
        .unwrap();
    let terms = SponsorTerms::decode(&paid.paymaster_data).unwrap();
    let mut signed = ordinary.clone();
    signed.paymaster = Some(paid.paymaster);
    assert_eq!(terms.max_cost, signed.max_cost());

    // Every refusal cost the sponsor nothing.
    assert_eq!(deposit(&devnet).await, deposit_before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_op_cannot_cost_more_than_its_signed_maximum_on_chain() {
    let devnet = devnet().await;
    let paymaster = devnet.chain.deployment().verifying_paymaster;
    let attacker_key = devnet.chain.dev_key(7).unwrap();
    let attacker = attacker_key.address();
    let as_attacker =
        ChainClient::connect_with_signer(devnet.chain.rpc_url(), attacker_key, Some(31337))
            .await
            .unwrap();
    let provider = as_attacker.provider().clone();
    let deposit_before = deposit(&devnet).await;
    let attacker_before = provider.get_balance(attacker).await.unwrap();

    // A sponsor-signed ordinary send...
    let mut ordinary = ordinary_op(&devnet, 2).await;
    let paid = pm_get_paymaster_data(devnet.gas_manager.url(), &ordinary)
        .await
        .unwrap();
    ordinary.paymaster_data = Some(paid.paymaster_data.clone());
    let signed_max_cost = SponsorTerms::decode(&paid.paymaster_data).unwrap().max_cost;
    assert_eq!(
        signed_max_cost,
        ordinary.max_cost(),
        "the sponsor signs the op's own maximum cost, nothing above"
    );

    // ...inflated after signing, submitted by the member as its own bundler.
    let mut inflated = inflate(&ordinary);
    sign_account(&mut inflated, &devnet.owner);
    let err = as_attacker
        .send_transaction(
            "EntryPoint.handleOps",
            ENTRY_POINT_V07,
            handle_ops(&inflated, attacker),
        )
        .await
        .unwrap_err();
    let ChainError::Reverted { reason, .. } = &err else {
        panic!("expected the EntryPoint to refuse, got {err}");
    };
    assert!(
        reason.contains("AA33") && reason.contains("CostAboveSignedMaximum"),
        "{reason}"
    );
    assert!(reason.contains(&signed_max_cost.to_string()), "{reason}");

    // A sponsor signature over the inflated fields themselves, but with a lower signed maximum
    // (the gas manager's cap): the paymaster still refuses it.
    let mut capped = inflate(&ordinary);
    capped.paymaster_data = Some(
        signed_paymaster_data(
            devnet.chain.sponsor(),
            &capped,
            31337,
            paymaster,
            SponsorTerms {
                valid_until: SponsorTerms::decode(&paid.paymaster_data)
                    .unwrap()
                    .valid_until,
                valid_after: Default::default(),
                max_cost: signed_max_cost,
            },
        )
        .unwrap(),
    );
    sign_account(&mut capped, &devnet.owner);
    let err = as_attacker
        .send_transaction(
            "EntryPoint.handleOps",
            ENTRY_POINT_V07,
            handle_ops(&capped, attacker),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("AA33") && err.to_string().contains("CostAboveSignedMaximum"),
        "{err}"
    );

    // Mined anyway (gas limit given, no estimate): the bundle reverts; the attacker paid its gas.
    let request = TransactionRequest::default()
        .with_to(ENTRY_POINT_V07)
        .with_input(handle_ops(&capped, attacker))
        .with_gas_limit(3_000_000);
    let receipt = provider
        .send_transaction(request)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert!(!receipt.status(), "handleOps must revert");
    assert_eq!(
        deposit(&devnet).await,
        deposit_before,
        "the deposit paid nothing"
    );
    let attacker_after = provider.get_balance(attacker).await.unwrap();
    assert!(
        attacker_after < attacker_before,
        "the attacker gained nothing ({attacker_before} → {attacker_after})"
    );

    // Control: the op exactly as signed goes through the same path and costs at most what was
    // signed, so what refused the others was the signed maximum.
    let mut honest = ordinary.clone();
    sign_account(&mut honest, &devnet.owner);
    as_attacker
        .send_transaction(
            "EntryPoint.handleOps",
            ENTRY_POINT_V07,
            handle_ops(&honest, attacker),
        )
        .await
        .unwrap();
    let spent = deposit_before - deposit(&devnet).await;
    assert!(
        !spent.is_zero() && spent <= signed_max_cost,
        "spent {spent}, signed at most {signed_max_cost}"
    );
}

/// The per-operation cost cap of the gas manager binds the `alchemy_` flow too, where the gas
/// manager chooses every number itself.
#[tokio::test(flavor = "multi_thread")]
async fn the_gas_manager_never_signs_above_its_per_operation_cost_cap() {
    let devnet = devnet().await;
    let cluster = devnet.cluster.address;
    let lax = webhook(&devnet.chain, cluster, devnet_caps()).await;
    let mut config = GasManagerConfig::new(
        devnet.chain.rpc_url().clone(),
        31337,
        devnet.bundler.url().clone(),
        devnet.chain.deployment().verifying_paymaster,
        devnet.chain.sponsor().clone(),
        lax.url().parse().unwrap(),
        WebhookSecret::new(SECRET),
        vec![POLICY.to_string()],
    );
    config.max_cost_per_op = U256::from(1_000_000_000u64);
    let stingy = GasManager::spawn(config).await.unwrap();
    let request = json!([{
        "policyId": POLICY,
        "entryPoint": ENTRY_POINT_V07,
        "dummySignature": dummy_signature(),
        "userOperation": {"sender": devnet.account, "nonce": "0x00", "callData": send_to_self(&devnet, 3)},
    }]);
    let (code, message) = rpc_err(
        stingy.url(),
        "alchemy_requestGasAndPaymasterAndData",
        request,
    )
    .await;
    assert_eq!(code, -32600);
    assert!(
        message
            .contains("sponsorship refused by the gas manager: cap: the operation's maximum cost")
            && message.contains("above the gas manager's per-operation cap 1000000000 wei"),
        "{message}"
    );
}
