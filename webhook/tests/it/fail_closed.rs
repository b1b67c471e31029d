//! A chain that cannot be asked is a denial, never an approval and never a hang. The tests
//! assert the answer (a hang fails them through [`crate::within`]); how fast it comes is a
//! figure of `make bench` ("Paymaster webhook: failing closed" in `bench/RESULTS.md`).

use std::time::Duration;

use alloy::primitives::{Address, Bytes};
use attestmesh_devnet::fault_proxy::FaultProxy;
use serde_json::json;

use crate::{CHAIN_ID, Harness, POLICY, assert_denied, webhook_request, within};

#[tokio::test(flavor = "multi_thread")]
async fn chain_rpc_down_after_start_denies_with_a_reason() {
    // The webhook reaches the chain through a proxy that can go down for real: its port stops
    // listening (connection refused) and stays reserved, so nothing else answers there.
    let chain = crate::ClusterChain::start().await;
    let mut rpc = FaultProxy::start(chain.chain.rpc_url().clone())
        .await
        .unwrap();
    let mut config = chain.config();
    config.rpc_url = rpc.url().clone();
    let webhook = attestmesh_webhook::Webhook::spawn(config).await.unwrap();
    let harness = Harness {
        chain,
        webhook,
        http: reqwest::Client::new(),
    };
    let request = webhook_request(
        Address::repeat_byte(0x61),
        &Bytes::from(vec![0xde, 0xad, 0xbe, 0xef]),
        POLICY,
        json!(CHAIN_ID),
    );

    // Up: the policy answers.
    assert_denied(
        &within("the policy's answer", harness.post(&request)).await,
        "only member-account register and execute",
    );

    rpc.go_down().await.unwrap();
    let reply = within("the answer with the chain RPC down", harness.post(&request)).await;
    assert_denied(&reply, "sponsorship policy could not be checked");
    assert_denied(&reply, "fail closed");

    // The service itself is still up.
    let health = harness
        .http
        .get(harness.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    harness.webhook.shutdown().await.unwrap();
}

/// A TCP proxy to the chain's RPC that can be frozen: from then on it holds every connection,
/// new or pooled, open without answering, as a black-holed or overloaded RPC does.
struct FreezableProxy {
    addr: std::net::SocketAddr,
    freeze: tokio::sync::watch::Sender<bool>,
}

impl FreezableProxy {
    async fn start(target: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (freeze, frozen) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut frozen = frozen.clone();
                tokio::spawn(async move {
                    if !*frozen.borrow() {
                        let mut upstream = tokio::net::TcpStream::connect(target).await.unwrap();
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => return,
                            _ = frozen.wait_for(|frozen| *frozen) => {}
                        }
                    }
                    // Frozen: keep the client's socket open and answer nothing.
                    std::future::pending::<()>().await;
                    drop(client);
                });
            }
        });
        Self { addr, freeze }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hung_chain_rpc_is_denied_once_the_chain_timeout_expires() {
    const TIMEOUT: Duration = Duration::from_millis(500);
    attestmesh_devnet::test_logs::init(crate::LOG_FILTER);
    let chain = crate::ClusterChain::start().await;
    let anvil_port = chain.chain.rpc_url().port().unwrap();
    let proxy = FreezableProxy::start(([127, 0, 0, 1], anvil_port).into()).await;
    let mut config = chain.config();
    config.rpc_url = format!("http://{}", proxy.addr).parse().unwrap();
    config.chain_timeout = TIMEOUT;
    let webhook = attestmesh_webhook::Webhook::spawn(config).await.unwrap();
    let harness = Harness {
        chain,
        webhook,
        http: reqwest::Client::new(),
    };
    let request = webhook_request(
        Address::repeat_byte(0x62),
        &Bytes::from(vec![0xde, 0xad, 0xbe, 0xef]),
        POLICY,
        json!(CHAIN_ID),
    );

    assert_denied(
        &within("the policy's answer", harness.post(&request)).await,
        "only member-account register and execute",
    );

    proxy.freeze.send(true).unwrap();
    // The denial names the configured timeout: the webhook gave up on the chain, on its own.
    let reply = within("the answer with the chain RPC hung", harness.post(&request)).await;
    assert_denied(&reply, "did not answer within 500ms");
    assert_denied(&reply, "fail closed");
}
