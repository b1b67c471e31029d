//! The Cluster Shared Key, by epoch: derivation, commitment, hand-off over the mesh, rotation,
//! restart recovery.
//!
//! * Every epoch has an originator the chain names (`Cluster.currentCskEpoch`: the lowest active
//!   member id when the epoch opened). It derives that epoch's key from its TEE (GetKey
//!   [`epoch_key_path`]; the path holds the epoch, so every epoch's key differs and only the
//!   originator's TEE can derive it) and commits keccak256(key) on chain with a sponsored call.
//! * Every other member pulls the key from a live peer: a TCP request on the peer's mesh IP (port
//!   51822, inside the WireGuard tunnel) naming the epoch, signed by the requester's identity key.
//!   The responder answers only an active, live member whose signature verifies against its
//!   on-chain key, for the current epoch or (during its grace window) the previous one, with the
//!   key sealed to the requester's on-chain X25519 key ([`crate::messages`], kind
//!   `ClusterSharedKey`); the requester checks keccak256 against the epoch's commitment and tries
//!   the next live peer on any failure.
//! * Revoking a member opens a new epoch: the revoked member is refused every request (it is not
//!   active), so it never obtains a key opened after its revocation. The previous key stays
//!   available for the grace window the owner set, so apps can re-encrypt.
//! * After a restart the originator re-derives and verifies against the commitment before
//!   anything else (field note 7, per epoch: a sealed store that came back empty made every node
//!   wait for every other); the others re-pull. Nobody waits on a node that waits on it.
//! * Custody: memory only, zeroized on drop, never logged.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::{B256, keccak256};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, RwLock, watch};
use tracing::{debug, info, warn};
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::log_limit::LogLimiter;
use crate::messages::{self, Context, Kind};

pub const CSK_PURPOSE: &str = "attestmesh-csk";
/// TCP port of the CSK service on the mesh IPs.
pub const CSK_PORT: u16 = 51822;
const MAX_FRAME: usize = 8 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_SKEW_MS: u64 = 60_000;

/// The GetKey path of an epoch's key (only the epoch's originator derives it).
pub fn epoch_key_path(epoch: u64) -> String {
    format!("/attestmesh/v1/csk/epoch/{epoch}")
}

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

/// One epoch's key.
#[derive(Debug)]
pub struct EpochKey {
    pub epoch: u64,
    pub key: SharedKey,
}

/// The keys a node holds: the current epoch's and, during its grace window, the previous one's.
#[derive(Debug, Default)]
struct KeyRing {
    current: Option<EpochKey>,
    /// The previous epoch's key and the unix time (seconds) its grace window ends.
    previous: Option<(EpochKey, u64)>,
}

/// A copy of what the node holds, for the app API.
#[derive(Debug)]
pub struct HeldKeys {
    pub current: Option<(u64, Zeroizing<[u8; 32]>)>,
    /// (epoch, key, grace window end in unix seconds).
    pub previous: Option<(u64, Zeroizing<[u8; 32]>, u64)>,
}

/// Where the node holds its CSKs: memory only. Cheap to clone (shared). Subscribers learn of
/// every epoch the node comes to hold.
#[derive(Debug, Clone)]
pub struct CskKeys {
    ring: Arc<RwLock<KeyRing>>,
    held: watch::Sender<Option<u64>>,
}

impl Default for CskKeys {
    fn default() -> Self {
        Self::new()
    }
}

impl CskKeys {
    pub fn new() -> Self {
        Self {
            ring: Arc::new(RwLock::new(KeyRing::default())),
            held: watch::channel(None).0,
        }
    }

    /// The epoch whose key the node holds as current.
    pub fn held_epoch(&self) -> Option<u64> {
        *self.held.borrow()
    }

    /// Wakes on every change of the held epoch.
    pub fn subscribe(&self) -> watch::Receiver<Option<u64>> {
        self.held.subscribe()
    }

    /// Installs `epoch`'s key as current. The key it replaces becomes the previous one, until
    /// `previous_until`, when the chain names it as the previous epoch (`previous_epoch`);
    /// otherwise it is dropped (zeroized).
    pub async fn install(&self, key: EpochKey, previous: Option<(u64, u64)>) {
        let epoch = key.epoch;
        let mut ring = self.ring.write().await;
        let replaced = ring.current.replace(key);
        if let Some(old) = replaced
            && let Some((previous_epoch, until)) = previous
            && old.epoch == previous_epoch
        {
            ring.previous = Some((old, until));
        }
        if ring
            .previous
            .as_ref()
            .is_some_and(|(p, _)| Some(p.epoch) != previous.map(|(e, _)| e))
        {
            ring.previous = None;
        }
        drop(ring);
        self.held.send_replace(Some(epoch));
    }

    /// Installs the previous epoch's key (after a restart inside its grace window).
    pub async fn install_previous(&self, key: EpochKey, until: u64) {
        self.ring.write().await.previous = Some((key, until));
    }

    /// Whether the previous epoch's key is held.
    pub async fn holds_previous(&self, epoch: u64) -> bool {
        self.ring
            .read()
            .await
            .previous
            .as_ref()
            .is_some_and(|(p, _)| p.epoch == epoch)
    }

    /// Drops the previous key once its grace window ended; returns its epoch if it did.
    pub async fn expire(&self, now_s: u64) -> Option<u64> {
        let mut ring = self.ring.write().await;
        if ring
            .previous
            .as_ref()
            .is_some_and(|(_, until)| now_s >= *until)
        {
            return ring.previous.take().map(|(p, _)| p.epoch);
        }
        None
    }

    /// What the node holds now (the previous key only while its window is open).
    pub async fn snapshot(&self, now_s: u64) -> HeldKeys {
        let ring = self.ring.read().await;
        HeldKeys {
            current: ring
                .current
                .as_ref()
                .map(|c| (c.epoch, Zeroizing::new(*c.key))),
            previous: ring
                .previous
                .as_ref()
                .filter(|(_, until)| now_s < *until)
                .map(|(p, until)| (p.epoch, Zeroizing::new(*p.key), *until)),
        }
    }

    /// The key a responder may hand out for `epoch` at `now_s`, or why not.
    async fn servable(
        &self,
        epoch: u64,
        chain_epoch: Option<u64>,
        now_s: u64,
    ) -> Result<Zeroizing<[u8; 32]>, Refusal> {
        let ring = self.ring.read().await;
        if let Some(current) = ring.current.as_ref().filter(|c| c.epoch == epoch) {
            return Ok(Zeroizing::new(*current.key));
        }
        if let Some((previous, until)) = ring.previous.as_ref().filter(|(p, _)| p.epoch == epoch) {
            if now_s < *until {
                return Ok(Zeroizing::new(*previous.key));
            }
            return Err(Refusal::GraceEnded {
                epoch,
                until: *until,
            });
        }
        match chain_epoch {
            Some(current) if epoch > current => Err(Refusal::UnknownEpoch { epoch, current }),
            Some(current) if epoch == current => Err(Refusal::NotHeld(epoch)),
            Some(current) => Err(Refusal::ClosedEpoch { epoch, current }),
            None => Err(Refusal::NotHeld(epoch)),
        }
    }
}

/// A signed request for one epoch's CSK.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Request {
    requester: u64,
    epoch: u64,
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

/// What a request signs: the chain, the cluster, the requester, the epoch, a fresh nonce and
/// the time (so a request captured in one epoch or cluster is worthless in another).
fn request_message(
    local: &Local,
    requester: u64,
    epoch: u64,
    nonce: &[u8; 32],
    timestamp_ms: u64,
) -> Vec<u8> {
    let mut out = b"attestmesh/v2/csk-request".to_vec();
    out.extend_from_slice(&local.chain_id.to_be_bytes());
    out.extend_from_slice(&local.cluster);
    out.extend_from_slice(&requester.to_be_bytes());
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(nonce);
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out
}

/// Why a responder refused a request (the requester reads it in the reply).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("member {0} is not a member of this cluster")]
    NotAMember(u64),
    #[error("member {0} is revoked: it obtains no key")]
    Revoked(u64),
    #[error("invalid on-chain identity key of member {0}")]
    InvalidKey(u64),
    #[error("signature is not member {0}'s")]
    BadSignature(u64),
    #[error("request is stale (more than 60 s from this node's clock)")]
    Stale,
    #[error("replayed request (its nonce was already used)")]
    Replayed,
    #[error("member {0} is not live (no verified heartbeats)")]
    NotLive(u64),
    #[error("epoch {epoch} does not exist (the current epoch is {current})")]
    UnknownEpoch { epoch: u64, current: u64 },
    #[error("epoch {epoch} is closed (the current epoch is {current})")]
    ClosedEpoch { epoch: u64, current: u64 },
    #[error("epoch {epoch}'s grace window ended at {until}")]
    GraceEnded { epoch: u64, until: u64 },
    #[error("this node does not hold epoch {0}'s key yet")]
    NotHeld(u64),
    #[error("sealing the reply failed: {0}")]
    Seal(String),
    #[error("this node's view of the members is not settled ({0}); it hands out no key meanwhile")]
    ViewUnsettled(String),
}

impl Refusal {
    /// The `reason` label of `attestmesh_agent_csk_requests_refused_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) => "malformed",
            Refusal::NotAMember(_) => "not_a_member",
            Refusal::Revoked(_) => "revoked",
            Refusal::InvalidKey(_) | Refusal::BadSignature(_) => "bad_signature",
            Refusal::Stale => "stale",
            Refusal::Replayed => "replayed",
            Refusal::NotLive(_) => "not_live",
            Refusal::UnknownEpoch { .. } => "unknown_epoch",
            Refusal::ClosedEpoch { .. } | Refusal::GraceEnded { .. } => "closed_epoch",
            Refusal::NotHeld(_) => "not_held",
            Refusal::Seal(_) => "seal",
            Refusal::ViewUnsettled(_) => "view_unsettled",
        }
    }
}

/// Why a hand-off failed, as the requester sees it.
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
    #[error("the key does not match epoch {0}'s on-chain commitment (a wrong or malicious peer)")]
    CommitmentMismatch(u64),
}

/// A member as the responder's chain view has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Active, with its on-chain Ed25519 and X25519 keys.
    Active {
        ed25519: [u8; 32],
        x25519: [u8; 32],
    },
    Revoked,
    Unknown,
}

/// What the responder needs to decide and answer.
pub trait Authority: Send + Sync + 'static {
    /// The member as the chain states it.
    fn standing(&self, member_id: u64) -> impl Future<Output = Standing> + Send;
    /// Whether the member's heartbeats currently verify.
    fn is_live(&self, member_id: u64) -> impl Future<Output = bool> + Send;
    /// The chain's current CSK epoch, as this node last read it.
    fn chain_epoch(&self) -> impl Future<Output = Option<u64>> + Send;
    /// Why this node's member set may be stale or unagreed (then no key is handed out).
    fn view_problem(&self) -> impl Future<Output = Option<String>> + Send;
    /// Counts a refusal (the node puts it on `/metrics`).
    fn refused(&self, _reason: &'static str) {}
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

/// The responder's memory across requests: nonces seen inside the skew window (replays), and
/// which refusals were logged lately (a flood is logged once per window, not once per packet).
#[derive(Debug, Default)]
struct ResponderMemory {
    /// Nonce → the unix ms after which its request would be stale anyway.
    nonces: HashMap<[u8; 32], u64>,
    /// Refusals logged lately (a flood is logged once a minute per source and reason).
    logged: LogLimiter,
}

/// At most this many nonces are remembered; a flood beyond it is refused as a replay until
/// the window moves on (it cannot crowd out a genuine request for long: 60 s).
const MAX_NONCES: usize = 65_536;

impl ResponderMemory {
    /// Records the nonce; false if it was seen inside the window (or the table is full).
    fn fresh_nonce(&mut self, nonce: [u8; 32], now_ms: u64) -> bool {
        self.nonces.retain(|_, expires| *expires > now_ms);
        if self.nonces.len() >= MAX_NONCES || self.nonces.contains_key(&nonce) {
            return false;
        }
        self.nonces.insert(nonce, now_ms + 2 * MAX_SKEW_MS);
        true
    }
}

/// Serves CSK requests on `listener` until the task is dropped.
pub async fn serve<A: Authority>(
    listener: TcpListener,
    local: Local,
    keys: CskKeys,
    authority: Arc<A>,
) {
    let memory = Arc::new(Mutex::new(ResponderMemory::default()));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(target: "attestmesh::csk", %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (local, keys, authority, memory) = (
            local.clone(),
            keys.clone(),
            authority.clone(),
            memory.clone(),
        );
        tokio::spawn(async move {
            let answered = tokio::time::timeout(
                IO_TIMEOUT,
                answer(stream, &local, &keys, authority.as_ref(), &memory),
            )
            .await;
            match answered {
                Ok(Ok((requester, epoch))) => {
                    info!(target: "attestmesh::csk", requester, epoch, %peer, "CSK handed over")
                }
                Ok(Err(Answer::Refused(refusal))) => {
                    authority.refused(refusal.label());
                    let logged = memory.lock().await.logged.should_log(
                        peer.ip(),
                        refusal.label(),
                        Instant::now(),
                    );
                    if let Some(suppressed) = logged {
                        warn!(target: "attestmesh::csk", %peer, reason = %refusal, suppressed, "CSK request refused (the same refusal from this source is logged at most once a minute; every one is counted on /metrics)");
                    }
                }
                Ok(Err(Answer::Transport(error))) => {
                    debug!(target: "attestmesh::csk", %peer, %error, "CSK request not answered")
                }
                Err(_) => debug!(target: "attestmesh::csk", %peer, "CSK request timed out"),
            }
        });
    }
}

/// How one request ended, on the responder's side.
enum Answer {
    Refused(Refusal),
    Transport(CskError),
}

/// Reads one request and writes the reply: status 0 + the sealed key, or 1 + the reason.
async fn answer<A: Authority>(
    mut stream: TcpStream,
    local: &Local,
    keys: &CskKeys,
    authority: &A,
    memory: &Mutex<ResponderMemory>,
) -> Result<(u64, u64), Answer> {
    let bytes = read_frame(&mut stream).await.map_err(Answer::Transport)?;
    let result = decide(&bytes, local, keys, authority, memory).await;
    let reply = match &result {
        Ok((_, _, sealed)) => [&[0u8][..], sealed].concat(),
        Err(refusal) => [&[1u8][..], refusal.to_string().as_bytes()].concat(),
    };
    write_frame(&mut stream, &reply)
        .await
        .map_err(Answer::Transport)?;
    result
        .map(|(requester, epoch, _)| (requester, epoch))
        .map_err(Answer::Refused)
}

async fn decide<A: Authority>(
    bytes: &[u8],
    local: &Local,
    keys: &CskKeys,
    authority: &A,
    memory: &Mutex<ResponderMemory>,
) -> Result<(u64, u64, Vec<u8>), Refusal> {
    let request: Request =
        ciborium::from_reader(bytes).map_err(|e| Refusal::Malformed(e.to_string()))?;
    let requester = request.requester;
    if let Some(problem) = authority.view_problem().await {
        return Err(Refusal::ViewUnsettled(problem));
    }
    let (ed25519, x25519) = match authority.standing(requester).await {
        Standing::Active { ed25519, x25519 } => (ed25519, x25519),
        Standing::Revoked => return Err(Refusal::Revoked(requester)),
        Standing::Unknown => return Err(Refusal::NotAMember(requester)),
    };
    let key = VerifyingKey::from_bytes(&ed25519).map_err(|_| Refusal::InvalidKey(requester))?;
    let message = request_message(
        local,
        requester,
        request.epoch,
        &request.nonce,
        request.timestamp_ms,
    );
    key.verify(&message, &Signature::from_bytes(&request.signature))
        .map_err(|_| Refusal::BadSignature(requester))?;
    let now_ms = crate::cluster::now_ms();
    if now_ms.abs_diff(request.timestamp_ms) > MAX_SKEW_MS {
        return Err(Refusal::Stale);
    }
    if !memory.lock().await.fresh_nonce(request.nonce, now_ms) {
        return Err(Refusal::Replayed);
    }
    if !authority.is_live(requester).await {
        return Err(Refusal::NotLive(requester));
    }
    let chain_epoch = authority.chain_epoch().await;
    let key = keys
        .servable(request.epoch, chain_epoch, now_ms / 1000)
        .await?;
    let context = Context {
        chain_id: local.chain_id,
        cluster: local.cluster,
        sender_id: local.member_id,
        recipient_id: requester,
        envelope_id: request.nonce,
    };
    let sealed = messages::seal(
        &local.identity,
        &x25519,
        &context,
        Kind::ClusterSharedKey,
        key.as_ref(),
    )
    .map_err(|e| Refusal::Seal(e.to_string()))?;
    Ok((requester, request.epoch, sealed))
}

/// A peer that may hold the CSK.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub member_id: u64,
    pub address: SocketAddr,
    /// Its on-chain Ed25519 key (the sealed reply is signed with it).
    pub ed25519: [u8; 32],
}

/// The request bytes `local` sends for `epoch` (exposed so tests can replay one).
pub fn signed_request(local: &Local, epoch: u64) -> Result<(Vec<u8>, [u8; 32]), CskError> {
    let nonce = messages::new_envelope_id();
    let timestamp_ms = crate::cluster::now_ms();
    let signature = local
        .identity
        .sign(&request_message(
            local,
            local.member_id,
            epoch,
            &nonce,
            timestamp_ms,
        ))
        .to_bytes();
    let request = Request {
        requester: local.member_id,
        epoch,
        nonce,
        timestamp_ms,
        signature,
    };
    let mut bytes = Vec::new();
    ciborium::into_writer(&request, &mut bytes).map_err(|e| CskError::Malformed(e.to_string()))?;
    Ok((bytes, nonce))
}

/// Sends request bytes to a candidate and returns the raw reply (status byte + body).
pub async fn exchange(address: SocketAddr, request: &[u8]) -> Result<Vec<u8>, CskError> {
    tokio::time::timeout(IO_TIMEOUT, async {
        let mut stream = TcpStream::connect(address)
            .await
            .map_err(|e| CskError::Io(e.to_string()))?;
        write_frame(&mut stream, request).await?;
        read_frame(&mut stream).await
    })
    .await
    .map_err(|_| CskError::Io("timed out".into()))?
}

/// Asks one peer for `epoch`'s CSK and checks it against `commitment`.
pub async fn pull_from(
    local: &Local,
    candidate: &Candidate,
    epoch: u64,
    commitment: B256,
) -> Result<Zeroizing<[u8; 32]>, CskError> {
    let (request, nonce) = signed_request(local, epoch)?;
    let reply = exchange(candidate.address, &request).await?;
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
    // The decrypted payload is the key: it stays in buffers zeroized on drop.
    let (kind, payload) =
        messages::open_zeroizing(&local.x25519, &candidate.ed25519, &context, body)
            .map_err(CskError::Seal)?;
    if payload.len() != 32 {
        return Err(CskError::Malformed(format!(
            "a CSK of {} bytes",
            payload.len()
        )));
    }
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&payload);
    if kind != Kind::ClusterSharedKey || keccak256(key.as_ref()) != commitment {
        return Err(CskError::CommitmentMismatch(epoch));
    }
    Ok(key)
}

/// Tries each candidate in turn until one hands over `epoch`'s key matching the commitment.
pub async fn pull(
    local: &Local,
    candidates: &[Candidate],
    epoch: u64,
    commitment: B256,
) -> Result<Zeroizing<[u8; 32]>, Vec<(u64, CskError)>> {
    let mut failures = Vec::new();
    for candidate in candidates {
        match pull_from(local, candidate, epoch, commitment).await {
            Ok(key) => {
                info!(target: "attestmesh::csk", from = candidate.member_id, epoch, "CSK obtained and matches the commitment");
                return Ok(key);
            }
            Err(error) => {
                debug!(target: "attestmesh::csk", peer = candidate.member_id, epoch, %error, "CSK pull failed; trying the next live peer");
                failures.push((candidate.member_id, error));
            }
        }
    }
    debug!(target: "attestmesh::csk", tried = candidates.len(), epoch, "no peer handed over the CSK");
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
        members: BTreeMap<u64, Standing>,
        live: Vec<u64>,
        chain_epoch: u64,
        view_problem: Option<String>,
    }

    impl Authority for TestAuthority {
        async fn standing(&self, member_id: u64) -> Standing {
            self.members
                .get(&member_id)
                .copied()
                .unwrap_or(Standing::Unknown)
        }

        async fn is_live(&self, member_id: u64) -> bool {
            self.live.contains(&member_id)
        }

        async fn chain_epoch(&self) -> Option<u64> {
            Some(self.chain_epoch)
        }

        async fn view_problem(&self) -> Option<String> {
            self.view_problem.clone()
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

    fn active(l: &Local) -> Standing {
        Standing::Active {
            ed25519: l.identity.verifying_key().to_bytes(),
            x25519: x25519_dalek::PublicKey::from(&l.x25519).to_bytes(),
        }
    }

    fn epoch_key(epoch: u64, key: [u8; 32]) -> EpochKey {
        EpochKey {
            epoch,
            key: SharedKey::new(Zeroizing::new(key)),
        }
    }

    /// Starts a responder for `responder` holding `keys`; returns its candidate entry.
    async fn responder(responder: &Local, keys: CskKeys, authority: TestAuthority) -> Candidate {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(serve(
            listener,
            responder.clone(),
            keys,
            Arc::new(authority),
        ));
        Candidate {
            member_id: responder.member_id,
            address,
            ed25519: responder.identity.verifying_key().to_bytes(),
        }
    }

    async fn holding(epoch: u64, key: [u8; 32]) -> CskKeys {
        let keys = CskKeys::new();
        keys.install(epoch_key(epoch, key), None).await;
        keys
    }

    fn authority_for(requester: &Local, standing: Standing, live: bool) -> TestAuthority {
        TestAuthority {
            members: BTreeMap::from([(requester.member_id, standing)]),
            live: if live {
                vec![requester.member_id]
            } else {
                vec![]
            },
            chain_epoch: 0,
            view_problem: None,
        }
    }

    fn refused_with(result: Result<Zeroizing<[u8; 32]>, CskError>, words: &str) -> bool {
        matches!(result, Err(CskError::Refused(reason)) if reason.contains(words))
    }

    #[tokio::test]
    async fn a_wrong_key_is_caught_by_the_commitment_and_the_next_peer_is_tried() {
        let csk = [42u8; 32];
        let requester = local(3);
        let liar = responder(
            &local(2),
            holding(0, [66; 32]).await,
            authority_for(&requester, active(&requester), true),
        )
        .await;
        let honest = responder(
            &local(1),
            holding(0, csk).await,
            authority_for(&requester, active(&requester), true),
        )
        .await;
        assert_eq!(
            pull_from(&requester, &liar, 0, commitment_of(&csk))
                .await
                .unwrap_err(),
            CskError::CommitmentMismatch(0)
        );
        let key = pull(&requester, &[liar, honest], 0, commitment_of(&csk))
            .await
            .unwrap();
        assert_eq!(*key, csk);
    }

    #[tokio::test]
    async fn strangers_revoked_silent_and_forged_requesters_are_refused_for_their_reason() {
        let csk = [42u8; 32];
        let commitment = commitment_of(&csk);
        let requester = local(3);
        let stranger = responder(
            &local(1),
            holding(0, csk).await,
            TestAuthority {
                members: BTreeMap::new(),
                live: vec![3],
                chain_epoch: 0,
                view_problem: None,
            },
        )
        .await;
        assert!(refused_with(
            pull_from(&requester, &stranger, 0, commitment).await,
            "not a member"
        ));
        // Revoked: refused before anything else is looked at, even if still live.
        let revoked = responder(
            &local(1),
            holding(0, csk).await,
            authority_for(&requester, Standing::Revoked, true),
        )
        .await;
        assert!(refused_with(
            pull_from(&requester, &revoked, 0, commitment).await,
            "member 3 is revoked"
        ));
        let silent = responder(
            &local(1),
            holding(0, csk).await,
            authority_for(&requester, active(&requester), false),
        )
        .await;
        assert!(refused_with(
            pull_from(&requester, &silent, 0, commitment).await,
            "not live"
        ));
        // Someone claiming member 3's id with another key.
        let impostor = Local {
            identity: SigningKey::from_bytes(&[77; 32]),
            ..local(3)
        };
        let checked = responder(
            &local(1),
            holding(0, csk).await,
            authority_for(&requester, active(&requester), true),
        )
        .await;
        assert!(refused_with(
            pull_from(&impostor, &checked, 0, commitment).await,
            "signature"
        ));
    }

    /// A node whose member set could not be read from a quorum hands out nothing, even to a
    /// requester that looks active in its (possibly stale or forged) cache.
    #[tokio::test]
    async fn no_key_is_handed_out_while_the_member_view_is_unsettled() {
        let requester = local(3);
        let candidate = responder(
            &local(1),
            holding(0, [42; 32]).await,
            TestAuthority {
                view_problem: Some("the chain RPC endpoints disagree".into()),
                ..authority_for(&requester, active(&requester), true)
            },
        )
        .await;
        assert!(refused_with(
            pull_from(&requester, &candidate, 0, B256::ZERO).await,
            "endpoints disagree"
        ));
    }

    #[tokio::test]
    async fn a_replayed_request_is_refused() {
        let requester = local(3);
        let candidate = responder(
            &local(1),
            holding(0, [42; 32]).await,
            authority_for(&requester, active(&requester), true),
        )
        .await;
        let (request, _) = signed_request(&requester, 0).unwrap();
        let first = exchange(candidate.address, &request).await.unwrap();
        assert_eq!(first[0], 0, "the first request is answered");
        let again = exchange(candidate.address, &request).await.unwrap();
        assert_eq!(again[0], 1, "the replay is refused");
        assert!(String::from_utf8_lossy(&again[1..]).contains("replayed"));
    }

    /// Epochs: the current one is served; one the chain has not opened is unknown; an older one
    /// is closed; the previous one only inside its grace window.
    #[tokio::test]
    async fn only_the_current_epoch_and_the_previous_inside_its_grace_window_are_served() {
        let requester = local(3);
        let (old, new) = ([1u8; 32], [2u8; 32]);
        let now_s = crate::cluster::now_ms() / 1000;
        let keys = holding(1, old).await;
        keys.install(epoch_key(2, new), Some((1, now_s + 60))).await;
        let authority = TestAuthority {
            chain_epoch: 2,
            ..authority_for(&requester, active(&requester), true)
        };
        let candidate = responder(&local(1), keys.clone(), authority).await;
        assert_eq!(
            *pull_from(&requester, &candidate, 2, commitment_of(&new))
                .await
                .unwrap(),
            new
        );
        assert_eq!(
            *pull_from(&requester, &candidate, 1, commitment_of(&old))
                .await
                .unwrap(),
            old,
            "the previous key inside its grace window"
        );
        assert!(refused_with(
            pull_from(&requester, &candidate, 7, B256::ZERO).await,
            "epoch 7 does not exist (the current epoch is 2)"
        ));
        assert!(refused_with(
            pull_from(&requester, &candidate, 0, B256::ZERO).await,
            "epoch 0 is closed"
        ));
        // The grace window ends: the previous key is no longer served, nor shown to the app.
        keys.install_previous(epoch_key(1, old), now_s).await;
        assert!(refused_with(
            pull_from(&requester, &candidate, 1, commitment_of(&old)).await,
            "grace window ended"
        ));
        assert!(keys.snapshot(now_s).await.previous.is_none());
        assert_eq!(keys.expire(now_s).await, Some(1), "expired and dropped");
    }

    #[tokio::test]
    async fn a_node_without_the_key_says_so() {
        let requester = local(3);
        let candidate = responder(
            &local(1),
            CskKeys::new(),
            authority_for(&requester, active(&requester), true),
        )
        .await;
        assert!(refused_with(
            pull_from(&requester, &candidate, 0, B256::ZERO).await,
            "does not hold epoch 0"
        ));
    }

    #[tokio::test]
    async fn a_rotation_keeps_the_replaced_key_only_when_the_chain_names_it_previous() {
        let keys = holding(0, [1; 32]).await;
        let mut held = keys.subscribe();
        keys.install(epoch_key(1, [2; 32]), Some((0, u64::MAX)))
            .await;
        assert!(
            held.has_changed().unwrap(),
            "subscribers learn of the new epoch"
        );
        assert_eq!(*held.borrow_and_update(), Some(1));
        assert!(keys.holds_previous(0).await);
        // Epoch 2 opened and committed with no grace for epoch 1 (e.g. never committed by us).
        keys.install(epoch_key(3, [3; 32]), Some((2, u64::MAX)))
            .await;
        assert!(
            !keys.holds_previous(1).await,
            "epoch 1 is not the previous of 3"
        );
        assert!(keys.snapshot(0).await.previous.is_none());
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
