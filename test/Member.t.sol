// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {LibDiamond} from "../contracts/diamond/LibDiamond.sol";
import {ClusterConfig, CskEpoch, Member, MemberStatus} from "../contracts/lib/ClusterTypes.sol";
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

    // ------------------------------------------------------------------ CSK epochs

    function commitAs(Node memory n, uint64 epoch, bytes32 commitment) internal {
        vm.prank(n.account);
        members.commitClusterSharedKey(epoch, commitment);
    }

    function revoke(uint64 id) internal {
        vm.prank(operator);
        members.revokeMember(id);
    }

    function test_epochZero_opensWithTheClusterAndItsOriginatorIsTheFirstToJoin() public {
        CskEpoch memory e = members.currentCskEpoch();
        vm.assertEq(e.epoch, 0, "epoch 0");
        vm.assertEq(e.originator, 0, "no originator before anyone joins");
        vm.assertEq(e.openedAt, block.timestamp, "opened with the cluster");
        vm.assertEq(members.cskGracePeriod(), 1 hours, "default grace period");
        registerNodes(2);
        vm.assertEq(members.currentCskEpoch().originator, 1, "member 1 originates epoch 0");
    }

    function test_commitClusterSharedKey_theOriginatorSetsItOnce() public {
        Node[] memory nodes = registerNodes(2);
        bytes32 commitment = keccak256("the cluster shared key");
        vm.warp(block.timestamp + 7);
        vm.expectEmit(cluster);
        emit IMemberFacet.ClusterSharedKeyCommitted(0, 1, commitment);
        commitAs(nodes[0], 0, commitment);
        CskEpoch memory e = members.currentCskEpoch();
        vm.assertEq(e.commitment, commitment, "stored");
        vm.assertEq(e.committedAt, block.timestamp, "commit time");
        vm.assertEq(e.previousKeyUntil, 0, "epoch 0 has no previous key");

        vm.prank(nodes[0].account);
        vm.expectRevert(abi.encodeWithSelector(IMemberFacet.CskAlreadyCommitted.selector, 0, commitment));
        members.commitClusterSharedKey(0, keccak256("another key"));
    }

    function test_RevertWhen_commitClusterSharedKey_notTheOriginator() public {
        Node[] memory nodes = registerNodes(2);
        vm.prank(nodes[1].account);
        vm.expectRevert(abi.encodeWithSelector(IMemberFacet.NotEpochOriginator.selector, 2, 0, 1));
        members.commitClusterSharedKey(0, keccak256("csk"));
    }

    function test_RevertWhen_commitClusterSharedKey_notTheCurrentEpoch() public {
        Node[] memory nodes = registerNodes(3);
        revoke(3);
        vm.prank(nodes[0].account);
        vm.expectRevert(abi.encodeWithSelector(IMemberFacet.NotCurrentCskEpoch.selector, 0, 1));
        members.commitClusterSharedKey(0, keccak256("late for epoch 0"));
        vm.prank(nodes[0].account);
        vm.expectRevert(abi.encodeWithSelector(IMemberFacet.NotCurrentCskEpoch.selector, 2, 1));
        members.commitClusterSharedKey(2, keccak256("early for epoch 2"));
    }

    function test_RevertWhen_commitClusterSharedKey_zero() public {
        Node[] memory nodes = registerNodes(1);
        vm.prank(nodes[0].account);
        vm.expectRevert(IMemberFacet.ZeroCskCommitment.selector);
        members.commitClusterSharedKey(0, bytes32(0));
    }

    function test_RevertWhen_commitClusterSharedKey_nonMemberOrRevoked() public {
        Node[] memory nodes = registerNodes(1);
        vm.prank(address(0xBEEF));
        vm.expectRevert(abi.encodeWithSelector(IMemberFacet.NotAMember.selector, address(0xBEEF)));
        members.commitClusterSharedKey(0, keccak256("csk"));
        revoke(1);
        vm.prank(nodes[0].account);
        vm.expectRevert(abi.encodeWithSelector(IMemberFacet.MemberNotActive.selector, 1));
        members.commitClusterSharedKey(1, keccak256("csk"));
    }

    function test_revokeMember_opensAnEpochOriginatedByTheLowestActiveMember() public {
        Node[] memory nodes = registerNodes(3);
        commitAs(nodes[0], 0, keccak256("epoch 0"));
        vm.warp(block.timestamp + 100);
        vm.expectEmit(cluster);
        emit IMemberFacet.MemberRevoked(3, nodes[2].account);
        vm.expectEmit(cluster);
        emit IMemberFacet.CskEpochOpened(1, 1, 3);
        revoke(3);
        CskEpoch memory e = members.currentCskEpoch();
        vm.assertEq(e.epoch, 1, "a new epoch");
        vm.assertEq(e.originator, 1, "the lowest active member");
        vm.assertEq(e.revokedMember, 3, "opened by the revocation of member 3");
        vm.assertEq(e.openedAt, block.timestamp, "opened now");
        vm.assertEq(e.commitment, bytes32(0), "not committed yet");
        vm.assertEq(members.cskEpoch(0).commitment, keccak256("epoch 0"), "epoch 0 unchanged");
    }

    /// @notice Member 1 revoked before it committed: the next member originates the new epoch
    ///         and the cluster can still get a CSK (it used to be bricked).
    function test_succession_whenMemberOneIsRevokedBeforeCommitting() public {
        Node[] memory nodes = registerNodes(3);
        revoke(1);
        CskEpoch memory e = members.currentCskEpoch();
        vm.assertEq(e.originator, 2, "member 2 succeeds");
        vm.prank(nodes[0].account);
        vm.expectRevert(abi.encodeWithSelector(IMemberFacet.MemberNotActive.selector, 1));
        members.commitClusterSharedKey(1, keccak256("revoked originator"));
        commitAs(nodes[1], 1, keccak256("epoch 1"));
        e = members.currentCskEpoch();
        vm.assertEq(e.commitment, keccak256("epoch 1"), "committed by the successor");
        vm.assertEq(e.previousKeyUntil, 0, "no earlier epoch was committed: no grace window");
        vm.assertEq(members.cskEpoch(0).commitment, bytes32(0), "epoch 0 never committed");
    }

    /// @notice Member 1 revoked after it committed: the successor commits a new epoch and the
    ///         old key gets the grace window the owner set.
    function test_succession_whenMemberOneIsRevokedAfterCommitting() public {
        Node[] memory nodes = registerNodes(3);
        commitAs(nodes[0], 0, keccak256("epoch 0"));
        vm.prank(operator);
        members.setCskGracePeriod(600);
        revoke(1);
        vm.warp(block.timestamp + 4);
        vm.prank(nodes[0].account);
        vm.expectRevert(abi.encodeWithSelector(IMemberFacet.MemberNotActive.selector, 1));
        members.commitClusterSharedKey(1, keccak256("from the revoked member"));
        vm.prank(nodes[2].account);
        vm.expectRevert(abi.encodeWithSelector(IMemberFacet.NotEpochOriginator.selector, 3, 1, 2));
        members.commitClusterSharedKey(1, keccak256("from member 3"));
        commitAs(nodes[1], 1, keccak256("epoch 1"));
        CskEpoch memory e = members.currentCskEpoch();
        vm.assertEq(e.previousEpoch, 0, "the previous key is epoch 0's");
        vm.assertEq(e.previousKeyUntil, block.timestamp + 600, "grace window from the commitment");
        vm.assertEq(members.cskEpoch(0).commitment, keccak256("epoch 0"), "epoch 0 never changes");
    }

    /// @notice The grace window covers the last committed epoch, even when epochs in between
    ///         were opened and never committed.
    function test_previousEpoch_isTheLastCommittedOne() public {
        Node[] memory nodes = registerNodes(4);
        commitAs(nodes[0], 0, keccak256("epoch 0"));
        revoke(4);
        revoke(3);
        commitAs(nodes[0], 2, keccak256("epoch 2"));
        vm.assertEq(members.currentCskEpoch().previousEpoch, 0, "epoch 1 was never committed");
        vm.assertEq(members.cskEpoch(1).commitment, bytes32(0), "epoch 1 stays empty");
    }

    function test_rotateClusterSharedKey_onlyTheOwnerOpensAnEpoch() public {
        Node[] memory nodes = registerNodes(2);
        commitAs(nodes[0], 0, keccak256("epoch 0"));
        vm.prank(nodes[0].account);
        vm.expectRevert(
            abi.encodeWithSelector(LibDiamond.NotContractOwner.selector, nodes[0].account, operator)
        );
        members.rotateClusterSharedKey();
        vm.expectEmit(cluster);
        emit IMemberFacet.CskEpochOpened(1, 1, 0);
        vm.prank(operator);
        members.rotateClusterSharedKey();
        CskEpoch memory e = members.currentCskEpoch();
        vm.assertEq(e.epoch, 1, "rotated");
        vm.assertEq(e.revokedMember, 0, "nobody revoked");
        vm.assertEq(members.activeMemberCount(), 2, "nobody left");
    }

    function test_setCskGracePeriod_onlyTheOwnerAndBounded() public {
        vm.expectRevert(abi.encodeWithSelector(LibDiamond.NotContractOwner.selector, address(this), operator));
        members.setCskGracePeriod(60);
        vm.prank(operator);
        vm.expectRevert(
            abi.encodeWithSelector(IMemberFacet.CskGracePeriodTooLong.selector, 30 days + 1, 30 days)
        );
        members.setCskGracePeriod(30 days + 1);
        vm.expectEmit(cluster);
        emit IMemberFacet.CskGracePeriodSet(60);
        vm.prank(operator);
        members.setCskGracePeriod(60);
        vm.assertEq(members.cskGracePeriod(), 60, "set");
    }

    /// @notice Every member revoked: the open epoch has no originator until someone joins, and
    ///         that member originates it.
    function test_anEmptyClusterHandsTheOpenEpochToTheNextToJoin() public {
        registerNodes(2);
        revoke(1);
        revoke(2);
        CskEpoch memory e = members.currentCskEpoch();
        vm.assertEq(e.epoch, 2, "two revocations, two epochs");
        vm.assertEq(e.originator, 0, "nobody to originate it");
        Node memory late = addNode("late");
        registerDirect(late);
        vm.assertEq(members.currentCskEpoch().originator, 3, "the newcomer originates it");
        commitAs(late, 2, keccak256("epoch 2"));
    }

    function test_RevertWhen_cskEpoch_notOpenedYet() public {
        vm.expectRevert(abi.encodeWithSelector(IMemberFacet.UnknownCskEpoch.selector, 1, 0));
        members.cskEpoch(1);
    }

    /// @notice Fuzzed revocation orders: the originator of each new epoch is the lowest active
    ///         member id, whatever was revoked before.
    function testFuzz_theOriginatorIsAlwaysTheLowestActiveMember(uint8 count, uint64 order) public {
        uint256 n = bound(count, 2, 10);
        registerNodes(n);
        for (uint256 step = 0; step < n - 1; ++step) {
            uint64 id = uint64((order >> (step * 4)) % n) + 1;
            if (members.getMember(id).status != MemberStatus.Active) continue;
            revoke(id);
            uint64 lowest = 0;
            for (uint64 candidate = 1; candidate <= n; ++candidate) {
                if (members.getMember(candidate).status == MemberStatus.Active) {
                    lowest = candidate;
                    break;
                }
            }
            vm.assertEq(members.currentCskEpoch().originator, lowest, "originator is the lowest active id");
        }
    }
}
