//! The agent end to end on the devnet.

use std::collections::BTreeSet;
use std::time::Duration;

use alloy::primitives::aliases::U192;
use attestmesh_bindings::ENTRY_POINT_V07;
use attestmesh_devnet::fault_proxy::{FaultMode, FaultProxy};
use attestmesh_devnet::stack::StackConfig;
use attestmesh_proto::agent::v1 as pb;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::harness::*;

fn past_registration(status: &pb::MeshStatus) -> bool {
    matches!(status.phase.as_str(), "waiting-peers" | "wg-configuring")
}

/// Two agents register through the sponsored path, see each other, and a message goes from one
/// app to the other through the gRPC API, decrypted and sender-authenticated.
#[tokio::test(flavor = "multi_thread")]
async fn two_agents_register_see_each_other_and_exchange_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let (_stack, a, b) = two_agents(
        dir.path(),
        StackConfig::new(dir.path().join("devnet")).with_instant_mining(),
    )
    .await;

    let peers = a
        .client()
        .await
        .list_peers(pb::ListPeersRequest {
            include_revoked: false,
        })
        .await
        .unwrap()
        .into_inner()
        .peers;
    assert_eq!(peers.len(), 2, "both members listed: {peers:?}");
    let (id_a, id_b) = (member_id(&a).await, member_id(&b).await);
    assert_ne!(id_a, id_b);
    assert!(peers.iter().any(|p| p.member_id == id_a && p.is_self));
    assert!(
        peers.iter().all(|p| p.mesh_ip.starts_with("10.88.")),
        "{peers:?}"
    );

    let sent = send(&a, id_b, b"hello from a").await;
    assert_eq!(sent.envelope_id.len(), 32);
    let message = first_message(&b, "").await;
    assert_eq!(message.payload, b"hello from a");
    assert_eq!(
        message.sender_member_id, id_a,
        "the sender is authenticated as member {id_a}"
    );
    assert_eq!(message.envelope_id, sent.envelope_id);

    a.stop().await;
    b.stop().await;
}

/// A restarted agent derives the same keys, skips registration (no new operation) and rebuilds
/// its state from the chain, including the messages it was sent.
#[tokio::test(flavor = "multi_thread")]
async fn restarted_agent_keeps_its_identity_and_skips_registration() {
    let dir = tempfile::tempdir().unwrap();
    let (stack, a, b) = two_agents(
        dir.path(),
        StackConfig::new(dir.path().join("devnet")).with_instant_mining(),
    )
    .await;
    let before = b
        .client()
        .await
        .get_self(pb::GetSelfRequest {})
        .await
        .unwrap()
        .into_inner();
    let id_b = before.member_id;
    a.client()
        .await
        .send_message(pb::SendMessageRequest {
            recipient_member_id: id_b,
            payload: b"kept".to_vec(),
        })
        .await
        .unwrap();

    let nonce = |account: alloy::primitives::Address| {
        let client = stack.chain.operator_client().clone();
        async move {
            client
                .entry_point_nonce(ENTRY_POINT_V07, account, U192::ZERO)
                .await
                .unwrap()
        }
    };
    let account_b = stack.nodes[1].account;
    let nonce_before = nonce(account_b).await;
    b.stop().await;

    let b = start_agent("node-2", agent_config(&stack, 1, dir.path(), None)).await;
    wait_status(&b, "a peer after restart", |s| s.phase == "wg-configuring").await;
    let after = b
        .client()
        .await
        .get_self(pb::GetSelfRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        after, before,
        "same member, keys and mesh IP after a restart"
    );
    assert_eq!(
        nonce(account_b).await,
        nonce_before,
        "registration was skipped: no operation sent"
    );

    let mut stream = b
        .client()
        .await
        .subscribe_messages(pb::SubscribeMessagesRequest {
            cursor: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let message = tokio::time::timeout(budget(), stream.next())
        .await
        .expect("rebuilt from the chain")
        .unwrap()
        .unwrap();
    assert_eq!(message.payload, b"kept");
    a.stop().await;
    b.stop().await;
}

/// The chain RPC fails for a while: the agent logs it, stays up, and recovers (it then sees a
/// member that joined during the outage).
#[tokio::test(flavor = "multi_thread")]
async fn agent_survives_a_chain_rpc_outage() {
    let dir = tempfile::tempdir().unwrap();
    let mut stack = stack(dir.path()).await;
    stack.add_node("node-1").await.unwrap();
    stack.add_node("node-2").await.unwrap();
    let proxy = FaultProxy::start(stack.chain.rpc_url().clone())
        .await
        .unwrap();
    let a = start_agent(
        "node-1",
        agent_config(&stack, 0, dir.path(), Some(proxy.url())),
    )
    .await;
    wait_status(&a, "registered and alone", |s| s.phase == "waiting-peers").await;

    proxy.set_mode(FaultMode::RpcError);
    let b = start_agent("node-2", agent_config(&stack, 1, dir.path(), None)).await;
    wait_status(&b, "a peer", |s| s.phase == "wg-configuring").await;
    // While the RPC fails, the poller keeps polling (each failed poll counted) and the agent
    // keeps answering its app. Other reads hit the proxy too, so its fault count alone would
    // not show the poller at work.
    let deadline = tokio::time::Instant::now() + budget();
    loop {
        let failed_polls = poll_errors(&a).await;
        if failed_polls >= 2.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent did not keep polling through the outage ({failed_polls} failed polls counted)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = a
        .client()
        .await
        .get_mesh_status(pb::GetMeshStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.phase, "waiting-peers",
        "state kept during the outage"
    );

    proxy.set_mode(FaultMode::Pass);
    wait_status(&a, "the member that joined during the outage", |s| {
        s.phase == "wg-configuring"
    })
    .await;
    assert!(
        poll_errors(&a).await >= 2.0,
        "the polls that failed during the outage stay counted"
    );
    a.stop().await;
    b.stop().await;
}

/// A resumed SubscribeMessages after a client restart misses nothing and repeats nothing.
#[tokio::test(flavor = "multi_thread")]
async fn resumed_subscription_misses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_stack, a, b) = two_agents(
        dir.path(),
        StackConfig::new(dir.path().join("devnet")).with_instant_mining(),
    )
    .await;
    let id_b = member_id(&b).await;
    send(&a, id_b, b"m1").await;
    send(&a, id_b, b"m2").await;

    let mut stream = b
        .client()
        .await
        .subscribe_messages(pb::SubscribeMessagesRequest {
            cursor: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(budget(), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.payload, b"m1");
    drop(stream); // the app restarts, remembering first.cursor

    send(&a, id_b, b"m3").await;
    let mut resumed = b
        .client()
        .await
        .subscribe_messages(pb::SubscribeMessagesRequest {
            cursor: first.cursor.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let message = tokio::time::timeout(budget(), resumed.next())
            .await
            .expect("resumed messages arrive")
            .unwrap()
            .unwrap();
        seen.push(String::from_utf8(message.payload).unwrap());
    }
    assert_eq!(seen, ["m2", "m3"], "nothing missed, nothing repeated");
    let unique: BTreeSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len());
    a.stop().await;
    b.stop().await;
}

/// Requests that cannot be served get clear gRPC errors; the CSK is refused before the gates.
#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut stack = stack(dir.path()).await;
    stack.add_node("node-1").await.unwrap();
    let a = start_agent("node-1", agent_config(&stack, 0, dir.path(), None)).await;
    wait_status(&a, "registered", past_registration).await;
    let mut client = a.client().await;

    let error = client
        .get_cluster_shared_key(pb::GetClusterSharedKeyRequest {})
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition, "{error:?}");
    assert!(
        error.message().contains("health gates"),
        "{}",
        error.message()
    );

    let error = client
        .send_message(pb::SendMessageRequest {
            recipient_member_id: 99,
            payload: b"x".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound, "{error:?}");
    let error = client
        .send_message(pb::SendMessageRequest {
            recipient_member_id: 0,
            payload: b"x".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    let error = client
        .send_message(pb::SendMessageRequest {
            recipient_member_id: 1,
            payload: vec![0; attestmesh_agent::messages::MAX_PAYLOAD + 1],
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(error.message().contains("limit"), "{}", error.message());
    let error = client
        .send_message(pb::SendMessageRequest {
            recipient_member_id: 1,
            payload: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    let error = client
        .subscribe_messages(pb::SubscribeMessagesRequest {
            cursor: "not-a-cursor".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);

    // /healthz: 503 with the seed's exact body and the waiting-for header.
    let response = reqwest::get(format!("http://{}/healthz", a.health))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert!(
        response
            .headers()
            .contains_key(attestmesh_agent::api::WAITING_FOR_HEADER)
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["phase"], "waiting-peers");
    assert_eq!(body.as_object().unwrap().len(), 4);
    a.stop().await;
}

/// What a malformed request is to the agent: a SendMessage body that does not decode (a string
/// where the recipient id belongs) and one over the 4 MiB gRPC limit. Each is refused with a
/// status that says why, and the agent keeps answering.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_and_oversized_grpc_requests_are_refused_and_the_agent_keeps_serving() {
    /// SendMessageRequest's field 1 (a uint64) sent as a length-delimited string.
    #[derive(Clone, PartialEq, prost::Message)]
    struct WrongWireType {
        #[prost(string, tag = "1")]
        recipient: String,
    }

    let dir = tempfile::tempdir().unwrap();
    let mut stack = stack(dir.path()).await;
    stack.add_node("node-1").await.unwrap();
    let a = start_agent("node-1", agent_config(&stack, 0, dir.path(), None)).await;
    wait_status(&a, "registered", past_registration).await;

    let channel = attestmesh_proto::agent::unix_channel(&a.socket)
        .await
        .unwrap();
    let mut raw = tonic::client::Grpc::new(channel);
    raw.ready().await.unwrap();
    let error = raw
        .unary::<WrongWireType, WrongWireType, _>(
            tonic::Request::new(WrongWireType {
                recipient: "member one".into(),
            }),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/attestmesh.agent.v1.Agent/SendMessage",
            ),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    println!("malformed: {:?} {}", error.code(), error.message());
    assert_eq!(error.code(), Code::Internal, "{error:?}");
    assert!(error.message().contains("decode"), "{}", error.message());

    let error = a
        .client()
        .await
        .send_message(pb::SendMessageRequest {
            recipient_member_id: 1,
            payload: vec![0x42; 5 * 1024 * 1024],
        })
        .await
        .unwrap_err();
    println!("oversized: {:?} {}", error.code(), error.message());
    assert!(
        matches!(error.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{error:?}"
    );

    let status = a
        .client()
        .await
        .get_mesh_status(pb::GetMeshStatusRequest {})
        .await
        .expect("the agent still answers")
        .into_inner();
    assert!(past_registration(&status), "{status:?}");
    a.stop().await;
}

/// An app holding subscriptions open must not keep the agent from stopping: at shutdown the
/// message and peer-event streams end and the agent's task completes. (Before, the gRPC
/// server's graceful shutdown waited on the open streams for ever.)
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_ends_open_subscriptions_and_the_agent_stops() {
    let dir = tempfile::tempdir().unwrap();
    let mut stack = stack(dir.path()).await;
    stack.add_node("node-1").await.unwrap();
    let a = start_agent("node-1", agent_config(&stack, 0, dir.path(), None)).await;
    wait_status(&a, "registered", past_registration).await;
    let mut client = a.client().await;
    let mut messages = client
        .subscribe_messages(pb::SubscribeMessagesRequest {
            cursor: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = client
        .subscribe_peer_events(pb::SubscribePeerEventsRequest {})
        .await
        .unwrap()
        .into_inner();

    a.shutdown.cancel();
    let stopped = tokio::time::timeout(budget(), a.task).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "the agent stops with subscriptions open: {stopped:?}"
    );
    // Ended: no more items (a stream the server reset ends with an error, also fine).
    let message = tokio::time::timeout(budget(), messages.next())
        .await
        .unwrap();
    assert!(!matches!(message, Some(Ok(_))), "{message:?}");
    let event = tokio::time::timeout(budget(), events.next()).await.unwrap();
    assert!(!matches!(event, Some(Ok(_))), "{event:?}");
}

/// The same sponsored registration and message, bundled by the real `@pimlico/alto` instead of
/// the project's bundler (the gas manager estimates through alto too).
#[tokio::test(flavor = "multi_thread")]
async fn registration_and_message_through_the_alto_bundler() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StackConfig::new(dir.path().join("devnet")).with_instant_mining();
    config.alto_port = Some(0);
    let (stack, a, b) = two_agents(dir.path(), config).await;
    assert_ne!(
        stack.bundler_url(),
        stack.bundler.url(),
        "nodes bundle through alto"
    );
    send(&a, member_id(&b).await, b"via alto").await;
    assert_eq!(first_message(&b, "").await.payload, b"via alto");
    a.stop().await;
    b.stop().await;
}

/// A node whose account the operator has not allowlisted yet waits in `registering`, says why
/// (the sponsorship policy's reason), and registers once the entry lands.
#[tokio::test(flavor = "multi_thread")]
async fn registration_waits_for_the_operators_allowlist() {
    use alloy::sol_types::SolCall;
    use attestmesh_bindings::cluster::Cluster;

    let dir = tempfile::tempdir().unwrap();
    let mut stack = stack(dir.path()).await;
    stack.add_node("node-1").await.unwrap();
    let account = stack.nodes[0].account;
    let operator = stack.chain.operator_client().clone();
    let disallow = Cluster::setAppIdAllowedCall {
        appId: account,
        allowed: false,
    }
    .abi_encode();
    operator
        .send_transaction("Cluster.setAppIdAllowed", stack.cluster, disallow.into())
        .await
        .unwrap();

    let a = start_agent("node-1", agent_config(&stack, 0, dir.path(), None)).await;
    let waiting = wait_status(&a, "waiting on the allowlist", |s| {
        s.phase == "registering" && s.waiting_for.contains("not an allowlisted member account")
    })
    .await;
    assert!(
        waiting.waiting_for.starts_with("operator:"),
        "{}",
        waiting.waiting_for
    );
    let response = reqwest::get(format!("http://{}/healthz", a.health))
        .await
        .unwrap();
    let header = response
        .headers()
        .get(attestmesh_agent::api::WAITING_FOR_HEADER)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(header.contains("allowlisted"), "{header}");

    let allow = Cluster::setAppIdAllowedCall {
        appId: account,
        allowed: true,
    }
    .abi_encode();
    operator
        .send_transaction("Cluster.setAppIdAllowed", stack.cluster, allow.into())
        .await
        .unwrap();
    wait_status(
        &a,
        "registered after the allowlist landed",
        past_registration,
    )
    .await;
    a.stop().await;
}

/// A sender built from node `index`'s TEE identity (what its agent uses), for crafting
/// operations an honest agent would never send.
async fn node_sender(
    stack: &attestmesh_devnet::stack::Stack,
    index: usize,
) -> attestmesh_chain::SponsoredSender {
    let dstack = attestmesh_dstack::DstackClient::new(attestmesh_dstack::Endpoint::Unix(
        stack.nodes[index].dstack_socket.clone(),
    ));
    let identity = attestmesh_agent::identity::Identity::derive(&dstack)
        .await
        .unwrap();
    let chain = attestmesh_chain::ChainClient::connect(stack.chain.rpc_url(), None)
        .await
        .unwrap();
    attestmesh_chain::SponsoredSender::new(
        chain,
        stack.bundler_url().clone(),
        stack.gas_manager.url().clone(),
        stack.config.policy_id.clone(),
        ENTRY_POINT_V07,
        identity.owner.clone(),
        identity.account,
    )
    .unwrap()
}

/// Through the real webhook: an unsponsorable operation is refused and the client shows the
/// policy's reason; a forged message (a ciphertext that is not a valid sealed message) reaches
/// the chain but is dropped, logged and counted, never delivered; a revoked member is reported
/// to SubscribePeerEvents and leaves the member set.
#[tokio::test(flavor = "multi_thread")]
async fn refused_operations_forged_messages_and_revocations() {
    use alloy::sol_types::SolCall;
    use attestmesh_bindings::cluster::Cluster;
    use attestmesh_bindings::member_account::MemberAccount;

    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let (stack, a, b) = two_agents(
        dir.path(),
        StackConfig::new(dir.path().join("devnet")).with_instant_mining(),
    )
    .await;
    let (id_a, id_b) = (member_id(&a).await, member_id(&b).await);
    let sender_a = node_sender(&stack, 0).await;

    let revoke = Cluster::revokeMemberCall { memberId: id_b }.abi_encode();
    let call = MemberAccount::executeCall {
        data: revoke.into(),
    }
    .abi_encode();
    let error = sender_a.send(call.into(), None).await.unwrap_err();
    assert!(
        matches!(
            error,
            attestmesh_chain::UserOpError::SponsorshipRefused { .. }
        ),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("member call is not a sponsored cluster function"),
        "{error}"
    );

    let forged = Cluster::sendCall {
        recipientMemberId: id_b,
        envelopeId: alloy::primitives::B256::repeat_byte(0xf0),
        ciphertext: vec![1u8; 200].into(),
    }
    .abi_encode();
    let call = MemberAccount::executeCall {
        data: forged.into(),
    }
    .abi_encode();
    sender_a
        .send(call.into(), None)
        .await
        .expect("the chain accepts any ciphertext from a member");
    send(&a, id_b, b"genuine").await;
    let delivered = first_message(&b, "").await;
    assert_eq!(
        delivered.payload, b"genuine",
        "the forged message was not delivered before the genuine one"
    );
    let metrics = reqwest::get(format!("http://{}/metrics", b.health))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("attestmesh_agent_messages_dropped_total{reason=\"rejected\"} 1")
        ),
        "the forged message is counted: {metrics}"
    );

    let mut events = a
        .client()
        .await
        .subscribe_peer_events(pb::SubscribePeerEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    let operator = stack.chain.operator_client();
    operator
        .send_transaction(
            "Cluster.revokeMember",
            stack.cluster,
            Cluster::revokeMemberCall { memberId: id_b }
                .abi_encode()
                .into(),
        )
        .await
        .unwrap();
    let event = tokio::time::timeout(budget(), events.next())
        .await
        .expect("a peer event")
        .unwrap()
        .unwrap();
    assert_eq!(event.kind, pb::peer_event::Kind::Revoked as i32);
    assert_eq!(event.member_id, id_b);
    wait_status(&a, "alone again", |s| s.phase == "waiting-peers").await;
    let peers = a
        .client()
        .await
        .list_peers(pb::ListPeersRequest {
            include_revoked: true,
        })
        .await
        .unwrap()
        .into_inner()
        .peers;
    assert!(
        peers
            .iter()
            .any(|p| p.member_id == id_b && p.status == "revoked"),
        "{peers:?}"
    );
    assert!(
        peers
            .iter()
            .any(|p| p.member_id == id_a && p.status == "active")
    );

    attestmesh_agent::status::print_status(&a.socket)
        .await
        .expect("the status subcommand reads the socket");
    a.stop().await;
    b.stop().await;
}

/// A reorg that undoes a registration the agent already applied: the agent notices (the block
/// hash it stopped at changed), re-reads the chain and drops the member that no longer exists.
#[tokio::test(flavor = "multi_thread")]
async fn a_reorg_that_undoes_a_registration_is_noticed() {
    use alloy::providers::Provider;

    let dir = tempfile::tempdir().unwrap();
    let mut stack = stack(dir.path()).await;
    stack.add_node("node-1").await.unwrap();
    stack.add_node("node-2").await.unwrap();
    let a = start_agent("node-1", agent_config(&stack, 0, dir.path(), None)).await;
    wait_status(&a, "registered and alone", |s| s.phase == "waiting-peers").await;

    let provider = stack.chain.operator_client().provider().clone();
    let snapshot: alloy::primitives::U256 = provider
        .raw_request("evm_snapshot".into(), ())
        .await
        .unwrap();
    let b = start_agent("node-2", agent_config(&stack, 1, dir.path(), None)).await;
    wait_status(&a, "the new peer", |s| s.phase == "wg-configuring").await;
    b.stop().await;

    let reverted: bool = provider
        .raw_request("evm_revert".into(), (snapshot,))
        .await
        .unwrap();
    assert!(reverted, "anvil reverted to the snapshot");
    wait_status(&a, "the reorg undone", |s| s.phase == "waiting-peers").await;
    let peers = a
        .client()
        .await
        .list_peers(pb::ListPeersRequest {
            include_revoked: true,
        })
        .await
        .unwrap()
        .into_inner()
        .peers;
    assert_eq!(peers.len(), 1, "only this node remains: {peers:?}");
    a.stop().await;
}
