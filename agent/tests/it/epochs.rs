//! CSK epochs end to end, every node a real agent in its own namespace: a revocation rotates
//! the key and the revoked member obtains nothing (refused by the responders for that reason,
//! not only because its tunnel is gone); the previous key lives for the grace window and no
//! longer; member 1 revoked before it commits no longer bricks the cluster; a whole cluster
//! restarted in epoch 1 recovers on its own.

use alloy::primitives::{B256, Bytes, keccak256};
use alloy::sol_types::SolCall;
use attestmesh_agent::csk::{self, Candidate, CskError, Local};
use attestmesh_bindings::cluster::Cluster as ClusterContract;
use attestmesh_proto::agent::v1 as pb;
use attestmesh_testbed::cluster::{Cluster, ClusterNode};
use tokio_stream::StreamExt;

use crate::cluster::{healthy, healthz_code, prepare, start, wait_for_status, wait_live_peers};
use crate::harness::budget;

/// Sends an owner transaction to the cluster.
pub async fn owner_call(cluster: &Cluster, what: &str, data: Vec<u8>) {
    cluster
        .stack
        .chain
        .operator_client()
        .send_transaction(what, cluster.stack.cluster, Bytes::from(data))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
}

async fn chain_epoch(cluster: &Cluster) -> ClusterContract::CskEpoch {
    cluster
        .stack
        .chain
        .operator_client()
        .current_csk_epoch(cluster.stack.cluster)
        .await
        .unwrap()
}

async fn key_of(node: &ClusterNode) -> Result<pb::ClusterSharedKey, tonic::Status> {
    node.client()
        .await
        .unwrap()
        .get_cluster_shared_key(pb::GetClusterSharedKeyRequest {})
        .await
        .map(tonic::Response::into_inner)
}

/// Polls GetClusterSharedKey (every 100 ms) until `done` holds.
async fn wait_for_key(
    node: &ClusterNode,
    what: &str,
    done: impl Fn(&pb::ClusterSharedKey) -> bool,
) -> pb::ClusterSharedKey {
    let deadline = tokio::time::Instant::now() + budget();
    loop {
        let key = key_of(node).await;
        if let Ok(key) = &key
            && done(key)
        {
            return key.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}: {what} within the wait budget (last: {:?}); log tail:\n{}",
            node.name,
            key.map(|k| (k.epoch, k.previous.map(|p| p.epoch))),
            node.log_tail(40)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Node `i`'s real CSK-request identity, derived from its dstack simulator as its agent does.
async fn local_of(cluster: &Cluster, i: usize, member_id: u64) -> Local {
    let dstack = attestmesh_dstack::DstackClient::new(attestmesh_dstack::Endpoint::Unix(
        cluster.stack.nodes[i].dstack_socket.clone(),
    ));
    let identity = attestmesh_agent::identity::Identity::derive(&dstack)
        .await
        .unwrap();
    Local {
        chain_id: cluster.stack.config.chain.chain_id,
        cluster: cluster.stack.cluster.into_array(),
        member_id,
        identity: identity.ed25519.clone(),
        x25519: identity.x25519.clone(),
    }
}

async fn candidate(node: &ClusterNode) -> Candidate {
    let me = node.get_self().await.unwrap();
    Candidate {
        member_id: me.member_id,
        address: format!("{}:{}", me.mesh_ip, csk::CSK_PORT).parse().unwrap(),
        ed25519: me.ed25519_public_key.clone().try_into().unwrap(),
    }
}

/// Asks `to` for `epoch`'s key as `local`, from inside `via`'s namespace (through its tunnel).
async fn pull_via(
    via: &ClusterNode,
    local: &Local,
    to: &Candidate,
    epoch: u64,
    commitment: B256,
) -> Result<(), CskError> {
    let (local, to) = (local.clone(), to.clone());
    via.netns
        .run(move || async move {
            csk::pull_from(&local, &to, epoch, commitment)
                .await
                .map(|_| ())
        })
        .join()
        .await
        .unwrap()
}

fn refused_for(result: &Result<(), CskError>, reason: &str) -> bool {
    matches!(result, Err(CskError::Refused(r)) if r.contains(reason))
}

/// The `reason` series of the responder's refusal counter.
async fn refusals(node: &ClusterNode, reason: &str) -> f64 {
    node.counter(
        "attestmesh_agent_csk_requests_refused_total",
        &format!("reason=\"{reason}\""),
    )
    .await
    .unwrap()
}

/// Revoking member 3 of a healthy 3-node cluster: the two others hold epoch 1 (a different
/// key, matching its commitment) with epoch 0's key for the grace window; a subscriber is told;
/// nobody leaves the mesh but the revoked node; the revoked node's own request, carried to a
/// responder through a remaining member's tunnel, is refused because it is revoked (counted
/// each time, logged once); requests for an epoch that does not exist or replayed are refused;
/// the grace window ends on time.
#[tokio::test(flavor = "multi_thread")]
async fn revoking_a_member_rotates_the_csk_and_the_revoked_member_obtains_nothing() {
    const GRACE_SECS: u32 = 20;
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(dir.path(), 3).await;
    healthy(&mut cluster).await;
    let mut ids = Vec::new();
    for node in &cluster.nodes {
        ids.push(node.get_self().await.unwrap().member_id);
    }
    let revoked = ids.iter().position(|id| *id == 3).unwrap();
    let others: Vec<usize> = (0..3).filter(|i| *i != revoked).collect();
    let epoch0 = key_of(&cluster.nodes[others[0]]).await.unwrap();
    assert_eq!(epoch0.epoch, 0);

    let mut pushed = cluster.nodes[others[0]]
        .client()
        .await
        .unwrap()
        .subscribe_cluster_shared_key(pb::SubscribeClusterSharedKeyRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = pushed.next().await.unwrap().unwrap();
    assert_eq!(first.epoch, 0, "a subscriber first gets the key held now");

    owner_call(
        &cluster,
        "Cluster.setCskGracePeriod",
        ClusterContract::setCskGracePeriodCall {
            graceSeconds: GRACE_SECS,
        }
        .abi_encode(),
    )
    .await;
    owner_call(
        &cluster,
        "Cluster.revokeMember",
        ClusterContract::revokeMemberCall { memberId: 3 }.abi_encode(),
    )
    .await;
    for &i in &others {
        let key = wait_for_key(&cluster.nodes[i], "holds epoch 1", |k| k.epoch == 1).await;
        let chain = chain_epoch(&cluster).await;
        assert_eq!(chain.epoch, 1);
        assert_eq!(chain.revokedMember, 3);
        assert_ne!(key.key, epoch0.key, "a new key");
        assert_eq!(keccak256(&key.key), chain.commitment, "the committed key");
        let previous = key.previous.expect("epoch 0's key during the grace window");
        assert_eq!((previous.epoch, &previous.key), (0, &epoch0.key));
        assert_eq!(previous.valid_until_unix, chain.previousKeyUntil);
    }
    let second = pushed.next().await.unwrap().unwrap();
    assert_eq!(second.epoch, 1, "the subscriber is told of the rotation");
    assert_eq!(second.previous.map(|p| p.epoch), Some(0));
    for &i in &others {
        wait_live_peers(&cluster.nodes[i], "the revoked member dropped", 1).await;
        assert_eq!(healthz_code(&cluster.nodes[i]).await, 200, "stays healthy");
    }

    // The revoked member's real identity, its request carried through a remaining member's
    // tunnel so that it reaches the responder: refused because it is revoked.
    let commitment = chain_epoch(&cluster).await.commitment;
    let (responder, via) = (&cluster.nodes[others[0]], &cluster.nodes[others[1]]);
    let to = candidate(responder).await;
    let revoked_local = local_of(&cluster, revoked, 3).await;
    let before = refusals(responder, "revoked").await;
    for epoch in [1, 0, 1, 1, 1] {
        let attempt = pull_via(via, &revoked_local, &to, epoch, commitment).await;
        assert!(
            refused_for(&attempt, "member 3 is revoked"),
            "epoch {epoch}: {attempt:?}"
        );
    }
    assert_eq!(
        refusals(responder, "revoked").await - before,
        5.0,
        "each counted"
    );
    let logged = std::fs::read_to_string(&responder.log)
        .unwrap()
        .matches("member 3 is revoked")
        .count();
    assert_eq!(logged, 1, "a burst of one refusal is logged once");
    // From its own namespace it reaches nobody any more.
    let own = pull_via(&cluster.nodes[revoked], &revoked_local, &to, 1, commitment).await;
    assert!(matches!(own, Err(CskError::Io(_))), "{own:?}");

    // A member's requests for an epoch that does not exist, and a replayed request.
    let member = local_of(&cluster, others[1], ids[others[1]]).await;
    let unknown = pull_via(via, &member, &to, 9, B256::ZERO).await;
    assert!(
        refused_for(&unknown, "epoch 9 does not exist"),
        "{unknown:?}"
    );
    let (request, _) = csk::signed_request(&member, 1).unwrap();
    let address = to.address;
    let replies = via
        .netns
        .run(move || async move {
            let first = csk::exchange(address, &request).await;
            let again = csk::exchange(address, &request).await;
            (first, again)
        })
        .join()
        .await
        .unwrap();
    assert_eq!(replies.0.unwrap()[0], 0, "the first request is answered");
    let again = replies.1.unwrap();
    assert!(String::from_utf8_lossy(&again[1..]).contains("replayed"));

    // The grace window ends on time: the previous key leaves the API and the responders.
    let until = chain_epoch(&cluster).await.previousKeyUntil;
    let until_instant = std::time::UNIX_EPOCH + std::time::Duration::from_secs(until);
    if let Ok(left) = until_instant.duration_since(std::time::SystemTime::now()) {
        let still = key_of(responder).await.unwrap();
        assert!(still.previous.is_some(), "inside the window: still there");
        tokio::time::sleep(left).await;
    }
    let after = wait_for_key(responder, "dropped epoch 0's key", |k| k.previous.is_none()).await;
    assert_eq!(after.epoch, 1);
    let late = std::time::SystemTime::now()
        .duration_since(until_instant)
        .unwrap_or_default();
    println!("epoch 0's key left the API {late:?} after its window ended");
    let closed = pull_via(via, &member, &to, 0, keccak256(&epoch0.key)).await;
    assert!(refused_for(&closed, "epoch 0"), "{closed:?}");
}

/// Member 1 registered and never committed (no agent runs for it): the others wait for it,
/// which used to be for ever. Revoking it opens epoch 1, whose originator (member 2) commits,
/// and the cluster becomes healthy.
#[tokio::test(flavor = "multi_thread")]
async fn revoking_member_1_before_it_commits_hands_the_epoch_to_the_next_member() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = prepare(dir.path(), 3).await;
    let first = register_without_agent(&cluster, 0).await;
    assert_eq!(first, 1, "member 1 has no agent");
    cluster.start_agent(1).unwrap();
    wait_for_status(&cluster.nodes[1], "registered", |s| {
        s.phase != "registering"
    })
    .await;
    cluster.start_agent(2).unwrap();
    wait_for_status(&cluster.nodes[1], "waiting for member 1", |s| {
        s.phase == "pulling-csk" && s.waiting_for.contains("member 1")
    })
    .await;

    owner_call(
        &cluster,
        "Cluster.revokeMember",
        ClusterContract::revokeMemberCall { memberId: 1 }.abi_encode(),
    )
    .await;
    for i in [1, 2] {
        wait_for_status(&cluster.nodes[i], "healthy", |s| s.phase == "healthy").await;
    }
    let chain = chain_epoch(&cluster).await;
    assert_eq!((chain.epoch, chain.originator), (1, 2), "member 2 succeeds");
    assert_eq!(chain.previousKeyUntil, 0, "epoch 0 was never committed");
    for i in [1, 2] {
        let key = key_of(&cluster.nodes[i]).await.unwrap();
        assert_eq!(key.epoch, 1);
        assert_eq!(keccak256(&key.key), chain.commitment);
    }
}

/// Registers node `i` as its agent would (same dstack identity, a sponsored bootstrap
/// operation), without starting an agent; returns its member id.
async fn register_without_agent(cluster: &Cluster, i: usize) -> u64 {
    let stack = &cluster.stack;
    let dstack = attestmesh_dstack::DstackClient::new(attestmesh_dstack::Endpoint::Unix(
        stack.nodes[i].dstack_socket.clone(),
    ));
    let identity = attestmesh_agent::identity::Identity::derive(&dstack)
        .await
        .unwrap();
    let chain = stack.chain.operator_client().clone();
    let sender = attestmesh_chain::SponsoredSender::new(
        chain.clone(),
        stack.bundler_url().clone(),
        stack.gas_manager.url().clone(),
        stack.config.policy_id.clone(),
        attestmesh_bindings::ENTRY_POINT_V07,
        identity.owner.clone(),
        identity.account,
    )
    .unwrap();
    let member = attestmesh_agent::registration::ensure_registered(
        &chain,
        &sender,
        &identity,
        stack.cluster,
        &attestmesh_agent::health::Health::new(),
        &attestmesh_agent::metrics::Metrics::new(),
        &attestmesh_agent::registration::Backoff::default(),
    )
    .await
    .unwrap();
    member.id
}

/// Sends `signal` (STOP, CONT) to node `node`'s agent.
fn signal(node: &ClusterNode, signal: &str) {
    let pid = node.pid().expect("the agent runs");
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// An operator rotation (no revocation) while the new epoch's originator is frozen: the others
/// stay healthy and in the mesh with epoch 0, saying in `waiting_for` and on `/metrics` that they
/// are behind; thawed, it commits and everyone moves to epoch 1. Then every node is killed at
/// once and restarted: they recover epoch 1 on their own (its originator re-derives it first)
/// and, inside the grace window, epoch 0's key too.
#[tokio::test(flavor = "multi_thread")]
async fn the_whole_cluster_restarted_in_epoch_1_recovers_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(dir.path(), 3).await;
    healthy(&mut cluster).await;
    let mut ids = Vec::new();
    for node in &cluster.nodes {
        ids.push(node.get_self().await.unwrap().member_id);
    }
    let originator = ids.iter().position(|id| *id == 1).unwrap();
    signal(&cluster.nodes[originator], "STOP");
    owner_call(
        &cluster,
        "Cluster.rotateClusterSharedKey",
        ClusterContract::rotateClusterSharedKeyCall {}.abi_encode(),
    )
    .await;
    for (i, node) in cluster.nodes.iter().enumerate() {
        if i == originator {
            continue;
        }
        wait_for_status(node, "behind, and saying so while healthy", |s| {
            s.phase == "healthy"
                && s.waiting_for
                    == "CSK epoch 1: waiting for its originator (member 1) to commit it (holding epoch 0)"
        })
        .await;
        assert_eq!(healthz_code(node).await, 200, "{} stays healthy", node.name);
        assert_eq!(
            node.metric("attestmesh_agent_csk_epoch").await.unwrap(),
            Some(0.0)
        );
        assert_eq!(
            node.metric("attestmesh_agent_csk_chain_epoch")
                .await
                .unwrap(),
            Some(1.0)
        );
        assert_eq!(
            key_of(node).await.unwrap().epoch,
            0,
            "the app keeps epoch 0 meanwhile"
        );
    }
    signal(&cluster.nodes[originator], "CONT");
    for node in &cluster.nodes {
        wait_for_key(node, "holds epoch 1", |k| k.epoch == 1).await;
    }
    for node in &cluster.nodes {
        wait_for_status(node, "no longer waiting", |s| s.waiting_for.is_empty()).await;
    }
    let chain = chain_epoch(&cluster).await;
    assert_eq!((chain.epoch, chain.revokedMember), (1, 0));

    let mut log_lengths = Vec::new();
    for node in &mut cluster.nodes {
        node.kill().await;
        log_lengths.push(std::fs::read_to_string(&node.log).unwrap().len());
    }
    for i in 0..cluster.nodes.len() {
        cluster.start_agent(i).unwrap();
    }
    healthy(&mut cluster).await;
    for node in &cluster.nodes {
        let key = wait_for_key(node, "holds epoch 1 and epoch 0's key", |k| {
            k.epoch == 1 && k.previous.is_some()
        })
        .await;
        assert_eq!(keccak256(&key.key), chain.commitment, "{}", node.name);
        let previous = key.previous.unwrap();
        assert_eq!(previous.epoch, 0);
        assert_eq!(
            keccak256(&previous.key),
            chain_epoch_commitment(&cluster, 0).await
        );
    }
    let rederived = cluster
        .nodes
        .iter()
        .zip(&log_lengths)
        .any(|(node, before)| {
            std::fs::read_to_string(&node.log).unwrap()[*before..]
                .contains("CSK re-derived from the TEE and matches the commitment epoch=1")
        });
    assert!(rederived, "epoch 1's originator re-derived its key");
}

async fn chain_epoch_commitment(cluster: &Cluster, epoch: u64) -> B256 {
    cluster
        .stack
        .chain
        .operator_client()
        .csk_epoch(cluster.stack.cluster, epoch)
        .await
        .unwrap()
        .commitment
}
