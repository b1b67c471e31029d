// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {DstackProof, NodeKeys} from "../contracts/lib/ClusterTypes.sol";
import {DstackProofLib, ProofStatus} from "../contracts/lib/DstackProofLib.sol";
import {Secp256k1} from "../contracts/lib/Secp256k1.sol";
import {Signatures} from "../contracts/lib/Signatures.sol";
import {IRegistrationFacet} from "../contracts/registration/IRegistrationFacet.sol";
import {ClusterFixture} from "./utils/ClusterFixture.sol";

/// @notice The dstack signature chain verifier, against dstack's real format and vector.
contract DstackProofTest is ClusterFixture {
    string internal constant VECTOR = "test/vectors/dstack-getkey-simulator.json";

    function setUp() public {
        setUpCluster();
    }

    /// @notice The shared vector: a real KMS-root signature and app key from dstack's simulator.
    function vectorProof() internal view returns (DstackProof memory p, address derived, address kmsRoot) {
        string memory json = vm.readFile(VECTOR);
        uint256 derivedKey = uint256(vm.parseJsonBytes32(json, ".response.key"));
        p.appId = vm.parseJsonAddress(json, ".expect.app_id");
        p.messageHash = keccak256("any message the derived key signs");
        p.messageSignature = signEth(derivedKey, Signatures.ethSignedHash(p.messageHash));
        p.appSignature = vm.parseJsonBytes(json, ".response.signature_chain[0]");
        p.kmsSignature = vm.parseJsonBytes(json, ".response.signature_chain[1]");
        p.derivedPublicKey = vm.parseJsonBytes(json, ".expect.derived_pubkey_compressed");
        p.appPublicKey = vm.parseJsonBytes(json, ".expect.app_pubkey_compressed");
        p.purpose = vm.parseJsonString(json, ".request.purpose");
        derived = vm.parseJsonAddress(json, ".expect.derived_address");
        kmsRoot = vm.parseJsonAddress(json, ".expect.kms_root_address");
    }

    /// @notice The vector's chain verifies (DstackProofLib, the code validation and the diamond
    ///         share); the diamond then refuses it for its GetKey purpose, "test-purpose", which is
    ///         not the owner-key purpose a registration needs.
    function test_verifyDstackProof_realVectorWithRecoveryIds01() public {
        (DstackProof memory p, address derived, address kmsRoot) = vectorProof();
        vm.assertEq(uint8(p.kmsSignature[64]), 0, "the vector is in dstack's v in {0,1} form");
        _assertChainVerifies(p, derived, kmsRoot);
        vm.expectRevert(
            abi.encodeWithSelector(IRegistrationFacet.ProofPurposeMismatch.selector, "test-purpose")
        );
        IRegistrationFacet(cluster).verifyDstackProof(p);
    }

    /// @notice Field note 3: the same chain with v normalized to {27,28} verifies identically.
    function test_verifyDstackProof_realVectorWithRecoveryIds2728() public {
        (DstackProof memory p, address derived, address kmsRoot) = vectorProof();
        p.appSignature[64] = bytes1(uint8(p.appSignature[64]) + 27);
        p.kmsSignature[64] = bytes1(uint8(p.kmsSignature[64]) + 27);
        _assertChainVerifies(p, derived, kmsRoot);
        vm.expectRevert(
            abi.encodeWithSelector(IRegistrationFacet.ProofPurposeMismatch.selector, "test-purpose")
        );
        IRegistrationFacet(cluster).verifyDstackProof(p);
    }

    /// @notice A chain the KMS issued for another purpose verifies as a chain but is no owner key.
    function test_RevertWhen_verifyDstackProof_otherPurpose() public {
        Node memory n = addNode("node-a");
        DstackProof memory p = chainedProof(n, keccak256("m"), "attestmesh-identity", KMS_ROOT_KEY);
        _assertChainVerifies(p, vm.addr(n.derivedKey), vm.addr(KMS_ROOT_KEY));
        vm.expectRevert(
            abi.encodeWithSelector(IRegistrationFacet.ProofPurposeMismatch.selector, "attestmesh-identity")
        );
        IRegistrationFacet(cluster).verifyDstackProof(p);
    }

    function _assertChainVerifies(DstackProof memory p, address derived, address kmsRoot) private view {
        (ProofStatus status, address gotDerived, address gotRoot) = DstackProofLib.check(p);
        vm.assertEq(uint256(status), uint256(ProofStatus.Valid), "chain verifies");
        vm.assertEq(gotDerived, derived, "derived signer");
        vm.assertEq(gotRoot, kmsRoot, "kms root");
    }

    function test_decompress_realVectorKeysMatchTheirAddresses() public view {
        string memory json = vm.readFile(VECTOR);
        (bool ok, address a) =
            Secp256k1.tryToAddress(vm.parseJsonBytes(json, ".expect.app_pubkey_compressed"));
        vm.assertTrue(ok, "app key decompresses");
        vm.assertEq(a, vm.parseJsonAddress(json, ".expect.app_address"), "app address");
        (ok, a) = Secp256k1.tryToAddress(vm.parseJsonBytes(json, ".expect.kms_root_pubkey_compressed"));
        vm.assertTrue(ok, "kms root key decompresses");
        vm.assertEq(a, vm.parseJsonAddress(json, ".expect.kms_root_address"), "kms root address");
    }

    function test_decompress_rejectsMalformedKeys() public view {
        bytes memory key = hex"02c1082e78670feed1c847db81dbd71be37e4d53200a746c0a89f0afa8173cf566";
        (bool ok,) = Secp256k1.tryToAddress(key);
        vm.assertTrue(ok, "valid key");
        key[0] = 0x04;
        (ok,) = Secp256k1.tryToAddress(key);
        vm.assertFalse(ok, "wrong prefix");
        (ok,) = Secp256k1.tryToAddress(hex"02c1082e");
        vm.assertFalse(ok, "wrong length");
        // x = 5 has no y on secp256k1 (5^3 + 7 = 132 is not a square mod p).
        (ok,) = Secp256k1.tryToAddress(abi.encodePacked(uint8(2), uint256(5)));
        vm.assertFalse(ok, "x not on the curve");
        (ok,) = Secp256k1.tryToAddress(abi.encodePacked(uint8(2), Secp256k1.P));
        vm.assertFalse(ok, "x not below p");
    }

    function test_RevertWhen_verifyDstackProof_highS() public {
        (DstackProof memory p,,) = vectorProof();
        // Flip s to n - s and the recovery id: the same signature in its malleable high-s form.
        uint256 n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
        bytes memory sig = p.kmsSignature;
        uint256 s;
        assembly {
            s := mload(add(sig, 64))
        }
        uint256 highS = n - s;
        assembly {
            mstore(add(sig, 64), highS)
        }
        sig[64] = bytes1(uint8(sig[64]) ^ 1);
        vm.expectRevert(
            abi.encodeWithSelector(
                IRegistrationFacet.InvalidDstackProof.selector, ProofStatus.KmsSignatureInvalid
            )
        );
        IRegistrationFacet(cluster).verifyDstackProof(p);
    }

    function test_RevertWhen_verifyDstackProof_badRecoveryId() public {
        (DstackProof memory p,,) = vectorProof();
        p.appSignature[64] = bytes1(uint8(2));
        vm.expectRevert(
            abi.encodeWithSelector(
                IRegistrationFacet.InvalidDstackProof.selector, ProofStatus.AppSignatureInvalid
            )
        );
        IRegistrationFacet(cluster).verifyDstackProof(p);
    }

    function test_RevertWhen_verifyDstackProof_eachLinkBroken() public {
        Node memory n = addNode("node-a");
        DstackProof memory p = proofFor(n);

        DstackProof memory bad = proofFor(n);
        bad.derivedPublicKey = hex"02";
        _expectStatus(bad, ProofStatus.DerivedKeyMalformed);

        bad = proofFor(n);
        bad.appPublicKey = abi.encodePacked(uint8(2), uint256(5));
        _expectStatus(bad, ProofStatus.AppKeyMalformed);

        bad = proofFor(n);
        bad.messageHash = keccak256("another message");
        _expectStatus(bad, ProofStatus.MessageSignatureInvalid);

        bad = proofFor(n);
        bad.purpose = "another-purpose";
        _expectStatus(bad, ProofStatus.AppSignatureInvalid);

        bad = proofFor(n);
        bad.kmsSignature = hex"00";
        _expectStatus(bad, ProofStatus.KmsSignatureInvalid);

        // The untouched proof still verifies, to the node's derived key and the devnet KMS root.
        (address derived, address root) = IRegistrationFacet(cluster).verifyDstackProof(p);
        vm.assertEq(derived, vm.addr(n.derivedKey), "derived");
        vm.assertEq(root, vm.addr(KMS_ROOT_KEY), "root");
    }

    /// @notice Any change to any byte of a valid proof is rejected (or, for the app id, changes
    ///         the KMS root it proves, which the allowlist then refuses).
    /// forge-config: default.fuzz.runs = 1024
    function testFuzz_verifyDstackProof_anyByteFlipRejected(
        uint256 fieldSeed,
        uint256 indexSeed,
        uint8 xorMask
    ) public {
        vm.assume(xorMask != 0);
        Node memory n = addNode("node-fuzz");
        DstackProof memory p = proofFor(n);
        address root = vm.addr(KMS_ROOT_KEY);
        uint256 field = bound(fieldSeed, 0, 6);
        // A signature's v byte moved between {0,1} and {27,28} is the same signature (field note
        // 3): the proof must still verify to the real root.
        bool sameSignature;
        if (field == 0) {
            p.messageHash ^= bytes32(uint256(xorMask) << (8 * bound(indexSeed, 0, 31)));
        } else if (field == 1) {
            sameSignature = _flip(p.messageSignature, indexSeed, xorMask);
        } else if (field == 2) {
            sameSignature = _flip(p.appSignature, indexSeed, xorMask);
        } else if (field == 3) {
            sameSignature = _flip(p.kmsSignature, indexSeed, xorMask);
        } else if (field == 4) {
            _flip(p.derivedPublicKey, indexSeed, xorMask);
        } else if (field == 5) {
            _flip(p.appPublicKey, indexSeed, xorMask);
        } else {
            bytes memory purpose = bytes(p.purpose);
            _flip(purpose, indexSeed, xorMask);
            p.purpose = string(purpose);
        }
        if (sameSignature) {
            (, address sameRoot) = IRegistrationFacet(cluster).verifyDstackProof(p);
            vm.assertEq(sameRoot, root, "v in {27,28} is the same signature as v in {0,1}");
            return;
        }
        try IRegistrationFacet(cluster).verifyDstackProof(p) returns (address, address gotRoot) {
            // A flip in the KMS signature can still recover *some* key, never the real root.
            vm.assertTrue(field == 3 && gotRoot != root, "a tampered proof verified to the real root");
        } catch (bytes memory reason) {
            vm.assertEq(
                bytes4(reason), IRegistrationFacet.InvalidDstackProof.selector, "rejected as invalid proof"
            );
        }
    }

    /// @notice The oracle's blind spot, pinned: the v flips that keep the signature the same.
    function test_verifyDstackProof_vMovedTo27Or28IsTheSameSignature() public {
        Node memory n = addNode("node-v");
        DstackProof memory p = proofFor(n);
        uint8 v = uint8(p.messageSignature[64]);
        // 0 <-> 27 and 1 <-> 28 (xor 0x1b / 0x1d from {0,1}): the masks the fuzzer would have to draw.
        p.messageSignature[64] = bytes1(v < 27 ? v + 27 : v - 27);
        (, address gotRoot) = IRegistrationFacet(cluster).verifyDstackProof(p);
        vm.assertEq(gotRoot, vm.addr(KMS_ROOT_KEY), "same signature, same root");
    }

    /// @notice Changing the app id keeps the signatures but moves the KMS root they prove. The
    ///         chain still verifies (to the same derived key); only a recovery failure may revert,
    ///         and then as an invalid KMS signature, not with any error at all.
    /// forge-config: default.fuzz.runs = 1024
    function testFuzz_verifyDstackProof_otherAppIdNeverYieldsTheRoot(address otherAppId) public {
        Node memory n = addNode("node-appid");
        vm.assume(otherAppId != n.account); // the same app id is the untouched proof (pinned below)
        DstackProof memory p = proofFor(n);
        p.appId = otherAppId;
        try IRegistrationFacet(cluster).verifyDstackProof(p) returns (address derived, address gotRoot) {
            vm.assertEq(derived, vm.addr(n.derivedKey), "the derived key is not what the app id moves");
            vm.assertNotEq(gotRoot, vm.addr(KMS_ROOT_KEY), "app id is bound by the KMS signature");
        } catch (bytes memory reason) {
            vm.assertEq(
                reason,
                abi.encodeWithSelector(
                    IRegistrationFacet.InvalidDstackProof.selector, ProofStatus.KmsSignatureInvalid
                ),
                "only the KMS signature can fail to recover"
            );
        }
    }

    /// @notice The fuzz test's edges, pinned: the proof's own app id proves the real root, and
    ///         another app id verifies (no revert: the catch above is not where it passes) to
    ///         another root.
    function test_verifyDstackProof_appIdIsBoundByTheKmsSignature() public {
        Node memory n = addNode("node-appid");
        DstackProof memory p = proofFor(n);
        (address derived, address root) = IRegistrationFacet(cluster).verifyDstackProof(p);
        vm.assertEq(derived, vm.addr(n.derivedKey), "derived");
        vm.assertEq(root, vm.addr(KMS_ROOT_KEY), "its own app id proves the real root");

        p.appId = address(uint160(n.account) ^ 1);
        (derived, root) = IRegistrationFacet(cluster).verifyDstackProof(p);
        vm.assertEq(derived, vm.addr(n.derivedKey), "same derived key");
        vm.assertNotEq(root, vm.addr(KMS_ROOT_KEY), "another app id proves another root");
        vm.assertNotEq(root, address(0), "a root, not a failed recovery");
    }

    function _expectStatus(DstackProof memory p, ProofStatus status) private {
        vm.expectRevert(abi.encodeWithSelector(IRegistrationFacet.InvalidDstackProof.selector, status));
        IRegistrationFacet(cluster).verifyDstackProof(p);
    }

    /// @return sameSignature True when the flip only moved a 65-byte signature's v between {0,1}
    ///         and {27,28} (the same signature).
    function _flip(bytes memory data, uint256 indexSeed, uint8 xorMask)
        private
        pure
        returns (bool sameSignature)
    {
        uint256 i = bound(indexSeed, 0, data.length - 1);
        uint8 before = uint8(data[i]);
        data[i] = bytes1(before ^ xorMask);
        uint8 afterFlip = uint8(data[i]);
        sameSignature = data.length == 65 && i == 64
            && ((before < 2 && afterFlip == before + 27)
                || (before >= 27 && before <= 28 && afterFlip == before - 27));
    }
}
