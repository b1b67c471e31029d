// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {NodeKeys} from "./ClusterTypes.sol";

/// @title RegistrationDigest
/// @notice The message a node's derived key signs to register: it binds the chain, the cluster,
///         the member account and every public key the node publishes, so a proof cannot be
///         replayed on another chain, cluster or account, nor with other keys.
library RegistrationDigest {
    bytes32 internal constant TYPEHASH = keccak256(
        "AttestMesh.Registration.v1(uint256 chainId,address cluster,address account,bytes32 x25519,bytes32 ed25519,bytes32 wireguard)"
    );

    function compute(uint256 chainId, address cluster, address account, NodeKeys memory keys)
        internal
        pure
        returns (bytes32)
    {
        return keccak256(
            abi.encode(TYPEHASH, chainId, cluster, account, keys.x25519, keys.ed25519, keys.wireguard)
        );
    }
}
