// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IDiamondCut} from "./IDiamond.sol";

/// @title LibDiamond
/// @notice Selector routing, ownership and ERC-165 flags of a diamond, in ERC-7201 storage.
library LibDiamond {
    /// @notice The caller is not the diamond's owner.
    error NotContractOwner(address caller, address owner);
    /// @notice A facet cut names no selectors.
    error NoSelectorsInFacetCut();
    /// @notice An Add or Replace names an address without code.
    error FacetHasNoCode(address facet);
    /// @notice An Add names a selector the diamond already routes.
    error SelectorAlreadyExists(bytes4 selector);
    /// @notice A Replace or Remove names a selector the diamond does not route.
    error SelectorNotFound(bytes4 selector);
    /// @notice A Replace names the facet that already serves the selector.
    error ReplaceWithSameFacet(bytes4 selector);
    /// @notice A Remove must name address(0) as its facet.
    error RemoveFacetAddressMustBeZero(address facet);
    /// @notice The init delegatecall reverted; `reason` is its revert data.
    error InitializationFailed(address init, bytes reason);
    /// @notice An init address without code was given.
    error InitHasNoCode(address init);

    /// @custom:storage-location erc7201:attestmesh.storage.Diamond
    struct Layout {
        mapping(bytes4 selector => Route) routes;
        bytes4[] selectors;
        mapping(bytes4 interfaceId => bool) supportedInterfaces;
        address owner;
    }

    /// @param facet The facet serving the selector.
    /// @param index The selector's position in `selectors`.
    struct Route {
        address facet;
        uint96 index;
    }

    /// @dev keccak256(abi.encode(uint256(keccak256("attestmesh.storage.Diamond")) - 1)) & ~bytes32(uint256(0xff))
    bytes32 internal constant STORAGE_SLOT =
        0x7885fd47cb615b4cf484cff093fe090dcd08af42df05770921074bffafbb1400;

    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);
    event DiamondCut(IDiamondCut.FacetCut[] diamondCut, address init, bytes initCalldata);

    function layout() internal pure returns (Layout storage l) {
        bytes32 slot = STORAGE_SLOT;
        assembly {
            l.slot := slot
        }
    }

    function owner() internal view returns (address) {
        return layout().owner;
    }

    function setOwner(address newOwner) internal {
        Layout storage l = layout();
        emit OwnershipTransferred(l.owner, newOwner);
        l.owner = newOwner;
    }

    function enforceIsOwner() internal view {
        address current = layout().owner;
        if (msg.sender != current) revert NotContractOwner(msg.sender, current);
    }

    function diamondCut(IDiamondCut.FacetCut[] memory cuts, address init, bytes memory initCalldata)
        internal
    {
        for (uint256 i = 0; i < cuts.length; ++i) {
            IDiamondCut.FacetCut memory cut = cuts[i];
            if (cut.functionSelectors.length == 0) revert NoSelectorsInFacetCut();
            if (cut.action == IDiamondCut.FacetCutAction.Add) {
                _add(cut.facetAddress, cut.functionSelectors);
            } else if (cut.action == IDiamondCut.FacetCutAction.Replace) {
                _replace(cut.facetAddress, cut.functionSelectors);
            } else {
                _remove(cut.facetAddress, cut.functionSelectors);
            }
        }
        emit DiamondCut(cuts, init, initCalldata);
        _initialize(init, initCalldata);
    }

    function _add(address facet, bytes4[] memory selectors) private {
        if (facet.code.length == 0) revert FacetHasNoCode(facet);
        Layout storage l = layout();
        for (uint256 i = 0; i < selectors.length; ++i) {
            bytes4 selector = selectors[i];
            if (l.routes[selector].facet != address(0)) revert SelectorAlreadyExists(selector);
            l.routes[selector] = Route({facet: facet, index: uint96(l.selectors.length)});
            l.selectors.push(selector);
        }
    }

    function _replace(address facet, bytes4[] memory selectors) private {
        if (facet.code.length == 0) revert FacetHasNoCode(facet);
        Layout storage l = layout();
        for (uint256 i = 0; i < selectors.length; ++i) {
            bytes4 selector = selectors[i];
            address current = l.routes[selector].facet;
            if (current == address(0)) revert SelectorNotFound(selector);
            if (current == facet) revert ReplaceWithSameFacet(selector);
            l.routes[selector].facet = facet;
        }
    }

    function _remove(address facet, bytes4[] memory selectors) private {
        if (facet != address(0)) revert RemoveFacetAddressMustBeZero(facet);
        Layout storage l = layout();
        for (uint256 i = 0; i < selectors.length; ++i) {
            bytes4 selector = selectors[i];
            Route memory route = l.routes[selector];
            if (route.facet == address(0)) revert SelectorNotFound(selector);
            // Swap-and-pop keeps `selectors` dense for the loupe.
            bytes4 last = l.selectors[l.selectors.length - 1];
            l.selectors[route.index] = last;
            l.routes[last].index = route.index;
            l.selectors.pop();
            delete l.routes[selector];
        }
    }

    function _initialize(address init, bytes memory initCalldata) private {
        if (init == address(0)) return;
        if (init.code.length == 0) revert InitHasNoCode(init);
        (bool ok, bytes memory reason) = init.delegatecall(initCalldata);
        if (!ok) revert InitializationFailed(init, reason);
    }
}
