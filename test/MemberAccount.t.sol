// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IEntryPoint} from "@account-abstraction/contracts/interfaces/IEntryPoint.sol";
import {PackedUserOperation} from "@account-abstraction/contracts/interfaces/PackedUserOperation.sol";
import {IMemberAccount} from "../contracts/account/IMemberAccount.sol";
import {MemberAccount} from "../contracts/account/MemberAccount.sol";
import {DstackProof, Envelope, NodeKeys} from "../contracts/lib/ClusterTypes.sol";
import {RegistrationDigest} from "../contracts/lib/RegistrationDigest.sol";
import {Signatures} from "../contracts/lib/Signatures.sol";
import {IMemberFacet} from "../contracts/member/IMemberFacet.sol";
import {IMessageFacet} from "../contracts/message/IMessageFacet.sol";
import {ClusterFixture} from "./utils/ClusterFixture.sol";

/// @notice A cluster stand-in that registers anyone and names whatever signer it is told to.
contract ScriptedCluster {
    address public signerToReturn;

    function setSigner(address signer) external {
        signerToReturn = signer;
    }

    function dstack_register(DstackProof calldata, NodeKeys calldata)
        external
        view
        returns (uint64, address)
    {
        return (1, signerToReturn);
    }
}

/// @notice The member account's validation rules, called as the EntryPoint calls them.
contract MemberAccountTest is ClusterFixture {
    uint256 internal constant OK = 0;
    uint256 internal constant FAILED = 1;

    function setUp() public {
        setUpCluster();
    }

    function validate(Node memory n, PackedUserOperation memory op) internal returns (uint256) {
        bytes32 hash = entryPoint.getUserOpHash(op);
        vm.prank(address(entryPoint));
        return MemberAccount(payable(n.account)).validateUserOp(op, hash, 0);
    }

    /// @notice A sponsored operation (paymaster data present, so part of the hash) signed by `key`.
    function signed(Node memory n, bytes memory callData, uint256 key)
        internal
        view
        returns (PackedUserOperation memory op)
    {
        op = baseOp(n.account, callData);
        sponsor(op);
        op.signature = signEth(key, Signatures.ethSignedHash(entryPoint.getUserOpHash(op)));
    }

    /// @notice The same without a paymaster: the account pays its own prefund.
    function signedUnsponsored(Node memory n, bytes memory callData, uint256 key)
        internal
        view
        returns (PackedUserOperation memory op)
    {
        op = baseOp(n.account, callData);
        op.signature = signEth(key, Signatures.ethSignedHash(entryPoint.getUserOpHash(op)));
    }

    function validatePaying(Node memory n, PackedUserOperation memory op, uint256 missingAccountFunds)
        internal
        returns (uint256)
    {
        bytes32 hash = entryPoint.getUserOpHash(op);
        vm.prank(address(entryPoint));
        return MemberAccount(payable(n.account)).validateUserOp(op, hash, missingAccountFunds);
    }

    function test_validateUserOp_bootstrapSignedByTheAttestedKey() public {
        Node memory n = addNode("node-a");
        bytes memory callData = abi.encodeCall(IMemberAccount.register, (proofFor(n), n.keys));
        vm.assertEq(validate(n, signed(n, callData, n.derivedKey)), OK, "derived key signs the bootstrap");
        vm.assertEq(validate(n, signed(n, callData, n.appKey)), FAILED, "any other key fails");
    }

    function test_validateUserOp_bootstrapRejectsProofsNotForThisAccount() public {
        Node memory n = addNode("node-a");
        Node memory other = addNode("node-b");
        // Another node's valid proof, submitted from this account.
        bytes memory callData = abi.encodeCall(IMemberAccount.register, (proofFor(other), other.keys));
        vm.assertEq(validate(n, signed(n, callData, other.derivedKey)), FAILED, "app id must be this account");

        DstackProof memory p = proofFor(n);
        NodeKeys memory swapped = n.keys;
        swapped.ed25519 = keccak256("swapped");
        callData = abi.encodeCall(IMemberAccount.register, (p, swapped));
        vm.assertEq(validate(n, signed(n, callData, n.derivedKey)), FAILED, "binding must cover the keys");

        p = proofFor(n);
        p.kmsSignature = hex"00";
        callData = abi.encodeCall(IMemberAccount.register, (p, n.keys));
        vm.assertEq(validate(n, signed(n, callData, n.derivedKey)), FAILED, "the chain must verify");
    }

    function test_validateUserOp_executeNeedsRegistrationThenTheOwner() public {
        Node memory n = addNode("node-a");
        bytes memory callData =
            abi.encodeCall(IMemberAccount.execute, (abi.encodeCall(IMemberFacet.memberCount, ())));
        vm.assertEq(
            validate(n, signed(n, callData, n.derivedKey)), FAILED, "unregistered account executes nothing"
        );
        handle(registerOp(n));
        vm.assertEq(validate(n, signed(n, callData, n.derivedKey)), OK, "owner executes");
        vm.assertEq(validate(n, signed(n, callData, n.appKey)), FAILED, "non-owner does not");
    }

    /// @notice executeBatch is validated exactly like execute: the owner's signature, once registered.
    function test_validateUserOp_executeBatchNeedsRegistrationThenTheOwner() public {
        Node memory n = addNode("node-a");
        bytes[] memory calls = new bytes[](2);
        calls[0] = abi.encodeCall(IMemberFacet.memberCount, ());
        calls[1] = abi.encodeCall(IMemberFacet.currentCskEpoch, ());
        bytes memory callData = abi.encodeCall(IMemberAccount.executeBatch, (calls));
        vm.assertEq(
            validate(n, signed(n, callData, n.derivedKey)), FAILED, "unregistered account batches nothing"
        );
        handle(registerOp(n));
        vm.assertEq(validate(n, signed(n, callData, n.derivedKey)), OK, "owner batches");
        vm.assertEq(validate(n, signed(n, callData, n.appKey)), FAILED, "non-owner does not");
    }

    function test_validateUserOp_ownerIsFixedAfterRegistration() public {
        Node memory n = addNode("node-a");
        handle(registerOp(n));
        Node memory rekeyed = n;
        rekeyed.derivedKey = n.derivedKey + 1;
        bytes memory callData = abi.encodeCall(IMemberAccount.register, (proofFor(rekeyed), rekeyed.keys));
        vm.assertEq(
            validate(n, signed(n, callData, rekeyed.derivedKey)), FAILED, "a new key cannot take over"
        );
    }

    function test_validateUserOp_unknownSelectorOrShortCalldataFails() public {
        Node memory n = addNode("node-a");
        vm.assertEq(validate(n, signed(n, hex"", n.derivedKey)), FAILED, "empty calldata");
        vm.assertEq(validate(n, signed(n, hex"12345678", n.derivedKey)), FAILED, "unknown selector");
    }

    /// @notice The owner's own (unsponsored) operation pays its prefund from the account's ETH.
    function test_validateUserOp_paysMissingFunds() public {
        Node memory n = addNode("node-a");
        handle(registerOp(n));
        vm.deal(n.account, 1 ether);
        PackedUserOperation memory op = signedUnsponsored(
            n, abi.encodeCall(IMemberAccount.withdrawDepositTo, (payable(n.account), 0)), n.derivedKey
        );
        uint256 before = address(entryPoint).balance;
        vm.assertEq(validatePaying(n, op, 0.1 ether), OK, "owner's withdrawal validates");
        vm.assertEq(address(entryPoint).balance - before, 0.1 ether, "prefund paid");
    }

    /// @notice An unsponsored `register` fails validation and pays nothing, however well signed:
    ///         validation cannot check the KMS root, so the account never funds a registration.
    function test_validateUserOp_unsponsoredRegisterFailsWithoutPaying() public {
        Node memory n = addNode("node-a");
        vm.deal(n.account, 1 ether);
        PackedUserOperation memory op = signedUnsponsored(
            n, abi.encodeCall(IMemberAccount.register, (proofFor(n), n.keys)), n.derivedKey
        );
        uint256 before = address(entryPoint).balance;
        vm.assertEq(validatePaying(n, op, 0.1 ether), FAILED, "missing funds: refused");
        vm.assertEq(validatePaying(n, op, 0), FAILED, "a deposit covering it: refused all the same");
        vm.assertEq(address(entryPoint).balance, before, "nothing paid");
        vm.assertEq(n.account.balance, 1 ether, "the account keeps its ETH");

        // The same registration with a paymaster validates.
        op = signed(n, abi.encodeCall(IMemberAccount.register, (proofFor(n), n.keys)), n.derivedKey);
        vm.assertEq(validate(n, op), OK, "sponsored bootstrap validates");
    }

    /// @notice The bootstrap proves the owner key: a chain issued for another GetKey purpose fails.
    function test_validateUserOp_bootstrapNeedsTheOwnerPurpose() public {
        Node memory n = addNode("node-a");
        bytes32 digest = RegistrationDigest.compute(block.chainid, cluster, n.account, n.keys);
        DstackProof memory p = chainedProof(n, digest, "attestmesh-identity", KMS_ROOT_KEY);
        bytes memory callData = abi.encodeCall(IMemberAccount.register, (p, n.keys));
        vm.assertEq(validate(n, signed(n, callData, n.derivedKey)), FAILED, "other purpose");
    }

    /// @notice withdrawDepositTo is validated like execute: the registered owner's signature only.
    function test_validateUserOp_withdrawDepositToNeedsRegistrationThenTheOwner() public {
        Node memory n = addNode("node-a");
        bytes memory callData = abi.encodeCall(IMemberAccount.withdrawDepositTo, (payable(n.account), 1));
        vm.assertEq(validate(n, signedUnsponsored(n, callData, n.derivedKey)), FAILED, "unregistered: nobody");
        handle(registerOp(n));
        vm.assertEq(validate(n, signedUnsponsored(n, callData, n.derivedKey)), OK, "owner");
        vm.assertEq(validate(n, signedUnsponsored(n, callData, n.appKey)), FAILED, "non-owner");
    }

    /// @notice The owner withdraws the account's EntryPoint deposit in its own (unsponsored) operation.
    function test_withdrawDepositTo_ownerWithdrawsThroughTheEntryPoint() public {
        Node memory n = addNode("node-a");
        handle(registerOp(n));
        entryPoint.depositTo{value: 1 ether}(n.account);
        address payable recipient = payable(address(0xFEE));
        handle(
            signedUnsponsored(
                n, abi.encodeCall(IMemberAccount.withdrawDepositTo, (recipient, 0.5 ether)), n.derivedKey
            )
        );
        vm.assertEq(recipient.balance, 0.5 ether, "withdrawn to the recipient");
        uint256 left = entryPoint.balanceOf(n.account);
        vm.assertLe(left, 0.5 ether, "deposit reduced by the withdrawal and the gas");
        vm.assertGt(left, 0.49 ether, "only the operation's gas on top");
    }

    function test_RevertWhen_withdrawDepositTo_notRegistered() public {
        Node memory n = addNode("node-a");
        vm.prank(address(entryPoint));
        vm.expectRevert(IMemberAccount.NotRegistered.selector);
        MemberAccount(payable(n.account)).withdrawDepositTo(payable(address(0xFEE)), 0);
    }

    /// @notice ERC-7562: validation may touch only the account's own storage (no other contract's),
    ///         so production bundlers accept it unstaked. A local bundler would not catch a breach.
    function test_validateUserOp_readsOnlyItsOwnStorage() public {
        Node memory n = addNode("node-a");
        PackedUserOperation memory op =
            signed(n, abi.encodeCall(IMemberAccount.register, (proofFor(n), n.keys)), n.derivedKey);
        _assertOnlyOwnStorage(n, op);
        // The refusal of an unsponsored bootstrap reads the operation only.
        op = signedUnsponsored(
            n, abi.encodeCall(IMemberAccount.register, (proofFor(n), n.keys)), n.derivedKey
        );
        _assertOnlyOwnStorage(n, op, FAILED);
        handle(registerOp(n));
        op = signed(
            n,
            abi.encodeCall(IMemberAccount.execute, (abi.encodeCall(IMessageFacet.send, (1, 0, hex"01")))),
            n.derivedKey
        );
        _assertOnlyOwnStorage(n, op);
        bytes[] memory calls = new bytes[](2);
        calls[0] = abi.encodeCall(IMemberFacet.commitClusterSharedKey, (0, keccak256("csk")));
        calls[1] = abi.encodeCall(IMessageFacet.sendBatch, (new Envelope[](1)));
        op = signed(n, abi.encodeCall(IMemberAccount.executeBatch, (calls)), n.derivedKey);
        _assertOnlyOwnStorage(n, op);
        op = signedUnsponsored(
            n, abi.encodeCall(IMemberAccount.withdrawDepositTo, (payable(n.account), 1)), n.derivedKey
        );
        _assertOnlyOwnStorage(n, op);
    }

    function _assertOnlyOwnStorage(Node memory n, PackedUserOperation memory op) private {
        _assertOnlyOwnStorage(n, op, OK);
    }

    /// @param expected The validation result, so the check runs the path it means to (not a refusal).
    function _assertOnlyOwnStorage(Node memory n, PackedUserOperation memory op, uint256 expected) private {
        bytes32 hash = entryPoint.getUserOpHash(op);
        vm.record();
        vm.prank(address(entryPoint));
        uint256 validationData = MemberAccount(payable(n.account)).validateUserOp(op, hash, 0);
        vm.assertEq(validationData, expected, "validation result");
        address[5] memory others =
            [cluster, address(factory), address(entryPoint), address(paymaster), address(indexerRegistry)];
        for (uint256 i = 0; i < others.length; ++i) {
            (bytes32[] memory reads, bytes32[] memory writes) = vm.accesses(others[i]);
            vm.assertEq(reads.length + writes.length, 0, "validation touched another contract's storage");
        }
        (bytes32[] memory ownReads, bytes32[] memory ownWrites) = vm.accesses(n.account);
        vm.assertEq(ownWrites.length, 0, "validation writes nothing");
        for (uint256 i = 0; i < ownReads.length; ++i) {
            vm.assertEq(ownReads[i], bytes32(0), "only the owner slot is read");
        }
    }

    function test_RevertWhen_calledByAnyoneButTheEntryPoint() public {
        Node memory n = addNode("node-a");
        MemberAccount account = MemberAccount(payable(n.account));
        PackedUserOperation memory op = baseOp(n.account, "");
        vm.expectRevert(abi.encodeWithSelector(IMemberAccount.OnlyEntryPoint.selector, address(this)));
        account.validateUserOp(op, bytes32(0), 0);
        DstackProof memory p = proofFor(n);
        vm.expectRevert(abi.encodeWithSelector(IMemberAccount.OnlyEntryPoint.selector, address(this)));
        account.register(p, n.keys);
        vm.expectRevert(abi.encodeWithSelector(IMemberAccount.OnlyEntryPoint.selector, address(this)));
        account.execute("");
        vm.expectRevert(abi.encodeWithSelector(IMemberAccount.OnlyEntryPoint.selector, address(this)));
        account.executeBatch(new bytes[](0));
        vm.expectRevert(abi.encodeWithSelector(IMemberAccount.OnlyEntryPoint.selector, address(this)));
        account.withdrawDepositTo(payable(address(this)), 0);
    }

    function test_RevertWhen_execute_notRegistered() public {
        Node memory n = addNode("node-a");
        vm.prank(address(entryPoint));
        vm.expectRevert(IMemberAccount.NotRegistered.selector);
        MemberAccount(payable(n.account)).execute(abi.encodeCall(IMemberFacet.memberCount, ()));
    }

    function test_RevertWhen_executeBatch_notRegistered() public {
        Node memory n = addNode("node-a");
        bytes[] memory calls = new bytes[](1);
        calls[0] = abi.encodeCall(IMemberFacet.memberCount, ());
        vm.prank(address(entryPoint));
        vm.expectRevert(IMemberAccount.NotRegistered.selector);
        MemberAccount(payable(n.account)).executeBatch(calls);
    }

    /// @notice Calls run in order (the third sees the second's effect) and each result comes back.
    function test_executeBatch_callsTheClusterInOrderAndReturnsEachResult() public {
        Node memory n = addNode("node-a");
        handle(registerOp(n));
        bytes[] memory calls = new bytes[](3);
        calls[0] = abi.encodeCall(IMemberFacet.memberCount, ());
        calls[1] = abi.encodeCall(IMessageFacet.send, (1, bytes32("e"), hex"01"));
        calls[2] = abi.encodeCall(IMessageFacet.isEnvelopeUsed, (1, 1, bytes32("e")));
        vm.prank(address(entryPoint));
        bytes[] memory results = MemberAccount(payable(n.account)).executeBatch(calls);
        vm.assertEq(results.length, 3, "one result per call");
        vm.assertEq(abi.decode(results[0], (uint64)), 1, "memberCount");
        vm.assertEq(results[1].length, 0, "send returns nothing");
        vm.assertTrue(abi.decode(results[2], (bool)), "the send before it took effect");
    }

    /// @notice The first failing call's revert data comes out unchanged and the calls before it are undone.
    function test_RevertWhen_executeBatch_aCallFails() public {
        Node memory n = addNode("node-a");
        handle(registerOp(n));
        bytes[] memory calls = new bytes[](3);
        calls[0] = abi.encodeCall(IMessageFacet.send, (1, bytes32("ok"), hex"01"));
        calls[1] = abi.encodeCall(IMessageFacet.send, (7, bytes32("bad"), hex"01"));
        calls[2] = abi.encodeCall(IMessageFacet.send, (1, bytes32("never"), hex""));
        vm.prank(address(entryPoint));
        vm.expectRevert(abi.encodeWithSelector(IMessageFacet.RecipientNotActive.selector, uint64(7)));
        MemberAccount(payable(n.account)).executeBatch(calls);
        vm.assertFalse(IMessageFacet(cluster).isEnvelopeUsed(1, 1, bytes32("ok")), "first call undone");
    }

    function test_execute_bubblesTheClusterRevert() public {
        Node memory n = addNode("node-a");
        handle(registerOp(n));
        vm.prank(address(entryPoint));
        vm.expectRevert(IMessageFacet.EmptyCiphertext.selector);
        MemberAccount(payable(n.account))
            .execute(abi.encodeCall(IMessageFacet.send, (1, bytes32("e"), hex"")));
    }

    function test_RevertWhen_register_clusterNamesAnotherOwner() public {
        ScriptedCluster scripted = new ScriptedCluster();
        MemberAccount account = new MemberAccount(IEntryPoint(address(entryPoint)), address(scripted));
        Node memory n = makeNode("scripted");
        DstackProof memory p = proofFor(n);
        scripted.setSigner(address(0xA1));
        vm.prank(address(entryPoint));
        account.register(p, n.keys);
        vm.assertEq(account.owner(), address(0xA1), "first signer becomes owner");
        scripted.setSigner(address(0xA2));
        vm.prank(address(entryPoint));
        vm.expectRevert(
            abi.encodeWithSelector(IMemberAccount.OwnerMismatch.selector, address(0xA1), address(0xA2))
        );
        account.register(p, n.keys);
    }
}
