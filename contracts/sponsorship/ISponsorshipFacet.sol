// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title ISponsorshipFacet
/// @notice The sponsorship policy: which UserOperations the cluster's paymaster may pay for.
///         The paymaster webhook asks only this view, so the policy lives (and is tested) on chain.
interface ISponsorshipFacet {
    /// @notice Whether a UserOperation from `sender` with `callData` may be sponsored, and why not.
    /// @dev Sponsorable: a bootstrap `register` from an allowlisted member account of this cluster
    ///      whose proof verifies (owner-key purpose, allowlisted KMS root); an active member's `execute` of `send`, `sendBatch` (1..64
    ///      envelopes, every one of them sendable now, no repeated recipient and envelope id) or
    ///      `commitClusterSharedKey` that would succeed; and an active member's `executeBatch` of
    ///      1..4 such calls, each function at most once, with no envelope repeated across them.
    ///      Nothing else (notably never the account's `withdrawDepositTo`).
    ///      Refusals name the failing call ("call 1: ...") and envelope ("envelope 3: ...").
    ///      Reverts only on calldata that does not ABI-decode.
    /// @return sponsorable True when the paymaster may sign.
    /// @return reason Empty when sponsorable, else why not, in words.
    function checkSponsorship(address sender, bytes calldata callData)
        external
        view
        returns (bool sponsorable, string memory reason);
}
