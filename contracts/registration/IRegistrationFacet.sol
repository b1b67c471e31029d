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

    /// @notice Registers the calling member account from a dstack proof; restart-safe: the same
    ///         identity registering again returns its existing member id without a change.
    /// @return memberId The member's id.
    /// @return signer The proof's derived key, which owns the member account from now on.
    function dstack_register(DstackProof calldata proof, NodeKeys calldata keys)
        external
        returns (uint64 memberId, address signer);

    /// @notice Verifies the signature chain of `proof` (reverts InvalidDstackProof); allowlists not applied.
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
}
