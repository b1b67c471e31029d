// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IEntryPoint} from "@account-abstraction/contracts/interfaces/IEntryPoint.sol";
import {PackedUserOperation} from "@account-abstraction/contracts/interfaces/PackedUserOperation.sol";
import {IMemberAccount} from "../contracts/account/IMemberAccount.sol";
import {MemberAccount} from "../contracts/account/MemberAccount.sol";
import {DstackProof} from "../contracts/lib/ClusterTypes.sol";
import {RegistrationDigest} from "../contracts/lib/RegistrationDigest.sol";
import {IMessageFacet} from "../contracts/message/IMessageFacet.sol";
import {VerifyingPaymaster} from "../contracts/paymaster/VerifyingPaymaster.sol";
import {ISponsorshipFacet} from "../contracts/sponsorship/ISponsorshipFacet.sol";
import {ClusterFixture} from "./utils/ClusterFixture.sol";

/// @notice Issue 14, money: the attacks themselves, run through the real EntryPoint v0.7 by an
///         attacker who bundles its own operation and names itself the beneficiary. Each test
///         checks balances before and after: the attacker gains nothing, nobody else loses anything.
contract MoneyAttackTest is ClusterFixture {
    address payable internal attacker = payable(address(0xA77AC4));
    uint256 internal constant ATTACKER_KMS_ROOT_KEY = uint256(keccak256("attacker kms root"));
    uint256 internal constant ATTACKER_APP_KEY = uint256(keccak256("attacker app key"));
    uint256 internal constant ATTACKER_DERIVED_KEY = uint256(keccak256("attacker derived key"));

    /// @dev The inflated fields of the paymaster drain: 40M preVerificationGas at 200 gwei.
    uint256 internal constant INFLATED_PVG = 40_000_000;
    uint256 internal constant INFLATED_FEE = 200 gwei;
    bytes32 internal constant ENVELOPE_ID = "to-b";

    Node internal a;
    Node internal b;

    function setUp() public {
        setUpCluster();
        a = addNode("node-a");
        b = addNode("node-b");
        handle(registerOp(a));
        handle(registerOp(b));
    }

    // ------------------------------------------------------------------ 1. paymaster drain

    /// @notice An ordinary sponsorable `send` from member a, with the paymaster's gas limits in place.
    function sendOp() internal view returns (PackedUserOperation memory op) {
        bytes memory send = abi.encodeCall(IMessageFacet.send, (2, ENVELOPE_ID, hex"01"));
        op = baseOp(a.account, abi.encodeCall(IMemberAccount.execute, (send)));
        op.paymasterAndData = abi.encodePacked(address(paymaster), uint128(200_000), uint128(0));
    }

    /// @notice What a gas manager signs as maxCost for sendOp(): its own, honest gas fields.
    function honestMaxCost() internal view returns (uint256) {
        return maxCostOf(sendOp());
    }

    /// @notice sendOp() with preVerificationGas and fees inflated, sponsor-signed with `signedMaxCost`
    ///         (the sponsor signs the gas fields it is given; the cap is what it controls), then
    ///         signed by member a, the attacker.
    function inflatedSendOp(uint256 pvg, uint256 fee, uint256 signedMaxCost)
        internal
        view
        returns (PackedUserOperation memory op)
    {
        op = sendOp();
        op.preVerificationGas = pvg;
        op.gasFees = bytes32((fee << 128) | fee);
        sponsorWith(op, SPONSOR_KEY, uint48(block.timestamp + 1 hours), 0, signedMaxCost);
        signOp(op, a.derivedKey);
    }

    /// @notice The attacker submits handleOps itself, as its own beneficiary.
    function bundleAsAttacker(PackedUserOperation memory op) internal {
        PackedUserOperation[] memory ops = new PackedUserOperation[](1);
        ops[0] = op;
        vm.prank(attacker, attacker);
        entryPoint.handleOps(ops, attacker);
    }

    /// @notice The drain as it worked before the cap: a sponsorship with no effective maximum (the
    ///         old paymaster enforced none) lets the attacker move most of the 10 ETH deposit to
    ///         itself. This is the attack the next test shows refused; it proves the setup is real.
    function test_paymasterDrain_worksWhenTheSignedCostIsUncapped() public {
        uint256 depositBefore = paymaster.getDeposit();
        bundleAsAttacker(inflatedSendOp(INFLATED_PVG, INFLATED_FEE, type(uint256).max));
        uint256 taken = depositBefore - paymaster.getDeposit();
        vm.assertGt(attacker.balance, 7.9 ether, "the attacker's beneficiary collected about 8 ETH");
        vm.assertEq(attacker.balance, taken, "all of it from the paymaster's deposit");
    }

    /// @notice The fix: the sponsor signs a maximum cost computed from honest gas fields, so the
    ///         inflated operation is refused in validation (AA33 with CostAboveSignedMaximum), the
    ///         bundle reverts, the deposit is untouched and the attacker's balance does not grow.
    function test_paymasterDrain_refusedByTheSignedMaxCost() public {
        uint256 honest = honestMaxCost();
        PackedUserOperation memory op = inflatedSendOp(INFLATED_PVG, INFLATED_FEE, honest);
        uint256 inflated = maxCostOf(op);
        vm.assertGt(inflated, 8 ether, "the operation could cost over 8 ETH");
        uint256 depositBefore = paymaster.getDeposit();
        uint256 nonceBefore = entryPoint.getNonce(a.account, 0);

        vm.expectRevert(
            abi.encodeWithSelector(
                IEntryPoint.FailedOpWithRevert.selector,
                0,
                "AA33 reverted",
                abi.encodeWithSelector(VerifyingPaymaster.CostAboveSignedMaximum.selector, inflated, honest)
            )
        );
        bundleAsAttacker(op);

        vm.assertEq(paymaster.getDeposit(), depositBefore, "deposit unchanged");
        vm.assertEq(attacker.balance, 0, "the attacker gained nothing");
        vm.assertEq(entryPoint.getNonce(a.account, 0), nonceBefore, "the operation never ran");
    }

    /// @notice The attacker cannot lift the cap itself: maxCost is under the sponsor's signature, so
    ///         an operation carrying a raised cap is a paymaster signature failure (AA34).
    function test_paymasterDrain_raisingTheSignedCapBreaksTheSponsorSignature() public {
        PackedUserOperation memory op = inflatedSendOp(INFLATED_PVG, INFLATED_FEE, honestMaxCost());
        // Overwrite the signed maxCost (paymasterAndData[116:148]) with "anything goes".
        bytes memory pm = op.paymasterAndData;
        assembly ("memory-safe") {
            mstore(add(pm, add(32, 116)), not(0))
        }
        signOp(op, a.derivedKey);
        uint256 depositBefore = paymaster.getDeposit();
        vm.expectRevert(abi.encodeWithSelector(IEntryPoint.FailedOp.selector, 0, "AA34 signature error"));
        bundleAsAttacker(op);
        vm.assertEq(paymaster.getDeposit(), depositBefore, "deposit unchanged");
        vm.assertEq(attacker.balance, 0, "the attacker gained nothing");
    }

    /// @notice Any inflation of preVerificationGas or fees past the signed cap is refused.
    /// forge-config: default.fuzz.runs = 1024
    function testFuzz_paymasterDrain_anyInflationPastTheCapIsRefused(uint256 pvg, uint256 fee) public {
        uint256 honest = honestMaxCost();
        pvg = bound(pvg, 60_000, INFLATED_PVG);
        fee = bound(fee, 2 gwei, INFLATED_FEE);
        PackedUserOperation memory op = inflatedSendOp(pvg, fee, honest);
        uint256 cost = maxCostOf(op);
        vm.assume(cost > honest);
        uint256 depositBefore = paymaster.getDeposit();
        vm.expectRevert(
            abi.encodeWithSelector(
                IEntryPoint.FailedOpWithRevert.selector,
                0,
                "AA33 reverted",
                abi.encodeWithSelector(VerifyingPaymaster.CostAboveSignedMaximum.selector, cost, honest)
            )
        );
        bundleAsAttacker(op);
        vm.assertEq(paymaster.getDeposit(), depositBefore, "deposit unchanged");
        vm.assertEq(attacker.balance, 0, "the attacker gained nothing");
    }

    /// @notice A cap exactly equal to the operation's maximum cost passes: the honest operation
    ///         runs even when the member bundles it, and its bundler is repaid at most that cap.
    function test_paymasterDrain_capExactlyTheMaximumPasses() public {
        PackedUserOperation memory op = sendOp();
        uint256 cap = maxCostOf(op);
        sponsorWith(op, SPONSOR_KEY, uint48(block.timestamp + 1 hours), 0, cap);
        signOp(op, a.derivedKey);
        uint256 depositBefore = paymaster.getDeposit();
        bundleAsAttacker(op);
        vm.assertTrue(IMessageFacet(cluster).isEnvelopeUsed(2, 1, ENVELOPE_ID), "the send ran");
        vm.assertEq(attacker.balance, depositBefore - paymaster.getDeposit(), "the gas, repaid");
        vm.assertLe(attacker.balance, cap, "never more than the signed cap");

        // One wei of headroom less and the same operation is refused.
        op = sendOp();
        op.nonce = entryPoint.getNonce(a.account, 0);
        cap = maxCostOf(op);
        sponsorWith(op, SPONSOR_KEY, uint48(block.timestamp + 1 hours), 0, cap - 1);
        signOp(op, a.derivedKey);
        vm.expectRevert(
            abi.encodeWithSelector(
                IEntryPoint.FailedOpWithRevert.selector,
                0,
                "AA33 reverted",
                abi.encodeWithSelector(VerifyingPaymaster.CostAboveSignedMaximum.selector, cap, cap - 1)
            )
        );
        bundleAsAttacker(op);
    }

    // ------------------------------------------------------------------ 2. pre-funded account drain

    /// @notice An allowlisted, deployed, not yet registered account, and the attacker's bootstrap
    ///         for it: a well-formed chain under the attacker's own KMS root (right app id, right
    ///         binding, owner purpose), no paymaster, high fees, signed by the attacker's derived key.
    function outsiderBootstrap(Node memory victim) internal returns (PackedUserOperation memory op) {
        Node memory forged = victim;
        forged.appKey = ATTACKER_APP_KEY;
        forged.derivedKey = ATTACKER_DERIVED_KEY;
        bytes32 digest = RegistrationDigest.compute(block.chainid, cluster, victim.account, victim.keys);
        DstackProof memory p = chainedProof(forged, digest, OWNER_PURPOSE, ATTACKER_KMS_ROOT_KEY);
        op = baseOp(victim.account, abi.encodeCall(IMemberAccount.register, (p, victim.keys)));
        op.preVerificationGas = 2_500_000;
        op.gasFees = bytes32((uint256(190 gwei) << 128) | uint256(190 gwei));
        signOp(op, ATTACKER_DERIVED_KEY);
    }

    /// @notice Validation alone cannot tell the forged chain from a real one (the KMS-root
    ///         allowlist is another contract's storage, out of reach under ERC-7562); the sponsor
    ///         refuses it; so only the "register must be sponsored" rule keeps it from paying.
    function test_accountDrain_theForgedBootstrapIsOtherwiseValid() public {
        Node memory victim = addNode("victim");
        PackedUserOperation memory op = outsiderBootstrap(victim);
        (bool sponsorable, string memory reason) =
            ISponsorshipFacet(cluster).checkSponsorship(victim.account, op.callData);
        vm.assertFalse(sponsorable, "no sponsor signs it");
        vm.assertEq(reason, "KMS root is not allowlisted", "reason");

        op.paymasterAndData = abi.encodePacked(address(paymaster), uint128(200_000), uint128(0));
        signOp(op, ATTACKER_DERIVED_KEY);
        bytes32 hash = entryPoint.getUserOpHash(op);
        vm.prank(address(entryPoint));
        uint256 validationData = MemberAccount(payable(victim.account)).validateUserOp(op, hash, 0);
        vm.assertEq(validationData, 0, "the account's validation accepts the forged chain");
    }

    /// @notice The attack on an account pre-funded with ETH: the account refuses to pay the
    ///         prefund (AA21), the bundle reverts, the account keeps all of its ETH and stays free
    ///         for its real node to register.
    function test_accountDrain_prefundedEthIsNotSpentByAnOutsider() public {
        Node memory victim = addNode("victim");
        vm.deal(victim.account, 1 ether);
        PackedUserOperation memory op = outsiderBootstrap(victim);
        vm.assertLe(maxCostOf(op), 1 ether, "the prefund fits the account's balance");
        vm.assertGt(maxCostOf(op), 0.9 ether, "and would take most of it");

        for (uint256 round = 0; round < 2; ++round) {
            vm.expectRevert(
                abi.encodeWithSelector(IEntryPoint.FailedOp.selector, 0, "AA21 didn't pay prefund")
            );
            bundleAsAttacker(op);
        }

        vm.assertEq(victim.account.balance, 1 ether, "the account's ETH is untouched");
        vm.assertEq(entryPoint.balanceOf(victim.account), 0, "no deposit was made from it");
        vm.assertEq(attacker.balance, 0, "the attacker gained nothing");
        vm.assertEq(IMemberAccount(victim.account).owner(), address(0), "still unregistered");
        handle(registerOp(victim));
        vm.assertEq(IMemberAccount(victim.account).owner(), vm.addr(victim.derivedKey), "its node registers");
        vm.assertEq(victim.account.balance, 1 ether, "sponsored: the account's ETH still untouched");
    }

    /// @notice The same attack on an account whose EntryPoint deposit covers the prefund (so the
    ///         EntryPoint asks for no missing funds): refused as a signature failure (AA24), the
    ///         deposit untouched.
    function test_accountDrain_depositIsNotSpentByAnOutsider() public {
        Node memory victim = addNode("victim");
        entryPoint.depositTo{value: 1 ether}(victim.account);
        PackedUserOperation memory op = outsiderBootstrap(victim);
        vm.expectRevert(abi.encodeWithSelector(IEntryPoint.FailedOp.selector, 0, "AA24 signature error"));
        bundleAsAttacker(op);
        vm.assertEq(entryPoint.balanceOf(victim.account), 1 ether, "deposit untouched");
        vm.assertEq(attacker.balance, 0, "the attacker gained nothing");
    }

    /// @notice Only the registered owner withdraws a deposit: the attacker's signed withdrawal is a
    ///         signature failure, a direct call is refused, the policy never sponsors one.
    function test_accountDrain_outsiderCannotWithdrawTheDeposit() public {
        entryPoint.depositTo{value: 1 ether}(a.account);
        bytes memory withdraw = abi.encodeCall(IMemberAccount.withdrawDepositTo, (attacker, 0.9 ether));
        PackedUserOperation memory op = baseOp(a.account, withdraw);
        signOp(op, ATTACKER_DERIVED_KEY);
        vm.expectRevert(abi.encodeWithSelector(IEntryPoint.FailedOp.selector, 0, "AA24 signature error"));
        bundleAsAttacker(op);

        vm.expectRevert(abi.encodeWithSelector(IMemberAccount.OnlyEntryPoint.selector, attacker));
        vm.prank(attacker);
        IMemberAccount(a.account).withdrawDepositTo(attacker, 0.9 ether);

        (bool sponsorable,) = ISponsorshipFacet(cluster).checkSponsorship(a.account, withdraw);
        vm.assertFalse(sponsorable, "never sponsored");
        vm.assertEq(entryPoint.balanceOf(a.account), 1 ether, "deposit untouched");
        vm.assertEq(attacker.balance, 0, "the attacker gained nothing");

        // The owner can.
        op = baseOp(a.account, abi.encodeCall(IMemberAccount.withdrawDepositTo, (attacker, 0.5 ether)));
        signOp(op, a.derivedKey);
        handle(op);
        vm.assertEq(attacker.balance, 0.5 ether, "the owner sent it where it chose");
    }
}
