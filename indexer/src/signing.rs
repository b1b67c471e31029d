//! The indexer's signature over every pushed event. The bytes signed are
//! [`attestmesh_proto::indexer::v1::signing_payload`], the one canonical encoding nodes verify
//! against; this module only fills the protobuf body from a chain log and signs it.

use alloy::rpc::types::Log;
use attestmesh_proto::indexer::v1::{self as pb, signed_event::Body, signing_payload};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

/// The GetKey path of the indexer's Ed25519 key (only the path changes a dstack key).
pub const KEY_PATH: &str = "/attestmesh/v1/indexer";
/// The purpose the key's signature chain is labelled with.
pub const KEY_PURPOSE: &str = "attestmesh-indexer-ed25519";

/// A log the chain returned without its provenance (a pending log): never pushed.
#[derive(Debug, thiserror::Error)]
#[error("the RPC returned a log without {missing} (a pending log?); it cannot be pushed")]
pub struct IncompleteLog {
    pub missing: &'static str,
}

/// Why a pushed event does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("the event has no body")]
    NoBody,
    #[error("the signature is {0} bytes, not 64")]
    SignatureLength(usize),
    #[error("the signature does not verify with the indexer's registered key")]
    BadSignature,
    #[error("the registered key is not a valid Ed25519 public key")]
    BadKey,
}

/// Signs events for one chain with the indexer's key.
pub struct EventSigner {
    key: SigningKey,
    chain_id: u64,
}

impl std::fmt::Debug for EventSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSigner")
            .field("public_key", &hex::encode(self.public_key()))
            .field("chain_id", &self.chain_id)
            .finish()
    }
}

impl EventSigner {
    pub fn new(key: SigningKey, chain_id: u64) -> Self {
        Self { key, chain_id }
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// Signs `body` as an event of this chain.
    pub fn sign(&self, body: Body) -> pb::SignedEvent {
        let signature = self.key.sign(&signing_payload(self.chain_id, &body));
        pb::SignedEvent {
            chain_id: self.chain_id,
            body: Some(body),
            signature: signature.to_bytes().to_vec(),
        }
    }

    /// Signs a chain log with its provenance.
    pub fn sign_log(&self, log: &Log) -> Result<pb::SignedEvent, IncompleteLog> {
        Ok(self.sign(Body::Log(chain_log(log)?)))
    }

    /// Signs a reorg notice.
    pub fn sign_reorg(&self, from_block: u64) -> pb::SignedEvent {
        self.sign(Body::Reorg(pb::Reorg { from_block }))
    }
}

/// The protobuf form of a mined log.
pub fn chain_log(log: &Log) -> Result<pb::ChainLog, IncompleteLog> {
    let missing = |missing| IncompleteLog { missing };
    Ok(pb::ChainLog {
        block_number: log.block_number.ok_or(missing("a block number"))?,
        block_hash: log.block_hash.ok_or(missing("a block hash"))?.to_vec(),
        transaction_hash: log
            .transaction_hash
            .ok_or(missing("a transaction hash"))?
            .to_vec(),
        transaction_index: log
            .transaction_index
            .ok_or(missing("a transaction index"))?,
        log_index: log.log_index.ok_or(missing("a log index"))?,
        address: log.address().to_vec(),
        topics: log.topics().iter().map(|t| t.to_vec()).collect(),
        data: log.data().data.to_vec(),
    })
}

/// Verifies an event's signature against `public_key` (what a node does with the key from the
/// IndexerRegistry; the agent's client does the same with the same payload function).
pub fn verify(public_key: &[u8; 32], event: &pb::SignedEvent) -> Result<(), VerifyError> {
    let body = event.body.as_ref().ok_or(VerifyError::NoBody)?;
    let key = VerifyingKey::from_bytes(public_key).map_err(|_| VerifyError::BadKey)?;
    let bytes: [u8; 64] = event
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| VerifyError::SignatureLength(event.signature.len()))?;
    key.verify(
        &signing_payload(event.chain_id, body),
        &Signature::from_bytes(&bytes),
    )
    .map_err(|_| VerifyError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> pb::ChainLog {
        pb::ChainLog {
            block_number: 47_000_123,
            block_hash: vec![1; 32],
            transaction_hash: vec![2; 32],
            transaction_index: 3,
            log_index: 4,
            address: vec![5; 20],
            topics: vec![vec![6; 32], vec![7; 32]],
            data: vec![8; 40],
        }
    }

    #[test]
    fn a_signed_event_verifies_and_any_changed_field_breaks_it() {
        let signer = EventSigner::new(SigningKey::from_bytes(&[9; 32]), 8453);
        let key = signer.public_key();
        let good = signer.sign(Body::Log(sample()));
        assert_eq!(verify(&key, &good), Ok(()));

        type Mutation = Box<dyn Fn(&mut pb::SignedEvent)>;
        let mutations: Vec<(&str, Mutation)> = vec![
            ("chain id", Box::new(|e| e.chain_id = 1)),
            ("block number", Box::new(|e| log_mut(e).block_number += 1)),
            ("block hash", Box::new(|e| log_mut(e).block_hash[0] ^= 1)),
            (
                "tx hash",
                Box::new(|e| log_mut(e).transaction_hash[31] ^= 1),
            ),
            ("tx index", Box::new(|e| log_mut(e).transaction_index += 1)),
            ("log index", Box::new(|e| log_mut(e).log_index += 1)),
            ("address", Box::new(|e| log_mut(e).address[0] ^= 1)),
            ("topic", Box::new(|e| log_mut(e).topics[1][0] ^= 1)),
            ("topic dropped", Box::new(|e| drop(log_mut(e).topics.pop()))),
            ("data", Box::new(|e| log_mut(e).data.push(0))),
            // Moving a byte from one field to the next must not keep the signature valid.
            (
                "field boundary",
                Box::new(|e| {
                    let log = log_mut(e);
                    let byte = log.data.remove(0);
                    log.topics[1].push(byte);
                }),
            ),
        ];
        for (what, mutate) in mutations {
            let mut event = good.clone();
            mutate(&mut event);
            assert_eq!(
                verify(&key, &event),
                Err(VerifyError::BadSignature),
                "{what}"
            );
        }
        let other = EventSigner::new(SigningKey::from_bytes(&[10; 32]), 8453);
        assert_eq!(
            verify(&other.public_key(), &good),
            Err(VerifyError::BadSignature)
        );
        let reorg = signer.sign_reorg(47_000_100);
        assert_eq!(verify(&key, &reorg), Ok(()));
        let mut moved = reorg.clone();
        moved.body = Some(Body::Reorg(pb::Reorg {
            from_block: 47_000_000,
        }));
        assert_eq!(verify(&key, &moved), Err(VerifyError::BadSignature));
    }

    fn log_mut(event: &mut pb::SignedEvent) -> &mut pb::ChainLog {
        match event.body.as_mut() {
            Some(Body::Log(log)) => log,
            _ => panic!("not a log event"),
        }
    }
}
