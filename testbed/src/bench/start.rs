//! Start and restart to a whole cluster, at every size and cadence asked for: the seconds from
//! starting the agents until every node is healthy and sees every other node live, for a cold
//! start (with the sponsored operations it costs, read when whole and again once settled), a
//! `kill -9` restart of 2 nodes and one of all nodes. The one run that measures more (the
//! largest required cluster at the steady cadence, see [`Extras`]) takes the steady state
//! between its cold start and restarts, and the messages and indexer sections after them.
//! Also the start table of the report, with the cold-start and 2N+1 operations targets.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use super::figures::{count_spread, median, secs, spread, verdict};
use super::indexer::{load_history, measure_catch_up, measure_delivery};
use super::operations::{by_kind, sponsored_operations, total};
use super::setup::start_all_and_wait_whole;
use super::steady::measure_steady_state;
use super::{Bench, BenchArgs, Cadence, WAIT_LIMIT};
use crate::cluster::Cluster;

/// Cold-start target (seconds) at Base's block time, and the sizes it is set for.
pub(super) const COLD_START_TARGET_SECS: f64 = 10.0;
const COLD_START_TARGET_SIZES: [usize; 3] = [3, 16, 32];

/// One row of the start table: a cadence and a size over the runs.
#[derive(Debug)]
pub(super) struct StartRow {
    pub(super) cadence: Cadence,
    pub(super) size: usize,
    pub(super) cold: Vec<Duration>,
    pub(super) two: Vec<Duration>,
    pub(super) two_skipped: bool,
    pub(super) all: Vec<Duration>,
    /// Sponsored operations of the cold start (whole cluster, settled), per run.
    pub(super) ops: Vec<f64>,
    /// Of those, how many landed after the cluster was whole, per run.
    pub(super) late: Vec<f64>,
    /// The first run's operations by kind.
    pub(super) kinds: BTreeMap<String, f64>,
    /// Why a `--try-sizes` size has no figures.
    pub(super) failure: Option<String>,
}

/// The figures of one cold start and its restarts.
#[derive(Debug)]
pub(super) struct StartRun {
    pub(super) cold: Duration,
    pub(super) ops_at_whole: f64,
    pub(super) kinds: BTreeMap<String, f64>,
    pub(super) two: Option<Duration>,
    pub(super) all: Duration,
}

/// The steady-state section and the messages + indexer sections, when a run measures them,
/// and the indexer binary they need.
pub(super) type Extras<'r> = (&'r mut Option<String>, &'r mut Option<String>, &'r PathBuf);

impl Bench<'_> {
    /// A cold start of `size` nodes to whole, its sponsored operations, then (when `extras`
    /// asks) the steady state and the history for the indexer, then restarts.
    pub(super) async fn start_run(
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

pub(super) fn start_section(args: &BenchArgs, rows: &[StartRow]) -> eyre::Result<String> {
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
