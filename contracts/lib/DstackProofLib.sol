// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {DstackProof} from "./ClusterTypes.sol";
import {Secp256k1} from "./Secp256k1.sol";
import {Signatures} from "./Signatures.sol";

/// @notice Why a dstack proof does not verify (`Valid` when it does).
enum ProofStatus {
    Valid,
    DerivedKeyMalformed,
    AppKeyMalformed,
    MessageSignatureInvalid,
    AppSignatureInvalid,
    KmsSignatureInvalid
}

/// @title DstackProofLib
/// @notice Verifies a dstack GetKey signature chain with signature math only (ecrecover + modexp),
///         so that the same code runs inside ERC-4337 validation and in the diamond.
library DstackProofLib {
    bytes internal constant KMS_ISSUED_PREFIX = "dstack-kms-issued:";
    /// @notice The GetKey purpose of a node's owner key (the key whose chain registers it). A chain
    ///         issued for any other purpose proves a key meant for something else.
    string internal constant OWNER_PURPOSE = "attestmesh-owner";
    bytes32 internal constant OWNER_PURPOSE_HASH = keccak256(bytes(OWNER_PURPOSE));

    /// @notice Whether the proof's GetKey purpose is the owner-key purpose (pure: allowed in validation).
    function hasOwnerPurpose(DstackProof memory proof) internal pure returns (bool) {
        return keccak256(bytes(proof.purpose)) == OWNER_PURPOSE_HASH;
    }

    /// @notice Checks every link of the chain: derived key -> message, app key -> derived key,
    ///         KMS root -> (app id, app key). Allowlists are the caller's business.
    /// @return status Valid, or the first link that failed.
    /// @return derivedSigner The address of the derived key (the node's owner key).
    /// @return kmsRoot The KMS root that issued the app key.
    function check(DstackProof memory proof)
        internal
        view
        returns (ProofStatus status, address derivedSigner, address kmsRoot)
    {
        (bool derivedOk, address derived) = Secp256k1.tryToAddress(proof.derivedPublicKey);
        if (!derivedOk) return (ProofStatus.DerivedKeyMalformed, address(0), address(0));
        (bool appOk, address appKey) = Secp256k1.tryToAddress(proof.appPublicKey);
        if (!appOk) return (ProofStatus.AppKeyMalformed, address(0), address(0));

        address messageSigner =
            Signatures.tryRecover(Signatures.ethSignedHash(proof.messageHash), proof.messageSignature);
        if (messageSigner == address(0) || messageSigner != derived) {
            return (ProofStatus.MessageSignatureInvalid, address(0), address(0));
        }

        address appSigner =
            Signatures.tryRecover(appMessage(proof.purpose, proof.derivedPublicKey), proof.appSignature);
        if (appSigner == address(0) || appSigner != appKey) {
            return (ProofStatus.AppSignatureInvalid, address(0), address(0));
        }

        address root = Signatures.tryRecover(kmsMessage(proof.appId, proof.appPublicKey), proof.kmsSignature);
        if (root == address(0)) return (ProofStatus.KmsSignatureInvalid, address(0), address(0));
        return (ProofStatus.Valid, derived, root);
    }

    /// @notice What the app key signs: keccak256(purpose ":" lowercase-hex(derived compressed key)).
    function appMessage(string memory purpose, bytes memory derivedPublicKey)
        internal
        pure
        returns (bytes32)
    {
        return keccak256(abi.encodePacked(purpose, ":", toLowerHex(derivedPublicKey)));
    }

    /// @notice What the KMS root signs: keccak256("dstack-kms-issued:" || app id || app compressed key).
    function kmsMessage(address appId, bytes memory appPublicKey) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked(KMS_ISSUED_PREFIX, appId, appPublicKey));
    }

    /// @notice Lowercase hex without a 0x prefix, as dstack formats keys.
    function toLowerHex(bytes memory data) internal pure returns (string memory) {
        bytes16 digits = "0123456789abcdef";
        bytes memory out = new bytes(data.length * 2);
        for (uint256 i = 0; i < data.length; ++i) {
            out[2 * i] = digits[uint8(data[i]) >> 4];
            out[2 * i + 1] = digits[uint8(data[i]) & 0x0f];
        }
        return string(out);
    }
}
