// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IMemberFacet} from "../contracts/member/IMemberFacet.sol";
import {IMessageFacet} from "../contracts/message/IMessageFacet.sol";
import {ClusterFixture} from "./utils/ClusterFixture.sol";

/// @notice MessageFacet: sealed messages between active members, with per-recipient replay protection.
contract MessageTest is ClusterFixture {
    uint256 internal constant MAX_SIZE = 4096;
    bytes32 internal constant ENVELOPE = keccak256("envelope-1");

    Node internal alice;
    Node internal bob;
    uint64 internal aliceId;
    uint64 internal bobId;

    function setUp() public {
        setUpCluster();
        alice = addNode("alice");
        aliceId = registerDirect(alice);
        bob = addNode("bob");
        bobId = registerDirect(bob);
    }

    // ------------------------------------------------------------------ send

    function test_send_emitsMessageSentAndMarksTheEnvelopeUsed() public {
        bytes memory ciphertext = _ciphertext(64);
        vm.assertFalse(IMessageFacet(cluster).isEnvelopeUsed(bobId, ENVELOPE), "fresh envelope");
        vm.expectEmit(cluster);
        emit IMessageFacet.MessageSent(bobId, aliceId, ENVELOPE, ciphertext);
        _send(alice, bobId, ENVELOPE, ciphertext);
        vm.assertTrue(IMessageFacet(cluster).isEnvelopeUsed(bobId, ENVELOPE), "envelope used");
        // Replay protection is per recipient: the same id toward the sender is still free.
        vm.assertFalse(IMessageFacet(cluster).isEnvelopeUsed(aliceId, ENVELOPE), "other recipient");
    }

    function test_send_sameEnvelopeIdToAnotherRecipientIsAccepted() public {
        Node memory carol = addNode("carol");
        uint64 carolId = registerDirect(carol);
        _send(alice, bobId, ENVELOPE, _ciphertext(32));
        vm.expectEmit(cluster);
        emit IMessageFacet.MessageSent(carolId, aliceId, ENVELOPE, _ciphertext(32));
        _send(alice, carolId, ENVELOPE, _ciphertext(32));
        vm.assertTrue(IMessageFacet(cluster).isEnvelopeUsed(carolId, ENVELOPE), "used for carol too");
    }

    /// @notice Nothing forbids a member from sealing a message to itself (e.g. a note to a restart).
    function test_send_toSelfIsAccepted() public {
        _send(alice, aliceId, ENVELOPE, _ciphertext(1));
        vm.assertTrue(IMessageFacet(cluster).isEnvelopeUsed(aliceId, ENVELOPE), "used");
    }

    function test_maxCiphertextSize_is4096() public view {
        vm.assertEq(IMessageFacet(cluster).maxCiphertextSize(), MAX_SIZE, "cap");
    }

    function testFuzz_send_acceptsAnySizeUpToTheCap(uint256 sizeSeed, bytes32 envelopeId) public {
        uint256 size = bound(sizeSeed, 1, MAX_SIZE);
        _send(alice, bobId, envelopeId, _ciphertext(size));
        vm.assertTrue(IMessageFacet(cluster).isEnvelopeUsed(bobId, envelopeId), "accepted");
    }

    function testFuzz_send_rejectsAnySizeAboveTheCap(uint256 sizeSeed) public {
        uint256 size = bound(sizeSeed, MAX_SIZE + 1, 20_000);
        vm.expectRevert(abi.encodeWithSelector(IMessageFacet.CiphertextTooLarge.selector, size, MAX_SIZE));
        _send(alice, bobId, ENVELOPE, _ciphertext(size));
    }

    function test_send_gasSnapshot256Bytes() public {
        bytes memory ciphertext = _ciphertext(256);
        vm.prank(alice.account);
        IMessageFacet(cluster).send(bobId, ENVELOPE, ciphertext);
        vm.snapshotGasLastCall("send_256_bytes");
    }

    // ------------------------------------------------------------------ sender checks

    function test_RevertWhen_send_senderNotAMember() public {
        address stranger = address(0xBAD);
        vm.expectRevert(abi.encodeWithSelector(IMemberFacet.NotAMember.selector, stranger));
        vm.prank(stranger);
        IMessageFacet(cluster).send(bobId, ENVELOPE, _ciphertext(8));
    }

    /// @notice An allowlisted, deployed account that has not registered is not a member either.
    function test_RevertWhen_send_senderAllowlistedButUnregistered() public {
        Node memory dave = addNode("dave");
        vm.expectRevert(abi.encodeWithSelector(IMemberFacet.NotAMember.selector, dave.account));
        _send(dave, bobId, ENVELOPE, _ciphertext(8));
    }

    function test_RevertWhen_send_senderRevoked() public {
        vm.prank(operator);
        IMemberFacet(cluster).revokeMember(aliceId);
        vm.expectRevert(abi.encodeWithSelector(IMemberFacet.MemberNotActive.selector, aliceId));
        _send(alice, bobId, ENVELOPE, _ciphertext(8));
    }

    // ------------------------------------------------------------------ payload checks

    function test_RevertWhen_send_emptyCiphertext() public {
        vm.expectRevert(IMessageFacet.EmptyCiphertext.selector);
        _send(alice, bobId, ENVELOPE, "");
    }

    function test_RevertWhen_send_ciphertextTooLarge() public {
        vm.expectRevert(
            abi.encodeWithSelector(IMessageFacet.CiphertextTooLarge.selector, MAX_SIZE + 1, MAX_SIZE)
        );
        _send(alice, bobId, ENVELOPE, _ciphertext(MAX_SIZE + 1));
    }

    // ------------------------------------------------------------------ recipient checks

    function test_RevertWhen_send_recipientUnknown() public {
        uint64 unknown = 99;
        vm.expectRevert(abi.encodeWithSelector(IMessageFacet.RecipientNotActive.selector, unknown));
        _send(alice, unknown, ENVELOPE, _ciphertext(8));
    }

    /// @notice Id 0 is "no member", never a recipient.
    function test_RevertWhen_send_recipientIdZero() public {
        vm.expectRevert(abi.encodeWithSelector(IMessageFacet.RecipientNotActive.selector, uint64(0)));
        _send(alice, 0, ENVELOPE, _ciphertext(8));
    }

    function test_RevertWhen_send_recipientRevoked() public {
        vm.prank(operator);
        IMemberFacet(cluster).revokeMember(bobId);
        vm.expectRevert(abi.encodeWithSelector(IMessageFacet.RecipientNotActive.selector, bobId));
        _send(alice, bobId, ENVELOPE, _ciphertext(8));
    }

    // ------------------------------------------------------------------ replay

    function test_RevertWhen_send_envelopeAlreadyUsed() public {
        _send(alice, bobId, ENVELOPE, _ciphertext(8));
        vm.expectRevert(abi.encodeWithSelector(IMessageFacet.EnvelopeAlreadyUsed.selector, bobId, ENVELOPE));
        _send(alice, bobId, ENVELOPE, _ciphertext(16));
    }

    /// @notice The replay key is (recipient, envelope id), not the sender: an id one member used
    ///         toward a recipient is spent for every other member too.
    function test_RevertWhen_send_envelopeUsedByAnotherSender() public {
        Node memory carol = addNode("carol");
        registerDirect(carol);
        _send(carol, bobId, ENVELOPE, _ciphertext(8));
        vm.expectRevert(abi.encodeWithSelector(IMessageFacet.EnvelopeAlreadyUsed.selector, bobId, ENVELOPE));
        _send(alice, bobId, ENVELOPE, _ciphertext(8));
    }

    // ------------------------------------------------------------------ helpers

    function _send(Node memory from, uint64 to, bytes32 envelopeId, bytes memory ciphertext) private {
        vm.prank(from.account);
        IMessageFacet(cluster).send(to, envelopeId, ciphertext);
    }

    /// @notice Deterministic non-zero filler of `size` bytes (the facet never looks inside).
    function _ciphertext(uint256 size) private pure returns (bytes memory data) {
        data = new bytes(size);
        for (uint256 i = 0; i < size; ++i) {
            // casting to 'uint8' keeps the low byte on purpose: any filler will do.
            // forge-lint: disable-next-line(unsafe-typecast)
            data[i] = bytes1(uint8(i * 31 + 7));
        }
    }
}
