//! The messages and indexer sections, on the steady-state cluster after its restarts: history
//! for the indexer (sealed messages from every node at once, each a sponsored UserOperation,
//! with the rate the cluster sent them, then empty blocks); the indexer binary started late and
//! its own catch-up report; then how soon a message reaches its recipient with the indexer's
//! push against chain-log polling alone. Writes the sponsored-messages, catch-up and delivery
//! sections.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use alloy::providers::Provider;
use eyre::WrapErr;
use tokio::time::Instant;

use super::figures::{median_of, stats};
use super::{Cadence, WAIT_LIMIT};
use crate::cluster::Cluster;

/// History for the indexer to catch up on: every node sends `per_node` sealed messages to the
/// next node through its gRPC API (each a sponsored UserOperation), all nodes at once; then
/// `empty_blocks` empty blocks. Reports the message rate it saw.
pub(super) async fn load_history(
    cluster: &Cluster,
    per_node: usize,
    empty_blocks: u64,
    cadence: Cadence,
) -> eyre::Result<String> {
    println!("[bench]   {per_node} messages from each node, then {empty_blocks} empty blocks");
    let mut ids = Vec::new();
    for node in &cluster.nodes {
        ids.push(node.get_self().await?.member_id);
    }
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let mut client = node.client().await?;
        let recipient = ids[(i + 1) % ids.len()];
        let name = node.name.clone();
        senders.spawn(async move {
            for n in 0..per_node {
                client
                    .send_message(attestmesh_proto::agent::v1::SendMessageRequest {
                        recipient_member_id: recipient,
                        payload: format!("bench message {n} from {name}").into_bytes(),
                    })
                    .await
                    .wrap_err_with(|| format!("{name}: SendMessage {n}"))?;
            }
            eyre::Ok(())
        });
    }
    while let Some(result) = senders.join_next().await {
        result.wrap_err("a sender task failed")??;
    }
    let took = started.elapsed().as_secs_f64();
    let sent = per_node * cluster.nodes.len();
    cluster
        .stack
        .chain
        .operator_client()
        .provider()
        .raw_request::<_, serde_json::Value>(
            "anvil_mine".into(),
            [alloy::primitives::U256::from(empty_blocks)],
        )
        .await
        .wrap_err("anvil_mine")?;
    let mut out = String::from("## Sponsored messages\n\n");
    writeln!(
        out,
        "{sent} sealed messages sent through the agents' gRPC API, {per_node} from each of {} \
         nodes at once (each node's one after the other), each a sponsored UserOperation (gas \
         manager, webhook, bundler; anvil at {}), each call returning once its operation was \
         included: {took:.1} s, {:.1} messages/s for the cluster.\n",
        cluster.nodes.len(),
        cadence.label(),
        sent as f64 / took
    )?;
    Ok(out)
}

/// The cluster's indexer ([`Cluster::start_indexer`]), started late against the largest
/// cluster's chain (registrations, CSK commitment, endpoint envelopes, restarts, messages), so
/// it catches up from the factory's deploy block: its own catch-up report.
pub(super) async fn measure_catch_up(
    cluster: &mut Cluster,
    indexer: &Path,
    cadence: Cadence,
) -> eyre::Result<String> {
    println!("[bench]   indexer catch-up");
    let running = cluster.start_indexer(indexer).await?;
    let log = running.log.clone();
    let deadline = Instant::now() + WAIT_LIMIT;
    let status = loop {
        let Some(running) = cluster.indexer.as_mut() else {
            eyre::bail!("the indexer was started but is not recorded");
        };
        if !running.running() {
            eyre::bail!("the indexer exited; see {}", log.display());
        }
        if let Ok(status) = running.status().await
            && status["catch_up_seconds"].is_number()
        {
            break status;
        }
        if Instant::now() >= deadline {
            eyre::bail!(
                "the indexer did not catch up within {WAIT_LIMIT:?}; see {}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let number = |key: &str| {
        status[key]
            .as_f64()
            .ok_or_else(|| eyre::eyre!("the indexer's /status has no number {key:?}: {status}"))
    };
    let blocks = number("applied_block")? - number("start_block")? + 1.0;
    let seconds = number("catch_up_seconds")?;
    let events = number("events")?;
    let rpc_calls: u64 = status["rpc_calls"]
        .as_object()
        .ok_or_else(|| eyre::eyre!("the indexer's /status has no rpc_calls: {status}"))?
        .values()
        .filter_map(serde_json::Value::as_u64)
        .sum();
    let mut out = String::from("## Indexer catch-up\n\n");
    writeln!(
        out,
        "The indexer binary, started after the steady-state cluster's restarts and the messages \
         above against that chain ({}: registrations, the CSK commitment, endpoint envelopes, \
         restarts, messages; then the empty blocks), from the factory's deploy block, which it \
         finds itself. Figures from its own `/status`.\n",
        cadence.label()
    )?;
    out.push_str(
        "| blocks | events | RPC calls (start-block search included) | catch-up | blocks/s | events/s |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    writeln!(
        out,
        "| {blocks:.0} | {events:.0} | {rpc_calls} | {:.1} ms | {:.0} | {:.0} |\n",
        seconds * 1000.0,
        blocks / seconds,
        events / seconds
    )?;
    out.push_str(
        "A local anvil answers in microseconds and the indexer's log range grows while the RPC \
         accepts it, so this history takes a handful of calls; against a hosted Base RPC the \
         rate is set by that provider's latency and log-range limit (`--logs.max-range`).\n\n",
    );
    Ok(out)
}

/// How soon a message reaches its recipient agent: from the block that holds it (first seen by a
/// 10 ms head poll) until the recipient's `SubscribeMessages` stream yields it. `messages` from
/// node 1 to the other nodes in turn, first with the cluster's indexer up and the recipients
/// subscribed to it, then with the indexer stopped (chain-log polling alone, the agents' default
/// interval). Stops the indexer.
pub(super) async fn measure_delivery(
    cluster: &mut Cluster,
    messages: usize,
    cadence: Cadence,
) -> eyre::Result<String> {
    use attestmesh_proto::agent::v1 as pb;
    type Seen<K> = std::sync::Arc<std::sync::Mutex<BTreeMap<K, Instant>>>;
    const SUBSCRIPTIONS: &str = "attestmesh_agent_indexer_subscriptions_total";
    const ACCEPTED: &str = "attestmesh_agent_indexer_pushes_accepted_total";

    println!("[bench]   message delivery: indexer push vs chain-log polling");
    let recipients = &cluster.nodes[1..];
    let deadline = Instant::now() + WAIT_LIMIT;
    for node in recipients {
        while node.metric_sum(SUBSCRIPTIONS).await? < 1.0 {
            if Instant::now() >= deadline {
                eyre::bail!("{} never subscribed to the indexer", node.name);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    // When each block was first seen.
    let blocks: Seen<u64> = Default::default();
    let provider = cluster.stack.chain.operator_client().provider().clone();
    let watched = std::sync::Arc::clone(&blocks);
    tasks.spawn(async move {
        loop {
            if let Ok(head) = provider.get_block_number().await {
                let now = Instant::now();
                let mut blocks = watched.lock().unwrap_or_else(|e| e.into_inner());
                let first = blocks.last_key_value().map_or(head, |(last, _)| last + 1);
                for block in first..=head {
                    blocks.insert(block, now);
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    // When each message (by transaction) reached its recipient's app stream.
    let arrived: Seen<String> = Default::default();
    for node in recipients {
        let mut stream = node
            .client()
            .await?
            .subscribe_messages(pb::SubscribeMessagesRequest::default())
            .await
            .wrap_err_with(|| format!("{}: SubscribeMessages", node.name))?
            .into_inner();
        let arrived = std::sync::Arc::clone(&arrived);
        tasks.spawn(async move {
            while let Ok(Some(message)) = stream.message().await {
                arrived
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(message.transaction_hash.to_lowercase())
                    .or_insert_with(Instant::now);
            }
        });
    }

    let mut sender = cluster.nodes[0].client().await?;
    let mut ids = Vec::new();
    for node in recipients {
        ids.push(node.get_self().await?.member_id);
    }
    let accepted = async |cluster: &Cluster| -> eyre::Result<f64> {
        let mut sum = 0.0;
        for node in &cluster.nodes[1..] {
            sum += node.metric_sum(ACCEPTED).await?;
        }
        Ok(sum)
    };
    let mut rows = Vec::new();
    for with_indexer in [true, false] {
        if !with_indexer {
            // Dropping it kills the process: the agents' push sessions end, polling carries on.
            cluster.indexer = None;
        }
        let accepted_before = accepted(cluster).await?;
        let mut sent = Vec::new();
        for n in 0..messages {
            let reply = sender
                .send_message(pb::SendMessageRequest {
                    recipient_member_id: ids[n % ids.len()],
                    payload: format!("delivery {n}").into_bytes(),
                })
                .await
                .wrap_err_with(|| format!("SendMessage {n}"))?
                .into_inner();
            sent.push((reply.transaction_hash.to_lowercase(), reply.block_number));
        }
        let deadline = Instant::now() + WAIT_LIMIT;
        let millis = loop {
            let delays: Option<Vec<f64>> = {
                let blocks = blocks.lock().unwrap_or_else(|e| e.into_inner());
                let arrived = arrived.lock().unwrap_or_else(|e| e.into_inner());
                sent.iter()
                    .map(|(tx, block)| {
                        let delay = arrived
                            .get(tx)?
                            .saturating_duration_since(*blocks.get(block)?);
                        Some(delay.as_secs_f64() * 1000.0)
                    })
                    .collect()
            };
            if let Some(delays) = delays {
                break delays;
            }
            if Instant::now() >= deadline {
                eyre::bail!("not every message reached its recipient within {WAIT_LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let pushes = accepted(cluster).await? - accepted_before;
        // The figures mean what they say only if the push path was (or was not) in use.
        if with_indexer == (pushes == 0.0) {
            eyre::bail!(
                "{pushes} pushes accepted by the recipients {} the indexer",
                if with_indexer { "with" } else { "without" }
            );
        }
        let (_, min, max) = stats(&millis);
        println!(
            "[bench]     {}: {min:.0} / {:.0} / {max:.0} ms (min / median / max)",
            if with_indexer {
                "indexer up"
            } else {
                "polling alone"
            },
            median_of(millis.clone())
        );
        rows.push((with_indexer, millis));
    }
    tasks.abort_all();

    let command: Vec<String> = std::env::args().collect();
    let mut out = String::from("## Message delivery: indexer push vs chain-log polling\n\n");
    writeln!(
        out,
        "From the block holding a message (first seen by a 10 ms head poll) until the recipient \
         agent's `SubscribeMessages` stream yields it: sealed messages from node-1 to the other \
         {} nodes in turn, on the steady-state cluster ({}; the agents poll chain logs at their \
         default interval). First with the indexer up and every recipient subscribed to it (its \
         pushes accepted meanwhile; polling continues underneath), then with the indexer \
         stopped. Measured by `{}`. A node's polling delay is set by its poll timer's phase \
         against the block clock (agents started together share it). The indexer tests assert \
         that both paths deliver the same events, not these times.\n",
        recipients.len(),
        cadence.label(),
        command.join(" ")
    )?;
    out.push_str("| intake | messages | min / median / max |\n| --- | ---: | ---: |\n");
    for (with_indexer, millis) in &rows {
        let (_, min, max) = stats(millis);
        writeln!(
            out,
            "| {} | {} | {min:.0} / {:.0} / {max:.0} ms |",
            if *with_indexer {
                "indexer push (polling underneath)"
            } else {
                "chain-log polling alone (indexer stopped)"
            },
            millis.len(),
            median_of(millis.clone())
        )?;
    }
    out.push('\n');
    Ok(out)
}
