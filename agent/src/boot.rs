//! The boot sequence: the seed's phases in order, each a named step. Every step that depends on
//! the outside world (the guest agent, the chain) is retried with backoff and says in `/healthz`
//! what it waits for; only a shutdown ends the wait.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::Address;
use attestmesh_bindings::cluster::Cluster::Member;
use attestmesh_bindings::factory::ClusterFactory;
use attestmesh_bindings::member_account::MemberAccount;
use attestmesh_chain::{ChainClient, ChainView, SponsoredSender};
use attestmesh_dstack::DstackClient;
use attestmesh_service::report::error_chain;
use tokio::sync::{RwLock, mpsc};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::cluster::{ClusterState, MemberInfo};
use crate::config::{AgentConfig, MeshOptions};
use crate::csk::CskKeys;
use crate::events::{consume, keep_view_fresh, refresh_members, update_peer_phase};
use crate::health::{Health, Phase};
use crate::identity::Identity;
use crate::inbox::Inbox;
use crate::indexer_client::IndexerClientConfig;
use crate::intake::PollConfig;
use crate::metrics::Metrics;
use crate::peering::MeshSettings;
use crate::registration::{Backoff, ensure_registered};
use crate::shutdown::Shutdown;
use crate::state::Node;
use crate::targets::{AGENT, CHAIN};

/// The devnet's chain id (anvil): a single RPC endpoint is expected there.
const DEVNET_CHAIN_ID: u64 = 31337;

/// Runs the agent until `shutdown` is cancelled.
pub async fn run(config: AgentConfig, shutdown: Shutdown) -> eyre::Result<()> {
    run_reporting(config, shutdown, |_| {}).await
}

/// [`run`], calling `on_health_listening` with the health endpoint's bound address once it
/// listens (what a `--health.listen` with port 0 was given).
pub async fn run_reporting(
    config: AgentConfig,
    shutdown: Shutdown,
    on_health_listening: impl FnOnce(SocketAddr),
) -> eyre::Result<()> {
    let boot = Boot::new(&config, &shutdown);

    // booting: health first, so that every later wait is visible.
    let (health_server, health_listen) = boot.serve_health().await?;
    on_health_listening(health_listen);
    let (dstack, identity) = boot.derive_identity().await?;
    let chain = boot.connect_chain().await?;
    let view = boot.quorum_view(&chain)?;
    let cluster_address = boot.find_cluster(&chain, &identity).await?;
    let node = boot.assemble_node(identity, chain, view, cluster_address)?;
    let api_server =
        crate::api::serve_api(&config.api_socket, node.clone(), shutdown.clone()).await?;

    // registering
    let Some(member) = boot.register(&node).await? else {
        return Ok(());
    };
    node.cluster.set_self(member.id).await;

    // subscribing
    let followers = boot.follow_chain(&node, member.id).await?;

    // wg-configuring and on: the mesh drives the remaining phases.
    let mesh = match &config.mesh {
        Some(options) => Some(boot.start_mesh(&node, &member, options, dstack).await?),
        None => None,
    };

    shutdown.cancelled().await;
    info!(target: AGENT, "shutting down");
    for task in followers {
        task.abort();
    }
    if let Some(mesh) = mesh {
        // The mesh task tears its interface down on shutdown; give it a moment.
        let _ = tokio::time::timeout(Duration::from_secs(5), mesh).await;
    }
    let _ = api_server.await;
    let _ = health_server.await;
    Ok(())
}

/// What every boot step shares: the configuration, the health and metrics it reports to, the
/// retry backoff and the shutdown that ends a wait.
struct Boot<'a> {
    config: &'a AgentConfig,
    shutdown: &'a Shutdown,
    health: Health,
    metrics: Metrics,
    backoff: Backoff,
}

impl<'a> Boot<'a> {
    fn new(config: &'a AgentConfig, shutdown: &'a Shutdown) -> Self {
        let metrics = Metrics::new();
        metrics.set_phase(Phase::Booting);
        Self {
            config,
            shutdown,
            health: Health::new(),
            metrics,
            backoff: Backoff::default(),
        }
    }

    /// `/healthz` and `/metrics` on the health port.
    async fn serve_health(&self) -> eyre::Result<(JoinHandle<()>, SocketAddr)> {
        Ok(crate::api::serve_health(
            self.config.health_listen,
            self.health.clone(),
            self.metrics.clone(),
            self.shutdown.clone(),
        )
        .await?)
    }

    /// Every key the node uses, derived from the TEE (nothing on disk).
    async fn derive_identity(&self) -> eyre::Result<(DstackClient, Arc<Identity>)> {
        let (dstack, identity) = self
            .retry(Phase::Booting, "dstack guest agent", || async {
                let dstack = DstackClient::discover(self.config.dstack_socket.as_deref())?;
                let identity = Identity::derive(&dstack).await?;
                Ok((dstack, identity))
            })
            .await?;
        Ok((dstack, Arc::new(identity)))
    }

    /// The primary chain endpoint (writes, nonces), its chain id checked against the config.
    async fn connect_chain(&self) -> eyre::Result<ChainClient> {
        self.retry(Phase::Booting, "chain RPC", || async {
            ChainClient::connect(&self.config.chain_rpc_urls[0], self.config.chain_id)
                .await
                .map_err(eyre::Report::from)
        })
        .await
    }

    /// Every configured endpoint, read as a quorum for what decides membership.
    fn quorum_view(&self, chain: &ChainClient) -> eyre::Result<ChainView> {
        let view = ChainView::new(
            std::iter::once(chain.clone())
                .chain(
                    self.config.chain_rpc_urls[1..]
                        .iter()
                        .map(|url| ChainClient::connect_known(url, chain.chain_id())),
                )
                .collect(),
            self.config.chain_quorum,
        )
        .map_err(|e| eyre::eyre!("--chain.quorum: {e}"))?;
        let (k, n) = view.quorum();
        if n == 1 && chain.chain_id() != DEVNET_CHAIN_ID {
            warn!(target: CHAIN, endpoint = chain.endpoint(), "a single chain RPC endpoint decides who is a member: whoever controls it can show this node a fake member; configure independent providers with --chain.rpc-url a,b,c (a majority must agree)");
        } else {
            info!(target: CHAIN, k, n, endpoints = %view.describe(), "membership, envelopes and CSK commitments are read from a quorum of chain RPC endpoints");
        }
        Ok(view)
    }

    /// The cluster this node belongs to: configured, or read from its member account (its dstack
    /// app id), which the operator deployed before the node booted.
    async fn find_cluster(
        &self,
        chain: &ChainClient,
        identity: &Identity,
    ) -> eyre::Result<Address> {
        let cluster_address = match self.config.cluster {
            Some(cluster) => cluster,
            None => {
                self.retry(Phase::Booting, "member account", || async {
                    chain
                        .require_code("member account (dstack app id)", identity.account)
                        .await
                        .map_err(|e| {
                            eyre::eyre!(
                                "{e}; the operator deploys it with ClusterFactory.createMemberAccount"
                            )
                        })?;
                    MemberAccount::new(identity.account, chain.provider().clone())
                        .cluster()
                        .call()
                        .await
                        .map_err(|e| {
                            eyre::Report::from(chain.call_error("MemberAccount.cluster", e))
                        })
                })
                .await?
            }
        };
        info!(target: AGENT, cluster = %cluster_address, account = %identity.account, chain_id = chain.chain_id(), "cluster found");
        Ok(cluster_address)
    }

    /// The shared state every subsystem holds, with the sponsored sender that pays its gas.
    fn assemble_node(
        &self,
        identity: Arc<Identity>,
        chain: ChainClient,
        view: ChainView,
        cluster_address: Address,
    ) -> eyre::Result<Node> {
        let sender = SponsoredSender::new(
            chain.clone(),
            self.config.bundler_url.clone(),
            self.config.gas_manager_url.clone(),
            self.config.policy_id.clone(),
            self.config.entry_point,
            identity.owner.clone(),
            identity.account,
        )?;
        Ok(Node {
            identity,
            chain,
            view,
            cluster_address,
            sender,
            health: self.health.clone(),
            cluster: ClusterState::new(),
            inbox: Inbox::new(),
            metrics: self.metrics.clone(),
            csk: CskKeys::new(),
            mesh_enabled: self.config.mesh.is_some(),
            peer_liveness: Arc::new(RwLock::new(std::collections::BTreeMap::new())),
        })
    }

    /// The node's member record: found, or registered with its attestation proof. `None` when
    /// shut down first.
    async fn register(&self, node: &Node) -> eyre::Result<Option<Member>> {
        self.enter(Phase::Registering, "checking for an existing member record");
        tokio::select! {
            member = ensure_registered(&node.chain, &node.sender, &node.identity, node.cluster_address, &self.health, &self.metrics, &self.backoff) => Ok(Some(member?)),
            () = self.shutdown.cancelled() => Ok(None),
        }
    }

    /// Catches up with the cluster and keeps following it: the member set read once, then the
    /// chain-log poller and the indexer's verified push feeding one consumer, and a task that
    /// re-reads a stale view. Returns the tasks, to stop at shutdown.
    async fn follow_chain(
        &self,
        node: &Node,
        self_member_id: u64,
    ) -> eyre::Result<Vec<JoinHandle<()>>> {
        self.enter(Phase::Subscribing, "catching up with the cluster's events");
        let start_block = self.factory_deploy_block(node).await?;
        refresh_members(node).await;
        let refresher = tokio::spawn(keep_view_fresh(node.clone()));

        let (events_tx, events_rx) = mpsc::channel(1024);
        // The indexer's verified push feeds the same channel as the poller (either alone
        // suffices; the consumer de-duplicates).
        let indexer_config = IndexerClientConfig {
            gateway_connect: self.config.indexer_connect,
            ca_pem: self.config.indexer_ca_pem.clone(),
            ..Default::default()
        };
        let indexer = tokio::spawn(crate::indexer_client::run(
            indexer_config,
            node.metrics.indexer.clone(),
            node.view.clone(),
            node.cluster_address,
            events_tx.clone(),
            self.shutdown.clone(),
        ));
        let poll_config = PollConfig {
            cluster: node.cluster_address,
            self_member_id,
            start_block,
            interval: self.config.poll_interval,
            confirmations: self.config.poll_confirmations,
            max_range: self.config.poll_max_range,
        };
        let poller = tokio::spawn(crate::intake::poll(
            node.view.clone(),
            poll_config,
            events_tx,
            self.metrics.intake.clone(),
        ));
        let consumer = tokio::spawn(consume(node.clone(), events_rx));
        update_peer_phase(node).await;
        Ok(vec![poller, consumer, refresher, indexer])
    }

    /// The block the cluster's factory was deployed in: no cluster event is older.
    async fn factory_deploy_block(&self, node: &Node) -> eyre::Result<u64> {
        self.retry(Phase::Subscribing, "chain RPC", || async {
            let factory = node
                .chain
                .cluster(node.cluster_address)
                .clusterFactory()
                .call()
                .await
                .map_err(|e| node.chain.call_error("Cluster.clusterFactory", e))?;
            ClusterFactory::new(factory, node.chain.provider().clone())
                .deployBlock()
                .call()
                .await
                .map(|b| b.to::<u64>())
                .map_err(|e| {
                    eyre::Report::from(node.chain.call_error("ClusterFactory.deployBlock", e))
                })
        })
        .await
    }

    /// attestmesh0 and the peering over the gateway, from the cluster's mesh prefix.
    async fn start_mesh(
        &self,
        node: &Node,
        member: &Member,
        options: &MeshOptions,
        dstack: DstackClient,
    ) -> eyre::Result<JoinHandle<()>> {
        let prefix_len = self
            .retry(Phase::Subscribing, "chain RPC", || async {
                let config = node
                    .chain
                    .cluster(node.cluster_address)
                    .meshConfig()
                    .call()
                    .await
                    .map_err(|e| node.chain.call_error("Cluster.meshConfig", e))?;
                Ok(config.prefixLength)
            })
            .await?;
        let gateway_connect = self
            .retry(Phase::Subscribing, "gateway address", || async {
                tokio::net::lookup_host(&options.gateway_connect)
                    .await?
                    .next()
                    .ok_or_else(|| {
                        eyre::eyre!("{} resolves to no address", options.gateway_connect)
                    })
            })
            .await?;
        let settings = MeshSettings {
            interface: options.interface.clone(),
            listen: options.listen,
            gateway_connect,
            gateway_domain: options.gateway_domain.clone(),
            heartbeat_interval: options.heartbeat_interval,
            down_after_beats: options.down_after_beats,
        };
        Ok(tokio::spawn(crate::peering::run(
            node.clone(),
            MemberInfo::from(member),
            prefix_len,
            settings,
            dstack,
            self.shutdown.clone(),
        )))
    }

    /// Enters `phase` in `/healthz` and the metrics.
    fn enter(&self, phase: Phase, waiting: &str) {
        self.health.set_phase(phase, waiting);
        self.metrics.set_phase(phase);
    }

    /// Retries `step` with backoff until it succeeds or shutdown, saying in /healthz what it
    /// waits for.
    async fn retry<T, F, Fut>(&self, phase: Phase, what: &str, mut step: F) -> eyre::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = eyre::Result<T>>,
    {
        let mut delay = self.backoff.initial;
        loop {
            match step().await {
                Ok(value) => return Ok(value),
                Err(error) => {
                    let error = error_chain(error.as_ref());
                    warn!(target: AGENT, what, %error, retry_in_ms = delay.as_millis() as u64, "waiting");
                    self.health.set_phase(phase, format!("{what}: {error}"));
                }
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.shutdown.cancelled() => return Err(eyre::eyre!("shut down while waiting for {what}")),
            }
            delay = (delay * 2).min(self.backoff.max);
        }
    }
}
