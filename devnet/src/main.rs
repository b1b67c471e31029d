//! `attestmesh-devnet`: see the library's `cli` module.

use clap::Parser;

#[tokio::main]
async fn main() -> eyre::Result<()> {
    attestmesh_devnet::cli::run(attestmesh_devnet::cli::Cli::parse()).await
}
