//! Registration proofs built the way the agent builds them: a dstack simulator (the guest
//! agent's wire format and signature chain, v ∈ {0,1} as dstack signs, field note 3) answers
//! `/GetKey` for the node's owner key, and the project's one builder,
//! [`attestmesh_chain::proof::dstack_proof`], turns the reply and the chain's registration
//! digest into the proof.

use alloy::primitives::{Address, B256, Bytes, keccak256};
use alloy::signers::local::PrivateKeySigner;
use attestmesh_bindings::cluster::Cluster;
use attestmesh_chain::ChainClient;
use attestmesh_devnet::dstack_simulator::{
    DstackSimulator, KeySource, SimulatorConfig, SimulatorHandle,
};

use attestmesh_chain::proof::{OWNER_PATH, OWNER_PURPOSE};

/// A simulated dstack node: its app id is its member account, its app key issued by the KMS
/// root of `kms_seed`.
#[derive(Debug)]
pub struct Node {
    pub account: Address,
    owner: PrivateKeySigner,
    keys: Cluster::NodeKeys,
    dstack: SimulatorHandle,
}

impl Node {
    /// Starts the node's dstack simulator (TCP, a port it picks itself) and reads its owner key.
    pub async fn new(name: &str, account: Address, kms_seed: &str) -> Self {
        let dstack = DstackSimulator::spawn_tcp(
            SimulatorConfig::new(
                account.into_array().into(),
                KeySource::DevnetSeed(kms_seed.to_owned()),
            ),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap();
        let reply = dstack
            .client()
            .get_key(OWNER_PATH, OWNER_PURPOSE)
            .await
            .unwrap();
        Self {
            account,
            owner: attestmesh_chain::proof::owner_signer(&reply).unwrap(),
            keys: Cluster::NodeKeys {
                x25519: keccak256(format!("x25519:{name}")),
                ed25519: keccak256(format!("ed25519:{name}")),
                wireguard: keccak256(format!("wireguard:{name}")),
            },
            dstack,
        }
    }

    /// The node's owner key (the derived key the proof attests), which signs its operations.
    pub fn owner(&self) -> &PrivateKeySigner {
        &self.owner
    }

    /// `MemberAccount.register(proof, keys)` calldata, the proof bound to `cluster` by the digest
    /// the chain computes.
    pub async fn register_call_data(&self, client: &ChainClient, cluster: Address) -> Bytes {
        let digest: B256 = client
            .registration_digest(cluster, self.account, self.keys.clone())
            .await
            .unwrap();
        let reply = self
            .dstack
            .client()
            .get_key(OWNER_PATH, OWNER_PURPOSE)
            .await
            .unwrap();
        let proof =
            attestmesh_chain::proof::dstack_proof(self.account, OWNER_PURPOSE, &reply, digest)
                .unwrap();
        attestmesh_chain::proof::register_call_data(proof, &self.keys)
    }
}
