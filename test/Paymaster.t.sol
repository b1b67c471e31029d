// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IEntryPoint} from "@account-abstraction/contracts/interfaces/IEntryPoint.sol";
import {IPaymaster} from "@account-abstraction/contracts/interfaces/IPaymaster.sol";
import {IStakeManager} from "@account-abstraction/contracts/interfaces/IStakeManager.sol";
import {PackedUserOperation} from "@account-abstraction/contracts/interfaces/PackedUserOperation.sol";
import {VerifyingPaymaster} from "../contracts/paymaster/VerifyingPaymaster.sol";
import {ClusterFixture} from "./utils/ClusterFixture.sol";

/// @notice VerifyingPaymaster: the sponsor signature check, the signed maximum cost, its hash,
///         paymasterAndData parsing, and the owner's deposit, stake and ownership management.
contract PaymasterTest is ClusterFixture {
    uint256 internal constant OTHER_KEY = uint256(keccak256("attestmesh.test.not-the-sponsor"));
    uint256 internal constant SIG_FAILED = 1;
    /// @dev paymaster (20) | verificationGasLimit (16) | postOpGasLimit (16) | window + maxCost (96).
    uint256 internal constant SIGNATURE_OFFSET = 148;
    /// @dev Byte 147 is the low byte of the signed maxCost.
    uint256 internal constant MAX_COST_LOW_BYTE = 147;

    address internal stranger = address(0xBAD);
    address payable internal recipient = payable(address(0xFEE));

    function setUp() public {
        setUpCluster();
    }

    // ------------------------------------------------------------------ validatePaymasterUserOp

    function test_validatePaymasterUserOp_sponsorSignatureIsValid() public {
        PackedUserOperation memory op = _op();
        sponsor(op);
        (bytes memory context, uint256 validationData) = _validate(op);
        // The fixture's sponsor() signs [0, now + 1 hour].
        vm.assertEq(validationData, uint256(uint48(block.timestamp + 1 hours)) << 160, "validation data");
        vm.assertEq(context.length, 0, "no context, so no postOp");
    }

    /// @notice The window the sponsor signed is handed to the EntryPoint in ERC-4337's packing.
    /// forge-config: default.fuzz.runs = 1024
    function testFuzz_validatePaymasterUserOp_packsTheSignedWindow(uint48 validUntil, uint48 validAfter)
        public
    {
        PackedUserOperation memory op = _op();
        sponsorWith(op, SPONSOR_KEY, validUntil, validAfter, maxCostOf(op));
        (, uint256 validationData) = _validate(op);
        vm.assertEq(
            validationData, (uint256(validUntil) << 160) | (uint256(validAfter) << 208), "validation data"
        );
    }

    function test_validatePaymasterUserOp_otherSignerFails() public {
        PackedUserOperation memory op = _op();
        uint48 validUntil = uint48(block.timestamp + 1 hours);
        sponsorWith(op, OTHER_KEY, validUntil, 0, maxCostOf(op));
        (, uint256 validationData) = _validate(op);
        // A failed signature is reported (not reverted), window included, as ERC-4337 asks.
        vm.assertEq(validationData, SIG_FAILED | (uint256(validUntil) << 160), "sig failed");
    }

    /// @notice The signature covers every gas field: a bundler cannot raise what the sponsor pays.
    function test_validatePaymasterUserOp_tamperedGasFieldsFail() public {
        PackedUserOperation memory op = _op();
        sponsor(op);
        vm.assertEq(_sigFailed(op), 0, "untouched op is valid");

        PackedUserOperation memory bad = copyOp(op);
        bad.accountGasLimits = bytes32(uint256(op.accountGasLimits) + 1);
        vm.assertEq(_sigFailed(bad), SIG_FAILED, "accountGasLimits");

        bad = copyOp(op);
        bad.preVerificationGas = op.preVerificationGas + 1;
        vm.assertEq(_sigFailed(bad), SIG_FAILED, "preVerificationGas");

        bad = copyOp(op);
        bad.gasFees = bytes32(uint256(op.gasFees) + (1 << 128));
        vm.assertEq(_sigFailed(bad), SIG_FAILED, "gasFees (maxPriorityFeePerGas)");

        bad = copyOp(op);
        bad.paymasterAndData[35] = bytes1(uint8(bad.paymasterAndData[35]) ^ 1);
        vm.assertEq(_sigFailed(bad), SIG_FAILED, "paymasterVerificationGasLimit");

        bad = copyOp(op);
        bad.paymasterAndData[51] = bytes1(uint8(bad.paymasterAndData[51]) ^ 1);
        vm.assertEq(_sigFailed(bad), SIG_FAILED, "paymasterPostOpGasLimit");
    }

    function test_validatePaymasterUserOp_tamperedOperationFieldsFail() public {
        PackedUserOperation memory op = _op();
        sponsor(op);

        PackedUserOperation memory bad = copyOp(op);
        bad.sender = address(0xDEAD);
        vm.assertEq(_sigFailed(bad), SIG_FAILED, "sender");

        bad = copyOp(op);
        bad.nonce = op.nonce + 1;
        vm.assertEq(_sigFailed(bad), SIG_FAILED, "nonce");

        bad = copyOp(op);
        bad.initCode = hex"01";
        vm.assertEq(_sigFailed(bad), SIG_FAILED, "initCode");

        bad = copyOp(op);
        bad.callData = hex"deadbeef";
        vm.assertEq(_sigFailed(bad), SIG_FAILED, "callData");

        // Widening the window the sponsor signed (byte 83 is the low byte of validUntil).
        bad = copyOp(op);
        bad.paymasterAndData[83] = bytes1(uint8(bad.paymasterAndData[83]) ^ 1);
        vm.assertEq(_sigFailed(bad), SIG_FAILED, "validUntil");

        // Raising the cap the sponsor signed.
        bad = copyOp(op);
        bad.paymasterAndData[MAX_COST_LOW_BYTE] = bytes1(uint8(bad.paymasterAndData[MAX_COST_LOW_BYTE]) ^ 1);
        vm.assertEq(_sigFailed(bad), SIG_FAILED, "maxCost");
    }

    // ------------------------------------------------------------------ the signed maximum cost

    /// @notice The EntryPoint's maximum cost equal to the signed cap passes; one wei more reverts
    ///         with both figures (the bundler reports AA33 with this reason).
    function test_validatePaymasterUserOp_enforcesTheSignedMaxCost() public {
        PackedUserOperation memory op = _op();
        sponsor(op);
        uint256 cap = maxCostOf(op);
        (, uint256 validationData) = _validateAt(op, cap);
        vm.assertEq(validationData & type(uint160).max, 0, "exactly the signed maximum is accepted");
        (, validationData) = _validateAt(op, cap - 1);
        vm.assertEq(validationData & type(uint160).max, 0, "below the signed maximum is accepted");

        vm.expectRevert(
            abi.encodeWithSelector(VerifyingPaymaster.CostAboveSignedMaximum.selector, cap + 1, cap)
        );
        _validateAt(op, cap + 1);
    }

    /// forge-config: default.fuzz.runs = 1024
    function testFuzz_validatePaymasterUserOp_refusesAnyCostAboveTheCap(uint256 signedCap, uint256 cost)
        public
    {
        signedCap = bound(signedCap, 0, type(uint256).max - 1);
        cost = bound(cost, signedCap + 1, type(uint256).max);
        PackedUserOperation memory op = _op();
        sponsorWith(op, SPONSOR_KEY, uint48(block.timestamp + 1 hours), 0, signedCap);
        vm.expectRevert(
            abi.encodeWithSelector(VerifyingPaymaster.CostAboveSignedMaximum.selector, cost, signedCap)
        );
        _validateAt(op, cost);
    }

    /// @notice The cap is enforced before the signature is even looked at, so a forged signature
    ///         with a huge cap still meets only the signature check (AA34), never a payout.
    function test_validatePaymasterUserOp_capAppliesWhateverTheSigner() public {
        PackedUserOperation memory op = _op();
        sponsorWith(op, OTHER_KEY, uint48(block.timestamp + 1 hours), 0, 1);
        vm.expectRevert(abi.encodeWithSelector(VerifyingPaymaster.CostAboveSignedMaximum.selector, 2, 1));
        _validateAt(op, 2);
    }

    /// @notice The account's own signature is not part of what the sponsor signs.
    function test_validatePaymasterUserOp_ignoresTheAccountSignature() public {
        PackedUserOperation memory op = _op();
        sponsor(op);
        op.signature = hex"0123456789";
        vm.assertEq(_sigFailed(op), 0, "account signature not covered");
    }

    function test_validatePaymasterUserOp_missingOrMalformedSignatureFails() public {
        PackedUserOperation memory op = _op();
        op.paymasterAndData = abi.encodePacked(
            address(paymaster),
            uint128(200_000),
            uint128(0),
            abi.encode(uint48(0), uint48(0), type(uint256).max)
        );
        vm.assertEq(op.paymasterAndData.length, SIGNATURE_OFFSET, "no signature at all");
        vm.assertEq(_sigFailed(op), SIG_FAILED, "empty signature");

        op.paymasterAndData = abi.encodePacked(op.paymasterAndData, new bytes(64));
        vm.assertEq(_sigFailed(op), SIG_FAILED, "64-byte signature");
    }

    function test_RevertWhen_validatePaymasterUserOp_malformedPaymasterData() public {
        PackedUserOperation memory op = _op();
        op.paymasterAndData = abi.encodePacked(address(paymaster), uint128(200_000), uint128(0));
        vm.expectRevert(
            abi.encodeWithSelector(VerifyingPaymaster.MalformedPaymasterData.selector, uint256(52))
        );
        vm.prank(ENTRY_POINT);
        paymaster.validatePaymasterUserOp(op, bytes32(0), 0);
    }

    function test_RevertWhen_validatePaymasterUserOp_notEntryPoint() public {
        PackedUserOperation memory op = _op();
        sponsor(op);
        vm.expectRevert(abi.encodeWithSelector(VerifyingPaymaster.OnlyEntryPoint.selector, stranger));
        vm.prank(stranger);
        paymaster.validatePaymasterUserOp(op, bytes32(0), 0);
    }

    // ------------------------------------------------------------------ postOp

    function test_postOp_acceptsTheEntryPoint() public {
        vm.prank(ENTRY_POINT);
        paymaster.postOp(IPaymaster.PostOpMode.opSucceeded, "", 0, 0);
    }

    function test_RevertWhen_postOp_notEntryPoint() public {
        vm.expectRevert(abi.encodeWithSelector(VerifyingPaymaster.OnlyEntryPoint.selector, stranger));
        vm.prank(stranger);
        paymaster.postOp(IPaymaster.PostOpMode.opSucceeded, "", 0, 0);
    }

    // ------------------------------------------------------------------ getHash

    /// @notice A sponsorship signed on one chain is worthless on another.
    function test_getHash_differsAcrossChains() public {
        PackedUserOperation memory op = _op();
        sponsor(op);
        uint48 validUntil = uint48(block.timestamp + 1 hours);
        bytes32 here = paymaster.getHash(op, validUntil, 0, maxCostOf(op));
        vm.chainId(block.chainid + 1);
        bytes32 there = paymaster.getHash(op, validUntil, 0, maxCostOf(op));
        vm.assertNotEq(here, there, "chain id is bound");
        vm.assertEq(_sigFailed(op), SIG_FAILED, "replayed on another chain");
    }

    /// @notice A sponsorship for one paymaster cannot spend another's deposit, even with the same signer.
    function test_getHash_differsAcrossPaymasters() public {
        VerifyingPaymaster twin = new VerifyingPaymaster(entryPoint, operator, vm.addr(SPONSOR_KEY));
        PackedUserOperation memory op = _op();
        sponsor(op);
        vm.assertNotEq(
            paymaster.getHash(op, 1, 0, 1), twin.getHash(op, 1, 0, 1), "paymaster address is bound"
        );
    }

    function test_getHash_bindsTheWindow() public view {
        PackedUserOperation memory op = _op();
        sponsor(op);
        vm.assertNotEq(paymaster.getHash(op, 2, 1, 5), paymaster.getHash(op, 2, 0, 5), "validAfter");
        vm.assertNotEq(paymaster.getHash(op, 2, 1, 5), paymaster.getHash(op, 3, 1, 5), "validUntil");
        vm.assertNotEq(paymaster.getHash(op, 2, 1, 5), paymaster.getHash(op, 2, 1, 6), "maxCost");
    }

    /// @notice The layout the Rust gas manager builds: today's hash with maxCost as the last item.
    function test_getHash_isTheDocumentedEncoding() public view {
        PackedUserOperation memory op = _op();
        sponsor(op);
        bytes32 expected = keccak256(
            abi.encode(
                op.sender,
                op.nonce,
                keccak256(op.initCode),
                keccak256(op.callData),
                op.accountGasLimits,
                bytes32((uint256(200_000) << 128) | 0),
                op.preVerificationGas,
                op.gasFees,
                block.chainid,
                address(paymaster),
                uint48(7),
                uint48(3),
                uint256(11)
            )
        );
        vm.assertEq(paymaster.getHash(op, 7, 3, 11), expected, "hash layout");
    }

    // ------------------------------------------------------------------ parsePaymasterAndData

    /// forge-config: default.fuzz.runs = 1024
    function testFuzz_parsePaymasterAndData_roundTrip(
        uint48 validUntil,
        uint48 validAfter,
        uint256 maxCost,
        uint128 verificationGas,
        uint128 postOpGas,
        bytes memory signature
    ) public view {
        bytes memory data = abi.encodePacked(
            address(paymaster),
            verificationGas,
            postOpGas,
            abi.encode(validUntil, validAfter, maxCost),
            signature
        );
        (uint48 gotUntil, uint48 gotAfter, uint256 gotMaxCost, bytes memory gotSignature) =
            paymaster.parsePaymasterAndData(data);
        vm.assertEq(gotUntil, validUntil, "validUntil");
        vm.assertEq(gotAfter, validAfter, "validAfter");
        vm.assertEq(gotMaxCost, maxCost, "maxCost");
        vm.assertEq(gotSignature, signature, "signature");
    }

    /// forge-config: default.fuzz.runs = 1024
    function testFuzz_parsePaymasterAndData_revertsWhenShorterThanTheLayout(uint256 lengthSeed) public {
        uint256 length = bound(lengthSeed, 0, SIGNATURE_OFFSET - 1);
        vm.expectRevert(abi.encodeWithSelector(VerifyingPaymaster.MalformedPaymasterData.selector, length));
        paymaster.parsePaymasterAndData(new bytes(length));
    }

    // ------------------------------------------------------------------ deposit

    function test_deposit_creditsThePaymasterInTheEntryPoint() public {
        vm.assertEq(paymaster.getDeposit(), 10 ether, "fixture deposit");
        // Anyone may top the deposit up.
        vm.deal(stranger, 1 ether);
        vm.expectEmit(ENTRY_POINT);
        emit IStakeManager.Deposited(address(paymaster), 11 ether);
        vm.prank(stranger);
        paymaster.deposit{value: 1 ether}();
        vm.assertEq(paymaster.getDeposit(), 11 ether, "after top-up");
        vm.assertEq(entryPoint.balanceOf(address(paymaster)), 11 ether, "EntryPoint agrees");
    }

    function test_withdrawTo_ownerMovesFunds() public {
        vm.prank(operator);
        paymaster.withdrawTo(recipient, 3 ether);
        vm.assertEq(recipient.balance, 3 ether, "recipient paid");
        vm.assertEq(paymaster.getDeposit(), 7 ether, "deposit reduced");
    }

    function test_RevertWhen_withdrawTo_notOwner() public {
        vm.expectRevert(abi.encodeWithSelector(VerifyingPaymaster.OnlyOwner.selector, stranger));
        vm.prank(stranger);
        paymaster.withdrawTo(payable(stranger), 1 ether);
    }

    // ------------------------------------------------------------------ stake

    function test_withdrawStake_afterAddUnlockAndTheDelay() public {
        uint32 delay = 1 days;
        vm.prank(operator);
        paymaster.addStake{value: 2 ether}(delay);
        IStakeManager.DepositInfo memory info = entryPoint.getDepositInfo(address(paymaster));
        vm.assertTrue(info.staked, "staked");
        vm.assertEq(info.stake, 2 ether, "stake");
        vm.assertEq(info.unstakeDelaySec, delay, "delay");

        vm.prank(operator);
        paymaster.unlockStake();
        info = entryPoint.getDepositInfo(address(paymaster));
        vm.assertFalse(info.staked, "unlocking");
        vm.assertEq(info.withdrawTime, block.timestamp + delay, "withdraw time");

        // The EntryPoint holds the stake until the delay has passed.
        vm.expectRevert(bytes("Stake withdrawal is not due"));
        vm.prank(operator);
        paymaster.withdrawStake(recipient);

        vm.warp(block.timestamp + delay);
        vm.prank(operator);
        paymaster.withdrawStake(recipient);
        vm.assertEq(recipient.balance, 2 ether, "stake returned");
        vm.assertEq(entryPoint.getDepositInfo(address(paymaster)).stake, 0, "no stake left");
        vm.assertEq(paymaster.getDeposit(), 10 ether, "deposit untouched");
    }

    function test_RevertWhen_addStake_notOwner() public {
        vm.deal(stranger, 1 ether);
        vm.expectRevert(abi.encodeWithSelector(VerifyingPaymaster.OnlyOwner.selector, stranger));
        vm.prank(stranger);
        paymaster.addStake{value: 1 ether}(1 days);
    }

    function test_RevertWhen_unlockStake_notOwner() public {
        vm.prank(operator);
        paymaster.addStake{value: 1 ether}(1 days);
        vm.expectRevert(abi.encodeWithSelector(VerifyingPaymaster.OnlyOwner.selector, stranger));
        vm.prank(stranger);
        paymaster.unlockStake();
    }

    function test_RevertWhen_withdrawStake_notOwner() public {
        vm.prank(operator);
        paymaster.addStake{value: 1 ether}(1 days);
        vm.prank(operator);
        paymaster.unlockStake();
        vm.warp(block.timestamp + 1 days);
        vm.expectRevert(abi.encodeWithSelector(VerifyingPaymaster.OnlyOwner.selector, stranger));
        vm.prank(stranger);
        paymaster.withdrawStake(payable(stranger));
    }

    // ------------------------------------------------------------------ ownership

    function test_constructor_setsTheImmutablesAndOwner() public view {
        vm.assertEq(address(paymaster.entryPoint()), ENTRY_POINT, "entry point");
        vm.assertEq(paymaster.verifyingSigner(), vm.addr(SPONSOR_KEY), "signer");
        vm.assertEq(paymaster.owner(), operator, "owner");
    }

    function test_transferOwnership_movesOwnershipAndEmits() public {
        address next = address(0xA11CE);
        vm.expectEmit(address(paymaster));
        emit VerifyingPaymaster.OwnershipTransferred(operator, next);
        vm.prank(operator);
        paymaster.transferOwnership(next);
        vm.assertEq(paymaster.owner(), next, "new owner");

        // The old owner lost control of the deposit, the new one has it.
        vm.expectRevert(abi.encodeWithSelector(VerifyingPaymaster.OnlyOwner.selector, operator));
        vm.prank(operator);
        paymaster.withdrawTo(payable(operator), 1 ether);
        vm.prank(next);
        paymaster.withdrawTo(recipient, 1 ether);
        vm.assertEq(recipient.balance, 1 ether, "new owner withdrew");
    }

    function test_RevertWhen_transferOwnership_zeroAddress() public {
        vm.expectRevert(VerifyingPaymaster.ZeroAddress.selector);
        vm.prank(operator);
        paymaster.transferOwnership(address(0));
    }

    function test_RevertWhen_transferOwnership_notOwner() public {
        vm.expectRevert(abi.encodeWithSelector(VerifyingPaymaster.OnlyOwner.selector, stranger));
        vm.prank(stranger);
        paymaster.transferOwnership(stranger);
    }

    function test_RevertWhen_constructor_zeroEntryPoint() public {
        vm.expectRevert(VerifyingPaymaster.ZeroAddress.selector);
        new VerifyingPaymaster(IEntryPoint(address(0)), operator, vm.addr(SPONSOR_KEY));
    }

    function test_RevertWhen_constructor_zeroOwner() public {
        vm.expectRevert(VerifyingPaymaster.ZeroAddress.selector);
        new VerifyingPaymaster(entryPoint, address(0), vm.addr(SPONSOR_KEY));
    }

    function test_RevertWhen_constructor_zeroSigner() public {
        vm.expectRevert(VerifyingPaymaster.ZeroAddress.selector);
        new VerifyingPaymaster(entryPoint, operator, address(0));
    }

    // ------------------------------------------------------------------ helpers

    /// @notice An operation from a (not deployed) member account; the paymaster never looks at code.
    function _op() private view returns (PackedUserOperation memory) {
        return baseOp(makeNode("node-pm").account, hex"b61d27f6");
    }

    function _validate(PackedUserOperation memory op)
        private
        returns (bytes memory context, uint256 validationData)
    {
        return _validateAt(op, 0);
    }

    /// @notice Validation as the EntryPoint calls it, with `maxCost` as the operation's maximum cost.
    function _validateAt(PackedUserOperation memory op, uint256 maxCost)
        private
        returns (bytes memory context, uint256 validationData)
    {
        vm.prank(ENTRY_POINT);
        return paymaster.validatePaymasterUserOp(op, bytes32(0), maxCost);
    }

    /// @notice The sigFailed bit (the low 160 bits of validationData).
    function _sigFailed(PackedUserOperation memory op) private returns (uint256) {
        (, uint256 validationData) = _validate(op);
        return validationData & type(uint160).max;
    }
}
