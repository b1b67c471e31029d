// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title IDiamondCut (EIP-2535)
/// @notice Adds, replaces and removes facet functions.
interface IDiamondCut {
    enum FacetCutAction {
        Add,
        Replace,
        Remove
    }

    /// @param facetAddress The facet holding the functions (address(0) for Remove).
    /// @param action What to do with the selectors.
    /// @param functionSelectors The selectors concerned.
    struct FacetCut {
        address facetAddress;
        FacetCutAction action;
        bytes4[] functionSelectors;
    }

    /// @notice Emitted on every cut.
    event DiamondCut(FacetCut[] diamondCut, address init, bytes initCalldata);

    /// @notice Applies `cuts`, then delegatecalls `init` with `initCalldata` when `init` is set.
    function diamondCut(FacetCut[] calldata cuts, address init, bytes calldata initCalldata) external;
}

/// @title IDiamondLoupe (EIP-2535)
/// @notice Introspection of a diamond's facets.
interface IDiamondLoupe {
    /// @param facetAddress A facet.
    /// @param functionSelectors The selectors it serves.
    struct Facet {
        address facetAddress;
        bytes4[] functionSelectors;
    }

    /// @notice Every facet with its selectors.
    function facets() external view returns (Facet[] memory);

    /// @notice The selectors a facet serves.
    function facetFunctionSelectors(address facet) external view returns (bytes4[] memory);

    /// @notice Every facet address.
    function facetAddresses() external view returns (address[] memory);

    /// @notice The facet serving `selector`, or address(0).
    function facetAddress(bytes4 selector) external view returns (address);
}

/// @title IERC173
/// @notice Contract ownership.
interface IERC173 {
    /// @notice Emitted when ownership changes.
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    /// @notice The current owner.
    function owner() external view returns (address);

    /// @notice Hands ownership to `newOwner` (only the owner).
    function transferOwnership(address newOwner) external;
}
