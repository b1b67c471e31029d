// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IERC173} from "./IDiamond.sol";
import {LibDiamond} from "./LibDiamond.sol";

/// @title OwnershipFacet
/// @notice ERC-173 ownership of the cluster diamond (the operator).
contract OwnershipFacet is IERC173 {
    /// @notice The zero address cannot own a cluster (revocation and allowlists would be frozen).
    error ZeroOwner();

    /// @inheritdoc IERC173
    function owner() external view override returns (address) {
        return LibDiamond.owner();
    }

    /// @inheritdoc IERC173
    function transferOwnership(address newOwner) external override {
        LibDiamond.enforceIsOwner();
        if (newOwner == address(0)) revert ZeroOwner();
        LibDiamond.setOwner(newOwner);
    }
}
