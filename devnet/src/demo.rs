//! `attestmesh-devnet demo` (`make demo`): the devnet and N real agents, each in its own network
//! namespace with its own `attestmesh0`, shown as they come up and then shown working: live
//! peers per node, a message round trip through the gRPC API, the same CSK everywhere (by
//! fingerprint, never the key).

use std::path::PathBuf;
use std::time::Duration;

use alloy::primitives::keccak256;
use attestmesh_proto::agent::v1 as pb;
use clap::Args;
use eyre::WrapErr;
use tokio::time::Instant;
use tokio_stream::StreamExt;

use crate::cluster::{Cluster, NodeView};
use crate::stack::StackConfig;

/// Flags of `demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// How many nodes (agents in namespaces).
    #[arg(long = "nodes", env = "NODES", default_value_t = 3)]
    pub nodes: usize,
    /// The `cluster-mesh-agent` binary (default: beside this program).
    #[arg(long = "agent-bin")]
    pub agent_binary: Option<PathBuf>,
    /// The `attestmesh-indexer` binary (default: beside the agent binary).
    #[arg(long = "indexer-bin")]
    pub indexer_binary: Option<PathBuf>,
    /// Run without the shared indexer (nodes then follow the chain by log polling alone).
    #[arg(long = "no-indexer")]
    pub no_indexer: bool,
    /// Exit 0 as soon as every node is healthy and the round trip worked, instead of staying
    /// up until interrupted.
    #[arg(long = "exit-when-healthy")]
    pub exit_when_healthy: bool,
    /// How long to wait for every node to become healthy before giving up with the reason.
    #[arg(long = "timeout-secs", default_value_t = 300)]
    pub timeout_secs: u64,
    /// Where agent logs, sockets and the devnet's files go (cleared at start; only the logs
    /// outlive the demo).
    #[arg(long = "state-dir", default_value = "target/demo")]
    pub state_dir: PathBuf,
}

/// The processes of the running demo, one `<pid> <executable>` per line (removed on a clean
/// exit).
const PIDS_FILE: &str = "pids";

/// Kills what a demo that was itself killed (SIGKILL: no clean-up ran) left running: each
/// recorded pid whose executable is still the recorded one (a recycled pid is someone else's
/// process). Its namespaces go with the next namespace created
/// ([`crate::netns::sweep_orphans`]).
fn stop_leftovers(pids_file: &std::path::Path) {
    let text = match std::fs::read_to_string(pids_file) {
        Ok(text) => text,
        // No earlier demo, or one that cleaned up after itself.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            println!(
                "[demo] cannot read {} ({e}): processes an earlier killed demo left are not stopped",
                pids_file.display()
            );
            return;
        }
    };
    for line in text.lines() {
        let Some((pid, recorded)) = line.split_once(' ') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        let running = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        if running.as_deref() != Some(std::path::Path::new(recorded)) {
            continue;
        }
        let killed = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if killed {
            println!(
                "[demo] stopped process {pid} ({recorded}), left running by an earlier demo that was killed"
            );
        }
    }
}

/// Runs the demo until `shutdown` (or until healthy, with `--exit-when-healthy`). Everything it
/// created — agents, namespaces, the devnet — is gone when this returns.
pub async fn demo(args: DemoArgs, shutdown: impl Future<Output = ()>) -> eyre::Result<()> {
    let agent_binary = match &args.agent_binary {
        Some(path) => path.clone(),
        None => crate::cluster::agent_binary_beside_current_exe()?,
    };
    if args.nodes == 0 {
        eyre::bail!("--nodes must be at least 1");
    }
    stop_leftovers(&args.state_dir.join(PIDS_FILE));
    if args.state_dir.exists() {
        std::fs::remove_dir_all(&args.state_dir)
            .wrap_err_with(|| format!("cannot clear {}", args.state_dir.display()))?;
    }
    std::fs::create_dir_all(&args.state_dir)
        .wrap_err_with(|| format!("cannot create {}", args.state_dir.display()))?;
    let state_dir = std::fs::canonicalize(&args.state_dir)?;
    let outcome = tokio::select! {
        outcome = run(&args, &agent_binary, &state_dir) => outcome,
        () = shutdown => {
            println!("\n[demo] interrupted: stopping agents, deleting namespaces, stopping the devnet");
            Ok(())
        }
    };
    // `run`'s cluster was dropped with its future: agents killed, namespaces deleted by name,
    // devnet stopped.
    // The logs stay: they are the record of the run (the next run clears them).
    for entry in std::fs::read_dir(&state_dir)?.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "log") {
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            if let Err(err) = removed {
                println!("[demo] could not remove {}: {err}", path.display());
            }
        }
    }
    println!(
        "[demo] cleaned up: agents stopped, namespaces deleted, devnet stopped (the logs are kept in {})",
        state_dir.display()
    );
    outcome
}

async fn run(
    args: &DemoArgs,
    agent_binary: &std::path::Path,
    state_dir: &std::path::Path,
) -> eyre::Result<()> {
    let began = Instant::now();
    let config = StackConfig::new(state_dir.join("devnet"));
    println!(
        "[demo] starting the devnet: anvil (chain {}), EntryPoint v0.7, the contracts and a cluster, \
         the paymaster webhook, gas manager, bundler and gateway emulators",
        config.chain.chain_id
    );
    let mut cluster = Cluster::prepare_with(config, state_dir, 0, agent_binary).await?;
    record_pids(&cluster, state_dir)?;
    println!(
        "[demo] devnet up in {:.1} s: chain {}, cluster {}",
        began.elapsed().as_secs_f64(),
        cluster.stack.chain.rpc_url(),
        cluster.stack.cluster
    );
    if !args.no_indexer {
        let binary = args
            .indexer_binary
            .clone()
            .unwrap_or_else(|| agent_binary.with_file_name("attestmesh-indexer"));
        cluster.start_indexer(&binary).await?;
        record_pids(&cluster, state_dir)?;
        let Some(indexer) = cluster.indexer.as_ref() else {
            eyre::bail!("the indexer was started but is not recorded");
        };
        println!(
            "[demo] indexer: its Ed25519 key {}… derived in its TEE, registered in the \
             IndexerRegistry as {}",
            &indexer.public_key[..16],
            indexer.endpoint
        );
    }
    for _ in 0..args.nodes {
        let i = cluster.add_node().await?;
        let node = &cluster.nodes[i];
        println!(
            "[demo] {}: namespace {} ({}), member account {} allowlisted, dstack simulator ready",
            node.name,
            node.netns.name(),
            node.ns_ip,
            cluster.stack.nodes[i].account
        );
    }
    println!(
        "[demo] starting {} cluster-mesh-agent process(es) ({})",
        args.nodes,
        agent_binary.display()
    );
    let started = Instant::now();
    for i in 0..args.nodes {
        cluster.start_agent(i)?;
    }
    record_pids(&cluster, state_dir)?;
    let took = cluster
        .wait_all_healthy(Duration::from_secs(args.timeout_secs), |view| {
            print_progress(view, started)
        })
        .await?;
    println!(
        "[demo] all {} node(s) healthy {:.1} s after start",
        args.nodes,
        took.as_secs_f64()
    );
    show_cluster(&cluster).await?;
    round_trip(&cluster).await?;
    show_indexer(&mut cluster).await?;
    println!("[demo] the cluster works");
    if args.exit_when_healthy {
        return Ok(());
    }
    println!("[demo] staying up; phase and peer changes show below. Ctrl-C stops and cleans up.");
    watch(&mut cluster).await
}

fn record_pids(cluster: &Cluster, state_dir: &std::path::Path) -> eyre::Result<()> {
    // `<pid> <executable>`: what stop_leftovers checks before it kills.
    let text: String = cluster
        .processes()
        .iter()
        .map(|(pid, exe)| format!("{pid} {}\n", exe.display()))
        .collect();
    let path = state_dir.join(PIDS_FILE);
    std::fs::write(&path, text).wrap_err_with(|| format!("cannot write {}", path.display()))
}

fn print_progress(view: &NodeView, started: Instant) {
    let at = started.elapsed().as_secs_f64();
    match &view.status {
        None => println!(
            "  +{at:5.1}s {:8} starting (API not answering yet)",
            view.name
        ),
        Some(s) if view.healthy => println!(
            "  +{at:5.1}s {:8} healthy  ({} live peer(s))",
            view.name, s.live_peers
        ),
        Some(s) => println!(
            "  +{at:5.1}s {:8} {:14} {}",
            view.name, s.phase, s.waiting_for
        ),
    }
}

/// One line per node, and the CSK check: every node's key hashes to the on-chain commitment.
async fn show_cluster(cluster: &Cluster) -> eyre::Result<()> {
    let commitment = cluster
        .stack
        .chain
        .operator_client()
        .csk_commitment(cluster.stack.cluster)
        .await
        .wrap_err("cannot read the CSK commitment from the cluster contract")?
        .ok_or_else(|| eyre::eyre!("the cluster has no CSK commitment yet"))?;
    println!();
    println!(
        "  {:8} {:>6}  {:12} {:>10}  {:9}  {:>14}  CSK fingerprint",
        "node", "member", "mesh ip", "live peers", "phase", "indexer pushes"
    );
    let mut fingerprints = Vec::new();
    for node in &cluster.nodes {
        let me = node.get_self().await?;
        let mut client = node.client().await?;
        let status = client
            .get_mesh_status(pb::GetMeshStatusRequest {})
            .await
            .wrap_err_with(|| format!("{}: GetMeshStatus", node.name))?
            .into_inner();
        let csk = client
            .get_cluster_shared_key(pb::GetClusterSharedKeyRequest {})
            .await
            .wrap_err_with(|| format!("{}: GetClusterSharedKey", node.name))?
            .into_inner();
        // The fingerprint is keccak256(key): the public on-chain commitment, never the key.
        let fingerprint = keccak256(&csk.key);
        fingerprints.push(fingerprint);
        let pushes = match node
            .metric("attestmesh_agent_indexer_pushes_accepted_total")
            .await?
        {
            Some(n) => format!("{n:.0} verified"),
            None => "-".to_string(),
        };
        println!(
            "  {:8} {:>6}  {:12} {:>5} of {:<2}  {:9}  {:>14}  {}…",
            node.name,
            me.member_id,
            me.mesh_ip,
            status.live_peers,
            cluster.nodes.len() - 1,
            status.phase,
            pushes,
            &fingerprint.to_string()[..18]
        );
    }
    println!();
    if fingerprints.iter().all(|f| *f == commitment) {
        println!(
            "[demo] every node holds the same CSK: its fingerprint is the cluster's on-chain \
             commitment {}…",
            &commitment.to_string()[..18]
        );
        Ok(())
    } else {
        eyre::bail!("the nodes' CSK fingerprints differ from the on-chain commitment {commitment}")
    }
}

/// What the shared indexer did: events followed and pushed, subscribers; and that every node
/// verified its pushes (bounded wait: a node subscribes once it has caught up from the chain).
async fn show_indexer(cluster: &mut Cluster) -> eyre::Result<()> {
    const PUSHES: &str = "attestmesh_agent_indexer_pushes_accepted_total";
    let Some(indexer) = cluster.indexer.as_mut() else {
        println!("[demo] no indexer (--no-indexer): nodes followed the chain by log polling alone");
        return Ok(());
    };
    if !indexer.running() {
        eyre::bail!("the indexer exited; see {}", indexer.log.display());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for node in &cluster.nodes {
        loop {
            let verified = match node.metric(PUSHES).await {
                Ok(count) => count.unwrap_or(0.0),
                Err(err) if Instant::now() >= deadline => return Err(err),
                Err(_) => 0.0,
            };
            if verified >= 1.0 {
                break;
            }
            if Instant::now() >= deadline {
                eyre::bail!(
                    "{} verified no push from the indexer within 30 s (see the lines of target \
                     attestmesh::indexer in its log)",
                    node.name
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    // Read after every node verified a push, so the counts below include their subscriptions.
    let status = indexer.status().await?;
    println!(
        "[demo] indexer: {} events of {} cluster(s) followed up to block {}, pushed signed to {} \
         subscriber(s); every node verified pushes (signature and chain check; log polling runs \
         underneath)",
        status["events"], status["clusters"], status["applied_block"], status["subscribers"]
    );
    Ok(())
}

/// node-1 sends a sealed message to node-2 through its gRPC API; node-2 receives it on its
/// inbox stream and answers the same way.
async fn round_trip(cluster: &Cluster) -> eyre::Result<()> {
    let [first, second, ..] = cluster.nodes.as_slice() else {
        println!("[demo] one node: no message round trip to show (NODES=2 or more)");
        return Ok(());
    };
    let began = Instant::now();
    one_way(first, second, b"ping from node-1").await?;
    one_way(second, first, b"pong from node-2").await?;
    println!(
        "[demo] message round trip {} -> {} -> {} through the gRPC API in {:.1} s",
        first.name,
        second.name,
        first.name,
        began.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn one_way(
    from: &crate::cluster::ClusterNode,
    to: &crate::cluster::ClusterNode,
    payload: &[u8],
) -> eyre::Result<()> {
    let recipient_id = to.get_self().await?.member_id;
    let sender_id = from.get_self().await?.member_id;
    let mut recipient = to.client().await?;
    let mut inbox = recipient
        .subscribe_messages(pb::SubscribeMessagesRequest {
            cursor: String::new(),
        })
        .await
        .wrap_err_with(|| format!("{}: SubscribeMessages", to.name))?
        .into_inner();
    let sent = from
        .client()
        .await?
        .send_message(pb::SendMessageRequest {
            recipient_member_id: recipient_id,
            payload: payload.to_vec(),
        })
        .await
        .wrap_err_with(|| format!("{}: SendMessage to member {recipient_id}", from.name))?
        .into_inner();
    println!(
        "[demo] {} sent {:?} to {} (UserOperation {}, block {})",
        from.name,
        String::from_utf8_lossy(payload),
        to.name,
        sent.user_operation_hash,
        sent.block_number
    );
    let deadline = Duration::from_secs(120);
    loop {
        let message = tokio::time::timeout(deadline, inbox.next())
            .await
            .map_err(|_| eyre::eyre!("{} received nothing within {deadline:?}", to.name))?
            .ok_or_else(|| eyre::eyre!("{}: the inbox stream ended", to.name))?
            .wrap_err_with(|| format!("{}: the inbox stream failed", to.name))?;
        if message.sender_member_id == sender_id && message.payload == payload {
            println!(
                "[demo] {} received it from member {} (decrypted, block {})",
                to.name, message.sender_member_id, message.block_number
            );
            return Ok(());
        }
    }
}

/// Until interrupted: report every node's phase and live-peer changes.
async fn watch(cluster: &mut Cluster) -> eyre::Result<()> {
    let started = Instant::now();
    let mut last = cluster.views().await;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        cluster.check_agents_running()?;
        let views = cluster.views().await;
        for (view, previous) in views.iter().zip(&last) {
            if view != previous {
                print_progress(view, started);
            }
        }
        last = views;
    }
}
