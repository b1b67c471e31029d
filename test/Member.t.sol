// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {LibDiamond} from "../contracts/diamond/LibDiamond.sol";
import {ClusterConfig, Member, MemberStatus} from "../contracts/lib/ClusterTypes.sol";
import {IMemberFacet} from "../contracts/member/IMemberFacet.sol";
import {ClusterFixture} from "./utils/ClusterFixture.sol";

/// @notice Member records, mesh IP allocation, revocation and the CSK commitment.
contract MemberTest is ClusterFixture {
    IMemberFacet internal members;

    function setUp() public {
        setUpCluster();
        members = IMemberFacet(cluster);
    }

    function registerNodes(uint256 count) internal returns (Node[] memory nodes) {
        nodes = new Node[](count);
        for (uint256 i = 0; i < count; ++i) {
            nodes[i] = addNode(string(abi.encodePacked("node-", vm.toString(i))));
            registerDirect(nodes[i]);
        }
    }

    function test_views_lookUpMembersByIdAndAccount() public {
        Node[] memory nodes = registerNodes(3);
        vm.assertEq(members.memberCount(), 3, "count");
        vm.assertEq(members.activeMemberCount(), 3, "active");
        vm.assertEq(members.getMemberByAccount(nodes[1].account).id, 2, "by account");
        vm.assertEq(members.memberIdOf(nodes[2].account), 3, "id of");
        vm.assertEq(members.memberIdOf(address(0xBEEF)), 0, "non-member id is 0");
        vm.assertTrue(members.isActiveMember(nodes[0].account), "active member");
        vm.assertFalse(members.isActiveMember(address(0xBEEF)), "non-member");
        vm.assertEq(members.meshIpOf(3), MESH_NETWORK + 3, "mesh ip");
        (uint32 network, uint8 prefix, uint64 capacity) = members.meshConfig();
        vm.assertEq(network, MESH_NETWORK, "network");
        vm.assertEq(prefix, MESH_PREFIX, "prefix");
        vm.assertEq(capacity, 65534, "a /16 holds 65534 hosts");
        vm.assertEq(members.clusterFactory(), address(factory), "factory");
    }

    function test_listMembers_paginatesAndClamps() public {
        registerNodes(3);
        vm.assertEq(members.listMembers(1, 2).length, 2, "first page");
        Member[] memory page = members.listMembers(3, 10);
        vm.assertEq(page.length, 1, "last page clamps");
        vm.assertEq(page[0].id, 3, "last page holds id 3");
        vm.assertEq(members.listMembers(0, 10).length, 3, "from 0 reads from 1");
        vm.assertEq(members.listMembers(4, 10).length, 0, "past the end is empty");
    }

    function test_RevertWhen_getMember_unknownId() public {
        vm.expectRevert(abi.encodeWithSelector(IMemberFacet.UnknownMember.selector, 7));
        members.getMember(7);
        vm.expectRevert(abi.encodeWithSelector(IMemberFacet.UnknownMember.selector, 7));
        members.meshIpOf(7);
    }

    function test_RevertWhen_getMemberByAccount_notAMember() public {
        vm.expectRevert(abi.encodeWithSelector(IMemberFacet.NotAMember.selector, address(0xBEEF)));
        members.getMemberByAccount(address(0xBEEF));
    }

    function test_revokeMember_retiresTheMemberAndItsMeshIp() public {
        Node[] memory nodes = registerNodes(2);
        vm.expectEmit(cluster);
        emit IMemberFacet.MemberRevoked(1, nodes[0].account);
        vm.prank(operator);
        members.revokeMember(1);
        vm.assertEq(uint8(members.getMember(1).status), uint8(MemberStatus.Revoked), "revoked");
        vm.assertEq(members.activeMemberCount(), 1, "one active");
        vm.assertEq(members.listActiveMembers().length, 1, "listing agrees");
        vm.assertEq(members.listActiveMembers()[0].id, 2, "node 2 remains");
        // The next member gets a fresh address: 10.88.0.1 is never handed out again.
        Node memory late = addNode("late");
        registerDirect(late);
        vm.assertEq(members.getMemberByAccount(late.account).meshIp, MESH_NETWORK + 3, "no reuse");
    }

    function test_RevertWhen_revokeMember_notOwner() public {
        registerNodes(1);
        vm.prank(address(0x5757));
        vm.expectRevert(
            abi.encodeWithSelector(LibDiamond.NotContractOwner.selector, address(0x5757), operator)
        );
        members.revokeMember(1);
    }

    function test_RevertWhen_revokeMember_alreadyRevokedOrUnknown() public {
        registerNodes(1);
        vm.startPrank(operator);
        members.revokeMember(1);
        vm.expectRevert(abi.encodeWithSelector(IMemberFacet.MemberNotActive.selector, 1));
        members.revokeMember(1);
        vm.expectRevert(abi.encodeWithSelector(IMemberFacet.UnknownMember.selector, 9));
        members.revokeMember(9);
        vm.stopPrank();
    }

    function test_RevertWhen_register_meshAddressSpaceExhausted() public {
        ClusterConfig memory config = defaultConfig();
        config.meshPrefixLength = 30; // 4 addresses: network, 2 hosts, broadcast
        vm.prank(operator);
        cluster = factory.createCluster(bytes32("tiny"), config);
        members = IMemberFacet(cluster);
        registerNodes(2);
        Node memory third = addNode("third");
        vm.expectRevert(abi.encodeWithSelector(IMemberFacet.MeshAddressSpaceExhausted.selector, 2));
        this.registerAs(third);
    }

    /// @dev Indirection so expectRevert applies to the dstack_register call, not to proof building.
    function registerAs(Node memory n) external returns (uint64) {
        return registerDirect(n);
    }

    /// @notice Mesh IPs are unique, inside the CIDR, and never the network or broadcast address.
    function testFuzz_meshIps_neverCollideAndStayInCidr(uint8 count, uint8 revokeMask) public {
        uint256 n = bound(count, 1, 12);
        registerNodes(n);
        for (uint64 id = 1; id <= n; ++id) {
            if ((revokeMask >> (id % 8)) & 1 == 1) {
                vm.prank(operator);
                members.revokeMember(id);
            }
        }
        Member[] memory all = members.listMembers(1, uint64(n));
        for (uint256 i = 0; i < all.length; ++i) {
            uint32 ip = all[i].meshIp;
            vm.assertGt(ip, MESH_NETWORK, "above the network address");
            vm.assertLe(ip, MESH_NETWORK + 65534, "below the broadcast address");
            for (uint256 j = i + 1; j < all.length; ++j) {
                vm.assertNotEq(uint256(ip), uint256(all[j].meshIp), "mesh ips collide");
            }
        }
    }

    // ------------------------------------------------------------------ CSK commitment

    function test_commitClusterSharedKey_firstRegistrantSetsItOnce() public {
        Node[] memory nodes = registerNodes(2);
        bytes32 commitment = keccak256("the cluster shared key");
        vm.expectEmit(cluster);
        emit IMemberFacet.ClusterSharedKeyCommitted(1, commitment);
        vm.prank(nodes[0].account);
        members.commitClusterSharedKey(commitment);
        vm.assertEq(members.cskCommitment(), commitment, "stored");

        vm.prank(nodes[0].account);
        vm.expectRevert(abi.encodeWithSelector(IMemberFacet.CskAlreadyCommitted.selector, commitment));
        members.commitClusterSharedKey(keccak256("another key"));
    }

    function test_RevertWhen_commitClusterSharedKey_notFirstRegistrant() public {
        Node[] memory nodes = registerNodes(2);
        vm.prank(nodes[1].account);
        vm.expectRevert(abi.encodeWithSelector(IMemberFacet.NotFirstRegistrant.selector, nodes[1].account));
        members.commitClusterSharedKey(keccak256("csk"));
    }

    function test_RevertWhen_commitClusterSharedKey_zero() public {
        Node[] memory nodes = registerNodes(1);
        vm.prank(nodes[0].account);
        vm.expectRevert(IMemberFacet.ZeroCskCommitment.selector);
        members.commitClusterSharedKey(bytes32(0));
    }

    function test_RevertWhen_commitClusterSharedKey_nonMemberOrRevoked() public {
        Node[] memory nodes = registerNodes(1);
        vm.prank(address(0xBEEF));
        vm.expectRevert(abi.encodeWithSelector(IMemberFacet.NotAMember.selector, address(0xBEEF)));
        members.commitClusterSharedKey(keccak256("csk"));
        vm.prank(operator);
        members.revokeMember(1);
        vm.prank(nodes[0].account);
        vm.expectRevert(abi.encodeWithSelector(IMemberFacet.MemberNotActive.selector, 1));
        members.commitClusterSharedKey(keccak256("csk"));
    }
}
