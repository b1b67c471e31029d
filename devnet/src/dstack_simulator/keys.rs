//! The simulator's key hierarchy: a devnet KMS root issues one app key per app id, and `/GetKey`
//! derives path keys from the app key exactly as the real guest agent does.
//!
//! Devnet derivations (our choice; only `/GetKey`'s own derivation is dstack's):
//!
//! * **KMS root from a seed string**: `HKDF-SHA256(salt = "attestmesh-devnet-kms",
//!   ikm = UTF-8 seed, info = "kms-root-key")`, 32 bytes.
//! * **App key from the KMS root**: `HKDF-SHA256(salt = "attestmesh-devnet-kms",
//!   ikm = root secret key (32 bytes), info = app_id (20 raw bytes) ‖ "app-key")`, 32 bytes.
//! * **Valid scalars**: if an output is zero or not below the secp256k1 order (probability
//!   about 2^-128), the derivation is repeated with one counter byte appended to `info`
//!   (1, 2, ... 255) until it is valid. Deterministic, so a restart re-derives the same keys.
//!
//! The KMS root's signature over the app key (`signature_chain[1]`) does not depend on the
//! path, so it is made once at start, as the real KMS issues it once at boot.

use std::fmt;

use attestmesh_dstack::chain::{
    ChainSignature, PublicKey, SecretKeyBytes, SignatureChain, app_signature_message,
    derive_path_key, kms_signature_message,
};
use attestmesh_dstack::k256::ecdsa::SigningKey;
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroize;

use super::error::{Result, SimulatorError};

/// HKDF salt of the devnet KMS derivations.
pub const DEVNET_KMS_SALT: &[u8] = b"attestmesh-devnet-kms";
/// HKDF info of the KMS root derived from a seed string.
pub const KMS_ROOT_INFO: &[u8] = b"kms-root-key";
/// HKDF info suffix of an app key (after the 20-byte app id).
pub const APP_KEY_INFO_SUFFIX: &[u8] = b"app-key";
/// The devnet seed used when none is configured. Public knowledge: devnet only.
pub const DEFAULT_DEVNET_SEED: &str = "attestmesh-devnet";

/// Where the simulator's keys come from.
#[derive(Clone)]
pub enum KeySource {
    /// Derive the KMS root from a seed string, then the app key from the root.
    DevnetSeed(String),
    /// Use this KMS root secret key, then derive the app key from it.
    KmsRootKey(SecretKeyBytes),
    /// Use this app key as is, with a KMS signature made elsewhere (e.g. dstack's public
    /// simulator fixture, whose KMS root secret is not public). The KMS root is whatever the
    /// signature recovers to for the configured app id.
    Fixture {
        /// The app key.
        app_key: SecretKeyBytes,
        /// The KMS root's signature over `"dstack-kms-issued:" ‖ app_id ‖ app pubkey`.
        kms_signature: ChainSignature,
    },
}

// Hand-written so secrets never reach logs via `{:?}`.
impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DevnetSeed(_) => f.write_str("DevnetSeed(<redacted>)"),
            Self::KmsRootKey(_) => f.write_str("KmsRootKey(<redacted>)"),
            Self::Fixture { kms_signature, .. } => f
                .debug_struct("Fixture")
                .field("app_key", &"<redacted>")
                .field("kms_signature", kms_signature)
                .finish(),
        }
    }
}

/// HKDF-SHA256 into a valid secp256k1 secret key, retrying with a counter byte (see module docs).
fn hkdf_signing_key(ikm: &[u8], info: &[u8], what: &'static str) -> Result<SigningKey> {
    let hkdf = Hkdf::<Sha256>::new(Some(DEVNET_KMS_SALT), ikm);
    for counter in 0u8..=255 {
        let mut okm = [0u8; 32];
        let expanded = if counter == 0 {
            hkdf.expand(info, &mut okm)
        } else {
            hkdf.expand_multi_info(&[info, &[counter]], &mut okm)
        };
        expanded.map_err(|_| SimulatorError::NoValidScalar { what })?;
        let key = SigningKey::from_bytes(&okm.into());
        okm.zeroize();
        if let Ok(key) = key {
            return Ok(key);
        }
    }
    Err(SimulatorError::NoValidScalar { what })
}

/// The devnet KMS root key for a seed string.
pub fn kms_root_from_seed(seed: &str) -> Result<SigningKey> {
    hkdf_signing_key(seed.as_bytes(), KMS_ROOT_INFO, "the KMS root key")
}

/// The app key the devnet KMS root issues to `app_id`.
pub fn app_key_from_root(root: &SigningKey, app_id: &[u8; 20]) -> Result<SigningKey> {
    let mut info = Vec::with_capacity(20 + APP_KEY_INFO_SUFFIX.len());
    info.extend_from_slice(app_id);
    info.extend_from_slice(APP_KEY_INFO_SUFFIX);
    let mut root_bytes: [u8; 32] = root.to_bytes().into();
    let key = hkdf_signing_key(&root_bytes, &info, "the app key");
    root_bytes.zeroize();
    key
}

/// The keys one simulated CVM holds, resolved once at start.
pub(crate) struct SimulatorKeys {
    app_key: SigningKey,
    app_pubkey: PublicKey,
    kms_root: PublicKey,
    /// `signature_chain[1]`, identical for every path.
    kms_signature: ChainSignature,
}

impl SimulatorKeys {
    pub(crate) fn resolve(source: &KeySource, app_id: &[u8; 20]) -> Result<Self> {
        let (app_key, kms_signature) = match source {
            KeySource::DevnetSeed(seed) => issue(&kms_root_from_seed(seed)?, app_id)?,
            KeySource::KmsRootKey(root) => {
                let root = SigningKey::from_bytes(&(*root.as_bytes()).into()).map_err(|_| {
                    SimulatorError::InvalidKey {
                        what: "KMS root key",
                        reason: "zero or not below the secp256k1 group order".to_owned(),
                    }
                })?;
                issue(&root, app_id)?
            }
            KeySource::Fixture {
                app_key,
                kms_signature,
            } => {
                let app_key =
                    SigningKey::from_bytes(&(*app_key.as_bytes()).into()).map_err(|_| {
                        SimulatorError::InvalidKey {
                            what: "app key",
                            reason: "zero or not below the secp256k1 group order".to_owned(),
                        }
                    })?;
                (app_key, *kms_signature)
            }
        };
        let app_pubkey = PublicKey::from(*app_key.verifying_key());
        // For a fixture this recovers whichever root signed; for our own root it is a
        // self-check that the chain we hand out verifies.
        let kms_root = kms_signature
            .recover(&kms_signature_message(app_id, &app_pubkey))
            .map_err(|err| SimulatorError::InvalidKey {
                what: "KMS signature",
                reason: err.to_string(),
            })?;
        Ok(Self {
            app_key,
            app_pubkey,
            kms_root,
            kms_signature,
        })
    }

    pub(crate) fn app_pubkey(&self) -> PublicKey {
        self.app_pubkey
    }

    pub(crate) fn kms_root(&self) -> PublicKey {
        self.kms_root
    }

    /// `/GetKey`: the path key and its signature chain, as the real guest agent makes them.
    pub(crate) fn get_key(
        &self,
        path: &str,
        purpose: &str,
    ) -> Result<(SecretKeyBytes, SignatureChain)> {
        let mut app_key_bytes: [u8; 32] = self.app_key.to_bytes().into();
        let key = derive_path_key(&app_key_bytes, path);
        app_key_bytes.zeroize();
        let key = key?;
        let derived_pubkey = key.public_key()?;
        let app = ChainSignature::sign_prehash(
            &self.app_key,
            &app_signature_message(purpose, &derived_pubkey),
        )
        .map_err(sign_error)?;
        Ok((
            key,
            SignatureChain {
                app,
                kms: self.kms_signature,
            },
        ))
    }
}

/// The KMS root issues an app key: derive it and sign `"dstack-kms-issued:" ‖ app_id ‖ pubkey`.
fn issue(root: &SigningKey, app_id: &[u8; 20]) -> Result<(SigningKey, ChainSignature)> {
    let app_key = app_key_from_root(root, app_id)?;
    let app_pubkey = PublicKey::from(*app_key.verifying_key());
    let signature = ChainSignature::sign_prehash(root, &kms_signature_message(app_id, &app_pubkey))
        .map_err(sign_error)?;
    Ok((app_key, signature))
}

fn sign_error(source: attestmesh_dstack::SignatureError) -> SimulatorError {
    SimulatorError::Chain(attestmesh_dstack::DstackError::InvalidSignature {
        which: "simulator signing",
        source,
    })
}
