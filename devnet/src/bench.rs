//! `attestmesh-devnet bench` (`make bench`): measures the cluster the demo runs and writes the
//! figures, with the command and the machine that produced them, to `bench/RESULTS.md`.
//!
//! Every figure comes from real processes: agents in namespaces on the devnet (chain, bundler,
//! gas manager, gateway), iperf3 for throughput, the indexer binary for catch-up, forge's gas
//! snapshots for gas. Nothing here asserts a threshold; tests never read these figures.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::providers::Provider;
use clap::Args;
use eyre::WrapErr;
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::stack::StackConfig;

/// Flags of `bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Cluster sizes for start-to-healthy and restart figures.
    #[arg(long = "sizes", value_delimiter = ',', default_value = "3,8,16")]
    pub sizes: Vec<usize>,
    /// Runs per size (a fresh devnet and cluster each).
    #[arg(long = "runs", default_value_t = 3)]
    pub runs: usize,
    /// Steady-state window for heartbeat CPU and bandwidth, in seconds.
    #[arg(long = "steady-secs", default_value_t = 30)]
    pub steady_secs: u64,
    /// iperf3 duration per path, in seconds.
    #[arg(long = "iperf-secs", default_value_t = 10)]
    pub iperf_secs: u64,
    /// Sponsored messages each node of the largest cluster sends before the indexer runs.
    #[arg(long = "messages-per-node", default_value_t = 10)]
    pub messages_per_node: usize,
    /// Empty blocks mined before the indexer runs (anvil mines about 65 per second here).
    #[arg(long = "empty-blocks", default_value_t = 1500)]
    pub empty_blocks: u64,
    /// The `cluster-mesh-agent` binary (default: beside this program).
    #[arg(long = "agent-bin")]
    pub agent_binary: Option<PathBuf>,
    /// The `attestmesh-indexer` binary (default: beside this program).
    #[arg(long = "indexer-bin")]
    pub indexer_binary: Option<PathBuf>,
    /// The forge gas snapshots to report.
    #[arg(long = "snapshots", default_value = "snapshots")]
    pub snapshots: PathBuf,
    /// Where the report goes.
    #[arg(long = "out", default_value = "bench/RESULTS.md")]
    pub out: PathBuf,
    /// Scratch space for the clusters' files.
    #[arg(long = "state-dir", default_value = "target/bench")]
    pub state_dir: PathBuf,
}

/// The longest any single wait may take before the run is called failed.
const WAIT_LIMIT: Duration = Duration::from_secs(300);

/// Runs every measurement and writes the report; stops early (writing nothing) on `shutdown`.
pub async fn bench(args: BenchArgs, shutdown: impl Future<Output = ()>) -> eyre::Result<()> {
    tokio::select! {
        result = run(&args) => result,
        () = shutdown => eyre::bail!("interrupted; no report written"),
    }
}

async fn run(args: &BenchArgs) -> eyre::Result<()> {
    let agent = match &args.agent_binary {
        Some(path) => path.clone(),
        None => crate::cluster::agent_binary_beside_current_exe()?,
    };
    let indexer = match &args.indexer_binary {
        Some(path) => path.clone(),
        None => agent.with_file_name("attestmesh-indexer"),
    };
    if !indexer.is_file() {
        eyre::bail!(
            "no indexer binary at {}: build it (cargo build -p attestmesh-indexer) or pass --indexer-bin",
            indexer.display()
        );
    }
    which("iperf3").wrap_err("iperf3 is missing: apt-get install iperf3 (make bench does)")?;
    if args.state_dir.exists() {
        std::fs::remove_dir_all(&args.state_dir)?;
    }
    std::fs::create_dir_all(&args.state_dir)?;
    let state_dir = std::fs::canonicalize(&args.state_dir)?;

    let mut report = header(args, &agent)?;
    if args.sizes.is_empty() || args.sizes.contains(&0) || args.runs == 0 {
        eyre::bail!("--sizes needs cluster sizes of at least 1 node and --runs at least 1");
    }
    let largest = args.sizes.iter().copied().max().unwrap_or(1);
    let mut start_rows = Vec::new();
    let mut steady = None;
    let mut catch_up = None;
    for &size in &args.sizes {
        let mut cold = Vec::new();
        let mut two = Vec::new();
        let mut all = Vec::new();
        for run in 0..args.runs {
            println!("[bench] {size} nodes, run {}/{}", run + 1, args.runs);
            let dir = state_dir.join(format!("n{size}-r{run}"));
            std::fs::create_dir_all(&dir)?;
            let mut cluster = prepare(&dir, size, &agent).await?;
            let started = Instant::now();
            for i in 0..size {
                cluster.start_agent(i)?;
            }
            cluster.wait_converged(WAIT_LIMIT).await?;
            cold.push(started.elapsed());
            println!("[bench]   cold start: {:.2} s", secs(started.elapsed()));
            if size == largest && run == 0 {
                steady = Some(measure_steady_state(&mut cluster, args.steady_secs).await?);
            }
            if size >= 2 {
                let took = restart(&mut cluster, &[0, 1]).await?;
                println!("[bench]   restart of 2: {:.2} s", secs(took));
                two.push(took);
            }
            let everyone: Vec<usize> = (0..size).collect();
            let took = restart(&mut cluster, &everyone).await?;
            println!("[bench]   restart of all: {:.2} s", secs(took));
            all.push(took);
            if size == largest && run == 0 {
                let mut section =
                    load_history(&cluster, args.messages_per_node, args.empty_blocks).await?;
                section.push_str(&measure_catch_up(&mut cluster, &indexer).await?);
                catch_up = Some(section);
            }
        }
        start_rows.push((size, cold, two, all));
    }

    report.push_str("## Start and restart to a whole cluster\n\n");
    report.push_str(
        "Seconds from starting the agents until every node is healthy **and** sees every other \
         node live (`GetMeshStatus` and `/healthz`, all nodes asked at once, rounds 100 ms apart). Each run is a fresh devnet; restarts \
         are `kill -9` then start, of nodes 1 and 2 (\"2 nodes\", which includes member 1 in most \
         runs) and then of every node at once. min / median / max over the runs.\n\n",
    );
    report.push_str("| nodes | runs | cold start | restart of 2 nodes | restart of all nodes |\n");
    report.push_str("| ---: | ---: | --- | --- | --- |\n");
    for (size, cold, two, all) in &start_rows {
        writeln!(
            report,
            "| {size} | {} | {} | {} | {} |",
            cold.len(),
            spread(cold),
            spread(two),
            spread(all)
        )?;
    }
    report.push('\n');

    if let Some(steady) = steady {
        report.push_str(&steady);
    }
    println!("[bench] TCP throughput (iperf3)");
    report.push_str(&measure_throughput(&state_dir, &agent, args.iperf_secs).await?);
    report.push_str(&gas_table(&args.snapshots)?);
    if let Some(catch_up) = catch_up {
        report.push_str(&catch_up);
    }

    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, &report)
        .wrap_err_with(|| format!("cannot write {}", args.out.display()))?;
    println!("[bench] written to {}", args.out.display());
    Ok(())
}

async fn prepare(dir: &Path, size: usize, agent: &Path) -> eyre::Result<Cluster> {
    let mut cluster =
        Cluster::prepare_with(StackConfig::new(dir.join("devnet")), dir, size, agent).await?;
    // The agents' own defaults (heartbeat 2 s, chain polling 2 s): what a user runs.
    cluster.poll_interval_secs = None;
    cluster.agent_log_filter = "info".into();
    Ok(cluster)
}

/// `kill -9` of `nodes`, then starts them all at once; the time until the cluster is whole.
async fn restart(cluster: &mut Cluster, nodes: &[usize]) -> eyre::Result<Duration> {
    for &i in nodes {
        cluster.nodes[i].kill().await;
    }
    let started = Instant::now();
    for &i in nodes {
        cluster.start_agent(i)?;
    }
    cluster.wait_converged(WAIT_LIMIT).await?;
    Ok(started.elapsed())
}

/// What each agent costs at rest: CPU time from /proc, bytes on its attestmesh0 (heartbeats and
/// WireGuard keepalives: no app traffic runs) and on its veth (everything the node sends and
/// receives: WireGuard inside TLS to the gateway, chain polling).
async fn measure_steady_state(cluster: &mut Cluster, window_secs: u64) -> eyre::Result<String> {
    // Let the start-up traffic (endpoint envelopes, CSK pulls) finish first.
    tokio::time::sleep(Duration::from_secs(10)).await;
    println!("[bench]   steady state over {window_secs} s");
    let before = sample(cluster)?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(window_secs)).await;
    let after = sample(cluster)?;
    let elapsed = started.elapsed().as_secs_f64();
    let ticks_per_second = clock_ticks_per_second()?;
    let mut cpu = Vec::new();
    let mut mesh = Vec::new();
    let mut wire = Vec::new();
    for ((b, a), node) in before.iter().zip(&after).zip(&cluster.nodes) {
        // A restarted agent or a recreated interface would make the differences meaningless.
        let grew = |later: u64, earlier: u64, what: &str| {
            later.checked_sub(earlier).ok_or_else(|| {
                eyre::eyre!(
                    "{}: the {what} counter went backwards during the window",
                    node.name
                )
            })
        };
        if a.pid != b.pid {
            eyre::bail!(
                "{}: the agent restarted during the steady-state window",
                node.name
            );
        }
        cpu.push(
            grew(a.cpu_ticks, b.cpu_ticks, "CPU")? as f64 / ticks_per_second / elapsed * 100.0,
        );
        mesh.push(grew(a.mesh_bytes, b.mesh_bytes, "attestmesh0")? as f64 / elapsed);
        wire.push(grew(a.veth_bytes, b.veth_bytes, "veth")? as f64 / elapsed);
    }
    let n = cluster.nodes.len();
    let mut out = format!(
        "## Heartbeats at {n} nodes\n\nPer node, over {elapsed:.0} s of steady state (every node \
         healthy, no app traffic), agents at their defaults (heartbeat every 2 s to each of the \
         {} peers, chain polling every 2 s). Bytes are received + sent.\n\n",
        n.saturating_sub(1)
    );
    out.push_str("| per node | mean | min | max |\n| --- | ---: | ---: | ---: |\n");
    for (label, values, unit) in [
        ("CPU (% of one core)", &cpu, ""),
        (
            "attestmesh0 traffic (B/s): heartbeats + keepalives",
            &mesh,
            "",
        ),
        (
            "veth traffic (B/s): WireGuard over TLS + chain polling + all else",
            &wire,
            "",
        ),
    ] {
        let (mean, min, max) = stats(values);
        writeln!(out, "| {label} | {mean:.1}{unit} | {min:.1} | {max:.1} |")?;
    }
    out.push('\n');
    Ok(out)
}

struct Sample {
    pid: u32,
    cpu_ticks: u64,
    mesh_bytes: u64,
    veth_bytes: u64,
}

fn sample(cluster: &Cluster) -> eyre::Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for node in &cluster.nodes {
        let pid = node
            .pid()
            .ok_or_else(|| eyre::eyre!("{} has no running agent", node.name))?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .wrap_err_with(|| format!("{}: cannot read /proc/{pid}/stat", node.name))?;
        // Fields after the parenthesised command name: utime and stime are the 12th and 13th.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .ok_or_else(|| eyre::eyre!("unexpected /proc/{pid}/stat: {stat}"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| -> eyre::Result<u64> {
            fields
                .get(i)
                .ok_or_else(|| eyre::eyre!("/proc/{pid}/stat has no field {i}"))?
                .parse()
                .wrap_err("a non-numeric CPU time in /proc/<pid>/stat")
        };
        let cpu_ticks = field(11)? + field(12)?;
        let mut mesh_bytes = 0;
        for counter in ["rx_bytes", "tx_bytes"] {
            let output = node
                .netns
                .exec("cat")
                .arg(format!("/sys/class/net/attestmesh0/statistics/{counter}"))
                .output()
                .wrap_err("cannot run cat in the namespace")?;
            mesh_bytes += String::from_utf8_lossy(&output.stdout)
                .trim()
                .parse::<u64>()
                .wrap_err_with(|| format!("{}: attestmesh0 {counter}", node.name))?;
        }
        let mut veth_bytes = 0;
        for counter in ["rx_bytes", "tx_bytes"] {
            let path = format!(
                "/sys/class/net/{}/statistics/{counter}",
                node.netns.host_interface()
            );
            veth_bytes += std::fs::read_to_string(&path)
                .wrap_err_with(|| format!("cannot read {path}"))?
                .trim()
                .parse::<u64>()
                .wrap_err_with(|| format!("{path} is not a number"))?;
        }
        samples.push(Sample {
            pid,
            cpu_ticks,
            mesh_bytes,
            veth_bytes,
        });
    }
    Ok(samples)
}

fn clock_ticks_per_second() -> eyre::Result<f64> {
    let output = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .wrap_err("cannot run getconf CLK_TCK")?;
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .wrap_err("getconf CLK_TCK did not print a number")
}

/// One iperf3 stream for `secs` seconds over node-1 → node-2's mesh IP (attestmesh0:
/// boringtun, TLS, the gateway emulator's relay), then over node-1's bare veth to the root
/// namespace. Same run, same machine.
async fn measure_throughput(state_dir: &Path, agent: &Path, secs: u64) -> eyre::Result<String> {
    let dir = state_dir.join("iperf");
    std::fs::create_dir_all(&dir)?;
    let mut cluster = prepare(&dir, 2, agent).await?;
    for i in 0..2 {
        cluster.start_agent(i)?;
    }
    cluster.wait_converged(WAIT_LIMIT).await?;
    let mesh_ip = cluster.nodes[1].get_self().await?.mesh_ip;
    let server = iperf_server(cluster.nodes[1].netns.exec("iperf3"), &mesh_ip)
        .wrap_err("cannot start iperf3 -s in node-2's namespace")?;
    let mesh = iperf_client(&cluster.nodes[0].netns, &mesh_ip, secs).await;
    drop(server);
    let mesh = mesh?;
    println!("[bench]   attestmesh0: {:.0} Mbit/s", mesh / 1e6);

    let host_ip = cluster.nodes[0].host_ip.to_string();
    let server = iperf_server(std::process::Command::new("iperf3"), &host_ip)
        .wrap_err("cannot start iperf3 -s in the root namespace")?;
    let bare = iperf_client(&cluster.nodes[0].netns, &host_ip, secs).await;
    drop(server);
    let bare = bare?;
    println!("[bench]   bare veth: {:.0} Mbit/s", bare / 1e6);

    let mut out = String::from("## TCP throughput\n\n");
    writeln!(
        out,
        "One iperf3 stream, {secs} s each, measured one after the other in the same run: \
         `iperf3 -c <address> -t {secs}` from node-1's namespace.\n"
    )?;
    out.push_str("| path | Mbit/s (received) |\n| --- | ---: |\n");
    writeln!(
        out,
        "| attestmesh0, node-1 → node-2's mesh IP (boringtun, TLS to the gateway emulator, its relay, TLS, boringtun) | {:.0} |",
        mesh / 1e6
    )?;
    writeln!(
        out,
        "| bare veth, node-1's namespace → the root namespace | {:.0} |",
        bare / 1e6
    )?;
    writeln!(
        out,
        "\nattestmesh0 carries {:.1} % of the bare veth's throughput.\n",
        mesh / bare * 100.0
    )?;
    Ok(out)
}

/// `iperf3 -s` for one test on `address`; killed when dropped (an interrupted run must not
/// leave it waiting, or keep a namespace alive).
fn iperf_server(
    program: std::process::Command,
    address: &str,
) -> std::io::Result<tokio::process::Child> {
    let mut command = tokio::process::Command::from(program);
    command
        .args(["-s", "-1", "-B", address, "-p", "5201"])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
}

/// `iperf3 -c` from inside `netns`; the received throughput in bits per second. Each attempt
/// is bounded: a path that drops everything must fail the run, not hang it.
async fn iperf_client(netns: &crate::netns::Netns, address: &str, secs: u64) -> eyre::Result<f64> {
    let mut last = String::new();
    let bound = Duration::from_secs(secs + 30);
    // The server needs a moment to listen, and iperf3 -c does not retry.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let mut command = tokio::process::Command::from(netns.exec("iperf3"));
        command
            .args(["-c", address, "-p", "5201", "-t", &secs.to_string(), "-J"])
            .args(["--connect-timeout", "2000"])
            .kill_on_drop(true);
        let output = tokio::time::timeout(bound, command.output())
            .await
            .map_err(|_| eyre::eyre!("iperf3 to {address} did not finish within {bound:?}"))?
            .wrap_err("cannot run iperf3 -c")?;
        let report: serde_json::Value =
            serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
        if let Some(bps) = report
            .pointer("/end/sum_received/bits_per_second")
            .and_then(serde_json::Value::as_f64)
        {
            return Ok(bps);
        }
        last = report.get("error").and_then(|e| e.as_str()).map_or_else(
            || String::from_utf8_lossy(&output.stderr).into_owned(),
            str::to_owned,
        );
    }
    eyre::bail!("iperf3 to {address} gave no result: {last}")
}

/// History for the indexer to catch up on: every node sends `per_node` sealed messages to the
/// next node through its gRPC API (each a sponsored UserOperation), all nodes at once; then
/// `empty_blocks` empty blocks. Reports the message rate it saw.
async fn load_history(
    cluster: &Cluster,
    per_node: usize,
    empty_blocks: u64,
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
    let mut out = String::from(
        "## Sponsored messages

",
    );
    writeln!(
        out,
        "{sent} sealed messages sent through the agents' gRPC API, {per_node} from each of {} \
         nodes at once, each a sponsored UserOperation (gas manager, webhook, bundler, one \
         block each on anvil), each call returning once its operation was included: \
         {took:.1} s, {:.1} messages/s for the cluster.\n",
        cluster.nodes.len(),
        sent as f64 / took
    )?;
    Ok(out)
}

/// The cluster's indexer ([`Cluster::start_indexer`]), started late against the largest
/// cluster's chain (registrations, CSK commitment, endpoint envelopes, restarts, messages), so
/// it catches up from the factory's deploy block: its own catch-up report.
async fn measure_catch_up(cluster: &mut Cluster, indexer: &Path) -> eyre::Result<String> {
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
    // Stopped here (dropping it kills the process): the figures are in.
    cluster.indexer = None;
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
    out.push_str(
        "The indexer binary, started after the largest cluster's runs and the messages above \
         against that chain (one block per transaction: registrations, the CSK commitment, \
         endpoint envelopes, restarts, messages; then the empty blocks), from the factory's \
         deploy block, which it finds itself. Figures from its own `/status`.\n\n",
    );
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

fn gas_table(snapshots: &Path) -> eyre::Result<String> {
    let mut out = String::from(
        "## Gas per operation\n\nFrom forge's gas snapshots (`snapshots/`, checked by `make test`: \
         a change that moves one fails until re-recorded).\n\n| operation | gas |\n| --- | ---: |\n",
    );
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(snapshots)
        .wrap_err_with(|| format!("cannot read {}", snapshots.display()))?
    {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let values: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(&path)?)
                .wrap_err_with(|| format!("{} is not a snapshot", path.display()))?;
        let group = path
            .file_stem()
            .ok_or_else(|| eyre::eyre!("{} has no file name", path.display()))?
            .to_string_lossy()
            .into_owned();
        for (name, gas) in values {
            let gas = gas.as_str().ok_or_else(|| {
                eyre::eyre!("{}: {name} is not a gas figure: {gas}", path.display())
            })?;
            entries.push((format!("{group}: {name}"), gas.to_string()));
        }
    }
    entries.sort();
    for (name, gas) in entries {
        writeln!(out, "| {name} | {gas} |")?;
    }
    out.push('\n');
    Ok(out)
}

fn header(args: &BenchArgs, agent: &Path) -> eyre::Result<String> {
    // The machine is part of every figure: a fact that cannot be read fails the run rather
    // than printing as "0 cores" or an empty kernel.
    let read =
        |path: &str| std::fs::read_to_string(path).wrap_err_with(|| format!("cannot read {path}"));
    // Only some architectures name the CPU model in /proc/cpuinfo.
    let model = read("/proc/cpuinfo")?
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map_or_else(
            || "unknown CPU model".to_string(),
            |l| l.trim_start_matches([' ', '\t', ':']).to_string(),
        );
    let cores = std::thread::available_parallelism()
        .wrap_err("cannot count the CPU cores")?
        .get();
    let meminfo = read("/proc/meminfo")?;
    let memory_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches(" kB").parse::<f64>().ok())
        .map(|kb| kb / 1024.0 / 1024.0)
        .ok_or_else(|| eyre::eyre!("/proc/meminfo has no MemTotal line in kB"))?;
    let kernel = read("/proc/sys/kernel/osrelease")?;
    let command: Vec<String> = std::env::args().collect();
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .wrap_err("cannot run date")?;
    let now = String::from_utf8_lossy(&date.stdout).trim().to_string();
    let mut out = String::from("# AttestMesh benchmarks\n\n");
    writeln!(
        out,
        "Written by `make bench`, which ran `{}` on {now}.\n",
        command.join(" ")
    )?;
    let build = if agent.components().any(|c| c.as_os_str() == "release") {
        "built with `--release`"
    } else {
        "a debug build: figures are not representative"
    };
    writeln!(
        out,
        "Machine: {model}, {cores} cores, {memory_gib:.0} GiB, Linux {}. Agents: `{}` ({build}), each in its own network namespace with its own attestmesh0, on the \
         devnet (anvil with the EntryPoint v0.7 at its canonical address, the project's bundler, \
         gas manager and gateway emulators, dstack simulators). {} run(s) per cluster size.\n",
        kernel.trim(),
        agent.display(),
        args.runs
    )?;
    out.push_str(
        "These are measurements of one machine, not guarantees; the tests assert no time.\n\n",
    );
    Ok(out)
}

fn which(program: &str) -> eyre::Result<()> {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false);
    if found {
        Ok(())
    } else {
        eyre::bail!("{program} not found on PATH")
    }
}

fn secs(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

fn spread(values: &[Duration]) -> String {
    if values.is_empty() {
        return "–".into();
    }
    let mut sorted: Vec<f64> = values.iter().map(|d| d.as_secs_f64()).collect();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    let median = if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    };
    format!(
        "{:.2} / {median:.2} / {:.2} s",
        sorted[0],
        sorted[sorted.len() - 1]
    )
}

fn stats(values: &[f64]) -> (f64, f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (mean, min, max)
}
