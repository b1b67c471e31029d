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
    /// @notice Operations the rules allow that were refused anyway: the originator's first
    ///         commitment of the current epoch, a send or batch from an active member (must stay 0).
    uint256 public rightfulRefused;
    /// @notice Sends the rules refuse that went out anyway, and batches that sent other than their
    ///         valid entries (must stay 0).
    uint256 public wrongfulAccepted;
    /// @notice Handler calls that returned in this run (a reverted call is not counted; with
    ///         fail_on_revert = true it fails the campaign instead).
    uint256 public calls;
    SentKey[] internal _sent;

    function setUp() external {
        setUpCluster();
    }

    function clusterAddress() external view returns (address) {
        return cluster;
    }

    function register(uint256 seed) external {
        calls += 1;
        Node memory n = makeNode(string(abi.encodePacked("node-", vm.toString(seed % NODE_NAMES))));
        IMemberFacet members = IMemberFacet(cluster);
        uint64 id = members.memberIdOf(n.account);
        if (id != 0 && members.getMember(id).status == MemberStatus.Revoked) return; // revoked for good
        if (n.account.code.length == 0) n = addNode(n.name);
        registerDirect(n);
        registrations += 1;
    }

    function revoke(uint256 seed) external {
        calls += 1;
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
        calls += 1;
        IMemberFacet members = IMemberFacet(cluster);
        uint64 count = members.memberCount();
        if (count == 0) return;
        Member memory by = members.getMember(uint64(memberSeed % count) + 1);
        CskEpoch memory current = members.currentCskEpoch();
        uint64 epoch = current.epoch - uint64(epochSeed % (current.epoch + 1));
        bytes32 commitment = keccak256(abi.encode(seed));
        bool rightful =
            by.id == current.originator && epoch == current.epoch && current.commitment == bytes32(0);
        vm.prank(by.account);
        try members.commitClusterSharedKey(epoch, commitment) {
            if (by.id != current.originator || epoch != current.epoch) foreignCommitsAccepted += 1;
            committedAt[epoch] = commitment;
            commits += 1;
        } catch {
            if (rightful) rightfulRefused += 1;
        }
    }

    /// @notice An operator rotation.
    function rotate() external {
        calls += 1;
        vm.prank(operator);
        IMemberFacet(cluster).rotateClusterSharedKey();
    }

    function send(uint256 fromSeed, uint256 toSeed, uint256 idSeed) external {
        calls += 1;
        IMemberFacet members = IMemberFacet(cluster);
        uint64 count = members.memberCount();
        if (count == 0) return;
        Member memory from = members.getMember(uint64(fromSeed % count) + 1);
        uint64 to = uint64(toSeed % count) + 1;
        bytes32 envelopeId = bytes32(idSeed % ENVELOPE_IDS);
        bool wasUsed = IMessageFacet(cluster).isEnvelopeUsed(to, from.id, envelopeId);
        bool rightful = from.status == MemberStatus.Active
            && members.getMember(to).status == MemberStatus.Active && !wasUsed;
        vm.prank(from.account);
        try IMessageFacet(cluster).send(to, envelopeId, hex"c0ffee") {
            if (wasUsed) replaysAccepted += 1;
            if (!rightful) wrongfulAccepted += 1;
            _sent.push(SentKey(to, from.id, envelopeId));
        } catch {
            if (rightful) rightfulRefused += 1;
        }
    }

    /// @notice A batch of 1..4 envelopes, each possibly empty, oversized, to an unknown or revoked
    ///         recipient, already used, or repeating an earlier entry.
    function sendBatch(uint256 fromSeed, uint256 seed) external {
        calls += 1;
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
        uint256 expected = _validEntries(batch, wasUsed, count);
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
            if (from.status != MemberStatus.Active || sent != expected) wrongfulAccepted += 1;
        } catch {
            vm.getRecordedLogs();
            if (from.status == MemberStatus.Active) rightfulRefused += 1;
        }
    }

    /// @notice How many entries of `batch` the rules let through: non-empty and within the cap, to
    ///         an active member, under a key unused before the batch and not sent earlier in it.
    function _validEntries(Envelope[] memory batch, bool[] memory wasUsed, uint64 count)
        private
        view
        returns (uint256 valid)
    {
        bool[] memory ok = new bool[](batch.length);
        for (uint256 i = 0; i < batch.length; ++i) {
            Envelope memory e = batch[i];
            ok[i] = e.ciphertext.length > 0
                && e.ciphertext.length <= IMessageFacet(cluster).maxCiphertextSize()
                && e.recipientMemberId <= count
                && IMemberFacet(cluster).getMember(e.recipientMemberId).status == MemberStatus.Active
                && !wasUsed[i];
            for (uint256 k = 0; k < i && ok[i]; ++k) {
                if (
                    ok[k] && batch[k].recipientMemberId == e.recipientMemberId
                        && batch[k].envelopeId == e.envelopeId
                ) {
                    ok[i] = false;
                }
            }
            if (ok[i]) valid += 1;
        }
    }

    function sentCount() external view returns (uint256) {
        return _sent.length;
    }

    function sentAt(uint256 i) external view returns (SentKey memory) {
        return _sent[i];
    }
}

/// @notice The campaign set-up both invariant contracts share: the handler and its six actions.
abstract contract ClusterCampaign is Test {
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
}

/// @notice Properties that hold after any sequence of cluster operations.
contract ClusterInvariantsTest is ClusterCampaign {
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

    /// @notice The handlers' refusals are the rules' refusals, not any revert: what the rules
    ///         allow is accepted (the originator's commitment, sends and batches from active
    ///         members) and what they refuse is refused.
    function invariant_rightfulOperationsAreAcceptedAndOthersRefused() public view {
        vm.assertEq(handler.rightfulRefused(), 0, "an operation the rules allow was refused");
        vm.assertEq(handler.wrongfulAccepted(), 0, "an operation the rules refuse went out");
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

/// @notice The invariants above hold trivially on an empty cluster, so the handler must be shown
///         to do something: its calls never revert (fail_on_revert = true in foundry.toml; the
///         handlers catch the refusals they provoke) and every full run of this campaign, by
///         chance alone, registers members, sends messages and revokes members.
/// @dev A campaign of its own, on the same handler: forge also calls afterInvariant while
///      shrinking a failed sequence, so next to the invariants it would shrink a real
///      counterexample into a "no progress" one. Its runs are longer than foundry.toml's so that
///      a run without progress is a broken handler, not bad luck: at depth 128 about one run in
///      a thousand revokes every member before any of them sends.
contract ClusterProgressTest is ClusterCampaign {
    /// @dev Shorter sequences (a shrunk or replayed one) are not judged: half the depth below.
    uint256 internal constant MIN_CALLS = 128;

    /// @notice After every full run: the cluster saw registrations, sends and revocations.
    function afterInvariant() public view {
        if (handler.calls() < MIN_CALLS) return;
        vm.assertGt(members.memberCount(), 0, "progress: no member registered in a full run");
        vm.assertGt(handler.sentCount(), 0, "progress: no message sent in a full run");
        vm.assertGt(handler.revocations(), 0, "progress: no member revoked in a full run");
    }

    /// @notice The ghost counters the progress check reads agree with the cluster: every counted
    ///         revocation revoked a member, and no member appeared without a counted registration.
    /// forge-config: default.invariant.runs = 8
    /// forge-config: default.invariant.depth = 256
    function invariant_ghostCountersAgreeWithTheCluster() public view {
        uint64 registered = members.memberCount();
        Member[] memory all = members.listMembers(1, registered);
        uint256 revoked = 0;
        for (uint256 i = 0; i < all.length; ++i) {
            if (all[i].status == MemberStatus.Revoked) revoked += 1;
        }
        vm.assertEq(revoked, handler.revocations(), "revocations counted = members revoked");
        vm.assertLe(registered, handler.registrations(), "members registered <= registrations counted");
    }
}
