//! The command line of the `bundler` and `gas-manager` subcommands (loopback defaults, required
//! flags, no secrets in Debug or errors), and the real binaries serving until SIGTERM.

use alloy::primitives::{Address, U256};
use alloy::signers::local::PrivateKeySigner;
use attestmesh_bindings::ENTRY_POINT_V07;
use attestmesh_devnet::bundler::BundlerArgs;
use attestmesh_devnet::cli::{Cli, Command};
use attestmesh_devnet::gas_manager::{
    DEFAULT_MAX_COST_PER_OP_WEI, DEFAULT_VALIDITY, GasManagerArgs,
};
use attestmesh_devnet::local_chain::{LocalChain, LocalChainConfig};
use clap::Parser;
use serde_json::{Value, json};
use url::Url;

use super::{POLICY, SECRET};
use crate::ServiceProcess;

/// A well-formed key given on the command line; it must never be shown.
fn key() -> String {
    format!("0x{}", "11".repeat(32))
}

fn parse<S: AsRef<str>>(argv: &[S]) -> Result<Command, clap::Error> {
    Cli::try_parse_from(argv.iter().map(AsRef::as_ref)).map(|cli| cli.command)
}

/// `attestmesh-devnet bundler` with the key as its executor key.
fn bundler_args() -> BundlerArgs {
    let key = key();
    let Command::Bundler(args) = parse(&[
        "attestmesh-devnet",
        "bundler",
        "--bundler.executor-key",
        &key,
    ])
    .unwrap() else {
        panic!("not the bundler subcommand");
    };
    *args
}

/// `attestmesh-devnet gas-manager` with every required flag but the policy id, then `extra`.
fn gas_manager_argv(extra: &[&str]) -> Vec<String> {
    let mut argv: Vec<String> = [
        "attestmesh-devnet",
        "gas-manager",
        "--gas-manager.paymaster",
        &Address::repeat_byte(0x22).to_string(),
        "--gas-manager.sponsor-key",
        &key(),
        "--gas-manager.webhook-url",
        "http://127.0.0.1:8787/",
        "--gas-manager.webhook-secret",
        "s3cret-value",
    ]
    .map(String::from)
    .to_vec();
    argv.extend(extra.iter().map(|arg| arg.to_string()));
    argv
}

/// The policies "a" and "b".
const TWO_POLICIES: [&str; 4] = [
    "--gas-manager.policy-id",
    "a",
    "--gas-manager.policy-id",
    "b",
];

/// `attestmesh-devnet gas-manager` with the required flags, the policies "a" and "b", then `extra`.
fn gas_manager_args(extra: &[&str]) -> GasManagerArgs {
    let argv = gas_manager_argv(&[&TWO_POLICIES[..], extra].concat());
    let Command::GasManager(args) = parse(&argv).unwrap() else {
        panic!("not the gas-manager subcommand");
    };
    *args
}

#[test]
fn the_bundler_command_defaults_to_loopback_port_4337_chain_31337_and_entry_point_v07() {
    let config = bundler_args().config();
    assert_eq!(config.listen.to_string(), "127.0.0.1:4337");
    assert_eq!(
        (config.chain_id, config.entry_point),
        (31337, ENTRY_POINT_V07)
    );
}

#[test]
fn the_bundler_executor_key_stays_out_of_debug() {
    let args = bundler_args();
    assert!(
        !format!("{args:?}").contains(&"11".repeat(32)),
        "the executor key stays out of Debug"
    );
}

#[test]
fn a_malformed_bundler_executor_key_is_not_echoed_in_the_error() {
    let err = parse(&[
        "attestmesh-devnet",
        "bundler",
        "--bundler.executor-key",
        "0x1234",
    ])
    .unwrap_err();
    assert!(
        !err.to_string().contains("0x1234"),
        "a bad key is not echoed: {err}"
    );
}

#[test]
fn the_gas_manager_command_requires_a_policy_id() {
    let err = parse(&gas_manager_argv(&[])).unwrap_err();
    assert_eq!(
        err.kind(),
        clap::error::ErrorKind::MissingRequiredArgument,
        "a policy id is required"
    );
}

#[test]
fn the_gas_manager_command_serves_every_policy_id_given() {
    let config = gas_manager_args(&[]).config();
    assert_eq!(config.policy_ids, vec!["a".to_string(), "b".to_string()]);
}

#[test]
fn the_gas_manager_command_defaults_to_loopback_port_4338_and_the_default_validity_and_cost_cap() {
    let config = gas_manager_args(&[]).config();
    assert_eq!(config.listen.to_string(), "127.0.0.1:4338");
    assert_eq!(config.validity, DEFAULT_VALIDITY);
    assert_eq!(
        config.max_cost_per_op,
        U256::from(DEFAULT_MAX_COST_PER_OP_WEI)
    );
}

#[test]
fn the_max_cost_per_op_flag_sets_the_gas_managers_cost_cap() {
    let args = gas_manager_args(&["--gas-manager.max-cost-per-op-wei", "5000000000000000"]);
    assert_eq!(
        args.config().max_cost_per_op,
        U256::from(5_000_000_000_000_000u64)
    );
}

#[test]
fn the_gas_manager_webhook_secret_and_sponsor_key_stay_out_of_debug() {
    let args = gas_manager_args(&["--gas-manager.max-cost-per-op-wei", "5000000000000000"]);
    let config = gas_manager_args(&[]).config();
    let debug = format!("{args:?} {config:?}");
    assert!(
        !debug.contains("s3cret-value") && !debug.contains(&"11".repeat(32)),
        "{debug}"
    );
}

/// Starts the real binary with `args` (listening on port 0); returns it and the URL its
/// `ready` line names, once eth_chainId answers there.
async fn start_binary(args: &[&str], ready: &str) -> (ServiceProcess, Url) {
    let mut child = ServiceProcess::start(args);
    let url = Url::parse(&child.logged(ready, "url").await).unwrap();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}).to_string();
    let reply: Value = reqwest::Client::new()
        .post(url.clone())
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{args:?} does not answer at {url}: {e}: {}", child.stderr()))
        .json()
        .await
        .unwrap();
    assert_eq!(reply["result"], "0x7a69");
    (child, url)
}

fn hex_key(signer: &PrivateKeySigner) -> String {
    format!("0x{}", alloy::hex::encode(signer.to_bytes()))
}

/// SIGTERM: `child` exits 0 having logged `what`, with no ANSI codes and neither key in its log
/// (each message carries the log, so a failure shows which binary it was).
fn assert_exits_cleanly_with_clean_logs(
    child: ServiceProcess,
    what: &str,
    executor: &str,
    sponsor: &str,
) {
    let (status, stderr) = child.terminate();
    assert!(status.success(), "exit {status}: {stderr}");
    assert!(stderr.contains(what), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "no ANSI codes when not on a terminal (field note 9): {stderr}"
    );
    assert!(
        !stderr.contains(&executor[2..]) && !stderr.contains(&sponsor[2..]),
        "no keys in logs: {stderr}"
    );
}

/// The real `attestmesh-devnet bundler` and `gas-manager` (on that bundler) serve, and exit
/// cleanly on SIGTERM without ANSI codes or keys in their logs.
#[tokio::test(flavor = "multi_thread")]
async fn the_binaries_serve_until_sigterm_with_no_ansi_or_keys_in_their_logs() {
    let chain = LocalChain::start(LocalChainConfig::default())
        .await
        .unwrap();
    let executor = hex_key(&chain.dev_key(3).unwrap());
    let (bundler, bundler_url) = start_binary(
        &[
            "bundler",
            "--bundler.listen",
            "127.0.0.1:0",
            "--bundler.rpc-url",
            chain.rpc_url().as_str(),
            "--bundler.executor-key",
            &executor,
        ],
        "bundler ready",
    )
    .await;
    let sponsor = hex_key(chain.sponsor());
    let paymaster = chain.deployment().verifying_paymaster.to_string();
    let (gas_manager, _) = start_binary(
        &[
            "gas-manager",
            "--gas-manager.listen",
            "127.0.0.1:0",
            "--gas-manager.rpc-url",
            chain.rpc_url().as_str(),
            "--gas-manager.bundler-url",
            bundler_url.as_str(),
            "--gas-manager.paymaster",
            &paymaster,
            "--gas-manager.sponsor-key",
            &sponsor,
            "--gas-manager.webhook-url",
            "http://127.0.0.1:9/",
            "--gas-manager.webhook-secret",
            SECRET,
            "--gas-manager.policy-id",
            POLICY,
        ],
        "gas manager ready",
    )
    .await;

    for (child, what) in [
        (gas_manager, "gas manager listening"),
        (bundler, "bundler listening"),
    ] {
        assert_exits_cleanly_with_clean_logs(child, what, &executor, &sponsor);
    }
}
