//! `attestmesh-operator`: see the library's `cli` module.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    attestmesh_deploy::cli::run(attestmesh_deploy::cli::Cli::parse()).await
}
