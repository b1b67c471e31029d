// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {EnumerableSet} from "@openzeppelin/contracts/utils/structs/EnumerableSet.sol";
import {DstackProof, MemberStatus, NodeKeys} from "../lib/ClusterTypes.sol";
import {DstackProofLib, ProofStatus} from "../lib/DstackProofLib.sol";
import {RegistrationDigest} from "../lib/RegistrationDigest.sol";
import {MemberStorage} from "../member/MemberStorage.sol";

/// @notice The outcome of checking a registration, shared by the facet (which reverts) and the
///         sponsorship policy (which answers with a reason), so both always agree.
enum RegistrationVerdict {
    NewMember,
    AlreadyRegistered,
    AppIdMismatch,
    AppIdNotAllowed,
    BindingMismatch,
    ProofInvalid,
    PurposeMismatch,
    KmsRootNotAllowed,
    MemberRevoked,
    KeysMismatch
}

/// @param verdict What a registration with these inputs would do.
/// @param proofStatus Which link failed when verdict is ProofInvalid.
/// @param signer The proof's derived key (when the proof verified).
/// @param kmsRoot The proof's KMS root (when the proof verified).
/// @param memberId The existing member id, if the account has one.
/// @param expectedDigest The binding digest the proof must carry.
struct RegistrationCheck {
    RegistrationVerdict verdict;
    ProofStatus proofStatus;
    address signer;
    address kmsRoot;
    uint64 memberId;
    bytes32 expectedDigest;
}

/// @title RegistrationStorage
/// @notice Allowlists (KMS roots, compose hashes, devices, member accounts), the boot gate's TCB
///         policy (advisory grace list, per-account instance pins) and the registration check.
library RegistrationStorage {
    using EnumerableSet for EnumerableSet.AddressSet;
    using EnumerableSet for EnumerableSet.Bytes32Set;

    /// @custom:storage-location erc7201:attestmesh.storage.Registration
    struct Layout {
        EnumerableSet.AddressSet kmsRoots;
        EnumerableSet.Bytes32Set composeHashes;
        EnumerableSet.Bytes32Set deviceIds;
        EnumerableSet.AddressSet appIds;
        bool allowAnyDevice;
        /// @dev keccak256 of each advisory id on the grace list; the ids themselves in advisoryIdOf.
        EnumerableSet.Bytes32Set advisoryHashes;
        mapping(bytes32 advisoryHash => string advisoryId) advisoryIdOf;
        /// @dev address(0): any instance of the app id may boot.
        mapping(address appId => address instanceId) pinnedInstance;
    }

    /// @notice The only TCB status the boot gate accepts.
    string internal constant REQUIRED_TCB_STATUS = "UpToDate";

    /// @dev keccak256(abi.encode(uint256(keccak256("attestmesh.storage.Registration")) - 1)) & ~bytes32(uint256(0xff))
    bytes32 internal constant STORAGE_SLOT =
        0xf28163a00086b22f8b32a20caf60b9639f4e402f45e91cee0fb04e83a5790c00;

    function layout() internal pure returns (Layout storage l) {
        bytes32 slot = STORAGE_SLOT;
        assembly {
            l.slot := slot
        }
    }

    /// @notice Everything `dstack_register(proof, keys)` from `account` would decide, without writing.
    function evaluate(address account, DstackProof memory proof, NodeKeys memory keys)
        internal
        view
        returns (RegistrationCheck memory result)
    {
        Layout storage l = layout();
        MemberStorage.AccountEntry storage entry = MemberStorage.layout().accounts[account];
        result.memberId = entry.id;
        result.expectedDigest = RegistrationDigest.compute(block.chainid, address(this), account, keys);
        if (proof.appId != account) {
            result.verdict = RegistrationVerdict.AppIdMismatch;
            return result;
        }
        if (!l.appIds.contains(account)) {
            result.verdict = RegistrationVerdict.AppIdNotAllowed;
            return result;
        }
        if (proof.messageHash != result.expectedDigest) {
            result.verdict = RegistrationVerdict.BindingMismatch;
            return result;
        }
        (result.proofStatus, result.signer, result.kmsRoot) = DstackProofLib.check(proof);
        if (result.proofStatus != ProofStatus.Valid) {
            result.verdict = RegistrationVerdict.ProofInvalid;
            return result;
        }
        // A valid chain for another GetKey purpose attests a key issued for something else.
        if (!DstackProofLib.hasOwnerPurpose(proof)) {
            result.verdict = RegistrationVerdict.PurposeMismatch;
            return result;
        }
        if (!l.kmsRoots.contains(result.kmsRoot)) {
            result.verdict = RegistrationVerdict.KmsRootNotAllowed;
            return result;
        }
        if (result.memberId == 0) {
            result.verdict = RegistrationVerdict.NewMember;
            return result;
        }
        MemberStorage.Record storage existing = MemberStorage.layout().members[result.memberId];
        if (existing.status == MemberStatus.Revoked) {
            result.verdict = RegistrationVerdict.MemberRevoked;
        } else if (entry.signer == result.signer && _sameKeys(existing.keys, keys)) {
            result.verdict = RegistrationVerdict.AlreadyRegistered;
        } else {
            result.verdict = RegistrationVerdict.KeysMismatch;
        }
    }

    function _sameKeys(NodeKeys storage a, NodeKeys memory b) private view returns (bool) {
        return a.x25519 == b.x25519 && a.ed25519 == b.ed25519 && a.wireguard == b.wireguard;
    }
}
