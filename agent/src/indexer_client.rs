//! The indexer push subscription: the second source of [`crate::intake`] events, on top of the
//! chain-log poller that always runs. Either source alone is sufficient; the consumer
//! de-duplicates what both deliver.
//!
//! * **Discovery**: cluster → `clusterFactory()` → `indexerRegistry()` → `listIndexers()`,
//!   active entries only; re-read after every failed round and every
//!   [`IndexerClientConfig::rediscover_interval`].
//! * **Transport**: `https://` endpoints go through the dstack gateway. Its no-suffix route
//!   terminates TLS and answers ALPN with nothing (or http/1.1) although it proxies h2 fine, so
//!   tonic must be told to assume HTTP/2 (field note 10); rustls runs on the `ring` provider,
//!   installed explicitly. `http://` endpoints (devnet) are plain h2c.
//! * **Verification** of every push, before anything reaches the channel: the Ed25519
//!   signature with the key *from the registry* over the canonical encoding
//!   ([`attestmesh_proto::indexer::v1::signing_payload`]), the chain id, the emitter (this
//!   cluster), and the chain itself: the transaction's receipt must be in the pushed block and
//!   hold the same log (address, topics, data) at the pushed log index. A push that fails any
//!   check is rejected and logged, the connection to that indexer is dropped and the next one
//!   is tried; nothing of it is applied.
//! * **Resumption**: the cursor of the last event accepted (block, log index and block hash) is
//!   kept here; a new subscription (after an indexer restart, or on another indexer after a
//!   failover) starts strictly after it, so no event is lost and duplicates are at most the ones
//!   in flight. If that event was orphaned meanwhile, the indexer answers with a reorg notice
//!   first and resumes below the fork.
//!
//! The task never holds the channel for anything but a send: when no indexer answers it only
//! retries with backoff, and the poller keeps feeding the consumer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use attestmesh_bindings::factory::ClusterFactory;
use attestmesh_bindings::indexer_registry::IndexerRegistry;
use attestmesh_chain::{ChainClient, ChainError, ChainView};
use attestmesh_proto::indexer::v1 as pb;
use attestmesh_proto::indexer::v1::indexer_client::IndexerClient as GrpcClient;
use ed25519_dalek::VerifyingKey;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::intake::IntakeEvent;
use crate::shutdown::Shutdown;

mod stats;
mod transport;
mod verify;

pub use stats::IndexerClientStats;
pub use transport::connect;
use transport::{hex, rpc_error};
use verify::Checked;

/// Log target of the indexer boundary.
pub const LOG_TARGET: &str = "attestmesh::indexer";

/// How the client connects, verifies and retries.
#[derive(Debug, Clone)]
pub struct IndexerClientConfig {
    /// Dial this `host:port` for every `https://` endpoint, keeping the endpoint's host name for
    /// SNI and certificate checks (`--indexer.connect`).
    pub gateway_connect: Option<SocketAddr>,
    /// An extra CA to trust, PEM (the agent reads it from `--indexer.ca-file`).
    pub ca_pem: Option<String>,
    /// Backoff after a round in which no indexer could be used, doubling up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Connect (TCP + TLS) and GetInfo each time out after this.
    pub connect_timeout: Duration,
    /// HTTP/2 keep-alive: a silent dead indexer is noticed within interval + timeout.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// A push whose transaction this node's RPC does not know yet is re-checked this many times,
    /// `chain_check_delay` apart, before it is rejected (the node's RPC may lag the indexer's).
    pub chain_check_attempts: u32,
    pub chain_check_delay: Duration,
    /// Between sessions, the registry is re-read when the last read is older than this (and
    /// always after a round in which every indexer failed).
    pub rediscover_interval: Duration,
}

impl Default for IndexerClientConfig {
    fn default() -> Self {
        Self {
            gateway_connect: None,
            ca_pem: None,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(10),
            chain_check_attempts: 10,
            chain_check_delay: Duration::from_millis(300),
            rediscover_interval: Duration::from_secs(300),
        }
    }
}

/// Why the client could not use an indexer (each ends the session with that indexer).
#[derive(Debug, thiserror::Error)]
pub enum IndexerClientError {
    #[error("cannot read the indexers of cluster {cluster} from the registry: {source}")]
    Discovery {
        cluster: Address,
        #[source]
        source: ChainError,
    },
    #[error(
        "indexer endpoint {endpoint:?} is unusable: {reason} (the operator registers https://<app_id>-<port>.<gateway domain> or, on a devnet, http://host:port)"
    )]
    Endpoint { endpoint: String, reason: String },
    #[error(
        "cannot connect to indexer {endpoint}: {reason} (is it up, and its gateway route in place?)"
    )]
    Connect { endpoint: String, reason: String },
    #[error("indexer {endpoint}: {call} failed: {status}")]
    Rpc {
        endpoint: String,
        call: &'static str,
        status: Box<tonic::Status>,
    },
    #[error(
        "indexer {endpoint} signs with key {served} but the registry has {registered}: the operator must register the key its /healthz reports (a new TEE identity derives a new key)"
    )]
    KeyMismatch {
        endpoint: String,
        registered: String,
        served: String,
    },
    #[error(
        "indexer {endpoint} follows chain {actual}, this node chain {expected}: the registry lists an indexer of another chain"
    )]
    WrongChain {
        endpoint: String,
        expected: u64,
        actual: u64,
    },
    #[error("indexer {endpoint} pushed an event that was rejected: {rejection}")]
    Rejected {
        endpoint: String,
        rejection: Rejection,
    },
    #[error(
        "cannot cross-check a push with the chain: {0} (this node's RPC failed; the push was not applied)"
    )]
    ChainCheck(#[source] ChainError),
    #[error("indexer {endpoint} ended the stream")]
    StreamEnded { endpoint: String },
}

/// Why a push was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the signature does not verify with the registered key")]
    BadSignature,
    #[error("it is signed for chain {0}")]
    WrongChain(u64),
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("it was emitted by {0}, not this cluster")]
    WrongCluster(Address),
    #[error("the chain does not have it: {0}")]
    NotOnChain(String),
    #[error("the chain has a different log there: {0}")]
    Mismatch(String),
}

/// An indexer as the registry lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredIndexer {
    pub id: u64,
    pub endpoint: String,
    pub public_key: [u8; 32],
}

/// Runs the push subscription for `cluster` until shutdown or until `events` closes, counting
/// into `stats`.
pub async fn run(
    config: IndexerClientConfig,
    stats: Arc<IndexerClientStats>,
    view: ChainView,
    cluster: Address,
    events: mpsc::Sender<IntakeEvent>,
    shutdown: Shutdown,
) {
    install_ring_provider();
    let mut client = Client {
        config,
        stats,
        chain: view.primary().clone(),
        view,
        cluster,
        events,
        shutdown,
        cursor: None,
    };
    client.run().await;
}

/// rustls on `ring`, chosen explicitly: tonic builds its TLS configuration on the process-wide
/// provider when one is installed, so it is installed here (a no-op when one already is).
fn install_ring_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none()
        && rustls::crypto::ring::default_provider()
            .install_default()
            .is_err()
    {
        debug!(target: LOG_TARGET, "a rustls provider was installed concurrently; using it");
    }
}

/// Reads the active indexers of `cluster`'s factory from the IndexerRegistry.
pub async fn discover(
    chain: &ChainClient,
    cluster: Address,
) -> Result<Vec<RegisteredIndexer>, IndexerClientError> {
    let fail = |source| IndexerClientError::Discovery { cluster, source };
    let factory = chain
        .cluster(cluster)
        .clusterFactory()
        .call()
        .await
        .map_err(|e| fail(chain.call_error("Cluster.clusterFactory", e)))?;
    let registry = ClusterFactory::new(factory, chain.provider().clone())
        .indexerRegistry()
        .call()
        .await
        .map_err(|e| fail(chain.call_error("ClusterFactory.indexerRegistry", e)))?;
    let listed = IndexerRegistry::new(registry, chain.provider().clone())
        .listIndexers()
        .call()
        .await
        .map_err(|e| fail(chain.call_error("IndexerRegistry.listIndexers", e)))?;
    let mut indexers = Vec::new();
    for (id, entry) in listed.into_iter().enumerate() {
        if !entry.active {
            continue;
        }
        let public_key = entry.ed25519PublicKey.0;
        if VerifyingKey::from_bytes(&public_key).is_err() {
            warn!(target: LOG_TARGET, id, endpoint = %entry.endpoint, "registered indexer key is not an Ed25519 point; skipped");
            continue;
        }
        indexers.push(RegisteredIndexer {
            id: id as u64,
            endpoint: entry.endpoint,
            public_key,
        });
    }
    debug!(target: LOG_TARGET, %factory, %registry, active = indexers.len(), "indexers discovered");
    Ok(indexers)
}

/// How a session with one indexer ended.
enum SessionEnd {
    Shutdown,
    ChannelClosed,
    Failed {
        /// Whether a subscription was open before the failure.
        subscribed: bool,
        delivered: u64,
        error: IndexerClientError,
    },
}

struct Client {
    config: IndexerClientConfig,
    stats: Arc<IndexerClientStats>,
    /// The primary endpoint: indexer discovery and the chain id.
    chain: ChainClient,
    /// Every endpoint: a push is applied only when a quorum of them holds it.
    view: ChainView,
    cluster: Address,
    events: mpsc::Sender<IntakeEvent>,
    shutdown: Shutdown,
    /// The last event accepted: a new subscription starts strictly after it.
    cursor: Option<pb::Cursor>,
}

impl Client {
    async fn run(&mut self) {
        let mut indexers: Vec<RegisteredIndexer> = Vec::new();
        let mut discovered_at: Option<Instant> = None;
        let mut next = 0usize;
        let mut failed_in_round = 0usize;
        let mut delay = self.config.backoff_initial;
        info!(target: LOG_TARGET, cluster = %self.cluster, "indexer push subscription starting");
        loop {
            if self.shutdown.is_cancelled() || self.events.is_closed() {
                return;
            }
            let stale =
                discovered_at.is_none_or(|at| at.elapsed() >= self.config.rediscover_interval);
            if indexers.is_empty() || stale || failed_in_round >= indexers.len() {
                match discover(&self.chain, self.cluster).await {
                    Ok(found) => {
                        if found != indexers {
                            info!(
                                target: LOG_TARGET,
                                indexers = ?found.iter().map(|i| (i.id, i.endpoint.as_str())).collect::<Vec<_>>(),
                                "registered indexers"
                            );
                        }
                        indexers = found;
                        discovered_at = Some(Instant::now());
                    }
                    Err(error) => {
                        warn!(target: LOG_TARGET, %error, "indexer discovery failed; polling continues");
                    }
                }
            }
            if indexers.is_empty() || failed_in_round >= indexers.len() {
                if indexers.is_empty() {
                    debug!(target: LOG_TARGET, "no active indexer registered; polling alone");
                }
                debug!(target: LOG_TARGET, retry_in_ms = delay.as_millis() as u64, "no indexer usable this round; backing off");
                if !self.shutdown.sleep(delay).await {
                    return;
                }
                delay = (delay * 2).min(self.config.backoff_max);
                failed_in_round = 0;
                continue;
            }
            let indexer = indexers[next % indexers.len()].clone();
            match self.session(&indexer).await {
                SessionEnd::Shutdown | SessionEnd::ChannelClosed => {
                    self.stats.set_current(None);
                    return;
                }
                SessionEnd::Failed {
                    subscribed,
                    delivered,
                    error,
                } => {
                    self.stats.set_current(None);
                    self.stats.failures.inc();
                    let rejected = matches!(error, IndexerClientError::Rejected { .. });
                    if subscribed && !rejected {
                        // It worked for a while: a restart or a failover, not a dead indexer.
                        // (An indexer whose push was rejected keeps its backoff.)
                        delay = self.config.backoff_initial;
                        failed_in_round = 0;
                    }
                    failed_in_round += 1;
                    next += 1;
                    let next_endpoint = &indexers[next % indexers.len()].endpoint;
                    warn!(
                        target: LOG_TARGET,
                        indexer = %indexer.endpoint,
                        %error,
                        delivered,
                        cursor = ?self.cursor.as_ref().map(|c| (c.block_number, c.log_index)),
                        next = %next_endpoint,
                        "indexer session ended; resubscribing from the last cursor"
                    );
                }
            }
        }
    }

    /// Connects to one indexer and forwards its verified pushes until something fails.
    async fn session(&mut self, indexer: &RegisteredIndexer) -> SessionEnd {
        let endpoint = indexer.endpoint.clone();
        let failed = |delivered, error| SessionEnd::Failed {
            subscribed: false,
            delivered,
            error,
        };
        let ended = |delivered, error| SessionEnd::Failed {
            subscribed: true,
            delivered,
            error,
        };
        self.stats.connects.inc();
        let started = Instant::now();
        let channel = tokio::select! {
            channel = connect(&self.config, &endpoint) => channel,
            () = self.shutdown.cancelled() => return SessionEnd::Shutdown,
        };
        let channel = match channel {
            Ok(channel) => channel,
            Err(error) => return failed(0, error),
        };
        let mut grpc = GrpcClient::new(channel).max_decoding_message_size(8 * 1024 * 1024);
        let info = tokio::select! {
            info = tokio::time::timeout(self.config.connect_timeout, grpc.get_info(pb::GetInfoRequest {})) => info,
            () = self.shutdown.cancelled() => return SessionEnd::Shutdown,
        };
        let info = match info {
            Ok(Ok(info)) => info.into_inner(),
            Ok(Err(status)) => {
                return failed(0, rpc_error(&endpoint, "GetInfo", status));
            }
            Err(_) => {
                return failed(
                    0,
                    IndexerClientError::Connect {
                        endpoint,
                        reason: format!(
                            "GetInfo did not answer within {:?}",
                            self.config.connect_timeout
                        ),
                    },
                );
            }
        };
        if info.public_key.as_slice() != indexer.public_key.as_slice() {
            return failed(
                0,
                IndexerClientError::KeyMismatch {
                    endpoint,
                    registered: hex(&indexer.public_key),
                    served: hex(&info.public_key),
                },
            );
        }
        if info.chain_id != self.chain.chain_id() {
            return failed(
                0,
                IndexerClientError::WrongChain {
                    endpoint,
                    expected: self.chain.chain_id(),
                    actual: info.chain_id,
                },
            );
        }
        let Ok(key) = VerifyingKey::from_bytes(&indexer.public_key) else {
            return failed(
                0,
                IndexerClientError::Endpoint {
                    endpoint,
                    reason: "its registered key is not an Ed25519 public key".into(),
                },
            );
        };
        let request = pb::SubscribeRequest {
            cluster: self.cluster.to_string(),
            after: self.cursor.clone(),
            from_block: 0,
        };
        let stream = tokio::select! {
            stream = grpc.subscribe(request) => stream,
            () = self.shutdown.cancelled() => return SessionEnd::Shutdown,
        };
        let mut stream = match stream {
            Ok(stream) => stream.into_inner(),
            Err(status) => return failed(0, rpc_error(&endpoint, "Subscribe", status)),
        };
        self.stats.subscriptions.inc();
        self.stats.set_current(Some(&endpoint));
        info!(
            target: LOG_TARGET,
            indexer = %endpoint,
            id = indexer.id,
            after = ?self.cursor.as_ref().map(|c| (c.block_number, c.log_index)),
            indexer_applied_block = info.applied_block,
            indexer_catching_up = info.catching_up,
            connect_ms = started.elapsed().as_millis() as u64,
            "subscribed to indexer"
        );

        let mut delivered = 0u64;
        loop {
            let message = tokio::select! {
                message = stream.message() => message,
                () = self.shutdown.cancelled() => return SessionEnd::Shutdown,
            };
            let event = match message {
                Ok(Some(event)) => event,
                Ok(None) => return ended(delivered, IndexerClientError::StreamEnded { endpoint }),
                Err(status) => {
                    return ended(delivered, rpc_error(&endpoint, "Subscribe stream", status));
                }
            };
            self.stats.received.inc();
            let (intake, cursor) = match self.check(&key, event).await {
                Ok(accepted) => accepted,
                Err(Checked::Rejected(rejection)) => {
                    self.stats.reject(&rejection);
                    error!(
                        target: LOG_TARGET,
                        indexer = %endpoint,
                        %rejection,
                        "push rejected; nothing applied; dropping this indexer's connection"
                    );
                    return ended(
                        delivered,
                        IndexerClientError::Rejected {
                            endpoint,
                            rejection,
                        },
                    );
                }
                Err(Checked::Chain(error)) => {
                    return ended(delivered, IndexerClientError::ChainCheck(error));
                }
            };
            self.stats.accepted.inc();
            if let Some(intake) = intake {
                let sent = tokio::select! {
                    sent = self.events.send(intake) => sent,
                    () = self.shutdown.cancelled() => return SessionEnd::Shutdown,
                };
                if sent.is_err() {
                    return SessionEnd::ChannelClosed;
                }
                self.stats.forwarded.inc();
                delivered += 1;
            }
            self.cursor = cursor;
        }
    }
}
