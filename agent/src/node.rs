//! The node: boots the subsystems in the seed's order and owns what they share.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{Address, B256, Bytes};
use alloy::sol_types::SolCall;
use attestmesh_bindings::cluster::Cluster;
use attestmesh_bindings::factory::ClusterFactory;
use attestmesh_bindings::member_account::MemberAccount;
use attestmesh_chain::{ChainClient, ChainView, QuorumError, SponsoredSender};
use attestmesh_dstack::DstackClient;
use tokio::sync::{RwLock, mpsc};
use tracing::{debug, error, info, warn};

use crate::cluster::ClusterState;
use crate::config::AgentConfig;
use crate::health::{Health, Phase};
use crate::identity::Identity;
use crate::inbox::{InboundMessage, Inbox};
use crate::intake::{IntakeEvent, PollConfig};
use crate::messages::{self, Context, Kind};
use crate::metrics::Metrics;
use crate::registration::{Backoff, ensure_registered};
use crate::shutdown::Shutdown;
use crate::targets::{AGENT, CHAIN, PEERS};

/// The devnet's chain id (anvil): a single RPC endpoint is expected there.
const DEVNET_CHAIN_ID: u64 = 31337;

/// What every subsystem shares. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Node {
    pub identity: Arc<Identity>,
    /// The primary chain endpoint: writes, nonces and reads that only cost liveness if wrong.
    pub chain: ChainClient,
    /// Every configured endpoint: what decides membership, envelopes and CSK commitments is
    /// read from a quorum of them ([`attestmesh_chain::ChainView`]).
    pub view: ChainView,
    pub cluster_address: Address,
    pub sender: SponsoredSender,
    pub health: Health,
    pub cluster: ClusterState,
    pub inbox: Inbox,
    pub metrics: Metrics,
    /// The Cluster Shared Keys by epoch, in memory only (filled by the CSK subsystem).
    pub csk: crate::csk::CskKeys,
    /// Whether the mesh runs (it then drives the phases after waiting-peers).
    pub mesh_enabled: bool,
    /// Liveness per peer, as the heartbeats last showed it (written by the mesh).
    pub peer_liveness: Arc<RwLock<std::collections::BTreeMap<u64, PeerLiveness>>>,
}

/// A peer's liveness for ListPeers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLiveness {
    pub live: bool,
    pub last_heartbeat: Option<std::time::Instant>,
}

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
    let health = Health::new();
    let metrics = Metrics::new();
    metrics.set_phase(Phase::Booting);
    let (health_server, health_listen) = crate::api::serve_health(
        config.health_listen,
        health.clone(),
        metrics.clone(),
        shutdown.clone(),
    )
    .await?;
    on_health_listening(health_listen);

    let backoff = Backoff::default();
    let (dstack, identity) = retry(
        &health,
        Phase::Booting,
        &backoff,
        &shutdown,
        "dstack guest agent",
        || async {
            let dstack = DstackClient::discover(config.dstack_socket.as_deref())?;
            let identity = Identity::derive(&dstack).await?;
            Ok((dstack, identity))
        },
    )
    .await?;
    let identity = Arc::new(identity);

    let chain = retry(
        &health,
        Phase::Booting,
        &backoff,
        &shutdown,
        "chain RPC",
        || async {
            ChainClient::connect(&config.chain_rpc_urls[0], config.chain_id)
                .await
                .map_err(eyre::Report::from)
        },
    )
    .await?;
    let view = ChainView::new(
        std::iter::once(chain.clone())
            .chain(
                config.chain_rpc_urls[1..]
                    .iter()
                    .map(|url| ChainClient::connect_known(url, chain.chain_id())),
            )
            .collect(),
        config.chain_quorum,
    )
    .map_err(|e| eyre::eyre!("--chain.quorum: {e}"))?;
    let (k, n) = view.quorum();
    if n == 1 && chain.chain_id() != DEVNET_CHAIN_ID {
        warn!(target: CHAIN, endpoint = chain.endpoint(), "a single chain RPC endpoint decides who is a member: whoever controls it can show this node a fake member; configure independent providers with --chain.rpc-url a,b,c (a majority must agree)");
    } else {
        info!(target: CHAIN, k, n, endpoints = %view.describe(), "membership, envelopes and CSK commitments are read from a quorum of chain RPC endpoints");
    }
    let cluster_address = match config.cluster {
        Some(cluster) => cluster,
        None => {
            retry(
                &health,
                Phase::Booting,
                &backoff,
                &shutdown,
                "member account",
                || async {
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
                },
            )
            .await?
        }
    };
    info!(target: AGENT, cluster = %cluster_address, account = %identity.account, chain_id = chain.chain_id(), "cluster found");
    let sender = SponsoredSender::new(
        chain.clone(),
        config.bundler_url.clone(),
        config.gas_manager_url.clone(),
        config.policy_id.clone(),
        config.entry_point,
        identity.owner.clone(),
        identity.account,
    )?;
    let node = Node {
        identity,
        chain,
        view,
        cluster_address,
        sender,
        health: health.clone(),
        cluster: ClusterState::new(),
        inbox: Inbox::new(),
        metrics: metrics.clone(),
        csk: crate::csk::CskKeys::new(),
        mesh_enabled: config.mesh.is_some(),
        peer_liveness: Arc::new(RwLock::new(std::collections::BTreeMap::new())),
    };
    let api_server =
        crate::api::serve_api(&config.api_socket, node.clone(), shutdown.clone()).await?;

    health.set_phase(Phase::Registering, "checking for an existing member record");
    metrics.set_phase(Phase::Registering);
    let member = tokio::select! {
        member = ensure_registered(&node.chain, &node.sender, &node.identity, cluster_address, &health, &metrics, &backoff) => member?,
        () = shutdown.cancelled() => return Ok(()),
    };
    node.cluster.set_self(member.id).await;

    health.set_phase(Phase::Subscribing, "catching up with the cluster's events");
    metrics.set_phase(Phase::Subscribing);
    let start_block = retry(
        &health,
        Phase::Subscribing,
        &backoff,
        &shutdown,
        "chain RPC",
        || async {
            let factory = node
                .chain
                .cluster(cluster_address)
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
        },
    )
    .await?;
    refresh_members(&node).await;
    let refresher = tokio::spawn(keep_view_fresh(node.clone()));

    let (events_tx, events_rx) = mpsc::channel(1024);
    // The indexer's verified push feeds the same channel as the poller (either alone suffices;
    // the consumer de-duplicates).
    let indexer_config = crate::indexer_client::IndexerClientConfig {
        gateway_connect: config.indexer_connect,
        ca_pem: config.indexer_ca_pem.clone(),
        ..Default::default()
    };
    let indexer = tokio::spawn(crate::indexer_client::run(
        indexer_config,
        node.metrics.indexer.clone(),
        node.view.clone(),
        cluster_address,
        events_tx.clone(),
        shutdown.clone(),
    ));
    let poll_config = PollConfig {
        cluster: cluster_address,
        self_member_id: member.id,
        start_block,
        interval: config.poll_interval,
        confirmations: config.poll_confirmations,
        max_range: config.poll_max_range,
    };
    let poller = tokio::spawn(crate::intake::poll(
        node.view.clone(),
        poll_config,
        events_tx,
        metrics.clone(),
    ));
    let consumer = tokio::spawn(consume(node.clone(), events_rx));
    update_peer_phase(&node).await;
    let mesh = match &config.mesh {
        Some(options) => {
            let me = crate::cluster::MemberInfo::from(&member);
            let (_, prefix_len, _) = retry(
                &health,
                Phase::Subscribing,
                &backoff,
                &shutdown,
                "chain RPC",
                || async {
                    let c = node
                        .chain
                        .cluster(cluster_address)
                        .meshConfig()
                        .call()
                        .await
                        .map_err(|e| node.chain.call_error("Cluster.meshConfig", e))?;
                    Ok((c.network, c.prefixLength, c.capacity))
                },
            )
            .await?;
            let gateway_connect = retry(
                &health,
                Phase::Subscribing,
                &backoff,
                &shutdown,
                "gateway address",
                || async {
                    tokio::net::lookup_host(&options.gateway_connect)
                        .await?
                        .next()
                        .ok_or_else(|| {
                            eyre::eyre!("{} resolves to no address", options.gateway_connect)
                        })
                },
            )
            .await?;
            let settings = crate::peering::MeshSettings {
                interface: options.interface.clone(),
                listen: options.listen,
                gateway_connect,
                gateway_domain: options.gateway_domain.clone(),
                heartbeat_interval: options.heartbeat_interval,
                down_after_beats: options.down_after_beats,
            };
            Some(tokio::spawn(crate::peering::run(
                node.clone(),
                me,
                prefix_len,
                settings,
                dstack.clone(),
                shutdown.clone(),
            )))
        }
        None => None,
    };

    shutdown.cancelled().await;
    info!(target: AGENT, "shutting down");
    poller.abort();
    consumer.abort();
    refresher.abort();
    indexer.abort();
    if let Some(mesh) = mesh {
        // The mesh task tears its interface down on shutdown; give it a moment.
        let _ = tokio::time::timeout(Duration::from_secs(5), mesh).await;
    }
    let _ = api_server.await;
    let _ = health_server.await;
    Ok(())
}

/// An error and its causes in one line, each cause once: most of the project's errors already
/// quote their source in their own message, which `{:#}` would then repeat.
fn error_chain(error: &eyre::Report) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause);
        }
    }
    text
}

/// Retries `step` with backoff until it succeeds or shutdown, saying in /healthz what it waits for.
async fn retry<T, F, Fut>(
    health: &Health,
    phase: Phase,
    backoff: &Backoff,
    shutdown: &Shutdown,
    what: &str,
    mut step: F,
) -> eyre::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = eyre::Result<T>>,
{
    let mut delay = backoff.initial;
    loop {
        match step().await {
            Ok(value) => return Ok(value),
            Err(error) => {
                let error = error_chain(&error);
                warn!(target: AGENT, what, %error, retry_in_ms = delay.as_millis() as u64, "waiting");
                health.set_phase(phase, format!("{what}: {error}"));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => return Err(eyre::eyre!("shut down while waiting for {what}")),
        }
        delay = (delay * 2).min(backoff.max);
    }
}

/// Re-reads the CSK epoch and the member set, both at one block a quorum of the chain RPC
/// endpoints agrees on (idempotent, so reorgs and duplicate events are harmless). On failure the
/// cached state is marked stale (the CSK service refuses to hand out keys meanwhile) and
/// [`keep_view_fresh`] retries until a read succeeds. Returns whether it succeeded.
pub(crate) async fn refresh_members(node: &Node) -> bool {
    match read_cluster_state(node).await {
        Ok(agreed) => {
            let (epoch, members) = agreed.value;
            if node.cluster.csk_epoch().await.map(|e| e.epoch) != Some(epoch.epoch) {
                info!(target: CHAIN, epoch = epoch.epoch, originator = epoch.originator, revoked_member = epoch.revoked_member, block = agreed.block, "CSK epoch on chain");
            }
            node.metrics.csk_chain_epoch.set(epoch.epoch as i64);
            node.cluster.set_csk_epoch(epoch).await;
            node.cluster.apply_members(&members).await;
            node.metrics
                .members
                .set(members.iter().filter(|m| m.active).count() as i64);
            if node.cluster.view_problem().await.is_some() {
                info!(target: CHAIN, block = agreed.block, "the member set and the CSK epoch are read again");
            }
            node.cluster.set_view_problem(None).await;
            node.metrics.chain_view_stale.set(0);
            true
        }
        Err(error) => {
            let reason = match &error {
                QuorumError::Disagreement { .. } => "disagreement",
                QuorumError::Unavailable { .. } => "unavailable",
            };
            node.metrics
                .chain_view_failures
                .get_or_create(&vec![("reason".to_string(), reason.to_string())])
                .inc();
            node.metrics.chain_view_stale.set(1);
            warn!(target: CHAIN, %error, "reading the member set and the CSK epoch failed; retrying (no CSK is handed out meanwhile)");
            node.cluster
                .set_view_problem(Some(format!("the member set may be stale: {error}")))
                .await;
            false
        }
    }
}

/// Retries a failed refresh with a bounded backoff until it succeeds (a failed read must never
/// wait for the next membership event: a revoked member would stay active in the cache).
pub(crate) async fn keep_view_fresh(node: Node) {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(8);
    let mut delay = FIRST;
    loop {
        tokio::time::sleep(delay).await;
        if node.cluster.view_problem().await.is_none() {
            delay = FIRST;
            continue;
        }
        if refresh_members(&node).await {
            delay = FIRST;
        } else {
            delay = (delay * 2).min(MAX);
        }
    }
}

/// The CSK epoch (with the previous epoch's commitment inside a grace window) and every member,
/// read at one block hash that `k` endpoints agree on.
async fn read_cluster_state(
    node: &Node,
) -> Result<
    attestmesh_chain::Agreed<(crate::cluster::EpochInfo, Vec<crate::cluster::MemberInfo>)>,
    QuorumError,
> {
    let cluster = node.cluster_address;
    node.view
        .read(
            "the member set and the CSK epoch",
            |endpoint, at| async move {
                let c = endpoint.cluster(cluster);
                let current = c
                    .currentCskEpoch()
                    .block(at)
                    .call()
                    .await
                    .map_err(|e| endpoint.call_error("Cluster.currentCskEpoch", e))?;
                let previous = if current.previousKeyUntil == 0 {
                    None
                } else {
                    let record = c
                        .cskEpoch(current.previousEpoch)
                        .block(at)
                        .call()
                        .await
                        .map_err(|e| endpoint.call_error("Cluster.cskEpoch", e))?;
                    Some(crate::cluster::PreviousEpoch {
                        epoch: current.previousEpoch,
                        until: current.previousKeyUntil,
                        commitment: record.commitment,
                    })
                };
                let count = c
                    .memberCount()
                    .block(at)
                    .call()
                    .await
                    .map_err(|e| endpoint.call_error("Cluster.memberCount", e))?;
                let members = c
                    .listMembers(1, count)
                    .block(at)
                    .call()
                    .await
                    .map_err(|e| endpoint.call_error("Cluster.listMembers", e))?;
                let epoch = crate::cluster::EpochInfo {
                    epoch: current.epoch,
                    originator: current.originator,
                    revoked_member: current.revokedMember,
                    opened_at: current.openedAt,
                    commitment: (current.commitment != B256::ZERO).then_some(current.commitment),
                    previous,
                };
                Ok((
                    epoch,
                    members
                        .iter()
                        .map(crate::cluster::MemberInfo::from)
                        .collect::<Vec<_>>(),
                ))
            },
        )
        .await
}

/// waiting-peers while this node is alone; wg-configuring once a peer exists (the mesh takes
/// it from there).
async fn update_peer_phase(node: &Node) {
    if node.mesh_enabled {
        // The mesh drives the phases once the node is registered.
        return;
    }
    let phase = node.health.snapshot().phase;
    if phase > Phase::WgConfiguring || phase < Phase::Subscribing {
        return;
    }
    let peers = node.cluster.active_peers().await;
    let (next, waiting) = if peers.is_empty() {
        (
            Phase::WaitingPeers,
            "no other members on chain yet".to_string(),
        )
    } else {
        (
            Phase::WgConfiguring,
            format!("{} peer(s) on chain; configuring the mesh", peers.len()),
        )
    };
    node.health.set_phase(next, waiting);
    node.metrics.set_phase(next);
}

/// Applies intake events in order, de-duplicating what both sources deliver.
async fn consume(node: Node, mut events: mpsc::Receiver<IntakeEvent>) {
    while let Some(event) = events.recv().await {
        match event {
            IntakeEvent::ClusterChanged { provenance } => {
                debug!(target: CHAIN, block = provenance.block_number, "membership or CSK epoch event");
                refresh_members(&node).await;
                update_peer_phase(&node).await;
            }
            IntakeEvent::Reorged { from_block } => {
                warn!(target: CHAIN, from_block, "re-reading state after a reorg");
                refresh_members(&node).await;
                update_peer_phase(&node).await;
            }
            IntakeEvent::Message {
                sender_id,
                recipient_id,
                envelope_id,
                ciphertext,
                provenance,
            } => {
                deliver(
                    &node,
                    sender_id,
                    recipient_id,
                    envelope_id,
                    &ciphertext,
                    provenance,
                )
                .await;
            }
        }
    }
}

async fn deliver(
    node: &Node,
    sender_id: u64,
    recipient_id: u64,
    envelope_id: B256,
    ciphertext: &Bytes,
    provenance: crate::intake::Provenance,
) {
    if Some(recipient_id) != node.cluster.self_id().await {
        return;
    }
    let sender = match node.cluster.member(sender_id).await {
        Some(sender) => sender,
        None => {
            refresh_members(node).await;
            match node.cluster.member(sender_id).await {
                Some(sender) => sender,
                None => {
                    node.metrics.dropped("unknown_sender");
                    warn!(target: PEERS, sender_id, %envelope_id, "message from an unknown member dropped");
                    return;
                }
            }
        }
    };
    let context = Context {
        chain_id: node.chain.chain_id(),
        cluster: node.cluster_address.into_array(),
        sender_id,
        recipient_id,
        envelope_id: envelope_id.0,
    };
    match messages::open(&node.identity.x25519, &sender.ed25519, &context, ciphertext) {
        Ok((Kind::App, payload)) => {
            let message = InboundMessage {
                sender_id,
                payload,
                envelope_id,
                block_number: provenance.block_number,
                tx_hash: provenance.tx_hash,
                log_index: provenance.log_index,
            };
            if node.inbox.push(message).await {
                node.metrics.messages_received.inc();
                info!(target: PEERS, sender_id, %envelope_id, block = provenance.block_number, "message delivered");
            }
        }
        Ok((Kind::ClusterSharedKey, _)) => {
            // The CSK travels only over the mesh; one on chain is a protocol violation.
            node.metrics.dropped("csk_on_chain");
            error!(target: PEERS, sender_id, %envelope_id, "a CSK-kind message on chain was dropped");
        }
        Ok((Kind::Endpoint, payload)) => {
            match crate::envelope::EndpointEnvelope::decode(&payload) {
                Ok(envelope) if envelope.member_id == sender_id => {
                    debug!(target: PEERS, sender_id, port = envelope.transport_port, "endpoint envelope received");
                    node.cluster.set_endpoint(sender_id, envelope).await;
                }
                Ok(envelope) => {
                    node.metrics.dropped("endpoint_member_mismatch");
                    warn!(target: PEERS, sender_id, claimed = envelope.member_id, "endpoint envelope names another member; dropped");
                }
                Err(e) => {
                    node.metrics.dropped("endpoint_malformed");
                    warn!(target: PEERS, sender_id, error = %e, "endpoint envelope dropped");
                }
            }
        }
        Err(e) => {
            node.metrics.dropped("rejected");
            error!(target: PEERS, sender_id, %envelope_id, error = %e, tx = %provenance.tx_hash, "inbound message dropped");
        }
    }
}

/// Seals and sends an app message; returns the envelope id and the operation's receipt.
pub async fn send_message(
    node: &Node,
    recipient_id: u64,
    payload: &[u8],
) -> Result<(B256, attestmesh_types::UserOperationReceipt), SendError> {
    let self_id = node
        .cluster
        .self_id()
        .await
        .ok_or(SendError::NotRegistered)?;
    let recipient = node
        .cluster
        .member(recipient_id)
        .await
        .ok_or(SendError::UnknownRecipient(recipient_id))?;
    if !recipient.active {
        return Err(SendError::RecipientRevoked(recipient_id));
    }
    let envelope_id = B256::from(messages::new_envelope_id());
    let context = Context {
        chain_id: node.chain.chain_id(),
        cluster: node.cluster_address.into_array(),
        sender_id: self_id,
        recipient_id,
        envelope_id: envelope_id.0,
    };
    let ciphertext = messages::seal(
        &node.identity.ed25519,
        &recipient.x25519,
        &context,
        Kind::App,
        payload,
    )?;
    let inner = Cluster::sendCall {
        recipientMemberId: recipient_id,
        envelopeId: envelope_id,
        ciphertext: ciphertext.into(),
    }
    .abi_encode();
    let call = MemberAccount::executeCall { data: inner.into() }.abi_encode();
    let receipt = node
        .sender
        .send_on(crate::outbox::MESSAGE_LANE, call.into(), None)
        .await
        .inspect_err(|_| {
            node.metrics.user_operations_failed.inc();
        })?;
    node.metrics.operation_included("message");
    node.metrics.messages_sent.inc();
    Ok((envelope_id, receipt))
}

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("this node is not registered yet")]
    NotRegistered,
    #[error("no member has id {0}")]
    UnknownRecipient(u64),
    #[error("member {0} is revoked")]
    RecipientRevoked(u64),
    #[error(transparent)]
    Message(#[from] messages::MessageError),
    #[error(transparent)]
    UserOp(#[from] attestmesh_chain::UserOpError),
}

/// How long the API waits for a send before giving up (the op may still land).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(120);

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot connect to the agent: {source}; check the socket")]
    struct Quoting {
        #[source]
        source: std::io::Error,
    }

    /// A cause its parent already quotes is not repeated; one it does not quote is kept.
    #[test]
    fn each_cause_is_shown_once() {
        let io = || std::io::Error::other("no such file");
        let report =
            eyre::Report::new(Quoting { source: io() }).wrap_err("the dstack guest agent failed");
        assert_eq!(
            error_chain(&report),
            "the dstack guest agent failed: cannot connect to the agent: no such file; check the socket"
        );
        let plain = eyre::Report::new(io()).wrap_err("chain RPC");
        assert_eq!(error_chain(&plain), "chain RPC: no such file");
    }
}
