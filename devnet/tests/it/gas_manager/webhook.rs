//! The gas manager's side of the paymaster webhook: what it sends, and a webhook that refuses
//! its credentials or cannot be reached (each named as such to the caller).

use attestmesh_bindings::ENTRY_POINT_V07;
use attestmesh_bindings::cluster::Cluster;
use attestmesh_devnet::gas_manager::GasManager;
use url::Url;

use super::{
    POLICY, SECRET, Webhook, alchemy_request, devnet, gas_manager_config, message, register,
    sponsor_the_erc7677_way,
};
use crate::bundler::{assert_even_hex, execute, registration, rpc_err};

/// How many requests the webhook has had, after checking `step` asked it `times` more.
fn asked_again(webhook: &Webhook, before: usize, times: usize, step: &str) -> usize {
    let now = webhook.seen().len();
    assert!(
        now >= before + times,
        "the webhook was asked every time: {now} after {step}, {before} before it"
    );
    now
}

/// Every method asks the webhook before it signs (approved or not), and everything the gas
/// manager tells the webhook is even-length hex, with the policy id and chain id.
#[tokio::test(flavor = "multi_thread")]
async fn the_webhook_is_asked_for_every_op_in_even_hex_naming_the_policy_and_chain() {
    let devnet = devnet().await;
    let hook = &devnet.webhook_state;

    let node = register(&devnet).await;
    let asked = asked_again(hook, 0, 1, "the registration (alchemy_, approved)");
    node.sender
        .send(execute(message(node.member.id, 1)), None)
        .await
        .unwrap();
    let asked = asked_again(hook, asked, 1, "a message (alchemy_, approved)");
    node.sender
        .send(
            execute(Cluster::revokeMemberCall {
                memberId: node.member.id,
            }),
            None,
        )
        .await
        .unwrap_err();
    let asked = asked_again(hook, asked, 1, "a revocation (alchemy_, denied)");
    sponsor_the_erc7677_way(&devnet, &node, execute(message(node.member.id, 2))).await;
    asked_again(
        hook,
        asked,
        2,
        "pm_getPaymasterStubData and pm_getPaymasterData",
    );

    let seen = hook.seen();
    assert!(
        seen.len() >= 5,
        "the webhook was asked every time: {}",
        seen.len()
    );
    for body in &seen {
        assert_even_hex(body, "webhook request");
        assert_eq!(body["policyId"], POLICY);
        assert_eq!(body["chainId"], "0x7a69");
    }
}

/// A wrong shared secret: the webhook's 401 is named as a credentials problem.
#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_refusing_the_shared_secret_is_named_as_a_credentials_problem() {
    let devnet = devnet().await;
    let registration = registration(&devnet.chain, &devnet.cluster, devnet.account, "node-1").await;
    let wrong_secret = GasManager::spawn(gas_manager_config(
        &devnet.chain,
        devnet.bundler.url(),
        &devnet.webhook.url,
        "nope",
    ))
    .await
    .unwrap();

    let (code, message) = rpc_err(
        wrong_secret.url(),
        "alchemy_requestGasAndPaymasterAndData",
        alchemy_request(&devnet, &registration, POLICY, ENTRY_POINT_V07),
    )
    .await;
    assert_eq!(code, -32603);
    assert!(
        message.contains("refused the gas manager's credentials (HTTP 401)"),
        "{message}"
    );
}

/// A dead webhook: unreachable, said so with its URL.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_webhook_is_named_as_unreachable() {
    let devnet = devnet().await;
    let registration = registration(&devnet.chain, &devnet.cluster, devnet.account, "node-1").await;
    let dead = Url::parse("http://127.0.0.1:9/hook").unwrap();
    let dead_webhook = GasManager::spawn(gas_manager_config(
        &devnet.chain,
        devnet.bundler.url(),
        &dead,
        SECRET,
    ))
    .await
    .unwrap();

    let (code, message) = rpc_err(
        dead_webhook.url(),
        "alchemy_requestGasAndPaymasterAndData",
        alchemy_request(&devnet, &registration, POLICY, ENTRY_POINT_V07),
    )
    .await;
    assert_eq!(code, -32603);
    assert!(
        message.contains("paymaster webhook at http://127.0.0.1:9/hook unreachable"),
        "{message}"
    );
}
