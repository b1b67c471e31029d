//! The app-message envelopes an operation carries, read from its calldata through the
//! bindings: `execute(send)`, `execute(sendBatch)` and `executeBatch([...])` of those. Only what
//! the message rate limit and the pending-envelope check need: (recipient, envelope id) pairs.
//! Calldata that does not decode carries none here; the cluster's policy denies it anyway.

use alloy::primitives::B256;
use alloy::sol_types::SolCall;
use attestmesh_bindings::cluster::Cluster;
use attestmesh_bindings::member_account::MemberAccount;

/// One envelope: the on-chain message facet allows one use per (recipient, sender, id), so per
/// sender the pair is the envelope's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Envelope {
    pub(crate) recipient: u64,
    pub(crate) id: B256,
}

impl std::fmt::Display for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "(recipient {}, id {})", self.recipient, self.id)
    }
}

/// Every envelope in a member account's calldata, in order (duplicates kept: the policy names
/// them).
pub(crate) fn envelopes(call_data: &[u8]) -> Vec<Envelope> {
    let Some(selector) = call_data.get(..4) else {
        return Vec::new();
    };
    if selector == MemberAccount::executeCall::SELECTOR {
        return MemberAccount::executeCall::abi_decode(call_data)
            .map(|call| cluster_call(&call.data))
            .unwrap_or_default();
    }
    if selector == MemberAccount::executeBatchCall::SELECTOR {
        return MemberAccount::executeBatchCall::abi_decode(call_data)
            .map(|batch| batch.calls.iter().flat_map(|c| cluster_call(c)).collect())
            .unwrap_or_default();
    }
    Vec::new()
}

/// The envelopes of one cluster call (`send` or `sendBatch`; any other call has none).
fn cluster_call(data: &[u8]) -> Vec<Envelope> {
    let Some(selector) = data.get(..4) else {
        return Vec::new();
    };
    if selector == Cluster::sendCall::SELECTOR {
        return Cluster::sendCall::abi_decode(data)
            .map(|send| {
                vec![Envelope {
                    recipient: send.recipientMemberId,
                    id: send.envelopeId,
                }]
            })
            .unwrap_or_default();
    }
    if selector == Cluster::sendBatchCall::SELECTOR {
        return Cluster::sendBatchCall::abi_decode(data)
            .map(|batch| {
                batch
                    .envelopes
                    .iter()
                    .map(|e| Envelope {
                        recipient: e.recipientMemberId,
                        id: e.envelopeId,
                    })
                    .collect()
            })
            .unwrap_or_default();
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use alloy::primitives::Bytes;

    use super::*;

    fn send(recipient: u64, id: u8) -> Bytes {
        Cluster::sendCall {
            recipientMemberId: recipient,
            envelopeId: B256::repeat_byte(id),
            ciphertext: Bytes::from(vec![1; 8]),
        }
        .abi_encode()
        .into()
    }

    fn batch(entries: &[(u64, u8)]) -> Bytes {
        Cluster::sendBatchCall {
            envelopes: entries
                .iter()
                .map(|&(recipient, id)| Cluster::Envelope {
                    recipientMemberId: recipient,
                    envelopeId: B256::repeat_byte(id),
                    ciphertext: Bytes::from(vec![1; 8]),
                })
                .collect(),
        }
        .abi_encode()
        .into()
    }

    fn execute(data: Bytes) -> Vec<u8> {
        MemberAccount::executeCall { data }.abi_encode()
    }

    fn env(recipient: u64, id: u8) -> Envelope {
        Envelope {
            recipient,
            id: B256::repeat_byte(id),
        }
    }

    #[test]
    fn reads_send_send_batch_and_execute_batch() {
        assert_eq!(envelopes(&execute(send(2, 7))), vec![env(2, 7)]);
        assert_eq!(
            envelopes(&execute(batch(&[(2, 1), (3, 1)]))),
            vec![env(2, 1), env(3, 1)]
        );
        let commit = Cluster::commitClusterSharedKeyCall {
            epoch: 0,
            commitment: B256::repeat_byte(9),
        }
        .abi_encode();
        let both = MemberAccount::executeBatchCall {
            calls: vec![commit.clone().into(), batch(&[(4, 4)]), send(5, 5)],
        }
        .abi_encode();
        assert_eq!(envelopes(&both), vec![env(4, 4), env(5, 5)]);
        assert!(envelopes(&execute(commit.into())).is_empty());
    }

    #[test]
    fn calldata_that_does_not_decode_carries_none() {
        assert!(envelopes(&[]).is_empty());
        assert!(envelopes(&[0xde, 0xad, 0xbe, 0xef]).is_empty());
        let mut truncated = execute(send(2, 7));
        truncated.truncate(40);
        assert!(envelopes(&truncated).is_empty());
    }
}
