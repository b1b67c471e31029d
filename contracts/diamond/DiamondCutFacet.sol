// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IDiamondCut} from "./IDiamond.sol";
import {LibDiamond} from "./LibDiamond.sol";

/// @title DiamondCutFacet
/// @notice Upgrades the cluster diamond; only its owner may cut.
contract DiamondCutFacet is IDiamondCut {
    /// @inheritdoc IDiamondCut
    function diamondCut(FacetCut[] calldata cuts, address init, bytes calldata initCalldata)
        external
        override
    {
        LibDiamond.enforceIsOwner();
        LibDiamond.diamondCut(cuts, init, initCalldata);
    }
}
