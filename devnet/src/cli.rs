//! The `attestmesh-devnet` command line: one subcommand per stand-in or devnet action.

use clap::{Parser, Subcommand};
use eyre::WrapErr;

use crate::{bundler, dstack_simulator, gas_manager, gateway, up};

/// AttestMesh local devnet.
#[derive(Debug, Parser)]
#[command(name = "attestmesh-devnet", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bring the whole devnet up (anvil with 2 s blocks, EntryPoint v0.7, the contracts, one
    /// cluster, webhook, bundler, gas manager, gateway, a dstack simulator per node), write
    /// `.devnet/endpoints.json`, and run until interrupted.
    Up(up::UpArgs),
    /// Stop what a crashed `up` left running and remove its files.
    Down(up::DownArgs),
    /// Run a dstack guest-agent simulator on a unix socket until interrupted.
    DstackSimulator(dstack_simulator::DstackSimulatorArgs),
    /// Run a dstack gateway emulator (SNI router, TLS passthrough / termination) until
    /// interrupted; SIGHUP re-reads the routes file.
    Gateway(gateway::GatewayArgs),
    /// Run the devnet ERC-4337 bundler (EntryPoint v0.7) until interrupted.
    // Boxed: parsed keys and URLs make these arguments ten times larger than the others.
    Bundler(Box<bundler::BundlerArgs>),
    /// Run the gas manager emulator (Alchemy gas manager / ERC-7677 paymaster service) until
    /// interrupted.
    GasManager(Box<gas_manager::GasManagerArgs>),
}

/// Run the parsed command line.
pub async fn run(cli: Cli) -> eyre::Result<()> {
    attestmesh_service::logging::init(attestmesh_service::LogFormat::Human, "info")?;
    match cli.command {
        Command::Up(args) => up::up(args, attestmesh_service::shutdown::signals()?)
            .await
            .wrap_err("devnet up failed"),
        Command::Down(args) => up::down(args).wrap_err("devnet down failed"),
        Command::DstackSimulator(args) => {
            dstack_simulator::run(args, attestmesh_service::shutdown::signals()?)
                .await
                .wrap_err("dstack-simulator failed")
        }
        Command::Gateway(args) => gateway::run(args, attestmesh_service::shutdown::signals()?)
            .await
            .wrap_err("gateway failed"),
        Command::Bundler(args) => bundler::run(*args, attestmesh_service::shutdown::signals()?)
            .await
            .wrap_err("bundler failed"),
        Command::GasManager(args) => {
            gas_manager::run(*args, attestmesh_service::shutdown::signals()?)
                .await
                .wrap_err("gas-manager failed")
        }
    }
}
