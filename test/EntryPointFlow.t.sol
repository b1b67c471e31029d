// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IEntryPoint} from "@account-abstraction/contracts/interfaces/IEntryPoint.sol";
import {PackedUserOperation} from "@account-abstraction/contracts/interfaces/PackedUserOperation.sol";
import {IMemberAccount} from "../contracts/account/IMemberAccount.sol";
import {ClusterFactory} from "../contracts/factory/ClusterFactory.sol";
import {Envelope, SkipReason} from "../contracts/lib/ClusterTypes.sol";
import {IMemberFacet} from "../contracts/member/IMemberFacet.sol";
import {IMessageFacet} from "../contracts/message/IMessageFacet.sol";
import {ISponsorshipFacet} from "../contracts/sponsorship/ISponsorshipFacet.sol";
import {ClusterFixture} from "./utils/ClusterFixture.sol";

/// @notice The whole ERC-4337 path in Foundry: the real EntryPoint v0.7, the factory, a cluster,
///         member accounts and the verifying paymaster. Nodes hold no ETH; the paymaster pays.
contract EntryPointFlowTest is ClusterFixture {
    function setUp() public {
        setUpCluster();
    }

    /// @notice The first operation of a node deploys its account through initCode and registers it.
    function bootstrapOp(Node memory n) internal returns (PackedUserOperation memory op) {
        op = baseOp(n.account, abi.encodeCall(IMemberAccount.register, (proofFor(n), n.keys)));
        op.initCode = abi.encodePacked(
            address(factory), abi.encodeCall(ClusterFactory.createMemberAccount, (cluster, n.salt))
        );
        sponsor(op);
        signOp(op, n.derivedKey);
    }

    function allowlist(Node memory n) internal {
        vm.prank(operator);
        (bool ok,) = cluster.call(abi.encodeWithSignature("setAppIdAllowed(address,bool)", n.account, true));
        require(ok, "allowlist");
    }

    function test_handleOps_sponsoredRegisterThenSendThenCommit() public {
        Node memory a = makeNode("node-a");
        Node memory b = makeNode("node-b");
        allowlist(a);
        allowlist(b);
        vm.assertEq(a.account.code.length, 0, "account not deployed yet");

        uint256 depositBefore = paymaster.getDeposit();
        handle(bootstrapOp(a));
        vm.snapshotGasLastCall("handleOps_bootstrap_register_with_initcode");
        handle(bootstrapOp(b));

        IMemberFacet members = IMemberFacet(cluster);
        vm.assertEq(members.activeMemberCount(), 2, "both registered");
        vm.assertEq(IMemberAccount(a.account).owner(), vm.addr(a.derivedKey), "owner is the derived key");
        vm.assertEq(entryPoint.getNonce(a.account, 0), 1, "nonce advanced");
        vm.assertEq(a.account.balance, 0, "the node holds no ETH");
        vm.assertGt(depositBefore, paymaster.getDeposit(), "the paymaster paid");

        bytes memory ciphertext = new bytes(256);
        vm.expectEmit(cluster);
        emit IMessageFacet.MessageSent(2, 1, bytes32("envelope-1"), ciphertext);
        handle(executeOp(a, abi.encodeCall(IMessageFacet.send, (2, bytes32("envelope-1"), ciphertext))));
        vm.snapshotGasLastCall("handleOps_send_256_bytes");

        handle(executeOp(a, abi.encodeCall(IMemberFacet.commitClusterSharedKey, (0, keccak256("csk")))));
        vm.assertEq(
            members.currentCskEpoch().commitment, keccak256("csk"), "commitment set through a sponsored op"
        );
    }

    /// @notice The originator's first operation after registering: the CSK commitment and its first
    ///         envelope batch in one sponsored UserOperation, both taking effect.
    function test_handleOps_sponsoredExecuteBatchCommitsTheCskAndSendsABatch() public {
        Node memory a = addNode("node-a");
        Node memory b = addNode("node-b");
        handle(registerOp(a));
        handle(registerOp(b));

        Envelope[] memory envelopes = new Envelope[](2);
        envelopes[0] = Envelope(2, bytes32("endpoint-to-b"), new bytes(256));
        envelopes[1] = Envelope(1, bytes32("note-to-self"), new bytes(128));
        bytes[] memory calls = new bytes[](2);
        calls[0] = abi.encodeCall(IMemberFacet.commitClusterSharedKey, (0, keccak256("csk")));
        calls[1] = abi.encodeCall(IMessageFacet.sendBatch, (envelopes));
        (bool sponsorable, string memory reason) = ISponsorshipFacet(cluster)
            .checkSponsorship(a.account, abi.encodeCall(IMemberAccount.executeBatch, (calls)));
        vm.assertTrue(sponsorable, reason);

        uint256 depositBefore = paymaster.getDeposit();
        vm.expectEmit(cluster);
        emit IMemberFacet.ClusterSharedKeyCommitted(0, 1, keccak256("csk"));
        vm.expectEmit(cluster);
        emit IMessageFacet.MessageSent(2, 1, bytes32("endpoint-to-b"), envelopes[0].ciphertext);
        vm.expectEmit(cluster);
        emit IMessageFacet.MessageSent(1, 1, bytes32("note-to-self"), envelopes[1].ciphertext);
        handle(executeBatchOp(a, calls));
        vm.snapshotGasLastCall("handleOps_executeBatch_commit_and_sendBatch_2");

        vm.assertEq(IMemberFacet(cluster).currentCskEpoch().commitment, keccak256("csk"), "commitment set");
        IMessageFacet messages = IMessageFacet(cluster);
        vm.assertTrue(messages.isEnvelopeUsed(2, 1, bytes32("endpoint-to-b")), "envelope to b sent");
        vm.assertTrue(messages.isEnvelopeUsed(1, 1, bytes32("note-to-self")), "envelope to self sent");
        vm.assertEq(entryPoint.getNonce(a.account, 0), 2, "one operation after registration");
        vm.assertEq(a.account.balance, 0, "the node holds no ETH");
        vm.assertGt(depositBefore, paymaster.getDeposit(), "the paymaster paid");
    }

    /// @notice The race sendBatch's skipping exists for: the policy approved the batch, then a
    ///         recipient was revoked before the bundle landed. The other envelope still goes out.
    function test_handleOps_recipientRevokedAfterTheSponsorshipCheckDoesNotBlockTheBatch() public {
        Node memory a = addNode("node-a");
        Node memory b = addNode("node-b");
        Node memory c = addNode("node-c");
        handle(registerOp(a));
        handle(registerOp(b));
        handle(registerOp(c));
        Envelope[] memory envelopes = new Envelope[](2);
        envelopes[0] = Envelope(2, bytes32("to-b"), new bytes(64));
        envelopes[1] = Envelope(3, bytes32("to-c"), new bytes(64));
        bytes memory call = abi.encodeCall(IMessageFacet.sendBatch, (envelopes));
        (bool sponsorable, string memory reason) = ISponsorshipFacet(cluster)
            .checkSponsorship(a.account, abi.encodeCall(IMemberAccount.execute, (call)));
        vm.assertTrue(sponsorable, reason);

        vm.prank(operator);
        IMemberFacet(cluster).revokeMember(2);
        vm.expectEmit(cluster);
        emit IMessageFacet.MessageSkipped(2, 1, bytes32("to-b"), SkipReason.RecipientNotActive);
        vm.expectEmit(cluster);
        emit IMessageFacet.MessageSent(3, 1, bytes32("to-c"), envelopes[1].ciphertext);
        handle(executeOp(a, call));
        vm.assertTrue(IMessageFacet(cluster).isEnvelopeUsed(3, 1, bytes32("to-c")), "c's envelope sent");
        vm.assertFalse(IMessageFacet(cluster).isEnvelopeUsed(2, 1, bytes32("to-b")), "b's envelope not spent");
    }

    /// @notice Restart safety through the EntryPoint: a node that re-sends its registration is a no-op.
    function test_handleOps_reRegistrationIsANoOp() public {
        Node memory a = addNode("node-a");
        handle(registerOp(a));
        handle(registerOp(a));
        vm.assertEq(IMemberFacet(cluster).memberCount(), 1, "one member");
        vm.assertEq(entryPoint.getNonce(a.account, 0), 2, "both ops executed");
    }

    /// @notice The policy refuses an operation, so the sponsor never signs; without a valid
    ///         sponsor signature the EntryPoint refuses to let the paymaster pay (AA34).
    function test_handleOps_unsponsorableOperationIsRefused() public {
        Node memory a = addNode("node-a");
        handle(registerOp(a));
        bytes memory revoke = abi.encodeCall(IMemberFacet.revokeMember, (1));
        (bool sponsorable, string memory reason) = ISponsorshipFacet(cluster)
            .checkSponsorship(a.account, abi.encodeCall(IMemberAccount.execute, (revoke)));
        vm.assertFalse(sponsorable, "policy says no");
        vm.assertEq(reason, "member call is not a sponsored cluster function", "reason");

        PackedUserOperation memory op = baseOp(a.account, abi.encodeCall(IMemberAccount.execute, (revoke)));
        sponsor(op);
        op.paymasterAndData[op.paymasterAndData.length - 2] ^= 0xff; // not the sponsor's signature
        signOp(op, a.derivedKey);
        PackedUserOperation[] memory ops = new PackedUserOperation[](1);
        ops[0] = op;
        vm.prank(bundler, bundler);
        vm.expectRevert(abi.encodeWithSelector(IEntryPoint.FailedOp.selector, 0, "AA34 signature error"));
        entryPoint.handleOps(ops, payable(bundler));
    }

    function test_handleOps_wrongAccountKeyIsRefused() public {
        Node memory a = addNode("node-a");
        PackedUserOperation memory op =
            baseOp(a.account, abi.encodeCall(IMemberAccount.register, (proofFor(a), a.keys)));
        sponsor(op);
        signOp(op, a.appKey);
        PackedUserOperation[] memory ops = new PackedUserOperation[](1);
        ops[0] = op;
        vm.prank(bundler, bundler);
        vm.expectRevert(abi.encodeWithSelector(IEntryPoint.FailedOp.selector, 0, "AA24 signature error"));
        entryPoint.handleOps(ops, payable(bundler));
    }
}
