//! The chain view: membership, envelopes and CSK commitments come from a quorum of RPC
//! endpoints, and a failed read is retried until it succeeds. Every node a real agent in its own
//! namespace; the lying endpoint is a [`FaultProxy`] that rewrites replies.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use alloy::primitives::{B256, U256};
use alloy::sol_types::{SolCall, SolEvent};
use attestmesh_agent::csk::{self, Candidate, CskError, Local};
use attestmesh_agent::envelope::EndpointEnvelope;
use attestmesh_agent::messages::{self, Context, Kind};
use attestmesh_bindings::cluster::Cluster as ClusterContract;
use attestmesh_devnet::fault_proxy::{FaultMode, FaultProxy, Rewriter};
use attestmesh_proto::agent::v1 as pb;
use attestmesh_testbed::cluster::{Cluster, ClusterNode};
use serde_json::{Value, json};

use crate::cluster::{healthy, prepare, wait_for_status};
use crate::epochs::owner_call;
use crate::harness::budget;

/// A proxy in front of anvil that namespaces reach (on every address of the host).
async fn proxy(cluster: &Cluster) -> FaultProxy {
    FaultProxy::start_on(
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        cluster.stack.chain.rpc_url().clone(),
    )
    .await
    .unwrap()
}

fn port(proxy: &FaultProxy) -> u16 {
    proxy.url().port().unwrap()
}

async fn peers(node: &ClusterNode) -> Vec<pb::Peer> {
    node.client()
        .await
        .unwrap()
        .list_peers(pb::ListPeersRequest {
            include_revoked: true,
        })
        .await
        .unwrap()
        .into_inner()
        .peers
}
/// The `reason` series of the counter family `family` on `node`.
async fn counter(node: &ClusterNode, family: &str, reason: &str) -> f64 {
    node.counter(family, &format!("reason=\"{reason}\""))
        .await
        .unwrap()
}

/// A member that does not exist: its keys are the attacker's.
struct Fake {
    id: u64,
    identity: ed25519_dalek::SigningKey,
    x25519: x25519_dalek::StaticSecret,
}

impl Fake {
    fn member(&self, network: u32) -> ClusterContract::Member {
        ClusterContract::Member {
            id: self.id,
            account: alloy::primitives::Address::repeat_byte(0xfa),
            signer: alloy::primitives::Address::repeat_byte(0xfb),
            keys: ClusterContract::NodeKeys {
                x25519: x25519_dalek::PublicKey::from(&self.x25519)
                    .to_bytes()
                    .into(),
                ed25519: self.identity.verifying_key().to_bytes().into(),
                wireguard: B256::repeat_byte(0x77),
            },
            meshIp: network + self.id as u32,
            registeredAt: 1,
            status: 1,
        }
    }
}

/// The lie: one more member than the chain has (with the attacker's keys), and a properly
/// sealed endpoint envelope from it to each member in every `eth_getLogs` reply that asks for
/// messages.
fn lie(
    fake: &Fake,
    network: u32,
    cluster: alloy::primitives::Address,
    sealed: BTreeMap<u64, Vec<u8>>,
) -> Rewriter {
    let member = fake.member(network);
    let fake_id = fake.id;
    Arc::new(move |request: &Value, mut reply: Value| {
        let method = request["method"].as_str().unwrap_or_default();
        if method == "eth_call" {
            let input = request["params"][0]["input"]
                .as_str()
                .or_else(|| request["params"][0]["data"].as_str())
                .unwrap_or_default();
            let Ok(input) = alloy::primitives::hex::decode(input) else {
                return reply;
            };
            let Some(result) = reply["result"]
                .as_str()
                .and_then(|r| alloy::primitives::hex::decode(r).ok())
            else {
                return reply;
            };
            if input.starts_with(&ClusterContract::memberCountCall::SELECTOR) {
                if let Ok(count) = ClusterContract::memberCountCall::abi_decode_returns(&result) {
                    let lied = ClusterContract::memberCountCall::abi_encode_returns(&(count + 1));
                    reply["result"] = json!(format!("0x{}", alloy::primitives::hex::encode(lied)));
                }
            } else if input.starts_with(&ClusterContract::listMembersCall::SELECTOR)
                && let Ok(mut members) =
                    ClusterContract::listMembersCall::abi_decode_returns(&result)
            {
                members.retain(|m| m.id != fake_id);
                members.push(member.clone());
                let lied = ClusterContract::listMembersCall::abi_encode_returns(&members);
                reply["result"] = json!(format!("0x{}", alloy::primitives::hex::encode(lied)));
            }
        } else if method == "eth_getLogs"
            && let Some(recipient) = request["params"][0]["topics"][1]
                .as_str()
                .and_then(|t| t.parse::<U256>().ok())
                .map(|t| t.to::<u64>())
            && let Some(ciphertext) = sealed.get(&recipient)
            && let Some(logs) = reply["result"].as_array_mut()
        {
            let data = ClusterContract::MessageSent {
                recipientMemberId: recipient,
                senderMemberId: fake_id,
                envelopeId: B256::repeat_byte(0xee),
                ciphertext: ciphertext.clone().into(),
            }
            .encode_data();
            logs.push(json!({
                "address": cluster,
                "topics": [
                    ClusterContract::MessageSent::SIGNATURE_HASH,
                    B256::from(U256::from(recipient)),
                    B256::from(U256::from(fake_id)),
                    B256::repeat_byte(0xee),
                ],
                "data": format!("0x{}", alloy::primitives::hex::encode(data)),
                "blockNumber": request["params"][0]["toBlock"],
                "blockHash": B256::repeat_byte(0x11),
                "transactionHash": B256::repeat_byte(0x22),
                "transactionIndex": "0x0",
                "logIndex": "0x63",
                "removed": false,
            }));
        }
        reply
    })
}

/// A compromised RPC provider shows every node a member that does not exist (the attacker's
/// keys) and an endpoint envelope from it. With three endpoints and the default quorum (two),
/// no node believes it: it is never listed, the rotation that follows reaches every real
/// member, and the CSK service refuses the fake member as a non-member. A node that requires
/// all three endpoints to agree reports the disagreement instead of acting on either answer.
#[tokio::test(flavor = "multi_thread")]
async fn a_lying_rpc_endpoint_cannot_make_a_node_believe_a_fake_member() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = prepare(dir.path(), 3).await;
    let honest = proxy(&cluster).await;
    let liar = proxy(&cluster).await;
    cluster.extra_chain_rpc_ports = vec![port(&honest), port(&liar)];
    for i in 0..3 {
        cluster.start_agent(i).unwrap();
    }
    healthy(&mut cluster).await;

    let fake = Fake {
        id: 4,
        identity: ed25519_dalek::SigningKey::from_bytes(&[0x44; 32]),
        x25519: x25519_dalek::StaticSecret::from([0x45; 32]),
    };
    let chain_id = cluster.stack.config.chain.chain_id;
    let address = cluster.stack.cluster;
    let mut sealed = BTreeMap::new();
    for node in &cluster.nodes {
        let me = node.get_self().await.unwrap();
        let envelope = EndpointEnvelope {
            member_id: fake.id,
            gateway_domain: "attacker.example".into(),
            transport_port: 51820,
            tls_fingerprint: [0x55; 32],
            heartbeat_key: fake.identity.verifying_key().to_bytes(),
        };
        let context = Context {
            chain_id,
            cluster: address.into_array(),
            sender_id: fake.id,
            recipient_id: me.member_id,
            envelope_id: [0xee; 32],
        };
        let x25519: [u8; 32] = me.x25519_public_key.clone().try_into().unwrap();
        sealed.insert(
            me.member_id,
            messages::seal(
                &fake.identity,
                &x25519,
                &context,
                Kind::Endpoint,
                &envelope.encode(),
            )
            .unwrap(),
        );
    }
    let network = cluster
        .stack
        .chain
        .operator_client()
        .cluster(address)
        .meshConfig()
        .call()
        .await
        .unwrap()
        .network;
    liar.set_rewriter(Some(lie(&fake, network, address, sealed)));
    // Something every node re-reads the chain for: an owner rotation.
    owner_call(
        &cluster,
        "Cluster.rotateClusterSharedKey",
        ClusterContract::rotateClusterSharedKeyCall {}.abi_encode(),
    )
    .await;
    for node in &cluster.nodes {
        wait_for_status(node, "epoch 1 through the quorum", |_| true).await;
        let deadline = tokio::time::Instant::now() + budget();
        while node.metric("attestmesh_agent_csk_epoch").await.unwrap() != Some(1.0) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} holds epoch 1",
                node.name
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let listed = peers(node).await;
        assert!(
            listed.iter().all(|p| p.member_id != fake.id),
            "{} lists the fake member: {listed:?}",
            node.name
        );
        let log = std::fs::read_to_string(&node.log).unwrap();
        assert!(
            log.contains("chain RPC endpoints disagree; the quorum's answer is used"),
            "{} noticed the liar",
            node.name
        );
    }

    // The fake member's own request, carried through a member's tunnel: not a member.
    let responder = cluster.nodes[0].get_self().await.unwrap();
    let to = Candidate {
        member_id: responder.member_id,
        address: format!("{}:{}", responder.mesh_ip, csk::CSK_PORT)
            .parse()
            .unwrap(),
        ed25519: responder.ed25519_public_key.clone().try_into().unwrap(),
    };
    let local = Local {
        chain_id,
        cluster: address.into_array(),
        member_id: fake.id,
        identity: fake.identity.clone(),
        x25519: fake.x25519.clone(),
    };
    let attempt = cluster.nodes[1]
        .netns
        .run(move || async move { csk::pull_from(&local, &to, 1, B256::ZERO).await.map(|_| ()) })
        .join()
        .await
        .unwrap();
    assert!(
        matches!(&attempt, Err(CskError::Refused(r)) if r.contains("member 4 is not a member")),
        "{attempt:?}"
    );

    // A node that needs all three to agree acts on neither answer and says why.
    cluster.nodes[2].kill().await;
    cluster.chain_quorum = Some(3);
    cluster.start_agent(2).unwrap();
    wait_for_status(&cluster.nodes[2], "reports the disagreement", |s| {
        s.waiting_for.contains("the chain RPC endpoints disagree")
    })
    .await;
    let listed = peers(&cluster.nodes[2]).await;
    assert!(listed.iter().all(|p| p.member_id != fake.id), "{listed:?}");
    assert!(
        counter(
            &cluster.nodes[2],
            "attestmesh_agent_chain_view_failures_total",
            "disagreement"
        )
        .await
            > 0.0
    );
    assert_eq!(
        cluster.nodes[2]
            .metric("attestmesh_agent_chain_view_stale")
            .await
            .unwrap(),
        Some(1.0)
    );
}

/// A refresh that fails right after a revocation (the RPC fails only `eth_call`, so the
/// revocation's log still arrives) is retried until it succeeds: meanwhile the node says its
/// member set may be stale and hands out no CSK; once the RPC answers again the revoked member
/// is revoked in its view without any further chain event.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_refresh_around_a_revocation_is_retried_until_the_member_is_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = prepare(dir.path(), 3).await;
    let rpc = proxy(&cluster).await;
    cluster.chain_rpc_port = Some(port(&rpc));
    for i in 0..3 {
        cluster.start_agent(i).unwrap();
    }
    healthy(&mut cluster).await;
    let ids: Vec<u64> = {
        let mut ids = Vec::new();
        for node in &cluster.nodes {
            ids.push(node.get_self().await.unwrap().member_id);
        }
        ids
    };
    let watcher = ids.iter().position(|id| *id == 1).unwrap();
    rpc.set_mode(FaultMode::FailMethods(["eth_call".to_string()].into()));
    owner_call(
        &cluster,
        "Cluster.revokeMember",
        ClusterContract::revokeMemberCall { memberId: 3 }.abi_encode(),
    )
    .await;
    let node = &cluster.nodes[watcher];
    wait_for_status(node, "says its member set may be stale", |s| {
        s.waiting_for.contains("the member set may be stale")
    })
    .await;
    assert_eq!(
        node.metric("attestmesh_agent_chain_view_stale")
            .await
            .unwrap(),
        Some(1.0)
    );
    let stale: Vec<pb::Peer> = peers(node).await;
    assert!(
        stale
            .iter()
            .any(|p| p.member_id == 3 && p.status == "active"),
        "the cache still shows member 3 active while the reads fail: {stale:?}"
    );
    // Still failing a few retries later: no CSK for anyone meanwhile.
    let failures_before = counter(
        node,
        "attestmesh_agent_chain_view_failures_total",
        "unavailable",
    )
    .await;
    let deadline = tokio::time::Instant::now() + budget();
    while counter(
        node,
        "attestmesh_agent_chain_view_failures_total",
        "unavailable",
    )
    .await
        < failures_before + 2.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refresh is retried"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    rpc.set_mode(FaultMode::Pass);
    let deadline = tokio::time::Instant::now() + budget();
    loop {
        let now = peers(node).await;
        if now
            .iter()
            .any(|p| p.member_id == 3 && p.status == "revoked")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "member 3 revoked once the RPC answers: {now:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    wait_for_status(node, "no longer stale", |s| {
        !s.waiting_for.contains("the member set may be stale")
    })
    .await;
    assert_eq!(
        node.metric("attestmesh_agent_chain_view_stale")
            .await
            .unwrap(),
        Some(0.0)
    );
}
