//! Progress as `/healthz`, `/status` and `/readyz` report it (the deploy routine reads the
//! indexer's public key from here), and the HTTP server that serves it.
//!
//! * `/healthz` and `/status`: 200 with the JSON body below as soon as the listener is up (the
//!   process is alive and its key derived), before and during catch-up.
//! * `/readyz`: the same body; 200 once catch-up has reached the head, 503 before.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use alloy::primitives::Address;
use attestmesh_service::listen::bind_tcp;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde::Serialize;
use tokio::task::JoinHandle;
use tracing::info;

use crate::LOG_TARGET;
use crate::error::Result;
use crate::shutdown::Shutdown;
use crate::start_block::StartBlockSearch;

/// The `dropped_logs` reason of a factory `ClusterCreated` log whose data does not decode.
pub const DROPPED_UNDECODABLE_CLUSTER_CREATED: &str = "undecodable_cluster_created";

/// The service name `/healthz` reports (the operator's `check-indexer` asserts it).
pub const SERVICE: &str = "attestmesh-indexer";

/// Where the indexer is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Waiting for the chain RPC.
    Connecting,
    /// Binary-searching the factory's deploy block.
    SearchingStartBlock,
    /// Reading history up to the head.
    CatchingUp,
    /// At the head, following new blocks.
    Following,
}

/// The JSON body of `/healthz`, `/status` and `/readyz`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Always [`SERVICE`]: a route that reaches another service is told apart (field note 4).
    pub service: &'static str,
    pub phase: Phase,
    /// The Ed25519 public key every push is signed with (hex, no 0x): register this one.
    pub public_key: String,
    pub chain_id: Option<u64>,
    pub factory: Address,
    pub start_block: Option<u64>,
    pub start_block_search: Option<StartBlockSearch>,
    /// The chain head last seen.
    pub head: Option<u64>,
    /// The last block whose events are applied and pushed.
    pub applied_block: Option<u64>,
    pub catching_up: bool,
    /// Events applied (in the store now).
    pub events: u64,
    pub clusters: u64,
    pub subscribers: u64,
    /// The current eth_getLogs range, in blocks (halves on a refusal, grows back).
    pub log_range: u64,
    pub log_range_refusals: u64,
    pub reorgs: u64,
    /// Catch-up duration and speed, once caught up.
    pub catch_up_seconds: Option<f64>,
    pub catch_up_blocks_per_second: Option<f64>,
    /// RPC calls per method since start.
    pub rpc_calls: BTreeMap<String, u64>,
    /// Logs the follower read but could not use, by reason (counted each time a read returns
    /// one; every known reason is present from the start, at 0).
    pub dropped_logs: BTreeMap<String, u64>,
    /// The last error, if the last step failed.
    pub last_error: Option<String>,
    pub uptime_seconds: f64,
}

/// The shared, updatable status. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StatusHandle {
    inner: Arc<Mutex<Status>>,
    started: Instant,
}

impl StatusHandle {
    pub fn new(public_key: [u8; 32], factory: Address, log_range: u64) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Status {
                service: SERVICE,
                phase: Phase::Connecting,
                public_key: hex::encode(public_key),
                chain_id: None,
                factory,
                start_block: None,
                start_block_search: None,
                head: None,
                applied_block: None,
                catching_up: true,
                events: 0,
                clusters: 0,
                subscribers: 0,
                log_range,
                log_range_refusals: 0,
                reorgs: 0,
                catch_up_seconds: None,
                catch_up_blocks_per_second: None,
                rpc_calls: BTreeMap::new(),
                dropped_logs: BTreeMap::from([(
                    DROPPED_UNDECODABLE_CLUSTER_CREATED.to_string(),
                    0,
                )]),
                last_error: None,
                uptime_seconds: 0.0,
            })),
            started: Instant::now(),
        }
    }

    /// Changes the status under its lock.
    pub fn update(&self, change: impl FnOnce(&mut Status)) {
        if let Ok(mut status) = self.inner.lock() {
            change(&mut status);
        }
    }

    /// A copy of the status now.
    pub fn snapshot(&self) -> Option<Status> {
        let mut status = self.inner.lock().ok()?.clone();
        status.uptime_seconds = self.started.elapsed().as_secs_f64();
        Some(status)
    }
}

/// Serves the status endpoints on `listen` until shutdown. Binds before returning, so a taken
/// port is reported at start.
pub async fn serve(
    listen: SocketAddr,
    status: StatusHandle,
    shutdown: Shutdown,
) -> Result<(SocketAddr, JoinHandle<()>)> {
    let (listener, local) = bind_tcp("health (HTTP, --health.listen)", listen).await?;
    let app = axum::Router::new()
        .route("/healthz", get(alive))
        .route("/status", get(alive))
        .route("/readyz", get(ready))
        .with_state(status);
    info!(target: LOG_TARGET, listen = %local, "health listener up (/healthz, /status, /readyz)");
    let task =
        attestmesh_service::http::serve("the indexer's health endpoint", listener, app, shutdown);
    Ok((local, task))
}

async fn alive(State(status): State<StatusHandle>) -> (StatusCode, Json<Option<Status>>) {
    match status.snapshot() {
        Some(snapshot) => (StatusCode::OK, Json(Some(snapshot))),
        None => (StatusCode::INTERNAL_SERVER_ERROR, Json(None)),
    }
}

async fn ready(State(status): State<StatusHandle>) -> (StatusCode, Json<Option<Status>>) {
    match status.snapshot() {
        Some(snapshot) if !snapshot.catching_up => (StatusCode::OK, Json(Some(snapshot))),
        Some(snapshot) => (StatusCode::SERVICE_UNAVAILABLE, Json(Some(snapshot))),
        None => (StatusCode::INTERNAL_SERVER_ERROR, Json(None)),
    }
}
