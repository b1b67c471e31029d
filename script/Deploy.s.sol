// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IEntryPoint} from "@account-abstraction/contracts/interfaces/IEntryPoint.sol";
import {DiamondCutFacet} from "../contracts/diamond/DiamondCutFacet.sol";
import {DiamondLoupeFacet} from "../contracts/diamond/DiamondLoupeFacet.sol";
import {OwnershipFacet} from "../contracts/diamond/OwnershipFacet.sol";
import {ClusterFacets} from "../contracts/factory/ClusterFacets.sol";
import {ClusterFactory} from "../contracts/factory/ClusterFactory.sol";
import {ClusterInit} from "../contracts/factory/ClusterInit.sol";
import {IndexerRegistry} from "../contracts/indexer/IndexerRegistry.sol";
import {MemberFacet} from "../contracts/member/MemberFacet.sol";
import {MessageFacet} from "../contracts/message/MessageFacet.sol";
import {VerifyingPaymaster} from "../contracts/paymaster/VerifyingPaymaster.sol";
import {RegistrationFacet} from "../contracts/registration/RegistrationFacet.sol";
import {SponsorshipFacet} from "../contracts/sponsorship/SponsorshipFacet.sol";
import {Vm} from "../test/utils/Vm.sol";

/// @title Deploy
/// @notice Deploys the AttestMesh contracts to any chain through the deterministic CREATE2
///         deployer, so addresses depend only on code and constructor arguments. Idempotent: a
///         contract whose address already has code is reused, never redeployed.
/// @dev Environment: OPERATOR (owner of the registry and paymaster; default: the broadcaster),
///      SPONSOR_SIGNER (the paymaster's verifying signer; default: OPERATOR), PAYMASTER_DEPOSIT
///      (wei the paymaster's EntryPoint deposit is topped up to; default 0), DEPLOYMENTS_FILE
///      (default deployments/<chainId>.json).
///      Run: forge script script/Deploy.s.sol --rpc-url $RPC --private-key $KEY --broadcast
contract Deploy {
    Vm internal constant vm = Vm(0x7109709ECfa91a80626fF3989D68f67F5b1DD12D);

    address public constant ENTRY_POINT = 0x0000000071727De22E5E9d8BAf0edAc6f37da032;
    address public constant CREATE2_DEPLOYER = 0x4e59b44847b379578588920cA78FbF26c0B4956C;
    bytes32 public constant SALT = keccak256("attestmesh.deploy.v1");

    /// @notice What a deployment consists of.
    struct Deployment {
        address entryPoint;
        address factory;
        address indexerRegistry;
        address paymaster;
        address clusterInit;
        ClusterFacets.Addresses facets;
        uint256 factoryDeployBlock;
        uint256 deployedCount;
    }

    /// @notice Who owns what.
    struct Config {
        address operator;
        address sponsorSigner;
        uint256 paymasterDeposit;
    }

    /// @notice EntryPoint v0.7 is missing: this chain is not Base or a prepared devnet.
    error EntryPointMissing(address entryPoint);
    /// @notice The deterministic deployer is missing (every anvil and Base have it).
    error Create2DeployerMissing(address deployer);
    /// @notice A CREATE2 deployment failed.
    error DeploymentFailed(string name);

    function run() external returns (Deployment memory deployment) {
        vm.startBroadcast();
        (, address broadcaster,) = vm.readCallers();
        Config memory config;
        config.operator = vm.envOr("OPERATOR", broadcaster);
        config.sponsorSigner = vm.envOr("SPONSOR_SIGNER", config.operator);
        config.paymasterDeposit = vm.envOr("PAYMASTER_DEPOSIT", uint256(0));
        deployment = deploy(config);
        vm.stopBroadcast();
        string memory defaultPath = string.concat("deployments/", vm.toString(block.chainid), ".json");
        write(deployment, vm.envOr("DEPLOYMENTS_FILE", defaultPath));
    }

    /// @notice Deploys (or finds) every contract; the caller controls broadcasting.
    function deploy(Config memory config) public returns (Deployment memory d) {
        if (ENTRY_POINT.code.length == 0) revert EntryPointMissing(ENTRY_POINT);
        if (CREATE2_DEPLOYER.code.length == 0) revert Create2DeployerMissing(CREATE2_DEPLOYER);
        d.entryPoint = ENTRY_POINT;

        uint256 fresh;
        uint256 created;
        (d.facets.diamondCut, created) = _deploy("DiamondCutFacet", type(DiamondCutFacet).creationCode);
        fresh += created;
        (d.facets.diamondLoupe, created) = _deploy("DiamondLoupeFacet", type(DiamondLoupeFacet).creationCode);
        fresh += created;
        (d.facets.ownership, created) = _deploy("OwnershipFacet", type(OwnershipFacet).creationCode);
        fresh += created;
        (d.facets.member, created) = _deploy("MemberFacet", type(MemberFacet).creationCode);
        fresh += created;
        (d.facets.registration, created) = _deploy("RegistrationFacet", type(RegistrationFacet).creationCode);
        fresh += created;
        (d.facets.message, created) = _deploy("MessageFacet", type(MessageFacet).creationCode);
        fresh += created;
        (d.facets.sponsorship, created) = _deploy("SponsorshipFacet", type(SponsorshipFacet).creationCode);
        fresh += created;
        (d.clusterInit, created) = _deploy("ClusterInit", type(ClusterInit).creationCode);
        fresh += created;
        (d.indexerRegistry, created) = _deploy(
            "IndexerRegistry",
            abi.encodePacked(type(IndexerRegistry).creationCode, abi.encode(config.operator))
        );
        fresh += created;
        (d.factory, created) = _deploy(
            "ClusterFactory",
            abi.encodePacked(
                type(ClusterFactory).creationCode,
                abi.encode(IEntryPoint(ENTRY_POINT), d.indexerRegistry, d.facets, d.clusterInit)
            )
        );
        fresh += created;
        (d.paymaster, created) = _deploy(
            "VerifyingPaymaster",
            abi.encodePacked(
                type(VerifyingPaymaster).creationCode,
                abi.encode(IEntryPoint(ENTRY_POINT), config.operator, config.sponsorSigner)
            )
        );
        fresh += created;
        d.deployedCount = fresh;
        d.factoryDeployBlock = ClusterFactory(d.factory).deployBlock();

        uint256 deposit = VerifyingPaymaster(payable(d.paymaster)).getDeposit();
        if (deposit < config.paymasterDeposit) {
            VerifyingPaymaster(payable(d.paymaster)).deposit{value: config.paymasterDeposit - deposit}();
        }
    }

    /// @notice Writes the deployment as JSON (read by the Rust tools and the operator).
    /// @dev The factory's deploy block is not written: forge simulates before it broadcasts, so
    ///      the block seen here is not the block the transaction lands in. The chain's own
    ///      `ClusterFactory.deployBlock()` is the one source of it.
    function write(Deployment memory d, string memory path) public {
        string memory key = "deployment";
        vm.serializeUint(key, "chainId", block.chainid);
        vm.serializeAddress(key, "entryPoint", d.entryPoint);
        vm.serializeAddress(key, "clusterFactory", d.factory);
        vm.serializeAddress(key, "indexerRegistry", d.indexerRegistry);
        vm.serializeAddress(key, "verifyingPaymaster", d.paymaster);
        vm.serializeAddress(key, "clusterInit", d.clusterInit);
        vm.serializeAddress(key, "diamondCutFacet", d.facets.diamondCut);
        vm.serializeAddress(key, "diamondLoupeFacet", d.facets.diamondLoupe);
        vm.serializeAddress(key, "ownershipFacet", d.facets.ownership);
        vm.serializeAddress(key, "memberFacet", d.facets.member);
        vm.serializeAddress(key, "registrationFacet", d.facets.registration);
        vm.serializeAddress(key, "messageFacet", d.facets.message);
        string memory json = vm.serializeAddress(key, "sponsorshipFacet", d.facets.sponsorship);
        vm.writeJson(json, path);
    }

    /// @return deployed The contract's address.
    /// @return created 1 when it was deployed now, 0 when it already existed.
    function _deploy(string memory name, bytes memory initCode)
        private
        returns (address deployed, uint256 created)
    {
        deployed = vm.computeCreate2Address(SALT, keccak256(initCode), CREATE2_DEPLOYER);
        if (deployed.code.length > 0) return (deployed, 0);
        (bool ok,) = CREATE2_DEPLOYER.call(abi.encodePacked(SALT, initCode));
        if (!ok || deployed.code.length == 0) revert DeploymentFailed(name);
        return (deployed, 1);
    }
}
