//! Signed heartbeats and convergence.
//!
//! Every node sends each peer, every interval (2 s), over UDP inside the mesh, a CBOR heartbeat
//! `{member_id, seq, connected}` signed with its heartbeat Ed25519 key (published to members
//! only in its sealed endpoint envelope). A peer is live only while heartbeats that verify
//! against that key keep arriving from its mesh IP; `seq` is the sender's clock in
//! milliseconds and must grow, so a replayed heartbeat is refused. `connected` is the set of
//! members the sender hears, **self included** (field note 6: a set without self can never
//! equal the receiver's, and a two-node mesh never converged). A node is converged when every
//! live peer reports exactly its own set.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

/// UDP port of heartbeats on the mesh IPs.
pub const HEARTBEAT_PORT: u16 = 51821;
/// How far a heartbeat's clock may be from ours before it is refused (replay window).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// What a heartbeat says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatBody {
    pub member_id: u64,
    /// Sender's clock in ms since the Unix epoch; strictly increasing per sender.
    pub seq: u64,
    /// The members the sender hears, itself included, ascending.
    pub connected: Vec<u64>,
}

/// On the wire: the CBOR body and its Ed25519 signature, CBOR-encoded together.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Wire {
    #[serde(with = "serde_bytes_compat")]
    body: Vec<u8>,
    #[serde(with = "serde_bytes_compat")]
    signature: Vec<u8>,
}

/// Byte strings as CBOR byte strings (not arrays of integers).
mod serde_bytes_compat {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let value = ciborium::Value::deserialize(deserializer)?;
        match value {
            ciborium::Value::Bytes(bytes) => Ok(bytes),
            _ => Err(serde::de::Error::custom("expected a byte string")),
        }
    }
}

/// Why a heartbeat was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeartbeatError {
    #[error("not a heartbeat: {0}")]
    Malformed(String),
    #[error("from {0}, which is not an active member's mesh IP")]
    UnknownSource(Ipv4Addr),
    #[error("claims member {claimed} but comes from member {actual}'s mesh IP")]
    WrongMember { claimed: u64, actual: u64 },
    #[error("member {0} has not sent its endpoint envelope yet (no heartbeat key known)")]
    NoKey(u64),
    #[error("signature does not verify against member {0}'s heartbeat key")]
    BadSignature(u64),
    #[error("replayed or stale (seq {seq} <= last accepted {last})")]
    Replayed { seq: u64, last: u64 },
    #[error("clock {seq} ms is more than the allowed skew from ours ({now} ms)")]
    Skewed { seq: u64, now: u64 },
    #[error("does not list its sender among the connected members")]
    SelfMissing,
}

/// Encodes and signs a heartbeat.
pub fn encode(key: &SigningKey, body: &HeartbeatBody) -> Vec<u8> {
    let mut body_bytes = Vec::new();
    // Serializing plain integers and a vector into a Vec cannot fail.
    let _ = ciborium::into_writer(body, &mut body_bytes);
    let signature = key.sign(&signed(&body_bytes)).to_bytes().to_vec();
    let mut out = Vec::new();
    let _ = ciborium::into_writer(
        &Wire {
            body: body_bytes,
            signature,
        },
        &mut out,
    );
    out
}

fn signed(body: &[u8]) -> Vec<u8> {
    let mut out = b"attestmesh/v1/heartbeat".to_vec();
    out.extend_from_slice(body);
    out
}

/// Decodes and verifies a heartbeat against `key`.
pub fn decode(bytes: &[u8], key: &VerifyingKey) -> Result<HeartbeatBody, HeartbeatError> {
    let wire: Wire =
        ciborium::from_reader(bytes).map_err(|e| HeartbeatError::Malformed(e.to_string()))?;
    let body: HeartbeatBody = ciborium::from_reader(wire.body.as_slice())
        .map_err(|e| HeartbeatError::Malformed(e.to_string()))?;
    let signature: [u8; 64] = wire
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| HeartbeatError::Malformed("signature is not 64 bytes".into()))?;
    key.verify(&signed(&wire.body), &Signature::from_bytes(&signature))
        .map_err(|_| HeartbeatError::BadSignature(body.member_id))?;
    Ok(body)
}

/// Reads the claimed member id without verifying (to pick the key to verify with).
pub fn claimed_member(bytes: &[u8]) -> Result<u64, HeartbeatError> {
    let wire: Wire =
        ciborium::from_reader(bytes).map_err(|e| HeartbeatError::Malformed(e.to_string()))?;
    let body: HeartbeatBody = ciborium::from_reader(wire.body.as_slice())
        .map_err(|e| HeartbeatError::Malformed(e.to_string()))?;
    Ok(body.member_id)
}

/// Liveness and convergence, from verified heartbeats.
#[derive(Debug)]
pub struct Tracker {
    self_id: u64,
    down_after: Duration,
    peers: BTreeMap<u64, PeerView>,
}

#[derive(Debug, Clone)]
struct PeerView {
    last_seq: u64,
    last_seen: Instant,
    connected: BTreeSet<u64>,
}

/// A change of a peer's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Live(u64),
    Down(u64),
}

impl Tracker {
    /// `down_after`: missed beats × interval (3 × 2 s by default).
    pub fn new(self_id: u64, down_after: Duration) -> Self {
        Self {
            self_id,
            down_after,
            peers: BTreeMap::new(),
        }
    }

    /// Accepts a verified heartbeat; refuses a replay or a clock far from ours.
    /// Returns `Live` when the peer was not live before.
    pub fn accept(
        &mut self,
        body: &HeartbeatBody,
        now: Instant,
        now_ms: u64,
    ) -> Result<Option<Transition>, HeartbeatError> {
        if now_ms.abs_diff(body.seq) > MAX_CLOCK_SKEW.as_millis() as u64 {
            return Err(HeartbeatError::Skewed {
                seq: body.seq,
                now: now_ms,
            });
        }
        if !body.connected.contains(&body.member_id) {
            return Err(HeartbeatError::SelfMissing);
        }
        let was_live = self.is_live(body.member_id, now);
        if let Some(view) = self.peers.get(&body.member_id)
            && body.seq <= view.last_seq
        {
            return Err(HeartbeatError::Replayed {
                seq: body.seq,
                last: view.last_seq,
            });
        }
        self.peers.insert(
            body.member_id,
            PeerView {
                last_seq: body.seq,
                last_seen: now,
                connected: body.connected.iter().copied().collect(),
            },
        );
        Ok((!was_live).then_some(Transition::Live(body.member_id)))
    }

    /// Forgets a member (revoked or gone from the chain).
    pub fn remove(&mut self, member_id: u64) {
        self.peers.remove(&member_id);
    }

    fn is_live(&self, member_id: u64, now: Instant) -> bool {
        self.peers
            .get(&member_id)
            .is_some_and(|v| now.duration_since(v.last_seen) < self.down_after)
    }

    /// Peers whose liveness lapsed since the last call's view (report each once).
    pub fn expire(&mut self, now: Instant, reported_live: &mut BTreeSet<u64>) -> Vec<Transition> {
        let mut transitions = Vec::new();
        for id in reported_live.clone() {
            if !self.is_live(id, now) {
                reported_live.remove(&id);
                transitions.push(Transition::Down(id));
            }
        }
        transitions
    }

    /// When the member's last accepted heartbeat arrived.
    pub fn last_seen(&self, member_id: u64) -> Option<Instant> {
        self.peers.get(&member_id).map(|v| v.last_seen)
    }

    /// Live peers (self excluded).
    pub fn live_peers(&self, now: Instant) -> BTreeSet<u64> {
        self.peers
            .keys()
            .copied()
            .filter(|id| self.is_live(*id, now))
            .collect()
    }

    /// What this node reports: itself and every live peer (field note 6: self included).
    pub fn connected_set(&self, now: Instant) -> BTreeSet<u64> {
        let mut set = self.live_peers(now);
        set.insert(self.self_id);
        set
    }

    /// Converged: at least one live peer, and every live peer reports exactly our set.
    pub fn converged(&self, now: Instant) -> bool {
        let mine = self.connected_set(now);
        let live = self.live_peers(now);
        !live.is_empty()
            && live
                .iter()
                .all(|id| self.peers.get(id).is_some_and(|v| v.connected == mine))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEAT: Duration = Duration::from_secs(2);

    fn beat(member_id: u64, seq: u64, connected: &[u64]) -> HeartbeatBody {
        HeartbeatBody {
            member_id,
            seq,
            connected: connected.to_vec(),
        }
    }

    #[test]
    fn signed_round_trip_and_wrong_key() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let bytes = encode(&key, &beat(2, 1000, &[1, 2]));
        assert_eq!(
            decode(&bytes, &key.verifying_key()).unwrap(),
            beat(2, 1000, &[1, 2])
        );
        assert_eq!(claimed_member(&bytes).unwrap(), 2);
        let other = SigningKey::from_bytes(&[8; 32]);
        assert_eq!(
            decode(&bytes, &other.verifying_key()),
            Err(HeartbeatError::BadSignature(2))
        );
        let mut tampered = bytes.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(decode(&tampered, &key.verifying_key()).is_err());
        assert!(matches!(
            decode(b"garbage", &key.verifying_key()),
            Err(HeartbeatError::Malformed(_))
        ));
    }

    /// Field note 6 regression: sets include self, so two nodes converge.
    #[test]
    fn two_nodes_converge_when_sets_include_self() {
        let now = Instant::now();
        let mut node1 = Tracker::new(1, BEAT * 3);
        node1.accept(&beat(2, 1_000, &[1, 2]), now, 1_000).unwrap();
        assert_eq!(node1.connected_set(now), BTreeSet::from([1, 2]));
        assert!(node1.converged(now));
        // The first version's bug: the peer reports its set without itself.
        let mut buggy = Tracker::new(1, BEAT * 3);
        assert_eq!(
            buggy.accept(&beat(2, 1_000, &[1]), now, 1_000),
            Err(HeartbeatError::SelfMissing)
        );
        assert!(!buggy.converged(now));
    }

    #[test]
    fn three_nodes_converge_only_on_equal_views() {
        let now = Instant::now();
        let mut node1 = Tracker::new(1, BEAT * 3);
        node1.accept(&beat(2, 1_000, &[1, 2]), now, 1_000).unwrap();
        node1
            .accept(&beat(3, 1_000, &[1, 2, 3]), now, 1_000)
            .unwrap();
        assert!(!node1.converged(now), "node 2 does not hear node 3 yet");
        node1
            .accept(&beat(2, 3_000, &[1, 2, 3]), now, 3_000)
            .unwrap();
        assert!(node1.converged(now));
    }

    #[test]
    fn replays_stale_clocks_and_silence() {
        let now = Instant::now();
        let mut tracker = Tracker::new(1, BEAT * 3);
        assert_eq!(
            tracker.accept(&beat(2, 5_000, &[1, 2]), now, 5_000),
            Ok(Some(Transition::Live(2)))
        );
        assert!(matches!(
            tracker.accept(&beat(2, 5_000, &[1, 2]), now, 5_000),
            Err(HeartbeatError::Replayed { .. })
        ));
        assert!(matches!(
            tracker.accept(&beat(2, 4_000, &[1, 2]), now, 5_000),
            Err(HeartbeatError::Replayed { .. })
        ));
        assert!(matches!(
            tracker.accept(&beat(2, 500_000, &[1, 2]), now, 5_000),
            Err(HeartbeatError::Skewed { .. })
        ));
        let mut reported = BTreeSet::from([2]);
        assert!(tracker.expire(now + BEAT * 2, &mut reported).is_empty());
        assert_eq!(
            tracker.expire(now + BEAT * 3, &mut reported),
            [Transition::Down(2)]
        );
        assert!(tracker.live_peers(now + BEAT * 3).is_empty());
        assert!(!tracker.converged(now + BEAT * 3));
    }
}
