//! dstack's key derivation and signature chain: the cryptography behind `/GetKey`.
//!
//! The guest agent derives `key = HKDF-SHA256(salt = "RATLS", ikm = app key, info = path)` and
//! proves where it came from with two recoverable secp256k1 signatures:
//!
//! * `signature_chain[0]`: the **app key** signs
//!   `keccak256(purpose ‖ ":" ‖ lowercase_hex(compressed derived pubkey))`;
//! * `signature_chain[1]`: the **KMS root key** signs
//!   `keccak256("dstack-kms-issued:" ‖ app_id (20 raw bytes) ‖ compressed app pubkey (33 bytes))`.
//!
//! Signatures are `r ‖ s ‖ v` with `v ∈ {0, 1}` and low `s`. Recovering both signatures yields
//! the app pubkey and the KMS root pubkey; the chain is only worth something once the caller
//! checks that root against its allowlist ([`RecoveredChain::ensure_kms_root`]), because any
//! tampering changes the recovered keys rather than making recovery fail.
//!
//! The same functions sign (for the devnet simulator) and verify (for everyone else), so the
//! message layout exists once in the project; the dstack test vector pins it to the real format.

use std::fmt;

use hkdf::Hkdf;
use k256::ecdsa::{RecoveryId, Signature, SigningKey, VerifyingKey};
use sha2::Sha256;
use sha3::{Digest, Keccak256};
use zeroize::Zeroize;

pub use crate::error::SignatureError;
use crate::error::{DstackError, Result};
use crate::wire;

/// HKDF salt of `/GetKey` derivations.
pub const GET_KEY_HKDF_SALT: &[u8] = b"RATLS";

/// Domain prefix of the KMS root's signature over an app key.
pub const KMS_ISSUED_PREFIX: &[u8] = b"dstack-kms-issued:";

/// keccak256, as Ethereum and dstack use it.
pub fn keccak256(data: impl AsRef<[u8]>) -> [u8; 32] {
    Keccak256::digest(data.as_ref()).into()
}

/// A 32-byte secret key from `/GetKey` (or any key of the chain). Zeroized on drop; its
/// `Debug` never prints the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKeyBytes([u8; 32]);

impl SecretKeyBytes {
    /// Wrap raw key bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes. Handle with care: never log them.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key as a secp256k1 signing key (dstack uses the derived bytes directly as a scalar).
    pub fn signing_key(&self) -> Result<SigningKey> {
        SigningKey::from_bytes(&self.0.into()).map_err(|_| DstackError::InvalidSecretKey {
            what: "the derived key",
        })
    }

    /// The secp256k1 public key of this secret key.
    pub fn public_key(&self) -> Result<PublicKey> {
        Ok(PublicKey::from(*self.signing_key()?.verifying_key()))
    }
}

impl Drop for SecretKeyBytes {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretKeyBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKeyBytes(<redacted>)")
    }
}

/// `key = HKDF-SHA256(salt = "RATLS", ikm = app key, info = path, L = 32)`, as `/GetKey` does.
pub fn derive_path_key(app_key: &[u8; 32], path: &str) -> Result<SecretKeyBytes> {
    let hkdf = Hkdf::<Sha256>::new(Some(GET_KEY_HKDF_SALT), app_key);
    let mut okm = [0u8; 32];
    hkdf.expand(path.as_bytes(), &mut okm)
        .map_err(|_| DstackError::Kdf {
            what: "a GetKey path key",
        })?;
    Ok(SecretKeyBytes(okm))
}

/// A secp256k1 public key; `Display` is the compressed SEC1 form in lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parse a SEC1 public key (compressed or uncompressed).
    pub fn from_sec1_bytes(bytes: &[u8]) -> Result<Self, String> {
        VerifyingKey::from_sec1_bytes(bytes)
            .map(Self)
            .map_err(|_| format!("{} bytes are not a secp256k1 public key", bytes.len()))
    }

    /// Parse a SEC1 public key from hex (optional `0x`).
    pub fn from_sec1_hex(value: &str) -> Result<Self, String> {
        Self::from_sec1_bytes(&wire::decode_hex(value)?)
    }

    /// The 33-byte compressed SEC1 encoding (what dstack signs over and Solidity decompresses).
    pub fn compressed(&self) -> [u8; 33] {
        let point = self.0.to_encoded_point(true);
        let mut out = [0u8; 33];
        // A compressed point of secp256k1 is always 33 bytes.
        out.copy_from_slice(point.as_bytes());
        out
    }

    /// The Ethereum address: the last 20 bytes of keccak256 of the uncompressed x ‖ y.
    pub fn address(&self) -> EthAddress {
        let point = self.0.to_encoded_point(false);
        // Skip the 0x04 SEC1 tag; an uncompressed point is 65 bytes.
        let hash = keccak256(&point.as_bytes()[1..]);
        let mut out = [0u8; 20];
        out.copy_from_slice(&hash[12..]);
        EthAddress(out)
    }

    /// The underlying k256 key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.0
    }
}

impl From<VerifyingKey> for PublicKey {
    fn from(key: VerifyingKey) -> Self {
        Self(key)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.compressed()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// A 20-byte Ethereum address (or dstack app id); `Display` is `0x` + lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EthAddress(pub [u8; 20]);

impl EthAddress {
    /// Parse 20 bytes of hex (optional `0x`, any case).
    pub fn from_hex(value: &str) -> Result<Self, String> {
        wire::decode_hex_array::<20>(value).map(Self)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }
}

impl From<[u8; 20]> for EthAddress {
    fn from(bytes: [u8; 20]) -> Self {
        Self(bytes)
    }
}

impl fmt::Display for EthAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}

impl fmt::Debug for EthAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EthAddress({self})")
    }
}

/// One recoverable signature of the chain, kept in dstack's form (`v ∈ {0, 1}`, low `s`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ChainSignature {
    signature: Signature,
    recovery_id: RecoveryId,
}

impl ChainSignature {
    /// Parse 65 bytes `r ‖ s ‖ v`. `v` may be dstack's 0/1 or Ethereum's 27/28; it is
    /// normalized to 0/1. High-s signatures are rejected (dstack never emits them).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SignatureError> {
        let bytes: &[u8; 65] = bytes
            .try_into()
            .map_err(|_| SignatureError::Length(bytes.len()))?;
        let v = bytes[64];
        let parity = match v {
            0 | 1 => v,
            27 | 28 => v - 27,
            other => return Err(SignatureError::RecoveryByte(other)),
        };
        let signature = Signature::from_slice(&bytes[..64]).map_err(|_| SignatureError::Scalar)?;
        // `normalize_s` returns Some only when s was high.
        if signature.normalize_s().is_some() {
            return Err(SignatureError::HighS);
        }
        let recovery_id = RecoveryId::from_byte(parity).ok_or(SignatureError::RecoveryByte(v))?;
        Ok(Self {
            signature,
            recovery_id,
        })
    }

    /// Parse from hex (optional `0x`).
    pub fn from_hex(value: &str) -> Result<Self, SignatureError> {
        Self::from_bytes(&wire::decode_hex(value).map_err(SignatureError::Hex)?)
    }

    /// Sign a 32-byte prehash the way dstack does: RFC 6979 nonce, low-s, `v ∈ {0, 1}`.
    pub fn sign_prehash(key: &SigningKey, prehash: &[u8; 32]) -> Result<Self, SignatureError> {
        let (signature, recovery_id) = key
            .sign_prehash_recoverable(prehash)
            .map_err(|err| SignatureError::Sign(err.to_string()))?;
        // k256 already signs low-s; normalize anyway so the invariant holds by construction.
        let (signature, recovery_id) = match signature.normalize_s() {
            Some(low) => (
                low,
                RecoveryId::new(!recovery_id.is_y_odd(), recovery_id.is_x_reduced()),
            ),
            None => (signature, recovery_id),
        };
        Ok(Self {
            signature,
            recovery_id,
        })
    }

    /// The recovery id, 0 or 1 (dstack's `v`).
    pub fn recovery_id(&self) -> u8 {
        self.recovery_id.to_byte()
    }

    /// `r ‖ s ‖ v` with `v ∈ {0, 1}`: what the guest agent sends.
    pub fn to_bytes(&self) -> [u8; 65] {
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&self.signature.to_bytes());
        out[64] = self.recovery_id();
        out
    }

    /// `r ‖ s ‖ v` with `v ∈ {27, 28}`: what `ecrecover` and OpenZeppelin's `ECDSA.recover`
    /// accept (field note 3: OpenZeppelin reverts on `v < 27`).
    pub fn to_eth_bytes(&self) -> [u8; 65] {
        let mut out = self.to_bytes();
        out[64] += 27;
        out
    }

    /// Lowercase hex of [`Self::to_bytes`], no `0x`.
    pub fn to_hex(&self) -> String {
        hex::encode(self.to_bytes())
    }

    /// Recover the public key that signed `prehash`.
    pub fn recover(&self, prehash: &[u8; 32]) -> Result<PublicKey, SignatureError> {
        VerifyingKey::recover_from_prehash(prehash, &self.signature, self.recovery_id)
            .map(PublicKey)
            .map_err(|_| SignatureError::Recovery)
    }
}

impl fmt::Debug for ChainSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainSignature({})", self.to_hex())
    }
}

/// `signature_chain` of a `/GetKey` response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureChain {
    /// `signature_chain[0]`: the app key over the derived pubkey and purpose.
    pub app: ChainSignature,
    /// `signature_chain[1]`: the KMS root over the app id and app pubkey.
    pub kms: ChainSignature,
}

/// Names used in errors, so a failure says which link broke.
const WHICH_APP: &str = "signature_chain[0] (app key over derived key)";
const WHICH_KMS: &str = "signature_chain[1] (KMS root over app key)";

impl SignatureChain {
    /// Parse the two hex signatures as they come on the wire.
    pub fn from_hex_list(list: &[String]) -> Result<Self> {
        let [app, kms] = list else {
            return Err(DstackError::InvalidResponse {
                endpoint: "/GetKey",
                reason: format!(
                    "signature_chain has {} entries, expected exactly 2",
                    list.len()
                ),
            });
        };
        let parse = |which, value: &str| {
            ChainSignature::from_hex(value)
                .map_err(|source| DstackError::InvalidSignature { which, source })
        };
        Ok(Self {
            app: parse(WHICH_APP, app)?,
            kms: parse(WHICH_KMS, kms)?,
        })
    }

    /// The wire form: two lowercase hex strings, `v ∈ {0, 1}`.
    pub fn to_hex_list(&self) -> Vec<String> {
        vec![self.app.to_hex(), self.kms.to_hex()]
    }

    /// Both signatures with Ethereum-style `v ∈ {27, 28}`, for on-chain verification.
    pub fn to_eth_bytes(&self) -> [[u8; 65]; 2] {
        [self.app.to_eth_bytes(), self.kms.to_eth_bytes()]
    }
}

/// The message the app key signs: `keccak256(purpose ‖ ":" ‖ lowercase_hex(compressed derived))`.
pub fn app_signature_message(purpose: &str, derived: &PublicKey) -> [u8; 32] {
    let text = format!("{purpose}:{}", hex::encode(derived.compressed()));
    keccak256(text.as_bytes())
}

/// The message the KMS root signs:
/// `keccak256("dstack-kms-issued:" ‖ app_id (20 bytes) ‖ compressed app pubkey (33 bytes))`.
pub fn kms_signature_message(app_id: &[u8; 20], app_pubkey: &PublicKey) -> [u8; 32] {
    let mut message = Vec::with_capacity(KMS_ISSUED_PREFIX.len() + 20 + 33);
    message.extend_from_slice(KMS_ISSUED_PREFIX);
    message.extend_from_slice(app_id);
    message.extend_from_slice(&app_pubkey.compressed());
    keccak256(message)
}

/// The keys a signature chain recovers to. Internally consistent by construction; trusted only
/// after [`RecoveredChain::ensure_kms_root`] (or an equivalent allowlist check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveredChain {
    /// The derived key's public key (what `/GetKey` returned, as a pubkey).
    pub derived: PublicKey,
    /// The app key's public key, recovered from `signature_chain[0]`.
    pub app: PublicKey,
    /// The KMS root's public key, recovered from `signature_chain[1]`.
    pub kms_root: PublicKey,
}

impl RecoveredChain {
    /// Fail unless the chain was issued by `trusted`.
    pub fn ensure_kms_root(&self, trusted: &PublicKey) -> Result<()> {
        if &self.kms_root == trusted {
            return Ok(());
        }
        Err(self.untrusted(trusted.to_string()))
    }

    /// Fail unless the chain was issued by the KMS root with Ethereum address `trusted`.
    pub fn ensure_kms_root_address(&self, trusted: &EthAddress) -> Result<()> {
        if &self.kms_root.address() == trusted {
            return Ok(());
        }
        Err(self.untrusted(trusted.to_string()))
    }

    fn untrusted(&self, expected: String) -> DstackError {
        DstackError::UntrustedKmsRoot {
            recovered: self.kms_root.to_string(),
            recovered_address: self.kms_root.address().to_string(),
            expected,
        }
    }
}

/// Recover the app pubkey and KMS root from `chain`, given the derived public key.
pub fn recover_signature_chain(
    app_id: &[u8; 20],
    purpose: &str,
    derived: &PublicKey,
    chain: &SignatureChain,
) -> Result<RecoveredChain> {
    let app = chain
        .app
        .recover(&app_signature_message(purpose, derived))
        .map_err(|source| DstackError::InvalidSignature {
            which: WHICH_APP,
            source,
        })?;
    let kms_root = chain
        .kms
        .recover(&kms_signature_message(app_id, &app))
        .map_err(|source| DstackError::InvalidSignature {
            which: WHICH_KMS,
            source,
        })?;
    Ok(RecoveredChain {
        derived: *derived,
        app,
        kms_root,
    })
}

/// [`recover_signature_chain`] starting from the derived secret key, as returned by `/GetKey`.
pub fn recover_signature_chain_for_secret(
    app_id: &[u8; 20],
    purpose: &str,
    derived_secret: &SecretKeyBytes,
    chain: &SignatureChain,
) -> Result<RecoveredChain> {
    recover_signature_chain(app_id, purpose, &derived_secret.public_key()?, chain)
}
