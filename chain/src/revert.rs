//! Revert data in words: every custom error of the project's contracts and of the EntryPoint,
//! `Error(string)` and `Panic(uint256)`, with advice where an operator or node can act.

use alloy::sol_types::SolInterface;
use attestmesh_bindings::{
    cluster, entry_point, factory, indexer_registry, member_account, paymaster,
};
use attestmesh_types::aa_errors;

/// Decodes revert data into a readable reason (the raw hex when nothing matches).
pub fn decode(data: &[u8]) -> String {
    if data.is_empty() {
        return "no revert data (out of gas, a failed require without reason, or no contract at the address)".into();
    }
    if let Ok(error) = entry_point::EntryPoint::EntryPointErrors::abi_decode(data) {
        return describe_entry_point(error);
    }
    if let Ok(error) = cluster::Cluster::ClusterErrors::abi_decode(data) {
        if let cluster::Cluster::ClusterErrors::InvalidDstackProof(inner) = &error {
            return format!("InvalidDstackProof: {}", proof_status(inner.status));
        }
        return with_advice(debug_inner(&error));
    }
    if let Ok(error) = member_account::MemberAccount::MemberAccountErrors::abi_decode(data) {
        return with_advice(debug_inner(&error));
    }
    if let Ok(error) = factory::ClusterFactory::ClusterFactoryErrors::abi_decode(data) {
        return with_advice(debug_inner(&error));
    }
    if let Ok(error) = paymaster::VerifyingPaymaster::VerifyingPaymasterErrors::abi_decode(data) {
        return with_advice(debug_inner(&error));
    }
    if let Ok(error) = indexer_registry::IndexerRegistry::IndexerRegistryErrors::abi_decode(data) {
        return with_advice(debug_inner(&error));
    }
    if let Some(reason) = alloy::sol_types::decode_revert_reason(data) {
        return reason;
    }
    format!("unknown revert data 0x{}", alloy::hex::encode(data))
}

/// `ProofStatus` (contracts/lib/DstackProofLib.sol) in words.
pub fn proof_status(status: u8) -> String {
    let what = match status {
        0 => "valid",
        1 => "the derived public key is not a valid compressed secp256k1 key",
        2 => "the app public key is not a valid compressed secp256k1 key",
        3 => "the message signature is not the derived key's",
        4 => "signature_chain[0] is not the app key's signature over the derived key",
        5 => "signature_chain[1] is not a KMS signature over (app id, app key)",
        _ => "unknown proof status",
    };
    format!("{what} (status {status})")
}

fn describe_entry_point(error: entry_point::EntryPoint::EntryPointErrors) -> String {
    use entry_point::EntryPoint::EntryPointErrors as E;
    match error {
        E::FailedOp(op) => format!(
            "FailedOp(op {}): {}",
            op.opIndex,
            aa_errors::describe(&op.reason)
        ),
        E::FailedOpWithRevert(op) => format!(
            "FailedOpWithRevert(op {}): {}; inner revert: {}",
            op.opIndex,
            aa_errors::describe(&op.reason),
            decode(&op.inner)
        ),
        other => debug_inner(&other),
    }
}

/// `Variant(Variant { fields })` → `Variant { fields }`.
fn debug_inner<T: std::fmt::Debug>(error: &T) -> String {
    let text = format!("{error:?}");
    match (text.find('('), text.rfind(')')) {
        (Some(open), Some(close)) if close > open => text[open + 1..close].to_string(),
        _ => text,
    }
}

fn with_advice(reason: String) -> String {
    let name = reason.split([' ', '{', '(']).next().unwrap_or_default();
    let advice = match name {
        "AppIdNotAllowed" => {
            "the operator must allowlist this member account: setAppIdAllowed(account, true)"
        }
        "KmsRootNotAllowed" => {
            "the operator must allowlist this KMS root: setKmsRootAllowed(root, true)"
        }
        "AppIdMismatch" => "the proof was made for another app id than the sending account",
        "RegistrationBindingMismatch" => {
            "the proof's message hash does not bind this chain, cluster, account and keys: rebuild it from registrationDigest"
        }
        "MemberKeysMismatch" => {
            "a live member cannot change keys: the operator must revoke it first"
        }
        "MemberAccountRevoked" | "MemberNotActive" => {
            "the member is revoked: it cannot act in this cluster any more"
        }
        "NotAMember" => "the caller is not a member of this cluster",
        "NotContractOwner" | "OnlyOwner" => "only the owner may do this",
        "MeshAddressSpaceExhausted" => {
            "the cluster CIDR is full: create a cluster with a larger CIDR"
        }
        "CskAlreadyCommitted" => {
            "the CSK commitment is set once: re-derive or re-pull the CSK and check it against it"
        }
        "ClusterAlreadyExists" => "this creator already used this salt: pick another salt",
        _ => return reason,
    };
    format!("{reason} ({advice})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{Address, Bytes, U256};
    use alloy::sol_types::{Revert, SolError};

    #[test]
    fn cluster_errors_are_named_with_advice() {
        let data = cluster::Cluster::AppIdNotAllowed {
            account: Address::repeat_byte(0x11),
        }
        .abi_encode();
        let text = decode(&data);
        assert!(text.starts_with("AppIdNotAllowed"), "{text}");
        assert!(text.contains("setAppIdAllowed"), "{text}");
    }

    #[test]
    fn proof_status_is_in_words() {
        let data = cluster::Cluster::InvalidDstackProof { status: 5 }.abi_encode();
        assert!(decode(&data).contains("KMS signature"), "{}", decode(&data));
    }

    #[test]
    fn entry_point_failures_carry_aa_advice() {
        let data = entry_point::EntryPoint::FailedOp {
            opIndex: U256::ZERO,
            reason: "AA25 invalid account nonce".into(),
        }
        .abi_encode();
        assert!(decode(&data).contains("getNonce"), "{}", decode(&data));
        let nested = entry_point::EntryPoint::FailedOpWithRevert {
            opIndex: U256::ZERO,
            reason: "AA23 reverted".into(),
            inner: Bytes::from(Revert::from("boom").abi_encode()),
        }
        .abi_encode();
        assert!(decode(&nested).contains("boom"), "{}", decode(&nested));
    }

    #[test]
    fn strings_and_unknown_data() {
        assert!(decode(&Revert::from("plain reason").abi_encode()).contains("plain reason"));
        assert!(decode(&[0xde, 0xad, 0xbe, 0xef]).contains("0xdeadbeef"));
        assert!(decode(&[]).contains("no revert data"));
    }
}
