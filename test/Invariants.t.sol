// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Member, MemberStatus} from "../contracts/lib/ClusterTypes.sol";
import {IMemberFacet} from "../contracts/member/IMemberFacet.sol";
import {IMessageFacet} from "../contracts/message/IMessageFacet.sol";
import {ClusterFixture} from "./utils/ClusterFixture.sol";
import {Test} from "./utils/Test.sol";

/// @notice Drives a cluster with random registrations, revocations, CSK commitments and messages.
contract ClusterHandler is ClusterFixture {
    uint256 internal constant NODE_NAMES = 24;

    bytes32 public firstCommitment;
    uint256 public registrations;
    uint256 public revocations;

    function setUp() external {
        setUpCluster();
    }

    function clusterAddress() external view returns (address) {
        return cluster;
    }

    function register(uint256 seed) external {
        Node memory n = makeNode(string(abi.encodePacked("node-", vm.toString(seed % NODE_NAMES))));
        IMemberFacet members = IMemberFacet(cluster);
        uint64 id = members.memberIdOf(n.account);
        if (id != 0 && members.getMember(id).status == MemberStatus.Revoked) return; // revoked for good
        if (n.account.code.length == 0) n = addNode(n.name);
        registerDirect(n);
        registrations += 1;
    }

    function revoke(uint256 seed) external {
        IMemberFacet members = IMemberFacet(cluster);
        uint64 count = members.memberCount();
        if (count == 0) return;
        uint64 id = uint64(seed % count) + 1;
        if (members.getMember(id).status != MemberStatus.Active) return;
        vm.prank(operator);
        members.revokeMember(id);
        revocations += 1;
    }

    function commit(uint256 seed) external {
        IMemberFacet members = IMemberFacet(cluster);
        if (members.memberCount() == 0) return;
        Member memory first = members.getMember(1);
        bytes32 commitment = keccak256(abi.encode(seed));
        vm.prank(first.account);
        try members.commitClusterSharedKey(commitment) {
            if (firstCommitment == bytes32(0)) firstCommitment = commitment;
        } catch {}
    }

    function send(uint256 fromSeed, uint256 toSeed, bytes32 envelopeId) external {
        IMemberFacet members = IMemberFacet(cluster);
        uint64 count = members.memberCount();
        if (count == 0) return;
        Member memory from = members.getMember(uint64(fromSeed % count) + 1);
        vm.prank(from.account);
        try IMessageFacet(cluster).send(uint64(toSeed % count) + 1, envelopeId, hex"c0ffee") {} catch {}
    }
}

/// @notice Properties that hold after any sequence of cluster operations.
contract ClusterInvariantsTest is Test {
    ClusterHandler internal handler;
    IMemberFacet internal members;

    function setUp() public {
        handler = new ClusterHandler();
        handler.setUp();
        members = IMemberFacet(handler.clusterAddress());
        targetContract(address(handler));
        bytes4[] memory selectors = new bytes4[](4);
        selectors[0] = ClusterHandler.register.selector;
        selectors[1] = ClusterHandler.revoke.selector;
        selectors[2] = ClusterHandler.commit.selector;
        selectors[3] = ClusterHandler.send.selector;
        targetSelector(FuzzSelector({addr: address(handler), selectors: selectors}));
    }

    function invariant_noTwoActiveMembersShareAMeshIp() public view {
        Member[] memory active = members.listActiveMembers();
        for (uint256 i = 0; i < active.length; ++i) {
            for (uint256 j = i + 1; j < active.length; ++j) {
                vm.assertNotEq(uint256(active[i].meshIp), uint256(active[j].meshIp), "shared mesh ip");
            }
        }
    }

    function invariant_cskCommitmentNeverChangesOnceSet() public view {
        vm.assertEq(members.cskCommitment(), handler.firstCommitment(), "commitment changed or was lost");
    }

    function invariant_countsAndListingsAgree() public view {
        uint64 total = members.memberCount();
        Member[] memory all = members.listMembers(1, total);
        vm.assertEq(all.length, total, "listing covers every member");
        uint256 active = 0;
        for (uint256 i = 0; i < all.length; ++i) {
            vm.assertEq(all[i].id, i + 1, "ids are sequential");
            vm.assertEq(members.memberIdOf(all[i].account), all[i].id, "account index agrees");
            if (all[i].status == MemberStatus.Active) active += 1;
        }
        vm.assertEq(active, members.activeMemberCount(), "active count");
        vm.assertEq(members.listActiveMembers().length, active, "active listing");
    }
}
