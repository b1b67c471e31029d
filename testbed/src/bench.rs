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
//!
//! [`FaultProxy`]: attestmesh_devnet::fault_proxy::FaultProxy
//!
//! This file holds the flags, the chain cadences and the run itself ([`bench()`]: every
//! measurement in turn, then the report). Each measured section lives in its own file, with the
//! table it writes: `start` (cold start and restarts), `join`, `revoke`, `steady` (the cost at
//! rest), `throughput` (iperf3), `indexer` (messages, catch-up, delivery), `webhook` (failing
//! closed) and `gas`; `setup` prepares the devnet and cluster they measure, `operations` reads
//! the agents' sponsored-operations counters, `header` the machine and the report's opening,
//! `figures` the shared number formatting, and `plot` draws `time-to-whole.svg`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use eyre::WrapErr;

use attestmesh_devnet::stack::{BASE_BLOCK_TIME_SECS, StackConfig};

mod figures;
mod gas;
mod header;
mod indexer;
mod join;
mod operations;
mod plot;
mod revoke;
mod setup;
mod start;
mod steady;
mod throughput;
mod webhook;

use figures::median;
use gas::gas_table;
use header::{header, machine};
use join::join_section;
use plot::{Series, time_to_whole_svg};
use revoke::revoke_section;
use start::{COLD_START_TARGET_SECS, StartRow, start_section};
use webhook::measure_webhook_fail_closed;

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

/// Runs every measurement and writes the report; stops early (writing nothing) on `shutdown`.
pub async fn bench(args: BenchArgs, shutdown: impl Future<Output = ()>) -> eyre::Result<()> {
    tokio::select! {
        result = run(&args) => result,
        () = shutdown => eyre::bail!("interrupted; no report written"),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
