// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IEntryPoint} from "@account-abstraction/contracts/interfaces/IEntryPoint.sol";
import {PackedUserOperation} from "@account-abstraction/contracts/interfaces/PackedUserOperation.sol";
import {IMemberAccount} from "../../contracts/account/IMemberAccount.sol";
import {DiamondCutFacet} from "../../contracts/diamond/DiamondCutFacet.sol";
import {DiamondLoupeFacet} from "../../contracts/diamond/DiamondLoupeFacet.sol";
import {OwnershipFacet} from "../../contracts/diamond/OwnershipFacet.sol";
import {ClusterFacets} from "../../contracts/factory/ClusterFacets.sol";
import {ClusterFactory} from "../../contracts/factory/ClusterFactory.sol";
import {ClusterInit} from "../../contracts/factory/ClusterInit.sol";
import {IndexerRegistry} from "../../contracts/indexer/IndexerRegistry.sol";
import {ClusterConfig, DstackProof, NodeKeys} from "../../contracts/lib/ClusterTypes.sol";
import {DstackProofLib} from "../../contracts/lib/DstackProofLib.sol";
import {RegistrationDigest} from "../../contracts/lib/RegistrationDigest.sol";
import {Signatures} from "../../contracts/lib/Signatures.sol";
import {MemberFacet} from "../../contracts/member/MemberFacet.sol";
import {MessageFacet} from "../../contracts/message/MessageFacet.sol";
import {VerifyingPaymaster} from "../../contracts/paymaster/VerifyingPaymaster.sol";
import {RegistrationFacet} from "../../contracts/registration/RegistrationFacet.sol";
import {SponsorshipFacet} from "../../contracts/sponsorship/SponsorshipFacet.sol";
import {Test} from "./Test.sol";
import {Vm} from "./Vm.sol";

/// @notice Deploys the real EntryPoint v0.7 (npm bytecode, canonical address), the factory with
///         every facet, one cluster, and simulated dstack nodes that sign real signature chains.
abstract contract ClusterFixture is Test {
    address internal constant ENTRY_POINT = 0x0000000071727De22E5E9d8BAf0edAc6f37da032;
    address internal constant CREATE2_DEPLOYER = 0x4e59b44847b379578588920cA78FbF26c0B4956C;
    bytes32 internal constant ENTRY_POINT_SALT =
        0x90d8084deab30c2a37c45e8d47f49f2f7965183cb6990a98943ef94940681de3;
    string internal constant ENTRY_POINT_ARTIFACT =
        "node_modules/@account-abstraction/contracts/artifacts/EntryPoint.json";
    string internal constant OWNER_PURPOSE = "attestmesh-owner";
    uint32 internal constant MESH_NETWORK = 0x0a580000; // 10.88.0.0
    uint8 internal constant MESH_PREFIX = 16;
    bytes32 internal constant COMPOSE_HASH = keccak256("attestmesh-compose");

    uint256 internal constant KMS_ROOT_KEY = uint256(keccak256("attestmesh.test.kms-root"));
    uint256 internal constant SPONSOR_KEY = uint256(keccak256("attestmesh.test.sponsor"));

    /// @notice A simulated dstack node: its account (app id), app key, derived owner key and keys.
    struct Node {
        string name;
        bytes32 salt;
        address account;
        uint256 appKey;
        uint256 derivedKey;
        NodeKeys keys;
    }

    address internal operator = address(0x0FE7A70);
    address internal bundler = address(0xB0B);
    IEntryPoint internal entryPoint;
    ClusterFactory internal factory;
    IndexerRegistry internal indexerRegistry;
    VerifyingPaymaster internal paymaster;
    address internal cluster;

    function setUpCluster() internal {
        entryPoint = deployEntryPoint();
        indexerRegistry = new IndexerRegistry(operator);
        factory = deployFactory(entryPoint, address(indexerRegistry));
        cluster = createCluster(bytes32("cluster-1"));
        paymaster = new VerifyingPaymaster(entryPoint, operator, vm.addr(SPONSOR_KEY));
        vm.deal(operator, 100 ether);
        vm.prank(operator);
        paymaster.deposit{value: 10 ether}();
    }

    /// @notice Puts the npm EntryPoint v0.7 bytecode at its canonical address through the
    ///         deterministic deployer, exactly as on Base.
    function deployEntryPoint() internal returns (IEntryPoint) {
        if (ENTRY_POINT.code.length == 0) {
            bytes memory initCode = vm.parseJsonBytes(vm.readFile(ENTRY_POINT_ARTIFACT), ".bytecode");
            (bool ok,) = CREATE2_DEPLOYER.call(abi.encodePacked(ENTRY_POINT_SALT, initCode));
            require(
                ok && ENTRY_POINT.code.length > 0, "EntryPoint v0.7 did not land at its canonical address"
            );
        }
        vm.label(ENTRY_POINT, "EntryPoint");
        return IEntryPoint(ENTRY_POINT);
    }

    function deployFacets() internal returns (ClusterFacets.Addresses memory facets) {
        facets.diamondCut = address(new DiamondCutFacet());
        facets.diamondLoupe = address(new DiamondLoupeFacet());
        facets.ownership = address(new OwnershipFacet());
        facets.member = address(new MemberFacet());
        facets.registration = address(new RegistrationFacet());
        facets.message = address(new MessageFacet());
        facets.sponsorship = address(new SponsorshipFacet());
    }

    function deployFactory(IEntryPoint ep, address registry) internal returns (ClusterFactory) {
        return new ClusterFactory(ep, registry, deployFacets(), address(new ClusterInit()));
    }

    function defaultConfig() internal view returns (ClusterConfig memory config) {
        config.owner = operator;
        config.meshNetwork = MESH_NETWORK;
        config.meshPrefixLength = MESH_PREFIX;
        config.kmsRoots = new address[](1);
        config.kmsRoots[0] = vm.addr(KMS_ROOT_KEY);
        config.composeHashes = new bytes32[](1);
        config.composeHashes[0] = COMPOSE_HASH;
        // "Any device" is an explicit opt-in; the fixture's cluster allowlists devices instead.
        config.allowAnyDevice = false;
    }

    function createCluster(bytes32 salt) internal returns (address) {
        vm.prank(operator);
        return factory.createCluster(salt, defaultConfig());
    }

    /// @notice A node whose keys all derive from its name; its account is predicted, not deployed.
    function makeNode(string memory name) internal view returns (Node memory n) {
        n.name = name;
        n.salt = keccak256(bytes(name));
        n.account = factory.predictMemberAccount(cluster, n.salt);
        n.appKey = _key("app", name);
        n.derivedKey = _key("derived", name);
        n.keys = NodeKeys({
            x25519: keccak256(abi.encode("x25519", name)),
            ed25519: keccak256(abi.encode("ed25519", name)),
            wireguard: keccak256(abi.encode("wireguard", name))
        });
    }

    /// @notice makeNode + the operator allowlists its account + the account is deployed.
    function addNode(string memory name) internal returns (Node memory n) {
        n = makeNode(name);
        vm.prank(operator);
        RegistrationFacet(cluster).setAppIdAllowed(n.account, true);
        factory.createMemberAccount(cluster, n.salt);
    }

    /// @notice The dstack GetKey reply for the node's owner key, plus its signature of the binding.
    function proofFor(Node memory n) internal returns (DstackProof memory p) {
        bytes32 digest = RegistrationDigest.compute(block.chainid, cluster, n.account, n.keys);
        return proofOver(n, digest);
    }

    function proofOver(Node memory n, bytes32 messageHash) internal returns (DstackProof memory p) {
        return chainedProof(n, messageHash, OWNER_PURPOSE, KMS_ROOT_KEY);
    }

    /// @notice A well-formed GetKey signature chain for any purpose, issued by any KMS root.
    function chainedProof(Node memory n, bytes32 messageHash, string memory purpose, uint256 kmsRootKey)
        internal
        returns (DstackProof memory p)
    {
        p.appId = n.account;
        p.messageHash = messageHash;
        p.derivedPublicKey = compressedKey(n.derivedKey);
        p.appPublicKey = compressedKey(n.appKey);
        p.purpose = purpose;
        p.messageSignature = signEth(n.derivedKey, Signatures.ethSignedHash(messageHash));
        p.appSignature = signDstack(n.appKey, DstackProofLib.appMessage(p.purpose, p.derivedPublicKey));
        p.kmsSignature = signDstack(kmsRootKey, DstackProofLib.kmsMessage(n.account, p.appPublicKey));
    }

    /// @notice Registers `n` directly (the account calling the diamond), bypassing the EntryPoint.
    function registerDirect(Node memory n) internal returns (uint64 memberId) {
        DstackProof memory p = proofFor(n);
        vm.prank(n.account);
        (memberId,) = RegistrationFacet(cluster).dstack_register(p, n.keys);
    }

    function compressedKey(uint256 privateKey) internal returns (bytes memory) {
        Vm.Wallet memory w = vm.createWallet(privateKey);
        return abi.encodePacked(uint8(w.publicKeyY & 1 == 1 ? 3 : 2), bytes32(w.publicKeyX));
    }

    /// @notice r||s||v with v in {27,28}, as Ethereum tooling signs.
    function signEth(uint256 privateKey, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(privateKey, digest);
        return abi.encodePacked(r, s, v);
    }

    /// @notice r||s||v with v in {0,1}, as the dstack KMS signs (field note 3).
    function signDstack(uint256 privateKey, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(privateKey, digest);
        return abi.encodePacked(r, s, v - 27);
    }

    // ---------------------------------------------------------------- UserOperations

    function baseOp(address sender, bytes memory callData)
        internal
        view
        returns (PackedUserOperation memory op)
    {
        op.sender = sender;
        op.nonce = entryPoint.getNonce(sender, 0);
        op.callData = callData;
        // Verification covers deploying the account through initCode (~7.3 kB of code at 200 gas a byte).
        op.accountGasLimits = bytes32((uint256(2_000_000) << 128) | uint256(500_000));
        op.preVerificationGas = 60_000;
        op.gasFees = bytes32((uint256(1 gwei) << 128) | uint256(2 gwei));
    }

    /// @notice Adds sponsor-signed paymaster data (the gas manager's job off chain): valid for an
    ///         hour, capped at exactly the operation's maximum cost.
    function sponsor(PackedUserOperation memory op) internal view {
        op.paymasterAndData = abi.encodePacked(address(paymaster), uint128(200_000), uint128(0));
        sponsorWith(op, SPONSOR_KEY, uint48(block.timestamp + 1 hours), 0, maxCostOf(op));
    }

    /// @notice Signs paymaster data for `op` with `key`, a window and a maximum cost, keeping the
    ///         paymaster gas limits already in op.paymasterAndData[20:52] (200k / 0 when absent).
    function sponsorWith(
        PackedUserOperation memory op,
        uint256 key,
        uint48 validUntil,
        uint48 validAfter,
        uint256 maxCost
    ) internal view {
        bytes memory head = op.paymasterAndData.length >= 52
            ? _slice(op.paymasterAndData, 0, 52)
            : abi.encodePacked(address(paymaster), uint128(200_000), uint128(0));
        op.paymasterAndData = abi.encodePacked(head, abi.encode(validUntil, validAfter, maxCost));
        bytes32 hash = this.paymasterHash(op, validUntil, validAfter, maxCost);
        op.paymasterAndData =
            abi.encodePacked(op.paymasterAndData, signEth(key, Signatures.ethSignedHash(hash)));
    }

    /// @notice What EntryPoint v0.7 hands the paymaster as the operation's maximum cost (its
    ///         required prefund): verification + call + paymaster verification + postOp gas limits
    ///         + preVerificationGas, times maxFeePerGas. A gas manager signs this (from the gas
    ///         fields it chose) as maxCost.
    function maxCostOf(PackedUserOperation memory op) internal pure returns (uint256) {
        uint256 limits = uint256(op.accountGasLimits);
        // verificationGasLimit (high 128 bits) + callGasLimit (low 128 bits).
        uint256 gas = (limits >> 128) + (limits & type(uint128).max) + op.preVerificationGas;
        bytes memory pm = op.paymasterAndData;
        if (pm.length >= 52) {
            uint256 pmVerification;
            uint256 pmPostOp;
            assembly ("memory-safe") {
                pmVerification := shr(128, mload(add(pm, 52)))
                pmPostOp := shr(128, mload(add(pm, 68)))
            }
            gas += pmVerification + pmPostOp;
        }
        // maxFeePerGas is the low 128 bits of gasFees.
        return gas * (uint256(op.gasFees) & type(uint128).max);
    }

    /// @dev External so the memory op can be passed as calldata to getHash.
    function paymasterHash(
        PackedUserOperation calldata op,
        uint48 validUntil,
        uint48 validAfter,
        uint256 maxCost
    ) external view returns (bytes32) {
        return paymaster.getHash(op, validUntil, validAfter, maxCost);
    }

    function _slice(bytes memory data, uint256 from, uint256 to) private pure returns (bytes memory out) {
        out = new bytes(to - from);
        for (uint256 i = from; i < to; ++i) {
            out[i - from] = data[i];
        }
    }

    function signOp(PackedUserOperation memory op, uint256 key) internal view {
        op.signature = signEth(key, Signatures.ethSignedHash(entryPoint.getUserOpHash(op)));
    }

    function registerOp(Node memory n) internal returns (PackedUserOperation memory op) {
        op = baseOp(n.account, abi.encodeCall(IMemberAccount.register, (proofFor(n), n.keys)));
        sponsor(op);
        signOp(op, n.derivedKey);
    }

    function executeOp(Node memory n, bytes memory data)
        internal
        view
        returns (PackedUserOperation memory op)
    {
        op = baseOp(n.account, abi.encodeCall(IMemberAccount.execute, (data)));
        sponsor(op);
        signOp(op, n.derivedKey);
    }

    function executeBatchOp(Node memory n, bytes[] memory calls)
        internal
        view
        returns (PackedUserOperation memory op)
    {
        op = baseOp(n.account, abi.encodeCall(IMemberAccount.executeBatch, (calls)));
        sponsor(op);
        signOp(op, n.derivedKey);
    }

    function handle(PackedUserOperation memory op) internal {
        PackedUserOperation[] memory ops = new PackedUserOperation[](1);
        ops[0] = op;
        vm.prank(bundler, bundler);
        entryPoint.handleOps(ops, payable(bundler));
    }

    function _key(string memory kind, string memory name) private pure returns (uint256) {
        // Any value below the curve order works; keccak output is below it with overwhelming odds.
        return uint256(keccak256(abi.encode("attestmesh.test", kind, name))) % (type(uint256).max / 2) + 1;
    }

    /// @notice A deep copy of `op`, so a change to the copy leaves the original as signed.
    function copyOp(PackedUserOperation memory op) internal pure returns (PackedUserOperation memory) {
        return abi.decode(abi.encode(op), (PackedUserOperation));
    }
}
