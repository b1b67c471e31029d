//! The `attestmesh-testbed` command line: the demo and the benchmark.

use clap::{Parser, Subcommand};
use eyre::WrapErr;

use crate::{bench, demo};

/// AttestMesh testbed: real agents in network namespaces on the local devnet.
#[derive(Debug, Parser)]
#[command(name = "attestmesh-testbed", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The devnet (2 s blocks, like Base) plus N real agents, each in its own network namespace
    /// with its own attestmesh0: shows them come up, then shows the cluster working (live peers,
    /// a message round trip, the same CSK everywhere), and a killed node leave and rejoin.
    /// Needs root.
    Demo(demo::DemoArgs),
    /// Measure clusters on the devnet at 2 s blocks and with instant mining (start and restart
    /// to whole, a join, sponsored operations, steady-state cost, throughput over attestmesh0
    /// vs the bare veth, gas, indexer catch-up) and write bench/RESULTS.md with a plot.
    /// Needs root and iperf3.
    Bench(Box<bench::BenchArgs>),
}

/// Run the parsed command line.
pub async fn run(cli: Cli) -> eyre::Result<()> {
    // The demo and the benchmark print their own progress; their logs only say what went wrong
    // unless RUST_LOG asks. The gateway warns about every dial to a node that is starting or
    // down: expected in the benchmark's restarts and while a demo node is killed, noise there.
    let default_filter = match cli.command {
        Command::Demo(_) => "warn,attestmesh::devnet::gateway=error",
        Command::Bench(_) => "error",
    };
    attestmesh_service::logging::init(attestmesh_service::LogFormat::Human, default_filter)?;
    let shutdown = attestmesh_service::shutdown::signals()?;
    match cli.command {
        Command::Bench(args) => bench::bench(*args, shutdown)
            .await
            .wrap_err("the benchmark failed"),
        Command::Demo(args) => demo::demo(args, shutdown).await.wrap_err("the demo failed"),
    }
}
