// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IDiamondCut} from "./IDiamond.sol";
import {LibDiamond} from "./LibDiamond.sol";

/// @title Diamond
/// @notice One AttestMesh cluster: an EIP-2535 diamond that routes each call to the facet owning
///         its selector. Created by the ClusterFactory, which cuts the facets in.
contract Diamond {
    /// @notice No facet serves this selector.
    error FunctionNotFound(bytes4 selector);

    /// @param initialOwner Receives ownership (the factory, which hands it to the operator).
    /// @param diamondCutFacet The facet serving diamondCut, cut in here so the owner can add the rest.
    constructor(address initialOwner, address diamondCutFacet) payable {
        LibDiamond.setOwner(initialOwner);
        IDiamondCut.FacetCut[] memory cuts = new IDiamondCut.FacetCut[](1);
        bytes4[] memory selectors = new bytes4[](1);
        selectors[0] = IDiamondCut.diamondCut.selector;
        cuts[0] = IDiamondCut.FacetCut({
            facetAddress: diamondCutFacet,
            action: IDiamondCut.FacetCutAction.Add,
            functionSelectors: selectors
        });
        LibDiamond.diamondCut(cuts, address(0), "");
    }

    fallback() external payable {
        address facet = LibDiamond.layout().routes[msg.sig].facet;
        if (facet == address(0)) revert FunctionNotFound(msg.sig);
        assembly {
            calldatacopy(0, 0, calldatasize())
            let ok := delegatecall(gas(), facet, 0, calldatasize(), 0, 0)
            returndatacopy(0, 0, returndatasize())
            switch ok
            case 0 { revert(0, returndatasize()) }
            default { return(0, returndatasize()) }
        }
    }

    receive() external payable {}
}
