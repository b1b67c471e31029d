// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IMemberAccount} from "../contracts/account/IMemberAccount.sol";
import {DstackProof} from "../contracts/lib/ClusterTypes.sol";
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
        bytes memory commit = abi.encodeCall(IMemberFacet.commitClusterSharedKey, (keccak256("csk")));
        assertDecision(a.account, executeCall(commit), true, "");
        assertDecision(b.account, executeCall(commit), false, "only the first registrant commits the CSK");
        assertDecision(
            a.account,
            executeCall(abi.encodeCall(IMemberFacet.commitClusterSharedKey, (bytes32(0)))),
            false,
            "CSK commitment is zero"
        );
        vm.prank(a.account);
        IMemberFacet(cluster).commitClusterSharedKey(keccak256("csk"));
        assertDecision(a.account, executeCall(commit), false, "CSK commitment already set");
    }

    function test_checkSponsorship_deniesEverythingElse() public {
        Node memory a = addNode("node-a");
        Node memory outsider = addNode("outsider");
        registerDirect(a);
        assertDecision(a.account, hex"", false, "calldata has no function selector");
        assertDecision(
            a.account, hex"deadbeef", false, "only member-account register and execute are sponsored"
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

    function test_RevertWhen_checkSponsorship_calldataDoesNotDecode() public {
        vm.expectRevert();
        policy.checkSponsorship(address(1), abi.encodePacked(IMemberAccount.register.selector, hex"0102"));
    }
}
