// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Member} from "../lib/ClusterTypes.sol";

/// @title IMemberFacet
/// @notice Member records, mesh IPs, revocation and the Cluster Shared Key commitment.
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
    /// @notice Only the first registrant (member 1) may commit the CSK.
    error NotFirstRegistrant(address caller);
    /// @notice The CSK commitment is set once and never changes.
    error CskAlreadyCommitted(bytes32 commitment);
    /// @notice A zero commitment would read as "not committed".
    error ZeroCskCommitment();

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
    /// @notice The first registrant committed keccak256(CSK).
    event ClusterSharedKeyCommitted(uint64 indexed memberId, bytes32 commitment);

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

    /// @notice keccak256(CSK), or zero before the first registrant commits it.
    function cskCommitment() external view returns (bytes32);

    /// @notice Commits keccak256(CSK); once, and only by the first registrant's account.
    function commitClusterSharedKey(bytes32 commitment) external;

    /// @notice Revokes an active member (only the owner).
    function revokeMember(uint64 memberId) external;
}
