// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title IndexerRegistry
/// @notice Where nodes discover the shared indexers and the Ed25519 keys that sign their pushes.
///         Several indexers may serve a chain; none is a single point of failure.
contract IndexerRegistry {
    /// @param endpoint How to reach the indexer's gRPC service (e.g. https://<app_id>-50051.<gateway>).
    /// @param ed25519PublicKey The indexer's boot-derived key; every pushed event is signed with it.
    /// @param active False once removed.
    struct Indexer {
        string endpoint;
        bytes32 ed25519PublicKey;
        bool active;
    }

    /// @notice Only the owner may call.
    error OnlyOwner(address caller);
    /// @notice No indexer has this id.
    error UnknownIndexer(uint256 indexerId);
    /// @notice The endpoint is empty.
    error EmptyEndpoint();
    /// @notice A zero public key cannot verify anything.
    error ZeroPublicKey();
    /// @notice address(0) cannot own the registry.
    error ZeroAddress();

    /// @notice An indexer was registered.
    event IndexerRegistered(uint256 indexed indexerId, string endpoint, bytes32 ed25519PublicKey);
    /// @notice An indexer was removed.
    event IndexerRemoved(uint256 indexed indexerId);
    /// @notice Ownership changed.
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    /// @notice The operator of the shared indexers.
    address public owner;
    Indexer[] private _indexers;

    constructor(address owner_) {
        if (owner_ == address(0)) revert ZeroAddress();
        owner = owner_;
        emit OwnershipTransferred(address(0), owner_);
    }

    modifier onlyOwner() {
        if (msg.sender != owner) revert OnlyOwner(msg.sender);
        _;
    }

    /// @notice Records an indexer (only the owner).
    /// @return indexerId Its id (its position, from 0).
    function registerIndexer(string calldata endpoint, bytes32 ed25519PublicKey)
        external
        onlyOwner
        returns (uint256 indexerId)
    {
        if (bytes(endpoint).length == 0) revert EmptyEndpoint();
        if (ed25519PublicKey == bytes32(0)) revert ZeroPublicKey();
        indexerId = _indexers.length;
        _indexers.push(Indexer({endpoint: endpoint, ed25519PublicKey: ed25519PublicKey, active: true}));
        emit IndexerRegistered(indexerId, endpoint, ed25519PublicKey);
    }

    /// @notice Removes an indexer (only the owner).
    function removeIndexer(uint256 indexerId) external onlyOwner {
        if (indexerId >= _indexers.length || !_indexers[indexerId].active) revert UnknownIndexer(indexerId);
        _indexers[indexerId].active = false;
        emit IndexerRemoved(indexerId);
    }

    /// @notice One indexer by id.
    function getIndexer(uint256 indexerId) external view returns (Indexer memory) {
        if (indexerId >= _indexers.length) revert UnknownIndexer(indexerId);
        return _indexers[indexerId];
    }

    /// @notice Every indexer ever registered (removed ones have active = false).
    function listIndexers() external view returns (Indexer[] memory) {
        return _indexers;
    }

    /// @notice Hands over ownership (only the owner).
    function transferOwnership(address newOwner) external onlyOwner {
        if (newOwner == address(0)) revert ZeroAddress();
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }
}
