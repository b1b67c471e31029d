//! The client side of sponsorship, `SponsoredSender`, against the gas manager: operations of one
//! account sent at once, independent nonce keys, and a nonce read that fails (field note 5).

use std::time::Duration;

use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use attestmesh_bindings::ENTRY_POINT_V07;
use attestmesh_chain::{
    ChainClient, ChainError, NonceKey, SendOptions, SponsoredSender, UserOpError,
};
use axum::Router;
use axum::body::Bytes as Body;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use url::Url;

use super::{POLICY, Served, devnet, message, register, serve};
use crate::bundler::execute;

/// Operations of one account sent at once (the agent sends endpoint envelopes to every peer in
/// parallel) all land: the sender queues them instead of letting two read the same nonce and
/// one fail with AA25.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_sends_from_one_account_all_land() {
    let devnet = devnet().await;
    let node = register(&devnet).await;
    let member_id = node.member.id;
    let sends = (1..=4u8).map(|envelope| {
        let sender = node.sender.clone();
        tokio::spawn(async move {
            sender
                .send(execute(message(member_id, envelope)), None)
                .await
        })
    });
    for send in sends.collect::<Vec<_>>() {
        let receipt = send.await.unwrap().expect("every concurrent send lands");
        assert!(receipt.success);
    }
    assert_eq!(node.sender.nonce().await.unwrap(), U256::from(5));
}

/// Independent streams of one account (envelopes, app messages) do not wait on each other:
/// operations on different ERC-4337 nonce keys are all submitted before any block is mined.
/// The chain mines nothing until both are in its pool, so a sender that held one lock across
/// keys (the first operation's receipt before the second's nonce read) would never get there.
#[tokio::test(flavor = "multi_thread")]
async fn operations_on_different_nonce_keys_do_not_wait_for_each_others_receipts() {
    let devnet = devnet().await;
    let node = register(&devnet).await;
    let member_id = node.member.id;
    let provider = devnet.chain.operator_client().provider().clone();
    provider
        .raw_request::<_, Value>("evm_setAutomine".into(), [false])
        .await
        .unwrap();
    let sends: Vec<_> = [1u64, 2]
        .into_iter()
        .map(|key| {
            let sender = node.sender.clone();
            tokio::spawn(async move {
                sender
                    .send_on(
                        NonceKey::new(key),
                        execute(message(member_id, key as u8)),
                        None,
                    )
                    .await
            })
        })
        .collect();
    // Inside the sender's 30 s receipt timeout: a first operation that timed out would release
    // a shared lock and let the second through for the wrong reason.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let pool: Value = provider
            .raw_request("txpool_status".into(), ())
            .await
            .unwrap();
        // A malformed reply is anvil's fault, not a slow sender: say so rather than wait it out.
        let pending = pool["pending"]
            .as_str()
            .and_then(|hex| u64::from_str_radix(hex.trim_start_matches("0x"), 16).ok())
            .unwrap_or_else(|| panic!("txpool_status has no hex `pending` count: {pool}"));
        if pending >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second operation was never submitted while the first awaited its block: the \
             nonce keys are not independent (pool: {pool})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    provider
        .raw_request::<_, Value>("evm_mine".into(), ())
        .await
        .unwrap();
    let mut blocks = Vec::new();
    for send in sends {
        let receipt = send.await.unwrap().expect("both operations land");
        assert!(receipt.success);
        blocks.push(receipt.receipt.block_number);
    }
    assert_eq!(blocks[0], blocks[1], "both in the one block mined");
    for key in [1u64, 2] {
        assert_eq!(
            node.sender.nonce_on(NonceKey::new(key)).await.unwrap(),
            (U256::from(key) << 64) + U256::from(1),
            "key {key} advanced once"
        );
    }
}

/// A chain RPC that answers eth_chainId and fails every other call (eth_call included).
async fn broken_rpc(body: Body) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let id = request["id"].clone();
    let reply = if request["method"] == "eth_chainId" {
        json!({"jsonrpc": "2.0", "id": id, "result": "0x7a69"})
    } else {
        json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32000, "message": "eth_call is broken on purpose"}})
    };
    axum::Json(reply).into_response()
}

/// A sender reading its nonce through [`broken_rpc`]; its bundler and gas manager are
/// unreachable. The server stops when the returned [`Served`] is dropped.
async fn sender_on_a_broken_rpc() -> (Served, SponsoredSender) {
    let rpc = serve(Router::new().fallback(broken_rpc)).await;
    let client = ChainClient::connect(&rpc.url, Some(31337)).await.unwrap();
    let nowhere = Url::parse("http://127.0.0.1:9/").unwrap();
    let sender = SponsoredSender::new(
        client,
        nowhere.clone(),
        nowhere,
        POLICY,
        ENTRY_POINT_V07,
        PrivateKeySigner::random(),
        Address::repeat_byte(0x11),
    )
    .unwrap()
    .with_options(SendOptions {
        transient_attempts: 2,
        backoff: Duration::from_millis(10),
        ..SendOptions::default()
    });
    (rpc, sender)
}

/// Field note 5 regression: the nonce was once read through a bundler method that did not exist,
/// the error swallowed into nonce = 0. A chain RPC whose eth_call fails must make
/// `SponsoredSender::nonce()` fail, naming the call.
#[tokio::test(flavor = "multi_thread")]
async fn nonce_read_fails_loudly_when_the_chain_rpc_errors_on_eth_call() {
    let (_rpc, sender) = sender_on_a_broken_rpc().await;

    let err = sender.nonce().await.unwrap_err();
    assert!(
        matches!(&err, UserOpError::Nonce(ChainError::Rpc { .. })),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("EntryPoint.getNonce") && text.contains("broken on purpose"),
        "{text}"
    );
}

/// Field note 5, the send: `send()` stops at the failed nonce read; it never reaches the
/// (unreachable) gas manager.
#[tokio::test(flavor = "multi_thread")]
async fn send_stops_at_a_failed_nonce_read_before_the_gas_manager() {
    let (_rpc, sender) = sender_on_a_broken_rpc().await;

    let err = sender
        .send(Bytes::from(vec![1, 2, 3, 4]), None)
        .await
        .unwrap_err();
    assert!(matches!(err, UserOpError::Nonce(_)), "{err:?}");
}
