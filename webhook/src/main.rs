//! `attestmesh-webhook`: see the library's `cli` module.

use clap::Parser;

#[tokio::main]
async fn main() -> eyre::Result<()> {
    attestmesh_webhook::cli::run(attestmesh_webhook::cli::Cli::parse()).await
}
