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
/// @notice `dstack_register`, proof pre-flight, allowlists, and dstack's IAppAuth boot gate.
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
        if (!l.composeHashes.contains(bootInfo.composeHash)) return (false, "compose hash not allowed");
        if (!l.allowAnyDevice && !l.deviceIds.contains(bootInfo.deviceId)) {
            return (false, "device not allowed");
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

    function _setAddress(EnumerableSet.AddressSet storage set, address value, bool allowed) private {
        if (allowed) set.add(value);
        else set.remove(value);
    }

    function _setBytes32(EnumerableSet.Bytes32Set storage set, bytes32 value, bool allowed) private {
        if (allowed) set.add(value);
        else set.remove(value);
    }
}
