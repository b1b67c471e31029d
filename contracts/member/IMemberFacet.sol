// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {CskEpoch, Member} from "../lib/ClusterTypes.sol";

/// @title IMemberFacet
/// @notice Member records, mesh IPs, revocation and the Cluster Shared Key epochs.
interface IMemberFacet {
    /// @notice No member has this id.
    error UnknownMember(uint64 memberId);
    /// @notice This account holds no member record.
    error NotAMember(address account);
    /// @notice The member is revoked (or never existed) where an active one is required.
    error MemberNotActive(uint64 memberId);
    /// @notice The cluster CIDR has no address left; mesh IPs are never reused.
    error MeshAddressSpaceExhausted(uint64 capacity);
    /// @notice The mesh CIDR is not usable (prefix outside 8..30, or host bits set).
    error InvalidMeshCidr(uint32 network, uint8 prefixLength);
    /// @notice Only the epoch's originator may commit its CSK.
    error NotEpochOriginator(uint64 memberId, uint64 epoch, uint64 originator);
    /// @notice Only the current epoch can be committed.
    error NotCurrentCskEpoch(uint64 epoch, uint64 current);
    /// @notice An epoch's commitment is set once and never changes.
    error CskAlreadyCommitted(uint64 epoch, bytes32 commitment);
    /// @notice A zero commitment would read as "not committed".
    error ZeroCskCommitment();
    /// @notice No such epoch has been opened yet.
    error UnknownCskEpoch(uint64 epoch, uint64 current);
    /// @notice The grace period may not exceed the maximum.
    error CskGracePeriodTooLong(uint32 secondsRequested, uint32 maximum);

    /// @notice A node joined the cluster.
    event MemberRegistered(
        uint64 indexed memberId,
        address indexed account,
        address signer,
        uint32 meshIp,
        bytes32 x25519,
        bytes32 ed25519,
        bytes32 wireguard
    );
    /// @notice The owner revoked a member; its mesh IP is retired for good.
    event MemberRevoked(uint64 indexed memberId, address indexed account);
    /// @notice A CSK epoch opened (with the cluster, on a revocation, or on an operator rotation).
    /// @param originator The member that derives and commits its key (0: the next to join).
    /// @param revokedMember The member whose revocation opened it (0: none).
    event CskEpochOpened(uint64 indexed epoch, uint64 indexed originator, uint64 revokedMember);
    /// @notice The originator of `epoch` committed keccak256(its CSK).
    event ClusterSharedKeyCommitted(uint64 indexed epoch, uint64 indexed memberId, bytes32 commitment);
    /// @notice The owner set how long the previous epoch's key stays available after a rotation.
    event CskGracePeriodSet(uint32 graceSeconds);

    /// @notice A member by id (reverts UnknownMember).
    function getMember(uint64 memberId) external view returns (Member memory);

    /// @notice A member by account (reverts NotAMember).
    function getMemberByAccount(address account) external view returns (Member memory);

    /// @notice The member id of `account`, 0 when it has none.
    function memberIdOf(address account) external view returns (uint64);

    /// @notice True when `account` is an active member.
    function isActiveMember(address account) external view returns (bool);

    /// @notice Members ever registered (the highest member id).
    function memberCount() external view returns (uint64);

    /// @notice Members currently active.
    function activeMemberCount() external view returns (uint64);

    /// @notice Members with ids in [fromId, fromId + limit), revoked ones included.
    function listMembers(uint64 fromId, uint64 limit) external view returns (Member[] memory);

    /// @notice Every active member, by id.
    function listActiveMembers() external view returns (Member[] memory);

    /// @notice The mesh IP of a member (reverts UnknownMember).
    function meshIpOf(uint64 memberId) external view returns (uint32);

    /// @notice The cluster CIDR and how many members it can ever hold.
    function meshConfig() external view returns (uint32 network, uint8 prefixLength, uint64 capacity);

    /// @notice The factory that created this cluster (its indexer registry lives there).
    function clusterFactory() external view returns (address);

    /// @notice The current CSK epoch: its number, originator, commitment and the previous
    ///         key's grace window, in one call.
    function currentCskEpoch() external view returns (CskEpoch memory);

    /// @notice A CSK epoch opened so far (reverts UnknownCskEpoch).
    function cskEpoch(uint64 epoch) external view returns (CskEpoch memory);

    /// @notice How long (seconds) the previous epoch's key stays available after a commitment.
    function cskGracePeriod() external view returns (uint32);

    /// @notice Commits keccak256(CSK) of the current epoch; once per epoch, only by its originator.
    function commitClusterSharedKey(uint64 epoch, bytes32 commitment) external;

    /// @notice Opens a new CSK epoch without revoking anyone (only the owner).
    function rotateClusterSharedKey() external;

    /// @notice Sets the grace period of later rotations (only the owner; at most 30 days).
    function setCskGracePeriod(uint32 graceSeconds) external;

    /// @notice Revokes an active member and opens a new CSK epoch (only the owner).
    function revokeMember(uint64 memberId) external;
}
