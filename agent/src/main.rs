//! `cluster-mesh-agent`: `run` (the sidecar) and `status` (read the API socket).

use std::io::IsTerminal;
use std::path::PathBuf;

use attestmesh_agent::config::{AgentArgs, DEFAULT_API_SOCKET, LogFormat};
use attestmesh_agent::shutdown::Shutdown;
use clap::{Parser, Subcommand};
use eyre::WrapErr;
use tracing::warn;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

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
            init_logging(config.log_format)?;
            let shutdown = Shutdown::new();
            let signal = shutdown.clone();
            tokio::spawn(async move {
                wait_for_signal().await;
                signal.cancel();
            });
            attestmesh_agent::node::run(config, shutdown).await
        }
        Command::Status { socket } => attestmesh_agent::status::print_status(&socket).await,
    }
}

/// Human or JSON logs on stderr; `RUST_LOG` filters (default info). Colour only on a terminal:
/// escape codes in captured logs break scraping (field note 9).
fn init_logging(format: LogFormat) -> eyre::Result<()> {
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env()
        .wrap_err("RUST_LOG is not a valid tracing filter")?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Human => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| eyre::eyre!("cannot install the log subscriber: {e}"))
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => warn!("SIGTERM received, shutting down"),
                _ = int.recv() => warn!("SIGINT received, shutting down"),
            }
        }
        _ => {
            warn!("cannot watch SIGTERM/SIGINT; stop the agent with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}
