//! The node's identity, derived from the TEE through the one dstack client. Nothing is stored:
//! a restart derives the same keys from the same app identity.
//!
//! | key | GetKey path | purpose |
//! |---|---|---|
//! | ERC-4337 owner (secp256k1); its chain is the attestation proof | `/attestmesh/v1/owner` | `attestmesh-owner` |
//! | Ed25519 identity (heartbeats, message signatures) | `/attestmesh/v1/identity` | `attestmesh-identity` |
//! | X25519 (sealed messages, CSK hand-off) | `/attestmesh/v1/x25519` | `attestmesh-x25519` |
//! | WireGuard static key | `/attestmesh/v1/wireguard` | `attestmesh-wireguard` |
//! | heartbeat Ed25519 key (published only in endpoint envelopes) | `/attestmesh/v1/heartbeat` | `attestmesh-heartbeat` |
//! | seed of the transport TLS certificate (stable fingerprint across restarts) | `/attestmesh/v1/tls` | `attestmesh-tls` |
//! | the CSK of epoch N (its originator only; see [`crate::csk`]) | `/attestmesh/v1/csk/epoch/N` | `attestmesh-csk` |
//!
//! Only the path changes a GetKey key; the purpose only labels the signature chain.

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use attestmesh_bindings::cluster::Cluster::NodeKeys;
use attestmesh_chain::proof::{ProofError, owner_signer};
use attestmesh_dstack::{AppInfo, DstackClient, DstackError, GetKeyResponse};
use tracing::info;
use zeroize::Zeroizing;

use crate::targets::DSTACK;

pub use attestmesh_chain::proof::{OWNER_PATH, OWNER_PURPOSE};
pub const IDENTITY_PATH: &str = "/attestmesh/v1/identity";
pub const X25519_PATH: &str = "/attestmesh/v1/x25519";
pub const WIREGUARD_PATH: &str = "/attestmesh/v1/wireguard";
pub const HEARTBEAT_PATH: &str = "/attestmesh/v1/heartbeat";
pub const TLS_PATH: &str = "/attestmesh/v1/tls";

/// Deriving the identity failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the dstack guest agent failed: {0}")]
    Dstack(#[from] DstackError),
    #[error("the owner key from /GetKey is unusable: {0}")]
    Owner(#[from] ProofError),
}

/// Every key of the node. Secrets are zeroized on drop and never printed.
pub struct Identity {
    /// The dstack app id = the node's member account.
    pub account: Address,
    pub info: AppInfo,
    /// The owner key's GetKey reply (its signature chain is the registration proof).
    pub owner_reply: GetKeyResponse,
    pub owner: PrivateKeySigner,
    pub ed25519: ed25519_dalek::SigningKey,
    pub x25519: x25519_dalek::StaticSecret,
    pub wireguard_secret: Zeroizing<[u8; 32]>,
    pub heartbeat: ed25519_dalek::SigningKey,
    pub tls_seed: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("account", &self.account)
            .field("owner", &self.owner.address())
            .field(
                "ed25519",
                &B256::from(self.ed25519.verifying_key().to_bytes()),
            )
            .field("x25519", &B256::from(self.x25519_public()))
            .field("wireguard", &B256::from(self.wireguard_public()))
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Derives every key through `dstack` and reads the app id from `/Info`.
    pub async fn derive(dstack: &DstackClient) -> Result<Self, IdentityError> {
        let info = dstack.info().await?;
        let account = Address::from(*info.app_id.as_bytes());
        let owner_reply = dstack.get_key(OWNER_PATH, OWNER_PURPOSE).await?;
        let owner = owner_signer(&owner_reply)?;
        let ed25519_seed = dstack.get_key(IDENTITY_PATH, "attestmesh-identity").await?;
        let x25519_seed = dstack.get_key(X25519_PATH, "attestmesh-x25519").await?;
        let wireguard_seed = dstack
            .get_key(WIREGUARD_PATH, "attestmesh-wireguard")
            .await?;
        let heartbeat_seed = dstack
            .get_key(HEARTBEAT_PATH, "attestmesh-heartbeat")
            .await?;
        let tls_seed = dstack.get_key(TLS_PATH, "attestmesh-tls").await?;
        let identity = Self {
            account,
            info,
            owner,
            ed25519: ed25519_dalek::SigningKey::from_bytes(ed25519_seed.key.as_bytes()),
            x25519: x25519_dalek::StaticSecret::from(*x25519_seed.key.as_bytes()),
            wireguard_secret: Zeroizing::new(clamp(*wireguard_seed.key.as_bytes())),
            heartbeat: ed25519_dalek::SigningKey::from_bytes(heartbeat_seed.key.as_bytes()),
            tls_seed: Zeroizing::new(*tls_seed.key.as_bytes()),
            owner_reply,
        };
        info!(
            target: DSTACK,
            account = %identity.account,
            owner = %identity.owner.address(),
            ed25519 = %B256::from(identity.ed25519.verifying_key().to_bytes()),
            x25519 = %B256::from(identity.x25519_public()),
            wireguard = %B256::from(identity.wireguard_public()),
            "identity derived from the TEE"
        );
        Ok(identity)
    }

    pub fn x25519_public(&self) -> [u8; 32] {
        x25519_dalek::PublicKey::from(&self.x25519).to_bytes()
    }

    /// The WireGuard public key (X25519 of the static secret).
    pub fn wireguard_public(&self) -> [u8; 32] {
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*self.wireguard_secret))
            .to_bytes()
    }

    pub fn ed25519_public(&self) -> [u8; 32] {
        self.ed25519.verifying_key().to_bytes()
    }

    /// The keys the node publishes on chain.
    pub fn node_keys(&self) -> NodeKeys {
        NodeKeys {
            x25519: B256::from(self.x25519_public()),
            ed25519: B256::from(self.ed25519_public()),
            wireguard: B256::from(self.wireguard_public()),
        }
    }
}

/// X25519 clamping, as WireGuard applies to a static key.
fn clamp(mut key: [u8; 32]) -> [u8; 32] {
    key[0] &= 248;
    key[31] &= 127;
    key[31] |= 64;
    key
}
