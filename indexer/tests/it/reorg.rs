//! Reorgs: the indexer notices that a block it applied is no longer the chain's, drops the
//! events above the fork, pushes a signed reorg notice and then the new chain's events.

use std::time::Duration;

use alloy::primitives::U256;
use alloy::providers::Provider;
use attestmesh_agent::intake::IntakeEvent;
use attestmesh_indexer::signing::verify;
use attestmesh_proto::indexer::v1 as pb;
use attestmesh_proto::indexer::v1::indexer_client::IndexerClient;
use attestmesh_proto::indexer::v1::signed_event::Body;
use serde_json::{Value, json};

use crate::harness::{IndexerProcess, World, indexer_dstack, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_is_detected_by_block_hash_and_the_new_chain_is_pushed_after_a_signed_notice() {
    let world = World::start(5, 5).await;
    let cluster = world.create_cluster("reorg").await;
    let alice = world.add_member(cluster, "alice").await;
    let bob = world.add_member(cluster, "bob").await;
    let (_dstack, socket) = indexer_dstack(world.state.path(), "indexer-reorg");
    let indexer = IndexerProcess::spawn(
        "indexer-reorg",
        world.state.path(),
        world.rpc_url().as_str(),
        world.factory,
        &socket,
        &[],
    )
    .await;
    let key = IndexerProcess::public_key(&indexer.wait_caught_up(30).await);
    world.register_indexer(&indexer.endpoint(), key).await;
    // The agent's client follows the same reorg.
    let (stats, mut agent_rx, agent_shutdown) =
        crate::client::spawn_client(&world, cluster, crate::client::test_config());

    let mut grpc = IndexerClient::connect(indexer.endpoint()).await.unwrap();
    let mut stream = grpc
        .subscribe(pb::SubscribeRequest {
            cluster: cluster.to_string(),
            after: None,
            from_block: 0,
        })
        .await
        .unwrap()
        .into_inner();
    // The history: epoch 0 opening with the cluster, the two registrations.
    for _ in 0..world.cluster_events(cluster).await.len() {
        assert!(matches!(
            next(&mut stream, &key).await.body,
            Some(Body::Log(_))
        ));
    }

    // A message in a block that will be orphaned.
    let provider = world.reader.provider();
    let snapshot: Value = provider
        .raw_request("evm_snapshot".into(), ())
        .await
        .unwrap();
    let orphaned = world.send_message(cluster, &alice, &bob, 1).await;
    let orphan_block = orphaned.block_number.unwrap();
    let Some(Body::Log(log)) = next(&mut stream, &key).await.body else {
        panic!("expected the orphaned message");
    };
    assert_eq!(log.transaction_hash, orphaned.transaction_hash.to_vec());
    indexer.wait_applied(orphan_block, 10).await;

    // The fork: back to before that block, then another message and more blocks.
    let reverted: Value = provider
        .raw_request("evm_revert".into(), [snapshot])
        .await
        .unwrap();
    assert_eq!(reverted, json!(true));
    let replacement = world.send_message(cluster, &alice, &bob, 2).await;
    let _: Value = provider
        .raw_request("anvil_mine".into(), [U256::from(2)])
        .await
        .unwrap();
    assert_eq!(replacement.block_number, Some(orphan_block));
    assert_ne!(replacement.block_hash, orphaned.block_hash);

    let notice = next(&mut stream, &key).await;
    let Some(Body::Reorg(reorg)) = notice.body else {
        panic!("expected a reorg notice, got {notice:?}");
    };
    assert!(reorg.from_block <= orphan_block, "{reorg:?}");
    let Some(Body::Log(log)) = next(&mut stream, &key).await.body else {
        panic!("expected the new chain's message");
    };
    assert_eq!(log.transaction_hash, replacement.transaction_hash.to_vec());
    assert_eq!(log.block_hash, replacement.block_hash.unwrap().to_vec());

    // The agent's client: a reorg notice into the intake channel, then the replacement.
    let replacement_key = (
        replacement.transaction_hash,
        replacement.inner.logs()[0].log_index.unwrap(),
    );
    let orphan_key = (
        orphaned.transaction_hash,
        orphaned.inner.logs()[0].log_index.unwrap(),
    );
    let (mut reorged, mut orphan_forwarded) = (None, false);
    within("the agent client's view of the reorg", 30, async {
        loop {
            match agent_rx.recv().await.unwrap() {
                IntakeEvent::Reorged { from_block } => reorged = Some(from_block),
                event if crate::client::key_of(&event) == Some(replacement_key) => break,
                event if crate::client::key_of(&event) == Some(orphan_key) => {
                    orphan_forwarded = true
                }
                _ => {}
            }
        }
    })
    .await;
    // Whether the client saw the orphan depends on timing: if its cross-check ran after the
    // revert, the push was rejected and the client resubscribed below the fork (no notice
    // needed). If it forwarded the orphan, the notice must have come before the replacement.
    if orphan_forwarded {
        assert_eq!(reorged, Some(reorg.from_block));
    }
    agent_shutdown.cancel();
    println!(
        "agent client: orphan forwarded: {orphan_forwarded}, reorg notice forwarded: {reorged:?}; {} pushes, {} accepted, {} rejected",
        stats.received.get(),
        stats.accepted.get(),
        stats.rejected.get(),
    );

    // A client resuming from the orphaned event (say it saw it through another indexer) is
    // told about the reorg first, then gets the new chain from below the fork.
    let mut resumed = grpc
        .subscribe(pb::SubscribeRequest {
            cluster: cluster.to_string(),
            after: Some(pb::Cursor {
                block_number: orphan_block,
                log_index: orphan_key.1,
                block_hash: orphaned.block_hash.unwrap().to_vec(),
            }),
            from_block: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let notice = next(&mut resumed, &key).await;
    let Some(Body::Reorg(resume_reorg)) = notice.body else {
        panic!("expected a reorg notice for an orphaned cursor, got {notice:?}");
    };
    assert!(resume_reorg.from_block <= orphan_block);
    loop {
        let Some(Body::Log(log)) = next(&mut resumed, &key).await.body else {
            panic!("expected logs after the notice");
        };
        if log.transaction_hash == replacement.transaction_hash.to_vec() {
            break;
        }
    }
    // The replacement's own cursor is on the chain: no notice, nothing more yet.
    let mut current = grpc
        .subscribe(pb::SubscribeRequest {
            cluster: cluster.to_string(),
            after: Some(pb::Cursor {
                block_number: orphan_block,
                log_index: replacement_key.1,
                block_hash: replacement.block_hash.unwrap().to_vec(),
            }),
            from_block: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), current.message())
            .await
            .is_err(),
        "a cursor on the chain resumes silently"
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = indexer.status().await;
    assert!(status["reorgs"].as_u64().unwrap() >= 1, "{status}");
    println!(
        "reorg at block {orphan_block}: notice from_block {}, the replacement pushed; a resumption from the orphaned cursor got a notice from_block {}; indexer status reorgs={}",
        reorg.from_block, resume_reorg.from_block, status["reorgs"]
    );
}

async fn next(stream: &mut tonic::Streaming<pb::SignedEvent>, key: &[u8; 32]) -> pb::SignedEvent {
    let event = within("a push", 30, stream.message())
        .await
        .unwrap()
        .unwrap();
    verify(key, &event).expect("every push is signed by the indexer");
    event
}
