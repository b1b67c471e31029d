//! Command-line flags and their environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use alloy::primitives::Address;
use clap::Args;
use url::Url;

use crate::error::{IndexerError, Result};
use crate::follower::FollowerConfig;

pub use attestmesh_service::LogFormat;

/// The indexer's flags. Every flag has an environment variable.
#[derive(Debug, Clone, Args)]
pub struct IndexerArgs {
    /// The chain's JSON-RPC URL.
    #[arg(long = "chain.rpc-url", env = "INDEXER_RPC_URL")]
    pub rpc_url: Url,
    /// Refuse to start when the RPC serves another chain.
    #[arg(long = "chain.id", env = "INDEXER_CHAIN_ID")]
    pub chain_id: Option<u64>,
    /// The ClusterFactory to follow.
    #[arg(long = "factory", env = "INDEXER_FACTORY")]
    pub factory: Address,
    /// Where catch-up starts. Unset: the factory's deploy block, found by binary search over
    /// eth_getCode (field note 8).
    #[arg(long = "start-block", env = "INDEXER_START_BLOCK")]
    pub start_block: Option<u64>,
    /// The gRPC listener (attestmesh.indexer.v1.Indexer + gRPC health).
    #[arg(
        long = "grpc.listen",
        env = "INDEXER_GRPC_LISTEN",
        default_value = "0.0.0.0:50051"
    )]
    pub grpc_listen: SocketAddr,
    /// The HTTP listener of /healthz, /status and /readyz.
    #[arg(
        long = "health.listen",
        env = "INDEXER_HEALTH_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub health_listen: SocketAddr,
    /// The dstack guest-agent socket (default: DSTACK_SIMULATOR_ENDPOINT, then the well-known
    /// sockets).
    #[arg(long = "dstack.socket", env = "INDEXER_DSTACK_SOCKET")]
    pub dstack_socket: Option<PathBuf>,
    /// Milliseconds between head polls once caught up.
    #[arg(
        long = "poll.interval-ms",
        env = "INDEXER_POLL_INTERVAL_MS",
        default_value_t = 250
    )]
    pub poll_interval_ms: u64,
    /// Blocks to stay behind the head (0: follow the head; reorgs are handled either way).
    #[arg(
        long = "confirmations",
        env = "INDEXER_CONFIRMATIONS",
        default_value_t = 0
    )]
    pub confirmations: u64,
    /// The first eth_getLogs range, in blocks.
    #[arg(
        long = "logs.initial-range",
        env = "INDEXER_LOG_RANGE",
        default_value_t = 2_000
    )]
    pub initial_range: u64,
    /// The largest eth_getLogs range the indexer grows to.
    #[arg(
        long = "logs.max-range",
        env = "INDEXER_MAX_LOG_RANGE",
        default_value_t = 50_000
    )]
    pub max_range: u64,
    /// How many recent applied blocks are tracked for reorg detection.
    #[arg(
        long = "reorg.window",
        env = "INDEXER_REORG_WINDOW",
        default_value_t = 128
    )]
    pub reorg_window: usize,
    /// How many Subscribe streams one client (one remote IP address) may hold open at once;
    /// one more is refused with RESOURCE_EXHAUSTED. A node holds one. Behind the dstack gateway
    /// every client arrives from the gateway's address, so this also caps the streams through
    /// one gateway: keep it above the number of nodes that use this indexer.
    #[arg(
        long = "grpc.max-subscriptions-per-client",
        env = "INDEXER_MAX_SUBSCRIPTIONS_PER_CLIENT",
        default_value_t = crate::server::DEFAULT_MAX_SUBSCRIPTIONS_PER_CLIENT
    )]
    pub max_subscriptions_per_client: usize,
    /// Log format.
    #[arg(
        long = "log.format",
        env = "INDEXER_LOG_FORMAT",
        value_enum,
        default_value = "human"
    )]
    pub log_format: LogFormat,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct IndexerConfig {
    pub rpc_url: Url,
    pub chain_id: Option<u64>,
    pub grpc_listen: SocketAddr,
    pub health_listen: SocketAddr,
    pub dstack_socket: Option<PathBuf>,
    /// Open Subscribe streams allowed per client address.
    pub max_subscriptions_per_client: usize,
    pub follower: FollowerConfig,
}

impl IndexerArgs {
    /// Checks the values and builds the configuration.
    pub fn resolve(self) -> Result<IndexerConfig> {
        if self.initial_range == 0 || self.max_range == 0 {
            return Err(IndexerError::Config {
                name: "logs.initial-range / logs.max-range",
                message: "a log range of 0 blocks reads nothing; use at least 1".into(),
            });
        }
        if self.poll_interval_ms == 0 {
            return Err(IndexerError::Config {
                name: "poll.interval-ms",
                message: "0 would spin on the RPC; use at least 1".into(),
            });
        }
        if self.max_subscriptions_per_client == 0 {
            return Err(IndexerError::Config {
                name: "grpc.max-subscriptions-per-client",
                message: "0 would refuse every subscription; use at least 1".into(),
            });
        }
        if self.factory == Address::ZERO {
            return Err(IndexerError::Config {
                name: "factory",
                message: "the zero address is not a factory; pass the deployed ClusterFactory"
                    .into(),
            });
        }
        Ok(IndexerConfig {
            rpc_url: self.rpc_url,
            chain_id: self.chain_id,
            grpc_listen: self.grpc_listen,
            health_listen: self.health_listen,
            dstack_socket: self.dstack_socket,
            max_subscriptions_per_client: self.max_subscriptions_per_client,
            follower: FollowerConfig {
                factory: self.factory,
                start_block: self.start_block,
                confirmations: self.confirmations,
                poll_interval: Duration::from_millis(self.poll_interval_ms),
                initial_range: self.initial_range.min(self.max_range),
                max_range: self.max_range,
                reorg_window: self.reorg_window.max(1),
                retry_initial: Duration::from_millis(200),
                retry_max: Duration::from_secs(10),
            },
        })
    }
}
