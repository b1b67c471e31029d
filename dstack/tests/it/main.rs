//! Integration tests of attestmesh-dstack (one binary, one module per area).

// A failed unwrap is a failed test, with the reason in the panic message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client;
mod discovery;
mod one_client;
mod vector;

/// The dstack GetKey test vector: a reply in the real guest agent's format built from dstack's
/// public simulator fixture, not by our simulator (its "about" says how). One copy, in
/// test/vectors/, which the Solidity verifier's tests read too.
pub const VECTOR_JSON: &str = include_str!("../../../test/vectors/dstack-getkey-simulator.json");

/// The vector, parsed into bytes.
#[derive(Debug)]
pub struct Vector {
    pub app_key: [u8; 32],
    pub fixture_kms_signature: String,
    pub app_id: [u8; 20],
    pub path: String,
    pub purpose: String,
    pub key: [u8; 32],
    pub signature_chain: Vec<String>,
    pub expect: serde_json::Value,
}

pub fn vector() -> Vector {
    let json: serde_json::Value = serde_json::from_str(VECTOR_JSON).unwrap();
    let text = |pointer: &str| json.pointer(pointer).unwrap().as_str().unwrap().to_owned();
    Vector {
        app_key: hex::decode(text("/fixture/k256_key"))
            .unwrap()
            .try_into()
            .unwrap(),
        fixture_kms_signature: text("/fixture/k256_signature"),
        app_id: hex::decode(text("/fixture/app_id"))
            .unwrap()
            .try_into()
            .unwrap(),
        path: text("/request/path"),
        purpose: text("/request/purpose"),
        key: hex::decode(text("/response/key"))
            .unwrap()
            .try_into()
            .unwrap(),
        signature_chain: vec![
            text("/response/signature_chain/0"),
            text("/response/signature_chain/1"),
        ],
        expect: json["expect"].clone(),
    }
}

impl Vector {
    pub fn expect(&self, field: &str) -> &str {
        self.expect[field].as_str().unwrap()
    }
}
