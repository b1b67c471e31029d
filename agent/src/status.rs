//! `cluster-mesh-agent status`: reads the API socket and prints the node's state, as an app
//! sees it (the CSK by its commitment only).

use std::path::Path;

use attestmesh_proto::agent::v1 as pb;
use attestmesh_proto::agent::v1::agent_client::AgentClient;
use tonic::transport::Channel;

/// Connects a gRPC client to the agent's unix socket.
pub async fn connect(socket: &Path) -> eyre::Result<AgentClient<Channel>> {
    attestmesh_proto::agent::connect_unix(socket)
        .await
        .map_err(|e| {
            eyre::eyre!(
                "cannot reach the agent at {}: {e} (is it running? is the path right?)",
                socket.display()
            )
        })
}

/// Prints phase, identity, the CSK's epoch and commitment, and peers.
pub async fn print_status(socket: &Path) -> eyre::Result<()> {
    let mut client = connect(socket).await?;
    let status = client
        .get_mesh_status(pb::GetMeshStatusRequest {})
        .await?
        .into_inner();
    let me = client.get_self(pb::GetSelfRequest {}).await?.into_inner();
    let peers = client
        .list_peers(pb::ListPeersRequest {
            include_revoked: true,
        })
        .await?
        .into_inner()
        .peers;
    println!("phase:           {}", status.phase);
    if !status.waiting_for.is_empty() {
        println!("waiting for:     {}", status.waiting_for);
    }
    println!("csk acquired:    {}", status.csk_acquired);
    println!("first converged: {}", status.first_converged);
    println!("live peers:      {}", status.live_peers);
    println!(
        "member:          {} (account {}, mesh ip {})",
        me.member_id,
        me.account,
        if me.mesh_ip.is_empty() {
            "-"
        } else {
            &me.mesh_ip
        }
    );
    println!("cluster:         {} on chain {}", me.cluster, me.chain_id);
    // The CSK as an app reads it; its commitment is printed, never the key.
    match client
        .get_cluster_shared_key(pb::GetClusterSharedKeyRequest {})
        .await
    {
        Ok(csk) => {
            let csk = csk.into_inner();
            println!(
                "csk:             epoch {}, {} bytes, commitment 0x{}",
                csk.epoch,
                csk.key.len(),
                alloy::hex::encode(&csk.commitment)
            );
        }
        Err(status) => println!("csk:             not served: {}", status.message()),
    }
    println!("members:");
    for peer in peers {
        let age = peer
            .last_heartbeat_age_ms
            .map_or("-".to_string(), |ms| format!("{ms} ms"));
        println!(
            "  {:>4}  {:<15} {:<8} live={:<5} last heartbeat {}{}",
            peer.member_id,
            peer.mesh_ip,
            peer.status,
            peer.live,
            age,
            if peer.is_self { "  (self)" } else { "" }
        );
    }
    Ok(())
}
