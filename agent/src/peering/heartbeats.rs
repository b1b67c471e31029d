//! Signed heartbeats over the mesh: sent every interval (and at once when this node's connected
//! set changes), received and verified before they count for liveness.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tracing::{debug, warn};

use super::Liveness;
use crate::heartbeat::{self, HEARTBEAT_PORT, HeartbeatBody};
use crate::state::Node;
use crate::targets::PEERS;

pub(super) async fn send_heartbeats(
    node: Node,
    self_id: u64,
    socket: Arc<UdpSocket>,
    liveness: Arc<Liveness>,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = liveness.changed.notified() => tick.reset(),
        }
        let connected: Vec<u64> = liveness
            .tracker
            .lock()
            .await
            .connected_set(Instant::now())
            .into_iter()
            .collect();
        let body = HeartbeatBody {
            member_id: self_id,
            seq: crate::cluster::now_ms(),
            connected,
        };
        let bytes = heartbeat::encode(&node.identity.heartbeat, &body);
        for peer in node.cluster.active_peers().await {
            if let Err(error) = socket
                .send_to(&bytes, SocketAddrV4::new(peer.mesh_ip, HEARTBEAT_PORT))
                .await
            {
                debug!(target: PEERS, peer = peer.id, %error, "heartbeat not sent");
            }
        }
    }
}

pub(super) async fn receive_heartbeats(
    node: Node,
    socket: Arc<UdpSocket>,
    liveness: Arc<Liveness>,
) {
    let mut buffer = vec![0u8; 2048];
    let mut by_ip: BTreeMap<Ipv4Addr, u64> = BTreeMap::new();
    let mut refusals = crate::log_limit::LogLimiter::default();
    loop {
        let (len, from) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(error) => {
                warn!(target: PEERS, %error, "heartbeat socket error");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let result = verify_heartbeat(&node, &buffer[..len], from, &mut by_ip, &liveness).await;
        if let Err(error) = result {
            node.metrics.dropped("heartbeat");
            node.metrics
                .heartbeats_refused
                .get_or_create(&vec![("reason".to_string(), error.label().to_string())])
                .inc();
            if let Some(suppressed) = refusals.should_log(from.ip(), error.label(), Instant::now())
            {
                warn!(target: PEERS, %from, %error, suppressed, "heartbeat refused (the same refusal from this source is logged at most once a minute; every one is counted on /metrics)");
            }
        }
    }
}

async fn verify_heartbeat(
    node: &Node,
    bytes: &[u8],
    from: SocketAddr,
    by_ip: &mut BTreeMap<Ipv4Addr, u64>,
    liveness: &Liveness,
) -> Result<(), heartbeat::HeartbeatError> {
    let SocketAddr::V4(from) = from else {
        return Err(heartbeat::HeartbeatError::Malformed("IPv6 source".into()));
    };
    by_ip.clear();
    for peer in node.cluster.active_peers().await {
        by_ip.insert(peer.mesh_ip, peer.id);
    }
    let actual = *by_ip
        .get(from.ip())
        .ok_or(heartbeat::HeartbeatError::UnknownSource(*from.ip()))?;
    let claimed = heartbeat::claimed_member(bytes)?;
    if claimed != actual {
        return Err(heartbeat::HeartbeatError::WrongMember { claimed, actual });
    }
    let endpoint = node
        .cluster
        .endpoint(actual)
        .await
        .ok_or(heartbeat::HeartbeatError::NoKey(actual))?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&endpoint.heartbeat_key)
        .map_err(|_| heartbeat::HeartbeatError::BadSignature(actual))?;
    let body = heartbeat::decode(bytes, &key)?;
    liveness
        .tracker
        .lock()
        .await
        .accept(&body, Instant::now(), crate::cluster::now_ms())?;
    Ok(())
}
