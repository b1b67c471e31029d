//! Calls the policy does not sponsor: the policy's reason comes back through the gas manager
//! to the sender, and nothing is paid.

use alloy::primitives::U256;
use attestmesh_bindings::cluster::Cluster;
use attestmesh_chain::UserOpError;

use super::{devnet, message, register};
use crate::bundler::execute;

/// A member call outside the sponsored cluster functions (revokeMember) is refused with the
/// webhook's reason.
#[tokio::test(flavor = "multi_thread")]
async fn a_call_outside_the_sponsored_functions_is_refused_with_the_policys_reason() {
    let devnet = devnet().await;
    let node = register(&devnet).await;

    let err = node
        .sender
        .send(
            execute(Cluster::revokeMemberCall {
                memberId: node.member.id,
            }),
            None,
        )
        .await
        .unwrap_err();
    match &err {
        UserOpError::SponsorshipRefused { message, .. } => {
            assert!(
                message.contains("sponsorship denied by the paymaster webhook"),
                "{message}"
            );
            assert!(
                message.contains("member call is not a sponsored cluster function"),
                "{message}"
            );
        }
        other => panic!("expected a refusal, got {other}"),
    }
}

/// A replayed envelope id is refused by the policy too, before any gas is spent: the deposit
/// and the account's nonce stay where the first message left them.
#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_envelope_id_is_refused_before_any_gas_is_spent() {
    let devnet = devnet().await;
    let node = register(&devnet).await;
    node.sender
        .send(execute(message(node.member.id, 1)), None)
        .await
        .unwrap();
    let deposit_before = devnet.paymaster_deposit().await;

    let err = node
        .sender
        .send(execute(message(node.member.id, 1)), None)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("message envelope id already used"),
        "{err}"
    );
    assert_eq!(
        devnet.paymaster_deposit().await,
        deposit_before,
        "a refused op costs the paymaster nothing"
    );
    assert_eq!(
        node.sender.nonce().await.unwrap(),
        U256::from(2),
        "a refused op is never included"
    );
}
