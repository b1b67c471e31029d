// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IndexerRegistry} from "../contracts/indexer/IndexerRegistry.sol";
import {ClusterFixture} from "./utils/ClusterFixture.sol";

/// @notice IndexerRegistry: where nodes find the shared indexers and the keys that sign their pushes.
contract IndexerRegistryTest is ClusterFixture {
    string internal constant ENDPOINT_A = "https://0xabc-50051.gateway.example";
    string internal constant ENDPOINT_B = "https://0xdef-50051.gateway.example";
    bytes32 internal constant KEY_A = keccak256("indexer-a ed25519");
    bytes32 internal constant KEY_B = keccak256("indexer-b ed25519");

    address internal stranger = address(0xBAD);

    function setUp() public {
        setUpCluster();
    }

    // ------------------------------------------------------------------ constructor

    function test_constructor_setsTheOwnerAndEmits() public {
        vm.expectEmit();
        emit IndexerRegistry.OwnershipTransferred(address(0), operator);
        IndexerRegistry fresh = new IndexerRegistry(operator);
        vm.assertEq(fresh.owner(), operator, "owner");
        vm.assertEq(fresh.listIndexers().length, 0, "empty");
    }

    function test_RevertWhen_constructor_zeroOwner() public {
        vm.expectRevert(IndexerRegistry.ZeroAddress.selector);
        new IndexerRegistry(address(0));
    }

    // ------------------------------------------------------------------ registerIndexer

    function test_registerIndexer_assignsSequentialIdsAndEmits() public {
        vm.expectEmit(address(indexerRegistry));
        emit IndexerRegistry.IndexerRegistered(0, ENDPOINT_A, KEY_A);
        uint256 first = _register(ENDPOINT_A, KEY_A);
        vm.expectEmit(address(indexerRegistry));
        emit IndexerRegistry.IndexerRegistered(1, ENDPOINT_B, KEY_B);
        uint256 second = _register(ENDPOINT_B, KEY_B);
        vm.assertEq(first, 0, "ids start at 0");
        vm.assertEq(second, 1, "ids are positions");
    }

    function test_getIndexer_returnsTheRecord() public {
        uint256 id = _register(ENDPOINT_A, KEY_A);
        IndexerRegistry.Indexer memory indexer = indexerRegistry.getIndexer(id);
        vm.assertEq(indexer.endpoint, ENDPOINT_A, "endpoint");
        vm.assertEq(indexer.ed25519PublicKey, KEY_A, "key");
        vm.assertTrue(indexer.active, "active");
    }

    /// @notice Several indexers may share a key or an endpoint (e.g. a rotated gateway); the
    ///         registry does not deduplicate.
    function test_registerIndexer_allowsDuplicates() public {
        uint256 first = _register(ENDPOINT_A, KEY_A);
        uint256 second = _register(ENDPOINT_A, KEY_A);
        vm.assertNotEq(first, second, "two records");
    }

    function testFuzz_registerIndexer_storesAnyEndpointAndKey(string memory endpoint, bytes32 key) public {
        vm.assume(bytes(endpoint).length > 0 && key != bytes32(0));
        uint256 id = _register(endpoint, key);
        IndexerRegistry.Indexer memory indexer = indexerRegistry.getIndexer(id);
        vm.assertEq(indexer.endpoint, endpoint, "endpoint");
        vm.assertEq(indexer.ed25519PublicKey, key, "key");
    }

    function test_RevertWhen_registerIndexer_emptyEndpoint() public {
        vm.expectRevert(IndexerRegistry.EmptyEndpoint.selector);
        vm.prank(operator);
        indexerRegistry.registerIndexer("", KEY_A);
    }

    function test_RevertWhen_registerIndexer_zeroPublicKey() public {
        vm.expectRevert(IndexerRegistry.ZeroPublicKey.selector);
        vm.prank(operator);
        indexerRegistry.registerIndexer(ENDPOINT_A, bytes32(0));
    }

    function test_RevertWhen_registerIndexer_notOwner() public {
        vm.expectRevert(abi.encodeWithSelector(IndexerRegistry.OnlyOwner.selector, stranger));
        vm.prank(stranger);
        indexerRegistry.registerIndexer(ENDPOINT_A, KEY_A);
    }

    // ------------------------------------------------------------------ listIndexers

    function test_listIndexers_listsEveryRecordInIdOrder() public {
        vm.assertEq(indexerRegistry.listIndexers().length, 0, "none at first");
        _register(ENDPOINT_A, KEY_A);
        _register(ENDPOINT_B, KEY_B);
        IndexerRegistry.Indexer[] memory all = indexerRegistry.listIndexers();
        vm.assertEq(all.length, 2, "two indexers");
        vm.assertEq(all[0].endpoint, ENDPOINT_A, "first endpoint");
        vm.assertEq(all[1].ed25519PublicKey, KEY_B, "second key");
    }

    /// @notice Removed indexers stay listed (ids are positions), flagged inactive.
    function test_listIndexers_keepsRemovedOnesInactive() public {
        _register(ENDPOINT_A, KEY_A);
        uint256 removed = _register(ENDPOINT_B, KEY_B);
        vm.prank(operator);
        indexerRegistry.removeIndexer(removed);
        IndexerRegistry.Indexer[] memory all = indexerRegistry.listIndexers();
        vm.assertEq(all.length, 2, "still two records");
        vm.assertTrue(all[0].active, "first still active");
        vm.assertFalse(all[1].active, "second removed");
        vm.assertEq(all[1].endpoint, ENDPOINT_B, "record kept");
    }

    // ------------------------------------------------------------------ removeIndexer

    function test_removeIndexer_deactivatesAndEmits() public {
        uint256 id = _register(ENDPOINT_A, KEY_A);
        vm.expectEmit(address(indexerRegistry));
        emit IndexerRegistry.IndexerRemoved(id);
        vm.prank(operator);
        indexerRegistry.removeIndexer(id);
        vm.assertFalse(indexerRegistry.getIndexer(id).active, "inactive");
    }

    function test_RevertWhen_removeIndexer_unknownId() public {
        _register(ENDPOINT_A, KEY_A);
        vm.expectRevert(abi.encodeWithSelector(IndexerRegistry.UnknownIndexer.selector, uint256(1)));
        vm.prank(operator);
        indexerRegistry.removeIndexer(1);
    }

    function test_RevertWhen_removeIndexer_alreadyRemoved() public {
        uint256 id = _register(ENDPOINT_A, KEY_A);
        vm.prank(operator);
        indexerRegistry.removeIndexer(id);
        vm.expectRevert(abi.encodeWithSelector(IndexerRegistry.UnknownIndexer.selector, id));
        vm.prank(operator);
        indexerRegistry.removeIndexer(id);
    }

    function test_RevertWhen_removeIndexer_notOwner() public {
        uint256 id = _register(ENDPOINT_A, KEY_A);
        vm.expectRevert(abi.encodeWithSelector(IndexerRegistry.OnlyOwner.selector, stranger));
        vm.prank(stranger);
        indexerRegistry.removeIndexer(id);
    }

    function testFuzz_getIndexer_revertsForAnyIdOutOfRange(uint256 id) public {
        _register(ENDPOINT_A, KEY_A);
        id = bound(id, 1, type(uint256).max);
        vm.expectRevert(abi.encodeWithSelector(IndexerRegistry.UnknownIndexer.selector, id));
        indexerRegistry.getIndexer(id);
    }

    function test_RevertWhen_getIndexer_emptyRegistry() public {
        vm.expectRevert(abi.encodeWithSelector(IndexerRegistry.UnknownIndexer.selector, uint256(0)));
        indexerRegistry.getIndexer(0);
    }

    // ------------------------------------------------------------------ ownership

    function test_transferOwnership_movesOwnershipAndEmits() public {
        address next = address(0xA11CE);
        vm.expectEmit(address(indexerRegistry));
        emit IndexerRegistry.OwnershipTransferred(operator, next);
        vm.prank(operator);
        indexerRegistry.transferOwnership(next);
        vm.assertEq(indexerRegistry.owner(), next, "new owner");

        vm.expectRevert(abi.encodeWithSelector(IndexerRegistry.OnlyOwner.selector, operator));
        vm.prank(operator);
        indexerRegistry.registerIndexer(ENDPOINT_A, KEY_A);
        vm.prank(next);
        indexerRegistry.registerIndexer(ENDPOINT_A, KEY_A);
    }

    function test_RevertWhen_transferOwnership_zeroAddress() public {
        vm.expectRevert(IndexerRegistry.ZeroAddress.selector);
        vm.prank(operator);
        indexerRegistry.transferOwnership(address(0));
    }

    function test_RevertWhen_transferOwnership_notOwner() public {
        vm.expectRevert(abi.encodeWithSelector(IndexerRegistry.OnlyOwner.selector, stranger));
        vm.prank(stranger);
        indexerRegistry.transferOwnership(stranger);
    }

    // ------------------------------------------------------------------ helpers

    function _register(string memory endpoint, bytes32 key) private returns (uint256) {
        vm.prank(operator);
        return indexerRegistry.registerIndexer(endpoint, key);
    }
}
