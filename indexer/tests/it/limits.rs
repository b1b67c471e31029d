//! Issue 16, item 7: `Subscribe` had no limit per client, so one client could open streams (a
//! task and a 512-event buffer each) until the indexer ran out of memory. A client (a remote
//! IP address, however many connections it opens) holds at most
//! `INDEXER_MAX_SUBSCRIPTIONS_PER_CLIENT` streams; one more is refused with RESOURCE_EXHAUSTED
//! and words that say what to do, and a closed stream frees its slot.

use attestmesh_proto::indexer::v1 as pb;
use attestmesh_proto::indexer::v1::indexer_client::IndexerClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::harness::{IndexerProcess, World, eventually, indexer_dstack, within};

async fn subscribe(
    client: &mut IndexerClient<Channel>,
    cluster: &str,
) -> Result<tonic::Streaming<pb::SignedEvent>, tonic::Status> {
    within(
        "Subscribe",
        30,
        client.subscribe(pb::SubscribeRequest {
            cluster: cluster.to_string(),
            after: None,
            from_block: 0,
        }),
    )
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_holds_at_most_the_configured_subscriptions_and_a_closed_one_frees_its_slot() {
    let world = World::start(2, 2).await;
    let cluster = world.create_cluster("limits").await.to_string();
    let (_dstack, socket) = indexer_dstack(world.state.path(), "indexer-limits");
    let indexer = IndexerProcess::spawn(
        "indexer-limits",
        world.state.path(),
        world.rpc_url().as_str(),
        world.factory,
        &socket,
        &[("INDEXER_MAX_SUBSCRIPTIONS_PER_CLIENT", "2")],
    )
    .await;
    indexer.wait_caught_up(30).await;

    let mut first = IndexerClient::connect(indexer.endpoint()).await.unwrap();
    let mut one = subscribe(&mut first, &cluster)
        .await
        .expect("the first stream");
    let _two = subscribe(&mut first, &cluster)
        .await
        .expect("the second stream");
    // The streams are live: the cluster's history arrives.
    within("a push", 30, one.message()).await.unwrap().unwrap();

    // A third, on the same connection or on a new one from the same address: refused.
    let mut second = IndexerClient::connect(indexer.endpoint()).await.unwrap();
    for client in [&mut first, &mut second] {
        let refused = subscribe(client, &cluster)
            .await
            .expect_err("a third stream is refused");
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        for words in [
            "127.0.0.1",
            "2 open Subscribe streams",
            "INDEXER_MAX_SUBSCRIPTIONS_PER_CLIENT",
        ] {
            assert!(
                refused.message().contains(words),
                "{words}: {}",
                refused.message()
            );
        }
    }
    // The indexer still serves: a closed stream frees its slot for the next subscription.
    drop(one);
    let mut three = eventually("a slot freed by the closed stream", 30, || {
        let (mut client, cluster) = (second.clone(), cluster.clone());
        async move { subscribe(&mut client, &cluster).await.ok() }
    })
    .await;
    within("a push", 30, three.message())
        .await
        .unwrap()
        .unwrap();
    assert!(
        indexer.log().contains("subscription refused"),
        "the refusal is logged"
    );
}
