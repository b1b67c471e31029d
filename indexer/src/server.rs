//! The gRPC service `attestmesh.indexer.v1.Indexer` (plus gRPC health), and the one place
//! protobuf requests become domain values and errors become gRPC statuses.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use alloy::primitives::Address;
use attestmesh_bindings::factory::ClusterFactory;
use attestmesh_proto::indexer::v1::indexer_server::{Indexer, IndexerServer};
use attestmesh_proto::indexer::v1::{self as pb};
use attestmesh_service::listen::bind_tcp;
use tokio::sync::{OnceCell, mpsc};
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use crate::LOG_TARGET;
use crate::error::{IndexerError, Result};
use crate::rpc::IndexerRpc;
use crate::shutdown::Shutdown;
use crate::signing::EventSigner;
use crate::status::StatusHandle;
use crate::store::{self, Store};

/// Events read from the store per batch for one subscriber.
const BATCH: usize = 256;
/// Events buffered per subscriber stream.
const STREAM_BUFFER: usize = 512;

/// What needs the chain: set once the chain is connected.
#[derive(Debug, Clone)]
pub struct Connected {
    pub rpc: IndexerRpc,
    pub signer: Arc<EventSigner>,
}

/// What the service needs.
#[derive(Debug, Clone)]
pub struct Service {
    pub store: Store,
    pub status: StatusHandle,
    pub public_key: [u8; 32],
    pub factory: Address,
    pub connected: Arc<OnceCell<Connected>>,
    /// How far below an orphaned resume cursor the stream restarts (the reorg window).
    pub resend_window: u64,
    subscribers: Arc<AtomicU64>,
    next_subscription: Arc<AtomicU64>,
    /// Open Subscribe streams per client address, and how many one may hold.
    clients: Arc<ClientSubscriptions>,
    max_per_client: usize,
}

/// How many Subscribe streams one client may hold unless configured otherwise.
pub const DEFAULT_MAX_SUBSCRIPTIONS_PER_CLIENT: usize = 256;

/// The open Subscribe streams of each client, by remote IP address (a client opening more
/// connections is still one client). `None` is a transport that names no peer.
#[derive(Debug, Default)]
struct ClientSubscriptions {
    open: std::sync::Mutex<HashMap<Option<IpAddr>, usize>>,
}

impl ClientSubscriptions {
    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<Option<IpAddr>, usize>> {
        // A panic while holding the lock leaves a valid map of counts.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for one more stream of `client`, or the number it already holds when that is
    /// `max` or more.
    fn reserve(
        self: &Arc<Self>,
        client: Option<IpAddr>,
        max: usize,
    ) -> Result<SubscriptionSlot, usize> {
        let mut open = self.open();
        let count = open.entry(client).or_default();
        if *count >= max {
            return Err(*count);
        }
        *count += 1;
        Ok(SubscriptionSlot {
            clients: Arc::clone(self),
            client,
        })
    }
}

/// One open stream of a client; dropping it (when the stream's task ends) frees the slot.
#[derive(Debug)]
struct SubscriptionSlot {
    clients: Arc<ClientSubscriptions>,
    client: Option<IpAddr>,
}

impl Drop for SubscriptionSlot {
    fn drop(&mut self) {
        let mut open = self.clients.open();
        if let Some(count) = open.get_mut(&self.client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

impl Service {
    pub fn new(
        store: Store,
        status: StatusHandle,
        public_key: [u8; 32],
        factory: Address,
        connected: Arc<OnceCell<Connected>>,
        resend_window: u64,
    ) -> Self {
        Self {
            store,
            status,
            public_key,
            factory,
            connected,
            resend_window,
            subscribers: Arc::default(),
            next_subscription: Arc::new(AtomicU64::new(1)),
            clients: Arc::default(),
            max_per_client: DEFAULT_MAX_SUBSCRIPTIONS_PER_CLIENT,
        }
    }

    /// Allows each client (remote IP address) at most `max` open Subscribe streams (at least 1).
    pub fn with_subscription_limit(mut self, max: usize) -> Self {
        self.max_per_client = max.max(1);
        self
    }

    /// Whether `cluster` belongs to the followed factory: known from its events, else asked of
    /// the factory (`isCluster`).
    async fn check_cluster(&self, cluster: Address) -> Result<(), Status> {
        if self.store.is_known_cluster(&cluster) {
            return Ok(());
        }
        let Some(Connected { rpc, .. }) = self.connected.get() else {
            return Err(Status::unavailable(
                "the indexer is still connecting to the chain; retry shortly",
            ));
        };
        rpc.count("eth_call");
        let is_cluster = ClusterFactory::new(self.factory, rpc.chain().provider().clone())
            .isCluster(cluster)
            .call()
            .await
            .map_err(|e| {
                let error = rpc.chain().call_error("ClusterFactory.isCluster", e);
                warn!(target: LOG_TARGET, %cluster, %error, "cannot check a subscription's cluster");
                Status::unavailable(format!("cannot check the cluster on chain: {error}"))
            })?;
        if is_cluster {
            Ok(())
        } else {
            Err(Status::not_found(format!(
                "{cluster} was not created by the factory {} this indexer follows: check the cluster address, or use an indexer of its factory",
                self.factory
            )))
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::SignedEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Indexer for Service {
    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let peer = request.remote_addr();
        let request = request.into_inner();
        let filter = match request.cluster.trim() {
            "" => None,
            text => Some(text.parse::<Address>().map_err(|e| {
                Status::invalid_argument(format!(
                    "cluster {text:?} is not an address ({e}); pass 0x-prefixed hex, or empty for every cluster"
                ))
            })?),
        };
        if let Some(cluster) = filter {
            self.check_cluster(cluster).await?;
        }
        let Some(Connected { signer, .. }) = self.connected.get().cloned() else {
            return Err(Status::unavailable(
                "the indexer is still connecting to the chain; retry shortly",
            ));
        };
        let start = match &request.after {
            Some(cursor) => Start::After {
                key: store::key(cursor.block_number, cursor.log_index),
                block_hash: (!cursor.block_hash.is_empty()).then(|| cursor.block_hash.clone()),
            },
            None => Start::From(request.from_block),
        };
        // Without a limit one client could open streams (a task and a buffer each) until the
        // indexer runs out of memory.
        let client = peer.map(|address| address.ip().to_canonical());
        let slot = self
            .clients
            .reserve(client, self.max_per_client)
            .map_err(|open| {
                warn!(target: LOG_TARGET, ?client, open, max = self.max_per_client, "subscription refused: the client holds the most streams allowed");
                Status::resource_exhausted(format!(
                    "{} already holds {open} open Subscribe streams, the most one client may hold on this indexer; close a stream you no longer read (a node needs one), or ask the operator to raise INDEXER_MAX_SUBSCRIPTIONS_PER_CLIENT",
                    client.map_or_else(|| "this client".to_string(), |ip| ip.to_string())
                ))
            })?;
        let id = self.next_subscription.fetch_add(1, Ordering::Relaxed);
        info!(
            target: LOG_TARGET,
            subscription = id,
            ?peer,
            cluster = ?filter,
            after = ?request.after.as_ref().map(|c| (c.block_number, c.log_index)),
            from_block = request.from_block,
            "subscription opened"
        );
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let store = self.store.clone();
        let subscribers = Arc::clone(&self.subscribers);
        let status = self.status.clone();
        let count = subscribers.fetch_add(1, Ordering::Relaxed) + 1;
        status.update(|s| s.subscribers = count);
        let window = self.resend_window;
        // Nothing exists below the start block: a resend never needs to go lower. While the
        // start block is unknown (still searched for) there is no floor: 0.
        let floor = self
            .status
            .snapshot()
            .and_then(|s| s.start_block)
            .unwrap_or(0);
        tokio::spawn(async move {
            // Held until the stream ends.
            let _slot = slot;
            let sent = match resume(&store, &signer, start, (window, floor), &tx, id).await {
                Some(after) => feed(&store, filter, after, &tx).await,
                None => 0,
            };
            let count = subscribers
                .fetch_sub(1, Ordering::Relaxed)
                .saturating_sub(1);
            status.update(|s| s.subscribers = count);
            info!(target: LOG_TARGET, subscription = id, sent, "subscription closed");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_info(
        &self,
        _request: Request<pb::GetInfoRequest>,
    ) -> Result<Response<pb::Info>, Status> {
        let status = self
            .status
            .snapshot()
            .ok_or_else(|| Status::internal("the status lock is poisoned"))?;
        let chain_id = status.chain_id.ok_or_else(|| {
            Status::unavailable("the indexer is still connecting to the chain; retry shortly")
        })?;
        Ok(Response::new(pb::Info {
            public_key: self.public_key.to_vec(),
            chain_id,
            factory: self.factory.to_string(),
            // Unknown stays unset: block 0 is a block.
            applied_block: status.applied_block,
            head_block: status.head,
            catching_up: status.catching_up,
            start_block: status.start_block,
        }))
    }
}

/// Where a subscription starts.
#[derive(Debug)]
enum Start {
    /// At this block (inclusive).
    From(u64),
    /// Strictly after the client's last event, which was in the block with this hash.
    After {
        key: store::Key,
        block_hash: Option<Vec<u8>>,
    },
}

/// The key to stream after. A resume cursor whose event is not on this indexer's chain (it was
/// orphaned, perhaps seen through another indexer) gets a signed reorg notice and restarts
/// `window` blocks below it (not below `floor`, the start block): the fork is at most that
/// deep, and duplicates are harmless.
/// `None` when the subscriber went away while the indexer caught up to its cursor.
async fn resume(
    store: &Store,
    signer: &EventSigner,
    start: Start,
    (window, floor): (u64, u64),
    tx: &mpsc::Sender<Result<pb::SignedEvent, Status>>,
    subscription: u64,
) -> Option<Option<store::Key>> {
    let (key, block_hash) = match start {
        Start::From(block) => return Some(store::before_block(block)),
        Start::After {
            key,
            block_hash: None,
        } => return Some(Some(key)),
        Start::After {
            key,
            block_hash: Some(hash),
        } => (key, hash),
    };
    let block = store::block_of(key);
    // The cursor's block must be applied here before it can be judged.
    let mut changes = store.changes();
    loop {
        changes.borrow_and_update();
        if store
            .applied_block()
            .is_some_and(|applied| applied >= block)
        {
            break;
        }
        tokio::select! {
            changed = changes.changed() => changed.ok()?,
            () = tx.closed() => return None,
        }
    }
    if store.block_hash_at(key).as_deref() == Some(block_hash.as_slice()) {
        return Some(Some(key));
    }
    let from_block = block.saturating_sub(window).max(floor).min(block);
    warn!(
        target: LOG_TARGET,
        subscription,
        cursor_block = block,
        from_block,
        "the subscriber's cursor is not on this chain (orphaned); sending a reorg notice"
    );
    tx.send(Ok(signer.sign_reorg(from_block))).await.ok()?;
    Some(store::before_block(from_block))
}

/// Streams the store to one subscriber until it goes away; returns how many events were sent.
async fn feed(
    store: &Store,
    filter: Option<Address>,
    after: Option<store::Key>,
    tx: &mpsc::Sender<Result<pb::SignedEvent, Status>>,
) -> u64 {
    let mut changes = store.changes();
    let mut cursor = store.cursor(after);
    let mut sent = 0u64;
    loop {
        // Mark the version seen before reading, so a change during the read wakes us again.
        changes.borrow_and_update();
        let batch = store.read(&mut cursor, filter, BATCH);
        let empty = batch.reorg.is_none() && batch.events.is_empty();
        for event in batch.reorg.into_iter().chain(batch.events) {
            if tx.send(Ok(event.as_ref().clone())).await.is_err() {
                return sent;
            }
            sent += 1;
        }
        if empty {
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return sent;
                    }
                }
                () = tx.closed() => return sent,
            }
        }
    }
}

/// Binds the gRPC listener and serves until shutdown.
pub async fn serve(
    listen: SocketAddr,
    service: Service,
    shutdown: Shutdown,
) -> Result<(SocketAddr, JoinHandle<Result<()>>)> {
    let (listener, local) = bind_tcp("gRPC (--grpc.listen)", listen).await?;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<IndexerServer<Service>>().await;
    info!(target: LOG_TARGET, listen = %local, "gRPC listener up (attestmesh.indexer.v1.Indexer)");
    let incoming = TcpListenerStream::new(listener);
    let task = tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(health)
            .add_service(IndexerServer::new(service))
            .serve_with_incoming_shutdown(incoming, async move { shutdown.cancelled().await })
            .await;
        debug!(target: LOG_TARGET, ok = served.is_ok(), "gRPC server stopped");
        served.map_err(|e| IndexerError::Server {
            what: "gRPC",
            reason: e.to_string(),
        })
    });
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `GetInfo` before anything is known leaves the block numbers unset; once known, block 0
    /// reads as block 0 (unset is not 0, 0 is not unset).
    #[tokio::test]
    async fn get_info_tells_an_unknown_block_from_block_zero() {
        let status = StatusHandle::new([3; 32], Address::repeat_byte(1), 100);
        let service = Service::new(
            Store::new(),
            status.clone(),
            [3; 32],
            Address::repeat_byte(1),
            Arc::default(),
            16,
        );
        let info = |service: Service| async move {
            service
                .get_info(Request::new(pb::GetInfoRequest {}))
                .await
                .map(Response::into_inner)
        };

        // Not connected: no chain id, no answer.
        let refused = info(service.clone()).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");

        // Connected, still searching for the start block: nothing known.
        status.update(|s| s.chain_id = Some(31_337));
        let unknown = info(service.clone()).await.unwrap();
        assert_eq!(unknown.chain_id, 31_337);
        assert_eq!(
            (
                unknown.applied_block,
                unknown.head_block,
                unknown.start_block
            ),
            (None, None, None),
            "{unknown:?}"
        );

        // A chain at its genesis: block 0 is known, and reported as 0.
        status.update(|s| {
            s.start_block = Some(0);
            s.head = Some(0);
            s.applied_block = Some(0);
        });
        let genesis = info(service.clone()).await.unwrap();
        assert_eq!(
            (
                genesis.applied_block,
                genesis.head_block,
                genesis.start_block
            ),
            (Some(0), Some(0), Some(0)),
            "{genesis:?}"
        );

        // The head read, nothing applied yet.
        status.update(|s| {
            s.start_block = Some(47);
            s.head = Some(50);
            s.applied_block = None;
        });
        let catching_up = info(service).await.unwrap();
        assert_eq!(
            (
                catching_up.applied_block,
                catching_up.head_block,
                catching_up.start_block
            ),
            (None, Some(50), Some(47)),
            "{catching_up:?}"
        );
    }
}
