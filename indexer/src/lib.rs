//! `attestmesh-indexer`: a shared service that follows the ClusterFactory and every cluster it
//! created, and pushes their events to nodes over gRPC, each signed with an Ed25519 key the
//! indexer derives from its TEE (dstack GetKey, path [`signing::KEY_PATH`]) and the operator
//! publishes in the IndexerRegistry.
//!
//! Boot order (field note 8: an indexer that is dark until catch-up ends is an outage):
//! 1. derive the key (dstack) and log it;
//! 2. bind the health ([`status`]) and gRPC ([`server`]) listeners;
//! 3. connect the chain ([`rpc`]), find the start block ([`start_block`]) and catch up
//!    ([`follower`]), while both listeners already serve progress and the history applied so
//!    far ([`store`]).
//!
//! Every boundary (chain RPC, dstack, subscribers) logs under [`LOG_TARGET`].

pub mod config;
pub mod error;
pub mod follower;
pub mod rpc;
pub mod server;
/// The process-wide shutdown signal (shared with every AttestMesh binary).
pub use attestmesh_service::shutdown;
pub mod signing;
pub mod start_block;
pub mod status;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use attestmesh_chain::ChainClient;
use attestmesh_dstack::DstackClient;
use tokio::sync::OnceCell;
use tracing::{info, warn};

pub use config::{IndexerArgs, IndexerConfig, LogFormat};
pub use error::{IndexerError, Result};
pub use shutdown::Shutdown;

/// The `tracing` target of every log line of the indexer.
pub const LOG_TARGET: &str = "attestmesh::indexer";

/// Derives the indexer's Ed25519 signing key from the TEE. A restart derives the same key.
pub async fn derive_key(dstack: &DstackClient) -> Result<ed25519_dalek::SigningKey> {
    let reply = dstack
        .get_key(signing::KEY_PATH, signing::KEY_PURPOSE)
        .await?;
    Ok(ed25519_dalek::SigningKey::from_bytes(reply.key.as_bytes()))
}

/// The addresses a running indexer listens on.
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    pub grpc: SocketAddr,
    pub health: SocketAddr,
}

/// Runs the indexer until `shutdown`. `on_listening` is called once both listeners are bound
/// (before catch-up).
pub async fn run(
    config: IndexerConfig,
    shutdown: Shutdown,
    on_listening: impl FnOnce(Listening),
) -> Result<()> {
    let dstack = DstackClient::discover(config.dstack_socket.as_deref())?;
    let key = derive_key(&dstack).await?;
    let public_key = key.verifying_key().to_bytes();
    info!(
        target: LOG_TARGET,
        public_key = %hex::encode(public_key),
        dstack = %dstack.endpoint(),
        path = signing::KEY_PATH,
        "indexer Ed25519 key derived from the TEE; register this public key in the IndexerRegistry"
    );

    let factory = config.follower.factory;
    let store = store::Store::new();
    let status = status::StatusHandle::new(public_key, factory, config.follower.initial_range);
    let connected: Arc<OnceCell<server::Connected>> = Arc::default();
    let (health, health_task) =
        status::serve(config.health_listen, status.clone(), shutdown.clone()).await?;
    let service = server::Service::new(
        store.clone(),
        status.clone(),
        public_key,
        factory,
        Arc::clone(&connected),
        config.follower.reorg_window as u64,
    )
    .with_subscription_limit(config.max_subscriptions_per_client);
    let (grpc, grpc_task) = server::serve(config.grpc_listen, service, shutdown.clone()).await?;
    on_listening(Listening { grpc, health });

    // The chain, retried until it answers: the listeners already report "connecting".
    let mut delay = config.follower.retry_initial;
    let chain = loop {
        match ChainClient::connect(&config.rpc_url, config.chain_id).await {
            Ok(chain) => break chain,
            Err(error) => {
                warn!(target: LOG_TARGET, %error, retry_in_ms = delay.as_millis() as u64, "chain RPC not reachable; retrying");
                status.update(|s| s.last_error = Some(error.to_string()));
            }
        }
        if !shutdown.sleep(delay).await {
            return Ok(());
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    };
    let chain_id = chain.chain_id();
    info!(target: LOG_TARGET, endpoint = chain.endpoint(), chain_id, %factory, "chain connected");
    let rpc = rpc::IndexerRpc::new(chain);
    let signer = Arc::new(signing::EventSigner::new(key, chain_id));
    // Set once, here; a second set cannot happen.
    let _ = connected.set(server::Connected {
        rpc: rpc.clone(),
        signer: Arc::clone(&signer),
    });
    status.update(|s| {
        s.chain_id = Some(chain_id);
        s.last_error = None;
    });
    let follower = tokio::spawn(follower::run(
        rpc,
        signer,
        store,
        status,
        config.follower,
        shutdown.clone(),
    ));

    let grpc_result = grpc_task.await;
    shutdown.cancel();
    let _ = follower.await;
    let _ = health_task.await;
    match grpc_result {
        Ok(result) => result,
        Err(join) => Err(IndexerError::Server {
            what: "gRPC",
            reason: join.to_string(),
        }),
    }
}
