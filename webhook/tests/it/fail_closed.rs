//! A chain that cannot be asked is a denial, never an approval and never a hang.

use std::time::{Duration, Instant};

use alloy::primitives::{Address, Bytes};
use serde_json::json;

use crate::{CHAIN_ID, Harness, POLICY, assert_denied, webhook_request};

#[tokio::test(flavor = "multi_thread")]
async fn chain_rpc_down_after_start_denies_with_a_reason() {
    let Harness {
        chain,
        webhook,
        http,
    } = Harness::start().await;
    let sender = Address::repeat_byte(0x61);
    let request = webhook_request(
        sender,
        &Bytes::from(vec![0xde, 0xad, 0xbe, 0xef]),
        POLICY,
        json!(CHAIN_ID),
    );
    let url = format!("http://{}/", webhook.local_addr());
    let post = || {
        let http = http.clone();
        let url = url.clone();
        let body = request.to_string();
        async move {
            let response = http
                .post(url)
                .bearer_auth(crate::SECRET)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            crate::into_json(response).await
        }
    };

    // Up: the policy answers.
    assert_denied(&post().await, "only member-account register and execute");

    // Dropping the chain stops anvil: its port is closed from now on.
    drop(chain);
    let started = Instant::now();
    let reply = post().await;
    assert_denied(&reply, "sponsorship policy could not be checked");
    assert!(
        reply.1["reason"].as_str().unwrap().contains("fail closed"),
        "{}",
        reply.1
    );
    // Fails closed promptly rather than waiting out the gas manager's timeout.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // The service itself is still up.
    let health = http
        .get(format!("http://{}/healthz", webhook.local_addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    webhook.shutdown().await.unwrap();
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
async fn hung_chain_rpc_is_denied_within_the_chain_timeout() {
    const TIMEOUT: Duration = Duration::from_millis(500);
    crate::init_test_logging();
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
        &harness.post(&request).await,
        "only member-account register and execute",
    );

    proxy.freeze.send(true).unwrap();
    let started = Instant::now();
    let reply = harness.post(&request).await;
    let elapsed = started.elapsed();
    assert_denied(&reply, "did not answer within 500ms");
    assert_denied(&reply, "fail closed");
    assert!(
        elapsed >= TIMEOUT && elapsed < TIMEOUT * 6,
        "answered after {elapsed:?}"
    );
}
