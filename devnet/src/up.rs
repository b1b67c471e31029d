//! `attestmesh-devnet up` and `down`: the whole devnet in the foreground, and the clean-up after
//! a crash.

use std::path::{Path, PathBuf};

use clap::Args;
use eyre::WrapErr;
use tracing::{info, warn};

use crate::local_chain::LocalChainConfig;
use crate::stack::{Stack, StackConfig};

/// Flags of `up`.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// How many nodes (dstack simulators and member accounts) to prepare.
    #[arg(long = "nodes", env = "NODES", default_value_t = 3)]
    pub nodes: usize,
    /// Seconds between blocks (Base makes one every 2 s).
    #[arg(long = "chain.block-time", default_value_t = 2)]
    pub block_time: u64,
    /// anvil's port.
    #[arg(long = "chain.port", default_value_t = 8545)]
    pub port: u16,
    /// The chain id (8453 mimics Base).
    #[arg(long = "chain.id", default_value_t = 31337)]
    pub chain_id: u64,
    /// Bundler port (loopback).
    #[arg(long = "bundler.port", default_value_t = 4337)]
    pub bundler_port: u16,
    /// Gas manager port (loopback).
    #[arg(long = "gas-manager.port", default_value_t = 4338)]
    pub gas_manager_port: u16,
    /// Paymaster webhook port (loopback).
    #[arg(long = "webhook.port", default_value_t = 8787)]
    pub webhook_port: u16,
    /// Gateway emulator port (loopback).
    #[arg(long = "gateway.port", default_value_t = 8443)]
    pub gateway_port: u16,
    /// Where sockets, the gateway CA, endpoints.json and the pid file go.
    #[arg(long = "state-dir", default_value = ".devnet")]
    pub state_dir: PathBuf,
}

/// Flags of `down`.
#[derive(Debug, Clone, Args)]
pub struct DownArgs {
    #[arg(long = "state-dir", default_value = ".devnet")]
    pub state_dir: PathBuf,
}

const PID_FILE: &str = "pids";
const ENDPOINTS_FILE: &str = "endpoints.json";

/// Brings the devnet up, prints where everything is, and runs until `shutdown`.
pub async fn up(args: UpArgs, shutdown: impl Future<Output = ()>) -> eyre::Result<()> {
    if args.state_dir.join(PID_FILE).exists() {
        warn!(target: "attestmesh::devnet", "a previous devnet left {}; cleaning it up first", args.state_dir.join(PID_FILE).display());
        down(DownArgs {
            state_dir: args.state_dir.clone(),
        })?;
    }
    let mut config = StackConfig::new(&args.state_dir);
    config.chain = LocalChainConfig {
        block_time: Some(args.block_time),
        chain_id: args.chain_id,
        genesis_block: None,
        port: Some(args.port),
        host: None,
        fork_url: None,
    };
    let loopback = |port| std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port));
    config.bundler_listen = loopback(args.bundler_port);
    config.gas_manager_listen = loopback(args.gas_manager_port);
    config.webhook_listen = loopback(args.webhook_port);
    config.gateway_listen = loopback(args.gateway_port);
    println!(
        "[devnet] starting anvil (chain {}, {} s blocks) and deploying the contracts...",
        args.chain_id, args.block_time
    );
    let mut stack = Stack::start(config)
        .await
        .wrap_err("the devnet did not come up")?;
    std::fs::write(
        args.state_dir.join(PID_FILE),
        format!("{}\n", stack.chain.anvil_pid()),
    )
    .wrap_err("cannot write the pid file")?;
    println!("[devnet] services up; preparing {} node(s)...", args.nodes);
    let names: Vec<String> = (1..=args.nodes).map(|i| format!("node-{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    stack
        .add_nodes(&refs)
        .await
        .wrap_err("cannot prepare the nodes")?;
    for (i, node) in stack.nodes.iter().enumerate() {
        let i = i + 1;
        println!(
            "[devnet]   node-{i}: member account {} (dstack app id), dstack socket {}",
            node.account,
            node.dstack_socket.display()
        );
    }
    let endpoints = stack.endpoints();
    let path = args.state_dir.join(ENDPOINTS_FILE);
    std::fs::write(&path, serde_json::to_string_pretty(&endpoints)?)
        .wrap_err("cannot write endpoints.json")?;
    print_summary(&endpoints, &path);
    shutdown.await;
    info!(target: "attestmesh::devnet", "stopping the devnet");
    drop(stack);
    let _ = std::fs::remove_file(args.state_dir.join(PID_FILE));
    println!("[devnet] stopped");
    Ok(())
}

fn print_summary(endpoints: &serde_json::Value, path: &Path) {
    let get = |pointer: &str| {
        endpoints
            .pointer(pointer)
            .map(|v| v.to_string().trim_matches('"').to_string())
            .unwrap_or_default()
    };
    println!();
    println!("AttestMesh devnet is up (Ctrl-C stops everything):");
    println!(
        "  chain RPC        {}  (chain {})",
        get("/chain/rpcUrl"),
        get("/chain/chainId")
    );
    println!("  EntryPoint v0.7  {}", get("/contracts/entryPoint"));
    println!("  cluster          {}", get("/contracts/cluster"));
    println!("  factory          {}", get("/contracts/clusterFactory"));
    println!(
        "  paymaster        {}",
        get("/contracts/verifyingPaymaster")
    );
    println!("  bundler          {}", get("/services/bundler"));
    println!(
        "  gas manager      {}  (policy {})",
        get("/services/gasManager"),
        get("/services/gasManagerPolicyId")
    );
    println!("  webhook          {}", get("/services/webhook"));
    println!(
        "  gateway          {}  (*.{})",
        get("/services/gateway"),
        get("/services/gatewayDomain")
    );
    println!("  endpoints file   {}", path.display());
}

/// Stops what a crashed `up` left running (by the pid file) and removes its files.
pub fn down(args: DownArgs) -> eyre::Result<()> {
    let pid_file = args.state_dir.join(PID_FILE);
    match std::fs::read_to_string(&pid_file) {
        Ok(text) => {
            for pid in text
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                let status = std::process::Command::new("kill")
                    .arg(pid.to_string())
                    .status();
                match status {
                    Ok(s) if s.success() => println!("[devnet] stopped process {pid}"),
                    _ => println!("[devnet] process {pid} was not running"),
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("[devnet] no pid file: nothing was left running")
        }
        Err(e) => return Err(e).wrap_err_with(|| format!("cannot read {}", pid_file.display())),
    }
    if args.state_dir.exists() {
        for entry in std::fs::read_dir(&args.state_dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.ends_with(".sock")
                || name == PID_FILE
                || name == ENDPOINTS_FILE
                || name == "gateway-ca.pem"
            {
                std::fs::remove_file(&path)
                    .wrap_err_with(|| format!("cannot remove {}", path.display()))?;
            }
        }
    }
    Ok(())
}
