// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {LibDiamond} from "../contracts/diamond/LibDiamond.sol";
import {DstackProof, Member, MemberStatus, NodeKeys} from "../contracts/lib/ClusterTypes.sol";
import {ProofStatus} from "../contracts/lib/DstackProofLib.sol";
import {RegistrationDigest} from "../contracts/lib/RegistrationDigest.sol";
import {IMemberFacet} from "../contracts/member/IMemberFacet.sol";
import {IAppAuth} from "../contracts/registration/IAppAuth.sol";
import {IRegistrationFacet} from "../contracts/registration/IRegistrationFacet.sol";
import {ClusterFixture} from "./utils/ClusterFixture.sol";

/// @notice dstack_register, allowlists and the IAppAuth boot gate.
contract RegistrationTest is ClusterFixture {
    bytes32 internal constant DEVICE_1 = "device-1";
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
        vm.expectRevert(
            abi.encodeWithSelector(
                IRegistrationFacet.InvalidDstackProof.selector, ProofStatus.AppSignatureInvalid
            )
        );
        registration.dstack_register(p, n.keys);
    }

    /// @notice Registration pins the GetKey purpose: a chain the KMS really issued (allowlisted
    ///         root, right account and binding) for another purpose proves no owner key.
    function test_RevertWhen_dstack_register_otherPurpose() public {
        Node memory n = addNode("node-a");
        bytes32 digest = RegistrationDigest.compute(block.chainid, cluster, n.account, n.keys);
        DstackProof memory p = chainedProof(n, digest, "attestmesh-identity", KMS_ROOT_KEY);
        vm.prank(n.account);
        vm.expectRevert(
            abi.encodeWithSelector(IRegistrationFacet.ProofPurposeMismatch.selector, "attestmesh-identity")
        );
        registration.dstack_register(p, n.keys);
        vm.assertEq(members.memberCount(), 0, "nobody registered");
    }

    /// @notice An attacker's own KMS root signs a perfectly formed chain for an allowlisted account:
    ///         registration refuses the root (this is what a self-paid bootstrap could not foresee).
    function test_RevertWhen_dstack_register_attackerKmsRoot() public {
        Node memory n = addNode("node-a");
        uint256 attackerRoot = uint256(keccak256("attacker kms root"));
        bytes32 digest = RegistrationDigest.compute(block.chainid, cluster, n.account, n.keys);
        DstackProof memory p = chainedProof(n, digest, OWNER_PURPOSE, attackerRoot);
        vm.prank(n.account);
        vm.expectRevert(
            abi.encodeWithSelector(IRegistrationFacet.KmsRootNotAllowed.selector, vm.addr(attackerRoot))
        );
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
        info.instanceId = address(0x1457);
        info.deviceId = DEVICE_1;
        info.tcbStatus = "UpToDate";
    }

    function allowDevice1() internal {
        vm.prank(operator);
        registration.setDeviceAllowed(DEVICE_1, true);
    }

    function test_isAppAllowed_allowlistedAccountComposeAndDevice() public {
        Node memory n = addNode("node-a");
        allowDevice1();
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

        // The fixture's cluster did not opt into "any device".
        (ok, reason) = registration.isAppAllowed(bootInfo(n.account));
        vm.assertFalse(ok, "device");
        vm.assertEq(reason, "device not allowed", "reason");
        allowDevice1();
        (ok,) = registration.isAppAllowed(bootInfo(n.account));
        vm.assertTrue(ok, "device allowlisted");
        vm.prank(operator);
        registration.setDeviceAllowed(DEVICE_1, false);
        vm.prank(operator);
        registration.setAllowAnyDevice(true);
        (ok,) = registration.isAppAllowed(bootInfo(n.account));
        vm.assertTrue(ok, "any device, once the operator opts in");

        uint64 id = registerDirect(n);
        vm.prank(operator);
        members.revokeMember(id);
        (ok, reason) = registration.isAppAllowed(bootInfo(n.account));
        vm.assertFalse(ok, "revoked");
        vm.assertEq(reason, "member account is revoked", "reason");
    }

    // ------------------------------------------------------------------ the TEE's health (TCB)

    function test_isAppAllowed_refusesATcbStatusOtherThanUpToDate() public {
        Node memory n = addNode("node-a");
        allowDevice1();
        string[4] memory statuses = ["OutOfDate", "SWHardeningNeeded", "Revoked", "uptodate"];
        for (uint256 i = 0; i < statuses.length; ++i) {
            IAppAuth.AppBootInfo memory info = bootInfo(n.account);
            info.tcbStatus = statuses[i];
            (bool ok, string memory reason) = registration.isAppAllowed(info);
            vm.assertFalse(ok, statuses[i]);
            vm.assertEq(reason, string.concat("TCB status ", statuses[i], " is not UpToDate"), "reason");
        }
        IAppAuth.AppBootInfo memory empty = bootInfo(n.account);
        empty.tcbStatus = "";
        (bool allowed, string memory why) = registration.isAppAllowed(empty);
        vm.assertFalse(allowed, "no status at all");
        vm.assertEq(why, "TCB status  is not UpToDate", "reason");
        // The member account, which the KMS asks, gives the same answer.
        IAppAuth.AppBootInfo memory outOfDate = bootInfo(n.account);
        outOfDate.tcbStatus = "OutOfDate";
        (allowed, why) = IAppAuth(n.account).isAppAllowed(outOfDate);
        vm.assertFalse(allowed, "through the member account");
        vm.assertEq(why, "TCB status OutOfDate is not UpToDate", "reason");
    }

    function test_isAppAllowed_advisoriesOnlyFromTheGraceList() public {
        Node memory n = addNode("node-a");
        allowDevice1();
        IAppAuth.AppBootInfo memory info = bootInfo(n.account);
        info.advisoryIds = new string[](2);
        info.advisoryIds[0] = "INTEL-SA-00837";
        info.advisoryIds[1] = "INTEL-SA-00615";
        (bool ok, string memory reason) = registration.isAppAllowed(info);
        vm.assertFalse(ok, "no grace by default");
        vm.assertEq(reason, "advisory INTEL-SA-00837 is not on the grace list", "names the first");

        vm.expectEmit(cluster);
        emit IRegistrationFacet.AdvisoryAllowed(keccak256("INTEL-SA-00837"), "INTEL-SA-00837", true);
        vm.prank(operator);
        registration.setAdvisoryAllowed("INTEL-SA-00837", true);
        (ok, reason) = registration.isAppAllowed(info);
        vm.assertFalse(ok, "one advisory still outside the list");
        vm.assertEq(reason, "advisory INTEL-SA-00615 is not on the grace list", "names the second");

        vm.prank(operator);
        registration.setAdvisoryAllowed("INTEL-SA-00615", true);
        (ok, reason) = registration.isAppAllowed(info);
        vm.assertTrue(ok, "both on the grace list");
        vm.assertEq(reason, "", "no reason");
        vm.assertTrue(registration.isAdvisoryAllowed("INTEL-SA-00615"), "listed");
        (string memory required, string[] memory graced) = registration.tcbPolicy();
        vm.assertEq(required, "UpToDate", "required status");
        vm.assertEq(graced.length, 2, "two advisories");
        vm.assertEq(graced[0], "INTEL-SA-00837", "first");
        vm.assertEq(graced[1], "INTEL-SA-00615", "second");

        // The grace list does not excuse the status itself.
        info.tcbStatus = "OutOfDate";
        (ok, reason) = registration.isAppAllowed(info);
        vm.assertFalse(ok, "status still required");
        vm.assertEq(reason, "TCB status OutOfDate is not UpToDate", "reason");

        vm.expectEmit(cluster);
        emit IRegistrationFacet.AdvisoryAllowed(keccak256("INTEL-SA-00837"), "INTEL-SA-00837", false);
        vm.prank(operator);
        registration.setAdvisoryAllowed("INTEL-SA-00837", false);
        info.tcbStatus = "UpToDate";
        (ok, reason) = registration.isAppAllowed(info);
        vm.assertFalse(ok, "taken off the list");
        vm.assertEq(reason, "advisory INTEL-SA-00837 is not on the grace list", "reason");
        vm.assertFalse(registration.isAdvisoryAllowed("INTEL-SA-00837"), "not listed");
        (, graced) = registration.tcbPolicy();
        vm.assertEq(graced.length, 1, "one advisory left");
        vm.assertEq(graced[0], "INTEL-SA-00615", "the other");
    }

    function test_isAppAllowed_refusesAnotherInstanceOnceOneIsPinned() public {
        Node memory n = addNode("node-a");
        allowDevice1();
        address instance = address(0x1457);
        vm.assertEq(registration.pinnedInstance(n.account), address(0), "unpinned by default");

        vm.expectEmit(cluster);
        emit IRegistrationFacet.InstancePinned(n.account, instance);
        vm.prank(operator);
        registration.setInstancePinned(n.account, instance);
        vm.assertEq(registration.pinnedInstance(n.account), instance, "pinned");
        (bool ok,) = registration.isAppAllowed(bootInfo(n.account));
        vm.assertTrue(ok, "the pinned instance boots");

        IAppAuth.AppBootInfo memory other = bootInfo(n.account);
        other.instanceId = address(0xC10E);
        string memory reason;
        (ok, reason) = registration.isAppAllowed(other);
        vm.assertFalse(ok, "another instance");
        vm.assertEq(reason, "instance not pinned for this app id", "reason");

        vm.prank(operator);
        registration.setInstancePinned(n.account, address(0));
        (ok,) = registration.isAppAllowed(other);
        vm.assertTrue(ok, "unpinned again: any instance");
    }

    function test_RevertWhen_tcbPolicySetters_callerIsNotOwnerOrInputIsEmpty() public {
        address stranger = address(0x5757);
        bytes memory err = abi.encodeWithSelector(LibDiamond.NotContractOwner.selector, stranger, operator);
        vm.startPrank(stranger);
        vm.expectRevert(err);
        registration.setAdvisoryAllowed("INTEL-SA-00837", true);
        vm.expectRevert(err);
        registration.setInstancePinned(address(0xA99), address(1));
        vm.stopPrank();

        vm.startPrank(operator);
        vm.expectRevert(IRegistrationFacet.EmptyAdvisoryId.selector);
        registration.setAdvisoryAllowed("", true);
        vm.expectRevert(IRegistrationFacet.ZeroAddress.selector);
        registration.setInstancePinned(address(0), address(1));
        vm.stopPrank();
    }
}
