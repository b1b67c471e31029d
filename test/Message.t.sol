// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Envelope, SkipReason} from "../contracts/lib/ClusterTypes.sol";
import {IMemberFacet} from "../contracts/member/IMemberFacet.sol";
import {IMessageFacet} from "../contracts/message/IMessageFacet.sol";
import {ClusterFixture} from "./utils/ClusterFixture.sol";
import {Vm} from "./utils/Vm.sol";

/// @notice MessageFacet: sealed messages between active members, one use per (recipient, sender,
///         envelope id), singly or in batches that skip what `send` would refuse.
contract MessageTest is ClusterFixture {
    uint256 internal constant MAX_SIZE = 4096;
    uint256 internal constant MAX_BATCH = 64;
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
        vm.assertFalse(_used(bobId, aliceId, ENVELOPE), "fresh envelope");
        vm.expectEmit(cluster);
        emit IMessageFacet.MessageSent(bobId, aliceId, ENVELOPE, ciphertext);
        _send(alice, bobId, ENVELOPE, ciphertext);
        vm.assertTrue(_used(bobId, aliceId, ENVELOPE), "envelope used");
        // The key is (recipient, sender, id): the same id toward the sender, or from the
        // recipient, is still free.
        vm.assertFalse(_used(aliceId, aliceId, ENVELOPE), "other recipient");
        vm.assertFalse(_used(bobId, bobId, ENVELOPE), "other sender");
    }

    function test_send_sameEnvelopeIdToAnotherRecipientIsAccepted() public {
        Node memory carol = addNode("carol");
        uint64 carolId = registerDirect(carol);
        _send(alice, bobId, ENVELOPE, _ciphertext(32));
        vm.expectEmit(cluster);
        emit IMessageFacet.MessageSent(carolId, aliceId, ENVELOPE, _ciphertext(32));
        _send(alice, carolId, ENVELOPE, _ciphertext(32));
        vm.assertTrue(_used(carolId, aliceId, ENVELOPE), "used for carol too");
    }

    /// @notice Nothing forbids a member from sealing a message to itself (e.g. a note to a restart).
    function test_send_toSelfIsAccepted() public {
        _send(alice, aliceId, ENVELOPE, _ciphertext(1));
        vm.assertTrue(_used(aliceId, aliceId, ENVELOPE), "used");
    }

    /// @notice Envelope ids are deterministic, so another member can predict the id Alice will use
    ///         toward Bob and send it first. Keyed by sender, that spends only Carol's own id.
    function test_send_frontRunOfAnotherSendersEnvelopeIdDoesNotBlockIt() public {
        Node memory carol = addNode("carol");
        uint64 carolId = registerDirect(carol);
        _send(carol, bobId, ENVELOPE, hex"6a756e6b");
        vm.assertFalse(_used(bobId, aliceId, ENVELOPE), "alice's envelope still free");

        bytes memory real = _ciphertext(96);
        vm.expectEmit(cluster);
        emit IMessageFacet.MessageSent(bobId, aliceId, ENVELOPE, real);
        _send(alice, bobId, ENVELOPE, real);
        vm.assertTrue(_used(bobId, aliceId, ENVELOPE), "alice's envelope used");
        vm.assertTrue(_used(bobId, carolId, ENVELOPE), "carol's envelope used");
    }

    function test_maxCiphertextSize_is4096() public view {
        vm.assertEq(IMessageFacet(cluster).maxCiphertextSize(), MAX_SIZE, "cap");
    }

    function testFuzz_send_acceptsAnySizeUpToTheCap(uint256 sizeSeed, bytes32 envelopeId) public {
        uint256 size = bound(sizeSeed, 1, MAX_SIZE);
        _send(alice, bobId, envelopeId, _ciphertext(size));
        vm.assertTrue(_used(bobId, aliceId, envelopeId), "accepted");
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
        vm.expectRevert(
            abi.encodeWithSelector(IMessageFacet.EnvelopeAlreadyUsed.selector, bobId, aliceId, ENVELOPE)
        );
        _send(alice, bobId, ENVELOPE, _ciphertext(16));
    }

    /// @notice A front-runner's own id is spent like any other: it cannot send it twice either.
    function test_RevertWhen_send_frontRunnerReusesItsId() public {
        Node memory carol = addNode("carol");
        uint64 carolId = registerDirect(carol);
        _send(carol, bobId, ENVELOPE, _ciphertext(8));
        _send(alice, bobId, ENVELOPE, _ciphertext(8));
        vm.expectRevert(
            abi.encodeWithSelector(IMessageFacet.EnvelopeAlreadyUsed.selector, bobId, carolId, ENVELOPE)
        );
        _send(carol, bobId, ENVELOPE, _ciphertext(8));
    }

    // ------------------------------------------------------------------ sendBatch

    function test_maxBatchSize_is64() public view {
        vm.assertEq(IMessageFacet(cluster).maxBatchSize(), MAX_BATCH, "cap");
    }

    function test_sendBatch_sendsEveryEnvelopeInOrder() public {
        Node memory carol = addNode("carol");
        uint64 carolId = registerDirect(carol);
        Envelope[] memory batch = new Envelope[](3);
        batch[0] = Envelope(bobId, keccak256("b"), _ciphertext(10));
        batch[1] = Envelope(carolId, keccak256("c"), _ciphertext(20));
        batch[2] = Envelope(aliceId, keccak256("a"), _ciphertext(MAX_SIZE));
        for (uint256 i = 0; i < batch.length; ++i) {
            vm.expectEmit(cluster);
            emit IMessageFacet.MessageSent(
                batch[i].recipientMemberId, aliceId, batch[i].envelopeId, batch[i].ciphertext
            );
        }
        vm.assertEq(_sendBatch(alice, batch), 3, "sent");
        for (uint256 i = 0; i < batch.length; ++i) {
            vm.assertTrue(_used(batch[i].recipientMemberId, aliceId, batch[i].envelopeId), "marked used");
        }
    }

    /// @notice Every rule `send` reverts on skips just that entry; the rest go out, in order.
    function test_sendBatch_skipsEachInvalidEntryAndSendsTheRest() public {
        Node memory carol = addNode("carol");
        uint64 carolId = registerDirect(carol);
        vm.prank(operator);
        IMemberFacet(cluster).revokeMember(carolId);
        _send(alice, bobId, keccak256("spent"), _ciphertext(8));

        Envelope[] memory batch = new Envelope[](8);
        batch[0] = Envelope(bobId, keccak256("0"), _ciphertext(8));
        batch[1] = Envelope(bobId, keccak256("1"), "");
        batch[2] = Envelope(bobId, keccak256("2"), _ciphertext(MAX_SIZE + 1));
        batch[3] = Envelope(99, keccak256("3"), _ciphertext(8));
        batch[4] = Envelope(carolId, keccak256("4"), _ciphertext(8));
        batch[5] = Envelope(bobId, keccak256("spent"), _ciphertext(8));
        batch[6] = Envelope(bobId, keccak256("0"), _ciphertext(9)); // repeats entry 0
        batch[7] = Envelope(aliceId, keccak256("7"), _ciphertext(8));

        vm.recordLogs();
        vm.assertEq(_sendBatch(alice, batch), 2, "sent");
        Vm.Log[] memory logs = vm.getRecordedLogs();
        vm.assertEq(logs.length, batch.length, "one event per entry");
        _assertSent(logs[0], batch[0]);
        _assertSkipped(logs[1], batch[1], SkipReason.EmptyCiphertext);
        _assertSkipped(logs[2], batch[2], SkipReason.CiphertextTooLarge);
        _assertSkipped(logs[3], batch[3], SkipReason.RecipientNotActive);
        _assertSkipped(logs[4], batch[4], SkipReason.RecipientNotActive);
        _assertSkipped(logs[5], batch[5], SkipReason.AlreadyUsed);
        _assertSkipped(logs[6], batch[6], SkipReason.AlreadyUsed);
        _assertSent(logs[7], batch[7]);

        vm.assertTrue(_used(bobId, aliceId, keccak256("0")), "entry 0 used");
        vm.assertTrue(_used(aliceId, aliceId, keccak256("7")), "entry 7 used");
        vm.assertFalse(_used(bobId, aliceId, keccak256("1")), "empty entry not used");
        vm.assertFalse(_used(bobId, aliceId, keccak256("2")), "oversized entry not used");
        vm.assertFalse(_used(99, aliceId, keccak256("3")), "unknown recipient not used");
        vm.assertFalse(_used(carolId, aliceId, keccak256("4")), "revoked recipient not used");
    }

    /// @notice A skipped entry spends nothing: the same id goes out once it is fixed.
    function test_sendBatch_skippedEnvelopeIdCanBeSentLater() public {
        Envelope[] memory batch = new Envelope[](1);
        batch[0] = Envelope(bobId, ENVELOPE, _ciphertext(MAX_SIZE + 1));
        vm.expectEmit(cluster);
        emit IMessageFacet.MessageSkipped(bobId, aliceId, ENVELOPE, SkipReason.CiphertextTooLarge);
        vm.assertEq(_sendBatch(alice, batch), 0, "nothing sent");
        vm.assertFalse(_used(bobId, aliceId, ENVELOPE), "not spent");
        batch[0].ciphertext = _ciphertext(MAX_SIZE);
        vm.assertEq(_sendBatch(alice, batch), 1, "sent once fixed");
    }

    /// @notice The batch path is keyed by sender too: a front-run id does not skip Alice's entry.
    function test_sendBatch_frontRunOfAnotherSendersEnvelopeIdDoesNotSkipIt() public {
        Node memory carol = addNode("carol");
        registerDirect(carol);
        _send(carol, bobId, ENVELOPE, hex"6a756e6b");
        Envelope[] memory batch = new Envelope[](1);
        batch[0] = Envelope(bobId, ENVELOPE, _ciphertext(32));
        vm.expectEmit(cluster);
        emit IMessageFacet.MessageSent(bobId, aliceId, ENVELOPE, batch[0].ciphertext);
        vm.assertEq(_sendBatch(alice, batch), 1, "sent");
    }

    function test_sendBatch_acceptsTheMaximumBatch() public {
        vm.assertEq(_sendBatch(alice, _batch(bobId, MAX_BATCH, 16)), MAX_BATCH, "all sent");
    }

    function test_sendBatch_gasSnapshots() public {
        _snapshotBatch(1, "sendBatch_1_x_256_bytes");
        _snapshotBatch(8, "sendBatch_8_x_256_bytes");
        _snapshotBatch(32, "sendBatch_32_x_256_bytes");
    }

    /// @notice Random batches mixing every kind of bad entry (including repeats of earlier
    ///         entries, valid or not): `sent` is the number of valid entries, each entry gets one
    ///         event with the right reason, valid entries are marked used and invalid ones are not.
    function testFuzz_sendBatch_sendsExactlyTheValidEntries(uint256 seed, uint8 sizeSeed) public {
        Node memory carol = addNode("carol");
        uint64 carolId = registerDirect(carol);
        vm.prank(operator);
        IMemberFacet(cluster).revokeMember(carolId);
        _send(alice, bobId, keccak256("spent"), _ciphertext(8));

        uint256 size = bound(sizeSeed, 1, 24);
        Envelope[] memory batch = new Envelope[](size);
        for (uint256 i = 0; i < size; ++i) {
            uint256 r = uint256(keccak256(abi.encode(seed, i)));
            uint64 to = (r >> 8) % 2 == 0 ? bobId : aliceId;
            bytes32 id = keccak256(abi.encode("fresh", seed, i));
            bytes memory ciphertext = _ciphertext(1 + (r >> 16) % 300);
            uint256 kind = r % 7;
            if (kind == 1) ciphertext = "";
            if (kind == 2) ciphertext = _ciphertext(MAX_SIZE + 1 + (r >> 16) % 64);
            if (kind == 3) to = carolId; // revoked
            if (kind == 4) to = uint64(carolId + 1 + (r >> 32) % 1000); // never registered
            if (kind == 5) (to, id) = (bobId, keccak256("spent"));
            if (kind == 6 && i > 0) {
                uint256 j = (r >> 32) % i;
                (to, id) = (batch[j].recipientMemberId, batch[j].envelopeId);
                if ((r >> 48) % 3 == 0) ciphertext = "";
            }
            batch[i] = Envelope(to, id, ciphertext);
        }

        (bool[] memory valid, SkipReason[] memory reasons, uint256 expected) = _model(batch);
        vm.recordLogs();
        vm.assertEq(_sendBatch(alice, batch), expected, "sent == valid entries");
        Vm.Log[] memory logs = vm.getRecordedLogs();
        vm.assertEq(logs.length, size, "one event per entry");
        for (uint256 i = 0; i < size; ++i) {
            if (valid[i]) _assertSent(logs[i], batch[i]);
            else _assertSkipped(logs[i], batch[i], reasons[i]);
            // Used exactly when some valid entry of the batch (or the earlier send) has its key.
            bool sentByBatch = false;
            for (uint256 k = 0; k < size; ++k) {
                sentByBatch = sentByBatch || (valid[k] && _sameKey(batch[k], batch[i]));
            }
            bool spentBefore =
                batch[i].recipientMemberId == bobId && batch[i].envelopeId == keccak256("spent");
            vm.assertEq(
                _used(batch[i].recipientMemberId, aliceId, batch[i].envelopeId),
                sentByBatch || spentBefore,
                valid[i] ? "valid entry used" : "invalid entry not used"
            );
        }
    }

    function test_RevertWhen_sendBatch_empty() public {
        vm.expectRevert(IMessageFacet.EmptyBatch.selector);
        _sendBatch(alice, new Envelope[](0));
    }

    function test_RevertWhen_sendBatch_tooLarge() public {
        Envelope[] memory batch = _batch(bobId, MAX_BATCH + 1, 1);
        vm.expectRevert(
            abi.encodeWithSelector(IMessageFacet.BatchTooLarge.selector, MAX_BATCH + 1, MAX_BATCH)
        );
        _sendBatch(alice, batch);
    }

    function test_RevertWhen_sendBatch_senderNotAMember() public {
        address stranger = address(0xBAD);
        Envelope[] memory batch = _batch(bobId, 1, 8);
        vm.expectRevert(abi.encodeWithSelector(IMemberFacet.NotAMember.selector, stranger));
        vm.prank(stranger);
        IMessageFacet(cluster).sendBatch(batch);
    }

    function test_RevertWhen_sendBatch_senderRevoked() public {
        vm.prank(operator);
        IMemberFacet(cluster).revokeMember(aliceId);
        Envelope[] memory batch = _batch(bobId, 1, 8);
        vm.expectRevert(abi.encodeWithSelector(IMemberFacet.MemberNotActive.selector, aliceId));
        _sendBatch(alice, batch);
    }

    // ------------------------------------------------------------------ helpers

    function _send(Node memory from, uint64 to, bytes32 envelopeId, bytes memory ciphertext) private {
        vm.prank(from.account);
        IMessageFacet(cluster).send(to, envelopeId, ciphertext);
    }

    function _sendBatch(Node memory from, Envelope[] memory batch) private returns (uint256) {
        vm.prank(from.account);
        return IMessageFacet(cluster).sendBatch(batch);
    }

    function _used(uint64 recipient, uint64 sender, bytes32 envelopeId) private view returns (bool) {
        return IMessageFacet(cluster).isEnvelopeUsed(recipient, sender, envelopeId);
    }

    /// @notice `count` valid envelopes of `size` bytes to `to`, with ids distinct within and across counts.
    function _batch(uint64 to, uint256 count, uint256 size) private pure returns (Envelope[] memory batch) {
        batch = new Envelope[](count);
        bytes memory ciphertext = _ciphertext(size);
        for (uint256 i = 0; i < count; ++i) {
            batch[i] = Envelope(to, keccak256(abi.encode("batch", count, i)), ciphertext);
        }
    }

    function _snapshotBatch(uint256 count, string memory name) private {
        Envelope[] memory batch = _batch(bobId, count, 256);
        vm.prank(alice.account);
        uint256 sent = IMessageFacet(cluster).sendBatch(batch);
        vm.snapshotGasLastCall(name);
        vm.assertEq(sent, count, "the snapshot measures sent envelopes, none skipped");
    }

    /// @notice The fuzz model of sendBatch, in memory: the rules in send's order, with alice and
    ///         bob the only active members and (bob, "spent") already used.
    function _model(Envelope[] memory batch)
        private
        view
        returns (bool[] memory valid, SkipReason[] memory reasons, uint256 count)
    {
        valid = new bool[](batch.length);
        reasons = new SkipReason[](batch.length);
        for (uint256 i = 0; i < batch.length; ++i) {
            Envelope memory e = batch[i];
            bool spent = e.recipientMemberId == bobId && e.envelopeId == keccak256("spent");
            for (uint256 k = 0; k < i; ++k) {
                spent = spent || (valid[k] && _sameKey(batch[k], e));
            }
            if (e.ciphertext.length == 0) {
                reasons[i] = SkipReason.EmptyCiphertext;
            } else if (e.ciphertext.length > MAX_SIZE) {
                reasons[i] = SkipReason.CiphertextTooLarge;
            } else if (e.recipientMemberId != aliceId && e.recipientMemberId != bobId) {
                reasons[i] = SkipReason.RecipientNotActive;
            } else if (spent) {
                reasons[i] = SkipReason.AlreadyUsed;
            } else {
                valid[i] = true;
                ++count;
            }
        }
    }

    function _sameKey(Envelope memory a, Envelope memory b) private pure returns (bool) {
        return a.recipientMemberId == b.recipientMemberId && a.envelopeId == b.envelopeId;
    }

    function _assertSent(Vm.Log memory log, Envelope memory e) private view {
        vm.assertEq(log.emitter, cluster, "emitter");
        vm.assertEq(log.topics[0], IMessageFacet.MessageSent.selector, "MessageSent");
        _assertKey(log, e);
        vm.assertEq(log.data, abi.encode(e.ciphertext), "ciphertext");
    }

    function _assertSkipped(Vm.Log memory log, Envelope memory e, SkipReason reason) private view {
        vm.assertEq(log.emitter, cluster, "emitter");
        vm.assertEq(log.topics[0], IMessageFacet.MessageSkipped.selector, "MessageSkipped");
        _assertKey(log, e);
        vm.assertEq(log.data, abi.encode(reason), "skip reason");
    }

    function _assertKey(Vm.Log memory log, Envelope memory e) private view {
        vm.assertEq(log.topics[1], bytes32(uint256(e.recipientMemberId)), "recipient");
        vm.assertEq(log.topics[2], bytes32(uint256(aliceId)), "sender");
        vm.assertEq(log.topics[3], e.envelopeId, "envelope id");
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
