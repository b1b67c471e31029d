// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {LibDiamond} from "../contracts/diamond/LibDiamond.sol";
import {DstackProof, Member, MemberStatus, NodeKeys} from "../contracts/lib/ClusterTypes.sol";
import {RegistrationDigest} from "../contracts/lib/RegistrationDigest.sol";
import {IMemberFacet} from "../contracts/member/IMemberFacet.sol";
import {IAppAuth} from "../contracts/registration/IAppAuth.sol";
import {IRegistrationFacet} from "../contracts/registration/IRegistrationFacet.sol";
import {ClusterFixture} from "./utils/ClusterFixture.sol";

/// @notice dstack_register, allowlists and the IAppAuth boot gate.
contract RegistrationTest is ClusterFixture {
    IRegistrationFacet internal registration;
    IMemberFacet internal members;

    function setUp() public {
        setUpCluster();
        registration = IRegistrationFacet(cluster);
        members = IMemberFacet(cluster);
    }

    function test_dstack_register_createsMemberWithKeysAndMeshIp() public {
        Node memory n = addNode("node-a");
        DstackProof memory p = proofFor(n);
        vm.expectEmit(cluster);
        emit IMemberFacet.MemberRegistered(
            1,
            n.account,
            vm.addr(n.derivedKey),
            MESH_NETWORK + 1,
            n.keys.x25519,
            n.keys.ed25519,
            n.keys.wireguard
        );
        vm.prank(n.account);
        (uint64 id, address signer) = registration.dstack_register(p, n.keys);
        vm.snapshotGasLastCall("dstack_register");

        vm.assertEq(id, 1, "first member id");
        vm.assertEq(signer, vm.addr(n.derivedKey), "signer is the derived key");
        Member memory m = members.getMember(1);
        vm.assertEq(m.account, n.account, "account");
        vm.assertEq(m.signer, signer, "signer stored");
        vm.assertEq(m.keys.x25519, n.keys.x25519, "x25519");
        vm.assertEq(m.keys.ed25519, n.keys.ed25519, "ed25519");
        vm.assertEq(m.keys.wireguard, n.keys.wireguard, "wireguard");
        vm.assertEq(m.meshIp, MESH_NETWORK + 1, "mesh ip 10.88.0.1");
        vm.assertEq(m.registeredAt, block.timestamp, "registered at");
        vm.assertEq(uint8(m.status), uint8(MemberStatus.Active), "active");
    }

    /// @notice Restart safety: the same identity registering again is a no-op returning its id.
    function test_dstack_register_sameIdentityAgainIsNoOp() public {
        Node memory n = addNode("node-a");
        uint64 first = registerDirect(n);
        vm.recordLogs();
        uint64 again = registerDirect(n);
        vm.assertEq(again, first, "same member id");
        vm.assertEq(vm.getRecordedLogs().length, 0, "no event on a no-op");
        vm.assertEq(members.memberCount(), 1, "no second record");
    }

    function test_RevertWhen_dstack_register_differentKeysForLiveAccount() public {
        Node memory n = addNode("node-a");
        uint64 id = registerDirect(n);
        n.keys.wireguard = keccak256("a new wireguard key");
        DstackProof memory p = proofFor(n);
        vm.prank(n.account);
        vm.expectRevert(abi.encodeWithSelector(IRegistrationFacet.MemberKeysMismatch.selector, id));
        registration.dstack_register(p, n.keys);
    }

    function test_RevertWhen_dstack_register_differentDerivedKeyForLiveAccount() public {
        Node memory n = addNode("node-a");
        uint64 id = registerDirect(n);
        n.derivedKey = n.derivedKey + 1;
        DstackProof memory p = proofFor(n);
        vm.prank(n.account);
        vm.expectRevert(abi.encodeWithSelector(IRegistrationFacet.MemberKeysMismatch.selector, id));
        registration.dstack_register(p, n.keys);
    }

    function test_RevertWhen_dstack_register_revokedMember() public {
        Node memory n = addNode("node-a");
        uint64 id = registerDirect(n);
        vm.prank(operator);
        members.revokeMember(id);
        DstackProof memory p = proofFor(n);
        vm.prank(n.account);
        vm.expectRevert(abi.encodeWithSelector(IRegistrationFacet.MemberAccountRevoked.selector, id));
        registration.dstack_register(p, n.keys);
    }

    function test_RevertWhen_dstack_register_appIdIsNotCaller() public {
        Node memory n = addNode("node-a");
        DstackProof memory p = proofFor(n);
        address other = address(0xCAFE);
        vm.prank(other);
        vm.expectRevert(abi.encodeWithSelector(IRegistrationFacet.AppIdMismatch.selector, n.account, other));
        registration.dstack_register(p, n.keys);
    }

    function test_RevertWhen_dstack_register_appIdNotAllowlisted() public {
        Node memory n = makeNode("not-allowlisted");
        DstackProof memory p = proofFor(n);
        vm.prank(n.account);
        vm.expectRevert(abi.encodeWithSelector(IRegistrationFacet.AppIdNotAllowed.selector, n.account));
        registration.dstack_register(p, n.keys);
    }

    function test_RevertWhen_dstack_register_bindingForOtherKeys() public {
        Node memory n = addNode("node-a");
        DstackProof memory p = proofFor(n);
        NodeKeys memory otherKeys = n.keys;
        otherKeys.x25519 = keccak256("substituted x25519");
        bytes32 expected = RegistrationDigest.compute(block.chainid, cluster, n.account, otherKeys);
        vm.prank(n.account);
        vm.expectRevert(
            abi.encodeWithSelector(
                IRegistrationFacet.RegistrationBindingMismatch.selector, expected, p.messageHash
            )
        );
        registration.dstack_register(p, otherKeys);
    }

    function test_RevertWhen_dstack_register_bindingForOtherChain() public {
        Node memory n = addNode("node-a");
        DstackProof memory p = proofFor(n);
        vm.chainId(8453);
        vm.prank(n.account);
        vm.expectRevert(
            abi.encodeWithSelector(
                IRegistrationFacet.RegistrationBindingMismatch.selector,
                RegistrationDigest.compute(8453, cluster, n.account, n.keys),
                p.messageHash
            )
        );
        registration.dstack_register(p, n.keys);
    }

    function test_RevertWhen_dstack_register_kmsRootNotAllowlisted() public {
        Node memory n = addNode("node-a");
        DstackProof memory p = proofFor(n);
        vm.prank(operator);
        registration.setKmsRootAllowed(vm.addr(KMS_ROOT_KEY), false);
        vm.prank(n.account);
        vm.expectRevert(
            abi.encodeWithSelector(IRegistrationFacet.KmsRootNotAllowed.selector, vm.addr(KMS_ROOT_KEY))
        );
        registration.dstack_register(p, n.keys);
    }

    function test_RevertWhen_dstack_register_invalidChain() public {
        Node memory n = addNode("node-a");
        DstackProof memory p = proofFor(n);
        p.appSignature = p.kmsSignature;
        vm.prank(n.account);
        vm.expectRevert();
        registration.dstack_register(p, n.keys);
    }

    function test_registrationDigest_matchesLibrary() public {
        Node memory n = makeNode("node-a");
        vm.assertEq(
            registration.registrationDigest(n.account, n.keys),
            RegistrationDigest.compute(block.chainid, cluster, n.account, n.keys),
            "digest"
        );
    }

    // ------------------------------------------------------------------ allowlists

    function test_allowlists_ownerManagesEachList() public {
        address root = address(0xAB);
        vm.startPrank(operator);
        vm.expectEmit(cluster);
        emit IRegistrationFacet.KmsRootAllowed(root, true);
        registration.setKmsRootAllowed(root, true);
        registration.setComposeHashAllowed(bytes32("compose-2"), true);
        registration.setDeviceAllowed(bytes32("device-1"), true);
        registration.setAppIdAllowed(address(0xA99), true);
        registration.setAllowAnyDevice(false);
        vm.stopPrank();

        vm.assertTrue(registration.isKmsRootAllowed(root), "root allowed");
        vm.assertEq(registration.kmsRoots().length, 2, "two roots");
        vm.assertEq(registration.composeHashes().length, 2, "two compose hashes");
        vm.assertEq(registration.deviceIds().length, 1, "one device");
        vm.assertTrue(registration.isAppIdAllowed(address(0xA99)), "app id allowed");
        vm.assertEq(registration.appIds().length, 1, "one app id");
        vm.assertFalse(registration.allowAnyDevice(), "devices restricted");

        vm.startPrank(operator);
        registration.setKmsRootAllowed(root, false);
        registration.setComposeHashAllowed(bytes32("compose-2"), false);
        registration.setDeviceAllowed(bytes32("device-1"), false);
        registration.setAppIdAllowed(address(0xA99), false);
        vm.stopPrank();
        vm.assertFalse(registration.isKmsRootAllowed(root), "root removed");
        vm.assertEq(registration.composeHashes().length, 1, "compose hash removed");
        vm.assertEq(registration.deviceIds().length, 0, "device removed");
        vm.assertFalse(registration.isAppIdAllowed(address(0xA99)), "app id removed");
    }

    function test_RevertWhen_allowlists_callerIsNotOwner() public {
        address stranger = address(0x5757);
        bytes memory err = abi.encodeWithSelector(LibDiamond.NotContractOwner.selector, stranger, operator);
        vm.startPrank(stranger);
        vm.expectRevert(err);
        registration.setKmsRootAllowed(address(1), true);
        vm.expectRevert(err);
        registration.setComposeHashAllowed(bytes32(0), true);
        vm.expectRevert(err);
        registration.setDeviceAllowed(bytes32(0), true);
        vm.expectRevert(err);
        registration.setAllowAnyDevice(true);
        vm.expectRevert(err);
        registration.setAppIdAllowed(address(1), true);
        vm.stopPrank();
    }

    function test_RevertWhen_allowlists_zeroAddress() public {
        vm.startPrank(operator);
        vm.expectRevert(IRegistrationFacet.ZeroAddress.selector);
        registration.setKmsRootAllowed(address(0), true);
        vm.expectRevert(IRegistrationFacet.ZeroAddress.selector);
        registration.setAppIdAllowed(address(0), true);
        vm.stopPrank();
    }

    // ------------------------------------------------------------------ IAppAuth boot gate

    function bootInfo(address appId) internal pure returns (IAppAuth.AppBootInfo memory info) {
        info.appId = appId;
        info.composeHash = COMPOSE_HASH;
        info.deviceId = bytes32("device-1");
        info.tcbStatus = "UpToDate";
    }

    function test_isAppAllowed_allowlistedAccountComposeAndDevice() public {
        Node memory n = addNode("node-a");
        (bool ok, string memory reason) = registration.isAppAllowed(bootInfo(n.account));
        vm.assertTrue(ok, "allowed");
        vm.assertEq(reason, "", "no reason");
        // The member account answers the KMS too (its address is the dstack app id).
        (ok,) = IAppAuth(n.account).isAppAllowed(bootInfo(n.account));
        vm.assertTrue(ok, "allowed through the member account");
    }

    function test_isAppAllowed_deniesWithReasons() public {
        Node memory n = addNode("node-a");
        IAppAuth.AppBootInfo memory info = bootInfo(address(0xDEAD));
        (bool ok, string memory reason) = registration.isAppAllowed(info);
        vm.assertFalse(ok, "unknown app id");
        vm.assertEq(reason, "app id is not an allowlisted member account", "reason");

        info = bootInfo(n.account);
        info.composeHash = keccak256("tampered compose");
        (ok, reason) = registration.isAppAllowed(info);
        vm.assertFalse(ok, "compose hash");
        vm.assertEq(reason, "compose hash not allowed", "reason");

        vm.prank(operator);
        registration.setAllowAnyDevice(false);
        (ok, reason) = registration.isAppAllowed(bootInfo(n.account));
        vm.assertFalse(ok, "device");
        vm.assertEq(reason, "device not allowed", "reason");
        vm.prank(operator);
        registration.setDeviceAllowed(bytes32("device-1"), true);
        (ok,) = registration.isAppAllowed(bootInfo(n.account));
        vm.assertTrue(ok, "device allowlisted");

        uint64 id = registerDirect(n);
        vm.prank(operator);
        members.revokeMember(id);
        (ok, reason) = registration.isAppAllowed(bootInfo(n.account));
        vm.assertFalse(ok, "revoked");
        vm.assertEq(reason, "member account is revoked", "reason");
    }
}
