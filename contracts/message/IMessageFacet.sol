// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

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
    /// @notice This (recipient, envelope id) pair was already used.
    error EnvelopeAlreadyUsed(uint64 recipientMemberId, bytes32 envelopeId);

    /// @notice A sealed message from one member to another.
    event MessageSent(
        uint64 indexed recipientMemberId,
        uint64 indexed senderMemberId,
        bytes32 indexed envelopeId,
        bytes ciphertext
    );

    /// @notice Sends `ciphertext` to an active member; the caller must be an active member account.
    function send(uint64 recipientMemberId, bytes32 envelopeId, bytes calldata ciphertext) external;

    /// @notice Whether (recipient, envelope id) was already used.
    function isEnvelopeUsed(uint64 recipientMemberId, bytes32 envelopeId) external view returns (bool);

    /// @notice The largest ciphertext accepted, in bytes.
    function maxCiphertextSize() external pure returns (uint256);
}
