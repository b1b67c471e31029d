//! Sponsored operations that land: a registration and a message through the gas manager's
//! alchemy_ method (with the devnet bundler, and with the real alto), and the ERC-7677 flow.

use std::time::Duration;

use alloy::primitives::U256;
use alloy::providers::Provider;
use attestmesh_bindings::ENTRY_POINT_V07;
use attestmesh_chain::SendOptions;
use attestmesh_devnet::gas_manager::GasManager;
use attestmesh_types::UserOperationReceipt;
use serde_json::json;

use super::{
    POLICY, SECRET, devnet, gas_manager_config, message, register, sender_via,
    sponsor_the_erc7677_way, start_webhook,
};
use crate::bundler::{chain_with_member, execute, registration, rpc_ok, wait_for_receipt};

/// The node holds no ETH; gas manager → webhook → bundler → EntryPoint, and it is a member.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_without_eth_is_registered_with_the_paymaster_paying() {
    let devnet = devnet().await;
    let node = register(&devnet).await;

    assert!(node.receipt.success);
    assert_eq!(
        node.receipt.paymaster,
        Some(devnet.chain.deployment().verifying_paymaster),
        "the paymaster paid"
    );
    assert_eq!(node.member.signer, node.registration.owner.address());
    assert_eq!(
        devnet
            .chain
            .operator_client()
            .provider()
            .get_balance(devnet.account)
            .await
            .unwrap(),
        U256::ZERO,
        "the node holds no ETH"
    );
}

/// A sponsored message (to itself, the only member) executes: the cluster logs it.
#[tokio::test(flavor = "multi_thread")]
async fn a_sponsored_message_lands_with_message_sent_among_its_logs() {
    let devnet = devnet().await;
    let node = register(&devnet).await;

    let receipt = node
        .sender
        .send(execute(message(node.member.id, 1)), None)
        .await
        .unwrap();
    assert!(receipt.success);
    assert!(
        receipt.logs.iter().any(|log| log["address"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case(&devnet.cluster.address.to_string())),
        "MessageSent is among the op's logs"
    );
}

/// Field note 5: each sponsored op moves the account's EntryPoint nonce on.
#[tokio::test(flavor = "multi_thread")]
async fn each_sponsored_op_advances_the_account_nonce() {
    let devnet = devnet().await;
    let node = register(&devnet).await;
    node.sender
        .send(execute(message(node.member.id, 1)), None)
        .await
        .unwrap();

    assert_eq!(
        node.sender.nonce().await.unwrap(),
        U256::from(2),
        "nonces advance (field note 5)"
    );
}

/// The registration and a message are paid from the paymaster's deposit at the EntryPoint.
#[tokio::test(flavor = "multi_thread")]
async fn sponsored_ops_are_paid_from_the_paymaster_deposit() {
    let devnet = devnet().await;
    let deposit_before = devnet.paymaster_deposit().await;
    let node = register(&devnet).await;
    node.sender
        .send(execute(message(node.member.id, 1)), None)
        .await
        .unwrap();

    let deposit_after = devnet.paymaster_deposit().await;
    assert!(
        deposit_after < deposit_before,
        "the paymaster's deposit paid for both"
    );
}

/// ERC-7677: stub data (not final) → bundler estimate → final data → the bundler includes the
/// op, paid by the paymaster.
#[tokio::test(flavor = "multi_thread")]
async fn an_op_sponsored_the_erc7677_way_is_included_with_the_paymaster_paying() {
    let devnet = devnet().await;
    let node = register(&devnet).await;

    let (stub, op, hash) =
        sponsor_the_erc7677_way(&devnet, &node, execute(message(node.member.id, 1))).await;
    assert_eq!(stub.is_final, Some(false));
    assert_eq!(
        rpc_ok(
            devnet.bundler.url(),
            "eth_sendUserOperation",
            json!([op, ENTRY_POINT_V07])
        )
        .await,
        json!(hash)
    );
    let receipt: UserOperationReceipt = wait_for_receipt(devnet.bundler.url(), hash).await;
    assert!(
        receipt.success && receipt.paymaster == Some(devnet.chain.deployment().verifying_paymaster),
        "{receipt:?}"
    );
}

/// The gas manager must work with a production bundler too: registration and a message through
/// the real @pimlico/alto (estimation and submission), the same client flow.
#[tokio::test(flavor = "multi_thread")]
async fn sponsored_registration_and_message_through_alto() {
    let (chain, cluster, account) = chain_with_member().await;
    let logs = tempfile::tempdir().unwrap();
    // Port 0: alto's server picks one (read from its log).
    let alto = attestmesh_devnet::alto::Alto::start(
        chain.rpc_url(),
        0,
        &[chain.dev_key(4).unwrap()],
        &chain.dev_key(5).unwrap(),
        logs.path(),
    )
    .await
    .unwrap();
    let (webhook, _state) = start_webhook(&chain, cluster.address).await;
    let gas_manager =
        GasManager::spawn(gas_manager_config(&chain, alto.url(), &webhook.url, SECRET))
            .await
            .unwrap();
    let registration = registration(&chain, &cluster, account, "node-1").await;
    let sender = sender_via(
        &chain,
        alto.url(),
        gas_manager.url(),
        POLICY,
        registration.owner.clone(),
        account,
    )
    .with_options(SendOptions {
        receipt_timeout: Duration::from_secs(60),
        poll_interval: Duration::from_millis(250),
        ..SendOptions::default()
    });

    let receipt = sender
        .send(registration.call_data.clone(), None)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}; alto log: {}",
                std::fs::read_to_string(alto.log())
                    .unwrap_or_else(|e| format!("(cannot read {}: {e})", alto.log().display()))
            )
        });
    assert!(receipt.success);
    let member = chain
        .operator_client()
        .member_of(cluster.address, account)
        .await
        .unwrap()
        .expect("registered");
    let receipt = sender
        .send(execute(message(member.id, 1)), None)
        .await
        .unwrap();
    assert!(receipt.success);
}
