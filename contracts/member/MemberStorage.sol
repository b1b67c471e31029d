// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Member, MemberStatus, NodeKeys} from "../lib/ClusterTypes.sol";
import {IMemberFacet} from "./IMemberFacet.sol";

/// @title MemberStorage
/// @notice Member records and their invariants, shared by the Member, Registration, Message and
///         Sponsorship facets. Mesh IPs are network + member id: sequential ids are never reused,
///         so addresses never collide and a revoked member's address is retired for good.
library MemberStorage {
    /// @custom:storage-location erc7201:attestmesh.storage.Member
    struct Layout {
        address factory;
        uint32 meshNetwork;
        uint8 meshPrefixLength;
        uint64 memberCount;
        uint64 activeCount;
        bytes32 cskCommitment;
        mapping(uint64 memberId => Member) members;
        mapping(address account => uint64 memberId) idByAccount;
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
        return uint64((uint256(1) << (32 - layout().meshPrefixLength)) - 2);
    }

    function meshIpFor(uint64 memberId) internal view returns (uint32) {
        // casting to 'uint32' is safe because `add` caps member ids at the CIDR's capacity (< 2^24).
        // forge-lint: disable-next-line(unsafe-typecast)
        return layout().meshNetwork + uint32(memberId);
    }

    /// @notice Creates an active member with the next id and its mesh IP.
    function add(address account, address signer, NodeKeys memory keys) internal returns (uint64 memberId) {
        Layout storage l = layout();
        uint64 cap = capacity();
        if (l.memberCount >= cap) revert IMemberFacet.MeshAddressSpaceExhausted(cap);
        memberId = ++l.memberCount;
        l.activeCount += 1;
        uint32 meshIp = meshIpFor(memberId);
        l.members[memberId] = Member({
            id: memberId,
            account: account,
            signer: signer,
            keys: keys,
            meshIp: meshIp,
            registeredAt: uint64(block.timestamp),
            status: MemberStatus.Active
        });
        l.idByAccount[account] = memberId;
        emit IMemberFacet.MemberRegistered(
            memberId, account, signer, meshIp, keys.x25519, keys.ed25519, keys.wireguard
        );
    }

    function get(uint64 memberId) internal view returns (Member storage m) {
        m = layout().members[memberId];
        if (m.status == MemberStatus.None) revert IMemberFacet.UnknownMember(memberId);
    }

    function status(uint64 memberId) internal view returns (MemberStatus) {
        return layout().members[memberId].status;
    }

    function idOf(address account) internal view returns (uint64) {
        return layout().idByAccount[account];
    }

    function isActive(address account) internal view returns (bool) {
        uint64 id = layout().idByAccount[account];
        return id != 0 && layout().members[id].status == MemberStatus.Active;
    }

    /// @notice The member id of an active member account, or a revert saying why not.
    function requireActive(address account) internal view returns (uint64 memberId) {
        memberId = layout().idByAccount[account];
        if (memberId == 0) revert IMemberFacet.NotAMember(account);
        if (layout().members[memberId].status != MemberStatus.Active) {
            revert IMemberFacet.MemberNotActive(memberId);
        }
    }
}
