//! The registration proof, built from a dstack `/GetKey` reply: the derived key signs the
//! cluster's binding digest; the reply's signature chain links that key to the app key and the
//! KMS root.

use alloy::primitives::{Address, B256, Bytes};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use attestmesh_bindings::cluster::Cluster::{DstackProof, NodeKeys};
use attestmesh_bindings::member_account::MemberAccount;
use attestmesh_dstack::GetKeyResponse;

/// The `/GetKey` path of the node's owner key, the key whose signature chain is the proof.
pub const OWNER_PATH: &str = "/attestmesh/v1/owner";
/// The purpose the owner key is derived for (part of what the app key signs).
pub const OWNER_PURPOSE: &str = "attestmesh-owner";

/// Why a proof could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error("the /GetKey reply's signature chain does not recover: {0}")]
    Chain(#[source] attestmesh_dstack::DstackError),
    #[error("the /GetKey key is not a valid secp256k1 key: {0}")]
    Key(String),
    #[error("signing the registration digest failed: {0}")]
    Signing(String),
}

/// The node's owner key: the `/GetKey` key itself (a secp256k1 scalar).
pub fn owner_signer(reply: &GetKeyResponse) -> Result<PrivateKeySigner, ProofError> {
    PrivateKeySigner::from_bytes(&B256::from(*reply.key.as_bytes()))
        .map_err(|e| ProofError::Key(e.to_string()))
}

/// A `DstackProof` for `message_hash` (for registration: `Cluster.registrationDigest`).
/// The chain's signatures are passed as dstack returns them (v in {0,1}); the contract
/// normalizes them (field note 3).
pub fn dstack_proof(
    app_id: Address,
    purpose: &str,
    reply: &GetKeyResponse,
    message_hash: B256,
) -> Result<DstackProof, ProofError> {
    let recovered = reply
        .recover_chain(app_id.as_ref(), purpose)
        .map_err(ProofError::Chain)?;
    let signer = owner_signer(reply)?;
    let message_signature = signer
        .sign_message_sync(message_hash.as_slice())
        .map_err(|e| ProofError::Signing(e.to_string()))?;
    Ok(DstackProof {
        appId: app_id,
        messageHash: message_hash,
        messageSignature: Bytes::from(message_signature.as_bytes().to_vec()),
        appSignature: Bytes::from(reply.signature_chain.app.to_bytes().to_vec()),
        kmsSignature: Bytes::from(reply.signature_chain.kms.to_bytes().to_vec()),
        derivedPublicKey: Bytes::from(recovered.derived.compressed().to_vec()),
        appPublicKey: Bytes::from(recovered.app.compressed().to_vec()),
        purpose: purpose.to_string(),
    })
}

/// `MemberAccount.register(proof, keys)` calldata: the proof and keys of the cluster binding
/// under the member account's binding (the same ABI tuples, separate generated types). The one
/// place a registration call is put together, for the agent and the tests alike.
pub fn register_call_data(proof: DstackProof, keys: &NodeKeys) -> Bytes {
    let proof = MemberAccount::DstackProof {
        appId: proof.appId,
        messageHash: proof.messageHash,
        messageSignature: proof.messageSignature,
        appSignature: proof.appSignature,
        kmsSignature: proof.kmsSignature,
        derivedPublicKey: proof.derivedPublicKey,
        appPublicKey: proof.appPublicKey,
        purpose: proof.purpose,
    };
    let keys = MemberAccount::NodeKeys {
        x25519: keys.x25519,
        ed25519: keys.ed25519,
        wireguard: keys.wireguard,
    };
    MemberAccount::registerCall { proof, keys }
        .abi_encode()
        .into()
}
