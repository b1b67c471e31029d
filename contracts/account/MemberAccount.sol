// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IAccount} from "@account-abstraction/contracts/interfaces/IAccount.sol";
import {IEntryPoint} from "@account-abstraction/contracts/interfaces/IEntryPoint.sol";
import {PackedUserOperation} from "@account-abstraction/contracts/interfaces/PackedUserOperation.sol";
import {DstackProof, NodeKeys} from "../lib/ClusterTypes.sol";
import {DstackProofLib, ProofStatus} from "../lib/DstackProofLib.sol";
import {RegistrationDigest} from "../lib/RegistrationDigest.sol";
import {Signatures} from "../lib/Signatures.sol";
import {IAppAuth} from "../registration/IAppAuth.sol";
import {IRegistrationFacet} from "../registration/IRegistrationFacet.sol";
import {IMemberAccount} from "./IMemberAccount.sol";

/// @title MemberAccount
/// @notice One node's ERC-4337 v0.7 account. Before registration it validates exactly one kind of
///         operation, the bootstrap `register`, signed by the derived key that the proof inside its
///         calldata attests, and only when a paymaster pays for it; afterwards the derived key owns it.
/// @dev Validation is signature math only (ecrecover, modexp) plus this account's own storage, as
///      the ERC-7562 rules enforced by production bundlers require. Allowlists (KMS root, app id)
///      are enforced at execution by the diamond and by the sponsorship policy before a paymaster signs.
///      That is why `register` must be sponsored: validation cannot see the KMS-root allowlist, so a
///      self-paid registration would let anyone holding a proof under their own KMS root spend this
///      account's ETH on gas for an operation that reverts in execution.
contract MemberAccount is IAccount, IMemberAccount, IAppAuth {
    uint256 internal constant SIG_VALIDATION_SUCCESS = 0;
    uint256 internal constant SIG_VALIDATION_FAILED = 1;

    /// @notice The EntryPoint v0.7 this account trusts.
    IEntryPoint public immutable entryPoint;
    /// @inheritdoc IMemberAccount
    address public immutable override cluster;
    /// @inheritdoc IMemberAccount
    address public override owner;

    constructor(IEntryPoint entryPoint_, address cluster_) {
        entryPoint = entryPoint_;
        cluster = cluster_;
    }

    modifier onlyEntryPoint() {
        if (msg.sender != address(entryPoint)) revert OnlyEntryPoint(msg.sender);
        _;
    }

    /// @inheritdoc IAccount
    function validateUserOp(
        PackedUserOperation calldata userOp,
        bytes32 userOpHash,
        uint256 missingAccountFunds
    ) external override onlyEntryPoint returns (uint256 validationData) {
        if (userOp.callData.length < 4) return SIG_VALIDATION_FAILED;
        bytes4 selector = bytes4(userOp.callData[:4]);
        // `register` is paid by a paymaster or not at all. Without one it would pay from this
        // account (its ETH, or its EntryPoint deposit, where missingAccountFunds is 0), and the
        // KMS-root allowlist that would refuse it is out of validation's reach (ERC-7562): anyone
        // with a proof under their own KMS root could burn the account's funds at their own fees.
        // Refused before paying anything; the EntryPoint reports AA21 (nothing paid) or AA24.
        if (selector == IMemberAccount.register.selector && userOp.paymasterAndData.length == 0) {
            return SIG_VALIDATION_FAILED;
        }
        validationData = _validate(userOp, userOpHash, selector);
        if (missingAccountFunds > 0) {
            // Sponsored operations never get here (the paymaster pays); an unsponsored one pays its
            // prefund. A failed transfer is the EntryPoint's to detect (AA21).
            (bool paid,) = payable(msg.sender).call{value: missingAccountFunds}("");
            (paid);
        }
    }

    /// @inheritdoc IMemberAccount
    function register(DstackProof calldata proof, NodeKeys calldata keys)
        external
        override
        onlyEntryPoint
        returns (uint64 memberId)
    {
        address signer;
        (memberId, signer) = IRegistrationFacet(cluster).dstack_register(proof, keys);
        address current = owner;
        if (current == address(0)) {
            owner = signer;
            emit OwnerSet(signer, memberId);
        } else if (current != signer) {
            revert OwnerMismatch(current, signer);
        }
    }

    /// @inheritdoc IMemberAccount
    function execute(bytes calldata data) external override onlyEntryPoint returns (bytes memory result) {
        if (owner == address(0)) revert NotRegistered();
        result = _callCluster(data);
    }

    /// @inheritdoc IMemberAccount
    function executeBatch(bytes[] calldata calls)
        external
        override
        onlyEntryPoint
        returns (bytes[] memory results)
    {
        if (owner == address(0)) revert NotRegistered();
        results = new bytes[](calls.length);
        for (uint256 i = 0; i < calls.length; ++i) {
            results[i] = _callCluster(calls[i]);
        }
    }

    /// @inheritdoc IMemberAccount
    function withdrawDepositTo(address payable to, uint256 amount) external override onlyEntryPoint {
        if (owner == address(0)) revert NotRegistered();
        entryPoint.withdrawTo(to, amount);
    }

    /// @notice dstack's KMS asks the app's auth contract (this account, whose address is the app
    ///         id) before releasing keys; the cluster holds the policy.
    function isAppAllowed(AppBootInfo calldata bootInfo)
        external
        view
        override
        returns (bool isAllowed, string memory reason)
    {
        return IAppAuth(cluster).isAppAllowed(bootInfo);
    }

    /// @notice Accepts ETH (e.g. the EntryPoint's withdrawals). Only the owner's own operations
    ///         (`execute`, `executeBatch`, `withdrawDepositTo` without a paymaster) ever spend it.
    receive() external payable {}

    /// @dev Bubbles the cluster's revert data unchanged, so callers decode the facet's own error.
    function _callCluster(bytes calldata data) private returns (bytes memory result) {
        bool ok;
        (ok, result) = cluster.call(data);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(result, 32), mload(result))
            }
        }
    }

    function _validate(PackedUserOperation calldata userOp, bytes32 userOpHash, bytes4 selector)
        private
        view
        returns (uint256)
    {
        address expectedSigner;
        if (selector == IMemberAccount.register.selector) {
            expectedSigner = _bootstrapSigner(userOp.callData[4:]);
        } else if (
            selector == IMemberAccount.execute.selector || selector == IMemberAccount.executeBatch.selector
                || selector == IMemberAccount.withdrawDepositTo.selector
        ) {
            expectedSigner = owner;
        }
        if (expectedSigner == address(0)) return SIG_VALIDATION_FAILED;
        address signer = Signatures.tryRecover(Signatures.ethSignedHash(userOpHash), userOp.signature);
        return signer == expectedSigner ? SIG_VALIDATION_SUCCESS : SIG_VALIDATION_FAILED;
    }

    /// @return The derived key attested by a well-formed registration for this account, else address(0).
    function _bootstrapSigner(bytes calldata args) private view returns (address) {
        (DstackProof memory proof, NodeKeys memory keys) = abi.decode(args, (DstackProof, NodeKeys));
        if (proof.appId != address(this)) return address(0);
        if (!DstackProofLib.hasOwnerPurpose(proof)) return address(0);
        if (proof.messageHash != RegistrationDigest.compute(block.chainid, cluster, address(this), keys)) {
            return address(0);
        }
        (ProofStatus status, address derived,) = DstackProofLib.check(proof);
        if (status != ProofStatus.Valid) return address(0);
        // After registration the owner is fixed; a proof for another key is not this account's.
        address current = owner;
        if (current != address(0) && current != derived) return address(0);
        return derived;
    }
}
