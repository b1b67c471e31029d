// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {DstackProof, NodeKeys} from "../lib/ClusterTypes.sol";
import {ProofStatus} from "../lib/DstackProofLib.sol";
import {IAppAuth} from "./IAppAuth.sol";

/// @title IRegistrationFacet
/// @notice Attested registration of nodes, and the allowlists behind it.
interface IRegistrationFacet is IAppAuth {
    /// @notice The proof's app id is not the calling member account.
    error AppIdMismatch(address appId, address account);
    /// @notice The operator has not allowlisted this member account (app id) yet.
    error AppIdNotAllowed(address account);
    /// @notice The proof's message hash does not bind (chain, cluster, account, keys).
    error RegistrationBindingMismatch(bytes32 expected, bytes32 actual);
    /// @notice A link of the dstack signature chain does not verify.
    error InvalidDstackProof(ProofStatus status);
    /// @notice The KMS root that issued the app key is not allowlisted.
    error KmsRootNotAllowed(address kmsRoot);
    /// @notice The proof's GetKey purpose is not "attestmesh-owner": the chain attests a key issued
    ///         for something else, not the node's owner key.
    error ProofPurposeMismatch(string purpose);
    /// @notice An advisory id cannot be empty.
    error EmptyAdvisoryId();
    /// @notice A revoked member cannot register again.
    error MemberAccountRevoked(uint64 memberId);
    /// @notice The account is a live member with other keys; one identity per account.
    error MemberKeysMismatch(uint64 memberId);
    /// @notice address(0) cannot be allowlisted.
    error ZeroAddress();

    /// @notice A KMS root was allowed or disallowed.
    event KmsRootAllowed(address indexed kmsRoot, bool allowed);
    /// @notice A compose hash was allowed or disallowed.
    event ComposeHashAllowed(bytes32 indexed composeHash, bool allowed);
    /// @notice A device id was allowed or disallowed.
    event DeviceAllowed(bytes32 indexed deviceId, bool allowed);
    /// @notice The "any device may boot" switch changed.
    event AllowAnyDeviceSet(bool allowAnyDevice);
    /// @notice A member account (dstack app id) was allowed or disallowed.
    event AppIdAllowed(address indexed appId, bool allowed);
    /// @notice An advisory id (e.g. "INTEL-SA-00837") was put on or taken off the boot gate's grace list.
    event AdvisoryAllowed(bytes32 indexed advisoryHash, string advisoryId, bool allowed);
    /// @notice The instance an app id may boot as was pinned (address(0): unpinned).
    event InstancePinned(address indexed appId, address instanceId);

    /// @notice Registers the calling member account from a dstack proof; restart-safe: the same
    ///         identity registering again returns its existing member id without a change.
    /// @return memberId The member's id.
    /// @return signer The proof's derived key, which owns the member account from now on.
    function dstack_register(DstackProof calldata proof, NodeKeys calldata keys)
        external
        returns (uint64 memberId, address signer);

    /// @notice Verifies the signature chain of `proof` (reverts InvalidDstackProof) and its GetKey
    ///         purpose (reverts ProofPurposeMismatch unless "attestmesh-owner"); allowlists not applied.
    function verifyDstackProof(DstackProof calldata proof)
        external
        view
        returns (address derivedSigner, address kmsRoot);

    /// @notice The message hash a registration proof must carry for this account and keys.
    function registrationDigest(address account, NodeKeys calldata keys) external view returns (bytes32);

    /// @notice Allows or disallows a KMS root (only the owner).
    function setKmsRootAllowed(address kmsRoot, bool allowed) external;

    /// @notice Allows or disallows a compose hash (only the owner).
    function setComposeHashAllowed(bytes32 composeHash, bool allowed) external;

    /// @notice Allows or disallows a device id (only the owner).
    function setDeviceAllowed(bytes32 deviceId, bool allowed) external;

    /// @notice Lets any device boot, or only allowlisted ones (only the owner).
    function setAllowAnyDevice(bool allowAnyDevice) external;

    /// @notice Allows or disallows a member account / dstack app id (only the owner).
    function setAppIdAllowed(address appId, bool allowed) external;

    /// @notice Puts an advisory id on the boot gate's grace list, or takes it off (only the owner).
    ///         A boot reporting an advisory not on the list is refused.
    function setAdvisoryAllowed(string calldata advisoryId, bool allowed) external;

    /// @notice Pins the dstack instance id `appId` may boot as; address(0) unpins (only the owner).
    function setInstancePinned(address appId, address instanceId) external;

    /// @notice The allowlisted KMS roots.
    function kmsRoots() external view returns (address[] memory);

    /// @notice The allowlisted compose hashes.
    function composeHashes() external view returns (bytes32[] memory);

    /// @notice The allowlisted device ids.
    function deviceIds() external view returns (bytes32[] memory);

    /// @notice Whether any device may boot.
    function allowAnyDevice() external view returns (bool);

    /// @notice The allowlisted member accounts (dstack app ids).
    function appIds() external view returns (address[] memory);

    /// @notice Whether `kmsRoot` is allowlisted.
    function isKmsRootAllowed(address kmsRoot) external view returns (bool);

    /// @notice Whether `appId` is allowlisted.
    function isAppIdAllowed(address appId) external view returns (bool);

    /// @notice Whether `advisoryId` is on the grace list.
    function isAdvisoryAllowed(string calldata advisoryId) external view returns (bool);

    /// @notice The instance id `appId` is pinned to, or address(0) when any instance may boot.
    function pinnedInstance(address appId) external view returns (address);

    /// @notice The boot gate's TCB policy: the one TCB status it accepts ("UpToDate") and the
    ///         advisory ids on the grace list.
    function tcbPolicy()
        external
        view
        returns (string memory requiredTcbStatus, string[] memory allowedAdvisoryIds);
}
