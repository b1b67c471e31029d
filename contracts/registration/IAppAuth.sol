// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title IAppAuth
/// @notice dstack's KMS boot gate: the KMS asks an app's auth contract before it releases keys.
/// @dev Same ABI as dstack's kms/auth-eth IAppAuth, so a cluster can serve as its nodes' policy.
interface IAppAuth {
    /// @notice What a CVM reports about itself when it asks the KMS for keys.
    struct AppBootInfo {
        address appId;
        bytes32 composeHash;
        address instanceId;
        bytes32 deviceId;
        bytes32 mrAggregated;
        bytes32 mrSystem;
        bytes32 osImageHash;
        string tcbStatus;
        string[] advisoryIds;
    }

    /// @notice Whether this CVM may boot with its keys, and why not.
    function isAppAllowed(AppBootInfo calldata bootInfo)
        external
        view
        returns (bool isAllowed, string memory reason);
}
