//! One node joining a running cluster (at Base's cadence): the seconds from starting the
//! newcomer's agent until every node, old and new, is whole again, and the sponsored
//! operations the join costs every node (measured from before the newcomer is prepared until
//! the cluster has settled after it; void if any agent restarted meanwhile). Also its table in
//! the report, against the join-time and 2 + (N−1) operations targets.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use super::figures::{count_spread, median, secs, spread, verdict};
use super::operations::{by_kind, sponsored_operations, total};
use super::setup::start_all_and_wait_whole;
use super::{Bench, Cadence, WAIT_LIMIT};

/// Target for one node joining a running cluster, in seconds.
const JOIN_TARGET_SECS: f64 = 8.0;

/// The figures of one node joining.
#[derive(Debug)]
pub(super) struct JoinRun {
    took: Duration,
    /// Every node's operations from before the join until settled after it.
    ops: f64,
    ops_at_whole: f64,
    newcomer: f64,
    kinds: BTreeMap<String, f64>,
}

impl Bench<'_> {
    /// A whole cluster of `size` nodes at Base's cadence, then one more node: the time from
    /// starting its agent until all `size + 1` are whole, and every node's sponsored
    /// operations from before the join until settled after it.
    pub(super) async fn join_run(&mut self, dir: &Path, size: usize) -> eyre::Result<JoinRun> {
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
}

pub(super) fn join_section(size: usize, joins: &[JoinRun]) -> eyre::Result<String> {
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
