//! Endpoint envelopes: how a node tells each member, sealed to that member alone (via the
//! Message facet), where to reach it and which keys to expect there: its gateway route, the
//! fingerprint of its transport TLS certificate, and its heartbeat key. Peers learn heartbeat
//! keys only from these.
//!
//! The envelope id is deterministic — keccak256("attestmesh/v1/endpoint" ‖ sender ‖ recipient ‖
//! keccak256(payload)) — so a restarted node sees on chain (`isEnvelopeUsed(recipient, sender,
//! id)`, keyed by sender so no other member can take the id first) that an unchanged envelope
//! was already delivered and sends nothing, and a changed one gets a new id. The outbox
//! (`crate::outbox`) sends them in batches.

use alloy::primitives::{B256, keccak256};
use serde::{Deserialize, Serialize};

/// What an endpoint envelope carries (CBOR).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointEnvelope {
    /// The sender's member id (also bound by the sealing context).
    pub member_id: u64,
    /// The gateway domain the sender is reached through (`<app_id>-<port>s.<domain>`).
    pub gateway_domain: String,
    /// The sender's transport port (the `<port>` of the route).
    pub transport_port: u16,
    /// SHA-256 of the sender's transport TLS certificate (pinned by the dialer).
    pub tls_fingerprint: [u8; 32],
    /// The Ed25519 key the sender's heartbeats are signed with.
    pub heartbeat_key: [u8; 32],
}

impl EndpointEnvelope {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding integers, strings and byte arrays into a Vec cannot fail.
        let _ = ciborium::into_writer(self, &mut out);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        ciborium::from_reader(bytes)
            .map_err(|e| format!("endpoint envelope is not valid CBOR: {e}"))
    }

    /// The deterministic envelope id for this content from `sender` to `recipient`.
    pub fn envelope_id(&self, sender: u64, recipient: u64) -> B256 {
        let mut input = b"attestmesh/v1/endpoint".to_vec();
        input.extend_from_slice(&sender.to_be_bytes());
        input.extend_from_slice(&recipient.to_be_bytes());
        input.extend_from_slice(keccak256(self.encode()).as_slice());
        keccak256(input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EndpointEnvelope {
        EndpointEnvelope {
            member_id: 3,
            gateway_domain: "devnet.attestmesh.local".into(),
            transport_port: 51820,
            tls_fingerprint: [1; 32],
            heartbeat_key: [2; 32],
        }
    }

    #[test]
    fn round_trip_and_deterministic_ids() {
        let envelope = sample();
        assert_eq!(
            EndpointEnvelope::decode(&envelope.encode()).unwrap(),
            envelope
        );
        assert_eq!(
            envelope.envelope_id(3, 1),
            sample().envelope_id(3, 1),
            "same content, same id"
        );
        assert_ne!(
            envelope.envelope_id(3, 1),
            envelope.envelope_id(3, 2),
            "per recipient"
        );
        let mut moved = sample();
        moved.transport_port = 51830;
        assert_ne!(
            moved.envelope_id(3, 1),
            envelope.envelope_id(3, 1),
            "changed content, new id"
        );
        assert!(EndpointEnvelope::decode(b"nope").is_err());
    }
}
