// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {ClusterFactory} from "../contracts/factory/ClusterFactory.sol";
import {IndexerRegistry} from "../contracts/indexer/IndexerRegistry.sol";
import {VerifyingPaymaster} from "../contracts/paymaster/VerifyingPaymaster.sol";
import {Deploy} from "../script/Deploy.s.sol";
import {ClusterFixture} from "./utils/ClusterFixture.sol";

/// @notice The deploy script: complete, deterministic, idempotent, and refusing a chain without EntryPoint.
contract DeployTest is ClusterFixture {
    Deploy internal script;

    function setUp() public {
        script = new Deploy();
        vm.deal(address(script), 10 ether);
    }

    function config() internal view returns (Deploy.Config memory c) {
        c.operator = operator;
        c.sponsorSigner = vm.addr(SPONSOR_KEY);
        c.paymasterDeposit = 1 ether;
    }

    function test_deploy_deploysEverythingThenReusesIt() public {
        deployEntryPoint();
        Deploy.Deployment memory first = script.deploy(config());
        vm.assertEq(first.deployedCount, 11, "eleven contracts");
        vm.assertEq(ClusterFactory(first.factory).indexerRegistry(), first.indexerRegistry, "factory wiring");
        vm.assertEq(address(ClusterFactory(first.factory).entryPoint()), ENTRY_POINT, "canonical EntryPoint");
        vm.assertEq(IndexerRegistry(first.indexerRegistry).owner(), operator, "registry owner");
        vm.assertEq(
            VerifyingPaymaster(payable(first.paymaster)).verifyingSigner(), vm.addr(SPONSOR_KEY), "signer"
        );
        vm.assertEq(VerifyingPaymaster(payable(first.paymaster)).getDeposit(), 1 ether, "deposit");

        Deploy.Deployment memory second = script.deploy(config());
        vm.assertEq(second.deployedCount, 0, "a second run deploys nothing");
        vm.assertEq(second.factory, first.factory, "same factory");
        vm.assertEq(second.paymaster, first.paymaster, "same paymaster");
        vm.assertEq(VerifyingPaymaster(payable(first.paymaster)).getDeposit(), 1 ether, "deposit not doubled");
    }

    function test_write_recordsEveryAddress() public {
        deployEntryPoint();
        Deploy.Deployment memory d = script.deploy(config());
        string memory path = "deployments/test-deploy.json";
        script.write(d, path);
        string memory json = vm.readFile(path);
        vm.assertEq(vm.parseJsonAddress(json, ".clusterFactory"), d.factory, "factory");
        vm.assertEq(vm.parseJsonAddress(json, ".entryPoint"), ENTRY_POINT, "entry point");
        vm.assertEq(vm.parseJsonUint(json, ".chainId"), block.chainid, "chain id");
    }

    function test_RevertWhen_deploy_entryPointMissing() public {
        vm.expectRevert(abi.encodeWithSelector(Deploy.EntryPointMissing.selector, ENTRY_POINT));
        script.deploy(config());
    }
}
