// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IERC165} from "@openzeppelin/contracts/utils/introspection/IERC165.sol";
import {Diamond} from "../contracts/diamond/Diamond.sol";
import {IDiamondCut, IDiamondLoupe, IERC173} from "../contracts/diamond/IDiamond.sol";
import {LibDiamond} from "../contracts/diamond/LibDiamond.sol";
import {OwnershipFacet} from "../contracts/diamond/OwnershipFacet.sol";
import {ClusterFacets} from "../contracts/factory/ClusterFacets.sol";
import {IMemberFacet} from "../contracts/member/IMemberFacet.sol";
import {IAppAuth} from "../contracts/registration/IAppAuth.sol";
import {ClusterFixture} from "./utils/ClusterFixture.sol";

/// @notice The functions a test facet serves, to call them through the diamond.
interface IPing {
    function ping() external view returns (uint256);
    function pong() external view returns (uint256);
}

/// @notice A facet the owner can cut in: two selectors the cluster does not have.
contract PingFacet is IPing {
    function ping() external pure returns (uint256) {
        return 1;
    }

    function pong() external pure returns (uint256) {
        return 2;
    }
}

/// @notice The same selectors with other answers, to tell a Replace took effect.
contract PingFacetV2 is IPing {
    function ping() external pure returns (uint256) {
        return 10;
    }

    function pong() external pure returns (uint256) {
        return 20;
    }
}

/// @notice An init that writes diamond storage: proves the init runs by delegatecall in the diamond.
contract InterfaceInit {
    function init(bytes4 interfaceId) external {
        LibDiamond.layout().supportedInterfaces[interfaceId] = true;
    }
}

/// @notice An init that always fails, to check its revert data is carried out.
contract RevertingInit {
    error InitBroken(uint256 code);

    function init() external pure {
        revert InitBroken(42);
    }
}

/// @notice The cluster diamond: routing, loupe, ERC-165, ERC-173 ownership and every cut path.
contract DiamondTest is ClusterFixture {
    /// @dev 1 (diamondCut) + 5 (loupe) + 2 (ownership) + 14 (member) + 21 (registration)
    ///      + 5 (message) + 1 (sponsorship).
    uint256 internal constant CLUSTER_SELECTORS = 53;

    PingFacet internal ping;
    PingFacetV2 internal pingV2;

    function setUp() public {
        setUpCluster();
        ping = new PingFacet();
        pingV2 = new PingFacetV2();
    }

    // ------------------------------------------------------------------ loupe

    function test_facets_listsEveryFacetWithItsSelectorsInCutOrder() public view {
        (address[] memory addresses, bytes4[][] memory selectors) = _expectedFacets();
        IDiamondLoupe.Facet[] memory got = IDiamondLoupe(cluster).facets();
        vm.assertEq(got.length, addresses.length, "facet count");
        for (uint256 i = 0; i < got.length; ++i) {
            vm.assertEq(got[i].facetAddress, addresses[i], "facet address");
            _assertSelectorsEq(got[i].functionSelectors, selectors[i], "facet selectors");
        }
        _assertLoupeConsistent(CLUSTER_SELECTORS);
    }

    function test_facetAddresses_listsEveryFacetOnce() public view {
        (address[] memory addresses,) = _expectedFacets();
        address[] memory got = IDiamondLoupe(cluster).facetAddresses();
        vm.assertEq(got.length, addresses.length, "facet count");
        for (uint256 i = 0; i < got.length; ++i) {
            vm.assertEq(got[i], addresses[i], "facet address");
        }
    }

    function test_facetFunctionSelectors_matchClusterFacetLists() public view {
        (address[] memory addresses, bytes4[][] memory selectors) = _expectedFacets();
        for (uint256 i = 0; i < addresses.length; ++i) {
            _assertSelectorsEq(
                IDiamondLoupe(cluster).facetFunctionSelectors(addresses[i]), selectors[i], "selectors"
            );
        }
    }

    function test_facetFunctionSelectors_emptyForAnUnknownFacet() public view {
        vm.assertEq(IDiamondLoupe(cluster).facetFunctionSelectors(address(ping)).length, 0, "no selectors");
    }

    function test_facetAddress_routesEverySelectorToItsFacet() public view {
        (address[] memory addresses, bytes4[][] memory selectors) = _expectedFacets();
        for (uint256 i = 0; i < addresses.length; ++i) {
            for (uint256 j = 0; j < selectors[i].length; ++j) {
                vm.assertEq(IDiamondLoupe(cluster).facetAddress(selectors[i][j]), addresses[i], "route");
            }
        }
        vm.assertEq(IDiamondLoupe(cluster).facetAddress(IPing.ping.selector), address(0), "unknown selector");
    }

    // ------------------------------------------------------------------ ERC-165

    function test_supportsInterface_trueForEveryDeclaredInterface() public view {
        IERC165 c = IERC165(cluster);
        vm.assertTrue(c.supportsInterface(type(IERC165).interfaceId), "IERC165");
        vm.assertTrue(c.supportsInterface(type(IDiamondCut).interfaceId), "IDiamondCut");
        vm.assertTrue(c.supportsInterface(type(IDiamondLoupe).interfaceId), "IDiamondLoupe");
        vm.assertTrue(c.supportsInterface(type(IERC173).interfaceId), "IERC173");
        vm.assertTrue(c.supportsInterface(type(IAppAuth).interfaceId), "IAppAuth");
    }

    function test_supportsInterface_falseForARandomId() public view {
        vm.assertFalse(IERC165(cluster).supportsInterface(0xdeadbeef), "random id");
        // ERC-165 requires 0xffffffff to be unsupported.
        vm.assertFalse(IERC165(cluster).supportsInterface(0xffffffff), "0xffffffff");
    }

    function testFuzz_supportsInterface_falseForUndeclaredIds(bytes4 id) public view {
        vm.assume(id != type(IERC165).interfaceId && id != type(IDiamondCut).interfaceId);
        vm.assume(id != type(IDiamondLoupe).interfaceId && id != type(IERC173).interfaceId);
        vm.assume(id != type(IAppAuth).interfaceId);
        vm.assertFalse(IERC165(cluster).supportsInterface(id), "undeclared id");
    }

    // ------------------------------------------------------------------ routing

    function test_RevertWhen_fallback_unknownSelector() public {
        vm.expectRevert(abi.encodeWithSelector(Diamond.FunctionNotFound.selector, IPing.ping.selector));
        IPing(cluster).ping();
    }

    function test_RevertWhen_fallback_calldataShorterThanASelector() public {
        // Fewer than 4 bytes of calldata with no value: msg.sig is the zero-padded bytes, unrouted.
        (bool ok, bytes memory reason) = cluster.call(hex"aabb");
        vm.assertFalse(ok, "short calldata is not routed");
        vm.assertEq(
            reason, abi.encodeWithSelector(Diamond.FunctionNotFound.selector, bytes4(0xaabb0000)), "reason"
        );
    }

    function test_receive_acceptsPlainEther() public {
        vm.deal(address(this), 1 ether);
        (bool ok,) = cluster.call{value: 1 ether}("");
        vm.assertTrue(ok, "plain ether transfer");
        vm.assertEq(cluster.balance, 1 ether, "balance");
    }

    // ------------------------------------------------------------------ ownership

    function test_owner_isTheOperator() public view {
        vm.assertEq(IERC173(cluster).owner(), operator, "owner");
    }

    function test_transferOwnership_movesOwnershipAndEmits() public {
        address next = address(0xA11CE);
        vm.expectEmit(cluster);
        emit IERC173.OwnershipTransferred(operator, next);
        vm.prank(operator);
        IERC173(cluster).transferOwnership(next);
        vm.assertEq(IERC173(cluster).owner(), next, "new owner");
    }

    function test_transferOwnership_newOwnerGovernsOldOwnerDoesNot() public {
        address next = address(0xA11CE);
        vm.prank(operator);
        IERC173(cluster).transferOwnership(next);

        // The old owner lost every owner-only path, the new one has them.
        vm.expectRevert(abi.encodeWithSelector(LibDiamond.NotContractOwner.selector, operator, next));
        vm.prank(operator);
        IMemberFacet(cluster).revokeMember(1);

        vm.prank(next);
        IDiamondCut(cluster)
            .diamondCut(_pingCut(IDiamondCut.FacetCutAction.Add, address(ping)), address(0), "");
        vm.assertEq(IPing(cluster).ping(), 1, "the new owner cut a facet in");
    }

    function test_RevertWhen_transferOwnership_zeroOwner() public {
        vm.expectRevert(OwnershipFacet.ZeroOwner.selector);
        vm.prank(operator);
        IERC173(cluster).transferOwnership(address(0));
    }

    function test_RevertWhen_transferOwnership_notOwner() public {
        address stranger = address(0xBAD);
        vm.expectRevert(abi.encodeWithSelector(LibDiamond.NotContractOwner.selector, stranger, operator));
        vm.prank(stranger);
        IERC173(cluster).transferOwnership(stranger);
    }

    // ------------------------------------------------------------------ diamondCut

    function test_diamondCut_addsANewFacet() public {
        IDiamondCut.FacetCut[] memory cuts = _pingCut(IDiamondCut.FacetCutAction.Add, address(ping));
        vm.expectEmit(cluster);
        emit IDiamondCut.DiamondCut(cuts, address(0), "");
        vm.prank(operator);
        IDiamondCut(cluster).diamondCut(cuts, address(0), "");

        vm.assertEq(IPing(cluster).ping(), 1, "ping routed");
        vm.assertEq(IPing(cluster).pong(), 2, "pong routed");
        vm.assertEq(IDiamondLoupe(cluster).facetAddress(IPing.ping.selector), address(ping), "route");
        _assertSelectorsEq(
            IDiamondLoupe(cluster).facetFunctionSelectors(address(ping)), _pingSelectors(), "facet selectors"
        );
        address[] memory addresses = IDiamondLoupe(cluster).facetAddresses();
        vm.assertEq(addresses.length, 8, "one facet more");
        vm.assertEq(addresses[7], address(ping), "new facet listed last");
        _assertLoupeConsistent(CLUSTER_SELECTORS + 2);
    }

    function test_diamondCut_replaceMovesSelectorsToTheNewFacet() public {
        _ownerCut(_pingCut(IDiamondCut.FacetCutAction.Add, address(ping)), address(0), "");
        _ownerCut(_pingCut(IDiamondCut.FacetCutAction.Replace, address(pingV2)), address(0), "");

        vm.assertEq(IPing(cluster).ping(), 10, "ping now served by v2");
        vm.assertEq(IPing(cluster).pong(), 20, "pong now served by v2");
        vm.assertEq(IDiamondLoupe(cluster).facetFunctionSelectors(address(ping)).length, 0, "old facet empty");
        address[] memory addresses = IDiamondLoupe(cluster).facetAddresses();
        for (uint256 i = 0; i < addresses.length; ++i) {
            vm.assertNotEq(addresses[i], address(ping), "old facet no longer listed");
        }
        _assertLoupeConsistent(CLUSTER_SELECTORS + 2);
    }

    /// @notice Remove is swap-and-pop: the last selector takes the removed one's slot, and its
    ///         stored index must follow, or a later removal of it would corrupt the list.
    function test_diamondCut_removeKeepsTheLoupeConsistent() public {
        _ownerCut(_pingCut(IDiamondCut.FacetCutAction.Add, address(ping)), address(0), "");
        // pong is now the last selector; removing a member selector from the middle moves pong there.
        bytes4 middle = IMemberFacet.getMember.selector;
        _ownerCut(_cut(address(0), IDiamondCut.FacetCutAction.Remove, _one(middle)), address(0), "");
        vm.assertEq(IDiamondLoupe(cluster).facetAddress(middle), address(0), "removed route");
        vm.expectRevert(abi.encodeWithSelector(Diamond.FunctionNotFound.selector, middle));
        IMemberFacet(cluster).getMember(1);
        vm.assertEq(IPing(cluster).pong(), 2, "moved selector still routed");
        _assertLoupeConsistent(CLUSTER_SELECTORS + 1);

        // Removing the moved selector proves its index was updated.
        _ownerCut(
            _cut(address(0), IDiamondCut.FacetCutAction.Remove, _one(IPing.pong.selector)), address(0), ""
        );
        vm.assertEq(IPing(cluster).ping(), 1, "ping untouched");
        _assertLoupeConsistent(CLUSTER_SELECTORS);

        // Removing the last selector itself (a swap with itself).
        _ownerCut(
            _cut(address(0), IDiamondCut.FacetCutAction.Remove, _one(IPing.ping.selector)), address(0), ""
        );
        vm.assertEq(IDiamondLoupe(cluster).facetFunctionSelectors(address(ping)).length, 0, "ping facet gone");
        _assertLoupeConsistent(CLUSTER_SELECTORS - 1);
    }

    /// @notice Removing any two non-loupe selectors, in either order, leaves every other route intact.
    function testFuzz_diamondCut_removeAnySelectorsKeepsTheLoupeConsistent(uint256 seedA, uint256 seedB)
        public
    {
        bytes4[] memory removable = _removableSelectors();
        uint256 a = bound(seedA, 0, removable.length - 1);
        uint256 b = bound(seedB, 0, removable.length - 2);
        if (b >= a) ++b; // a different selector than the first
        bytes4[] memory both = new bytes4[](2);
        both[0] = removable[a];
        both[1] = removable[b];
        _ownerCut(_cut(address(0), IDiamondCut.FacetCutAction.Remove, both), address(0), "");

        vm.assertEq(IDiamondLoupe(cluster).facetAddress(both[0]), address(0), "first removed");
        vm.assertEq(IDiamondLoupe(cluster).facetAddress(both[1]), address(0), "second removed");
        _assertLoupeConsistent(CLUSTER_SELECTORS - 2);
    }

    function test_diamondCut_initRunsInTheDiamondsStorage() public {
        InterfaceInit init = new InterfaceInit();
        bytes4 newId = type(IPing).interfaceId;
        vm.assertFalse(IERC165(cluster).supportsInterface(newId), "not yet supported");
        _ownerCut(
            _pingCut(IDiamondCut.FacetCutAction.Add, address(ping)),
            address(init),
            abi.encodeCall(InterfaceInit.init, (newId))
        );
        vm.assertTrue(IERC165(cluster).supportsInterface(newId), "init flagged the interface");
        vm.assertEq(IPing(cluster).ping(), 1, "cut applied with the init");
    }

    function test_RevertWhen_diamondCut_notOwner() public {
        address stranger = address(0xBAD);
        vm.expectRevert(abi.encodeWithSelector(LibDiamond.NotContractOwner.selector, stranger, operator));
        vm.prank(stranger);
        IDiamondCut(cluster)
            .diamondCut(_pingCut(IDiamondCut.FacetCutAction.Add, address(ping)), address(0), "");
    }

    function test_RevertWhen_diamondCut_noSelectorsInFacetCut() public {
        IDiamondCut.FacetCut[] memory cuts =
            _cut(address(ping), IDiamondCut.FacetCutAction.Add, new bytes4[](0));
        _expectCutRevert(
            cuts, address(0), "", abi.encodeWithSelector(LibDiamond.NoSelectorsInFacetCut.selector)
        );
    }

    function test_RevertWhen_diamondCut_addFacetHasNoCode() public {
        address eoa = address(0xE0A);
        _expectCutRevert(
            _pingCut(IDiamondCut.FacetCutAction.Add, eoa),
            address(0),
            "",
            abi.encodeWithSelector(LibDiamond.FacetHasNoCode.selector, eoa)
        );
    }

    function test_RevertWhen_diamondCut_replaceFacetHasNoCode() public {
        _ownerCut(_pingCut(IDiamondCut.FacetCutAction.Add, address(ping)), address(0), "");
        address eoa = address(0xE0A);
        _expectCutRevert(
            _pingCut(IDiamondCut.FacetCutAction.Replace, eoa),
            address(0),
            "",
            abi.encodeWithSelector(LibDiamond.FacetHasNoCode.selector, eoa)
        );
    }

    function test_RevertWhen_diamondCut_selectorAlreadyExists() public {
        // owner() is already served by the ownership facet.
        _expectCutRevert(
            _cut(address(ping), IDiamondCut.FacetCutAction.Add, _one(IERC173.owner.selector)),
            address(0),
            "",
            abi.encodeWithSelector(LibDiamond.SelectorAlreadyExists.selector, IERC173.owner.selector)
        );
    }

    function test_RevertWhen_diamondCut_replaceSelectorNotFound() public {
        _expectCutRevert(
            _pingCut(IDiamondCut.FacetCutAction.Replace, address(pingV2)),
            address(0),
            "",
            abi.encodeWithSelector(LibDiamond.SelectorNotFound.selector, IPing.ping.selector)
        );
    }

    function test_RevertWhen_diamondCut_removeSelectorNotFound() public {
        _expectCutRevert(
            _cut(address(0), IDiamondCut.FacetCutAction.Remove, _one(IPing.pong.selector)),
            address(0),
            "",
            abi.encodeWithSelector(LibDiamond.SelectorNotFound.selector, IPing.pong.selector)
        );
    }

    function test_RevertWhen_diamondCut_replaceWithSameFacet() public {
        _ownerCut(_pingCut(IDiamondCut.FacetCutAction.Add, address(ping)), address(0), "");
        _expectCutRevert(
            _pingCut(IDiamondCut.FacetCutAction.Replace, address(ping)),
            address(0),
            "",
            abi.encodeWithSelector(LibDiamond.ReplaceWithSameFacet.selector, IPing.ping.selector)
        );
    }

    function test_RevertWhen_diamondCut_removeFacetAddressNotZero() public {
        _ownerCut(_pingCut(IDiamondCut.FacetCutAction.Add, address(ping)), address(0), "");
        _expectCutRevert(
            _pingCut(IDiamondCut.FacetCutAction.Remove, address(ping)),
            address(0),
            "",
            abi.encodeWithSelector(LibDiamond.RemoveFacetAddressMustBeZero.selector, address(ping))
        );
    }

    function test_RevertWhen_diamondCut_initHasNoCode() public {
        address eoa = address(0xE0A);
        _expectCutRevert(
            _pingCut(IDiamondCut.FacetCutAction.Add, address(ping)),
            eoa,
            hex"12345678",
            abi.encodeWithSelector(LibDiamond.InitHasNoCode.selector, eoa)
        );
    }

    function test_RevertWhen_diamondCut_initializationFailed() public {
        RevertingInit init = new RevertingInit();
        bytes memory reason = abi.encodeWithSelector(RevertingInit.InitBroken.selector, uint256(42));
        _expectCutRevert(
            _pingCut(IDiamondCut.FacetCutAction.Add, address(ping)),
            address(init),
            abi.encodeCall(RevertingInit.init, ()),
            abi.encodeWithSelector(LibDiamond.InitializationFailed.selector, address(init), reason)
        );
        // The cut is all-or-nothing: the failed init undid the Add.
        vm.assertEq(IDiamondLoupe(cluster).facetAddress(IPing.ping.selector), address(0), "cut rolled back");
    }

    // ------------------------------------------------------------------ selector drift

    /// @notice ClusterFacets' hand-written selector lists must equal each facet's compiled ABI,
    ///         both ways: a function added to a facet but not to its list would be unreachable.
    function test_clusterFacets_selectorListsMatchTheCompiledAbis() public view {
        _assertMatchesAbi("DiamondCutFacet", ClusterFacets.cutSelectors());
        _assertMatchesAbi("DiamondLoupeFacet", ClusterFacets.loupeSelectors());
        _assertMatchesAbi("OwnershipFacet", ClusterFacets.ownershipSelectors());
        _assertMatchesAbi("MemberFacet", ClusterFacets.memberSelectors());
        _assertMatchesAbi("RegistrationFacet", ClusterFacets.registrationSelectors());
        _assertMatchesAbi("MessageFacet", ClusterFacets.messageSelectors());
        _assertMatchesAbi("SponsorshipFacet", ClusterFacets.sponsorshipSelectors());
    }

    // ------------------------------------------------------------------ helpers

    function _assertMatchesAbi(string memory facet, bytes4[] memory listed) private view {
        string memory json = vm.readFile(string.concat("out/", facet, ".sol/", facet, ".json"));
        string[] memory signatures = vm.parseJsonKeys(json, ".methodIdentifiers");
        bytes4[] memory compiled = new bytes4[](signatures.length);
        for (uint256 i = 0; i < signatures.length; ++i) {
            compiled[i] = bytes4(keccak256(bytes(signatures[i])));
        }
        vm.assertEq(listed.length, compiled.length, string.concat(facet, ": selector count"));
        for (uint256 i = 0; i < compiled.length; ++i) {
            vm.assertTrue(_contains(listed, compiled[i]), string.concat(facet, ": ABI function not listed"));
        }
        for (uint256 i = 0; i < listed.length; ++i) {
            vm.assertTrue(
                _contains(compiled, listed[i]), string.concat(facet, ": listed selector not in ABI")
            );
        }
    }

    /// @notice The facets and selectors the factory's cut produces, in cut order.
    function _expectedFacets()
        private
        view
        returns (address[] memory addresses, bytes4[][] memory selectors)
    {
        ClusterFacets.Addresses memory f = factory.facets();
        addresses = new address[](7);
        selectors = new bytes4[][](7);
        (addresses[0], selectors[0]) = (f.diamondCut, ClusterFacets.cutSelectors());
        (addresses[1], selectors[1]) = (f.diamondLoupe, ClusterFacets.loupeSelectors());
        (addresses[2], selectors[2]) = (f.ownership, ClusterFacets.ownershipSelectors());
        (addresses[3], selectors[3]) = (f.member, ClusterFacets.memberSelectors());
        (addresses[4], selectors[4]) = (f.registration, ClusterFacets.registrationSelectors());
        (addresses[5], selectors[5]) = (f.message, ClusterFacets.messageSelectors());
        (addresses[6], selectors[6]) = (f.sponsorship, ClusterFacets.sponsorshipSelectors());
    }

    /// @notice Every selector outside the loupe (which this check itself needs) and diamondCut.
    function _removableSelectors() private pure returns (bytes4[] memory all) {
        bytes4[][] memory lists = new bytes4[][](5);
        lists[0] = ClusterFacets.ownershipSelectors();
        lists[1] = ClusterFacets.memberSelectors();
        lists[2] = ClusterFacets.registrationSelectors();
        lists[3] = ClusterFacets.messageSelectors();
        lists[4] = ClusterFacets.sponsorshipSelectors();
        uint256 total = 0;
        for (uint256 i = 0; i < lists.length; ++i) {
            total += lists[i].length;
        }
        all = new bytes4[](total);
        uint256 next = 0;
        for (uint256 i = 0; i < lists.length; ++i) {
            for (uint256 j = 0; j < lists[i].length; ++j) {
                all[next++] = lists[i][j];
            }
        }
    }

    /// @notice The loupe's views agree with each other: facets() and facetAddresses() list the same
    ///         facets, each selector appears once and routes to the facet listing it, and
    ///         facetFunctionSelectors matches facets().
    function _assertLoupeConsistent(uint256 expectedSelectors) private view {
        IDiamondLoupe loupe = IDiamondLoupe(cluster);
        IDiamondLoupe.Facet[] memory all = loupe.facets();
        address[] memory addresses = loupe.facetAddresses();
        vm.assertEq(all.length, addresses.length, "facets() vs facetAddresses()");
        bytes4[] memory seen = new bytes4[](expectedSelectors);
        uint256 count = 0;
        for (uint256 i = 0; i < all.length; ++i) {
            vm.assertEq(all[i].facetAddress, addresses[i], "facet order");
            vm.assertGt(all[i].functionSelectors.length, 0, "a listed facet serves something");
            _assertSelectorsEq(
                loupe.facetFunctionSelectors(all[i].facetAddress), all[i].functionSelectors, "per-facet view"
            );
            for (uint256 j = 0; j < all[i].functionSelectors.length; ++j) {
                bytes4 selector = all[i].functionSelectors[j];
                vm.assertEq(loupe.facetAddress(selector), all[i].facetAddress, "selector routes to its facet");
                vm.assertLe(count + 1, expectedSelectors, "more selectors than expected");
                vm.assertFalse(_contains(seen, selector), "selector listed twice");
                seen[count++] = selector;
            }
        }
        vm.assertEq(count, expectedSelectors, "selector count");
    }

    function _assertSelectorsEq(bytes4[] memory got, bytes4[] memory want, string memory what) private pure {
        vm.assertEq(got.length, want.length, string.concat(what, ": length"));
        for (uint256 i = 0; i < got.length; ++i) {
            vm.assertEq(bytes32(got[i]), bytes32(want[i]), what);
        }
    }

    function _contains(bytes4[] memory list, bytes4 selector) private pure returns (bool) {
        for (uint256 i = 0; i < list.length; ++i) {
            if (list[i] == selector) return true;
        }
        return false;
    }

    function _pingSelectors() private pure returns (bytes4[] memory s) {
        s = new bytes4[](2);
        s[0] = IPing.ping.selector;
        s[1] = IPing.pong.selector;
    }

    function _pingCut(IDiamondCut.FacetCutAction action, address facet)
        private
        pure
        returns (IDiamondCut.FacetCut[] memory)
    {
        return _cut(facet, action, _pingSelectors());
    }

    function _one(bytes4 selector) private pure returns (bytes4[] memory s) {
        s = new bytes4[](1);
        s[0] = selector;
    }

    function _cut(address facet, IDiamondCut.FacetCutAction action, bytes4[] memory selectors)
        private
        pure
        returns (IDiamondCut.FacetCut[] memory cuts)
    {
        cuts = new IDiamondCut.FacetCut[](1);
        cuts[0] = IDiamondCut.FacetCut({facetAddress: facet, action: action, functionSelectors: selectors});
    }

    function _ownerCut(IDiamondCut.FacetCut[] memory cuts, address init, bytes memory data) private {
        vm.prank(operator);
        IDiamondCut(cluster).diamondCut(cuts, init, data);
    }

    function _expectCutRevert(
        IDiamondCut.FacetCut[] memory cuts,
        address init,
        bytes memory data,
        bytes memory revertData
    ) private {
        vm.expectRevert(revertData);
        vm.prank(operator);
        IDiamondCut(cluster).diamondCut(cuts, init, data);
    }
}
