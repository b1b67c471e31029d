//! TCP throughput over the mesh against the bare link, in one run on one machine: a single
//! iperf3 stream from node-1's namespace to node-2's mesh IP (attestmesh0: boringtun, TLS, the
//! gateway emulator's relay), then over node-1's bare veth to the root namespace. Each iperf3
//! server is killed when dropped and each client attempt is bounded, so an interrupted or
//! black-holed run ends instead of hanging. Writes the throughput section.

use std::fmt::Write as _;
use std::time::Duration;

use eyre::WrapErr;

use super::{Bench, Cadence, WAIT_LIMIT};

impl Bench<'_> {
    /// One iperf3 stream for `secs` seconds over node-1 → node-2's mesh IP (attestmesh0:
    /// boringtun, TLS, the gateway emulator's relay), then over node-1's bare veth to the root
    /// namespace. Same run, same machine.
    pub(super) async fn measure_throughput(&mut self, cadence: Cadence) -> eyre::Result<String> {
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
