// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {MemberStatus} from "../lib/ClusterTypes.sol";
import {MemberStorage} from "../member/MemberStorage.sol";
import {IMessageFacet} from "./IMessageFacet.sol";
import {MessageStorage} from "./MessageStorage.sol";

/// @title MessageFacet
/// @notice Emits sealed messages between active members.
contract MessageFacet is IMessageFacet {
    /// @inheritdoc IMessageFacet
    function send(uint64 recipientMemberId, bytes32 envelopeId, bytes calldata ciphertext) external override {
        uint64 senderId = MemberStorage.requireActive(msg.sender);
        if (ciphertext.length == 0) revert EmptyCiphertext();
        if (ciphertext.length > MessageStorage.MAX_CIPHERTEXT_SIZE) {
            revert CiphertextTooLarge(ciphertext.length, MessageStorage.MAX_CIPHERTEXT_SIZE);
        }
        if (MemberStorage.status(recipientMemberId) != MemberStatus.Active) {
            revert RecipientNotActive(recipientMemberId);
        }
        mapping(bytes32 => bool) storage used = MessageStorage.layout().used[recipientMemberId];
        if (used[envelopeId]) revert EnvelopeAlreadyUsed(recipientMemberId, envelopeId);
        used[envelopeId] = true;
        emit MessageSent(recipientMemberId, senderId, envelopeId, ciphertext);
    }

    /// @inheritdoc IMessageFacet
    function isEnvelopeUsed(uint64 recipientMemberId, bytes32 envelopeId)
        external
        view
        override
        returns (bool)
    {
        return MessageStorage.layout().used[recipientMemberId][envelopeId];
    }

    /// @inheritdoc IMessageFacet
    function maxCiphertextSize() external pure override returns (uint256) {
        return MessageStorage.MAX_CIPHERTEXT_SIZE;
    }
}
