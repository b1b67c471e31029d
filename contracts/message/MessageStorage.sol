// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title MessageStorage
/// @notice Replay protection for messages: each (recipient, envelope id) is used once.
library MessageStorage {
    /// @notice Cap on one ciphertext: a sealed app message or endpoint envelope, not bulk data
    ///         (bulk data goes over the mesh). Calldata is the dominant cost on Base.
    uint256 internal constant MAX_CIPHERTEXT_SIZE = 4096;

    /// @custom:storage-location erc7201:attestmesh.storage.Message
    struct Layout {
        mapping(uint64 recipientMemberId => mapping(bytes32 envelopeId => bool)) used;
    }

    /// @dev keccak256(abi.encode(uint256(keccak256("attestmesh.storage.Message")) - 1)) & ~bytes32(uint256(0xff))
    bytes32 internal constant STORAGE_SLOT =
        0x01ed23594c696028727ead8f00e63e0673d543f2d3613a2c2fc01abf2ca2d100;

    function layout() internal pure returns (Layout storage l) {
        bytes32 slot = STORAGE_SLOT;
        assembly {
            l.slot := slot
        }
    }
}
