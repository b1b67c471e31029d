// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Envelope, SkipReason} from "../lib/ClusterTypes.sol";

/// @title IMessageFacet
/// @notice Sealed messages between active members, carried as events. The chain sees only
///         ciphertext; endpoint envelopes (gateway host/port, heartbeat key) travel the same way.
interface IMessageFacet {
    /// @notice The ciphertext is empty.
    error EmptyCiphertext();
    /// @notice The ciphertext exceeds the cap.
    error CiphertextTooLarge(uint256 size, uint256 maxSize);
    /// @notice The recipient is not an active member.
    error RecipientNotActive(uint64 recipientMemberId);
    /// @notice This sender already used this envelope id toward this recipient.
    error EnvelopeAlreadyUsed(uint64 recipientMemberId, uint64 senderMemberId, bytes32 envelopeId);
    /// @notice `sendBatch` was given no envelopes.
    error EmptyBatch();
    /// @notice `sendBatch` was given more than `maxSize` envelopes.
    error BatchTooLarge(uint256 size, uint256 maxSize);

    /// @notice A sealed message from one member to another.
    event MessageSent(
        uint64 indexed recipientMemberId,
        uint64 indexed senderMemberId,
        bytes32 indexed envelopeId,
        bytes ciphertext
    );

    /// @notice `sendBatch` skipped an envelope that `send` would have refused; nothing was marked used.
    event MessageSkipped(
        uint64 indexed recipientMemberId,
        uint64 indexed senderMemberId,
        bytes32 indexed envelopeId,
        SkipReason reason
    );

    /// @notice Sends `ciphertext` to an active member; the caller must be an active member account.
    /// @dev Reverts EmptyCiphertext, CiphertextTooLarge, RecipientNotActive or EnvelopeAlreadyUsed;
    ///      otherwise marks (recipient, caller, envelope id) used and emits MessageSent.
    function send(uint64 recipientMemberId, bytes32 envelopeId, bytes calldata ciphertext) external;

    /// @notice Sends up to `maxBatchSize()` envelopes in one call; the caller must be an active member.
    /// @dev Reverts only for the caller (NotAMember, MemberNotActive), an empty batch (EmptyBatch) or
    ///      an oversized one (BatchTooLarge). An envelope `send` would refuse — including one whose
    ///      (recipient, envelope id) repeats an earlier envelope of the batch — is skipped with
    ///      MessageSkipped, so one bad entry or a recipient revoked meanwhile never blocks the others.
    /// @param envelopes Sent in order.
    /// @return sent How many envelopes were sent (each emitted MessageSent).
    function sendBatch(Envelope[] calldata envelopes) external returns (uint256 sent);

    /// @notice Whether `senderMemberId` already used `envelopeId` toward `recipientMemberId`.
    function isEnvelopeUsed(uint64 recipientMemberId, uint64 senderMemberId, bytes32 envelopeId)
        external
        view
        returns (bool);

    /// @notice The largest ciphertext accepted, in bytes.
    function maxCiphertextSize() external pure returns (uint256);

    /// @notice The most envelopes one `sendBatch` accepts.
    function maxBatchSize() external pure returns (uint256);
}
