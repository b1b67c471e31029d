// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {CskEpoch, Member, MemberStatus, NodeKeys} from "../lib/ClusterTypes.sol";
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

    /// @notice One CSK epoch as stored (three slots; the epoch number is the key).
    struct EpochRecord {
        bytes32 commitment;
        uint64 originator;
        uint64 revokedMember;
        uint64 openedAt;
        uint64 committedAt;
        uint64 previousEpoch;
        uint64 previousKeyUntil;
    }

    /// @custom:storage-location erc7201:attestmesh.storage.Member
    struct Layout {
        address factory;
        uint32 meshNetwork;
        uint8 meshPrefixLength;
        uint24 memberCount;
        uint24 activeCount;
        // The CSK epochs: the current one, the grace period, and the last committed one.
        uint64 cskEpoch;
        uint32 cskGraceSeconds;
        uint64 lastCommittedEpoch;
        bool anyEpochCommitted;
        mapping(uint64 memberId => Record) members;
        mapping(address account => AccountEntry) accounts;
        mapping(uint64 epoch => EpochRecord) cskEpochs;
    }

    /// @notice The grace period of a new cluster: how long the previous epoch's key stays
    ///         available after a rotation, so apps can re-encrypt.
    uint32 internal constant DEFAULT_CSK_GRACE_SECONDS = 1 hours;
    /// @notice The longest grace period an owner may set.
    uint32 internal constant MAX_CSK_GRACE_SECONDS = 30 days;

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
        l.cskGraceSeconds = DEFAULT_CSK_GRACE_SECONDS;
        // Epoch 0 opens with the cluster; its originator is the first member to join.
        l.cskEpochs[0].openedAt = uint64(block.timestamp);
        emit IMemberFacet.CskEpochOpened(0, 0, 0);
        emit IMemberFacet.CskGracePeriodSet(DEFAULT_CSK_GRACE_SECONDS);
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
        // An epoch opened while no member was active has no originator yet: the first member to
        // join becomes it (epoch 0's is member 1). Otherwise the originator is already set and
        // a registration reads nothing more.
        if (l.activeCount == 0) l.cskEpochs[l.cskEpoch].originator = memberId;
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

    /// @notice Opens the next CSK epoch, its originator the lowest active member id now (0 when
    ///         none is active). The previous epoch's commitment stays as it was.
    function openEpoch(uint64 revokedMember) internal returns (uint64 epoch) {
        Layout storage l = layout();
        epoch = l.cskEpoch + 1;
        l.cskEpoch = epoch;
        EpochRecord storage e = l.cskEpochs[epoch];
        e.originator = lowestActiveMember();
        e.revokedMember = revokedMember;
        e.openedAt = uint64(block.timestamp);
        emit IMemberFacet.CskEpochOpened(epoch, e.originator, revokedMember);
    }

    /// @notice The lowest active member id, 0 when none is active. Scans past revoked ids only:
    ///         an owner's revocation pays for it, never a registration.
    function lowestActiveMember() internal view returns (uint64) {
        Layout storage l = layout();
        if (l.activeCount == 0) return 0;
        for (uint64 id = 1; id <= l.memberCount; ++id) {
            if (l.members[id].status == MemberStatus.Active) return id;
        }
        return 0;
    }

    /// @notice Why `member` may not commit `commitment` for `epoch` now, as a custom error's
    ///         data; empty when it may. One rule for the facet (which reverts with it) and the
    ///         sponsorship policy (which refuses with it).
    function commitRefusal(uint64 member, uint64 epoch, bytes32 commitment)
        internal
        view
        returns (bytes memory)
    {
        Layout storage l = layout();
        uint64 current = l.cskEpoch;
        if (epoch != current) {
            return abi.encodeWithSelector(IMemberFacet.NotCurrentCskEpoch.selector, epoch, current);
        }
        EpochRecord storage e = l.cskEpochs[epoch];
        if (e.originator != member) {
            return
                abi.encodeWithSelector(IMemberFacet.NotEpochOriginator.selector, member, epoch, e.originator);
        }
        if (e.commitment != bytes32(0)) {
            return abi.encodeWithSelector(IMemberFacet.CskAlreadyCommitted.selector, epoch, e.commitment);
        }
        if (commitment == bytes32(0)) return abi.encodeWithSelector(IMemberFacet.ZeroCskCommitment.selector);
        return "";
    }

    /// @notice Records the commitment of the current epoch (the caller checked `commitRefusal`)
    ///         and starts the previous committed epoch's grace window.
    function commit(uint64 member, uint64 epoch, bytes32 commitment) internal {
        Layout storage l = layout();
        EpochRecord storage e = l.cskEpochs[epoch];
        e.commitment = commitment;
        e.committedAt = uint64(block.timestamp);
        if (l.anyEpochCommitted) {
            e.previousEpoch = l.lastCommittedEpoch;
            e.previousKeyUntil = uint64(block.timestamp) + l.cskGraceSeconds;
        }
        l.lastCommittedEpoch = epoch;
        l.anyEpochCommitted = true;
        emit IMemberFacet.ClusterSharedKeyCommitted(epoch, member, commitment);
    }

    /// @notice An epoch as the views return it (reverts UnknownCskEpoch past the current one).
    function loadEpoch(uint64 epoch) internal view returns (CskEpoch memory out) {
        Layout storage l = layout();
        if (epoch > l.cskEpoch) revert IMemberFacet.UnknownCskEpoch(epoch, l.cskEpoch);
        EpochRecord storage e = l.cskEpochs[epoch];
        out = CskEpoch({
            epoch: epoch,
            originator: e.originator,
            revokedMember: e.revokedMember,
            openedAt: e.openedAt,
            commitment: e.commitment,
            committedAt: e.committedAt,
            previousEpoch: e.previousEpoch,
            previousKeyUntil: e.previousKeyUntil
        });
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
