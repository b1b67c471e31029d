//! Starting and stopping the bundler.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use attestmesh_bindings::ENTRY_POINT_V07;
use attestmesh_chain::{ChainClient, ChainError};
use tracing::info;
use url::Url;

use super::LOG_TARGET;
use super::error::{BundlerError, Result};
use super::jsonrpc_server::{DEFAULT_MAX_BODY_BYTES, HttpServer, router};
use super::service::BundlerService;

/// What the bundler serves and with which key.
#[derive(Debug, Clone)]
pub struct BundlerConfig {
    /// The chain's JSON-RPC.
    pub rpc_url: Url,
    /// The chain id the RPC must serve (checked at start and before every submission).
    pub chain_id: u64,
    /// Signs and pays for the bundle transactions (use anvil dev key 2 or later on the devnet).
    pub executor: PrivateKeySigner,
    /// Receives the ops' gas payments; the executor when `None`.
    pub beneficiary: Option<Address>,
    /// The one EntryPoint served.
    pub entry_point: Address,
    /// Where to listen (loopback by default; port 0 picks a free one).
    pub listen: SocketAddr,
    /// Larger request bodies get HTTP 413.
    pub max_body_bytes: usize,
}

impl BundlerConfig {
    /// EntryPoint v0.7, 127.0.0.1 on a free port, the default body limit.
    pub fn new(rpc_url: Url, chain_id: u64, executor: PrivateKeySigner) -> Self {
        Self {
            rpc_url,
            chain_id,
            executor,
            beneficiary: None,
            entry_point: ENTRY_POINT_V07,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// The devnet bundler. See [`Bundler::spawn`].
#[derive(Debug)]
pub struct Bundler;

impl Bundler {
    /// Connects to the chain (checking its id and that the EntryPoint is deployed) and serves
    /// until the handle is shut down or dropped. Must be called inside a tokio runtime.
    pub async fn spawn(config: BundlerConfig) -> Result<BundlerHandle> {
        let executor = config.executor.address();
        let chain = ChainClient::connect_with_signer(
            &config.rpc_url,
            config.executor,
            Some(config.chain_id),
        )
        .await?;
        chain
            .require_code("EntryPoint", config.entry_point)
            .await
            .map_err(|err| match err {
                ChainError::NoCode { .. } => BundlerError::NoEntryPoint {
                    entry_point: config.entry_point,
                    chain_id: config.chain_id,
                },
                other => BundlerError::Chain(other),
            })?;
        let beneficiary = config.beneficiary.unwrap_or(executor);
        let service = BundlerService::new(
            chain,
            executor,
            beneficiary,
            config.entry_point,
            config.chain_id,
        );
        let server = HttpServer::start(
            "the bundler's JSON-RPC",
            config.listen,
            router(Arc::new(service), config.max_body_bytes),
        )
        .await?;
        let url = service_url(server.local_addr()).map_err(BundlerError::Url)?;
        info!(
            target: LOG_TARGET,
            %url,
            %executor,
            %beneficiary,
            entry_point = %config.entry_point,
            chain_id = config.chain_id,
            "bundler listening"
        );
        Ok(BundlerHandle {
            server,
            url,
            executor,
            entry_point: config.entry_point,
            chain_id: config.chain_id,
        })
    }
}

/// The http:// URL of a service listening on `addr`.
pub(crate) fn service_url(addr: SocketAddr) -> std::result::Result<Url, url::ParseError> {
    Url::parse(&format!("http://{addr}/"))
}

/// A running bundler. Dropping it stops the server at once.
#[derive(Debug)]
pub struct BundlerHandle {
    server: HttpServer,
    url: Url,
    executor: Address,
    entry_point: Address,
    chain_id: u64,
}

impl BundlerHandle {
    /// The JSON-RPC URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The executor that sends the bundles.
    pub fn executor(&self) -> Address {
        self.executor
    }

    /// The EntryPoint served.
    pub fn entry_point(&self) -> Address {
        self.entry_point
    }

    /// The chain served.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// Stops accepting and lets in-flight requests finish.
    pub async fn shutdown(self) -> Result<()> {
        Ok(self.server.shutdown().await?)
    }

    /// Serves until `signal` completes, then shuts down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<()> {
        Ok(self.server.run_until(signal).await?)
    }
}
