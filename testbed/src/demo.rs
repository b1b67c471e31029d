//! `attestmesh-testbed demo` (`make demo`): the devnet and N real agents, each in its own network
//! namespace with its own `attestmesh0`, shown as they come up and then shown working: live
//! peers per node, a message round trip through the gRPC API, the same CSK everywhere (by
//! fingerprint, never the key). While it stays up it supervises the agents like a cluster
//! operator would: an agent that exits is reported gone, the others are shown marking it down,
//! and a restart (typed, or written to the control file) is shown rejoining.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::primitives::keccak256;
use attestmesh_proto::agent::v1 as pb;
use clap::Args;
use eyre::WrapErr;
use tokio::time::Instant;
use tokio_stream::StreamExt;

use crate::cluster::{Cluster, NodeView};
use attestmesh_devnet::stack::StackConfig;

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
    /// The ERC-4337 bundler the nodes' UserOperations go through: the real `@pimlico/alto`
    /// (from npm), or the project's own bundler (the one tests inject faults into).
    #[arg(long = "bundler", env = "BUNDLER", value_enum, default_value_t = DemoBundler::Alto)]
    pub bundler: DemoBundler,
}

/// The demo's bundler (`--bundler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoBundler {
    /// `@pimlico/alto`, the production bundler, run from `node_modules`.
    Alto,
    /// The project's bundler (`attestmesh-devnet bundler`).
    Project,
}

/// Where a demo running in the background takes commands: a line `restart node-<n>` written to
/// this file of the state directory restarts that node's agent (the file is read and removed
/// within a second).
pub const CONTROL_FILE: &str = "control";

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
    let entries: Vec<PathBuf> = std::fs::read_dir(&state_dir)?
        .flatten()
        .map(|entry| entry.path())
        .collect();
    for path in entries {
        if path.extension().is_none_or(|e| e != "log") {
            let removed = if path.is_dir() {
                // The devnet's own logs (alto's) join the others before their folder goes.
                keep_logs(&path, &state_dir);
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

/// Moves the `*.log` files of `dir` into `into`, saying which could not be.
fn keep_logs(dir: &Path, into: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.flatten().map(|entry| entry.path()) {
        if path.extension().is_some_and(|e| e == "log")
            && let Some(name) = path.file_name()
            && let Err(err) = std::fs::rename(&path, into.join(name))
        {
            println!("[demo] could not keep {}: {err}", path.display());
        }
    }
}

async fn run(
    args: &DemoArgs,
    agent_binary: &std::path::Path,
    state_dir: &std::path::Path,
) -> eyre::Result<()> {
    let began = Instant::now();
    let mut config = StackConfig::new(state_dir.join("devnet"));
    let bundler = match args.bundler {
        DemoBundler::Alto => {
            // alto listens on every address, so the nodes reach it from their namespaces; 0
            // lets its server pick the port.
            config.alto_port = Some(0);
            format!("the real @pimlico/alto{}", alto_version())
        }
        DemoBundler::Project => "the project's bundler".to_string(),
    };
    let other = match args.bundler {
        DemoBundler::Alto => "--bundler project for the project's own",
        DemoBundler::Project => "the default, --bundler alto, is the real @pimlico/alto",
    };
    println!(
        "[demo] starting the devnet: anvil (chain {}, {} like Base), EntryPoint v0.7, the \
         contracts and a cluster, the paymaster webhook, gas manager and gateway emulators, and \
         {bundler} as the bundler ({other})",
        config.chain.chain_id,
        config.cadence()
    );
    let mut cluster = Cluster::prepare_with(config, state_dir, 0, agent_binary).await?;
    record_pids(&cluster, state_dir)?;
    // The project's bundler listens on every address (for the namespaces): show it on loopback.
    let mut bundler_url = cluster.stack.bundler_url().clone();
    if bundler_url.host_str() == Some("0.0.0.0") {
        bundler_url
            .set_host(Some("127.0.0.1"))
            .wrap_err("cannot name the bundler on loopback")?;
    }
    println!(
        "[demo] devnet up in {:.1} s: chain {}, cluster {}, nodes bundle through {bundler} at \
         {bundler_url}",
        began.elapsed().as_secs_f64(),
        cluster.stack.chain.rpc_url(),
        cluster.stack.cluster,
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
    // Every node's allowlist entry and member account in one round of transactions: O(1)
    // blocks whatever NODES is.
    let prepared = Instant::now();
    for i in cluster.add_nodes(args.nodes).await? {
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
        "[demo] {} node(s) allowlisted and their accounts deployed in {:.1} s",
        args.nodes,
        prepared.elapsed().as_secs_f64()
    );
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
    watch(&mut cluster, state_dir, started).await
}

fn record_pids(cluster: &Cluster, state_dir: &std::path::Path) -> eyre::Result<()> {
    // `<pid> <executable>`: what stop_leftovers checks before it kills.
    let mut processes = cluster.processes();
    processes.extend(alto_processes());
    let text: String = processes
        .iter()
        .map(|(pid, exe)| format!("{pid} {}\n", exe.display()))
        .collect();
    let path = state_dir.join(PIDS_FILE);
    std::fs::write(&path, text).wrap_err_with(|| format!("cannot write {}", path.display()))
}

/// The alto bundler(s) this process started (children running `@pimlico/alto`), with their
/// executable (`node`): recorded beside the cluster's processes, so a demo that was SIGKILLed
/// does not leave alto running either.
fn alto_processes() -> Vec<(u32, PathBuf)> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // `<pid> (<comm>) <state> <ppid> ...`; comm may hold spaces, so split after `)`.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let (_, rest) = stat.rsplit_once(')')?;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(me)
        })
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains("@pimlico/alto"))
        })
        .filter_map(|pid| Some((pid, std::fs::read_link(format!("/proc/{pid}/exe")).ok()?)))
        .collect()
}

/// ` <version>` of the installed `@pimlico/alto`, or nothing when its package.json is unreadable
/// (alto's own start then says what is missing).
fn alto_version() -> String {
    let path = attestmesh_devnet::local_chain::project_root()
        .join("node_modules/@pimlico/alto/package.json");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|package| Some(format!(" {}", package["version"].as_str()?)))
        .unwrap_or_default()
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
    let epoch = cluster
        .stack
        .chain
        .operator_client()
        .current_csk_epoch(cluster.stack.cluster)
        .await
        .wrap_err("cannot read the CSK epoch from the cluster contract")?;
    if epoch.commitment.is_zero() {
        eyre::bail!("CSK epoch {} has no commitment yet", epoch.epoch);
    }
    let commitment = epoch.commitment;
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
            "[demo] every node holds the same CSK of epoch {}: its fingerprint is the cluster's \
             on-chain commitment {}…",
            epoch.epoch,
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
            // Not answering yet is retried; at the deadline the last error is the answer (a
            // family that is not exported at all must not read as 0 verified pushes).
            let verified = match node.metric_sum(PUSHES).await {
                Ok(count) => count,
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

/// Until interrupted: report every node's phase and live-peer changes, like a cluster rather
/// than a script: an agent that exits is reported gone (the others' live-peer counts show them
/// marking it down after missed heartbeats) and the demo goes on; `restart node-<n>` — typed
/// here when stdin is a terminal, or written to the control file — starts it again, and the
/// demo reports when it is healthy and every other node sees it live again.
async fn watch(cluster: &mut Cluster, state_dir: &Path, started: Instant) -> eyre::Result<()> {
    let control = state_dir.join(CONTROL_FILE);
    // Member ids survive restarts (the same identity re-registers to the same id): they say
    // which peer in another node's ListPeers is the restarted one.
    let mut member_ids = Vec::with_capacity(cluster.nodes.len());
    for node in &cluster.nodes {
        member_ids.push(node.get_self().await?.member_id);
    }
    let mut typed = typed_lines();
    for node in &cluster.nodes {
        if let Some(pid) = node.pid() {
            println!(
                "[demo] {} runs as pid {pid} (`kill -9 {pid}` stops it)",
                node.name
            );
        }
    }
    println!(
        "[demo] stop a node and the others mark it down; restart it with \
         `echo restart node-<n> > {}`{}",
        control.display(),
        if typed.is_some() {
            ", or type `r <n>` and Enter here"
        } else {
            ""
        }
    );
    let mut control_error = None;
    let mut rejoining: Vec<Option<Instant>> = vec![None; cluster.nodes.len()];
    let mut last = cluster.views().await;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut gone = false;
        for (i, (node, rejoin)) in cluster.nodes.iter_mut().zip(&mut rejoining).enumerate() {
            let Some(status) = node.exited() else {
                continue;
            };
            node.agent = None;
            *rejoin = None;
            gone = true;
            println!(
                "[demo] {} is gone (exit status {status}; its log: {}); the others mark it down \
                 after missed heartbeats. Restart it: `echo restart {} > {}`{}",
                node.name,
                node.log.display(),
                node.name,
                control.display(),
                if typed.is_some() {
                    format!(" or type `r {}` and Enter", i + 1)
                } else {
                    String::new()
                }
            );
        }
        if gone {
            note_pids(cluster, state_dir);
        }

        let mut lines = take_control_lines(&control, &mut control_error);
        if let Some(rx) = typed.as_mut() {
            while let Ok(line) = rx.try_recv() {
                lines.push(line);
            }
        }
        for line in lines {
            match parse_restart(&line, cluster.nodes.len()) {
                Ok(None) => {}
                Ok(Some(i)) => {
                    if restart(cluster, i, state_dir) {
                        rejoining[i] = Some(Instant::now());
                    }
                }
                Err(complaint) => println!("[demo] {complaint}"),
            }
        }

        let views = cluster.views().await;
        for ((view, previous), node) in views.iter().zip(&last).zip(&cluster.nodes) {
            // A gone node's view (its API not answering) was reported as gone above.
            if view != previous && node.agent.is_some() {
                print_progress(view, started);
            }
        }
        for (i, rejoin) in rejoining.iter_mut().enumerate() {
            let Some(since) = *rejoin else {
                continue;
            };
            if views[i].healthy && seen_live_by_the_others(cluster, i, member_ids[i]).await {
                println!(
                    "[demo] {} rejoined: healthy, and every other running node sees it live \
                     again, {:.1} s after its restart",
                    cluster.nodes[i].name,
                    since.elapsed().as_secs_f64()
                );
                *rejoin = None;
            }
        }
        last = views;
    }
}

/// Starts node `i`'s agent again when it is gone (its log goes on in the same file); whether
/// it was started. A node still running is left alone.
fn restart(cluster: &mut Cluster, i: usize, state_dir: &Path) -> bool {
    if let Some(pid) = cluster.nodes[i].pid() {
        println!(
            "[demo] {} is running (pid {pid}): nothing to restart (`kill -9 {pid}` stops it)",
            cluster.nodes[i].name
        );
        return false;
    }
    if let Err(err) = cluster.start_agent(i) {
        println!("[demo] {} did not restart: {err:#}", cluster.nodes[i].name);
        return false;
    }
    note_pids(cluster, state_dir);
    let node = &cluster.nodes[i];
    println!(
        "[demo] restarting {}: pid {} (its log goes on in {})",
        node.name,
        node.pid()
            .map_or_else(|| "?".to_string(), |pid| pid.to_string()),
        node.log.display()
    );
    true
}

/// [`record_pids`] from the watch, where a failure is said and the demo goes on.
fn note_pids(cluster: &Cluster, state_dir: &Path) {
    if let Err(err) = record_pids(cluster, state_dir) {
        println!("[demo] {err:#}: a demo killed now may leave processes running");
    }
}

/// Whether every other node whose agent runs lists member `member_id` as live (each asked with
/// a bound, so a wedged node reads as not yet).
async fn seen_live_by_the_others(cluster: &Cluster, i: usize, member_id: u64) -> bool {
    for (j, node) in cluster.nodes.iter().enumerate() {
        if j == i || node.agent.is_none() {
            continue;
        }
        let peers = tokio::time::timeout(Duration::from_secs(5), async {
            node.client()
                .await
                .ok()?
                .list_peers(pb::ListPeersRequest::default())
                .await
                .ok()
        })
        .await
        .ok()
        .flatten();
        let live = peers.is_some_and(|reply| {
            reply
                .into_inner()
                .peers
                .iter()
                .any(|peer| peer.member_id == member_id && peer.live)
        });
        if !live {
            return false;
        }
    }
    true
}

/// What was written to the control file since the last look (the file is removed once read).
/// An empty file is left alone: its writer may not have written yet. A read error is said
/// once, not every second.
fn take_control_lines(path: &Path, reported: &mut Option<String>) -> Vec<String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            let error = e.to_string();
            if reported.as_ref() != Some(&error) {
                println!("[demo] cannot read {} ({error})", path.display());
                *reported = Some(error);
            }
            return Vec::new();
        }
    };
    if text.trim().is_empty() {
        return Vec::new();
    }
    if let Err(e) = std::fs::remove_file(path) {
        println!(
            "[demo] cannot remove {} after reading it ({e}): its commands may run again",
            path.display()
        );
    }
    text.lines().map(str::to_string).collect()
}

/// Lines typed on stdin when it is a terminal (read on a thread of their own: a blocking read
/// must not hold up the runtime's shutdown); `None` otherwise.
fn typed_lines() -> Option<tokio::sync::mpsc::UnboundedReceiver<String>> {
    if !std::io::stdin().is_terminal() {
        return None;
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let spawned = std::thread::Builder::new()
        .name("demo-stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    match spawned {
        Ok(_) => Some(rx),
        Err(err) => {
            println!("[demo] cannot read the terminal ({err}): use the control file to restart");
            None
        }
    }
}

/// `restart node-2`, `r 2`, `2` (and blank lines, which ask for nothing): the index of the node
/// to restart, or what was wrong with the line.
fn parse_restart(line: &str, nodes: usize) -> Result<Option<usize>, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let node = match words.as_slice() {
        [] => return Ok(None),
        ["r" | "restart", node] | [node] => *node,
        _ => "",
    };
    let number = node.strip_prefix("node-").unwrap_or(node);
    match number.parse::<usize>() {
        Ok(n) if (1..=nodes).contains(&n) => Ok(Some(n - 1)),
        _ => Err(format!(
            "not understood: {:?} (write `restart node-<n>`, `r <n>` or `<n>`, n from 1 to {nodes})",
            line.trim()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_restart;

    #[test]
    fn restart_commands_name_a_node() {
        assert_eq!(parse_restart("restart node-2", 3), Ok(Some(1)));
        assert_eq!(parse_restart("  r 3 ", 3), Ok(Some(2)));
        assert_eq!(parse_restart("1", 3), Ok(Some(0)));
        assert_eq!(parse_restart("node-1", 3), Ok(Some(0)));
        assert_eq!(parse_restart("", 3), Ok(None));
        assert!(parse_restart("restart node-4", 3).is_err());
        assert!(parse_restart("r 0", 3).is_err());
        assert!(parse_restart("stop node-1", 3).is_err());
        assert!(parse_restart("restart", 3).is_err());
    }
}
