//! Signed heartbeats and convergence.
//!
//! Every node sends each peer, every interval (2 s), over UDP inside the mesh, a CBOR heartbeat
//! `{member_id, seq, connected}` signed with its heartbeat Ed25519 key (published to members
//! only in its sealed endpoint envelope). A peer is live only while heartbeats that verify
//! against that key keep arriving from its mesh IP; `seq` is the sender's clock in
//! milliseconds and must grow, so a replayed heartbeat is refused. `connected` is the set of
//! members the sender hears, **self included** (field note 6: a set without self can never
//! equal the receiver's, and a two-node mesh never converged).
//!
//! A node is **converged** when a strict majority of its live peers report exactly its own set
//! (see [`Convergence::converged`] for the rule and why); the live peers that report another
//! set are the dissenting ones, reported rather than obeyed once they are a minority (issue
//! 16.6: one member that lies, or is only partly connected, kept every restarting node out of
//! `healthy`).

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

impl HeartbeatError {
    /// The `reason` label of a refused heartbeat on `/metrics`, and its log-limiting key.
    pub fn label(&self) -> &'static str {
        match self {
            HeartbeatError::Malformed(_) => "malformed",
            HeartbeatError::UnknownSource(_) => "unknown_source",
            HeartbeatError::WrongMember { .. } => "wrong_member",
            HeartbeatError::NoKey(_) => "no_key",
            HeartbeatError::BadSignature(_) => "bad_signature",
            HeartbeatError::Replayed { .. } => "replayed",
            HeartbeatError::Skewed { .. } => "skewed",
            HeartbeatError::SelfMissing => "self_missing",
        }
    }
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

    /// How the live peers' reported sets compare with ours.
    pub fn convergence(&self, now: Instant) -> Convergence {
        let mine = self.connected_set(now);
        let mut agreeing = BTreeSet::new();
        let mut dissenting = BTreeMap::new();
        for id in self.live_peers(now) {
            let Some(view) = self.peers.get(&id) else {
                continue;
            };
            if view.connected == mine {
                agreeing.insert(id);
            } else {
                dissenting.insert(id, view.connected.clone());
            }
        }
        Convergence {
            mine,
            agreeing,
            dissenting,
        }
    }

    /// [`Convergence::converged`] now.
    pub fn converged(&self, now: Instant) -> bool {
        self.convergence(now).converged()
    }
}

/// This node's set against what its live peers report ([`Tracker::convergence`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Convergence {
    /// This node's set: itself and every live peer.
    pub mine: BTreeSet<u64>,
    /// Live peers that report exactly `mine`.
    pub agreeing: BTreeSet<u64>,
    /// Live peers that report another set, with the set each reports.
    pub dissenting: BTreeMap<u64, BTreeSet<u64>>,
}

impl Convergence {
    /// Live peers (self excluded).
    pub fn live(&self) -> usize {
        self.agreeing.len() + self.dissenting.len()
    }

    /// Agreeing live peers needed: a strict majority of the live peers, this node not counted.
    pub fn quorum(&self) -> usize {
        self.live() / 2 + 1
    }

    /// Converged: at least one live peer, and a strict majority of the live peers (more than
    /// half; this node not counted) report exactly this node's set.
    ///
    /// * One or two live peers (a two- or three-node cluster): the majority is **all** of them.
    ///   There is no minority to outvote: nothing tells a peer that lies from an honest one
    ///   that is only partly connected, and one peer's word against another's is no majority.
    /// * Three or more live peers (a cluster of four or more): up to ⌊(live − 1) / 2⌋ peers
    ///   may dissent (one of 3 or 4, two of 5 or 6, …) and the node still converges; the
    ///   dissenting peers are reported ([`Convergence::dissenting`]) instead of blocking it.
    ///   Half or more dissenting is not a minority, and blocks, as a real partition should.
    ///
    /// This node does not vote: it always agrees with itself, and counting it would let one
    /// corroborating peer outvote one dissenter in a three-node cluster. A minority cannot
    /// make a node converge either: peers that falsely claim our set could always do so, and
    /// with fewer than half of the live peers lying, at least one honest peer corroborates.
    pub fn converged(&self) -> bool {
        self.live() > 0 && self.agreeing.len() >= self.quorum()
    }

    /// What a node that has not converged waits for, with the peers that report otherwise.
    pub fn waiting_for(&self) -> String {
        let mut text = format!(
            "waiting for a majority of the live peers ({} of {}) to report this node's member set {:?}",
            self.quorum(),
            self.live(),
            self.mine
        );
        if !self.dissenting.is_empty() {
            text.push_str(&format!("; {}", self.describe_dissent()));
        }
        text
    }

    /// The dissenting peers and what each reports, for logs.
    pub fn describe_dissent(&self) -> String {
        let each: Vec<String> = self
            .dissenting
            .iter()
            .map(|(id, set)| format!("member {id} reports {set:?}"))
            .collect();
        each.join(", ")
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

    /// A tracker for node 1 whose live peers report the given sets.
    fn reports(now: Instant, sets: &[(u64, &[u64])]) -> Tracker {
        let mut tracker = Tracker::new(1, BEAT * 3);
        for (id, set) in sets {
            tracker.accept(&beat(*id, 1_000, set), now, 1_000).unwrap();
        }
        tracker
    }

    /// Issue 16.6 regression: one member reporting a false set no longer keeps a node of a
    /// four-node cluster from converging; it is reported as dissenting instead.
    #[test]
    fn a_lying_minority_is_outvoted_and_reported() {
        let now = Instant::now();
        let all: &[u64] = &[1, 2, 3, 4];
        let tracker = reports(now, &[(2, all), (3, all), (4, &[4])]);
        let convergence = tracker.convergence(now);
        assert_eq!(convergence.mine, BTreeSet::from([1, 2, 3, 4]));
        assert_eq!(convergence.agreeing, BTreeSet::from([2, 3]));
        assert_eq!(
            convergence.dissenting,
            BTreeMap::from([(4, BTreeSet::from([4]))])
        );
        assert_eq!(convergence.quorum(), 2);
        assert!(convergence.converged());
        assert!(tracker.converged(now));
        assert_eq!(convergence.describe_dissent(), "member 4 reports {4}");
        // A partly connected member (it does not hear node 3) is a minority the same way.
        let partial = reports(now, &[(2, all), (3, all), (4, &[1, 2, 4])]);
        assert!(partial.converged(now));
    }

    #[test]
    fn half_or_more_dissenting_blocks() {
        let now = Instant::now();
        let all: &[u64] = &[1, 2, 3, 4];
        // Four nodes, two peers of three dissent: no majority.
        let tracker = reports(now, &[(2, all), (3, &[1, 3, 4]), (4, &[4])]);
        let convergence = tracker.convergence(now);
        assert!(!convergence.converged());
        assert_eq!(convergence.agreeing, BTreeSet::from([2]));
        let waiting = convergence.waiting_for();
        assert!(
            waiting.contains("2 of 3")
                && waiting.contains("member 3 reports {1, 3, 4}")
                && waiting.contains("member 4 reports {4}"),
            "{waiting}"
        );
        // Five nodes: one dissenter of four is outvoted, two of four (a tie) are not.
        let five: &[u64] = &[1, 2, 3, 4, 5];
        assert!(reports(now, &[(2, five), (3, five), (4, five), (5, &[5])]).converged(now));
        assert!(!reports(now, &[(2, five), (3, five), (4, &[4]), (5, &[5])]).converged(now));
        // Six nodes: two dissenters of five are a minority.
        let six: &[u64] = &[1, 2, 3, 4, 5, 6];
        assert!(
            reports(
                now,
                &[(2, six), (3, six), (4, six), (5, &[5]), (6, &[1, 6])]
            )
            .converged(now)
        );
    }

    /// Two and three nodes have no minority to outvote: every live peer must agree, as before.
    #[test]
    fn two_and_three_node_clusters_still_need_every_peer() {
        let now = Instant::now();
        assert!(reports(now, &[(2, &[1, 2])]).converged(now));
        assert!(!reports(now, &[(2, &[2])]).converged(now));
        let three: &[u64] = &[1, 2, 3];
        assert!(reports(now, &[(2, three), (3, three)]).converged(now));
        let one_lies = reports(now, &[(2, three), (3, &[3])]);
        let convergence = one_lies.convergence(now);
        assert_eq!(convergence.quorum(), 2);
        assert!(!convergence.converged());
        assert_eq!(
            convergence.dissenting.keys().copied().collect::<Vec<_>>(),
            [3]
        );
        // No live peer: never converged.
        let alone = Tracker::new(1, BEAT * 3);
        assert!(!alone.converged(now));
        assert_eq!(alone.convergence(now).live(), 0);
    }

    /// Only live peers vote: a dissenter that went silent no longer counts, in either column.
    #[test]
    fn only_live_peers_vote() {
        let start = Instant::now();
        let mut tracker = Tracker::new(1, BEAT * 3);
        tracker.accept(&beat(4, 1_000, &[4]), start, 1_000).unwrap();
        let later = start + BEAT * 2;
        tracker
            .accept(&beat(2, 3_000, &[1, 2, 3]), later, 3_000)
            .unwrap();
        tracker
            .accept(&beat(3, 3_000, &[1, 2, 3]), later, 3_000)
            .unwrap();
        assert!(
            !tracker.converged(later),
            "node 4 is live and not in their sets"
        );
        let after = start + BEAT * 3;
        let convergence = tracker.convergence(after);
        assert_eq!(convergence.mine, BTreeSet::from([1, 2, 3]));
        assert!(convergence.dissenting.is_empty());
        assert!(convergence.converged());
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
