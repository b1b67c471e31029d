//! Command-line arguments of `attestmesh-devnet bundler`, and the command itself. Flags are
//! prefixed `bundler.` so that `up` can later flatten them beside other emulators'.

use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use attestmesh_bindings::ENTRY_POINT_V07;
use tracing::info;
use url::Url;

use super::LOG_TARGET;
use super::error::Result;
use super::jsonrpc_server::DEFAULT_MAX_BODY_BYTES;
use super::server::{Bundler, BundlerConfig};

/// Run the devnet ERC-4337 bundler (EntryPoint v0.7, one op per bundle) against a chain RPC.
#[derive(Debug, Clone, clap::Args)]
pub struct BundlerArgs {
    /// Address to listen on (loopback by default).
    #[arg(
        long = "bundler.listen",
        env = "ATTESTMESH_BUNDLER_LISTEN",
        default_value = "127.0.0.1:4337"
    )]
    pub listen: SocketAddr,

    /// The chain's JSON-RPC URL.
    #[arg(
        long = "bundler.rpc-url",
        env = "ATTESTMESH_BUNDLER_RPC_URL",
        default_value = "http://127.0.0.1:8545"
    )]
    pub rpc_url: Url,

    /// The chain id the RPC must serve.
    #[arg(
        long = "bundler.chain-id",
        env = "ATTESTMESH_BUNDLER_CHAIN_ID",
        default_value_t = 31337
    )]
    pub chain_id: u64,

    /// The executor's private key, 32-byte hex: it signs and pays for the bundles (on the
    /// devnet, anvil's dev key 2 or later; 0 is the operator, 1 the sponsor).
    #[arg(
        long = "bundler.executor-key",
        env = "ATTESTMESH_BUNDLER_EXECUTOR_KEY",
        hide_env_values = true,
        value_parser = KeyParser
    )]
    pub executor_key: PrivateKeySigner,

    /// Receives the ops' gas payments (default: the executor).
    #[arg(long = "bundler.beneficiary", env = "ATTESTMESH_BUNDLER_BENEFICIARY")]
    pub beneficiary: Option<Address>,

    /// The EntryPoint served (v0.7).
    #[arg(long = "bundler.entry-point", env = "ATTESTMESH_BUNDLER_ENTRY_POINT", default_value_t = ENTRY_POINT_V07)]
    pub entry_point: Address,

    /// Largest request body accepted, in bytes (larger ones get HTTP 413).
    #[arg(long = "bundler.max-body-bytes", env = "ATTESTMESH_BUNDLER_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
}

impl BundlerArgs {
    /// The bundler configuration these arguments describe.
    pub fn config(&self) -> BundlerConfig {
        BundlerConfig {
            rpc_url: self.rpc_url.clone(),
            chain_id: self.chain_id,
            executor: self.executor_key.clone(),
            beneficiary: self.beneficiary,
            entry_point: self.entry_point,
            listen: self.listen,
            max_body_bytes: self.max_body_bytes,
        }
    }
}

/// Serve until `shutdown` completes.
pub async fn run(args: BundlerArgs, shutdown: impl Future<Output = ()>) -> Result<()> {
    let handle = Bundler::spawn(args.config()).await?;
    info!(target: LOG_TARGET, url = %handle.url(), "bundler ready; point clients' bundler URL here");
    handle.run_until(shutdown).await?;
    info!(target: LOG_TARGET, "bundler stopped");
    Ok(())
}

/// Parses a private key flag. clap's own error would quote the value; a slightly mistyped key
/// is still a secret, so this error names the flag only.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyParser;

impl clap::builder::TypedValueParser for KeyParser {
    type Value = PrivateKeySigner;

    fn parse_ref(
        &self,
        _command: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> std::result::Result<PrivateKeySigner, clap::Error> {
        value.to_str().and_then(|text| PrivateKeySigner::from_str(text.trim()).ok()).ok_or_else(|| {
            let flag = arg.map_or_else(|| "the key".to_string(), ToString::to_string);
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!(
                    "invalid value for {flag}: not a secp256k1 private key (32 bytes of hex, with or without 0x); the value is not shown\n"
                ),
            )
        })
    }
}
