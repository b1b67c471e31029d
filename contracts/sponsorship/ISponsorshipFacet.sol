// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title ISponsorshipFacet
/// @notice The sponsorship policy: which UserOperations the cluster's paymaster may pay for.
///         The paymaster webhook asks only this view, so the policy lives (and is tested) on chain.
interface ISponsorshipFacet {
    /// @notice Whether a UserOperation from `sender` with `callData` may be sponsored, and why not.
    /// @dev Sponsorable: a bootstrap `register` from an allowlisted member account of this cluster
    ///      whose proof verifies; and an active member's `execute` of `send` or
    ///      `commitClusterSharedKey` that would succeed. Reverts only on calldata that does not ABI-decode.
    /// @return sponsorable True when the paymaster may sign.
    /// @return reason Empty when sponsorable, else why not, in words.
    function checkSponsorship(address sender, bytes calldata callData)
        external
        view
        returns (bool sponsorable, string memory reason);
}
