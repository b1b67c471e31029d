// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IMemberAccount} from "../contracts/account/IMemberAccount.sol";
import {DstackProof, Envelope} from "../contracts/lib/ClusterTypes.sol";
import {RegistrationDigest} from "../contracts/lib/RegistrationDigest.sol";
import {IMemberFacet} from "../contracts/member/IMemberFacet.sol";
import {IMessageFacet} from "../contracts/message/IMessageFacet.sol";
import {IRegistrationFacet} from "../contracts/registration/IRegistrationFacet.sol";
import {ISponsorshipFacet} from "../contracts/sponsorship/ISponsorshipFacet.sol";
import {ClusterFixture} from "./utils/ClusterFixture.sol";

/// @notice The sponsorship policy the paymaster webhook asks: every yes and every no, with its reason.
contract SponsorshipTest is ClusterFixture {
    ISponsorshipFacet internal policy;

    function setUp() public {
        setUpCluster();
        policy = ISponsorshipFacet(cluster);
    }

    function registerCall(Node memory n) internal returns (bytes memory) {
        return abi.encodeCall(IMemberAccount.register, (proofFor(n), n.keys));
    }

    function registerCall(DstackProof memory p, Node memory n) internal pure returns (bytes memory) {
        return abi.encodeCall(IMemberAccount.register, (p, n.keys));
    }

    function executeCall(bytes memory data) internal pure returns (bytes memory) {
        return abi.encodeCall(IMemberAccount.execute, (data));
    }

    function executeBatchCall(bytes[] memory list) internal pure returns (bytes memory) {
        return abi.encodeCall(IMemberAccount.executeBatch, (list));
    }

    function sendBatchCall(Envelope[] memory batch) internal pure returns (bytes memory) {
        return abi.encodeCall(IMessageFacet.sendBatch, (batch));
    }

    /// @notice `count` sendable envelopes to `to` with distinct ids.
    function envelopes(uint64 to, uint256 count) internal pure returns (Envelope[] memory batch) {
        batch = new Envelope[](count);
        for (uint256 i = 0; i < count; ++i) {
            batch[i] = Envelope(to, keccak256(abi.encode("env", i)), new bytes(64));
        }
    }

    function calls(bytes memory a) internal pure returns (bytes[] memory c) {
        c = new bytes[](1);
        c[0] = a;
    }

    function calls(bytes memory a, bytes memory b) internal pure returns (bytes[] memory c) {
        c = new bytes[](2);
        (c[0], c[1]) = (a, b);
    }

    function calls(bytes memory a, bytes memory b, bytes memory d) internal pure returns (bytes[] memory c) {
        c = new bytes[](3);
        (c[0], c[1], c[2]) = (a, b, d);
    }

    /// @notice Two registered members: a (id 1, may commit the CSK) and b (id 2).
    function twoMembers() internal returns (Node memory a, Node memory b) {
        a = addNode("node-a");
        b = addNode("node-b");
        registerDirect(a);
        registerDirect(b);
    }

    /// @notice The policy reverts (with no data: an ABI decoding failure) instead of answering.
    function assertDoesNotDecode(bytes memory callData) internal view {
        (bool ok, bytes memory data) = address(policy)
            .staticcall(abi.encodeCall(ISponsorshipFacet.checkSponsorship, (address(1), callData)));
        vm.assertFalse(ok, "reverted");
        vm.assertEq(data.length, 0, "a decoding failure carries no revert data");
    }

    function assertDecision(address sender, bytes memory callData, bool expected, string memory reason)
        internal
        view
    {
        (bool ok, string memory got) = policy.checkSponsorship(sender, callData);
        vm.assertEq(ok, expected, reason);
        vm.assertEq(got, reason, "reason");
    }

    function test_checkSponsorship_bootstrapRegistrationIsSponsored() public {
        Node memory n = addNode("node-a");
        assertDecision(n.account, registerCall(n), true, "");
    }

    function test_checkSponsorship_deniesBadRegistrations() public {
        Node memory n = addNode("node-a");
        Node memory stranger = makeNode("stranger");
        assertDecision(
            stranger.account,
            registerCall(stranger),
            false,
            "sender is not an allowlisted member account of this cluster"
        );
        assertDecision(address(0xCAFE), registerCall(n), false, "proof app id is not the sender account");

        DstackProof memory p = proofFor(n);
        p.messageHash = keccak256("unbound");
        assertDecision(
            n.account,
            registerCall(p, n),
            false,
            "proof message hash does not bind this chain, cluster, account and keys"
        );

        p = proofFor(n);
        p.derivedPublicKey = hex"02";
        assertDecision(n.account, registerCall(p, n), false, "dstack proof: derived public key is malformed");
        p = proofFor(n);
        p.appPublicKey = hex"03";
        assertDecision(n.account, registerCall(p, n), false, "dstack proof: app public key is malformed");
        p = proofFor(n);
        p.purpose = "other";
        assertDecision(n.account, registerCall(p, n), false, "dstack proof: app signature is invalid");
        p = proofFor(n);
        p.kmsSignature = hex"00";
        assertDecision(n.account, registerCall(p, n), false, "dstack proof: KMS signature is invalid");

        vm.prank(operator);
        IRegistrationFacet(cluster).setKmsRootAllowed(vm.addr(KMS_ROOT_KEY), false);
        assertDecision(n.account, registerCall(n), false, "KMS root is not allowlisted");
    }

    /// @notice The owner pays its own withdrawals: a sponsored one would hand the paymaster's
    ///         deposit to the member (it pays the gas, the member keeps its own deposit).
    function test_checkSponsorship_neverSponsorsWithdrawDepositTo() public {
        Node memory a = addNode("node-a");
        registerDirect(a);
        assertDecision(
            a.account,
            abi.encodeCall(IMemberAccount.withdrawDepositTo, (payable(a.account), 1 ether)),
            false,
            "only member-account register and execute are sponsored (register, execute, executeBatch; never withdrawDepositTo)"
        );
    }

    /// @notice A chain the KMS really issued, but for another GetKey purpose, is no owner key.
    function test_checkSponsorship_deniesAProofForAnotherPurpose() public {
        Node memory n = addNode("node-a");
        bytes32 digest = RegistrationDigest.compute(block.chainid, cluster, n.account, n.keys);
        DstackProof memory p = chainedProof(n, digest, "attestmesh-identity", KMS_ROOT_KEY);
        assertDecision(n.account, registerCall(p, n), false, "proof purpose is not attestmesh-owner");
    }

    /// @notice A chain under a KMS root the cluster does not trust (e.g. an attacker's own) is refused,
    ///         so no paymaster ever signs the bootstrap it would take to spend a pre-funded account.
    function test_checkSponsorship_deniesAProofUnderAnotherKmsRoot() public {
        Node memory n = addNode("node-a");
        bytes32 digest = RegistrationDigest.compute(block.chainid, cluster, n.account, n.keys);
        DstackProof memory p = chainedProof(n, digest, OWNER_PURPOSE, uint256(keccak256("attacker kms root")));
        assertDecision(n.account, registerCall(p, n), false, "KMS root is not allowlisted");
    }

    function test_checkSponsorship_deniesMessageSignedByAnotherKey() public {
        Node memory n = addNode("node-a");
        DstackProof memory p = proofFor(n);
        p.messageSignature = signEth(n.appKey, keccak256("x"));
        assertDecision(n.account, registerCall(p, n), false, "dstack proof: message signature is invalid");
    }

    function test_checkSponsorship_deniesRegistrationOfExistingOrRevokedMembers() public {
        Node memory n = addNode("node-a");
        registerDirect(n);
        assertDecision(n.account, registerCall(n), false, "account is already an active member");
        Node memory changed = n;
        changed.keys.x25519 = keccak256("new key");
        assertDecision(n.account, registerCall(changed), false, "account is a member with different keys");
        vm.prank(operator);
        IMemberFacet(cluster).revokeMember(1);
        assertDecision(n.account, registerCall(n), false, "member account is revoked");
    }

    function test_checkSponsorship_memberSendIsSponsored() public {
        Node memory a = addNode("node-a");
        Node memory b = addNode("node-b");
        registerDirect(a);
        registerDirect(b);
        bytes memory send = abi.encodeCall(IMessageFacet.send, (2, bytes32("env-1"), new bytes(256)));
        assertDecision(a.account, executeCall(send), true, "");
    }

    function test_checkSponsorship_deniesSendsThatWouldRevert() public {
        Node memory a = addNode("node-a");
        Node memory b = addNode("node-b");
        registerDirect(a);
        registerDirect(b);
        assertDecision(
            a.account,
            executeCall(abi.encodeCall(IMessageFacet.send, (2, bytes32("e"), new bytes(0)))),
            false,
            "message ciphertext is empty"
        );
        assertDecision(
            a.account,
            executeCall(abi.encodeCall(IMessageFacet.send, (2, bytes32("e"), new bytes(4097)))),
            false,
            "message ciphertext too large"
        );
        assertDecision(
            a.account,
            executeCall(abi.encodeCall(IMessageFacet.send, (9, bytes32("e"), new bytes(8)))),
            false,
            "message recipient is not an active member"
        );
        vm.prank(a.account);
        IMessageFacet(cluster).send(2, bytes32("used"), hex"01");
        assertDecision(
            a.account,
            executeCall(abi.encodeCall(IMessageFacet.send, (2, bytes32("used"), new bytes(8)))),
            false,
            "message envelope id already used"
        );
    }

    function test_checkSponsorship_cskCommitmentOnlyForFirstRegistrantOnce() public {
        Node memory a = addNode("node-a");
        Node memory b = addNode("node-b");
        registerDirect(a);
        registerDirect(b);
        bytes memory commit = abi.encodeCall(IMemberFacet.commitClusterSharedKey, (0, keccak256("csk")));
        assertDecision(a.account, executeCall(commit), true, "");
        assertDecision(b.account, executeCall(commit), false, "only the epoch's originator commits its CSK");
        assertDecision(
            a.account,
            executeCall(abi.encodeCall(IMemberFacet.commitClusterSharedKey, (0, bytes32(0)))),
            false,
            "CSK commitment is zero"
        );
        vm.prank(a.account);
        IMemberFacet(cluster).commitClusterSharedKey(0, keccak256("csk"));
        assertDecision(a.account, executeCall(commit), false, "CSK commitment already set");
    }

    /// @notice After member 1 is revoked, the policy pays for the successor's commitment of the
    ///         new epoch only: not the revoked member's, not a stale epoch's.
    function test_checkSponsorship_cskCommitmentFollowsTheEpochOriginator() public {
        (Node memory a, Node memory b) = twoMembers();
        vm.prank(operator);
        IMemberFacet(cluster).revokeMember(1);
        bytes memory epochOne = abi.encodeCall(IMemberFacet.commitClusterSharedKey, (1, keccak256("epoch 1")));
        bytes memory epochZero =
            abi.encodeCall(IMemberFacet.commitClusterSharedKey, (0, keccak256("epoch 0")));
        assertDecision(b.account, executeCall(epochOne), true, "");
        assertDecision(b.account, executeCall(epochZero), false, "CSK epoch is not the current one");
        (bool sponsorable,) = policy.checkSponsorship(a.account, executeCall(epochOne));
        vm.assertFalse(sponsorable, "the revoked member is never sponsored");
    }

    function test_checkSponsorship_deniesEverythingElse() public {
        Node memory a = addNode("node-a");
        Node memory outsider = addNode("outsider");
        registerDirect(a);
        assertDecision(a.account, hex"", false, "calldata has no function selector");
        assertDecision(
            a.account,
            hex"deadbeef",
            false,
            "only member-account register and execute are sponsored (register, execute, executeBatch; never withdrawDepositTo)"
        );
        assertDecision(
            a.account,
            executeCall(abi.encodeCall(IMemberFacet.revokeMember, (1))),
            false,
            "member call is not a sponsored cluster function"
        );
        assertDecision(a.account, executeCall(hex"00"), false, "member call has no function selector");
        assertDecision(
            outsider.account,
            executeCall(abi.encodeCall(IMessageFacet.send, (1, bytes32("e"), hex"01"))),
            false,
            "sender is not an active member"
        );
    }

    // ------------------------------------------------------------------ send, keyed by sender

    /// @notice Another member having used the same (recipient, id) does not make Alice's send
    ///         foreseeably fail; her own earlier use does.
    function test_checkSponsorship_sendIsKeyedBySender() public {
        (Node memory a,) = twoMembers();
        Node memory c = addNode("node-c");
        registerDirect(c);
        vm.prank(c.account);
        IMessageFacet(cluster).send(2, bytes32("x"), hex"01");
        bytes memory send = abi.encodeCall(IMessageFacet.send, (2, bytes32("x"), new bytes(8)));
        assertDecision(a.account, executeCall(send), true, "");
        assertDecision(c.account, executeCall(send), false, "message envelope id already used");
    }

    // ------------------------------------------------------------------ execute(sendBatch)

    function test_checkSponsorship_memberSendBatchIsSponsored() public {
        (Node memory a,) = twoMembers();
        assertDecision(a.account, executeCall(sendBatchCall(envelopes(2, 1))), true, "");
        assertDecision(a.account, executeCall(sendBatchCall(envelopes(2, 64))), true, "");
        // Recipients may differ, and the same id toward two recipients is two envelopes.
        Envelope[] memory batch = envelopes(2, 2);
        batch[1].recipientMemberId = 1;
        batch[1].envelopeId = batch[0].envelopeId;
        assertDecision(a.account, executeCall(sendBatchCall(batch)), true, "");
    }

    /// @notice An id another member already used toward the same recipient is not foreseeably skipped.
    function test_checkSponsorship_sendBatchIgnoresOtherSendersIds() public {
        (Node memory a, Node memory b) = twoMembers();
        Envelope[] memory batch = envelopes(1, 3);
        vm.prank(a.account);
        IMessageFacet(cluster).send(1, batch[1].envelopeId, hex"01");
        assertDecision(b.account, executeCall(sendBatchCall(batch)), true, "");
    }

    function test_checkSponsorship_deniesSendBatchSizes() public {
        (Node memory a,) = twoMembers();
        assertDecision(
            a.account, executeCall(sendBatchCall(new Envelope[](0))), false, "envelope batch is empty"
        );
        assertDecision(
            a.account,
            executeCall(sendBatchCall(envelopes(2, 65))),
            false,
            "envelope batch has more than 64 envelopes"
        );
    }

    /// @notice Each rule sendBatch would skip an entry for, named with the entry's index.
    function test_checkSponsorship_deniesSendBatchesWithAnEnvelopeThatWouldBeSkipped() public {
        (Node memory a,) = twoMembers();
        Node memory c = addNode("node-c");
        registerDirect(c);
        vm.prank(operator);
        IMemberFacet(cluster).revokeMember(3);

        Envelope[] memory batch = envelopes(2, 5);
        batch[1].ciphertext = "";
        _assertBatchDenied(a, batch, "envelope 1: ciphertext is empty");

        batch = envelopes(2, 5);
        batch[2].ciphertext = new bytes(4097);
        _assertBatchDenied(a, batch, "envelope 2: ciphertext too large");

        batch = envelopes(2, 5);
        batch[3].recipientMemberId = 9;
        _assertBatchDenied(a, batch, "envelope 3: recipient is not an active member");

        batch = envelopes(2, 5);
        batch[0].recipientMemberId = 3; // revoked
        _assertBatchDenied(a, batch, "envelope 0: recipient is not an active member");

        batch = envelopes(2, 5);
        batch[4].recipientMemberId = 0;
        _assertBatchDenied(a, batch, "envelope 4: recipient is not an active member");

        batch = envelopes(2, 5);
        vm.prank(a.account);
        IMessageFacet(cluster).send(2, batch[1].envelopeId, hex"01");
        _assertBatchDenied(a, batch, "envelope 1: envelope id already used");

        batch = envelopes(1, 5);
        batch[4].envelopeId = batch[2].envelopeId;
        _assertBatchDenied(
            a, batch, "envelope 4: repeats the recipient and envelope id of an earlier envelope"
        );
    }

    function test_checkSponsorship_deniesSendBatchFromANonMember() public {
        twoMembers();
        Node memory outsider = addNode("outsider");
        assertDecision(
            outsider.account,
            executeCall(sendBatchCall(envelopes(2, 1))),
            false,
            "sender is not an active member"
        );
    }

    // ------------------------------------------------------------------ executeBatch

    function test_checkSponsorship_executeBatchOfSponsorableCallsIsSponsored() public {
        (Node memory a,) = twoMembers();
        bytes memory commit = abi.encodeCall(IMemberFacet.commitClusterSharedKey, (0, keccak256("csk")));
        bytes memory batch = sendBatchCall(envelopes(2, 2));
        bytes memory send = abi.encodeCall(IMessageFacet.send, (2, bytes32("single"), new bytes(8)));
        assertDecision(a.account, executeBatchCall(calls(commit, batch)), true, "");
        assertDecision(a.account, executeBatchCall(calls(batch)), true, "");
        assertDecision(a.account, executeBatchCall(calls(send, batch, commit)), true, "");
    }

    function test_checkSponsorship_deniesExecuteBatchSizes() public {
        (Node memory a,) = twoMembers();
        assertDecision(a.account, executeBatchCall(new bytes[](0)), false, "batch has no calls");
        bytes[] memory five = new bytes[](5);
        for (uint256 i = 0; i < five.length; ++i) {
            five[i] = abi.encodeCall(IMessageFacet.send, (2, bytes32(i), new bytes(8)));
        }
        assertDecision(a.account, executeBatchCall(five), false, "batch has more than 4 calls");
        // Four calls are allowed, but there are only three sponsorable functions, so the fourth repeats one.
        bytes[] memory four = new bytes[](4);
        four[0] = abi.encodeCall(IMemberFacet.commitClusterSharedKey, (0, keccak256("csk")));
        four[1] = sendBatchCall(envelopes(2, 1));
        four[2] = abi.encodeCall(IMessageFacet.send, (2, bytes32("single"), new bytes(8)));
        four[3] = abi.encodeCall(IMessageFacet.send, (2, bytes32("other"), new bytes(8)));
        assertDecision(
            a.account, executeBatchCall(four), false, "call 3: repeats the function of an earlier call"
        );
    }

    function test_checkSponsorship_deniesExecuteBatchWithARepeatedFunction() public {
        (Node memory a,) = twoMembers();
        bytes memory commit = abi.encodeCall(IMemberFacet.commitClusterSharedKey, (0, keccak256("csk")));
        assertDecision(
            a.account,
            executeBatchCall(calls(commit, commit)),
            false,
            "call 1: repeats the function of an earlier call"
        );
        Envelope[] memory first = envelopes(2, 1);
        Envelope[] memory second = envelopes(1, 1);
        assertDecision(
            a.account,
            executeBatchCall(calls(sendBatchCall(first), sendBatchCall(second))),
            false,
            "call 1: repeats the function of an earlier call"
        );
    }

    /// @notice Each inner refusal is the member-call rule's own reason, prefixed with the call index.
    function test_checkSponsorship_deniesExecuteBatchWithAnUnsponsorableCall() public {
        (Node memory a, Node memory b) = twoMembers();
        bytes memory commit = abi.encodeCall(IMemberFacet.commitClusterSharedKey, (0, keccak256("csk")));
        bytes memory batch = sendBatchCall(envelopes(2, 2));
        assertDecision(
            a.account,
            executeBatchCall(calls(commit, abi.encodeCall(IMemberFacet.revokeMember, (2)))),
            false,
            "call 1: member call is not a sponsored cluster function"
        );
        assertDecision(
            a.account,
            executeBatchCall(calls(hex"00", batch)),
            false,
            "call 0: member call has no function selector"
        );
        assertDecision(
            b.account,
            executeBatchCall(calls(batch, commit)),
            false,
            "call 1: only the epoch's originator commits its CSK"
        );
        Envelope[] memory bad = envelopes(2, 4);
        bad[3].recipientMemberId = 7;
        assertDecision(
            a.account,
            executeBatchCall(calls(commit, sendBatchCall(bad))),
            false,
            "call 1: envelope 3: recipient is not an active member"
        );
        assertDecision(
            a.account,
            executeBatchCall(calls(abi.encodeCall(IMessageFacet.send, (2, bytes32("e"), new bytes(0))))),
            false,
            "call 0: message ciphertext is empty"
        );
        // The account cannot call itself through the cluster: execute/executeBatch are not cluster functions.
        assertDecision(
            a.account,
            executeBatchCall(calls(executeCall(commit))),
            false,
            "call 0: member call is not a sponsored cluster function"
        );
    }

    /// @notice A send and a sendBatch in one operation must not carry the same envelope: the later
    ///         one would be skipped (sendBatch) or revert the whole operation (send).
    function test_checkSponsorship_deniesExecuteBatchRepeatingAnEnvelopeAcrossCalls() public {
        (Node memory a,) = twoMembers();
        Envelope[] memory batch = envelopes(2, 3);
        bytes memory send = abi.encodeCall(IMessageFacet.send, (2, batch[1].envelopeId, new bytes(8)));
        assertDecision(
            a.account,
            executeBatchCall(calls(send, sendBatchCall(batch))),
            false,
            "call 1: envelope 1: repeats the recipient and envelope id of an earlier envelope"
        );
        assertDecision(
            a.account,
            executeBatchCall(calls(sendBatchCall(batch), send)),
            false,
            "call 1: message repeats the recipient and envelope id of an earlier envelope"
        );
    }

    function test_checkSponsorship_deniesExecuteBatchFromANonMemberOrARevokedMember() public {
        (Node memory a,) = twoMembers();
        Node memory outsider = addNode("outsider");
        bytes memory callData = executeBatchCall(calls(sendBatchCall(envelopes(2, 1))));
        assertDecision(outsider.account, callData, false, "sender is not an active member");
        vm.prank(operator);
        IMemberFacet(cluster).revokeMember(1);
        assertDecision(a.account, callData, false, "sender is not an active member");
    }

    // ------------------------------------------------------------------ malformed calldata

    function test_RevertWhen_checkSponsorship_calldataDoesNotDecode() public view {
        assertDoesNotDecode(abi.encodePacked(IMemberAccount.register.selector, hex"0102"));
        assertDoesNotDecode(abi.encodePacked(IMemberAccount.executeBatch.selector, hex"0102"));
    }

    function test_RevertWhen_checkSponsorship_sendBatchDoesNotDecode() public {
        (Node memory a,) = twoMembers();
        bytes memory callData = executeCall(abi.encodePacked(IMessageFacet.sendBatch.selector, hex"0102"));
        (bool ok, bytes memory data) = address(policy)
            .staticcall(abi.encodeCall(ISponsorshipFacet.checkSponsorship, (a.account, callData)));
        vm.assertFalse(ok, "reverted");
        vm.assertEq(data.length, 0, "a decoding failure carries no revert data");
    }

    function _assertBatchDenied(Node memory from, Envelope[] memory batch, string memory reason)
        private
        view
    {
        assertDecision(from.account, executeCall(sendBatchCall(batch)), false, reason);
    }
}
