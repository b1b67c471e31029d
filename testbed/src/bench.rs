//! `attestmesh-testbed bench` (`make bench`): measures the cluster the demo runs and writes the
//! figures, with the command and the machine that produced them, to `bench/RESULTS.md`, and
//! the plot of time-to-whole against cluster size to `time-to-whole.svg` beside it.
//!
//! Every figure comes from real processes: agents in namespaces on the devnet (chain at Base's
//! 2 s blocks and, for comparison, mining a block per transaction; the real alto bundler by
//! default; gas manager, gateway), iperf3 for throughput, the indexer binary for catch-up and
//! for message delivery by push against chain-log polling, forge's gas snapshots for gas, the
//! paymaster webhook (in this process) for how fast it fails closed. The agents reach anvil
//! through a counting proxy ([`FaultProxy`] in pass mode), which is how chain RPC requests are
//! counted. Targets are printed beside the figures; nothing here asserts one, and tests never
//! read these figures.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::providers::Provider;
use clap::{Args, ValueEnum};
use eyre::WrapErr;
use tokio::time::Instant;

use crate::cluster::{Cluster, MetricSeries as Counts, family_series};
use attestmesh_devnet::fault_proxy::FaultProxy;
use attestmesh_devnet::stack::{BASE_BLOCK_TIME_SECS, StackConfig};

/// Flags of `bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Cluster sizes for the start-to-whole and restart figures (each at every cadence).
    #[arg(long = "sizes", value_delimiter = ',', default_value = "3,8,16,32")]
    pub sizes: Vec<usize>,
    /// Sizes tried after `--sizes` (e.g. 64): one the machine cannot hold is reported as such
    /// in the table instead of failing the run.
    #[arg(long = "try-sizes", value_delimiter = ',')]
    pub try_sizes: Vec<usize>,
    /// Chain cadences: "2s" (seconds between blocks, Base's is 2) or "instant" (a block per
    /// transaction).
    #[arg(long = "cadences", value_delimiter = ',', default_value = "2s,instant", value_parser = parse_cadence)]
    pub cadences: Vec<Cadence>,
    /// Runs per size and cadence (a fresh devnet and cluster each).
    #[arg(long = "runs", default_value_t = 1)]
    pub runs: usize,
    /// Size of the running cluster (at Base's 2 s blocks) that one node joins; 0 skips the join.
    #[arg(long = "join-size", default_value_t = 16)]
    pub join_size: usize,
    /// Sizes of the running clusters (at Base's 2 s blocks) in which a member is revoked, then
    /// the originator; the flag without a value skips the revocation figures.
    #[arg(long = "revoke-sizes", value_delimiter = ',', num_args = 0.., default_value = "3,16")]
    pub revoke_sizes: Vec<usize>,
    /// Largest cluster whose restart of 2 nodes is measured (the restart of all nodes always
    /// is): bigger clusters skip it to keep the run short.
    #[arg(long = "restart-two-up-to", default_value_t = 16)]
    pub restart_two_up_to: usize,
    /// The ERC-4337 bundler the agents use: the real `@pimlico/alto` (npm devDependency), or
    /// the project's own (devnet/src/bundler.rs).
    #[arg(long = "bundler", value_enum, default_value_t = BundlerChoice::Alto)]
    pub bundler: BundlerChoice,
    /// Steady-state window for heartbeat CPU, bandwidth, sponsored operations and chain RPC
    /// requests, in seconds.
    #[arg(long = "steady-secs", default_value_t = 30)]
    pub steady_secs: u64,
    /// iperf3 duration per path, in seconds.
    #[arg(long = "iperf-secs", default_value_t = 10)]
    pub iperf_secs: u64,
    /// Sponsored messages each node of the steady-state cluster sends before the indexer runs.
    #[arg(long = "messages-per-node", default_value_t = 10)]
    pub messages_per_node: usize,
    /// Empty blocks mined before the indexer runs (`anvil_mine`).
    #[arg(long = "empty-blocks", default_value_t = 1500)]
    pub empty_blocks: u64,
    /// Messages per case for the delivery figures after the indexer's catch-up (block to the
    /// recipient agent, indexer push vs chain-log polling alone); 0 skips that section.
    #[arg(long = "delivery-messages", default_value_t = 6)]
    pub delivery_messages: usize,
    /// Requests per case for the paymaster webhook's fail-closed timing (its chain RPC up,
    /// down, hung); 0 skips that section.
    #[arg(long = "webhook-requests", default_value_t = 20)]
    pub webhook_requests: usize,
    /// The `cluster-mesh-agent` binary (default: beside this program).
    #[arg(long = "agent-bin")]
    pub agent_binary: Option<PathBuf>,
    /// The `attestmesh-indexer` binary (default: beside this program).
    #[arg(long = "indexer-bin")]
    pub indexer_binary: Option<PathBuf>,
    /// The forge gas snapshots to report.
    #[arg(long = "snapshots", default_value = "snapshots")]
    pub snapshots: PathBuf,
    /// Where the report goes (the plot goes beside it, as `time-to-whole.svg`).
    #[arg(long = "out", default_value = "bench/RESULTS.md")]
    pub out: PathBuf,
    /// Scratch space for the clusters' files.
    #[arg(long = "state-dir", default_value = "target/bench")]
    pub state_dir: PathBuf,
}

/// How often the chain makes blocks: every so many seconds, or one per transaction (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence(pub Option<u64>);

impl Cadence {
    /// Base's: a block every 2 s.
    pub const BASE: Self = Self(Some(BASE_BLOCK_TIME_SECS));

    /// For tables and the plot's legend: "2 s blocks", "instant mining".
    pub fn label(self) -> String {
        match self.0 {
            Some(secs) => format!("{secs} s blocks"),
            None => "instant mining".into(),
        }
    }

    /// `config` at this cadence.
    pub fn apply(self, config: StackConfig) -> StackConfig {
        match self.0 {
            None => config.with_instant_mining(),
            Some(secs) => {
                let mut config = config;
                config.chain.block_time = Some(secs);
                config
            }
        }
    }

    /// How long after "whole" operations already submitted may still land: three blocks, and
    /// at least 5 s (the bundler's own pace).
    fn settle(self) -> Duration {
        Duration::from_secs(self.0.map_or(5, |secs| (3 * secs).max(5)))
    }
}

/// `--cadences` values: "instant", or seconds between blocks as "2s".
pub fn parse_cadence(text: &str) -> Result<Cadence, String> {
    let text = text.trim();
    if text == "instant" {
        return Ok(Cadence(None));
    }
    text.strip_suffix('s')
        .and_then(|secs| secs.parse::<u64>().ok())
        .filter(|secs| *secs > 0)
        .map(|secs| Cadence(Some(secs)))
        .ok_or_else(|| {
            format!("{text:?} is not a cadence: \"instant\" or seconds between blocks as in \"2s\"")
        })
}

/// The bundler the agents' UserOperations go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BundlerChoice {
    /// `@pimlico/alto` from node_modules, on a port its server picks ([`StackConfig::alto_port`]).
    Alto,
    /// The project's devnet bundler.
    Project,
}

/// The longest any single wait may take before the run is called failed.
const WAIT_LIMIT: Duration = Duration::from_secs(300);

/// The agents' counter of sponsored operations included on chain, one series per `kind`.
const SPONSORED_OPERATIONS: &str = "attestmesh_agent_sponsored_operations_total";

/// Cold-start target (seconds) at Base's block time, and the sizes it is set for.
const COLD_START_TARGET_SECS: f64 = 10.0;
const COLD_START_TARGET_SIZES: [usize; 3] = [3, 16, 32];
/// Target for one node joining a running cluster, in seconds.
const JOIN_TARGET_SECS: f64 = 8.0;
/// The agent's reconcile loop period (peering.rs), part of the drop target.
const RECONCILE_PASS_SECS: f64 = 0.5;

/// Runs every measurement and writes the report; stops early (writing nothing) on `shutdown`.
pub async fn bench(args: BenchArgs, shutdown: impl Future<Output = ()>) -> eyre::Result<()> {
    tokio::select! {
        result = run(&args) => result,
        () = shutdown => eyre::bail!("interrupted; no report written"),
    }
}

/// A cluster whose agents reach the chain through a counting proxy.
#[derive(Debug)]
struct Metered {
    cluster: Cluster,
    /// Between the agents and anvil: every chain request an agent makes passes here.
    /// Declared after the cluster, so it stops after the agents.
    rpc: FaultProxy,
}

/// What the whole run shares.
#[derive(Debug)]
struct Bench<'a> {
    args: &'a BenchArgs,
    agent: PathBuf,
    state_dir: PathBuf,
    /// Every cadence a chain of this run actually ran at, as its stack describes it.
    ran_at: Vec<String>,
    /// The bundler the agents used, as the stacks show it.
    bundler: Option<String>,
}

/// One row of the start table: a cadence and a size over the runs.
#[derive(Debug)]
struct StartRow {
    cadence: Cadence,
    size: usize,
    cold: Vec<Duration>,
    two: Vec<Duration>,
    two_skipped: bool,
    all: Vec<Duration>,
    /// Sponsored operations of the cold start (whole cluster, settled), per run.
    ops: Vec<f64>,
    /// Of those, how many landed after the cluster was whole, per run.
    late: Vec<f64>,
    /// The first run's operations by kind.
    kinds: BTreeMap<String, f64>,
    /// Why a `--try-sizes` size has no figures.
    failure: Option<String>,
}

/// The figures of one cold start and its restarts.
#[derive(Debug)]
struct StartRun {
    cold: Duration,
    ops_at_whole: f64,
    kinds: BTreeMap<String, f64>,
    two: Option<Duration>,
    all: Duration,
}

/// The figures of one revocation, each from sending the revoke transaction.
#[derive(Debug)]
struct RevokeRun {
    size: usize,
    /// Which member was revoked: the last one, or member 1 (the originator of the epoch).
    revoked: u64,
    /// Until the chain showed the new epoch (polled every 50 ms).
    included: Duration,
    /// Until every remaining member held the new epoch's key.
    key: Duration,
    /// Until the revoked member was off every remaining member's attestmesh0.
    dropped: Duration,
    /// The largest of the agents' own figures (`csk_epoch_acquire_seconds`,
    /// `revoked_peer_removal_seconds`: from the chain time of the revocation's block).
    agent_key_secs: f64,
    agent_drop_secs: f64,
}

/// The figures of one node joining.
#[derive(Debug)]
struct JoinRun {
    took: Duration,
    /// Every node's operations from before the join until settled after it.
    ops: f64,
    ops_at_whole: f64,
    newcomer: f64,
    kinds: BTreeMap<String, f64>,
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
    if args.sizes.is_empty()
        || args.sizes.contains(&0)
        || args.try_sizes.contains(&0)
        || args.runs == 0
        || args.cadences.is_empty()
    {
        eyre::bail!(
            "--sizes needs cluster sizes of at least 1 node, --runs at least 1 and --cadences one \
             cadence or more"
        );
    }
    which("iperf3").wrap_err("iperf3 is missing: apt-get install iperf3 (make bench does)")?;
    // Read now: a machine fact that cannot be read must fail the run before it starts.
    let machine = machine(&agent)?;
    if args.state_dir.exists() {
        std::fs::remove_dir_all(&args.state_dir)?;
    }
    std::fs::create_dir_all(&args.state_dir)?;
    let state_dir = std::fs::canonicalize(&args.state_dir)?;
    let mut bench = Bench {
        args,
        agent,
        state_dir,
        ran_at: Vec::new(),
        bundler: None,
    };

    // The steady state, the messages and the indexer: the largest cluster at Base's cadence
    // (or, without it, at the first cadence asked for).
    let steady_cadence = args
        .cadences
        .iter()
        .copied()
        .find(|c| *c == Cadence::BASE)
        .unwrap_or(args.cadences[0]);
    let largest = args.sizes.iter().copied().max().unwrap_or(1);
    let mut rows = Vec::new();
    let mut steady = None;
    let mut history = None;
    for &cadence in &args.cadences {
        let sizes = args.sizes.iter().map(|&s| (s, true));
        let tried = args.try_sizes.iter().map(|&s| (s, false));
        for (size, required) in sizes.chain(tried) {
            let with_two = size >= 2 && size <= args.restart_two_up_to;
            let mut row = StartRow {
                cadence,
                size,
                cold: Vec::new(),
                two: Vec::new(),
                two_skipped: size >= 2 && !with_two,
                all: Vec::new(),
                ops: Vec::new(),
                late: Vec::new(),
                kinds: BTreeMap::new(),
                failure: None,
            };
            for run in 0..args.runs {
                println!(
                    "[bench] {}, {size} nodes, run {}/{}",
                    cadence.label(),
                    run + 1,
                    args.runs
                );
                let measured = required && cadence == steady_cadence && size == largest && run == 0;
                let extras = measured.then_some((&mut steady, &mut history, &indexer));
                let dir = bench.state_dir.join(format!(
                    "{}-n{size}-r{run}",
                    cadence.0.map_or("instant".to_string(), |s| format!("{s}s"))
                ));
                match bench.start_run(&dir, cadence, size, with_two, extras).await {
                    Ok(figures) => {
                        let total: f64 = figures.kinds.values().sum();
                        row.cold.push(figures.cold);
                        row.two.extend(figures.two);
                        row.all.push(figures.all);
                        row.ops.push(total);
                        row.late.push(total - figures.ops_at_whole);
                        if run == 0 {
                            row.kinds = figures.kinds;
                        }
                    }
                    Err(err) if !required => {
                        println!("[bench]   {size} nodes did not make it: {err:#}");
                        row.failure = Some(
                            format!("{err:#}")
                                .lines()
                                .next()
                                .unwrap_or("failed")
                                .to_string(),
                        );
                        break;
                    }
                    Err(err) => return Err(err),
                }
            }
            rows.push(row);
        }
    }

    let mut joins = Vec::new();
    if args.join_size > 0 {
        for run in 0..args.runs {
            println!(
                "[bench] one node joining {} running nodes ({}), run {}/{}",
                args.join_size,
                Cadence::BASE.label(),
                run + 1,
                args.runs
            );
            let dir = bench
                .state_dir
                .join(format!("join-n{}-r{run}", args.join_size));
            joins.push(bench.join_run(&dir, args.join_size).await?);
        }
    }

    let mut revocations = Vec::new();
    for &size in &args.revoke_sizes {
        for run in 0..args.runs {
            for revoke_first in [false, true] {
                println!(
                    "[bench] revoking {} of {size} running nodes ({}), run {}/{}",
                    if revoke_first {
                        "member 1 (the originator)"
                    } else {
                        "the last member"
                    },
                    Cadence::BASE.label(),
                    run + 1,
                    args.runs
                );
                let dir = bench.state_dir.join(format!(
                    "revoke-n{size}-{}-r{run}",
                    if revoke_first { "first" } else { "last" }
                ));
                revocations.push(bench.revoke_run(&dir, size, revoke_first).await?);
            }
        }
    }

    println!("[bench] TCP throughput (iperf3)");
    let throughput = bench.measure_throughput(steady_cadence).await?;
    let gas = gas_table(&args.snapshots)?;
    let webhook = if args.webhook_requests > 0 {
        println!("[bench] paymaster webhook failing closed");
        measure_webhook_fail_closed(args.webhook_requests).await?
    } else {
        String::new()
    };

    let svg_path = args.out.with_file_name("time-to-whole.svg");
    let mut report = header(&bench, &machine, steady_cadence)?;
    report.push_str(&start_section(args, &rows)?);
    report.push_str(&join_section(args.join_size, &joins)?);
    report.push_str(&revoke_section(&revocations)?);
    if let Some(steady) = steady {
        report.push_str(&steady);
    }
    report.push_str(&throughput);
    report.push_str(&gas);
    report.push_str(&webhook);
    if let Some(history) = history {
        report.push_str(&history);
    }

    let series: Vec<Series> = args
        .cadences
        .iter()
        .map(|&cadence| Series {
            label: cadence.label(),
            points: rows
                .iter()
                .filter(|row| row.cadence == cadence && !row.cold.is_empty())
                .map(|row| (row.size as f64, median(&row.cold)))
                .collect(),
        })
        .collect();
    let svg = time_to_whole_svg(&series, Some(COLD_START_TARGET_SECS));
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&svg_path, svg)
        .wrap_err_with(|| format!("cannot write {}", svg_path.display()))?;
    std::fs::write(&args.out, &report)
        .wrap_err_with(|| format!("cannot write {}", args.out.display()))?;
    println!(
        "[bench] written to {} and {}",
        args.out.display(),
        svg_path.display()
    );
    Ok(())
}

/// The steady-state section and the messages + indexer sections, when a run measures them,
/// and the indexer binary they need.
type Extras<'r> = (&'r mut Option<String>, &'r mut Option<String>, &'r PathBuf);

impl Bench<'_> {
    /// A devnet at `cadence` with the chosen bundler and `size` nodes, their agents not
    /// started, their chain RPC through a fresh counting proxy.
    async fn prepare(
        &mut self,
        dir: &Path,
        size: usize,
        cadence: Cadence,
    ) -> eyre::Result<Metered> {
        std::fs::create_dir_all(dir)?;
        let mut config = cadence.apply(StackConfig::new(dir.join("devnet")));
        if self.args.bundler == BundlerChoice::Alto {
            // 0: alto's server picks its port (read from its log), so no other run can take it.
            config.alto_port = Some(0);
        }
        let prepared = Cluster::prepare_with(config, dir, size, &self.agent).await;
        let mut cluster = match self.args.bundler {
            BundlerChoice::Alto => prepared.wrap_err(
                "cannot run the benchmark with the real @pimlico/alto bundler (--bundler alto); \
                 `--bundler project` measures with the project's bundler instead",
            )?,
            BundlerChoice::Project => prepared?,
        };
        let bundler = match (&cluster.stack.alto, self.args.bundler) {
            (Some(_), BundlerChoice::Alto) => format!(
                "the real `@pimlico/alto` {} (node_modules), which every agent's UserOperations \
                 went through",
                alto_version()?
            ),
            (None, BundlerChoice::Project) => {
                "the project's bundler (devnet/src/bundler.rs)".to_string()
            }
            (alto, choice) => eyre::bail!(
                "asked for --bundler {choice:?} but the stack runs {} (bundler URL {})",
                if alto.is_some() {
                    "alto"
                } else {
                    "the project's bundler"
                },
                cluster.stack.bundler_url()
            ),
        };
        if self.bundler.is_none() {
            self.bundler = Some(bundler);
        }
        let ran_at = cluster.stack.config.cadence();
        if !self.ran_at.contains(&ran_at) {
            self.ran_at.push(ran_at);
        }
        // The agents' own defaults (heartbeat 2 s, chain polling 2 s): what a user runs.
        cluster.poll_interval_secs = None;
        cluster.agent_log_filter = "info".into();
        let rpc = FaultProxy::start_on(
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            cluster.stack.chain.rpc_url().clone(),
        )
        .await
        .wrap_err("cannot start the proxy that counts the agents' chain requests")?;
        cluster.chain_rpc_port = Some(
            rpc.url()
                .port()
                .ok_or_else(|| eyre::eyre!("the RPC proxy's URL {} has no port", rpc.url()))?,
        );
        Ok(Metered { cluster, rpc })
    }

    /// A cold start of `size` nodes to whole, its sponsored operations, then (when `extras`
    /// asks) the steady state and the history for the indexer, then restarts.
    async fn start_run(
        &mut self,
        dir: &Path,
        cadence: Cadence,
        size: usize,
        with_two: bool,
        extras: Option<Extras<'_>>,
    ) -> eyre::Result<StartRun> {
        let mut metered = self.prepare(dir, size, cadence).await?;
        let cluster = &mut metered.cluster;
        let started = Instant::now();
        start_all_and_wait_whole(cluster, size).await?;
        let cold = started.elapsed();
        let ops_at_whole = total(&sponsored_operations(cluster).await?);
        tokio::time::sleep(cadence.settle()).await;
        let kinds = by_kind(&sponsored_operations(cluster).await?);
        println!(
            "[bench]   cold start: {:.2} s, {} sponsored operations ({ops_at_whole} when whole)",
            secs(cold),
            kinds.values().sum::<f64>()
        );
        let mut extras = extras;
        if let Some((steady, _, _)) = extras.as_mut() {
            **steady = Some(measure_steady_state(&metered, self.args.steady_secs, cadence).await?);
        }
        let cluster = &mut metered.cluster;
        let two = if with_two {
            let took = restart(cluster, &[0, 1]).await?;
            println!("[bench]   restart of 2: {:.2} s", secs(took));
            Some(took)
        } else {
            None
        };
        let everyone: Vec<usize> = (0..size).collect();
        let all = restart(cluster, &everyone).await?;
        println!("[bench]   restart of all: {:.2} s", secs(all));
        if let Some((_, history, indexer)) = extras {
            let mut section = load_history(
                cluster,
                self.args.messages_per_node,
                self.args.empty_blocks,
                cadence,
            )
            .await?;
            section.push_str(&measure_catch_up(cluster, indexer, cadence).await?);
            if self.args.delivery_messages > 0 && size >= 2 {
                section.push_str(
                    &measure_delivery(cluster, self.args.delivery_messages, cadence).await?,
                );
            }
            // Stopped (dropping it kills the process) unless the delivery section did: the
            // figures are in.
            cluster.indexer = None;
            *history = Some(section);
        }
        Ok(StartRun {
            cold,
            ops_at_whole,
            kinds,
            two,
            all,
        })
    }

    /// A whole cluster of `size` nodes at Base's cadence, then one more node: the time from
    /// starting its agent until all `size + 1` are whole, and every node's sponsored
    /// operations from before the join until settled after it.
    async fn join_run(&mut self, dir: &Path, size: usize) -> eyre::Result<JoinRun> {
        let cadence = Cadence::BASE;
        let mut metered = self.prepare(dir, size, cadence).await?;
        let cluster = &mut metered.cluster;
        let started = Instant::now();
        start_all_and_wait_whole(cluster, size).await?;
        println!(
            "[bench]   {size} nodes whole after {:.2} s",
            secs(started.elapsed())
        );
        // The cold start's last operations must not count for the join.
        tokio::time::sleep(cadence.settle()).await;
        let pids: Vec<Option<u32>> = cluster.nodes.iter().map(|n| n.pid()).collect();
        let before = by_kind(&sponsored_operations(cluster).await?);
        let new = cluster.add_nodes(1).await?.start;
        let started = Instant::now();
        cluster.start_agent(new)?;
        cluster.wait_converged(WAIT_LIMIT).await?;
        let took = started.elapsed();
        let ops_at_whole =
            total(&sponsored_operations(cluster).await?) - before.values().sum::<f64>();
        tokio::time::sleep(cadence.settle()).await;
        let after = sponsored_operations(cluster).await?;
        if let Some(node) = cluster
            .nodes
            .iter()
            .zip(&pids)
            .find(|(node, pid)| node.pid() != **pid)
        {
            eyre::bail!(
                "{} restarted during the join: its operations count is void",
                node.0.name
            );
        }
        let newcomer = after.get(new).map_or(0.0, |ops| ops.values().sum::<f64>());
        let mut kinds = by_kind(&after);
        for (kind, count) in &before {
            *kinds.entry(kind.clone()).or_default() -= count;
        }
        kinds.retain(|_, count| *count != 0.0);
        let ops = kinds.values().sum::<f64>();
        println!(
            "[bench]   join: {:.2} s, {ops} sponsored operations ({newcomer} by the newcomer)",
            secs(took)
        );
        Ok(JoinRun {
            took,
            ops,
            ops_at_whole,
            newcomer,
            kinds,
        })
    }

    /// A whole cluster of `size` nodes at Base's cadence; then the owner revokes the last
    /// member (or member 1, the epoch's originator). Polled every 100 ms from sending the
    /// transaction: the chain's epoch, each remaining node's held epoch and attestmesh0 peers.
    async fn revoke_run(
        &mut self,
        dir: &Path,
        size: usize,
        revoke_first: bool,
    ) -> eyre::Result<RevokeRun> {
        use alloy::sol_types::SolCall;
        if size < 3 {
            eyre::bail!("a revocation needs at least 3 nodes (one revoked, two that rotate)");
        }
        let cadence = Cadence::BASE;
        let mut metered = self.prepare(dir, size, cadence).await?;
        let cluster = &mut metered.cluster;
        start_all_and_wait_whole(cluster, size).await?;
        tokio::time::sleep(cadence.settle()).await;
        let mut ids = Vec::new();
        for node in &cluster.nodes {
            ids.push(node.get_self().await?.member_id);
        }
        let revoked = if revoke_first { 1 } else { size as u64 };
        let remaining: Vec<usize> = (0..size).filter(|i| ids[*i] != revoked).collect();
        let operator = cluster.stack.chain.operator_client().clone();
        let address = cluster.stack.cluster;
        let before = operator.current_csk_epoch(address).await?.epoch;
        let data = attestmesh_bindings::cluster::Cluster::revokeMemberCall { memberId: revoked }
            .abi_encode();
        let sent = Instant::now();
        let send = {
            let operator = operator.clone();
            tokio::spawn(async move {
                operator
                    .send_transaction("Cluster.revokeMember", address, data.into())
                    .await
            })
        };
        let (mut included, mut key, mut dropped) = (None, vec![None; size], vec![None; size]);
        loop {
            if included.is_none() && operator.current_csk_epoch(address).await?.epoch > before {
                included = Some(sent.elapsed());
            }
            for &i in &remaining {
                let node = &cluster.nodes[i];
                if key[i].is_none()
                    && node
                        .metric("attestmesh_agent_csk_epoch")
                        .await?
                        .is_some_and(|epoch| epoch > before as f64)
                {
                    key[i] = Some(sent.elapsed());
                }
                if dropped[i].is_none()
                    && node
                        .metric("attestmesh_agent_mesh_peers")
                        .await?
                        .is_some_and(|peers| peers == (size - 2) as f64)
                {
                    dropped[i] = Some(sent.elapsed());
                }
            }
            let done = |at: &[Option<Duration>]| remaining.iter().all(|&i| at[i].is_some());
            if included.is_some() && done(&key) && done(&dropped) {
                break;
            }
            if sent.elapsed() > WAIT_LIMIT {
                eyre::bail!(
                    "after revoking member {revoked} of {size}: not every remaining node held \
                     the new epoch and dropped it within {WAIT_LIMIT:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        send.await
            .wrap_err("the revoke transaction task failed")?
            .wrap_err("the revoke transaction failed")?;
        let latest = |at: &[Option<Duration>]| {
            remaining
                .iter()
                .filter_map(|&i| at[i])
                .max()
                .ok_or_else(|| eyre::eyre!("no remaining node to measure"))
        };
        let (mut agent_key_secs, mut agent_drop_secs) = (0.0f64, 0.0f64);
        for &i in &remaining {
            let node = &cluster.nodes[i];
            let metric = |name: &'static str| async move {
                node.metric(name)
                    .await?
                    .ok_or_else(|| eyre::eyre!("{}: /metrics has no {name}", node.name))
            };
            agent_key_secs =
                agent_key_secs.max(metric("attestmesh_agent_csk_epoch_acquire_seconds").await?);
            agent_drop_secs =
                agent_drop_secs.max(metric("attestmesh_agent_revoked_peer_removal_seconds").await?);
        }
        let run = RevokeRun {
            size,
            revoked,
            included: included.ok_or_else(|| eyre::eyre!("the revocation was never seen"))?,
            key: latest(&key)?,
            dropped: latest(&dropped)?,
            agent_key_secs,
            agent_drop_secs,
        };
        println!(
            "[bench]   included after {:.2} s; every remaining member holds the new epoch after \
             {:.2} s and dropped member {revoked} after {:.2} s",
            secs(run.included),
            secs(run.key),
            secs(run.dropped)
        );
        Ok(run)
    }

    /// One iperf3 stream for `secs` seconds over node-1 → node-2's mesh IP (attestmesh0:
    /// boringtun, TLS, the gateway emulator's relay), then over node-1's bare veth to the root
    /// namespace. Same run, same machine.
    async fn measure_throughput(&mut self, cadence: Cadence) -> eyre::Result<String> {
        let secs = self.args.iperf_secs;
        let dir = self.state_dir.join("iperf");
        let mut metered = self.prepare(&dir, 2, cadence).await?;
        let cluster = &mut metered.cluster;
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
}

/// alto's version, from its package.json in node_modules.
fn alto_version() -> eyre::Result<String> {
    let path = attestmesh_devnet::local_chain::project_root()
        .join("node_modules/@pimlico/alto/package.json");
    let text = std::fs::read_to_string(&path)
        .wrap_err_with(|| format!("cannot read {}", path.display()))?;
    let package: serde_json::Value =
        serde_json::from_str(&text).wrap_err_with(|| format!("{} is not JSON", path.display()))?;
    package["version"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| eyre::eyre!("{} has no version", path.display()))
}

/// Starts the agents of the first `size` nodes and waits until the cluster is whole.
async fn start_all_and_wait_whole(cluster: &mut Cluster, size: usize) -> eyre::Result<()> {
    for i in 0..size {
        cluster.start_agent(i)?;
    }
    cluster.wait_converged(WAIT_LIMIT).await?;
    Ok(())
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

/// Every series of one counter family, by label set (`kind="envelopes"`; empty without
/// labels).
/// Each node's sponsored operations by label set, in node order, all nodes asked at once.
async fn sponsored_operations(cluster: &Cluster) -> eyre::Result<Vec<Counts>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .wrap_err("cannot build an HTTP client")?;
    let mut asks = tokio::task::JoinSet::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let (http, url, name) = (http.clone(), node.metrics_url(), node.name.clone());
        asks.spawn(async move {
            let text = http
                .get(&url)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .wrap_err_with(|| format!("{name}: {url} does not answer"))?
                .text()
                .await
                .wrap_err_with(|| format!("{name}: {url} body"))?;
            let series = family_series(&text, SPONSORED_OPERATIONS)
                .wrap_err_with(|| format!("{name}: {url}"))?
                .ok_or_else(|| {
                    eyre::eyre!(
                        "{name}: {url} has no {SPONSORED_OPERATIONS}: an agent that does not \
                         count its sponsored operations"
                    )
                })?;
            eyre::Ok((i, series))
        });
    }
    let mut per_node = vec![BTreeMap::new(); cluster.nodes.len()];
    while let Some(answer) = asks.join_next().await {
        let (i, series) = answer.wrap_err("a /metrics task failed")??;
        per_node[i] = series;
    }
    Ok(per_node)
}

/// Every node's operations added up.
fn total(per_node: &[Counts]) -> f64 {
    per_node.iter().flat_map(BTreeMap::values).sum()
}

/// The cluster's operations by kind (`kind="x"` as `x`).
fn by_kind(per_node: &[Counts]) -> BTreeMap<String, f64> {
    let mut kinds = BTreeMap::new();
    for (labels, count) in per_node.iter().flatten() {
        let kind = labels
            .strip_prefix("kind=\"")
            .and_then(|k| k.strip_suffix('"'))
            .unwrap_or(labels);
        *kinds.entry(kind.to_string()).or_default() += count;
    }
    kinds
}

/// What each agent costs at rest: CPU time from /proc, bytes on its attestmesh0 (heartbeats and
/// WireGuard keepalives: no app traffic runs) and on its veth (everything the node sends and
/// receives: WireGuard inside TLS to the gateway, chain polling), the sponsored operations it
/// sends (none, once the cluster is whole) and the chain RPC requests the agents make (counted
/// by the proxy in front of anvil).
async fn measure_steady_state(
    metered: &Metered,
    window_secs: u64,
    cadence: Cadence,
) -> eyre::Result<String> {
    let cluster = &metered.cluster;
    // Let the start-up traffic (endpoint envelopes, CSK pulls) finish first.
    tokio::time::sleep(Duration::from_secs(10)).await;
    println!("[bench]   steady state over {window_secs} s");
    let ops_before = sponsored_operations(cluster).await?;
    let requests_before = metered.rpc.requests_forwarded();
    let before = sample(cluster)?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(window_secs)).await;
    let after = sample(cluster)?;
    let elapsed = started.elapsed().as_secs_f64();
    let requests = metered.rpc.requests_forwarded() - requests_before;
    let ops_after = sponsored_operations(cluster).await?;
    let ticks_per_second = clock_ticks_per_second()?;
    let mut cpu = Vec::new();
    let mut mesh = Vec::new();
    let mut wire = Vec::new();
    let mut ops = Vec::new();
    for (((b, a), node), (ops_b, ops_a)) in before
        .iter()
        .zip(&after)
        .zip(&cluster.nodes)
        .zip(ops_before.iter().zip(&ops_after))
    {
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
        let sent = ops_a.values().sum::<f64>() - ops_b.values().sum::<f64>();
        if sent < 0.0 {
            eyre::bail!(
                "{}: the sponsored-operations counter went backwards during the window",
                node.name
            );
        }
        ops.push(sent / elapsed * 3600.0);
    }
    let n = cluster.nodes.len();
    let ops_total: f64 = total(&ops_after) - total(&ops_before);
    let mut out = format!(
        "## Steady state at {n} nodes\n\nPer node, over {elapsed:.0} s of steady state (every \
         node healthy, no app traffic; the window starts at least 10 s after the cluster is whole \
         and its late operations have landed), chain at {}, agents at their defaults (heartbeat every \
         2 s to each of the {} peers, chain polling every 2 s). Bytes are received + sent.\n\n",
        cadence.label(),
        n.saturating_sub(1)
    );
    out.push_str("| per node | mean | min | max |\n| --- | ---: | ---: | ---: |\n");
    for (label, values) in [
        ("CPU (% of one core)", &cpu),
        ("attestmesh0 traffic (B/s): heartbeats + keepalives", &mesh),
        (
            "veth traffic (B/s): WireGuard over TLS + chain polling + all else",
            &wire,
        ),
        ("sponsored operations per node-hour (target: 0)", &ops),
    ] {
        let (mean, min, max) = stats(values);
        writeln!(out, "| {label} | {mean:.1} | {min:.1} | {max:.1} |")?;
    }
    let minutes = elapsed / 60.0;
    writeln!(
        out,
        "\n{ops_total:.0} sponsored operation(s) by the {n} nodes in the window: {:.1} per \
         node-hour (target: 0 per hour).\n",
        ops_total / n as f64 / (elapsed / 3600.0)
    )?;
    writeln!(
        out,
        "Chain RPC: **{:.1} requests per node per minute** ({requests} HTTP requests from the \
         {n} agents to anvil in {minutes:.2} min, counted by a proxy between them; a JSON-RPC \
         batch is one request). The bundler, gas manager and webhook reach anvil directly and \
         are not counted.\n",
        requests as f64 / n as f64 / minutes
    )?;
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
async fn measure_catch_up(
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
async fn measure_delivery(
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
        while node.metric(SUBSCRIPTIONS).await?.unwrap_or(0.0) < 1.0 {
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
            sum += node.metric(ACCEPTED).await?.unwrap_or(0.0);
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

/// How long the paymaster webhook takes to answer a gas manager when its chain RPC is up
/// (the cluster's policy decides), down (connection refused: it fails closed at once) or hung
/// (it fails closed when its chain timeout, the default, expires), and to refuse to start
/// against an RPC that never answers. The webhook runs in this process against a fresh local
/// chain; every reply is checked to be the expected denial before its time counts. (The tests
/// assert these answers, never their latency.)
async fn measure_webhook_fail_closed(requests: usize) -> eyre::Result<String> {
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

/// The machine and the build, read before anything runs: a fact that cannot be read fails the
/// run rather than printing as "0 cores" or an empty kernel.
#[derive(Debug)]
struct Machine {
    /// "Machine: …. Agents: `…` (built with `--release`)".
    description: String,
    /// When the run started.
    date: String,
}

fn machine(agent: &Path) -> eyre::Result<Machine> {
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
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .wrap_err("cannot run date")?;
    let build = if agent.components().any(|c| c.as_os_str() == "release") {
        "built with `--release`"
    } else {
        "a debug build: figures are not representative"
    };
    Ok(Machine {
        description: format!(
            "Machine: {model}, {cores} cores, {memory_gib:.0} GiB, Linux {}. Agents: `{}` \
             ({build})",
            kernel.trim(),
            agent.display()
        ),
        date: String::from_utf8_lossy(&date.stdout).trim().to_string(),
    })
}

fn header(bench: &Bench<'_>, machine: &Machine, steady: Cadence) -> eyre::Result<String> {
    let command: Vec<String> = std::env::args().collect();
    let bundler = bench
        .bundler
        .as_deref()
        .ok_or_else(|| eyre::eyre!("no devnet ran, so the bundler used is unknown"))?;
    let mut out = String::from("# AttestMesh benchmarks\n\n");
    writeln!(
        out,
        "Written by `make bench`, which ran `{}` on {}.\n",
        command.join(" "),
        machine.date
    )?;
    writeln!(
        out,
        "{}, each in its own network namespace with its own attestmesh0, on the devnet: anvil \
         with the EntryPoint v0.7 at its canonical address; bundler: {bundler}; the gas \
         manager and gateway emulators; dstack simulators. The agents reach anvil through a \
         counting pass-through proxy in the benchmark's process (`FaultProxy`).\n",
        machine.description
    )?;
    let mut ran_where = Vec::new();
    if bench.args.join_size > 0 {
        ran_where.push(format!("the join: {}", Cadence::BASE.label()));
    }
    ran_where.push(format!(
        "the steady state, the messages and the indexer: {}",
        steady.label()
    ));
    writeln!(
        out,
        "**Block time:** {}. Each table names the cadence of its figures (Base's is 2 s \
         blocks); {}. {} run(s) per size and cadence.\n",
        capitalised(&bench.ran_at.join(" and ")),
        ran_where.join("; "),
        bench.args.runs
    )?;
    out.push_str(
        "These are measurements of one machine, not guarantees; the tests assert no time. \
         Targets are printed beside the figures they concern: figures, not assertions.\n\n",
    );
    Ok(out)
}

fn start_section(args: &BenchArgs, rows: &[StartRow]) -> eyre::Result<String> {
    let mut out = String::from("## Start and restart to a whole cluster\n\n");
    writeln!(
        out,
        "Seconds from starting the agents until every node is healthy **and** sees every other \
         node live (`GetMeshStatus` and `/healthz`, all nodes asked at once, rounds 100 ms \
         apart). Each run is a fresh devnet whose member accounts were prepared (in O(1) \
         blocks) before the clock starts; restarts are `kill -9` then start, of nodes 1 and 2 \
         (\"2 nodes\", which includes member 1 in most runs) and then of every node at once. \
         min / median / max over the runs. The restart of 2 nodes is measured up to {} nodes; \
         larger clusters skip it to keep the run short.\n",
        args.restart_two_up_to
    )?;
    out.push_str(
        "Sponsored operations per cold start: every node's \
         `attestmesh_agent_sponsored_operations_total` (all kinds) added up, read when the \
         cluster is whole and again three blocks (at least 5 s) later, so operations already in \
         flight count; the later figure is shown. Target ≤ 2N+1: a registration and an envelope \
         batch per node, the CSK commitment riding in the originator's batch.\n\n",
    );
    out.push_str(
        "| chain | nodes | runs | cold start | target | restart of 2 nodes | restart of all nodes \
         | sponsored operations per cold start | target (2N+1) |\n\
         | --- | ---: | ---: | --- | --- | --- | --- | ---: | --- |\n",
    );
    let order = |cadence: Cadence| args.cadences.iter().position(|c| *c == cadence);
    let mut sorted: Vec<&StartRow> = rows.iter().collect();
    sorted.sort_by_key(|row| (row.size, order(row.cadence)));
    for row in &sorted {
        let bound = 2 * row.size + 1;
        if let Some(failure) = &row.failure
            && row.cold.is_empty()
        {
            writeln!(
                out,
                "| {} | {} | 0 | not whole: {} | | | | | ≤ {bound} |",
                row.cadence.label(),
                row.size,
                failure.replace('|', "\\|")
            )?;
            continue;
        }
        let target = if row.cadence == Cadence::BASE && COLD_START_TARGET_SIZES.contains(&row.size)
        {
            verdict(
                median(&row.cold) <= COLD_START_TARGET_SECS,
                &format!("≤ {COLD_START_TARGET_SECS:.0} s"),
            )
        } else {
            "–".to_string()
        };
        let two = if row.two_skipped {
            "skipped".to_string()
        } else {
            spread(&row.two)
        };
        let late = row.late.iter().copied().fold(0.0, f64::max);
        let late = if late > 0.0 {
            format!(" ({late:.0} after whole)")
        } else {
            String::new()
        };
        let worst = row.ops.iter().copied().fold(0.0, f64::max);
        let failed = row.failure.as_ref().map_or(String::new(), |f| {
            format!(
                "; run {} failed: {}",
                row.cold.len() + 1,
                f.replace('|', "\\|")
            )
        });
        writeln!(
            out,
            "| {} | {} | {} | {}{failed} | {target} | {two} | {} | {}{late} | {} |",
            row.cadence.label(),
            row.size,
            row.cold.len(),
            spread(&row.cold),
            spread(&row.all),
            count_spread(&row.ops),
            verdict(worst <= bound as f64, &format!("≤ {bound}")),
        )?;
    }
    out.push('\n');

    let kinds: std::collections::BTreeSet<&String> =
        sorted.iter().flat_map(|row| row.kinds.keys()).collect();
    if !kinds.is_empty() {
        out.push_str(
            "Sponsored operations per cold start by kind (first run):\n\n| chain | nodes |",
        );
        for kind in &kinds {
            write!(out, " {kind} |")?;
        }
        out.push_str("\n| --- | ---: |");
        out.push_str(&" ---: |".repeat(kinds.len()));
        out.push('\n');
        for row in sorted.iter().filter(|row| !row.cold.is_empty()) {
            write!(out, "| {} | {} |", row.cadence.label(), row.size)?;
            for kind in &kinds {
                write!(
                    out,
                    " {:.0} |",
                    row.kinds.get(*kind).copied().unwrap_or(0.0)
                )?;
            }
            out.push('\n');
        }
        out.push('\n');
    }
    writeln!(
        out,
        "![time to whole](time-to-whole.svg)\n\nThe median cold start against the number of \
         nodes at each cadence (`time-to-whole.svg`, written with this file); the dashed line \
         is the {COLD_START_TARGET_SECS:.0} s target.\n"
    )?;
    Ok(out)
}

fn join_section(size: usize, joins: &[JoinRun]) -> eyre::Result<String> {
    if size == 0 || joins.is_empty() {
        return Ok(String::new());
    }
    let after = size + 1;
    let bound = 2 + (after - 1);
    let mut out = String::from("## One node joining a running cluster\n\n");
    writeln!(
        out,
        "A whole cluster of {size} nodes at {}, left three blocks to settle; then one more node \
         is prepared (its member account allowlisted and deployed, not timed) and its agent \
         started. Seconds from starting it until all {after} nodes are healthy and see each \
         other live. Sponsored operations: every node's counter (old and new) from before the \
         node was prepared until three blocks after the cluster was whole again. Target \
         ≤ 2 + (N−1) with N = {after} nodes after the join: the newcomer's registration and \
         envelope batch, and one envelope from each other node.\n",
        Cadence::BASE.label()
    )?;
    out.push_str(
        "| nodes | runs | join to whole | target | sponsored operations | by the newcomer | target \
         (2 + (N−1)) |\n| --- | ---: | --- | --- | ---: | ---: | --- |\n",
    );
    let took: Vec<Duration> = joins.iter().map(|j| j.took).collect();
    let ops: Vec<f64> = joins.iter().map(|j| j.ops).collect();
    let newcomer: Vec<f64> = joins.iter().map(|j| j.newcomer).collect();
    let late = joins
        .iter()
        .map(|j| j.ops - j.ops_at_whole)
        .fold(0.0, f64::max);
    let late = if late > 0.0 {
        format!(" ({late:.0} after whole)")
    } else {
        String::new()
    };
    writeln!(
        out,
        "| {size} → {after} | {} | {} | {} | {}{late} | {} | {} |",
        joins.len(),
        spread(&took),
        verdict(
            median(&took) <= JOIN_TARGET_SECS,
            &format!("≤ {JOIN_TARGET_SECS:.0} s")
        ),
        count_spread(&ops),
        count_spread(&newcomer),
        verdict(
            ops.iter().copied().fold(0.0, f64::max) <= bound as f64,
            &format!("≤ {bound}")
        ),
    )?;
    let kinds: Vec<String> = joins[0]
        .kinds
        .iter()
        .map(|(kind, count)| format!("{kind} {count:.0}"))
        .collect();
    writeln!(
        out,
        "\nBy kind (first run): {}.\n",
        if kinds.is_empty() {
            "none".to_string()
        } else {
            kinds.join(", ")
        }
    )?;
    Ok(out)
}

/// The revocation table: the new epoch's key and the drop, from sending and from inclusion.
fn revoke_section(runs: &[RevokeRun]) -> eyre::Result<String> {
    if runs.is_empty() {
        return Ok(String::new());
    }
    let block = Cadence::BASE.0.unwrap_or(2) as f64;
    let key_target = 3.0 * block + 1.0;
    let drop_target = block + RECONCILE_PASS_SECS;
    let mut out = String::from(
        "## Revocation: CSK rotation and the drop from the mesh

",
    );
    writeln!(
        out,
        "A whole cluster at {}, left three blocks to settle; then the owner revokes the last \
         member, or member 1 (the originator of the current epoch, so the next member derives \
         and commits the new one). Seconds from sending the revoke transaction (the harness's \
         clock, polling every 100 ms): until the chain shows the new epoch (included), until \
         every remaining member holds its key, and until the revoked member is off every \
         remaining member's attestmesh0. The targets count from inclusion: the key \
         ≤ 3 blocks + 1 s ({key_target:.0} s), the drop ≤ 1 block + one reconcile pass \
         ({drop_target:.1} s). The last two columns are the agents' own metrics \
         (`attestmesh_agent_csk_epoch_acquire_seconds`, \
         `attestmesh_agent_revoked_peer_removal_seconds`, the largest over the remaining nodes), \
         counted from the revocation block's timestamp (1 s resolution).\n",
        Cadence::BASE.label()
    )?;
    out.push_str(
        "| nodes | revoked | included | every member holds the new key | after inclusion | target \
         | off every attestmesh0 | after inclusion | target | agents: key / drop |\n\
         | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: | --- | --- |\n",
    );
    for run in runs {
        let key_after = secs(run.key) - secs(run.included);
        let drop_after = secs(run.dropped) - secs(run.included);
        writeln!(
            out,
            "| {} | {} | {:.2} s | {:.2} s | {key_after:.2} s | {} | {:.2} s | {drop_after:.2} s \
             | {} | {:.1} s / {:.1} s |",
            run.size,
            if run.revoked == 1 {
                "member 1 (originator)".to_string()
            } else {
                format!("member {}", run.revoked)
            },
            secs(run.included),
            secs(run.key),
            verdict(key_after <= key_target, &format!("≤ {key_target:.0} s")),
            secs(run.dropped),
            verdict(drop_after <= drop_target, &format!("≤ {drop_target:.1} s")),
            run.agent_key_secs,
            run.agent_drop_secs,
        )?;
    }
    out.push('\n');
    Ok(out)
}

/// `text` with its first letter in upper case.
fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// "≤ 10 s: met" or "≤ 10 s: missed".
fn verdict(met: bool, target: &str) -> String {
    format!("{target}: {}", if met { "met" } else { "missed" })
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

/// The median of `values` (0 for none).
fn median_of(mut sorted: Vec<f64>) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    }
}

/// The median duration in seconds.
fn median(values: &[Duration]) -> f64 {
    median_of(values.iter().map(Duration::as_secs_f64).collect())
}

fn spread(values: &[Duration]) -> String {
    if values.is_empty() {
        return "–".into();
    }
    let mut sorted: Vec<f64> = values.iter().map(|d| d.as_secs_f64()).collect();
    sorted.sort_by(f64::total_cmp);
    format!(
        "{:.2} / {:.2} / {:.2} s",
        sorted[0],
        median_of(sorted.clone()),
        sorted[sorted.len() - 1]
    )
}

/// Counts over the runs: one figure when they agree, else min / median / max.
fn count_spread(values: &[f64]) -> String {
    let (Some(min), Some(max)) = (
        values.iter().copied().reduce(f64::min),
        values.iter().copied().reduce(f64::max),
    ) else {
        return "–".into();
    };
    if min == max {
        format!("{min:.0}")
    } else {
        format!("{min:.0} / {:.0} / {max:.0}", median_of(values.to_vec()))
    }
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

/// One line of the plot: its legend and its (nodes, seconds) points.
#[derive(Debug, Clone)]
struct Series {
    label: String,
    points: Vec<(f64, f64)>,
}

/// A round axis end and tick step for values up to `max`: steps of 1, 2 or 5 × 10ᵏ, about five
/// of them.
fn axis(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let rough = max / 5.0;
    let magnitude = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= rough)
        .unwrap_or(10.0 * magnitude);
    ((max / step).ceil() * step, step)
}

/// Text for SVG: `&`, `<`, `>` and quotes escaped.
fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The plot of cold start to whole against cluster size: a hand-written SVG with axes, ticks,
/// one polyline with a circle per point for each series, a legend and, when given, the target
/// as a dashed line.
fn time_to_whole_svg(series: &[Series], target_secs: Option<f64>) -> String {
    const COLORS: [&str; 6] = [
        "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
    ];
    let (width, height) = (640.0, 400.0);
    let (left, right, top, bottom) = (60.0, 20.0, 40.0, 50.0);
    let (plot_w, plot_h) = (width - left - right, height - top - bottom);
    let points = || series.iter().flat_map(|s| s.points.iter().copied());
    let max_x = points().map(|(x, _)| x).fold(0.0, f64::max);
    let max_y = points()
        .map(|(_, y)| y)
        .chain(target_secs)
        .fold(0.0, f64::max);
    // Nodes come whole: no tick between two sizes.
    let (x_top, x_step) = match axis(max_x) {
        (_, step) if step < 1.0 => (max_x.ceil().max(1.0), 1.0),
        round => round,
    };
    let (y_top, y_step) = axis(max_y * 1.05);
    let px = |x: f64| left + x / x_top * plot_w;
    let py = |y: f64| top + plot_h - y / y_top * plot_h;
    let label = |value: f64, step: f64| {
        if step >= 1.0 {
            format!("{value:.0}")
        } else {
            format!("{value:.1}")
        }
    };

    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"{width}\" height=\"{height}\" fill=\"white\"/>\n\
         <text x=\"{:.1}\" y=\"24\" text-anchor=\"middle\" font-size=\"16\">Cold start to a whole cluster</text>\n",
        width / 2.0
    );
    // Grid and ticks.
    let ticks = |top: f64, step: f64| {
        (0..)
            .map(move |i| f64::from(i) * step)
            .take_while(move |v| *v <= top + step / 1e6)
    };
    for x in ticks(x_top, x_step) {
        let _ = writeln!(
            svg,
            "<line x1=\"{0:.1}\" y1=\"{1:.1}\" x2=\"{0:.1}\" y2=\"{2:.1}\" stroke=\"#e0e0e0\"/>\n\
             <line x1=\"{0:.1}\" y1=\"{2:.1}\" x2=\"{0:.1}\" y2=\"{3:.1}\" stroke=\"black\"/>\n\
             <text x=\"{0:.1}\" y=\"{4:.1}\" text-anchor=\"middle\">{5}</text>",
            px(x),
            top,
            top + plot_h,
            top + plot_h + 5.0,
            top + plot_h + 18.0,
            label(x, x_step)
        );
    }
    for y in ticks(y_top, y_step) {
        let _ = writeln!(
            svg,
            "<line x1=\"{0:.1}\" y1=\"{1:.1}\" x2=\"{2:.1}\" y2=\"{1:.1}\" stroke=\"#e0e0e0\"/>\n\
             <line x1=\"{3:.1}\" y1=\"{1:.1}\" x2=\"{0:.1}\" y2=\"{1:.1}\" stroke=\"black\"/>\n\
             <text x=\"{4:.1}\" y=\"{5:.1}\" text-anchor=\"end\">{6}</text>",
            left,
            py(y),
            left + plot_w,
            left - 5.0,
            left - 8.0,
            py(y) + 4.0,
            label(y, y_step)
        );
    }
    // Axes and their labels.
    let _ = writeln!(
        svg,
        "<line x1=\"{left}\" y1=\"{0:.1}\" x2=\"{1:.1}\" y2=\"{0:.1}\" stroke=\"black\"/>\n\
         <line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{0:.1}\" stroke=\"black\"/>\n\
         <text x=\"{2:.1}\" y=\"{3:.1}\" text-anchor=\"middle\">nodes</text>\n\
         <text x=\"16\" y=\"{4:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {4:.1})\">seconds</text>",
        top + plot_h,
        left + plot_w,
        left + plot_w / 2.0,
        height - 10.0,
        top + plot_h / 2.0
    );
    if let Some(target) = target_secs {
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" y1=\"{0:.1}\" x2=\"{1:.1}\" y2=\"{0:.1}\" stroke=\"#555\" \
             stroke-dasharray=\"6 4\"/>\n\
             <text x=\"{2:.1}\" y=\"{3:.1}\" text-anchor=\"end\" fill=\"#555\">target {4}</text>",
            py(target),
            left + plot_w,
            left + plot_w - 4.0,
            py(target) - 4.0,
            xml_escape(&format!("≤ {} s", label(target, 1.0)))
        );
    }
    // The series, then the legend (lines only: every circle is a measured point).
    for (i, series) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut sorted = series.points.clone();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        let path: Vec<String> = sorted
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for (x, y) in &sorted {
            let _ = writeln!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{color}\"><title>{}: {x:.0} nodes, {y:.2} s</title></circle>",
                px(*x),
                py(*y),
                xml_escape(&series.label)
            );
        }
        let legend_y = top + 14.0 + 18.0 * i as f64;
        let _ = writeln!(
            svg,
            "<line x1=\"{0:.1}\" y1=\"{1:.1}\" x2=\"{2:.1}\" y2=\"{1:.1}\" stroke=\"{color}\" stroke-width=\"3\"/>\n\
             <text x=\"{3:.1}\" y=\"{4:.1}\">{5}</text>",
            left + 12.0,
            legend_y,
            left + 36.0,
            left + 42.0,
            legend_y + 4.0,
            xml_escape(&series.label)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plot_is_well_formed_svg_with_a_circle_per_point() {
        let series = vec![
            Series {
                label: "2 s blocks".into(),
                points: vec![(3.0, 6.2), (8.0, 7.9), (16.0, 9.4), (32.0, 14.1)],
            },
            Series {
                label: "instant <& mining>".into(),
                points: vec![(16.0, 5.1), (3.0, 3.0), (8.0, 4.2)],
            },
        ];
        let svg = time_to_whole_svg(&series, Some(10.0));
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
        assert_eq!(svg.matches("<circle").count(), 7);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
        assert_eq!(
            svg.matches("<circle").count(),
            svg.matches("</circle>").count()
        );
        assert!(svg.contains("Cold start to a whole cluster"));
        assert!(svg.contains("instant &lt;&amp; mining&gt;"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        // Nothing measured still draws the axes, and no point.
        let empty = time_to_whole_svg(&[], None);
        assert!(empty.starts_with("<svg") && empty.trim_end().ends_with("</svg>"));
        assert_eq!(empty.matches("<circle").count(), 0);
        // Two nodes at most: ticks at whole nodes only.
        let small = time_to_whole_svg(
            &[Series {
                label: "instant mining".into(),
                points: vec![(2.0, 6.5)],
            }],
            None,
        );
        assert_eq!(small.matches("<circle").count(), 1);
        assert!(!small.contains(">0.5</text>"), "{small}");
    }

    #[test]
    fn axes_end_on_round_ticks() {
        assert_eq!(axis(32.0), (40.0, 10.0));
        assert_eq!(axis(64.0), (80.0, 20.0));
        assert_eq!(axis(0.0), (1.0, 0.2));
        let (top, step) = axis(14.1);
        assert!(top >= 14.1 && step > 0.0);
    }

    #[test]
    fn cadences_parse() {
        assert_eq!(parse_cadence("2s"), Ok(Cadence(Some(2))));
        assert_eq!(parse_cadence("12s"), Ok(Cadence(Some(12))));
        assert_eq!(parse_cadence("instant"), Ok(Cadence(None)));
        assert!(parse_cadence("0s").is_err());
        assert!(parse_cadence("2").is_err());
        assert!(parse_cadence("fast").is_err());
        assert_eq!(Cadence::BASE.label(), "2 s blocks");
    }

    #[test]
    fn a_counter_family_adds_up_over_its_series() {
        let text = "# HELP attestmesh_agent_sponsored_operations Sponsored operations.\n\
                    # TYPE attestmesh_agent_sponsored_operations counter\n\
                    attestmesh_agent_sponsored_operations_total{kind=\"registration\"} 1\n\
                    attestmesh_agent_sponsored_operations_total{kind=\"envel}pes\"} 2\n\
                    attestmesh_agent_sponsored_operations_total_extra 7\n\
                    attestmesh_agent_messages_sent_total 9\n\
                    # EOF\n";
        let series = family_series(text, SPONSORED_OPERATIONS).unwrap().unwrap();
        assert_eq!(series.values().sum::<f64>(), 3.0);
        assert_eq!(by_kind(&[series.clone(), series])["envel}pes"], 4.0);
        // Declared with no series yet: zero. Not there at all: no figure.
        let declared = "# TYPE attestmesh_agent_sponsored_operations counter\n# EOF\n";
        assert_eq!(
            family_series(declared, SPONSORED_OPERATIONS).unwrap(),
            Some(BTreeMap::new())
        );
        assert_eq!(
            family_series("attestmesh_agent_live_peers 2\n", SPONSORED_OPERATIONS).unwrap(),
            None
        );
        assert!(
            family_series(
                "attestmesh_agent_sponsored_operations_total x\n",
                SPONSORED_OPERATIONS
            )
            .is_err()
        );
    }

    #[test]
    fn the_defaults_are_the_issue_s() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: BenchArgs,
        }
        let cli = <Cli as clap::Parser>::try_parse_from(["bench"]).unwrap();
        assert_eq!(cli.args.sizes, [3, 8, 16, 32]);
        assert_eq!(cli.args.cadences, [Cadence::BASE, Cadence(None)]);
        assert_eq!((cli.args.runs, cli.args.join_size), (1, 16));
        assert_eq!(cli.args.bundler, BundlerChoice::Alto);
        let cli = <Cli as clap::Parser>::try_parse_from([
            "bench",
            "--cadences",
            "instant,5s",
            "--bundler",
            "project",
        ])
        .unwrap();
        assert_eq!(cli.args.cadences, [Cadence(None), Cadence(Some(5))]);
        assert_eq!(cli.args.bundler, BundlerChoice::Project);
        assert!(<Cli as clap::Parser>::try_parse_from(["bench", "--cadences", "2"]).is_err());
    }

    #[test]
    fn counts_show_one_figure_when_the_runs_agree() {
        assert_eq!(count_spread(&[7.0, 7.0]), "7");
        assert_eq!(count_spread(&[9.0, 7.0, 8.0]), "7 / 8 / 9");
        assert_eq!(count_spread(&[]), "–");
    }
}
