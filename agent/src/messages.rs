//! Sealed messages between members, carried on chain by `MessageFacet.send`.
//!
//! Format (version 1), decided here and documented in README:
//!
//! ```text
//! ciphertext on chain = 0x01 ‖ ephemeral X25519 public key (32) ‖ ChaCha20-Poly1305(key, nonce 0, plaintext)
//! key       = HKDF-SHA256(salt = ephemeral ‖ recipient X25519 public key,
//!                         ikm  = X25519(ephemeral secret, recipient public key),
//!                         info = "attestmesh/v1/sealed" ‖ context)
//! context   = chain id (8, BE) ‖ cluster (20) ‖ sender id (8) ‖ recipient id (8) ‖ envelope id (32)
//! plaintext = kind (1) ‖ Ed25519 signature (64) ‖ payload
//! signature = Ed25519(sender identity key, "attestmesh/v1/message" ‖ context ‖ kind ‖ payload)
//! ```
//!
//! A fresh ephemeral key per message makes nonce 0 safe. The context binds chain, cluster, both
//! members and the envelope id, so a ciphertext cannot be replayed to another recipient, under
//! another envelope id or as from another sender; the sender id in the context is the one the
//! chain's event names (authenticated by the sending account), and the signature must verify
//! against that member's on-chain Ed25519 key. (A sealed box rather than HPKE: one small,
//! explicit construction with the crates the mesh already uses.)

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use ed25519_dalek::{Signature, Signer, Verifier, VerifyingKey};
use hkdf::Hkdf;
use rand_core::{OsRng, RngCore};
use sha2::Sha256;
use x25519_dalek::{EphemeralSecret, PublicKey, StaticSecret};
use zeroize::Zeroizing;

/// The format version byte.
pub const VERSION: u8 = 1;
/// Bytes added around the payload: version, ephemeral key, AEAD tag, kind, signature.
pub const OVERHEAD: usize = 1 + 32 + 16 + 1 + 64;
/// The chain's cap on one ciphertext (MessageFacet.maxCiphertextSize).
pub const MAX_CIPHERTEXT: usize = 4096;
/// The largest payload an app may send.
pub const MAX_PAYLOAD: usize = MAX_CIPHERTEXT - OVERHEAD;

/// What a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// An application message (SendMessage / SubscribeMessages).
    App = 1,
    /// A node's endpoint envelope (gateway endpoint, heartbeat key) for the mesh.
    Endpoint = 2,
    /// The Cluster Shared Key, handed to a member over the mesh (never on chain).
    ClusterSharedKey = 3,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Kind::App),
            2 => Some(Kind::Endpoint),
            3 => Some(Kind::ClusterSharedKey),
            _ => None,
        }
    }
}

/// Who, where and which envelope: bound into the key and the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    pub chain_id: u64,
    pub cluster: [u8; 20],
    pub sender_id: u64,
    pub recipient_id: u64,
    pub envelope_id: [u8; 32],
}

impl Context {
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(76);
        out.extend_from_slice(&self.chain_id.to_be_bytes());
        out.extend_from_slice(&self.cluster);
        out.extend_from_slice(&self.sender_id.to_be_bytes());
        out.extend_from_slice(&self.recipient_id.to_be_bytes());
        out.extend_from_slice(&self.envelope_id);
        out
    }
}

/// Why a message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("payload of {size} bytes is over the {MAX_PAYLOAD}-byte limit")]
    TooLarge { size: usize },
    #[error("ciphertext is malformed: {0}")]
    Malformed(&'static str),
    #[error("ciphertext does not decrypt with this node's key (not for us, or tampered)")]
    Undecryptable,
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("signature does not verify against the sender's on-chain identity key")]
    BadSignature,
    #[error("the sender's on-chain identity key is not a valid Ed25519 key")]
    BadSenderKey,
}

fn derive_key(
    shared: &[u8; 32],
    ephemeral: &[u8; 32],
    recipient: &[u8; 32],
    context: &[u8],
) -> Zeroizing<[u8; 32]> {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(ephemeral);
    salt[32..].copy_from_slice(recipient);
    let mut info = b"attestmesh/v1/sealed".to_vec();
    info.extend_from_slice(context);
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes is always a valid HKDF-SHA256 output length.
    let _ = Hkdf::<Sha256>::new(Some(&salt), shared).expand(&info, key.as_mut());
    key
}

/// What the sender signs. It holds a copy of the payload (a CSK, for that kind), so it is
/// zeroized on drop like every plaintext buffer here.
fn signed_bytes(context: &[u8], kind: Kind, payload: &[u8]) -> Zeroizing<Vec<u8>> {
    const DOMAIN: &[u8] = b"attestmesh/v1/message";
    // Sized up front: a reallocation would leave a copy behind, unzeroized.
    let mut out = Zeroizing::new(Vec::with_capacity(
        DOMAIN.len() + context.len() + 1 + payload.len(),
    ));
    out.extend_from_slice(DOMAIN);
    out.extend_from_slice(context);
    out.push(kind as u8);
    out.extend_from_slice(payload);
    out
}

/// A random envelope id.
pub fn new_envelope_id() -> [u8; 32] {
    let mut id = [0u8; 32];
    OsRng.fill_bytes(&mut id);
    id
}

/// Seals `payload` for the recipient's X25519 key, signed by `sender`.
pub fn seal(
    sender: &ed25519_dalek::SigningKey,
    recipient_x25519: &[u8; 32],
    context: &Context,
    kind: Kind,
    payload: &[u8],
) -> Result<Vec<u8>, MessageError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(MessageError::TooLarge {
            size: payload.len(),
        });
    }
    let context_bytes = context.bytes();
    let signature = sender.sign(&signed_bytes(&context_bytes, kind, payload));
    let mut plaintext = Zeroizing::new(Vec::with_capacity(1 + 64 + payload.len()));
    plaintext.push(kind as u8);
    plaintext.extend_from_slice(&signature.to_bytes());
    plaintext.extend_from_slice(payload);

    let ephemeral = EphemeralSecret::random_from_rng(OsRng);
    let ephemeral_public = PublicKey::from(&ephemeral).to_bytes();
    let shared = ephemeral.diffie_hellman(&PublicKey::from(*recipient_x25519));
    let key = derive_key(
        shared.as_bytes(),
        &ephemeral_public,
        recipient_x25519,
        &context_bytes,
    );
    let cipher = ChaCha20Poly1305::new(&Key::from(*key));
    let sealed = cipher
        .encrypt(&Nonce::default(), plaintext.as_slice())
        .map_err(|_| MessageError::Malformed("encryption failed"))?;
    let mut out = Vec::with_capacity(1 + 32 + sealed.len());
    out.push(VERSION);
    out.extend_from_slice(&ephemeral_public);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens a ciphertext addressed to this node and authenticates its sender. The payload is the
/// decrypted buffer itself (no copy is left behind); for a payload that is a secret use
/// [`open_zeroizing`], which keeps it zeroized on drop.
pub fn open(
    recipient: &StaticSecret,
    sender_ed25519: &[u8; 32],
    context: &Context,
    ciphertext: &[u8],
) -> Result<(Kind, Vec<u8>), MessageError> {
    let (kind, mut payload) = open_zeroizing(recipient, sender_ed25519, context, ciphertext)?;
    Ok((kind, std::mem::take(&mut *payload)))
}

/// [`open`], with the payload in a buffer that is zeroized on drop (the CSK's hand-off).
pub fn open_zeroizing(
    recipient: &StaticSecret,
    sender_ed25519: &[u8; 32],
    context: &Context,
    ciphertext: &[u8],
) -> Result<(Kind, Zeroizing<Vec<u8>>), MessageError> {
    if ciphertext.len() < 1 + 32 + 16 + 1 + 64 {
        return Err(MessageError::Malformed("shorter than the fixed overhead"));
    }
    if ciphertext[0] != VERSION {
        return Err(MessageError::Malformed("unknown version"));
    }
    let mut ephemeral = [0u8; 32];
    ephemeral.copy_from_slice(&ciphertext[1..33]);
    let recipient_public = PublicKey::from(recipient).to_bytes();
    let shared = recipient.diffie_hellman(&PublicKey::from(ephemeral));
    let context_bytes = context.bytes();
    let key = derive_key(
        shared.as_bytes(),
        &ephemeral,
        &recipient_public,
        &context_bytes,
    );
    let cipher = ChaCha20Poly1305::new(&Key::from(*key));
    let mut plaintext = Zeroizing::new(
        cipher
            .decrypt(&Nonce::default(), &ciphertext[33..])
            .map_err(|_| MessageError::Undecryptable)?,
    );
    let kind = Kind::from_byte(plaintext[0]).ok_or(MessageError::UnknownKind(plaintext[0]))?;
    let mut signature = [0u8; 64];
    signature.copy_from_slice(&plaintext[1..65]);
    // The payload stays in the decrypted buffer (moved down in place, no copy).
    plaintext.drain(..65);
    let key = VerifyingKey::from_bytes(sender_ed25519).map_err(|_| MessageError::BadSenderKey)?;
    key.verify(
        &signed_bytes(&context_bytes, kind, &plaintext),
        &Signature::from_bytes(&signature),
    )
    .map_err(|_| MessageError::BadSignature)?;
    Ok((kind, plaintext))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> Context {
        Context {
            chain_id: 8453,
            cluster: [7; 20],
            sender_id: 1,
            recipient_id: 2,
            envelope_id: [9; 32],
        }
    }

    fn keys() -> (ed25519_dalek::SigningKey, StaticSecret) {
        (
            ed25519_dalek::SigningKey::from_bytes(&[1; 32]),
            StaticSecret::from([2; 32]),
        )
    }

    #[test]
    fn round_trip() {
        let (sender, recipient) = keys();
        let sealed = seal(
            &sender,
            &PublicKey::from(&recipient).to_bytes(),
            &context(),
            Kind::App,
            b"hello",
        )
        .unwrap();
        assert_eq!(sealed.len(), OVERHEAD + 5);
        let (kind, payload) = open(
            &recipient,
            &sender.verifying_key().to_bytes(),
            &context(),
            &sealed,
        )
        .unwrap();
        assert_eq!((kind, payload.as_slice()), (Kind::App, &b"hello"[..]));
    }

    #[test]
    fn other_context_sender_or_bytes_are_rejected() {
        let (sender, recipient) = keys();
        let sealed = seal(
            &sender,
            &PublicKey::from(&recipient).to_bytes(),
            &context(),
            Kind::App,
            b"hello",
        )
        .unwrap();
        let mut replayed = context();
        replayed.envelope_id = [8; 32];
        assert_eq!(
            open(
                &recipient,
                &sender.verifying_key().to_bytes(),
                &replayed,
                &sealed
            ),
            Err(MessageError::Undecryptable)
        );
        let impostor = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        assert_eq!(
            open(
                &recipient,
                &impostor.verifying_key().to_bytes(),
                &context(),
                &sealed
            ),
            Err(MessageError::BadSignature)
        );
        let mut tampered = sealed.clone();
        tampered[40] ^= 1;
        assert_eq!(
            open(
                &recipient,
                &sender.verifying_key().to_bytes(),
                &context(),
                &tampered
            ),
            Err(MessageError::Undecryptable)
        );
        assert!(matches!(
            open(
                &recipient,
                &sender.verifying_key().to_bytes(),
                &context(),
                &sealed[..10]
            ),
            Err(MessageError::Malformed(_))
        ));
    }

    /// Item 7 of issue 16: copies of a plaintext (the CSK, for its kind) were left in heap
    /// buffers that are freed without being wiped. Every buffer that holds one is `Zeroizing`:
    /// what is signed, and what `open_zeroizing` returns.
    #[test]
    fn plaintext_buffers_are_zeroized_on_drop() {
        let (sender, recipient) = keys();
        let key = [0x5a; 32];
        let signed: Zeroizing<Vec<u8>> = signed_bytes(b"context", Kind::ClusterSharedKey, &key);
        assert!(signed.ends_with(&key));
        let sealed = seal(
            &sender,
            &PublicKey::from(&recipient).to_bytes(),
            &context(),
            Kind::ClusterSharedKey,
            &key,
        )
        .unwrap();
        let (kind, payload): (Kind, Zeroizing<Vec<u8>>) = open_zeroizing(
            &recipient,
            &sender.verifying_key().to_bytes(),
            &context(),
            &sealed,
        )
        .unwrap();
        assert_eq!(
            (kind, payload.as_slice()),
            (Kind::ClusterSharedKey, &key[..])
        );
    }

    #[test]
    fn payload_limit_fits_the_chain_cap() {
        let (sender, recipient) = keys();
        let max = vec![0u8; MAX_PAYLOAD];
        let sealed = seal(
            &sender,
            &PublicKey::from(&recipient).to_bytes(),
            &context(),
            Kind::App,
            &max,
        )
        .unwrap();
        assert_eq!(sealed.len(), MAX_CIPHERTEXT);
        assert!(matches!(
            seal(
                &sender,
                &PublicKey::from(&recipient).to_bytes(),
                &context(),
                Kind::App,
                &[0u8; MAX_PAYLOAD + 1]
            ),
            Err(MessageError::TooLarge { .. })
        ));
    }
}
