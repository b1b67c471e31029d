//! dstack registration proofs built the way test/utils/ClusterFixture.sol builds them, from keys
//! the test holds: the derived key signs the EIP-191 form of the chain's registration digest;
//! the app key signs keccak256(purpose ":" lowercase-hex(compressed derived key)) and the KMS
//! root signs keccak256("dstack-kms-issued:" ‖ app id ‖ compressed app key), both with v ∈ {0,1}
//! as dstack does (field note 3).

use alloy::primitives::{Address, B256, Bytes, keccak256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use attestmesh_bindings::cluster::Cluster;
use attestmesh_bindings::member_account::MemberAccount;
use attestmesh_chain::ChainClient;

/// The GetKey purpose of a node's owner key.
pub const OWNER_PURPOSE: &str = "attestmesh-owner";

/// A simulated dstack node whose keys all derive from its name.
#[derive(Debug)]
pub struct Node {
    pub account: Address,
    app_key: PrivateKeySigner,
    derived_key: PrivateKeySigner,
    keys: [B256; 3],
}

impl Node {
    pub fn new(name: &str, account: Address) -> Self {
        let key = |kind: &str| {
            PrivateKeySigner::from_bytes(&keccak256(format!(
                "attestmesh.webhook-test:{kind}:{name}"
            )))
            .unwrap()
        };
        Self {
            account,
            app_key: key("app"),
            derived_key: key("derived"),
            keys: [
                keccak256(format!("x25519:{name}")),
                keccak256(format!("ed25519:{name}")),
                keccak256(format!("wireguard:{name}")),
            ],
        }
    }

    /// The node's owner key (the derived key the proof attests), which signs its operations.
    pub fn owner(&self) -> &PrivateKeySigner {
        &self.derived_key
    }

    /// `MemberAccount.register(proof, keys)` calldata, the proof issued by `kms_root` and bound
    /// to `cluster` by the digest the chain computes.
    pub async fn register_call_data(
        &self,
        client: &ChainClient,
        cluster: Address,
        kms_root: &PrivateKeySigner,
    ) -> Bytes {
        let [x25519, ed25519, wireguard] = self.keys;
        let digest = client
            .registration_digest(
                cluster,
                self.account,
                Cluster::NodeKeys {
                    x25519,
                    ed25519,
                    wireguard,
                },
            )
            .await
            .unwrap();

        let derived_public = compressed(&self.derived_key);
        let app_public = compressed(&self.app_key);
        // EIP-191 over the 32-byte digest, v ∈ {27,28}, as Ethereum tooling signs.
        let message_signature = self
            .derived_key
            .sign_message_sync(digest.as_slice())
            .unwrap();
        let app_message = keccak256(format!(
            "{OWNER_PURPOSE}:{}",
            alloy::hex::encode(&derived_public)
        ));
        let mut kms_preimage = b"dstack-kms-issued:".to_vec();
        kms_preimage.extend_from_slice(self.account.as_slice());
        kms_preimage.extend_from_slice(&app_public);

        let proof = MemberAccount::DstackProof {
            appId: self.account,
            messageHash: digest,
            messageSignature: Bytes::from(message_signature.as_bytes().to_vec()),
            appSignature: sign_dstack(&self.app_key, app_message),
            kmsSignature: sign_dstack(kms_root, keccak256(&kms_preimage)),
            derivedPublicKey: Bytes::from(derived_public),
            appPublicKey: Bytes::from(app_public),
            purpose: OWNER_PURPOSE.into(),
        };
        let keys = MemberAccount::NodeKeys {
            x25519,
            ed25519,
            wireguard,
        };
        MemberAccount::registerCall { proof, keys }
            .abi_encode()
            .into()
    }
}

/// The 33-byte compressed SEC1 public key.
fn compressed(signer: &PrivateKeySigner) -> Vec<u8> {
    signer
        .credential()
        .verifying_key()
        .to_encoded_point(true)
        .as_bytes()
        .to_vec()
}

/// r ‖ s ‖ v with v ∈ {0,1}, as the dstack KMS and app key sign.
fn sign_dstack(signer: &PrivateKeySigner, hash: B256) -> Bytes {
    let signature = signer.sign_hash_sync(&hash).unwrap();
    let mut bytes = Vec::with_capacity(65);
    bytes.extend_from_slice(&signature.r().to_be_bytes::<32>());
    bytes.extend_from_slice(&signature.s().to_be_bytes::<32>());
    bytes.push(u8::from(signature.v()));
    bytes.into()
}
