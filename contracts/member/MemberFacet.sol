// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {LibDiamond} from "../diamond/LibDiamond.sol";
import {CskEpoch, Member, MemberStatus} from "../lib/ClusterTypes.sol";
import {IMemberFacet} from "./IMemberFacet.sol";
import {MemberStorage} from "./MemberStorage.sol";

/// @title MemberFacet
/// @notice Reads of the member set, revocation, and the CSK epochs.
contract MemberFacet is IMemberFacet {
    /// @inheritdoc IMemberFacet
    function getMember(uint64 memberId) external view override returns (Member memory) {
        return MemberStorage.load(memberId);
    }

    /// @inheritdoc IMemberFacet
    function getMemberByAccount(address account) external view override returns (Member memory) {
        uint64 id = MemberStorage.idOf(account);
        if (id == 0) revert NotAMember(account);
        return MemberStorage.load(id);
    }

    /// @inheritdoc IMemberFacet
    function memberIdOf(address account) external view override returns (uint64) {
        return MemberStorage.idOf(account);
    }

    /// @inheritdoc IMemberFacet
    function isActiveMember(address account) external view override returns (bool) {
        return MemberStorage.isActive(account);
    }

    /// @inheritdoc IMemberFacet
    function memberCount() external view override returns (uint64) {
        return MemberStorage.layout().memberCount;
    }

    /// @inheritdoc IMemberFacet
    function activeMemberCount() external view override returns (uint64) {
        return MemberStorage.layout().activeCount;
    }

    /// @inheritdoc IMemberFacet
    function listMembers(uint64 fromId, uint64 limit)
        external
        view
        override
        returns (Member[] memory result)
    {
        MemberStorage.Layout storage l = MemberStorage.layout();
        if (fromId == 0) fromId = 1;
        if (fromId > l.memberCount) return new Member[](0);
        uint64 available = l.memberCount - fromId + 1;
        uint64 count = limit < available ? limit : available;
        result = new Member[](count);
        for (uint64 i = 0; i < count; ++i) {
            result[i] = MemberStorage.loadUnchecked(fromId + i);
        }
    }

    /// @inheritdoc IMemberFacet
    function listActiveMembers() external view override returns (Member[] memory result) {
        MemberStorage.Layout storage l = MemberStorage.layout();
        result = new Member[](l.activeCount);
        uint256 next = 0;
        for (uint64 id = 1; id <= l.memberCount; ++id) {
            if (l.members[id].status == MemberStatus.Active) {
                result[next++] = MemberStorage.loadUnchecked(id);
            }
        }
    }

    /// @inheritdoc IMemberFacet
    function meshIpOf(uint64 memberId) external view override returns (uint32) {
        if (MemberStorage.status(memberId) == MemberStatus.None) revert UnknownMember(memberId);
        return MemberStorage.meshIpFor(memberId);
    }

    /// @inheritdoc IMemberFacet
    function meshConfig()
        external
        view
        override
        returns (uint32 network, uint8 prefixLength, uint64 capacity)
    {
        MemberStorage.Layout storage l = MemberStorage.layout();
        return (l.meshNetwork, l.meshPrefixLength, MemberStorage.capacity());
    }

    /// @inheritdoc IMemberFacet
    function clusterFactory() external view override returns (address) {
        return MemberStorage.layout().factory;
    }

    /// @inheritdoc IMemberFacet
    function currentCskEpoch() external view override returns (CskEpoch memory) {
        return MemberStorage.loadEpoch(MemberStorage.layout().cskEpoch);
    }

    /// @inheritdoc IMemberFacet
    function cskEpoch(uint64 epoch) external view override returns (CskEpoch memory) {
        return MemberStorage.loadEpoch(epoch);
    }

    /// @inheritdoc IMemberFacet
    function cskGracePeriod() external view override returns (uint32) {
        return MemberStorage.layout().cskGraceSeconds;
    }

    /// @inheritdoc IMemberFacet
    function commitClusterSharedKey(uint64 epoch, bytes32 commitment) external override {
        uint64 id = MemberStorage.requireActive(msg.sender);
        bytes memory refusal = MemberStorage.commitRefusal(id, epoch, commitment);
        if (refusal.length != 0) {
            assembly {
                revert(add(refusal, 32), mload(refusal))
            }
        }
        MemberStorage.commit(id, epoch, commitment);
    }

    /// @inheritdoc IMemberFacet
    function rotateClusterSharedKey() external override {
        LibDiamond.enforceIsOwner();
        MemberStorage.openEpoch(0);
    }

    /// @inheritdoc IMemberFacet
    function setCskGracePeriod(uint32 graceSeconds) external override {
        LibDiamond.enforceIsOwner();
        if (graceSeconds > MemberStorage.MAX_CSK_GRACE_SECONDS) {
            revert CskGracePeriodTooLong(graceSeconds, MemberStorage.MAX_CSK_GRACE_SECONDS);
        }
        MemberStorage.layout().cskGraceSeconds = graceSeconds;
        emit CskGracePeriodSet(graceSeconds);
    }

    /// @inheritdoc IMemberFacet
    function revokeMember(uint64 memberId) external override {
        LibDiamond.enforceIsOwner();
        emit MemberRevoked(memberId, MemberStorage.revoke(memberId));
        MemberStorage.openEpoch(memberId);
    }
}
