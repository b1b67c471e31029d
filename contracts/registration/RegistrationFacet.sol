// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {EnumerableSet} from "@openzeppelin/contracts/utils/structs/EnumerableSet.sol";
import {LibDiamond} from "../diamond/LibDiamond.sol";
import {DstackProof, MemberStatus, NodeKeys} from "../lib/ClusterTypes.sol";
import {DstackProofLib, ProofStatus} from "../lib/DstackProofLib.sol";
import {RegistrationDigest} from "../lib/RegistrationDigest.sol";
import {MemberStorage} from "../member/MemberStorage.sol";
import {IAppAuth} from "./IAppAuth.sol";
import {IRegistrationFacet} from "./IRegistrationFacet.sol";
import {RegistrationCheck, RegistrationStorage, RegistrationVerdict} from "./RegistrationStorage.sol";

/// @title RegistrationFacet
/// @notice `dstack_register`, proof pre-flight, allowlists, and dstack's IAppAuth boot gate (which
///         also checks the TEE's health: TCB status UpToDate, advisories only from the grace list).
contract RegistrationFacet is IRegistrationFacet {
    using EnumerableSet for EnumerableSet.AddressSet;
    using EnumerableSet for EnumerableSet.Bytes32Set;

    /// @inheritdoc IRegistrationFacet
    function dstack_register(DstackProof calldata proof, NodeKeys calldata keys)
        external
        override
        returns (uint64 memberId, address signer)
    {
        RegistrationCheck memory check = RegistrationStorage.evaluate(msg.sender, proof, keys);
        RegistrationVerdict verdict = check.verdict;
        if (verdict == RegistrationVerdict.NewMember) {
            return (MemberStorage.add(msg.sender, check.signer, keys), check.signer);
        }
        if (verdict == RegistrationVerdict.AlreadyRegistered) return (check.memberId, check.signer);
        if (verdict == RegistrationVerdict.AppIdMismatch) revert AppIdMismatch(proof.appId, msg.sender);
        if (verdict == RegistrationVerdict.AppIdNotAllowed) revert AppIdNotAllowed(msg.sender);
        if (verdict == RegistrationVerdict.BindingMismatch) {
            revert RegistrationBindingMismatch(check.expectedDigest, proof.messageHash);
        }
        if (verdict == RegistrationVerdict.PurposeMismatch) revert ProofPurposeMismatch(proof.purpose);
        if (verdict == RegistrationVerdict.ProofInvalid) revert InvalidDstackProof(check.proofStatus);
        if (verdict == RegistrationVerdict.KmsRootNotAllowed) revert KmsRootNotAllowed(check.kmsRoot);
        if (verdict == RegistrationVerdict.MemberRevoked) revert MemberAccountRevoked(check.memberId);
        revert MemberKeysMismatch(check.memberId);
    }

    /// @inheritdoc IRegistrationFacet
    function verifyDstackProof(DstackProof calldata proof)
        external
        view
        override
        returns (address derivedSigner, address kmsRoot)
    {
        ProofStatus status;
        (status, derivedSigner, kmsRoot) = DstackProofLib.check(proof);
        if (status != ProofStatus.Valid) revert InvalidDstackProof(status);
        if (!DstackProofLib.hasOwnerPurpose(proof)) revert ProofPurposeMismatch(proof.purpose);
    }

    /// @inheritdoc IRegistrationFacet
    function registrationDigest(address account, NodeKeys calldata keys)
        external
        view
        override
        returns (bytes32)
    {
        return RegistrationDigest.compute(block.chainid, address(this), account, keys);
    }

    /// @inheritdoc IAppAuth
    /// @dev Each refusal names its rule: app id, revocation, instance pin, compose hash, device,
    ///      TCB status ("TCB status OutOfDate is not UpToDate"), advisory ("advisory INTEL-SA-00837
    ///      is not on the grace list").
    function isAppAllowed(AppBootInfo calldata bootInfo)
        external
        view
        override
        returns (bool isAllowed, string memory reason)
    {
        RegistrationStorage.Layout storage l = RegistrationStorage.layout();
        if (!l.appIds.contains(bootInfo.appId)) {
            return (false, "app id is not an allowlisted member account");
        }
        uint64 memberId = MemberStorage.idOf(bootInfo.appId);
        if (memberId != 0 && MemberStorage.status(memberId) == MemberStatus.Revoked) {
            return (false, "member account is revoked");
        }
        address pinned = l.pinnedInstance[bootInfo.appId];
        if (pinned != address(0) && pinned != bootInfo.instanceId) {
            return (false, "instance not pinned for this app id");
        }
        if (!l.composeHashes.contains(bootInfo.composeHash)) return (false, "compose hash not allowed");
        if (!l.allowAnyDevice && !l.deviceIds.contains(bootInfo.deviceId)) {
            return (false, "device not allowed");
        }
        if (keccak256(bytes(bootInfo.tcbStatus)) != keccak256(bytes(RegistrationStorage.REQUIRED_TCB_STATUS)))
        {
            return (
                false,
                string.concat(
                    "TCB status ", bootInfo.tcbStatus, " is not ", RegistrationStorage.REQUIRED_TCB_STATUS
                )
            );
        }
        for (uint256 i = 0; i < bootInfo.advisoryIds.length; ++i) {
            if (!l.advisoryHashes.contains(keccak256(bytes(bootInfo.advisoryIds[i])))) {
                return
                    (false, string.concat("advisory ", bootInfo.advisoryIds[i], " is not on the grace list"));
            }
        }
        return (true, "");
    }

    /// @inheritdoc IRegistrationFacet
    function setKmsRootAllowed(address kmsRoot, bool allowed) external override {
        LibDiamond.enforceIsOwner();
        if (kmsRoot == address(0)) revert ZeroAddress();
        _setAddress(RegistrationStorage.layout().kmsRoots, kmsRoot, allowed);
        emit KmsRootAllowed(kmsRoot, allowed);
    }

    /// @inheritdoc IRegistrationFacet
    function setComposeHashAllowed(bytes32 composeHash, bool allowed) external override {
        LibDiamond.enforceIsOwner();
        _setBytes32(RegistrationStorage.layout().composeHashes, composeHash, allowed);
        emit ComposeHashAllowed(composeHash, allowed);
    }

    /// @inheritdoc IRegistrationFacet
    function setDeviceAllowed(bytes32 deviceId, bool allowed) external override {
        LibDiamond.enforceIsOwner();
        _setBytes32(RegistrationStorage.layout().deviceIds, deviceId, allowed);
        emit DeviceAllowed(deviceId, allowed);
    }

    /// @inheritdoc IRegistrationFacet
    function setAllowAnyDevice(bool allowAny) external override {
        LibDiamond.enforceIsOwner();
        RegistrationStorage.layout().allowAnyDevice = allowAny;
        emit AllowAnyDeviceSet(allowAny);
    }

    /// @inheritdoc IRegistrationFacet
    function setAppIdAllowed(address appId, bool allowed) external override {
        LibDiamond.enforceIsOwner();
        if (appId == address(0)) revert ZeroAddress();
        _setAddress(RegistrationStorage.layout().appIds, appId, allowed);
        emit AppIdAllowed(appId, allowed);
    }

    /// @inheritdoc IRegistrationFacet
    function setAdvisoryAllowed(string calldata advisoryId, bool allowed) external override {
        LibDiamond.enforceIsOwner();
        if (bytes(advisoryId).length == 0) revert EmptyAdvisoryId();
        RegistrationStorage.Layout storage l = RegistrationStorage.layout();
        bytes32 advisoryHash = keccak256(bytes(advisoryId));
        if (allowed) {
            if (l.advisoryHashes.add(advisoryHash)) l.advisoryIdOf[advisoryHash] = advisoryId;
        } else if (l.advisoryHashes.remove(advisoryHash)) {
            delete l.advisoryIdOf[advisoryHash];
        }
        emit AdvisoryAllowed(advisoryHash, advisoryId, allowed);
    }

    /// @inheritdoc IRegistrationFacet
    function setInstancePinned(address appId, address instanceId) external override {
        LibDiamond.enforceIsOwner();
        if (appId == address(0)) revert ZeroAddress();
        RegistrationStorage.layout().pinnedInstance[appId] = instanceId;
        emit InstancePinned(appId, instanceId);
    }

    /// @inheritdoc IRegistrationFacet
    function kmsRoots() external view override returns (address[] memory) {
        return RegistrationStorage.layout().kmsRoots.values();
    }

    /// @inheritdoc IRegistrationFacet
    function composeHashes() external view override returns (bytes32[] memory) {
        return RegistrationStorage.layout().composeHashes.values();
    }

    /// @inheritdoc IRegistrationFacet
    function deviceIds() external view override returns (bytes32[] memory) {
        return RegistrationStorage.layout().deviceIds.values();
    }

    /// @inheritdoc IRegistrationFacet
    function allowAnyDevice() external view override returns (bool) {
        return RegistrationStorage.layout().allowAnyDevice;
    }

    /// @inheritdoc IRegistrationFacet
    function appIds() external view override returns (address[] memory) {
        return RegistrationStorage.layout().appIds.values();
    }

    /// @inheritdoc IRegistrationFacet
    function isKmsRootAllowed(address kmsRoot) external view override returns (bool) {
        return RegistrationStorage.layout().kmsRoots.contains(kmsRoot);
    }

    /// @inheritdoc IRegistrationFacet
    function isAppIdAllowed(address appId) external view override returns (bool) {
        return RegistrationStorage.layout().appIds.contains(appId);
    }

    /// @inheritdoc IRegistrationFacet
    function isAdvisoryAllowed(string calldata advisoryId) external view override returns (bool) {
        return RegistrationStorage.layout().advisoryHashes.contains(keccak256(bytes(advisoryId)));
    }

    /// @inheritdoc IRegistrationFacet
    function pinnedInstance(address appId) external view override returns (address) {
        return RegistrationStorage.layout().pinnedInstance[appId];
    }

    /// @inheritdoc IRegistrationFacet
    function tcbPolicy()
        external
        view
        override
        returns (string memory requiredTcbStatus, string[] memory allowedAdvisoryIds)
    {
        RegistrationStorage.Layout storage l = RegistrationStorage.layout();
        bytes32[] memory hashes = l.advisoryHashes.values();
        allowedAdvisoryIds = new string[](hashes.length);
        for (uint256 i = 0; i < hashes.length; ++i) {
            allowedAdvisoryIds[i] = l.advisoryIdOf[hashes[i]];
        }
        return (RegistrationStorage.REQUIRED_TCB_STATUS, allowedAdvisoryIds);
    }

    function _setAddress(EnumerableSet.AddressSet storage set, address value, bool allowed) private {
        if (allowed) set.add(value);
        else set.remove(value);
    }

    function _setBytes32(EnumerableSet.Bytes32Set storage set, bytes32 value, bool allowed) private {
        if (allowed) set.add(value);
        else set.remove(value);
    }
}
