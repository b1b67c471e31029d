//! What a whole cluster costs at rest, per agent, over a window of no app traffic: CPU time
//! from /proc, bytes on its attestmesh0 and on its veth (from the interfaces' counters), the
//! sponsored operations it sends (target: none) and the chain RPC requests the agents make
//! (counted by the proxy in front of anvil). A restart or a counter going backwards in the
//! window fails the run instead of skewing it. Writes the steady-state section.

use std::fmt::Write as _;
use std::time::Duration;

use eyre::WrapErr;
use tokio::time::Instant;

use super::Cadence;
use super::figures::stats;
use super::operations::{sponsored_operations, total};
use super::setup::Metered;
use crate::cluster::Cluster;

/// What each agent costs at rest: CPU time from /proc, bytes on its attestmesh0 (heartbeats and
/// WireGuard keepalives: no app traffic runs) and on its veth (everything the node sends and
/// receives: WireGuard inside TLS to the gateway, chain polling), the sponsored operations it
/// sends (none, once the cluster is whole) and the chain RPC requests the agents make (counted
/// by the proxy in front of anvil).
pub(super) async fn measure_steady_state(
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
