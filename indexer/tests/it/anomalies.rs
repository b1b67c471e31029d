//! Issue 17: logs the indexer cannot use are counted and logged, never dropped silently. A
//! `ClusterCreated` of the factory whose data does not decode (the factory never emits one: an
//! RPC returned it) moves `/status`'s `dropped_logs{undecodable_cluster_created}` and is logged
//! at warn with its block, transaction and address.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use alloy::primitives::{Address, B256};
use alloy::sol_types::SolEvent;
use attestmesh_bindings::factory::ClusterFactory;
use attestmesh_indexer::rpc::IndexerRpc;
use attestmesh_indexer::status::DROPPED_UNDECODABLE_CLUSTER_CREATED;
use serde_json::{Value, json};

use crate::harness::{IndexerProcess, RpcProxy, World, indexer_dstack};

/// Whether the eth_getLogs `filter` covers `block` and asks for `factory`'s logs.
fn asks_for(filter: &Value, block: u64, factory: Address) -> bool {
    let number = |key: &str| {
        filter[key]
            .as_str()
            .and_then(|n| u64::from_str_radix(n.trim_start_matches("0x"), 16).ok())
    };
    let covers = number("fromBlock").is_some_and(|from| from <= block)
        && number("toBlock").is_some_and(|to| to >= block);
    let factory = json!(factory.to_string().to_lowercase());
    let names = |value: &Value| match value {
        Value::Array(addresses) => addresses
            .iter()
            .any(|a| a.as_str().map(str::to_lowercase) == factory.as_str().map(str::to_owned)),
        Value::String(address) => address.to_lowercase() == factory,
        // No address filter: every emitter.
        _ => true,
    };
    covers && names(&filter["address"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_cluster_created_is_counted_and_logged_not_dropped_silently() {
    let world = World::start(2, 2).await;
    // A real cluster too: the counter counts the bad log only.
    let cluster = world.create_cluster("decodable").await;
    let block = world.factory_deploy_block;
    let hash = IndexerRpc::new(world.reader.clone())
        .block(block)
        .await
        .unwrap()
        .unwrap()
        .hash;
    let tx = B256::repeat_byte(0x77);

    // The first eth_getLogs over the factory's deploy block gets one more log: the factory's,
    // with ClusterCreated's topics and data that is not its ABI encoding.
    let proxy = RpcProxy::spawn(world.rpc_url(), None, std::time::Duration::ZERO).await;
    let injected = Arc::new(AtomicU64::new(0));
    let factory = world.factory;
    proxy.set_rewrite(Some(Arc::new({
        let injected = Arc::clone(&injected);
        move |request: &Value, reply: &mut Value| {
            if request["method"] != json!("eth_getLogs")
                || !asks_for(&request["params"][0], block, factory)
                || injected.load(Ordering::SeqCst) > 0
            {
                return;
            }
            let Some(logs) = reply["result"].as_array_mut() else {
                return;
            };
            let word = |byte: u8| B256::left_padding_from(&[byte; 20]);
            logs.push(json!({
                "address": factory,
                "topics": [
                    ClusterFactory::ClusterCreated::SIGNATURE_HASH,
                    word(0xc1),
                    word(0x0e),
                    word(0xc4),
                ],
                "data": "0xdead",
                "blockNumber": format!("{block:#x}"),
                "blockHash": hash,
                "transactionHash": tx,
                "transactionIndex": "0x0",
                "logIndex": "0x3e7",
                "removed": false,
            }));
            injected.fetch_add(1, Ordering::SeqCst);
        }
    })));

    let (_dstack, socket) = indexer_dstack(world.state.path(), "indexer-anomalies");
    let indexer = IndexerProcess::spawn(
        "indexer-anomalies",
        world.state.path(),
        proxy.url.as_str(),
        world.factory,
        &socket,
        &[],
    )
    .await;
    let status = indexer.wait_caught_up(60).await;
    assert_eq!(
        injected.load(Ordering::SeqCst),
        1,
        "the proxy injected the bad log once"
    );
    // Applied past the bad log's block, so its range went through the follower.
    assert!(status["applied_block"].as_u64() >= Some(block), "{status}");
    assert_eq!(
        status["dropped_logs"][DROPPED_UNDECODABLE_CLUSTER_CREATED],
        json!(1),
        "the undecodable ClusterCreated is counted once: {status}"
    );
    // The good ClusterCreated is followed as before.
    assert_eq!(status["clusters"], json!(1), "{status}");

    let log = indexer.log();
    let warned: Value = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["fields"]["reason"] == json!(DROPPED_UNDECODABLE_CLUSTER_CREATED))
        .unwrap_or_else(|| panic!("no warning names the dropped log:\n{log}"));
    assert_eq!(warned["level"], json!("WARN"), "{warned}");
    let fields = &warned["fields"];
    assert_eq!(fields["block"], json!(block), "{warned}");
    assert_eq!(fields["tx"], json!(tx.to_string()), "{warned}");
    assert_eq!(fields["log_index"], json!(999), "{warned}");
    assert_eq!(fields["address"], json!(factory.to_string()), "{warned}");
    println!(
        "dropped_logs {} after one injected bad ClusterCreated (cluster {cluster} followed); warning: {warned}",
        status["dropped_logs"]
    );
}
