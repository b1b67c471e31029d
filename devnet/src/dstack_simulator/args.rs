//! Command-line arguments of `attestmesh-devnet dstack-simulator`, and the command itself.
//! Flags are prefixed `dstack.` so that `up` can later flatten them beside other emulators'.

use std::future::Future;
use std::path::PathBuf;

use attestmesh_dstack::{ChainSignature, EthAddress, SecretKeyBytes, wire};
use tracing::info;

use super::LOG_TARGET;
use super::error::Result;
use super::keys::{DEFAULT_DEVNET_SEED, KeySource};
use super::server::{DstackSimulator, SimulatorConfig};

/// Run a dstack guest-agent simulator (`/GetKey`, `/GetQuote`, `/Info`) on a unix socket.
#[derive(Debug, Clone, clap::Args)]
pub struct DstackSimulatorArgs {
    /// Unix socket to serve on (a stale socket file there is replaced).
    #[arg(
        long = "dstack.socket",
        env = "ATTESTMESH_DSTACK_SOCKET",
        default_value = ".devnet/dstack.sock"
    )]
    pub socket: PathBuf,

    /// App id, 20-byte hex: the node's ERC-4337 member account address.
    #[arg(long = "dstack.app-id", env = "ATTESTMESH_DSTACK_APP_ID", value_parser = parse_address)]
    pub app_id: EthAddress,

    /// Devnet seed string the KMS root key is derived from (ignored with --dstack.kms-root-key
    /// or --dstack.app-key). The default is public: devnet only.
    #[arg(
        long = "dstack.devnet-seed",
        env = "ATTESTMESH_DSTACK_DEVNET_SEED",
        default_value = DEFAULT_DEVNET_SEED,
        hide_env_values = true
    )]
    pub devnet_seed: String,

    /// KMS root secret key, 32-byte hex, instead of deriving it from the seed.
    #[arg(
        long = "dstack.kms-root-key",
        env = "ATTESTMESH_DSTACK_KMS_ROOT_KEY",
        value_parser = parse_secret,
        hide_env_values = true,
        conflicts_with_all = ["devnet_seed", "app_key"]
    )]
    pub kms_root_key: Option<SecretKeyBytes>,

    /// App key, 32-byte hex, used as is (e.g. dstack's simulator fixture); needs
    /// --dstack.kms-signature.
    #[arg(
        long = "dstack.app-key",
        env = "ATTESTMESH_DSTACK_APP_KEY",
        value_parser = parse_secret,
        hide_env_values = true,
        requires = "kms_signature",
        conflicts_with = "devnet_seed"
    )]
    pub app_key: Option<SecretKeyBytes>,

    /// KMS root signature over the injected app key, 65-byte hex (`signature_chain[1]`).
    #[arg(
        long = "dstack.kms-signature",
        env = "ATTESTMESH_DSTACK_KMS_SIGNATURE",
        value_parser = parse_signature,
        requires = "app_key"
    )]
    pub kms_signature: Option<ChainSignature>,

    /// Instance id, hex (default: derived from the app id).
    #[arg(long = "dstack.instance-id", env = "ATTESTMESH_DSTACK_INSTANCE_ID", value_parser = parse_bytes)]
    pub instance_id: Option<Vec<u8>>,

    /// Compose hash, 32-byte hex (default: keccak256("attestmesh-devnet:compose-hash")).
    #[arg(long = "dstack.compose-hash", env = "ATTESTMESH_DSTACK_COMPOSE_HASH", value_parser = parse_bytes32)]
    pub compose_hash: Option<[u8; 32]>,

    /// Device id, 32-byte hex (default: keccak256("attestmesh-devnet:device-id")).
    #[arg(long = "dstack.device-id", env = "ATTESTMESH_DSTACK_DEVICE_ID", value_parser = parse_bytes32)]
    pub device_id: Option<[u8; 32]>,

    /// App name reported by /Info.
    #[arg(
        long = "dstack.app-name",
        env = "ATTESTMESH_DSTACK_APP_NAME",
        default_value = "attestmesh-node"
    )]
    pub app_name: String,
}

impl DstackSimulatorArgs {
    /// The simulator configuration these arguments describe.
    pub fn config(&self) -> SimulatorConfig {
        let keys = match (&self.app_key, &self.kms_signature, &self.kms_root_key) {
            (Some(app_key), Some(kms_signature), _) => KeySource::Fixture {
                app_key: app_key.clone(),
                kms_signature: *kms_signature,
            },
            (_, _, Some(root)) => KeySource::KmsRootKey(root.clone()),
            // clap enforces that app key and signature come together.
            _ => KeySource::DevnetSeed(self.devnet_seed.clone()),
        };
        let mut config = SimulatorConfig::new(self.app_id, keys);
        if let Some(instance_id) = &self.instance_id {
            config.instance_id.clone_from(instance_id);
        }
        if let Some(compose_hash) = self.compose_hash {
            config.compose_hash = compose_hash;
        }
        if let Some(device_id) = self.device_id {
            config.device_id = device_id;
        }
        config.app_name.clone_from(&self.app_name);
        config
    }
}

/// Serve until `shutdown` completes.
pub async fn run(args: DstackSimulatorArgs, shutdown: impl Future<Output = ()>) -> Result<()> {
    let handle = DstackSimulator::spawn(args.config(), &args.socket)?;
    info!(
        target: LOG_TARGET,
        socket = %args.socket.display(),
        app_id = %handle.app_id(),
        app_pubkey = %handle.app_pubkey(),
        app_address = %handle.app_pubkey().address(),
        kms_root = %handle.kms_root(),
        kms_root_address = %handle.kms_root().address(),
        "dstack simulator listening; set DSTACK_SIMULATOR_ENDPOINT to the socket path"
    );
    handle.run_until(shutdown).await?;
    info!(target: LOG_TARGET, "dstack simulator stopped");
    Ok(())
}

fn parse_address(value: &str) -> Result<EthAddress, String> {
    EthAddress::from_hex(value)
}

fn parse_secret(value: &str) -> Result<SecretKeyBytes, String> {
    wire::decode_hex_array::<32>(value).map(SecretKeyBytes::new)
}

fn parse_signature(value: &str) -> Result<ChainSignature, String> {
    ChainSignature::from_hex(value).map_err(|err| err.to_string())
}

fn parse_bytes(value: &str) -> Result<Vec<u8>, String> {
    wire::decode_hex(value)
}

fn parse_bytes32(value: &str) -> Result<[u8; 32], String> {
    wire::decode_hex_array::<32>(value)
}
