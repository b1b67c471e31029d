// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Member, MemberStatus, NodeKeys} from "../lib/ClusterTypes.sol";
import {IMemberFacet} from "./IMemberFacet.sol";

/// @title MemberStorage
/// @notice Member records and their invariants, shared by the Member, Registration, Message and
///         Sponsorship facets. Mesh IPs are network + member id: sequential ids are never reused,
///         so addresses never collide and a revoked member's address is retired for good.
/// @dev Packed for the cost of a registration (five new slots per member): a record keyed by id
///      holds what every id lookup needs (account, registered-at, status: one slot) and the three
///      public keys; the entry keyed by account holds the id and the owner key (one slot). The id
///      and the mesh IP (network + id) are never stored; `load` rebuilds the `Member` the views
///      return. The counters share the first slot with the mesh config: a /8 holds fewer than 2^24
///      members, so 24 bits each suffice.
library MemberStorage {
    /// @notice A member as stored, keyed by member id.
    struct Record {
        address account;
        uint64 registeredAt;
        MemberStatus status;
        NodeKeys keys;
    }

    /// @notice What an account maps to: its member id (0: none) and the owner key that registered it.
    struct AccountEntry {
        uint64 id;
        address signer;
    }

    /// @custom:storage-location erc7201:attestmesh.storage.Member
    struct Layout {
        address factory;
        uint32 meshNetwork;
        uint8 meshPrefixLength;
        uint24 memberCount;
        uint24 activeCount;
        bytes32 cskCommitment;
        mapping(uint64 memberId => Record) members;
        mapping(address account => AccountEntry) accounts;
    }

    /// @dev keccak256(abi.encode(uint256(keccak256("attestmesh.storage.Member")) - 1)) & ~bytes32(uint256(0xff))
    bytes32 internal constant STORAGE_SLOT =
        0xb467e8594a304c917a13600fb1a45cab0b4afdd28a6631433cce9a01f8451200;

    function layout() internal pure returns (Layout storage l) {
        bytes32 slot = STORAGE_SLOT;
        assembly {
            l.slot := slot
        }
    }

    function init(address factory, uint32 network, uint8 prefixLength) internal {
        if (prefixLength < 8 || prefixLength > 30) {
            revert IMemberFacet.InvalidMeshCidr(network, prefixLength);
        }
        uint32 hostMask = uint32((uint256(1) << (32 - prefixLength)) - 1);
        if (network & hostMask != 0) revert IMemberFacet.InvalidMeshCidr(network, prefixLength);
        Layout storage l = layout();
        l.factory = factory;
        l.meshNetwork = network;
        l.meshPrefixLength = prefixLength;
    }

    /// @notice Host addresses available, excluding the network and broadcast addresses.
    function capacity() internal view returns (uint64) {
        return _capacity(layout().meshPrefixLength);
    }

    function meshIpFor(uint64 memberId) internal view returns (uint32) {
        return _meshIp(layout().meshNetwork, memberId);
    }

    /// @notice Creates an active member with the next id and its mesh IP.
    function add(address account, address signer, NodeKeys memory keys) internal returns (uint64 memberId) {
        Layout storage l = layout();
        uint24 count = l.memberCount;
        uint64 cap = _capacity(l.meshPrefixLength);
        if (count >= cap) revert IMemberFacet.MeshAddressSpaceExhausted(cap);
        memberId = uint64(count) + 1;
        // casting to 'uint24' is safe because memberId <= capacity < 2^24 (prefix length >= 8).
        // forge-lint: disable-next-line(unsafe-typecast)
        l.memberCount = uint24(memberId);
        l.activeCount += 1;
        uint32 meshIp = _meshIp(l.meshNetwork, memberId);
        l.members[memberId] = Record({
            account: account, registeredAt: uint64(block.timestamp), status: MemberStatus.Active, keys: keys
        });
        l.accounts[account] = AccountEntry({id: memberId, signer: signer});
        emit IMemberFacet.MemberRegistered(
            memberId, account, signer, meshIp, keys.x25519, keys.ed25519, keys.wireguard
        );
    }

    /// @notice Marks an active member revoked (reverts UnknownMember / MemberNotActive).
    /// @return account The revoked member's account.
    function revoke(uint64 memberId) internal returns (address account) {
        Layout storage l = layout();
        Record storage r = l.members[memberId];
        MemberStatus current = r.status;
        if (current == MemberStatus.None) revert IMemberFacet.UnknownMember(memberId);
        if (current != MemberStatus.Active) revert IMemberFacet.MemberNotActive(memberId);
        r.status = MemberStatus.Revoked;
        l.activeCount -= 1;
        return r.account;
    }

    /// @notice The member as the views return it (reverts UnknownMember).
    function load(uint64 memberId) internal view returns (Member memory m) {
        Layout storage l = layout();
        Record storage r = l.members[memberId];
        if (r.status == MemberStatus.None) revert IMemberFacet.UnknownMember(memberId);
        m = _toMember(l, memberId, r);
    }

    /// @notice Like `load` without the existence check, for ids in [1, memberCount] (all exist).
    function loadUnchecked(uint64 memberId) internal view returns (Member memory m) {
        Layout storage l = layout();
        m = _toMember(l, memberId, l.members[memberId]);
    }

    function status(uint64 memberId) internal view returns (MemberStatus) {
        return layout().members[memberId].status;
    }

    function idOf(address account) internal view returns (uint64) {
        return layout().accounts[account].id;
    }

    function isActive(address account) internal view returns (bool) {
        Layout storage l = layout();
        uint64 id = l.accounts[account].id;
        return id != 0 && l.members[id].status == MemberStatus.Active;
    }

    /// @notice The member id of an active member account, or a revert saying why not.
    function requireActive(address account) internal view returns (uint64 memberId) {
        Layout storage l = layout();
        memberId = l.accounts[account].id;
        if (memberId == 0) revert IMemberFacet.NotAMember(account);
        if (l.members[memberId].status != MemberStatus.Active) {
            revert IMemberFacet.MemberNotActive(memberId);
        }
    }

    function _toMember(Layout storage l, uint64 memberId, Record storage r)
        private
        view
        returns (Member memory m)
    {
        address account = r.account;
        m.id = memberId;
        m.account = account;
        m.signer = l.accounts[account].signer;
        m.keys = r.keys;
        m.meshIp = _meshIp(l.meshNetwork, memberId);
        m.registeredAt = r.registeredAt;
        m.status = r.status;
    }

    function _capacity(uint8 prefixLength) private pure returns (uint64) {
        return uint64((uint256(1) << (32 - prefixLength)) - 2);
    }

    function _meshIp(uint32 network, uint64 memberId) private pure returns (uint32) {
        // casting to 'uint32' is safe because `add` caps member ids at the CIDR's capacity (< 2^24).
        // forge-lint: disable-next-line(unsafe-typecast)
        return network + uint32(memberId);
    }
}
