// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IEntryPoint} from "@account-abstraction/contracts/interfaces/IEntryPoint.sol";
import {MemberAccount} from "../account/MemberAccount.sol";
import {Diamond} from "../diamond/Diamond.sol";
import {IDiamondCut, IERC173} from "../diamond/IDiamond.sol";
import {ClusterConfig} from "../lib/ClusterTypes.sol";
import {ClusterFacets} from "./ClusterFacets.sol";
import {ClusterInit} from "./ClusterInit.sol";

/// @title ClusterFactory
/// @notice Creates cluster diamonds and member accounts at CREATE2 addresses, so an operator
///         knows a node's account (= its dstack app id) before the node boots.
contract ClusterFactory {
    /// @notice A cluster needs an owner.
    error ZeroOwner();
    /// @notice This creator already used this salt; pick another salt.
    error ClusterAlreadyExists(address cluster);

    /// @notice A cluster was created; the indexer follows it from here.
    event ClusterCreated(
        address indexed cluster,
        address indexed owner,
        address indexed creator,
        bytes32 salt,
        uint32 meshNetwork,
        uint8 meshPrefixLength
    );
    /// @notice A member account was deployed.
    event MemberAccountCreated(address indexed cluster, address indexed account, bytes32 salt);

    /// @notice The EntryPoint v0.7 that member accounts trust.
    IEntryPoint public immutable entryPoint;
    /// @notice Where nodes discover the shared indexers.
    address public immutable indexerRegistry;
    /// @notice The block this factory was deployed in: the indexer's catch-up starts here (field note 8).
    uint256 public immutable deployBlock;
    /// @notice Delegatecalled by the cut to initialize a new cluster.
    address public immutable clusterInit;

    address private immutable _diamondCutFacet;
    address private immutable _diamondLoupeFacet;
    address private immutable _ownershipFacet;
    address private immutable _memberFacet;
    address private immutable _registrationFacet;
    address private immutable _messageFacet;
    address private immutable _sponsorshipFacet;

    /// @notice Whether this factory created `cluster`.
    mapping(address cluster => bool) public isCluster;
    address[] private _clusters;

    constructor(
        IEntryPoint entryPoint_,
        address indexerRegistry_,
        ClusterFacets.Addresses memory facets_,
        address clusterInit_
    ) {
        entryPoint = entryPoint_;
        indexerRegistry = indexerRegistry_;
        deployBlock = block.number;
        clusterInit = clusterInit_;
        _diamondCutFacet = facets_.diamondCut;
        _diamondLoupeFacet = facets_.diamondLoupe;
        _ownershipFacet = facets_.ownership;
        _memberFacet = facets_.member;
        _registrationFacet = facets_.registration;
        _messageFacet = facets_.message;
        _sponsorshipFacet = facets_.sponsorship;
    }

    /// @notice The shared facet implementations every cluster routes to.
    function facets() public view returns (ClusterFacets.Addresses memory) {
        return ClusterFacets.Addresses({
            diamondCut: _diamondCutFacet,
            diamondLoupe: _diamondLoupeFacet,
            ownership: _ownershipFacet,
            member: _memberFacet,
            registration: _registrationFacet,
            message: _messageFacet,
            sponsorship: _sponsorshipFacet
        });
    }

    /// @notice Creates a cluster diamond owned by `config.owner`.
    /// @param salt Chosen by the creator; the address depends on (creator, salt) only.
    function createCluster(bytes32 salt, ClusterConfig calldata config) external returns (address cluster) {
        if (config.owner == address(0)) revert ZeroOwner();
        address predicted = predictClusterAddress(msg.sender, salt);
        // Without this check a CREATE2 collision reverts with no reason and burns all gas.
        if (predicted.code.length > 0) revert ClusterAlreadyExists(predicted);
        cluster = address(new Diamond{salt: _clusterSalt(msg.sender, salt)}(address(this), _diamondCutFacet));
        IDiamondCut(cluster)
            .diamondCut(
                ClusterFacets.cuts(facets()),
                clusterInit,
                abi.encodeCall(ClusterInit.init, (config, address(this)))
            );
        IERC173(cluster).transferOwnership(config.owner);
        isCluster[cluster] = true;
        _clusters.push(cluster);
        emit ClusterCreated(
            cluster, config.owner, msg.sender, salt, config.meshNetwork, config.meshPrefixLength
        );
    }

    /// @notice The address `createCluster(salt, ...)` called by `creator` yields.
    function predictClusterAddress(address creator, bytes32 salt) public view returns (address) {
        bytes memory initCode =
            abi.encodePacked(type(Diamond).creationCode, abi.encode(address(this), _diamondCutFacet));
        return _create2Address(_clusterSalt(creator, salt), keccak256(initCode));
    }

    /// @notice Deploys (or returns the already deployed) member account for `cluster` and `salt`.
    /// @dev Usable as ERC-4337 initCode: it reads no storage (ERC-7562 forbids an unstaked factory
    ///      to), so it does not check `isCluster`; an account bound to a non-cluster can do nothing.
    function createMemberAccount(address cluster, bytes32 salt) external returns (address account) {
        account = predictMemberAccount(cluster, salt);
        if (account.code.length > 0) return account;
        new MemberAccount{salt: salt}(entryPoint, cluster);
        emit MemberAccountCreated(cluster, account, salt);
    }

    /// @notice The member account address for `cluster` and `salt`: the node's dstack app id.
    function predictMemberAccount(address cluster, bytes32 salt) public view returns (address) {
        bytes memory initCode =
            abi.encodePacked(type(MemberAccount).creationCode, abi.encode(entryPoint, cluster));
        return _create2Address(salt, keccak256(initCode));
    }

    /// @notice How many clusters this factory created.
    function clusterCount() external view returns (uint256) {
        return _clusters.length;
    }

    /// @notice The clusters with indices in [from, from + limit).
    function listClusters(uint256 from, uint256 limit) external view returns (address[] memory result) {
        if (from >= _clusters.length) return new address[](0);
        uint256 count = _clusters.length - from;
        if (limit < count) count = limit;
        result = new address[](count);
        for (uint256 i = 0; i < count; ++i) {
            result[i] = _clusters[from + i];
        }
    }

    function _clusterSalt(address creator, bytes32 salt) private pure returns (bytes32) {
        return keccak256(abi.encode(creator, salt));
    }

    function _create2Address(bytes32 salt, bytes32 initCodeHash) private view returns (address) {
        return address(
            uint160(uint256(keccak256(abi.encodePacked(bytes1(0xff), address(this), salt, initCodeHash))))
        );
    }
}
