//! `attestmesh-testbed`: see the library's `cli` module.

use clap::Parser;

#[tokio::main]
async fn main() -> eyre::Result<()> {
    attestmesh_testbed::cli::run(attestmesh_testbed::cli::Cli::parse()).await
}
