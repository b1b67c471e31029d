//! `attestmesh-indexer`: follows the ClusterFactory's clusters and pushes signed events.

use attestmesh_indexer::{IndexerArgs, LOG_TARGET, Shutdown};
use clap::Parser;
use eyre::WrapErr;
use tracing::info;

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
    attestmesh_service::logging::init(cli.args.log_format, "info")?;
    let config = cli.args.resolve().wrap_err("invalid configuration")?;
    let shutdown = Shutdown::new();
    shutdown.cancel_on_signals()?;
    attestmesh_indexer::run(config, shutdown, |listening| {
        info!(target: LOG_TARGET, grpc = %listening.grpc, health = %listening.health, "listening");
    })
    .await
    .wrap_err("the indexer stopped")
}
