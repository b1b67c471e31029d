// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

/// @title Signatures
/// @notice ECDSA recovery that accepts dstack's recovery ids.
/// @dev The dstack KMS signs with v in {0,1}; OpenZeppelin's ECDSA only knows {27,28} and
///      reverts otherwise (field note 3). Both forms are accepted here; high-s is rejected.
library Signatures {
    /// @notice Recovers the signer of `digest` from a 65-byte r||s||v signature.
    /// @return signer The signer, or address(0) for any malformed or invalid signature.
    function tryRecover(bytes32 digest, bytes memory signature) internal pure returns (address signer) {
        if (signature.length != 65) return address(0);
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly ("memory-safe") {
            r := mload(add(signature, 32))
            s := mload(add(signature, 64))
            v := byte(0, mload(add(signature, 96)))
        }
        if (v < 27) v += 27;
        if (v != 27 && v != 28) return address(0);
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, v, r, s);
        if (err != ECDSA.RecoverError.NoError) return address(0);
        return recovered;
    }

    /// @notice The EIP-191 ("\x19Ethereum Signed Message:\n32") form of a 32-byte hash.
    function ethSignedHash(bytes32 hash) internal pure returns (bytes32 digest) {
        assembly ("memory-safe") {
            mstore(0x00, "\x19Ethereum Signed Message:\n32")
            mstore(0x1c, hash)
            digest := keccak256(0x00, 0x3c)
        }
    }
}
