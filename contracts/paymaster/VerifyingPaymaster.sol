// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IEntryPoint} from "@account-abstraction/contracts/interfaces/IEntryPoint.sol";
import {IPaymaster} from "@account-abstraction/contracts/interfaces/IPaymaster.sol";
import {PackedUserOperation} from "@account-abstraction/contracts/interfaces/PackedUserOperation.sol";
import {Signatures} from "../lib/Signatures.sol";

/// @title VerifyingPaymaster
/// @notice Pays for UserOperations that the sponsor's signer approved off chain (after the
///         sponsorship policy said yes), up to the maximum cost the sponsor signed. EntryPoint v0.7
///         semantics.
/// @dev paymasterAndData = paymaster (20) | verificationGasLimit (16) | postOpGasLimit (16)
///      | abi.encode(uint48 validUntil, uint48 validAfter, uint256 maxCost) (96) | signature (65).
///      `maxCost` caps what one sponsored operation may charge the deposit: the EntryPoint hands
///      validation the operation's maximum possible cost (every gas limit, preVerificationGas
///      included, times maxFeePerGas), and validation reverts when it exceeds the signed cap. So a
///      member who got inflated gas fields signed cannot turn its own bundle into a payout.
///      The signer is immutable because ERC-7562 forbids an unstaked paymaster from reading its own
///      storage during validation; rotating it means deploying a new paymaster.
contract VerifyingPaymaster is IPaymaster {
    uint256 internal constant SIG_VALIDATION_FAILED = 1;
    uint256 private constant VALIDITY_OFFSET = 52;
    uint256 private constant SIGNATURE_OFFSET = 148;

    /// @notice Only the EntryPoint may call.
    error OnlyEntryPoint(address caller);
    /// @notice Only the owner may call.
    error OnlyOwner(address caller);
    /// @notice paymasterAndData is shorter than the fixed layout.
    error MalformedPaymasterData(uint256 length);
    /// @notice address(0) is not allowed here.
    error ZeroAddress();
    /// @notice The operation may cost more (`maxCost`, from the EntryPoint) than the sponsor signed for.
    error CostAboveSignedMaximum(uint256 maxCost, uint256 signedMaxCost);

    /// @notice Ownership changed.
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    /// @notice The EntryPoint v0.7 this paymaster deposits in.
    IEntryPoint public immutable entryPoint;
    /// @notice The key whose signature approves sponsorship.
    address public immutable verifyingSigner;
    /// @notice Manages the deposit and stake.
    address public owner;

    constructor(IEntryPoint entryPoint_, address owner_, address verifyingSigner_) {
        if (address(entryPoint_) == address(0) || owner_ == address(0) || verifyingSigner_ == address(0)) {
            revert ZeroAddress();
        }
        entryPoint = entryPoint_;
        verifyingSigner = verifyingSigner_;
        owner = owner_;
        emit OwnershipTransferred(address(0), owner_);
    }

    modifier onlyOwner() {
        if (msg.sender != owner) revert OnlyOwner(msg.sender);
        _;
    }

    /// @notice The hash the verifying signer signs (EIP-191) for `userOp`, a validity window and a
    ///         maximum cost. It binds the chain, this paymaster, the window, the cap, and every gas
    ///         field of the operation.
    function getHash(
        PackedUserOperation calldata userOp,
        uint48 validUntil,
        uint48 validAfter,
        uint256 maxCost
    ) public view returns (bytes32) {
        return keccak256(
            abi.encode(
                userOp.sender,
                userOp.nonce,
                keccak256(userOp.initCode),
                keccak256(userOp.callData),
                userOp.accountGasLimits,
                bytes32(userOp.paymasterAndData[20:VALIDITY_OFFSET]),
                userOp.preVerificationGas,
                userOp.gasFees,
                block.chainid,
                address(this),
                validUntil,
                validAfter,
                maxCost
            )
        );
    }

    /// @notice Splits paymasterAndData into its validity window, maximum cost and signature.
    function parsePaymasterAndData(bytes calldata paymasterAndData)
        public
        pure
        returns (uint48 validUntil, uint48 validAfter, uint256 maxCost, bytes calldata signature)
    {
        if (paymasterAndData.length < SIGNATURE_OFFSET) {
            revert MalformedPaymasterData(paymasterAndData.length);
        }
        (validUntil, validAfter, maxCost) =
            abi.decode(paymasterAndData[VALIDITY_OFFSET:SIGNATURE_OFFSET], (uint48, uint48, uint256));
        signature = paymasterAndData[SIGNATURE_OFFSET:];
    }

    /// @inheritdoc IPaymaster
    /// @dev Reverts CostAboveSignedMaximum (the bundler reports AA33 with it) when the operation's
    ///      maximum cost exceeds the signed cap; a wrong signature is reported, not reverted (AA34).
    function validatePaymasterUserOp(PackedUserOperation calldata userOp, bytes32, uint256 maxCost)
        external
        view
        override
        returns (bytes memory context, uint256 validationData)
    {
        if (msg.sender != address(entryPoint)) revert OnlyEntryPoint(msg.sender);
        (uint48 validUntil, uint48 validAfter, uint256 signedMaxCost, bytes calldata signature) =
            parsePaymasterAndData(userOp.paymasterAndData);
        if (maxCost > signedMaxCost) revert CostAboveSignedMaximum(maxCost, signedMaxCost);
        address signer = Signatures.tryRecover(
            Signatures.ethSignedHash(getHash(userOp, validUntil, validAfter, signedMaxCost)), signature
        );
        uint256 sigFailed = signer == verifyingSigner ? 0 : SIG_VALIDATION_FAILED;
        validationData = sigFailed | (uint256(validUntil) << 160) | (uint256(validAfter) << 208);
        return ("", validationData);
    }

    /// @inheritdoc IPaymaster
    /// @dev Never called: validation returns an empty context.
    function postOp(PostOpMode, bytes calldata, uint256, uint256) external view override {
        if (msg.sender != address(entryPoint)) revert OnlyEntryPoint(msg.sender);
    }

    /// @notice Adds to this paymaster's EntryPoint deposit, which pays for sponsored operations.
    function deposit() external payable {
        entryPoint.depositTo{value: msg.value}(address(this));
    }

    /// @notice This paymaster's EntryPoint deposit.
    function getDeposit() external view returns (uint256) {
        return entryPoint.balanceOf(address(this));
    }

    /// @notice Withdraws from the deposit (only the owner).
    function withdrawTo(address payable to, uint256 amount) external onlyOwner {
        entryPoint.withdrawTo(to, amount);
    }

    /// @notice Stakes in the EntryPoint (only the owner); bundlers relax ERC-7562 limits for staked paymasters.
    function addStake(uint32 unstakeDelaySec) external payable onlyOwner {
        entryPoint.addStake{value: msg.value}(unstakeDelaySec);
    }

    /// @notice Starts the unstake delay (only the owner).
    function unlockStake() external onlyOwner {
        entryPoint.unlockStake();
    }

    /// @notice Withdraws the stake after the delay (only the owner).
    function withdrawStake(address payable to) external onlyOwner {
        entryPoint.withdrawStake(to);
    }

    /// @notice Hands over ownership (only the owner).
    function transferOwnership(address newOwner) external onlyOwner {
        if (newOwner == address(0)) revert ZeroAddress();
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }
}
