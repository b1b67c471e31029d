//! `cluster-mesh-agent`: `run` (the sidecar) and `status` (read the API socket).

use std::path::PathBuf;

use attestmesh_agent::config::{AgentArgs, DEFAULT_API_SOCKET};
use attestmesh_agent::shutdown::Shutdown;
use clap::{Parser, Subcommand};
use eyre::WrapErr;

/// The AttestMesh sidecar.
#[derive(Debug, Parser)]
#[command(name = "cluster-mesh-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sidecar until SIGINT/SIGTERM.
    Run(Box<AgentArgs>),
    /// Print the node's state, read from the API socket.
    Status {
        /// The agent's API socket.
        #[arg(long = "api.socket", env = "ATTESTMESH_API_SOCKET", default_value = DEFAULT_API_SOCKET)]
        socket: PathBuf,
    },
}

#[tokio::main]
async fn main() -> eyre::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let config = args.resolve().wrap_err("invalid configuration")?;
            attestmesh_service::logging::init(config.log_format, "info")?;
            let shutdown = Shutdown::new();
            shutdown.cancel_on_signals()?;
            attestmesh_agent::boot::run(config, shutdown).await
        }
        Command::Status { socket } => attestmesh_agent::status::print_status(&socket).await,
    }
}
