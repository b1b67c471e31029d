// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {DstackProof, NodeKeys} from "../lib/ClusterTypes.sol";

/// @title IMemberAccount
/// @notice A node's ERC-4337 v0.7 account: its address is the node's dstack app id.
interface IMemberAccount {
    /// @notice Only the EntryPoint may call.
    error OnlyEntryPoint(address caller);
    /// @notice The account is not registered yet; only the bootstrap registration is possible.
    error NotRegistered();
    /// @notice The owner key changed: a node's derived key is fixed for the life of its account.
    error OwnerMismatch(address owner, address signer);

    /// @notice The node's derived key became the account's owner.
    event OwnerSet(address indexed owner, uint64 indexed memberId);

    /// @notice Bootstrap (and restart-safe re-) registration: forwards to the cluster's
    ///         `dstack_register` and takes the proof's derived key as owner.
    function register(DstackProof calldata proof, NodeKeys calldata keys) external returns (uint64 memberId);

    /// @notice Calls the cluster diamond with `data`; the account can call nothing else.
    function execute(bytes calldata data) external returns (bytes memory result);

    /// @notice Calls the cluster diamond with each entry of `calls`, in order, in one operation
    ///         (e.g. the CSK commitment and the first envelope batch). Reverts with the inner revert
    ///         data of the first call that fails, undoing the calls before it.
    function executeBatch(bytes[] calldata calls) external returns (bytes[] memory results);

    /// @notice Withdraws `amount` of this account's EntryPoint deposit to `to`. Only through the
    ///         EntryPoint, in an operation the registered owner signed; never sponsored (the owner
    ///         pays its gas from the deposit or the account's ETH).
    function withdrawDepositTo(address payable to, uint256 amount) external;

    /// @notice The cluster diamond this account belongs to.
    function cluster() external view returns (address);

    /// @notice The node's derived key, or address(0) before registration.
    function owner() external view returns (address);
}
