// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IEntryPointSimulations} from "@account-abstraction/contracts/interfaces/IEntryPointSimulations.sol";
import {PackedUserOperation} from "@account-abstraction/contracts/interfaces/PackedUserOperation.sol";
import {MemberAccount} from "../contracts/account/MemberAccount.sol";
import {IMemberAccount} from "../contracts/account/IMemberAccount.sol";
import {ClusterFactory} from "../contracts/factory/ClusterFactory.sol";
import {Signatures} from "../contracts/lib/Signatures.sol";
import {IMessageFacet} from "../contracts/message/IMessageFacet.sol";
import {RegistrationFacet} from "../contracts/registration/RegistrationFacet.sol";
import {ClusterFixture} from "./utils/ClusterFixture.sol";

/// @notice Field note 2: the placeholder signature the agent sends for gas estimation
///         (chain/src/userop.rs DUMMY_SIGNATURE, shared through test/vectors/dummy-signature.json)
///         must make the account's validation do the work a real signature does: ecrecover
///         recovers an address (r is a curve point), the account reports a signature failure
///         instead of reverting, and validation costs what it costs with the owner's signature.
contract DummySignatureTest is ClusterFixture {
    string internal constant VECTOR = "test/vectors/dummy-signature.json";
    string internal constant SIMULATIONS_ARTIFACT =
        "node_modules/@account-abstraction/contracts/artifacts/EntryPointSimulations.json";
    /// @dev How far validation with the dummy may be from validation with a real signature.
    uint256 internal constant GAS_TOLERANCE = 200;
    uint256 internal constant SIG_VALIDATION_FAILED = 1;

    function setUp() public {
        setUpCluster();
    }

    function dummySignature() internal view returns (bytes memory sig) {
        sig = vm.parseJsonBytes(vm.readFile(VECTOR), ".signature");
        vm.assertEq(sig.length, 65, "r || s || v");
    }

    function test_dummySignature_ecrecoverReturnsAnAddressForAnyDigest() public view {
        bytes memory sig = dummySignature();
        bytes32 r;
        bytes32 s;
        assembly ("memory-safe") {
            r := mload(add(sig, 32))
            s := mload(add(sig, 64))
        }
        uint8 v = uint8(sig[64]);
        for (uint256 i = 0; i < 16; ++i) {
            bytes32 digest = Signatures.ethSignedHash(keccak256(abi.encode("user op hash", i)));
            // The precompile: only v in {27, 28} and r the x of a curve point recover anything.
            vm.assertNotEq(ecrecover(digest, v, r, s), address(0), "ecrecover of the dummy signature");
            // The account's own path (recovery ids, high-s rejection).
            vm.assertNotEq(Signatures.tryRecover(digest, sig), address(0), "Signatures.tryRecover");
        }
    }

    /// @notice A registered member's operation: validateUserOp as the EntryPoint calls it.
    function test_dummySignature_executeValidationCostsWhatTheOwnersSignatureCosts() public {
        Node memory n = addNode("node-a");
        handle(registerOp(n));
        PackedUserOperation memory op =
            executeOp(n, abi.encodeCall(IMessageFacet.send, (1, bytes32("envelope"), new bytes(256))));
        _assertValidationCostsTheSame(n, op);
    }

    /// @notice The registration operation (the dstack proof is checked in validation).
    function test_dummySignature_registerValidationCostsWhatTheDerivedKeysSignatureCosts() public {
        Node memory n = addNode("node-a");
        _assertValidationCostsTheSame(n, registerOp(n));
    }

    /// @notice The path a bundler estimates with: EntryPointSimulations (put at the EntryPoint's
    ///         address, as bundlers do with a state override) runs the node's first operation,
    ///         which deploys the account through initCode and registers it. The dummy's failed
    ///         signature is reported, not reverted, and validation gas (preOpGas) matches.
    function test_dummySignature_simulateHandleOpMeasuresTheSameValidationGas() public {
        Node memory n = makeNode("node-a");
        vm.prank(operator);
        RegistrationFacet(cluster).setAppIdAllowed(n.account, true);
        PackedUserOperation memory real =
            baseOp(n.account, abi.encodeCall(IMemberAccount.register, (proofFor(n), n.keys)));
        real.initCode = abi.encodePacked(
            address(factory), abi.encodeCall(ClusterFactory.createMemberAccount, (cluster, n.salt))
        );
        sponsor(real);
        signOp(real, n.derivedKey);
        PackedUserOperation memory dummy = _withDummySignature(real);

        IEntryPointSimulations.ExecutionResult memory withReal = _simulate(real);
        IEntryPointSimulations.ExecutionResult memory withDummy = _simulate(dummy);
        vm.assertEq(withReal.accountValidationData, 0, "the real signature validates");
        vm.assertEq(
            withDummy.accountValidationData,
            SIG_VALIDATION_FAILED,
            "the dummy is reported as a failed signature"
        );
        _assertClose(withDummy.preOpGas, withReal.preOpGas, "simulated preOpGas");
        // What the paymaster would pay, in gas (paid is in wei at min(maxFee, basefee + tip)).
        uint256 maxFee = uint256(real.gasFees) & type(uint128).max;
        uint256 tip = uint256(real.gasFees) >> 128;
        uint256 price = maxFee < block.basefee + tip ? maxFee : block.basefee + tip;
        _assertClose(withDummy.paid / price, withReal.paid / price, "simulated actual gas");
    }

    // ------------------------------------------------------------------ helpers

    function _assertValidationCostsTheSame(Node memory n, PackedUserOperation memory real) private {
        (uint256 realGas, uint256 realResult) = _validationGas(n, real);
        (uint256 dummyGas, uint256 dummyResult) = _validationGas(n, _withDummySignature(real));
        vm.assertEq(realResult, 0, "the real signature validates");
        vm.assertEq(dummyResult, SIG_VALIDATION_FAILED, "the dummy is reported as a failed signature");
        _assertClose(dummyGas, realGas, "validateUserOp gas");
    }

    /// @dev Each measurement starts from the same state (same cold and warm slots).
    function _validationGas(Node memory n, PackedUserOperation memory op)
        private
        returns (uint256 gasUsed, uint256 validationData)
    {
        uint256 snapshot = vm.snapshotState();
        bytes32 hash = entryPoint.getUserOpHash(op);
        MemberAccount account = MemberAccount(payable(n.account));
        vm.prank(address(entryPoint));
        uint256 before = gasleft();
        validationData = account.validateUserOp(op, hash, 0);
        gasUsed = before - gasleft();
        vm.revertToState(snapshot);
    }

    function _simulate(PackedUserOperation memory op)
        private
        returns (IEntryPointSimulations.ExecutionResult memory result)
    {
        uint256 snapshot = vm.snapshotState();
        vm.etch(ENTRY_POINT, vm.parseJsonBytes(vm.readFile(SIMULATIONS_ARTIFACT), ".deployedBytecode"));
        vm.prank(bundler, bundler);
        result = IEntryPointSimulations(ENTRY_POINT).simulateHandleOp(op, address(0), "");
        vm.revertToState(snapshot);
    }

    function _withDummySignature(PackedUserOperation memory op)
        private
        view
        returns (PackedUserOperation memory dummy)
    {
        // A copy: assigning the memory struct would alias it and overwrite the real signature too.
        dummy = copyOp(op);
        dummy.signature = dummySignature();
        vm.assertEq(dummy.signature.length, op.signature.length, "the dummy is as long as a real signature");
    }

    function _assertClose(uint256 dummyGas, uint256 realGas, string memory what) private pure {
        uint256 diff = dummyGas > realGas ? dummyGas - realGas : realGas - dummyGas;
        vm.assertLe(diff, GAS_TOLERANCE, what);
    }
}
