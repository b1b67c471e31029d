// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {CskEpoch, Envelope, Member, MemberStatus} from "../contracts/lib/ClusterTypes.sol";
import {IMemberFacet} from "../contracts/member/IMemberFacet.sol";
import {IMessageFacet} from "../contracts/message/IMessageFacet.sol";
import {ClusterFixture} from "./utils/ClusterFixture.sol";
import {Test} from "./utils/Test.sol";
import {Vm} from "./utils/Vm.sol";

/// @notice Drives a cluster with random registrations, revocations, CSK commitments and messages
///         (single and batched, with envelope ids from a small set so replays are frequent).
contract ClusterHandler is ClusterFixture {
    uint256 internal constant NODE_NAMES = 24;
    uint256 internal constant ENVELOPE_IDS = 4;

    /// @notice A (recipient, sender, envelope id) that was sent.
    struct SentKey {
        uint64 recipient;
        uint64 sender;
        bytes32 envelopeId;
    }

    /// @notice The commitment each epoch got when it was committed (zero: none yet).
    mapping(uint64 epoch => bytes32) public committedAt;
    uint256 public commits;
    /// @notice Commitments accepted from a member that is not the epoch's originator, or for an
    ///         epoch that is not the current one (must stay 0).
    uint256 public foreignCommitsAccepted;
    uint256 public registrations;
    uint256 public revocations;
    /// @notice Sends accepted although their key was already used (must stay 0).
    uint256 public replaysAccepted;
    /// @notice sendBatch calls whose return value differed from their MessageSent count (must stay 0).
    uint256 public batchCountMismatches;
    SentKey[] internal _sent;

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

    /// @notice A commitment by any member for the current epoch or an older one: only the
    ///         current epoch's originator may succeed, once.
    function commit(uint256 seed, uint256 memberSeed, uint256 epochSeed) external {
        IMemberFacet members = IMemberFacet(cluster);
        uint64 count = members.memberCount();
        if (count == 0) return;
        Member memory by = members.getMember(uint64(memberSeed % count) + 1);
        CskEpoch memory current = members.currentCskEpoch();
        uint64 epoch = current.epoch - uint64(epochSeed % (current.epoch + 1));
        bytes32 commitment = keccak256(abi.encode(seed));
        vm.prank(by.account);
        try members.commitClusterSharedKey(epoch, commitment) {
            if (by.id != current.originator || epoch != current.epoch) foreignCommitsAccepted += 1;
            committedAt[epoch] = commitment;
            commits += 1;
        } catch {}
    }

    /// @notice An operator rotation.
    function rotate() external {
        vm.prank(operator);
        IMemberFacet(cluster).rotateClusterSharedKey();
    }

    function send(uint256 fromSeed, uint256 toSeed, uint256 idSeed) external {
        IMemberFacet members = IMemberFacet(cluster);
        uint64 count = members.memberCount();
        if (count == 0) return;
        Member memory from = members.getMember(uint64(fromSeed % count) + 1);
        uint64 to = uint64(toSeed % count) + 1;
        bytes32 envelopeId = bytes32(idSeed % ENVELOPE_IDS);
        bool wasUsed = IMessageFacet(cluster).isEnvelopeUsed(to, from.id, envelopeId);
        vm.prank(from.account);
        try IMessageFacet(cluster).send(to, envelopeId, hex"c0ffee") {
            if (wasUsed) replaysAccepted += 1;
            _sent.push(SentKey(to, from.id, envelopeId));
        } catch {}
    }

    /// @notice A batch of 1..4 envelopes, each possibly empty, oversized, to an unknown or revoked
    ///         recipient, already used, or repeating an earlier entry.
    function sendBatch(uint256 fromSeed, uint256 seed) external {
        IMemberFacet members = IMemberFacet(cluster);
        uint64 count = members.memberCount();
        if (count == 0) return;
        Member memory from = members.getMember(uint64(fromSeed % count) + 1);
        Envelope[] memory batch = new Envelope[](1 + seed % 4);
        bool[] memory wasUsed = new bool[](batch.length);
        for (uint256 i = 0; i < batch.length; ++i) {
            uint256 r = uint256(keccak256(abi.encode(seed, i)));
            uint64 to = uint64(r % (count + 1)) + 1; // sometimes one past the last member
            uint256 size = (r >> 8) % 8 == 0 ? 0 : ((r >> 8) % 8 == 1 ? 4097 : 3);
            batch[i] = Envelope(to, bytes32((r >> 16) % ENVELOPE_IDS), new bytes(size));
            wasUsed[i] = IMessageFacet(cluster).isEnvelopeUsed(to, from.id, batch[i].envelopeId);
        }
        vm.recordLogs();
        vm.prank(from.account);
        try IMessageFacet(cluster).sendBatch(batch) returns (uint256 sent) {
            Vm.Log[] memory logs = vm.getRecordedLogs();
            uint256 events = 0;
            for (uint256 i = 0; i < logs.length; ++i) {
                if (logs[i].topics[0] != IMessageFacet.MessageSent.selector) continue;
                SentKey memory key = SentKey(
                    uint64(uint256(logs[i].topics[1])), uint64(uint256(logs[i].topics[2])), logs[i].topics[3]
                );
                for (uint256 j = 0; j < batch.length; ++j) {
                    if (
                        wasUsed[j] && batch[j].recipientMemberId == key.recipient
                            && batch[j].envelopeId == key.envelopeId
                    ) replaysAccepted += 1;
                }
                _sent.push(key);
                events += 1;
            }
            if (events != sent) batchCountMismatches += 1;
        } catch {
            vm.getRecordedLogs();
        }
    }

    function sentCount() external view returns (uint256) {
        return _sent.length;
    }

    function sentAt(uint256 i) external view returns (SentKey memory) {
        return _sent[i];
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
        bytes4[] memory selectors = new bytes4[](6);
        selectors[0] = ClusterHandler.register.selector;
        selectors[1] = ClusterHandler.revoke.selector;
        selectors[2] = ClusterHandler.commit.selector;
        selectors[3] = ClusterHandler.send.selector;
        selectors[4] = ClusterHandler.sendBatch.selector;
        selectors[5] = ClusterHandler.rotate.selector;
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

    /// @notice Every epoch's commitment is the one its originator set, never changed or lost;
    ///         nobody else ever committed one.
    function invariant_cskCommitmentsNeverChangeOnceSet() public view {
        vm.assertEq(handler.foreignCommitsAccepted(), 0, "a non-originator or stale commitment was accepted");
        CskEpoch memory current = members.currentCskEpoch();
        for (uint64 e = 0; e <= current.epoch; ++e) {
            vm.assertEq(
                members.cskEpoch(e).commitment, handler.committedAt(e), "commitment changed or was lost"
            );
        }
    }

    /// @notice The current epoch's originator is an active member, or 0 exactly when none is.
    function invariant_theCurrentOriginatorIsActive() public view {
        CskEpoch memory current = members.currentCskEpoch();
        if (members.activeMemberCount() == 0) {
            vm.assertEq(current.originator, 0, "an originator with no active member");
        } else {
            vm.assertTrue(
                members.getMember(current.originator).status == MemberStatus.Active,
                "the originator is not active"
            );
        }
    }

    /// @notice Replay protection: no (recipient, sender, envelope id) is ever sent twice, and
    ///         every one that was sent stays used.
    function invariant_everySentEnvelopeStaysUsedAndIsNeverSentTwice() public view {
        vm.assertEq(handler.replaysAccepted(), 0, "an envelope was sent twice");
        IMessageFacet messages = IMessageFacet(handler.clusterAddress());
        uint256 count = handler.sentCount();
        for (uint256 i = 0; i < count; ++i) {
            ClusterHandler.SentKey memory key = handler.sentAt(i);
            vm.assertTrue(
                messages.isEnvelopeUsed(key.recipient, key.sender, key.envelopeId), "sent but not used"
            );
            for (uint256 j = i + 1; j < count; ++j) {
                ClusterHandler.SentKey memory other = handler.sentAt(j);
                bool same = key.recipient == other.recipient && key.sender == other.sender
                    && key.envelopeId == other.envelopeId;
                vm.assertFalse(same, "the same envelope was sent twice");
            }
        }
    }

    /// @notice sendBatch's return value counts exactly the MessageSent events it emitted.
    function invariant_sendBatchReturnsWhatItSent() public view {
        vm.assertEq(handler.batchCountMismatches(), 0, "sendBatch count differs from its events");
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
