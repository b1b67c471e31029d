//! The dstack GetKey vector pins key derivation and the signature-chain format.

use attestmesh_dstack::chain::{SecretKeyBytes, derive_path_key};
use attestmesh_dstack::k256::Scalar;
use attestmesh_dstack::k256::elliptic_curve::PrimeField;
use attestmesh_dstack::{
    ChainSignature, DstackError, EthAddress, GetKeyResponse, PublicKey, SignatureChain,
    SignatureError, wire,
};

use crate::vector;

fn vector_response() -> GetKeyResponse {
    let v = vector();
    GetKeyResponse::try_from(wire::GetKeyResponse {
        key: hex::encode(v.key),
        signature_chain: v.signature_chain,
    })
    .unwrap()
}

fn expected_kms_root() -> PublicKey {
    PublicKey::from_sec1_hex(vector().expect("kms_root_pubkey_compressed")).unwrap()
}

#[test]
fn hkdf_of_fixture_app_key_reproduces_vector_key() {
    let v = vector();
    let key = derive_path_key(&v.app_key, &v.path).unwrap();
    assert_eq!(key.as_bytes(), &v.key);
}

#[test]
fn vector_chain_recovers_expected_keys_and_addresses() {
    let v = vector();
    let recovered = vector_response()
        .recover_chain(&v.app_id, &v.purpose)
        .unwrap();

    assert_eq!(
        hex::encode(recovered.derived.compressed()),
        v.expect("derived_pubkey_compressed")
    );
    assert_eq!(
        recovered.derived.address().to_string(),
        v.expect("derived_address")
    );
    assert_eq!(
        hex::encode(recovered.app.compressed()),
        v.expect("app_pubkey_compressed")
    );
    assert_eq!(recovered.app.address().to_string(), v.expect("app_address"));
    assert_eq!(
        hex::encode(recovered.kms_root.compressed()),
        v.expect("kms_root_pubkey_compressed")
    );
    assert_eq!(
        recovered.kms_root.address().to_string(),
        v.expect("kms_root_address")
    );
    assert_eq!(hex::encode(v.app_id), v.expect("app_id"));

    recovered.ensure_kms_root(&expected_kms_root()).unwrap();
    recovered
        .ensure_kms_root_address(&EthAddress::from_hex(v.expect("kms_root_address")).unwrap())
        .unwrap();
}

#[test]
fn vector_app_pubkey_is_the_fixture_app_key() {
    let v = vector();
    let app = SecretKeyBytes::new(v.app_key).public_key().unwrap();
    assert_eq!(
        hex::encode(app.compressed()),
        v.expect("app_pubkey_compressed")
    );
    // The vector's chain[1] is the fixture's own KMS signature.
    assert_eq!(v.signature_chain[1], v.fixture_kms_signature);
}

#[test]
fn chain_with_ethereum_v_27_28_recovers_the_same_keys() {
    let v = vector();
    let dstack_form = vector_response().signature_chain;
    let eth = dstack_form.to_eth_bytes();
    for signature in &eth {
        assert!(matches!(signature[64], 27 | 28), "v = {}", signature[64]);
    }
    let eth_chain =
        SignatureChain::from_hex_list(&[hex::encode(eth[0]), hex::encode(eth[1])]).unwrap();
    // Parsing normalizes v back to dstack's 0/1.
    assert_eq!(eth_chain, dstack_form);
    assert_eq!(eth_chain.to_hex_list(), v.signature_chain);

    let key = SecretKeyBytes::new(v.key);
    let from_eth = attestmesh_dstack::recover_signature_chain_for_secret(
        &v.app_id, &v.purpose, &key, &eth_chain,
    )
    .unwrap();
    let from_dstack = vector_response()
        .recover_chain(&v.app_id, &v.purpose)
        .unwrap();
    assert_eq!(from_eth, from_dstack);
}

#[test]
fn eth_bytes_only_change_v() {
    let chain = vector_response().signature_chain;
    for signature in [chain.app, chain.kms] {
        let dstack = signature.to_bytes();
        let eth = signature.to_eth_bytes();
        assert_eq!(dstack[..64], eth[..64]);
        assert!(dstack[64] <= 1);
        assert_eq!(eth[64], dstack[64] + 27);
    }
}

/// Flipping any byte of either signature must make the chain fail: either the signature no
/// longer parses / recovers, or it recovers to a KMS root other than the trusted one.
#[test]
fn tampered_signature_byte_fails_verification() {
    let v = vector();
    let trusted = expected_kms_root();
    for index in 0..2 {
        for position in [0, 17, 31, 32, 45, 63, 64] {
            let mut bytes = hex::decode(&v.signature_chain[index]).unwrap();
            bytes[position] ^= 0x01;
            let mut list = v.signature_chain.clone();
            list[index] = hex::encode(bytes);
            let outcome = SignatureChain::from_hex_list(&list)
                .and_then(|chain| {
                    attestmesh_dstack::recover_signature_chain_for_secret(
                        &v.app_id,
                        &v.purpose,
                        &SecretKeyBytes::new(v.key),
                        &chain,
                    )
                })
                .and_then(|recovered| recovered.ensure_kms_root(&trusted));
            assert!(
                outcome.is_err(),
                "tampering signature_chain[{index}] byte {position} still verified"
            );
        }
    }
}

#[test]
fn tampered_key_app_id_or_purpose_fails_verification() {
    let v = vector();
    let trusted = expected_kms_root();
    let response = vector_response();

    let mut key = v.key;
    key[5] ^= 0x80;
    let wrong_key = attestmesh_dstack::recover_signature_chain_for_secret(
        &v.app_id,
        &v.purpose,
        &SecretKeyBytes::new(key),
        &response.signature_chain,
    )
    .unwrap();
    assert!(wrong_key.ensure_kms_root(&trusted).is_err());

    let mut app_id = v.app_id;
    app_id[19] ^= 0x01;
    let wrong_app = response.recover_chain(&app_id, &v.purpose).unwrap();
    let err = wrong_app.ensure_kms_root(&trusted).unwrap_err();
    assert!(matches!(err, DstackError::UntrustedKmsRoot { .. }), "{err}");
    assert!(err.to_string().contains("not the trusted root"), "{err}");

    let wrong_purpose = response.recover_chain(&v.app_id, "other-purpose").unwrap();
    assert!(wrong_purpose.ensure_kms_root(&trusted).is_err());
}

#[test]
fn signature_parser_rejects_bad_v_length_and_high_s() {
    let good = hex::decode(&vector().signature_chain[0]).unwrap();

    for v in [2u8, 26, 29, 255] {
        let mut bytes = good.clone();
        bytes[64] = v;
        assert_eq!(
            ChainSignature::from_bytes(&bytes),
            Err(SignatureError::RecoveryByte(v))
        );
    }
    assert_eq!(
        ChainSignature::from_bytes(&good[..64]),
        Err(SignatureError::Length(64))
    );
    assert!(matches!(
        ChainSignature::from_hex("zz"),
        Err(SignatureError::Hex(_))
    ));

    // The malleable twin (n - s, flipped parity) recovers the same key in raw ecrecover but
    // dstack never emits it and OpenZeppelin rejects it: so do we.
    let s = Scalar::from_repr(<[u8; 32]>::try_from(&good[32..64]).unwrap().into()).unwrap();
    let mut high = good.clone();
    high[32..64].copy_from_slice(&(-s).to_bytes());
    high[64] ^= 1;
    assert_eq!(
        ChainSignature::from_bytes(&high),
        Err(SignatureError::HighS)
    );
}

#[test]
fn wire_response_with_0x_prefixes_and_27_28_parses() {
    let v = vector();
    let chain = vector_response().signature_chain.to_eth_bytes();
    let raw = wire::GetKeyResponse {
        key: format!("0x{}", hex::encode(v.key)),
        signature_chain: vec![
            format!("0x{}", hex::encode(chain[0])),
            format!("0x{}", hex::encode(chain[1])),
        ],
    };
    let parsed = GetKeyResponse::try_from(raw).unwrap();
    assert_eq!(parsed.key.as_bytes(), &v.key);
    assert_eq!(parsed.signature_chain.to_hex_list(), v.signature_chain);
}

#[test]
fn wire_response_with_one_signature_is_rejected_naming_the_field() {
    let v = vector();
    let raw = wire::GetKeyResponse {
        key: hex::encode(v.key),
        signature_chain: vec![v.signature_chain[0].clone()],
    };
    let err = GetKeyResponse::try_from(raw).unwrap_err();
    assert!(
        err.to_string().contains("signature_chain has 1 entries"),
        "{err}"
    );
}

#[test]
fn secret_key_debug_is_redacted() {
    let response = vector_response();
    let text = format!("{response:?}");
    assert!(!text.contains(&hex::encode(vector().key)), "{text}");
    assert!(text.contains("redacted"), "{text}");
}
