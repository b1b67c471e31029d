// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {MemberStatus, SkipReason} from "../lib/ClusterTypes.sol";
import {MemberStorage} from "../member/MemberStorage.sol";
import {IMessageFacet} from "./IMessageFacet.sol";

/// @title MessageStorage
/// @notice Replay protection for messages and the one check `send`, `sendBatch` and the
///         sponsorship policy share. Each (recipient, sender, envelope id) is used once: keyed by
///         sender so no member can spend (front-run) another member's deterministic id.
library MessageStorage {
    /// @notice Cap on one ciphertext: a sealed app message or endpoint envelope, not bulk data
    ///         (bulk data goes over the mesh). Calldata is the dominant cost on Base.
    uint256 internal constant MAX_CIPHERTEXT_SIZE = 4096;
    /// @notice Cap on the envelopes of one `sendBatch`: bounds the gas of one call.
    uint256 internal constant MAX_BATCH_SIZE = 64;

    /// @custom:storage-location erc7201:attestmesh.storage.Message
    struct Layout {
        mapping(
            uint64 recipientMemberId => mapping(uint64 senderMemberId => mapping(bytes32 envelopeId => bool))
        ) used;
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

    /// @notice Whether `sender` may send a ciphertext of `size` bytes to `recipient` under `envelopeId`
    ///         right now; `reason` names the failed rule (meaningful only when `ok` is false).
    function check(uint64 recipient, uint64 sender, bytes32 envelopeId, uint256 size)
        internal
        view
        returns (bool ok, SkipReason reason)
    {
        if (size == 0) return (false, SkipReason.EmptyCiphertext);
        if (size > MAX_CIPHERTEXT_SIZE) return (false, SkipReason.CiphertextTooLarge);
        if (MemberStorage.status(recipient) != MemberStatus.Active) {
            return (false, SkipReason.RecipientNotActive);
        }
        if (layout().used[recipient][sender][envelopeId]) return (false, SkipReason.AlreadyUsed);
        return (true, SkipReason.EmptyCiphertext);
    }

    /// @notice Sends when `check` passes: marks the envelope used and emits MessageSent.
    function trySend(uint64 recipient, uint64 sender, bytes32 envelopeId, bytes calldata ciphertext)
        internal
        returns (bool sent, SkipReason reason)
    {
        (sent, reason) = check(recipient, sender, envelopeId, ciphertext.length);
        if (!sent) return (false, reason);
        layout().used[recipient][sender][envelopeId] = true;
        emit IMessageFacet.MessageSent(recipient, sender, envelopeId, ciphertext);
    }
}
