//! The Cluster Shared Key: derivation, commitment, hand-off over the mesh, restart recovery.
//!
//! * The first registrant (member 1, the originator) derives the CSK from the TEE
//!   (GetKey `/attestmesh/v1/csk`) and commits keccak256(CSK) on chain with a sponsored call.
//! * Every other member pulls it from a live peer: a TCP request on the peer's mesh IP (port
//!   51822, inside the WireGuard tunnel) signed by the requester's identity key; the responder
//!   answers only an active, live member whose signature verifies against its on-chain key, with
//!   the CSK sealed to the requester's on-chain X25519 key ([`crate::messages`], kind
//!   `ClusterSharedKey`); the requester checks keccak256 against the commitment and tries the
//!   next live peer on any failure.
//! * After a restart the originator re-derives and verifies against the commitment before
//!   anything else (field note 7: a sealed store that came back empty made every node wait for
//!   every other); the others re-pull. Nobody waits on a node that waits on it.
//! * Custody: memory only, zeroized on drop, never logged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{B256, keccak256};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::RwLock;
use tracing::{debug, info, warn};
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::messages::{self, Context, Kind};

pub const CSK_PATH: &str = "/attestmesh/v1/csk";
pub const CSK_PURPOSE: &str = "attestmesh-csk";
/// TCP port of the CSK service on the mesh IPs.
pub const CSK_PORT: u16 = 51822;
const MAX_FRAME: usize = 8 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_SKEW_MS: u64 = 60_000;

/// The Cluster Shared Key: zeroized on drop, and its `Debug` never shows it.
pub struct SharedKey(Zeroizing<[u8; 32]>);

impl SharedKey {
    pub fn new(key: Zeroizing<[u8; 32]>) -> Self {
        Self(key)
    }
}

impl std::ops::Deref for SharedKey {
    type Target = [u8; 32];

    fn deref(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedKey(<redacted>)")
    }
}

/// Where the node holds the CSK: memory only.
pub type CskSlot = Arc<RwLock<Option<SharedKey>>>;

/// A signed request for the CSK.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Request {
    requester: u64,
    nonce: [u8; 32],
    timestamp_ms: u64,
    #[serde(with = "sig_bytes")]
    signature: [u8; 64],
}

mod sig_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 64], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 64], D::Error> {
        match ciborium::Value::deserialize(deserializer)? {
            ciborium::Value::Bytes(bytes) => bytes
                .try_into()
                .map_err(|_| serde::de::Error::custom("signature is not 64 bytes")),
            _ => Err(serde::de::Error::custom("expected a byte string")),
        }
    }
}

fn request_message(
    chain_id: u64,
    cluster: &[u8; 20],
    requester: u64,
    nonce: &[u8; 32],
    timestamp_ms: u64,
) -> Vec<u8> {
    let mut out = b"attestmesh/v1/csk-request".to_vec();
    out.extend_from_slice(&chain_id.to_be_bytes());
    out.extend_from_slice(cluster);
    out.extend_from_slice(&requester.to_be_bytes());
    out.extend_from_slice(nonce);
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out
}

/// Why a hand-off failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CskError {
    #[error("transport: {0}")]
    Io(String),
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("the reply does not open: {0}")]
    Seal(messages::MessageError),
    #[error("the key does not match the on-chain commitment (a wrong or malicious peer)")]
    CommitmentMismatch,
}

/// What the responder needs to decide and answer.
pub trait Authority: Send + Sync + 'static {
    /// The member's on-chain Ed25519 and X25519 keys, if it is an active member.
    fn active_member_keys(
        &self,
        member_id: u64,
    ) -> impl Future<Output = Option<([u8; 32], [u8; 32])>> + Send;
    /// Whether the member's heartbeats currently verify.
    fn is_live(&self, member_id: u64) -> impl Future<Output = bool> + Send;
}

/// Chain and cluster binding, and this node's keys.
#[derive(Clone)]
pub struct Local {
    pub chain_id: u64,
    pub cluster: [u8; 20],
    pub member_id: u64,
    pub identity: SigningKey,
    pub x25519: StaticSecret,
}

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local")
            .field("chain_id", &self.chain_id)
            .field("member_id", &self.member_id)
            .finish_non_exhaustive()
    }
}

async fn write_frame(stream: &mut TcpStream, bytes: &[u8]) -> Result<(), CskError> {
    let len =
        u32::try_from(bytes.len()).map_err(|_| CskError::Malformed("frame too large".into()))?;
    stream
        .write_all(&len.to_be_bytes())
        .await
        .map_err(|e| CskError::Io(e.to_string()))?;
    stream
        .write_all(bytes)
        .await
        .map_err(|e| CskError::Io(e.to_string()))
}

async fn read_frame(stream: &mut TcpStream) -> Result<Vec<u8>, CskError> {
    let mut len = [0u8; 4];
    stream
        .read_exact(&mut len)
        .await
        .map_err(|e| CskError::Io(e.to_string()))?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(CskError::Malformed(format!("frame of {len} bytes")));
    }
    let mut bytes = vec![0u8; len];
    stream
        .read_exact(&mut bytes)
        .await
        .map_err(|e| CskError::Io(e.to_string()))?;
    Ok(bytes)
}

/// Serves CSK requests on `listener` until the task is dropped.
pub async fn serve<A: Authority>(
    listener: TcpListener,
    local: Local,
    csk: CskSlot,
    authority: Arc<A>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(target: "attestmesh::csk", %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (local, csk, authority) = (local.clone(), csk.clone(), authority.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(IO_TIMEOUT, answer(stream, &local, &csk, authority.as_ref()))
                .await
            {
                Ok(Ok(requester)) => {
                    info!(target: "attestmesh::csk", requester, %peer, "CSK handed over")
                }
                Ok(Err(error)) => {
                    warn!(target: "attestmesh::csk", %peer, %error, "CSK request refused")
                }
                Err(_) => warn!(target: "attestmesh::csk", %peer, "CSK request timed out"),
            }
        });
    }
}

/// Reads one request and writes the reply: status 0 + the sealed key, or 1 + the reason.
async fn answer<A: Authority>(
    mut stream: TcpStream,
    local: &Local,
    csk: &CskSlot,
    authority: &A,
) -> Result<u64, CskError> {
    let result = decide(&mut stream, local, csk, authority).await;
    let reply = match &result {
        Ok((_, sealed)) => [&[0u8][..], sealed].concat(),
        Err(error) => [&[1u8][..], error.to_string().as_bytes()].concat(),
    };
    write_frame(&mut stream, &reply).await?;
    result.map(|(requester, _)| requester)
}

async fn decide<A: Authority>(
    stream: &mut TcpStream,
    local: &Local,
    csk: &CskSlot,
    authority: &A,
) -> Result<(u64, Vec<u8>), CskError> {
    let bytes = read_frame(stream).await?;
    let request: Request =
        ciborium::from_reader(bytes.as_slice()).map_err(|e| CskError::Malformed(e.to_string()))?;
    let (ed25519, x25519) = authority
        .active_member_keys(request.requester)
        .await
        .ok_or_else(|| {
            CskError::Refused(format!(
                "member {} is not an active member",
                request.requester
            ))
        })?;
    let key = VerifyingKey::from_bytes(&ed25519)
        .map_err(|_| CskError::Refused("invalid on-chain identity key".into()))?;
    let message = request_message(
        local.chain_id,
        &local.cluster,
        request.requester,
        &request.nonce,
        request.timestamp_ms,
    );
    key.verify(&message, &Signature::from_bytes(&request.signature))
        .map_err(|_| {
            CskError::Refused(format!("signature is not member {}'s", request.requester))
        })?;
    if crate::cluster::now_ms().abs_diff(request.timestamp_ms) > MAX_SKEW_MS {
        return Err(CskError::Refused("request is stale".into()));
    }
    if !authority.is_live(request.requester).await {
        return Err(CskError::Refused(format!(
            "member {} is not live (no verified heartbeats)",
            request.requester
        )));
    }
    let guard = csk.read().await;
    let key = guard
        .as_ref()
        .ok_or_else(|| CskError::Refused("this node does not hold the CSK yet".into()))?;
    let context = Context {
        chain_id: local.chain_id,
        cluster: local.cluster,
        sender_id: local.member_id,
        recipient_id: request.requester,
        envelope_id: request.nonce,
    };
    let sealed = messages::seal(
        &local.identity,
        &x25519,
        &context,
        Kind::ClusterSharedKey,
        key.as_ref(),
    )
    .map_err(CskError::Seal)?;
    Ok((request.requester, sealed))
}

/// A peer that may hold the CSK.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub member_id: u64,
    pub address: SocketAddr,
    /// Its on-chain Ed25519 key (the sealed reply is signed with it).
    pub ed25519: [u8; 32],
}

/// Asks one peer for the CSK and checks it against `commitment`.
pub async fn pull_from(
    local: &Local,
    candidate: &Candidate,
    commitment: B256,
) -> Result<Zeroizing<[u8; 32]>, CskError> {
    let nonce = messages::new_envelope_id();
    let timestamp_ms = crate::cluster::now_ms();
    let signature = local
        .identity
        .sign(&request_message(
            local.chain_id,
            &local.cluster,
            local.member_id,
            &nonce,
            timestamp_ms,
        ))
        .to_bytes();
    let request = Request {
        requester: local.member_id,
        nonce,
        timestamp_ms,
        signature,
    };
    let mut bytes = Vec::new();
    ciborium::into_writer(&request, &mut bytes).map_err(|e| CskError::Malformed(e.to_string()))?;
    let reply = tokio::time::timeout(IO_TIMEOUT, async {
        let mut stream = TcpStream::connect(candidate.address)
            .await
            .map_err(|e| CskError::Io(e.to_string()))?;
        write_frame(&mut stream, &bytes).await?;
        read_frame(&mut stream).await
    })
    .await
    .map_err(|_| CskError::Io("timed out".into()))??;
    let (status, body) = reply
        .split_first()
        .ok_or_else(|| CskError::Malformed("empty reply".into()))?;
    if *status != 0 {
        return Err(CskError::Refused(
            String::from_utf8_lossy(body).into_owned(),
        ));
    }
    let context = Context {
        chain_id: local.chain_id,
        cluster: local.cluster,
        sender_id: candidate.member_id,
        recipient_id: local.member_id,
        envelope_id: nonce,
    };
    let (kind, payload) = messages::open(&local.x25519, &candidate.ed25519, &context, body)
        .map_err(CskError::Seal)?;
    let key: [u8; 32] = payload
        .as_slice()
        .try_into()
        .map_err(|_| CskError::Malformed(format!("a CSK of {} bytes", payload.len())))?;
    let key = Zeroizing::new(key);
    if kind != Kind::ClusterSharedKey || keccak256(key.as_ref()) != commitment {
        return Err(CskError::CommitmentMismatch);
    }
    Ok(key)
}

/// Tries each candidate in turn until one hands over a key matching the commitment.
pub async fn pull(
    local: &Local,
    candidates: &[Candidate],
    commitment: B256,
) -> Result<Zeroizing<[u8; 32]>, Vec<(u64, CskError)>> {
    let mut failures = Vec::new();
    for candidate in candidates {
        match pull_from(local, candidate, commitment).await {
            Ok(key) => {
                info!(target: "attestmesh::csk", from = candidate.member_id, "CSK obtained and matches the commitment");
                return Ok(key);
            }
            Err(error) => {
                warn!(target: "attestmesh::csk", peer = candidate.member_id, %error, "CSK pull failed; trying the next live peer");
                failures.push((candidate.member_id, error));
            }
        }
    }
    debug!(target: "attestmesh::csk", tried = candidates.len(), "no peer handed over the CSK");
    Err(failures)
}

/// The commitment of a key.
pub fn commitment_of(key: &[u8; 32]) -> B256 {
    keccak256(key)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    struct TestAuthority {
        members: BTreeMap<u64, ([u8; 32], [u8; 32])>,
        live: Vec<u64>,
    }

    impl Authority for TestAuthority {
        async fn active_member_keys(&self, member_id: u64) -> Option<([u8; 32], [u8; 32])> {
            self.members.get(&member_id).copied()
        }

        async fn is_live(&self, member_id: u64) -> bool {
            self.live.contains(&member_id)
        }
    }

    fn local(member_id: u64) -> Local {
        Local {
            chain_id: 31337,
            cluster: [9; 20],
            member_id,
            identity: SigningKey::from_bytes(&[member_id as u8; 32]),
            x25519: StaticSecret::from([member_id as u8 + 100; 32]),
        }
    }

    fn keys(l: &Local) -> ([u8; 32], [u8; 32]) {
        (
            l.identity.verifying_key().to_bytes(),
            x25519_dalek::PublicKey::from(&l.x25519).to_bytes(),
        )
    }

    /// Starts a responder for `responder` holding `key`; returns its candidate entry.
    async fn responder(responder: &Local, key: [u8; 32], authority: TestAuthority) -> Candidate {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let slot: CskSlot = Arc::new(RwLock::new(Some(SharedKey::new(Zeroizing::new(key)))));
        tokio::spawn(serve(
            listener,
            responder.clone(),
            slot,
            Arc::new(authority),
        ));
        Candidate {
            member_id: responder.member_id,
            address,
            ed25519: responder.identity.verifying_key().to_bytes(),
        }
    }

    fn authority_for(requester: &Local, live: bool) -> TestAuthority {
        TestAuthority {
            members: BTreeMap::from([(requester.member_id, keys(requester))]),
            live: if live {
                vec![requester.member_id]
            } else {
                vec![]
            },
        }
    }

    #[tokio::test]
    async fn a_wrong_key_is_caught_by_the_commitment_and_the_next_peer_is_tried() {
        let csk = [42u8; 32];
        let requester = local(3);
        let liar = responder(&local(2), [66; 32], authority_for(&requester, true)).await;
        let honest = responder(&local(1), csk, authority_for(&requester, true)).await;
        assert_eq!(
            pull_from(&requester, &liar, commitment_of(&csk))
                .await
                .unwrap_err(),
            CskError::CommitmentMismatch
        );
        let key = pull(&requester, &[liar, honest], commitment_of(&csk))
            .await
            .unwrap();
        assert_eq!(*key, csk);
    }

    #[tokio::test]
    async fn non_members_revoked_and_silent_members_are_refused() {
        let csk = [42u8; 32];
        let requester = local(3);
        // Not an (active) member: a revoked member is absent from the active set.
        let stranger = responder(
            &local(1),
            csk,
            TestAuthority {
                members: BTreeMap::new(),
                live: vec![3],
            },
        )
        .await;
        assert!(
            matches!(pull_from(&requester, &stranger, commitment_of(&csk)).await, Err(CskError::Refused(r)) if r.contains("not an active member"))
        );
        // A member without verified heartbeats.
        let silent = responder(&local(1), csk, authority_for(&requester, false)).await;
        assert!(
            matches!(pull_from(&requester, &silent, commitment_of(&csk)).await, Err(CskError::Refused(r)) if r.contains("not live"))
        );
        // Someone claiming member 3's id with another key.
        let impostor = Local {
            identity: SigningKey::from_bytes(&[77; 32]),
            ..local(3)
        };
        let checked = responder(&local(1), csk, authority_for(&requester, true)).await;
        assert!(
            matches!(pull_from(&impostor, &checked, commitment_of(&csk)).await, Err(CskError::Refused(r)) if r.contains("signature"))
        );
    }

    #[tokio::test]
    async fn a_node_without_the_key_says_so() {
        let requester = local(3);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let empty: CskSlot = Arc::new(RwLock::new(None));
        let responder_local = local(1);
        tokio::spawn(serve(
            listener,
            responder_local.clone(),
            empty,
            Arc::new(authority_for(&requester, true)),
        ));
        let candidate = Candidate {
            member_id: 1,
            address,
            ed25519: responder_local.identity.verifying_key().to_bytes(),
        };
        assert!(
            matches!(pull_from(&requester, &candidate, B256::ZERO).await, Err(CskError::Refused(r)) if r.contains("does not hold"))
        );
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let key = SharedKey::new(Zeroizing::new([0xab; 32]));
        let text = format!("{key:?} {:?}", Some(&key));
        assert!(
            !text.contains("171") && !text.to_lowercase().contains("ab, ab"),
            "{text}"
        );
    }
}
