//! The dstack KMS root, read from dstack's on-chain `DstackKms` contract instead of hard-coded:
//! `kmsInfo().k256Pubkey` is the root's secp256k1 public key (33-byte compressed SEC1); the
//! address it signs as is what a cluster allowlists.

use alloy::primitives::{Address, address, keccak256};
use attestmesh_chain::ChainClient;
use k256::elliptic_curve::sec1::ToEncodedPoint;

use crate::error::{DeployError, Result};

/// dstack's `DstackKms` on Base (chain 8453).
pub const DSTACK_KMS_BASE: Address = address!("0x2f83172A49584C017F2B256F0FB2Dca14126Ba9C");

alloy::sol! {
    /// The part of dstack's `DstackKms` this tool reads. `kmsInfo` is the public getter of a
    /// struct `{bytes k256Pubkey; bytes caPubkey; bytes quote; bytes eventlog;}`.
    #[sol(rpc)]
    interface IDstackKms {
        function kmsInfo() external view returns (bytes k256Pubkey, bytes caPubkey, bytes quote, bytes eventlog);
    }
}

/// The Ethereum address of a secp256k1 public key given as SEC1 bytes: 33 compressed (as
/// `DstackKms` stores it) or 65 uncompressed.
pub fn address_of_k256_pubkey(sec1: &[u8]) -> Result<Address> {
    if sec1.len() != 33 && sec1.len() != 65 {
        return Err(DeployError::input(
            "KMS root public key",
            format!(
                "{} bytes (0x{}); expected a 33-byte compressed secp256k1 key",
                sec1.len(),
                hex::encode(sec1)
            ),
        ));
    }
    let key = k256::PublicKey::from_sec1_bytes(sec1).map_err(|_| {
        DeployError::input(
            "KMS root public key",
            format!("0x{} is not a point on secp256k1", hex::encode(sec1)),
        )
    })?;
    let uncompressed = key.to_encoded_point(false);
    // 0x04 ‖ X ‖ Y: the address is the last 20 bytes of keccak256(X ‖ Y).
    let hash = keccak256(&uncompressed.as_bytes()[1..]);
    Ok(Address::from_slice(&hash[12..]))
}

/// The KMS root address published by the `DstackKms` contract at `kms`.
pub async fn kms_root_from_dstack_kms(client: &ChainClient, kms: Address) -> Result<Address> {
    client.require_code("DstackKms", kms).await.map_err(|_| {
        DeployError::precondition(
            format!(
                "no contract at {kms} on chain {}, so no KMS root can be read from it",
                client.chain_id()
            ),
            format!(
                "pass dstack's DstackKms address for this chain (on Base: {DSTACK_KMS_BASE}) or the root itself with --kms-root"
            ),
        )
    })?;
    let info = IDstackKms::new(kms, client.provider().clone())
        .kmsInfo()
        .call()
        .await
        .map_err(|e| client.call_error("DstackKms.kmsInfo", e))?;
    if info.k256Pubkey.is_empty() {
        return Err(DeployError::precondition(
            format!("DstackKms at {kms} has no k256Pubkey set (kmsInfo is empty)"),
            "check that this is dstack's KMS contract and that its KMS has been bootstrapped",
        ));
    }
    address_of_k256_pubkey(&info.k256Pubkey)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_generator_point_is_the_address_of_private_key_one() {
        // G, the public key of private key 1, whose address is well known.
        let g = hex::decode("0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")
            .unwrap();
        assert_eq!(
            address_of_k256_pubkey(&g).unwrap(),
            address!("0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf")
        );
    }

    #[test]
    fn compressed_and_uncompressed_agree_with_the_signer_address() {
        let signer = alloy::signers::local::PrivateKeySigner::random();
        let point = signer.credential().verifying_key().to_encoded_point(true);
        assert_eq!(
            address_of_k256_pubkey(point.as_bytes()).unwrap(),
            signer.address()
        );
        let point = signer.credential().verifying_key().to_encoded_point(false);
        assert_eq!(
            address_of_k256_pubkey(point.as_bytes()).unwrap(),
            signer.address()
        );
    }

    #[test]
    fn wrong_length_or_off_curve_is_refused() {
        assert!(
            address_of_k256_pubkey(&[2u8; 20])
                .unwrap_err()
                .to_string()
                .contains("33-byte")
        );
        let mut off = vec![2u8];
        off.extend_from_slice(&[0xff; 32]);
        assert!(
            address_of_k256_pubkey(&off)
                .unwrap_err()
                .to_string()
                .contains("not a point")
        );
    }
}
