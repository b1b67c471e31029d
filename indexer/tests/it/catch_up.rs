//! Field note 8: the start block is the factory's deploy block, found by binary search over
//! eth_getCode in a logarithmic number of calls, on a chain whose history starts at block
//! 47 000 000; catch-up never reads from block 0, adapts its log range to the RPC, and the
//! listeners answer before it ends.

use std::time::Duration;

use attestmesh_indexer::rpc::{CodeAt, IndexerRpc};
use attestmesh_indexer::start_block::{StartSource, find_deploy_block};
use attestmesh_proto::indexer::v1 as pb;
use attestmesh_proto::indexer::v1::indexer_client::IndexerClient;
use serde_json::json;

use crate::harness::{GENESIS, IndexerProcess, RpcProxy, World, eventually, indexer_dstack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_block_is_found_by_binary_search_in_logarithmic_calls_and_missing_blocks_are_not_no_code()
 {
    let world = World::start(300, 200).await;
    let head = world.head().await;
    let deploy = world.factory_deploy_block;
    let rpc = IndexerRpc::new(world.reader.clone());

    // Below anvil's genesis there are no blocks: "no such block", never "no code".
    for block in [0, 1, GENESIS / 2, GENESIS - 1] {
        let answer = rpc.code_at(world.factory, block).await.unwrap();
        assert!(
            matches!(answer, CodeAt::BlockMissing(ref m) if m.contains("BlockOutOfRange")),
            "block {block}: {answer:?}"
        );
    }
    // Existing blocks before the deployment: no code. From it on: code.
    assert_eq!(
        rpc.code_at(world.factory, GENESIS).await.unwrap(),
        CodeAt::NoCode
    );
    assert_eq!(
        rpc.code_at(world.factory, deploy - 1).await.unwrap(),
        CodeAt::NoCode
    );
    assert!(matches!(
        rpc.code_at(world.factory, deploy).await.unwrap(),
        CodeAt::Code(_)
    ));
    // Above the head: no such block either.
    assert!(matches!(
        rpc.code_at(world.factory, head + 10).await.unwrap(),
        CodeAt::BlockMissing(_)
    ));

    let before = rpc.total_calls();
    let search = find_deploy_block(&rpc, world.factory).await.unwrap();
    let calls = rpc.total_calls() - before;
    assert_eq!(search.block, deploy);
    assert_eq!(search.source, StartSource::CodeSearch);
    assert_eq!(search.earliest_block, GENESIS);
    assert_eq!(search.recorded_deploy_block, Some(deploy));
    assert_eq!(
        search.rpc_calls, calls,
        "the search counts every call it makes"
    );
    assert!(search.missing_block_probes > 0 && search.no_code_probes > 0);

    let log2 = |n: u64| (n as f64).log2().ceil() as u64;
    let earliest_search = log2(head);
    let deploy_search = log2(head - GENESIS);
    // head + probe(head) + probe(0) + the two binary searches + the deployBlock() cross-check.
    let expected_max = earliest_search + deploy_search + 4;
    let loose_bound = 2 * log2(head) + 4;
    println!(
        "start-block search: deploy block {deploy} found in {calls} RPC calls \
         ({} missing-block, {} no-code, {} code probes; head {head}, earliest block {GENESIS}; \
         bound log2(head) + log2(head - earliest) + 4 = {expected_max}, 2*log2(head) + 4 = {loose_bound}; \
         a scan from 0 would read {} blocks) in {} ms",
        search.missing_block_probes,
        search.no_code_probes,
        search.code_probes,
        head + 1,
        search.elapsed_ms,
    );
    assert!(calls <= expected_max, "{calls} calls > {expected_max}");
    assert!(calls <= loose_bound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_starts_at_the_deploy_block_adapts_its_log_range_and_listeners_answer_before_it_ends()
 {
    // 1000 blocks of history after the factory, with clusters and members in it.
    let world = World::start(150, 0).await;
    let cluster_a = world.create_cluster("catch-up-a").await;
    let a1 = world.add_member(cluster_a, "a1").await;
    let a2 = world.add_member(cluster_a, "a2").await;
    crate::harness::mine(&world.reader, 500).await;
    let cluster_b = world.create_cluster("catch-up-b").await;
    let b1 = world.add_member(cluster_b, "b1").await;
    world.commit_csk(cluster_a, &a1).await;
    world.revoke(cluster_b, &b1).await;
    world.send_message(cluster_a, &a1, &a2, 1).await;
    crate::harness::mine(&world.reader, 500).await;
    let head = world.head().await;
    let expected_events = world.cluster_events(cluster_a).await.len()
        + world.cluster_events(cluster_b).await.len()
        + 2; // two ClusterCreated

    // A hosted-RPC-like proxy: at most 100 blocks per eth_getLogs, 100 ms per call.
    let proxy = RpcProxy::spawn(world.rpc_url(), Some(100), Duration::from_millis(100)).await;
    let (_dstack, socket) = indexer_dstack(world.state.path(), "indexer-catch-up");
    let indexer = IndexerProcess::spawn(
        "indexer-catch-up",
        world.state.path(),
        proxy.url.as_str(),
        world.factory,
        &socket,
        &[("INDEXER_LOG_RANGE", "1000")],
    )
    .await;

    // Up before catch-up ends: /status with the key, and gRPC GetInfo.
    let early = indexer.status().await;
    assert_eq!(early["public_key"].as_str().unwrap().len(), 64, "{early}");
    assert_eq!(early["service"], json!("attestmesh-indexer"));
    let during = eventually("a status while catching up", 20, || async {
        let status = indexer.status().await;
        (status["phase"] == json!("catching-up") && status["head"].is_u64()).then_some(status)
    })
    .await;
    assert_eq!(during["catching_up"], json!(true));
    let mut grpc = IndexerClient::connect(indexer.endpoint()).await.unwrap();
    let info = grpc
        .get_info(pb::GetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        hex::encode(&info.public_key),
        early["public_key"].as_str().unwrap()
    );
    // Catching up: the start block is known (found), and so is the head; neither reads as 0.
    assert_eq!(
        info.start_block,
        Some(world.factory_deploy_block),
        "{info:?}"
    );
    assert!(info.head_block.is_some_and(|h| h >= GENESIS), "{info:?}");
    let readyz = reqwest::get(format!("http://{}/readyz", indexer.health))
        .await
        .unwrap()
        .status();
    println!(
        "during catch-up: phase {}, applied block {}, head {}, GetInfo catching_up={} applied_block={:?}, /readyz {readyz}",
        during["phase"],
        during["applied_block"],
        during["head"],
        info.catching_up,
        info.applied_block
    );

    let status = indexer.wait_caught_up(120).await;
    println!(
        "{}",
        indexer
            .log()
            .lines()
            .filter(|l| l.contains("caught up"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        status["start_block"],
        json!(world.factory_deploy_block),
        "{status}"
    );
    assert_eq!(status["start_block_search"]["source"], json!("code-search"));
    assert_eq!(
        status["start_block_search"]["earliest_block"],
        json!(GENESIS)
    );
    assert_eq!(
        status["events"].as_u64(),
        Some(expected_events as u64),
        "{status}"
    );
    assert!(
        status["log_range_refusals"].as_u64().unwrap() >= 1,
        "{status}"
    );
    // Halved from 1000 on refusals; it may have grown back one step since (then is halved again).
    assert!(status["log_range"].as_u64().unwrap() < 200, "{status}");

    let ranges = proxy.log_ranges.lock().unwrap().clone();
    let lowest = ranges.iter().map(|(from, _, _)| *from).min().unwrap();
    assert!(
        lowest >= world.factory_deploy_block,
        "eth_getLogs from {lowest}, below the deploy block {}",
        world.factory_deploy_block
    );
    let refused = ranges.iter().filter(|(_, _, refused)| *refused).count();
    let largest_served = ranges
        .iter()
        .filter(|(_, _, refused)| !refused)
        .map(|(from, to, _)| to - from + 1)
        .max()
        .unwrap();
    let blocks = head - world.factory_deploy_block + 1;
    println!(
        "catch-up: {blocks} blocks ({} .. {head}) in {:.2} s = {:.0} blocks/s through a proxy \
         allowing 100 blocks and adding 100 ms per eth_getLogs; {} eth_getLogs ({refused} refused, \
         largest served {largest_served}); start-block search {} calls; all RPC calls {}",
        world.factory_deploy_block,
        status["catch_up_seconds"].as_f64().unwrap(),
        status["catch_up_blocks_per_second"].as_f64().unwrap(),
        ranges.len(),
        status["start_block_search"]["rpc_calls"],
        status["rpc_calls"],
    );
    assert!(largest_served <= 100);
    assert_eq!(
        proxy.calls_of("eth_getCode"),
        status["start_block_search"]["code_probes"]
            .as_u64()
            .unwrap()
            + status["start_block_search"]["no_code_probes"]
                .as_u64()
                .unwrap()
            + status["start_block_search"]["missing_block_probes"]
                .as_u64()
                .unwrap()
    );

    // Without the proxy's limits: the speed of catch-up itself.
    let (_dstack2, socket2) = indexer_dstack(world.state.path(), "indexer-catch-up-direct");
    let direct = IndexerProcess::spawn(
        "indexer-catch-up-direct",
        world.state.path(),
        world.rpc_url().as_str(),
        world.factory,
        &socket2,
        &[],
    )
    .await;
    let status = direct.wait_caught_up(60).await;
    println!(
        "catch-up straight from anvil: {blocks} blocks in {:.3} s = {:.0} blocks/s, {} events",
        status["catch_up_seconds"].as_f64().unwrap(),
        status["catch_up_blocks_per_second"].as_f64().unwrap(),
        status["events"]
    );
    assert_eq!(status["events"].as_u64(), Some(expected_events as u64));
}
