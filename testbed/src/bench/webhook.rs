//! How fast the paymaster webhook fails closed: it runs in this process against a fresh local
//! chain and is timed answering a gas manager with its chain RPC up, down (a [`FaultProxy`]
//! gone down) and hung (a [`HangingForwarder`] that holds every connection), and refusing to
//! start against an RPC that never answers. Every reply is checked to be the expected denial
//! before its time counts. Writes the webhook section.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use eyre::WrapErr;
use tokio::time::Instant;

use super::WAIT_LIMIT;
use super::figures::{median_of, stats};
use attestmesh_devnet::fault_proxy::FaultProxy;

/// How long the paymaster webhook takes to answer a gas manager when its chain RPC is up
/// (the cluster's policy decides), down (connection refused: it fails closed at once) or hung
/// (it fails closed when its chain timeout, the default, expires), and to refuse to start
/// against an RPC that never answers. The webhook runs in this process against a fresh local
/// chain; every reply is checked to be the expected denial before its time counts. (The tests
/// assert these answers, never their latency.)
pub(super) async fn measure_webhook_fail_closed(requests: usize) -> eyre::Result<String> {
    use attestmesh_webhook::{DEFAULT_CHAIN_TIMEOUT, Webhook, WebhookConfig, WebhookSecret};

    const SECRET: &str = "attestmesh-bench-webhook-secret";
    const POLICY: &str = "policy-bench";
    let chain = attestmesh_devnet::local_chain::LocalChain::start(
        attestmesh_devnet::local_chain::LocalChainConfig::default(),
    )
    .await
    .wrap_err("cannot start the webhook's chain")?;
    let chain_id = chain.operator_client().chain_id();
    let cluster = chain
        .create_cluster(
            alloy::primitives::B256::repeat_byte(0x5e),
            0x0a58_0000,
            16,
            vec![alloy::primitives::Address::repeat_byte(0x5e)],
            vec![alloy::primitives::B256::repeat_byte(0x5f)],
        )
        .await?;
    let config = |rpc: &url::Url| -> eyre::Result<WebhookConfig> {
        let mut config = WebhookConfig::new(rpc.clone(), chain_id, WebhookSecret::new(SECRET)?)
            .with_policy(POLICY, cluster);
        config.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        Ok(config)
    };
    // Down: the proxy's port closed (and held). Hung: the forwarder holds every connection.
    let mut down = FaultProxy::start(chain.rpc_url().clone()).await?;
    let hung = HangingForwarder::start(chain.rpc_url()).await?;
    let http = reqwest::Client::new();
    let mut sender = 0u64;
    // One request of a new sender (each sender has its own rate limit); its time and reason.
    let mut ask = async |webhook: &attestmesh_webhook::WebhookHandle,
                         expected: &str|
           -> eyre::Result<Duration> {
        sender += 1;
        let body = serde_json::json!({
            "userOperation": {
                "sender": alloy::primitives::Address::left_padding_from(&sender.to_be_bytes()),
                "nonce": "0x00",
                "callData": "0xdeadbeef",
                "callGasLimit": "0x0186a0",
                "verificationGasLimit": "0x07a120",
                "preVerificationGas": "0xea60",
                "maxFeePerGas": "0x02faf080",
                "maxPriorityFeePerGas": "0x0f4240",
                "signature": format!("0x{}", "ff".repeat(65)),
            },
            "policyId": POLICY,
            "chainId": chain_id,
            "webhookData": "",
        });
        let started = Instant::now();
        let reply: serde_json::Value = tokio::time::timeout(
            WAIT_LIMIT,
            http.post(format!("http://{}/", webhook.local_addr()))
                .bearer_auth(SECRET)
                .json(&body)
                .send(),
        )
        .await
        .wrap_err("the webhook did not answer")??
        .json()
        .await?;
        let elapsed = started.elapsed();
        let reason = reply["reason"].as_str().unwrap_or_default();
        if reply["approved"] != serde_json::json!(false) || !reason.contains(expected) {
            eyre::bail!("the webhook answered {reply}, not a denial saying {expected:?}");
        }
        Ok(elapsed)
    };

    let mut rows: Vec<(&str, &str, Vec<Duration>)> = Vec::new();
    let through_proxy = Webhook::spawn(config(down.url())?).await?;
    let mut up = Vec::new();
    for _ in 0..requests {
        up.push(ask(&through_proxy, "only member-account").await?);
    }
    rows.push((
        "chain RPC up (the cluster's policy answers)",
        "policy denial",
        up,
    ));
    down.go_down().await?;
    let mut refused = Vec::new();
    for _ in 0..requests {
        refused.push(ask(&through_proxy, "could not be checked").await?);
    }
    rows.push((
        "chain RPC down (connection refused)",
        "fail-closed denial",
        refused,
    ));
    through_proxy.shutdown().await?;

    // Each of these waits out the chain timeout: fewer samples.
    let slow = requests.min(5);
    let through_hung = Webhook::spawn(config(&hung.url)?).await?;
    hung.freeze();
    let mut held = Vec::new();
    for _ in 0..slow {
        held.push(ask(&through_hung, "did not answer within").await?);
    }
    rows.push((
        "chain RPC hung (accepts, never answers)",
        "fail-closed denial",
        held,
    ));
    drop(through_hung);
    let mut refusals = Vec::new();
    for _ in 0..slow.min(3) {
        let started = Instant::now();
        let started_up = tokio::time::timeout(WAIT_LIMIT, Webhook::spawn(config(&hung.url)?))
            .await
            .wrap_err("the webhook's start-up against a hung RPC did not end")?;
        match started_up {
            Err(attestmesh_webhook::WebhookError::ChainTimeout { .. }) => {
                refusals.push(started.elapsed());
            }
            Err(other) => eyre::bail!("start-up against a hung RPC failed otherwise: {other}"),
            Ok(_) => eyre::bail!("the webhook started against an RPC that never answers"),
        }
    }
    rows.push((
        "start-up, chain RPC hung",
        "refusal to start (ChainTimeout)",
        refusals,
    ));

    let command: Vec<String> = std::env::args().collect();
    let mut out = String::from("## Paymaster webhook: failing closed\n\n");
    writeln!(
        out,
        "The webhook (in this process, default chain timeout {DEFAULT_CHAIN_TIMEOUT:?}) on a \
         local chain with one cluster, asked by a gas manager for an operation the policy \
         denies, each request from a new sender; its chain RPC behind a proxy that goes down \
         (port closed) or a forwarder that stops answering. Measured by `{}`; every reply \
         checked to be the denial named. The webhook tests assert these answers and that none \
         hangs, not these times.\n",
        command.join(" ")
    )?;
    out.push_str(
        "| chain RPC | answer | requests | min / median / max |\n| --- | --- | ---: | ---: |\n",
    );
    for (case, answer, times) in &rows {
        let millis: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1000.0).collect();
        let (_, min, max) = stats(&millis);
        writeln!(
            out,
            "| {case} | {answer} | {} | {min:.1} / {:.1} / {max:.1} ms |",
            times.len(),
            median_of(millis.clone())
        )?;
    }
    out.push('\n');
    Ok(out)
}

/// A TCP forwarder to the chain RPC that, once frozen, holds every connection (new or
/// pooled) open without answering: a black-holed or overloaded RPC.
struct HangingForwarder {
    url: url::Url,
    frozen: tokio::sync::watch::Sender<bool>,
    accepting: tokio::task::JoinHandle<()>,
}

impl HangingForwarder {
    async fn start(upstream: &url::Url) -> eyre::Result<Self> {
        let target = upstream
            .socket_addrs(|| None)?
            .into_iter()
            .next()
            .ok_or_else(|| eyre::eyre!("{upstream} has no address"))?;
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let url = format!("http://{}", listener.local_addr()?).parse()?;
        let (frozen, watch) = tokio::sync::watch::channel(false);
        let accepting = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    if !*watch.borrow()
                        && let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await
                    {
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => return,
                            _ = watch.wait_for(|frozen| *frozen) => {}
                        }
                    }
                    // Frozen: the client's socket stays open, unanswered, until the sender
                    // (the forwarder) is gone.
                    let _ = watch.wait_for(|_| false).await;
                    drop(client);
                });
            }
        });
        Ok(Self {
            url,
            frozen,
            accepting,
        })
    }

    fn freeze(&self) {
        let _ = self.frozen.send(true);
    }
}

impl Drop for HangingForwarder {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}
