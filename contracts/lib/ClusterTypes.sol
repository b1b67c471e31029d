// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @notice A dstack attestation proof: the GetKey signature chain plus the derived key's signature
///         over a message hash. Off-chain this is one `/GetKey {path, purpose}` reply.
/// @param appId The dstack app id (20 bytes); in AttestMesh it is the node's member account.
/// @param messageHash What the derived key signed (EIP-191); for registration, the binding digest.
/// @param messageSignature The derived key's r||s||v signature over the EIP-191 form of messageHash.
/// @param appSignature signature_chain[0]: the app key over keccak256(purpose ":" hex(derivedPublicKey)).
/// @param kmsSignature signature_chain[1]: the KMS root over
///        keccak256("dstack-kms-issued:" || appId || appPublicKey).
/// @param derivedPublicKey The derived key, 33-byte compressed SEC1.
/// @param appPublicKey The app key, 33-byte compressed SEC1.
/// @param purpose The GetKey purpose string.
struct DstackProof {
    address appId;
    bytes32 messageHash;
    bytes messageSignature;
    bytes appSignature;
    bytes kmsSignature;
    bytes derivedPublicKey;
    bytes appPublicKey;
    string purpose;
}

/// @notice The public keys a node publishes when it registers.
/// @param x25519 Sealed messages and the CSK hand-off are encrypted to this key.
/// @param ed25519 The node's identity key: heartbeats and message signatures.
/// @param wireguard The node's WireGuard static public key.
struct NodeKeys {
    bytes32 x25519;
    bytes32 ed25519;
    bytes32 wireguard;
}

/// @notice Lifecycle of a member record. `None` means no record.
enum MemberStatus {
    None,
    Active,
    Revoked
}

/// @notice One cluster member.
/// @param id Sequential from 1, never reused.
/// @param account The member's ERC-4337 account (= its dstack app id).
/// @param signer The dstack-derived secp256k1 key that proved the registration and owns the account.
/// @param keys The node's published public keys.
/// @param meshIp The node's IPv4 address inside the cluster CIDR (host byte order as uint32).
/// @param registeredAt Block timestamp of the registration.
/// @param status Active or Revoked.
struct Member {
    uint64 id;
    address account;
    address signer;
    NodeKeys keys;
    uint32 meshIp;
    uint64 registeredAt;
    MemberStatus status;
}

/// @notice One epoch of the Cluster Shared Key, as the chain records it. Revoking a member or an
///         operator rotation opens the next epoch; its originator derives that epoch's key in its
///         TEE and commits keccak256(key); members pull it from a live peer.
/// @param epoch Sequential from 0.
/// @param originator The member that derives and commits this epoch's key: the lowest active
///        member id when the epoch opened (or the first member to join an empty cluster); 0
///        while no member is active.
/// @param revokedMember The member whose revocation opened the epoch; 0 for epoch 0 and for an
///        operator rotation.
/// @param openedAt Block timestamp of the opening.
/// @param commitment keccak256(CSK of this epoch); zero until committed, never changed after.
/// @param committedAt Block timestamp of the commitment; 0 until committed.
/// @param previousEpoch The last epoch committed before this one (meaningful when
///        `previousKeyUntil` is not 0).
/// @param previousKeyUntil Until this time members may still hand out `previousEpoch`'s key
///        (the commitment time plus the grace period then set); 0 when there is none.
struct CskEpoch {
    uint64 epoch;
    uint64 originator;
    uint64 revokedMember;
    uint64 openedAt;
    bytes32 commitment;
    uint64 committedAt;
    uint64 previousEpoch;
    uint64 previousKeyUntil;
}

/// @notice Parameters of a new cluster.
/// @param owner The operator: allowlists, revocation, diamond upgrades.
/// @param meshNetwork The network address of the mesh CIDR (e.g. 10.88.0.0 as 0x0a580000).
/// @param meshPrefixLength The CIDR prefix length, 8..30.
/// @param kmsRoots dstack KMS root addresses whose signature chains are accepted.
/// @param composeHashes dstack compose hashes allowed to boot (IAppAuth boot gate).
/// @param allowAnyDevice When false, only allowlisted dstack device ids may boot. An explicit opt-in:
///        nothing on chain defaults it to true (the factory stores what the creator passes).
struct ClusterConfig {
    address owner;
    uint32 meshNetwork;
    uint8 meshPrefixLength;
    address[] kmsRoots;
    bytes32[] composeHashes;
    bool allowAnyDevice;
}

/// @notice One sealed message in a `sendBatch`.
/// @param recipientMemberId The active member it is sealed to.
/// @param envelopeId Deterministic id; each (recipient, sender, id) is used once.
/// @param ciphertext The sealed message, 1..4096 bytes.
struct Envelope {
    uint64 recipientMemberId;
    bytes32 envelopeId;
    bytes ciphertext;
}

/// @notice Why `sendBatch` skipped an envelope: the rule `send` would have reverted on.
enum SkipReason {
    EmptyCiphertext,
    CiphertextTooLarge,
    RecipientNotActive,
    AlreadyUsed
}
