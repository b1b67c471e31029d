//! The agent's indexer client (`attestmesh_agent::indexer_client`) against real indexers and a
//! forging one: verification of every push, retry while no indexer is up (the poller carrying
//! intake alone), resubscription after a restart, failover without a lost event, push and the
//! agent's poller delivering the same messages (push without polling logs), and the gateway's
//! no-ALPN route (field note 10).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256};
use alloy::rpc::types::Filter;
use attestmesh_agent::indexer_client::{self, IndexerClientConfig, IndexerClientStats, Rejection};
use attestmesh_agent::intake::{IntakeEvent, PollConfig, Provenance};
use attestmesh_agent::shutdown::Shutdown;
use attestmesh_chain::ChainClient;
use attestmesh_devnet::gateway::{GatewayConfig, GatewayEmulator, RouteMode};
use attestmesh_dstack::EthAddress;
use attestmesh_indexer::signing::EventSigner;
use attestmesh_proto::indexer::v1::indexer_server::{Indexer, IndexerServer};
use attestmesh_proto::indexer::v1::{self as pb, signed_event::Body};
use ed25519_dalek::SigningKey;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::harness::{IndexerProcess, RpcProxy, World, eventually, indexer_dstack, within};

/// Fast retries for tests.
pub(crate) fn test_config() -> IndexerClientConfig {
    IndexerClientConfig {
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_millis(800),
        connect_timeout: Duration::from_secs(3),
        keepalive_interval: Duration::from_secs(2),
        keepalive_timeout: Duration::from_secs(2),
        chain_check_attempts: 3,
        chain_check_delay: Duration::from_millis(50),
        ..IndexerClientConfig::default()
    }
}

fn provenance(event: &IntakeEvent) -> Option<Provenance> {
    match event {
        IntakeEvent::ClusterChanged { provenance } | IntakeEvent::Message { provenance, .. } => {
            Some(*provenance)
        }
        IntakeEvent::Reorged { .. } => None,
    }
}

pub(crate) fn key_of(event: &IntakeEvent) -> Option<(B256, u64)> {
    provenance(event).map(|p| (p.tx_hash, p.log_index))
}

/// Starts the client in the background, reading the chain through the world's reader.
pub(crate) fn spawn_client(
    world: &World,
    cluster: Address,
    config: IndexerClientConfig,
) -> (
    Arc<IndexerClientStats>,
    mpsc::Receiver<IntakeEvent>,
    Shutdown,
) {
    spawn_client_on(world.reader.clone(), cluster, config)
}

/// Starts the client in the background, reading the chain through `chain`.
fn spawn_client_on(
    chain: ChainClient,
    cluster: Address,
    config: IndexerClientConfig,
) -> (
    Arc<IndexerClientStats>,
    mpsc::Receiver<IntakeEvent>,
    Shutdown,
) {
    let stats = Arc::new(IndexerClientStats::default());
    let (tx, rx) = mpsc::channel(1024);
    let shutdown = Shutdown::new();
    tokio::spawn(indexer_client::run(
        config,
        Arc::clone(&stats),
        attestmesh_chain::ChainView::new(vec![chain], 1).unwrap(),
        cluster,
        tx,
        shutdown.clone(),
    ));
    (stats, rx, shutdown)
}

/// Receives until `want` (tx, log index) pairs have all arrived; returns every key received.
async fn receive_until(
    rx: &mut mpsc::Receiver<IntakeEvent>,
    want: &BTreeSet<(B256, u64)>,
    seconds: u64,
    seen: &mut BTreeSet<(B256, u64)>,
) {
    within("events through the indexer", seconds, async {
        while !want.is_subset(seen) {
            let event = rx.recv().await.expect("client stopped");
            if let Some(key) = key_of(&event) {
                seen.insert(key);
            }
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// A forging indexer: each subscription serves the next scenario.

#[derive(Clone)]
struct ForgingIndexer {
    public_key: [u8; 32],
    chain_id: u64,
    scenarios: Arc<Mutex<Vec<Vec<pb::SignedEvent>>>>,
    requests: Arc<Mutex<Vec<pb::SubscribeRequest>>>,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::SignedEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Indexer for ForgingIndexer {
    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        self.requests.lock().unwrap().push(request.into_inner());
        let events = {
            let mut scenarios = self.scenarios.lock().unwrap();
            if scenarios.len() > 1 {
                scenarios.remove(0)
            } else {
                scenarios.first().cloned().unwrap_or_default()
            }
        };
        // Keep the stream open after the events, like a real indexer at the head.
        let stream = tokio_stream::StreamExt::chain(
            tokio_stream::iter(events.into_iter().map(Ok)),
            tokio_stream::pending(),
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_info(&self, _: Request<pb::GetInfoRequest>) -> Result<Response<pb::Info>, Status> {
        Ok(Response::new(pb::Info {
            public_key: self.public_key.to_vec(),
            chain_id: self.chain_id,
            ..Default::default()
        }))
    }
}

fn chain_log(event: &pb::SignedEvent) -> pb::ChainLog {
    match &event.body {
        Some(Body::Log(log)) => log.clone(),
        _ => panic!("not a log"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_wrongly_signed_or_fabricated_pushes_are_rejected_and_nothing_is_applied() {
    let world = World::start(5, 5).await;
    let cluster = world.create_cluster("forged").await;
    let _m1 = world.add_member(cluster, "m1").await;
    let _m2 = world.add_member(cluster, "m2").await;
    let chain_id = world.reader.chain_id();
    let logs = world
        .reader
        .logs(
            &Filter::new()
                .address(cluster)
                .event_signature(
                    <attestmesh_bindings::cluster::Cluster::MemberRegistered as alloy::sol_types::SolEvent>::SIGNATURE_HASH,
                )
                .from_block(world.factory_deploy_block),
        )
        .await
        .unwrap();
    assert_eq!(logs.len(), 2);

    let key = SigningKey::from_bytes(&[7; 32]);
    let signer = EventSigner::new(key.clone(), chain_id);
    let impostor = EventSigner::new(SigningKey::from_bytes(&[8; 32]), chain_id);
    let good_1 = signer.sign_log(&logs[0]).unwrap();
    let good_2 = signer.sign_log(&logs[1]).unwrap();

    let wrong_key = impostor.sign_log(&logs[0]).unwrap();
    let mut tampered = good_1.clone();
    if let Some(Body::Log(log)) = tampered.body.as_mut() {
        log.topics[1][31] ^= 0x01; // another member id
    }
    // Validly signed, but not what the chain has.
    let mut forged_data = chain_log(&good_1);
    forged_data.data[0] ^= 0x01;
    let forged_data = signer.sign(Body::Log(forged_data));
    let mut forged_tx = chain_log(&good_1);
    forged_tx.transaction_hash = vec![0xab; 32];
    let forged_tx = signer.sign(Body::Log(forged_tx));
    let mut forged_block = chain_log(&good_1);
    forged_block.block_hash = vec![0xcd; 32];
    let forged_block = signer.sign(Body::Log(forged_block));
    let mut other_emitter = chain_log(&good_1);
    other_emitter.address = world.factory.to_vec();
    let other_emitter = signer.sign(Body::Log(other_emitter));
    let other_chain = EventSigner::new(key, chain_id + 1)
        .sign_log(&logs[0])
        .unwrap();

    let scenarios = vec![
        vec![wrong_key],
        vec![tampered],
        vec![forged_data],
        vec![forged_tx],
        vec![forged_block],
        vec![other_emitter],
        vec![other_chain],
        vec![good_1, good_2],
    ];
    let rejections = scenarios.len() as u64 - 1;
    let fake = ForgingIndexer {
        public_key: signer.public_key(),
        chain_id,
        scenarios: Arc::new(Mutex::new(scenarios)),
        requests: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(IndexerServer::new(fake.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    world
        .register_indexer(&format!("http://{address}"), signer.public_key())
        .await;

    let (stats, mut rx, shutdown) = spawn_client(&world, cluster, test_config());
    let mut received = Vec::new();
    within("the two genuine events", 60, async {
        while received.len() < 2 {
            received.push(rx.recv().await.unwrap());
        }
    })
    .await;
    // Nothing else arrives: the rejected pushes never reached the channel.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), rx.recv())
            .await
            .is_err()
    );
    shutdown.cancel();

    let expected: Vec<_> = logs
        .iter()
        .map(|l| (l.transaction_hash.unwrap(), l.log_index.unwrap()))
        .collect();
    let got: Vec<_> = received.iter().filter_map(key_of).collect();
    assert_eq!(got, expected);
    assert!(
        received
            .iter()
            .all(|e| matches!(e, IntakeEvent::ClusterChanged { .. }))
    );
    assert_eq!(stats.rejected.get(), rejections);
    assert_eq!(stats.accepted.get(), 2);
    // The cursor never moved past a rejected push: every resubscription started from scratch.
    let requests = fake.requests.lock().unwrap().clone();
    assert_eq!(requests.len() as u64, rejections + 1);
    assert!(requests.iter().all(|r| r.after.is_none()), "{requests:?}");
    assert!(
        requests
            .iter()
            .all(|r| r.cluster.eq_ignore_ascii_case(&cluster.to_string()))
    );
    println!(
        "forging indexer: {rejections} pushes rejected (wrong key, tampered topic, forged data, \
         forged tx, forged block hash, another emitter, another chain), 2 genuine accepted; last \
         rejection: {:?}",
        stats.last_rejection()
    );
    assert!(matches!(
        stats.last_rejection(),
        Some(Rejection::WrongChain(id)) if id == chain_id + 1
    ));
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_indexer_down_polling_carries_intake_then_a_restarted_indexer_is_resubscribed_from_the_cursor()
 {
    let world = World::start(5, 5).await;
    let cluster = world.create_cluster("restart").await;
    let alice = world.add_member(cluster, "alice").await;
    let bob = world.add_member(cluster, "bob").await;

    // Registered, but not started: the client finds nobody at the endpoint.
    let (_dstack, socket) = indexer_dstack(world.state.path(), "indexer-restart");
    let key = attestmesh_indexer::derive_key(&attestmesh_dstack::DstackClient::new(
        attestmesh_dstack::Endpoint::Unix(socket.clone()),
    ))
    .await
    .unwrap();
    let mut indexer = IndexerProcess::prepare(
        "indexer-restart",
        world.state.path(),
        world.rpc_url().as_str(),
        world.factory,
        &socket,
        &[],
    );
    world
        .register_indexer(&indexer.endpoint(), key.verifying_key().to_bytes())
        .await;

    // The agent's wiring: the poller and the indexer client feed the same channel.
    let (tx, mut rx) = mpsc::channel(1024);
    let stats = Arc::new(IndexerClientStats::default());
    let shutdown = Shutdown::new();
    let (push_tx, mut push_rx) = mpsc::channel(1024);
    tokio::spawn(indexer_client::run(
        test_config(),
        Arc::clone(&stats),
        attestmesh_chain::ChainView::new(vec![world.reader.clone()], 1).unwrap(),
        cluster,
        push_tx,
        shutdown.clone(),
    ));
    let poller = tokio::spawn(attestmesh_agent::intake::poll(
        attestmesh_chain::ChainView::new(vec![world.reader.clone()], 1).unwrap(),
        PollConfig {
            cluster,
            self_member_id: bob.id,
            start_block: world.factory_deploy_block,
            interval: Duration::from_millis(500),
            confirmations: 0,
            max_range: 2_000,
        },
        tx.clone(),
        attestmesh_agent::intake::IntakeCounters::default(),
    ));
    // Forward pushes into the shared channel, remembering what came by push.
    let pushed: Arc<Mutex<BTreeSet<(B256, u64)>>> = Arc::default();
    let forward = {
        let pushed = Arc::clone(&pushed);
        tokio::spawn(async move {
            while let Some(event) = push_rx.recv().await {
                if let Some(key) = key_of(&event) {
                    pushed.lock().unwrap().insert(key);
                }
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        })
    };

    let receipt = world.send_message(cluster, &alice, &bob, 1).await;
    let mut seen = BTreeSet::new();
    let want = BTreeSet::from([(
        receipt.transaction_hash,
        receipt.inner.logs()[0].log_index.unwrap(),
    )]);
    receive_until(&mut rx, &want, 30, &mut seen).await;
    eventually("several connection attempts", 20, || async {
        (stats.connects.get() >= 4).then_some(())
    })
    .await;
    assert_eq!(stats.forwarded.get(), 0);
    assert!(pushed.lock().unwrap().is_empty());
    println!(
        "indexer down: the message arrived by polling; the client made {} connection attempts with backoff meanwhile, none delivered",
        stats.connects.get()
    );

    // The indexer comes up: the client subscribes and the history arrives by push too.
    indexer.start().await;
    let chain_set = world.cluster_events(cluster).await;
    eventually("the history by push", 60, || async {
        (*pushed.lock().unwrap() == chain_set).then_some(())
    })
    .await;
    let subscriptions = stats.subscriptions.get();

    // Killed: polling goes on; restarted: the client resubscribes after its cursor.
    indexer.kill().await;
    let mut during_outage = BTreeSet::new();
    for n in 2..5 {
        let receipt = world.send_message(cluster, &alice, &bob, n).await;
        during_outage.insert((
            receipt.transaction_hash,
            receipt.inner.logs()[0].log_index.unwrap(),
        ));
    }
    receive_until(&mut rx, &during_outage, 30, &mut seen).await;
    assert!(pushed.lock().unwrap().is_disjoint(&during_outage));
    indexer.start().await;
    eventually(
        "the outage's events by push after the restart",
        60,
        || async {
            during_outage
                .is_subset(&pushed.lock().unwrap())
                .then_some(())
        },
    )
    .await;
    assert!(stats.subscriptions.get() > subscriptions);
    let log = indexer.log();
    let resumed = log
        .lines()
        .rfind(|l| l.contains("subscription opened"))
        .unwrap_or_default()
        .to_string();
    assert!(
        resumed.contains(r#""after":"Some(("#),
        "resumed from a cursor: {resumed}"
    );
    println!("after the restart the client resubscribed: {resumed}");
    let everything = world.cluster_events(cluster).await;
    assert_eq!(*pushed.lock().unwrap(), everything);

    shutdown.cancel();
    poller.abort();
    forward.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_one_of_two_indexers_dies_the_client_moves_to_the_other_without_losing_an_event() {
    let world = World::start(5, 5).await;
    let cluster = world.create_cluster("failover").await;
    let alice = world.add_member(cluster, "alice").await;
    let bob = world.add_member(cluster, "bob").await;

    let (_d1, s1) = indexer_dstack(world.state.path(), "indexer-one");
    let (_d2, s2) = indexer_dstack(world.state.path(), "indexer-two");
    let mut one = IndexerProcess::spawn(
        "indexer-one",
        world.state.path(),
        world.rpc_url().as_str(),
        world.factory,
        &s1,
        &[],
    )
    .await;
    let two = IndexerProcess::spawn(
        "indexer-two",
        world.state.path(),
        world.rpc_url().as_str(),
        world.factory,
        &s2,
        &[],
    )
    .await;
    let key_one = IndexerProcess::public_key(&one.wait_caught_up(30).await);
    let key_two = IndexerProcess::public_key(&two.wait_caught_up(30).await);
    assert_ne!(key_one, key_two, "each TEE identity derives its own key");
    world.register_indexer(&one.endpoint(), key_one).await;
    world.register_indexer(&two.endpoint(), key_two).await;

    let (stats, mut rx, shutdown) = spawn_client(&world, cluster, test_config());
    let mut seen = BTreeSet::new();
    let history = world.cluster_events(cluster).await;
    receive_until(&mut rx, &history, 30, &mut seen).await;
    assert_eq!(stats.current().as_deref(), Some(one.endpoint().as_str()));

    // Messages keep landing while the first indexer dies mid-stream.
    let sender = {
        async {
            for n in 0..12u64 {
                world.send_message(cluster, &alice, &bob, n).await;
                if n == 4 {
                    one.kill().await;
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        }
    };
    let receiving = async {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let chain = world.cluster_events(cluster).await;
            if chain.len() == history.len() + 12 && chain.is_subset(&seen) {
                return chain;
            }
            assert!(Instant::now() < deadline, "events missing after failover");
            if let Ok(Some(event)) =
                tokio::time::timeout(Duration::from_millis(200), rx.recv()).await
                && let Some(key) = key_of(&event)
            {
                seen.insert(key);
            }
        }
    };
    let ((), chain) = tokio::join!(sender, receiving);
    assert_eq!(
        seen, chain,
        "every (tx, log index) on chain arrived by push, nothing else"
    );
    assert_eq!(stats.current().as_deref(), Some(two.endpoint().as_str()));
    assert!(stats.failures.get() >= 1);
    println!(
        "failover: {} events on chain, {} received by push across indexer-one (killed after message 5) and indexer-two; {} sessions failed; {} pushes, {} accepted",
        chain.len(),
        seen.len(),
        stats.failures.get(),
        stats.received.get(),
        stats.accepted.get(),
    );
    shutdown.cancel();
}

/// The push path and the agent's chain-log poller deliver each message as the same intake event
/// (sender, recipient, envelope, ciphertext, block, transaction, log index), and the push path
/// gets there without polling logs: its chain reads (through a counting proxy) are the receipt
/// cross-checks, never `eth_getLogs`. (How much sooner push arrives is `make bench`'s figure.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_the_agents_poller_deliver_the_same_messages_and_push_reads_no_logs() {
    let world = World::start(5, 5).await;
    let cluster = world.create_cluster("push-and-poll").await;
    let alice = world.add_member(cluster, "alice").await;
    let bob = world.add_member(cluster, "bob").await;
    let (_dstack, socket) = indexer_dstack(world.state.path(), "indexer-push-and-poll");
    let indexer = IndexerProcess::spawn(
        "indexer-push-and-poll",
        world.state.path(),
        world.rpc_url().as_str(),
        world.factory,
        &socket,
        &[],
    )
    .await;
    let key = IndexerProcess::public_key(&indexer.wait_caught_up(30).await);
    world.register_indexer(&indexer.endpoint(), key).await;

    // The push client reads the chain through a proxy that counts its calls.
    let proxy = RpcProxy::spawn(world.rpc_url(), None, Duration::ZERO).await;
    let push_chain = ChainClient::connect(&proxy.url, None).await.unwrap();
    let (stats, mut push_rx, shutdown) = spawn_client_on(push_chain, cluster, test_config());
    let (poll_tx, mut poll_rx) = mpsc::channel(1024);
    let poller = tokio::spawn(attestmesh_agent::intake::poll(
        attestmesh_chain::ChainView::new(vec![world.reader.clone()], 1).unwrap(),
        PollConfig {
            cluster,
            self_member_id: bob.id,
            start_block: world.head().await + 1,
            interval: Duration::from_millis(200),
            confirmations: 0,
            max_range: 2_000,
        },
        poll_tx,
        attestmesh_agent::intake::IntakeCounters::default(),
    ));
    let history = world.cluster_events(cluster).await;
    let mut seen = BTreeSet::new();
    receive_until(&mut push_rx, &history, 30, &mut seen).await;

    let mut sent = BTreeSet::new();
    for n in 0..6u64 {
        sent.insert(
            world
                .send_message(cluster, &alice, &bob, n)
                .await
                .transaction_hash,
        );
    }
    // Each sent message as each path delivered it, by transaction.
    let (mut pushed, mut polled) = (BTreeMap::new(), BTreeMap::new());
    within("every message by both paths", 60, async {
        while !(sent
            .iter()
            .all(|tx| pushed.contains_key(tx) && polled.contains_key(tx)))
        {
            let (event, into) = tokio::select! {
                Some(event) = push_rx.recv() => (event, &mut pushed),
                Some(event) = poll_rx.recv() => (event, &mut polled),
            };
            if let IntakeEvent::Message { provenance, .. } = &event
                && sent.contains(&provenance.tx_hash)
            {
                let earlier = into.insert(provenance.tx_hash, event.clone());
                assert!(earlier.is_none(), "{event:?} delivered twice by one path");
            }
        }
    })
    .await;
    assert_eq!(pushed, polled, "push and poll disagree on a message");
    for event in pushed.values() {
        let IntakeEvent::Message {
            sender_id,
            recipient_id,
            ..
        } = event
        else {
            unreachable!("only messages are kept");
        };
        assert_eq!((*sender_id, *recipient_id), (alice.id, bob.id), "{event:?}");
    }
    assert_eq!(stats.rejected.get(), 0, "{:?}", stats.last_rejection());
    assert_eq!(
        proxy.calls_of("eth_getLogs"),
        0,
        "the push path polled logs: {:?}",
        proxy.calls.lock().unwrap()
    );
    assert!(
        proxy.calls_of("eth_getTransactionReceipt") >= sent.len() as u64,
        "each push is cross-checked against its receipt: {:?}",
        proxy.calls.lock().unwrap()
    );
    shutdown.cancel();
    poller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reaches_the_indexer_through_the_gateways_no_alpn_route_with_assume_http2() {
    let world = World::start(5, 5).await;
    let cluster = world.create_cluster("gateway").await;
    let _m1 = world.add_member(cluster, "m1").await;
    let (_dstack, socket) = indexer_dstack(world.state.path(), "indexer-gateway");
    let app_id = EthAddress(
        alloy::primitives::keccak256(b"indexer-gateway")[..20]
            .try_into()
            .unwrap(),
    );
    let indexer = IndexerProcess::spawn(
        "indexer-gateway",
        world.state.path(),
        world.rpc_url().as_str(),
        world.factory,
        &socket,
        &[],
    )
    .await;
    let key = IndexerProcess::public_key(&indexer.wait_caught_up(30).await);
    let gateway = GatewayEmulator::spawn(GatewayConfig {
        routes: vec![(app_id, IpAddr::V4(Ipv4Addr::LOCALHOST))],
        ..GatewayConfig::default()
    })
    .unwrap();
    // The no-suffix route: the gateway terminates TLS and answers ALPN with nothing.
    let host = gateway.hostname(app_id, indexer.grpc.port(), RouteMode::Terminate);
    let endpoint = format!("https://{host}");
    world.register_indexer(&endpoint, key).await;

    // Field note 10, shown on this route: tonic without assume_http2 refuses.
    let refused = {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(gateway.ca_pem()))
            .domain_name(host.clone())
            .assume_http2(false);
        let gateway_addr = gateway.local_addr();
        tonic::transport::Endpoint::from_shared(endpoint.clone())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect_with_connector(tower::service_fn(
                move |_: tonic::transport::Uri| async move {
                    tokio::net::TcpStream::connect(gateway_addr)
                        .await
                        .map(hyper_util::rt::TokioIo::new)
                },
            ))
            .await
    };
    let error = refused.expect_err("tonic must refuse without ALPN h2");
    let mut chain = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    assert!(chain.contains("HTTP/2 was not negotiated"), "{chain}");

    let config = IndexerClientConfig {
        gateway_connect: Some(gateway.local_addr()),
        ca_pem: Some(gateway.ca_pem().to_string()),
        ..test_config()
    };
    let (stats, mut rx, shutdown) = spawn_client(&world, cluster, config);
    let history = world.cluster_events(cluster).await;
    let mut seen = BTreeSet::new();
    receive_until(&mut rx, &history, 30, &mut seen).await;
    assert_eq!(stats.current().as_deref(), Some(endpoint.as_str()));
    println!(
        "through the gateway's no-suffix route {endpoint}: without assume_http2 tonic fails with \"{chain}\"; \
         the indexer client (assume_http2(true), rustls on ring) received {} events",
        seen.len()
    );
    shutdown.cancel();
}
