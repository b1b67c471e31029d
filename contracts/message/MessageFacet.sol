// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Envelope, SkipReason} from "../lib/ClusterTypes.sol";
import {MemberStorage} from "../member/MemberStorage.sol";
import {IMessageFacet} from "./IMessageFacet.sol";
import {MessageStorage} from "./MessageStorage.sol";

/// @title MessageFacet
/// @notice Emits sealed messages between active members.
contract MessageFacet is IMessageFacet {
    /// @inheritdoc IMessageFacet
    function send(uint64 recipientMemberId, bytes32 envelopeId, bytes calldata ciphertext) external override {
        uint64 senderId = MemberStorage.requireActive(msg.sender);
        (bool sent, SkipReason reason) =
            MessageStorage.trySend(recipientMemberId, senderId, envelopeId, ciphertext);
        if (sent) return;
        if (reason == SkipReason.EmptyCiphertext) revert EmptyCiphertext();
        if (reason == SkipReason.CiphertextTooLarge) {
            revert CiphertextTooLarge(ciphertext.length, MessageStorage.MAX_CIPHERTEXT_SIZE);
        }
        if (reason == SkipReason.RecipientNotActive) revert RecipientNotActive(recipientMemberId);
        revert EnvelopeAlreadyUsed(recipientMemberId, senderId, envelopeId);
    }

    /// @inheritdoc IMessageFacet
    function sendBatch(Envelope[] calldata envelopes) external override returns (uint256 sent) {
        uint64 senderId = MemberStorage.requireActive(msg.sender);
        uint256 size = envelopes.length;
        if (size == 0) revert EmptyBatch();
        if (size > MessageStorage.MAX_BATCH_SIZE) revert BatchTooLarge(size, MessageStorage.MAX_BATCH_SIZE);
        for (uint256 i = 0; i < size; ++i) {
            Envelope calldata e = envelopes[i];
            // An earlier duplicate in this batch is already marked used, so it is skipped as AlreadyUsed.
            (bool ok, SkipReason reason) =
                MessageStorage.trySend(e.recipientMemberId, senderId, e.envelopeId, e.ciphertext);
            if (ok) {
                ++sent;
            } else {
                emit MessageSkipped(e.recipientMemberId, senderId, e.envelopeId, reason);
            }
        }
    }

    /// @inheritdoc IMessageFacet
    function isEnvelopeUsed(uint64 recipientMemberId, uint64 senderMemberId, bytes32 envelopeId)
        external
        view
        override
        returns (bool)
    {
        return MessageStorage.layout().used[recipientMemberId][senderMemberId][envelopeId];
    }

    /// @inheritdoc IMessageFacet
    function maxCiphertextSize() external pure override returns (uint256) {
        return MessageStorage.MAX_CIPHERTEXT_SIZE;
    }

    /// @inheritdoc IMessageFacet
    function maxBatchSize() external pure override returns (uint256) {
        return MessageStorage.MAX_BATCH_SIZE;
    }
}
