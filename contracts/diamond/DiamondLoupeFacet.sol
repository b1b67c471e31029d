// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IERC165} from "@openzeppelin/contracts/utils/introspection/IERC165.sol";
import {IDiamondLoupe} from "./IDiamond.sol";
import {LibDiamond} from "./LibDiamond.sol";

/// @title DiamondLoupeFacet
/// @notice EIP-2535 loupe and ERC-165 for the cluster diamond.
contract DiamondLoupeFacet is IDiamondLoupe, IERC165 {
    /// @inheritdoc IDiamondLoupe
    function facets() external view override returns (Facet[] memory result) {
        address[] memory addresses = _facetAddresses();
        result = new Facet[](addresses.length);
        for (uint256 i = 0; i < addresses.length; ++i) {
            result[i] = Facet({facetAddress: addresses[i], functionSelectors: _selectorsOf(addresses[i])});
        }
    }

    /// @inheritdoc IDiamondLoupe
    function facetFunctionSelectors(address facet) external view override returns (bytes4[] memory) {
        return _selectorsOf(facet);
    }

    /// @inheritdoc IDiamondLoupe
    function facetAddresses() external view override returns (address[] memory) {
        return _facetAddresses();
    }

    /// @inheritdoc IDiamondLoupe
    function facetAddress(bytes4 selector) external view override returns (address) {
        return LibDiamond.layout().routes[selector].facet;
    }

    /// @inheritdoc IERC165
    function supportsInterface(bytes4 interfaceId) external view override returns (bool) {
        return LibDiamond.layout().supportedInterfaces[interfaceId];
    }

    function _facetAddresses() private view returns (address[] memory result) {
        LibDiamond.Layout storage l = LibDiamond.layout();
        result = new address[](l.selectors.length);
        uint256 count = 0;
        for (uint256 i = 0; i < l.selectors.length; ++i) {
            address facet = l.routes[l.selectors[i]].facet;
            bool seen = false;
            for (uint256 j = 0; j < count; ++j) {
                if (result[j] == facet) {
                    seen = true;
                    break;
                }
            }
            if (!seen) result[count++] = facet;
        }
        assembly ("memory-safe") {
            mstore(result, count)
        }
    }

    function _selectorsOf(address facet) private view returns (bytes4[] memory result) {
        LibDiamond.Layout storage l = LibDiamond.layout();
        result = new bytes4[](l.selectors.length);
        uint256 count = 0;
        for (uint256 i = 0; i < l.selectors.length; ++i) {
            if (l.routes[l.selectors[i]].facet == facet) result[count++] = l.selectors[i];
        }
        assembly ("memory-safe") {
            mstore(result, count)
        }
    }
}
