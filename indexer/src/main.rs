//! `attestmesh-indexer`: follows the ClusterFactory's clusters and pushes signed events.

use std::io::IsTerminal;

use attestmesh_indexer::{IndexerArgs, LOG_TARGET, LogFormat, Shutdown};
use clap::Parser;
use eyre::WrapErr;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

/// The AttestMesh indexer.
#[derive(Debug, Parser)]
#[command(name = "attestmesh-indexer", version, about)]
struct Cli {
    #[command(flatten)]
    args: IndexerArgs,
}

#[tokio::main]
async fn main() -> eyre::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.args.log_format)?;
    let config = cli.args.resolve().wrap_err("invalid configuration")?;
    let shutdown = Shutdown::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        signal.cancel();
    });
    attestmesh_indexer::run(config, shutdown, |listening| {
        info!(target: LOG_TARGET, grpc = %listening.grpc, health = %listening.health, "listening");
    })
    .await
    .wrap_err("the indexer stopped")
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
                _ = term.recv() => warn!(target: LOG_TARGET, "SIGTERM received, shutting down"),
                _ = int.recv() => warn!(target: LOG_TARGET, "SIGINT received, shutting down"),
            }
        }
        _ => {
            warn!(target: LOG_TARGET, "cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}
