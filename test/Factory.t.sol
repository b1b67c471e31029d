// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IMemberAccount} from "../contracts/account/IMemberAccount.sol";
import {MemberAccount} from "../contracts/account/MemberAccount.sol";
import {IERC173} from "../contracts/diamond/IDiamond.sol";
import {LibDiamond} from "../contracts/diamond/LibDiamond.sol";
import {ClusterFacets} from "../contracts/factory/ClusterFacets.sol";
import {ClusterFactory} from "../contracts/factory/ClusterFactory.sol";
import {ClusterInit} from "../contracts/factory/ClusterInit.sol";
import {ClusterConfig} from "../contracts/lib/ClusterTypes.sol";
import {IMemberFacet} from "../contracts/member/IMemberFacet.sol";
import {IRegistrationFacet} from "../contracts/registration/IRegistrationFacet.sol";
import {ClusterFixture} from "./utils/ClusterFixture.sol";
import {Vm} from "./utils/Vm.sol";

/// @notice ClusterFactory: deterministic clusters and member accounts, the cluster registry,
///         and the config checks the init cut enforces.
contract FactoryTest is ClusterFixture {
    address internal creator = address(0xC0FFEE);

    function setUp() public {
        setUpCluster();
    }

    // ------------------------------------------------------------------ createCluster

    function test_createCluster_landsAtThePredictedAddress() public {
        bytes32 salt = "cluster-2";
        address predicted = factory.predictClusterAddress(operator, salt);
        vm.assertEq(predicted.code.length, 0, "nothing there yet");
        address created = createCluster(salt);
        vm.assertEq(created, predicted, "created at the prediction");
        vm.assertGt(created.code.length, 0, "diamond deployed");
    }

    function testFuzz_createCluster_landsAtThePredictedAddress(address someone, bytes32 salt) public {
        ClusterConfig memory config = defaultConfig();
        address predicted = factory.predictClusterAddress(someone, salt);
        vm.assume(predicted.code.length == 0); // not the fixture's own cluster
        vm.prank(someone);
        vm.assertEq(factory.createCluster(salt, config), predicted, "created at the prediction");
    }

    function test_createCluster_emitsClusterCreated() public {
        bytes32 salt = "cluster-2";
        ClusterConfig memory config = defaultConfig();
        address predicted = factory.predictClusterAddress(creator, salt);
        vm.expectEmit(address(factory));
        emit ClusterFactory.ClusterCreated(predicted, operator, creator, salt, MESH_NETWORK, MESH_PREFIX);
        vm.prank(creator);
        factory.createCluster(salt, config);
    }

    /// @notice The creator is not the owner: the factory hands ownership to config.owner.
    function test_createCluster_ownerIsTheConfigOwnerNotTheCreator() public {
        ClusterConfig memory config = defaultConfig();
        vm.prank(creator);
        address c = factory.createCluster("cluster-2", config);
        vm.assertEq(IERC173(c).owner(), operator, "owner");
        vm.assertEq(IMemberFacet(c).clusterFactory(), address(factory), "cluster knows its factory");
        (uint32 network, uint8 prefix, uint64 capacity) = IMemberFacet(c).meshConfig();
        vm.assertEq(network, MESH_NETWORK, "mesh network");
        vm.assertEq(prefix, MESH_PREFIX, "mesh prefix");
        vm.assertEq(capacity, 65_534, "a /16 holds 2^16 - 2 hosts");
        vm.assertTrue(IRegistrationFacet(c).isKmsRootAllowed(vm.addr(KMS_ROOT_KEY)), "kms root allowlisted");
    }

    /// @notice "Any device may boot" is stored exactly as the creator passed it: a config that does
    ///         not ask for it (the struct's default) gets device allowlisting, and the choice is
    ///         announced either way.
    function test_createCluster_anyDeviceOnlyWhenTheCreatorAsks() public {
        ClusterConfig memory config = defaultConfig();
        config.allowAnyDevice = false;
        vm.expectEmit();
        emit IRegistrationFacet.AllowAnyDeviceSet(false);
        vm.prank(creator);
        address restricted = factory.createCluster("devices-allowlisted", config);
        vm.assertFalse(IRegistrationFacet(restricted).allowAnyDevice(), "not asked: allowlisted devices only");

        config.allowAnyDevice = true;
        vm.expectEmit();
        emit IRegistrationFacet.AllowAnyDeviceSet(true);
        vm.prank(creator);
        address open = factory.createCluster("any-device", config);
        vm.assertTrue(IRegistrationFacet(open).allowAnyDevice(), "asked explicitly");
    }

    function test_createCluster_sameSaltForTwoCreatorsGivesTwoClusters() public {
        bytes32 salt = "shared-salt";
        address first = createCluster(salt);
        ClusterConfig memory config = defaultConfig();
        vm.prank(creator);
        address second = factory.createCluster(salt, config);
        vm.assertNotEq(first, second, "the salt is scoped to its creator");
        vm.assertEq(second, factory.predictClusterAddress(creator, salt), "second at its own prediction");
    }

    /// @notice The same creator cannot reuse a salt; it gets a clear error, not a CREATE2 collision.
    function test_RevertWhen_createCluster_sameCreatorReusesASalt() public {
        ClusterConfig memory config = defaultConfig();
        vm.expectRevert(abi.encodeWithSelector(ClusterFactory.ClusterAlreadyExists.selector, cluster));
        vm.prank(operator);
        factory.createCluster("cluster-1", config);
    }

    function test_createCluster_gasSnapshot() public {
        ClusterConfig memory config = defaultConfig();
        vm.prank(operator);
        factory.createCluster("cluster-gas", config);
        vm.snapshotGasLastCall("createCluster");
    }

    /// @notice Mesh CIDRs at both ends of the accepted prefix range.
    function test_createCluster_acceptsPrefix8And30() public {
        ClusterConfig memory config = defaultConfig();
        config.meshNetwork = 0x0a000000; // 10.0.0.0/8
        config.meshPrefixLength = 8;
        vm.prank(operator);
        address wide = factory.createCluster("wide", config);
        (,, uint64 capacity) = IMemberFacet(wide).meshConfig();
        vm.assertEq(capacity, (1 << 24) - 2, "a /8 capacity");

        config.meshNetwork = 0x0a580004; // 10.88.0.4/30
        config.meshPrefixLength = 30;
        vm.prank(operator);
        address narrow = factory.createCluster("narrow", config);
        (,, capacity) = IMemberFacet(narrow).meshConfig();
        vm.assertEq(capacity, 2, "a /30 capacity");
    }

    function test_RevertWhen_createCluster_zeroOwner() public {
        ClusterConfig memory config = defaultConfig();
        config.owner = address(0);
        vm.expectRevert(ClusterFactory.ZeroOwner.selector);
        factory.createCluster("zero-owner", config);
    }

    /// @notice The init runs by delegatecall, so its errors surface wrapped in InitializationFailed.
    function test_RevertWhen_createCluster_noKmsRoots() public {
        ClusterConfig memory config = defaultConfig();
        config.kmsRoots = new address[](0);
        _expectInitFailure(config, abi.encodeWithSelector(ClusterInit.NoKmsRoots.selector));
    }

    function test_RevertWhen_createCluster_zeroKmsRoot() public {
        ClusterConfig memory config = defaultConfig();
        config.kmsRoots[0] = address(0);
        _expectInitFailure(config, abi.encodeWithSelector(IRegistrationFacet.ZeroAddress.selector));
    }

    function test_RevertWhen_createCluster_meshPrefix7() public {
        ClusterConfig memory config = defaultConfig();
        config.meshNetwork = 0x0a000000;
        config.meshPrefixLength = 7;
        _expectInitFailure(
            config,
            abi.encodeWithSelector(IMemberFacet.InvalidMeshCidr.selector, uint32(0x0a000000), uint8(7))
        );
    }

    function test_RevertWhen_createCluster_meshPrefix31() public {
        ClusterConfig memory config = defaultConfig();
        config.meshPrefixLength = 31;
        _expectInitFailure(
            config, abi.encodeWithSelector(IMemberFacet.InvalidMeshCidr.selector, MESH_NETWORK, uint8(31))
        );
    }

    function test_RevertWhen_createCluster_meshHostBitsSet() public {
        ClusterConfig memory config = defaultConfig();
        config.meshNetwork = MESH_NETWORK | 1; // 10.88.0.1/16 is a host, not a network
        _expectInitFailure(
            config,
            abi.encodeWithSelector(IMemberFacet.InvalidMeshCidr.selector, MESH_NETWORK | 1, MESH_PREFIX)
        );
    }

    /// @notice Any host bit set under any valid prefix is refused.
    function testFuzz_createCluster_rejectsAnyHostBits(uint8 prefixSeed, uint32 hostBits) public {
        uint8 prefix = uint8(bound(prefixSeed, 8, 30));
        uint32 hostMask = uint32((uint256(1) << (32 - prefix)) - 1);
        hostBits &= hostMask;
        vm.assume(hostBits != 0);
        ClusterConfig memory config = defaultConfig();
        config.meshNetwork = (MESH_NETWORK & ~hostMask) | hostBits;
        config.meshPrefixLength = prefix;
        _expectInitFailure(
            config, abi.encodeWithSelector(IMemberFacet.InvalidMeshCidr.selector, config.meshNetwork, prefix)
        );
    }

    // ------------------------------------------------------------------ registry of clusters

    function test_isCluster_trueOnlyForCreatedClusters() public view {
        vm.assertTrue(factory.isCluster(cluster), "fixture cluster");
        vm.assertFalse(factory.isCluster(address(factory)), "factory");
        vm.assertFalse(
            factory.isCluster(factory.predictClusterAddress(operator, "not-yet")), "predicted only"
        );
    }

    function test_clusterCount_countsEveryCreation() public {
        vm.assertEq(factory.clusterCount(), 1, "fixture cluster");
        createCluster("cluster-2");
        createCluster("cluster-3");
        vm.assertEq(factory.clusterCount(), 3, "after two more");
    }

    function test_listClusters_pagination() public {
        address[] memory all = new address[](4);
        all[0] = cluster;
        all[1] = createCluster("cluster-2");
        all[2] = createCluster("cluster-3");
        all[3] = createCluster("cluster-4");

        _assertPage(factory.listClusters(0, 4), all, 0, 4, "the whole list");
        _assertPage(factory.listClusters(0, 100), all, 0, 4, "limit past the end is clipped");
        _assertPage(factory.listClusters(1, 2), all, 1, 2, "a middle page");
        _assertPage(factory.listClusters(3, 5), all, 3, 1, "the last element");
        _assertPage(factory.listClusters(2, type(uint256).max), all, 2, 2, "max limit does not overflow");
        vm.assertEq(factory.listClusters(0, 0).length, 0, "zero limit");
        vm.assertEq(factory.listClusters(4, 1).length, 0, "from at the end");
        vm.assertEq(
            factory.listClusters(type(uint256).max, type(uint256).max).length, 0, "from far past the end"
        );
    }

    // ------------------------------------------------------------------ getters

    /// @notice deployBlock is where the indexer starts catching up, so it must be the deploy block.
    function test_deployBlock_isTheBlockOfDeployment() public {
        vm.roll(12_345_678);
        ClusterFactory fresh = deployFactory(entryPoint, address(indexerRegistry));
        vm.roll(12_345_700);
        vm.assertEq(fresh.deployBlock(), 12_345_678, "deploy block");
    }

    function test_getters_returnTheConstructorArguments() public {
        ClusterFacets.Addresses memory facets = deployFacets();
        ClusterInit init = new ClusterInit();
        ClusterFactory fresh = new ClusterFactory(entryPoint, address(indexerRegistry), facets, address(init));
        vm.assertEq(address(fresh.entryPoint()), ENTRY_POINT, "entry point");
        vm.assertEq(fresh.indexerRegistry(), address(indexerRegistry), "indexer registry");
        vm.assertEq(fresh.clusterInit(), address(init), "cluster init");
        ClusterFacets.Addresses memory got = fresh.facets();
        vm.assertEq(got.diamondCut, facets.diamondCut, "diamondCut facet");
        vm.assertEq(got.diamondLoupe, facets.diamondLoupe, "loupe facet");
        vm.assertEq(got.ownership, facets.ownership, "ownership facet");
        vm.assertEq(got.member, facets.member, "member facet");
        vm.assertEq(got.registration, facets.registration, "registration facet");
        vm.assertEq(got.message, facets.message, "message facet");
        vm.assertEq(got.sponsorship, facets.sponsorship, "sponsorship facet");
        vm.assertEq(fresh.clusterCount(), 0, "a fresh factory has no cluster");
    }

    // ------------------------------------------------------------------ member accounts

    function test_createMemberAccount_deploysAtThePredictedAddressAndEmits() public {
        bytes32 salt = "node-a";
        address predicted = factory.predictMemberAccount(cluster, salt);
        vm.assertEq(predicted.code.length, 0, "nothing there yet");
        vm.expectEmit(address(factory));
        emit ClusterFactory.MemberAccountCreated(cluster, predicted, salt);
        address account = factory.createMemberAccount(cluster, salt);
        vm.assertEq(account, predicted, "created at the prediction");
        vm.assertGt(account.code.length, 0, "account deployed");
    }

    /// @notice As ERC-4337 initCode it may run after someone else deployed the account: no revert.
    function test_createMemberAccount_isIdempotent() public {
        address first = factory.createMemberAccount(cluster, "node-a");
        vm.recordLogs();
        address second = factory.createMemberAccount(cluster, "node-a");
        Vm.Log[] memory logs = vm.getRecordedLogs();
        vm.assertEq(second, first, "same account");
        vm.assertEq(logs.length, 0, "no second MemberAccountCreated");
    }

    function test_createMemberAccount_accountIsBoundToClusterAndEntryPoint() public {
        address account = factory.createMemberAccount(cluster, "node-a");
        vm.assertEq(IMemberAccount(account).cluster(), cluster, "cluster");
        vm.assertEq(address(MemberAccount(payable(account)).entryPoint()), ENTRY_POINT, "entry point");
        vm.assertEq(IMemberAccount(account).owner(), address(0), "no owner before registration");
    }

    /// @notice The account address (= dstack app id) depends on cluster and salt, not on the caller.
    function testFuzz_predictMemberAccount_dependsOnClusterAndSaltOnly(address caller, bytes32 salt) public {
        address predicted = factory.predictMemberAccount(cluster, salt);
        vm.assume(predicted.code.length == 0);
        vm.prank(caller);
        vm.assertEq(factory.createMemberAccount(cluster, salt), predicted, "caller-independent");
        address other = createCluster("cluster-2");
        vm.assertNotEq(factory.predictMemberAccount(other, salt), predicted, "bound to the cluster");
    }

    // ------------------------------------------------------------------ helpers

    function _expectInitFailure(ClusterConfig memory config, bytes memory reason) private {
        vm.expectRevert(
            abi.encodeWithSelector(LibDiamond.InitializationFailed.selector, factory.clusterInit(), reason)
        );
        vm.prank(operator);
        factory.createCluster("bad-config", config);
    }

    function _assertPage(
        address[] memory page,
        address[] memory all,
        uint256 from,
        uint256 count,
        string memory what
    ) private pure {
        vm.assertEq(page.length, count, what);
        for (uint256 i = 0; i < count; ++i) {
            vm.assertEq(page[i], all[from + i], what);
        }
    }
}
