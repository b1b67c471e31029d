//! The TUN device: created up with the mesh address (its prefix route covers the mesh), and
//! the reader that routes each outgoing packet to its peer's task.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::error::TrySendError;
use tracing::{trace, warn};
use tun::AsyncDevice;

use super::error::{MeshError, Result};
use super::{LOG_TARGET, Shared, frame, packet};

/// Largest packet sent into a tunnel: its datagram (packet + 32 bytes of WireGuard) must fit
/// in one frame. Far above the MTU; only a misbehaving kernel could exceed it.
pub(super) const MAX_PACKET: usize = frame::MAX_FRAME - 32;

/// Pause after a failed TUN read, so a broken device does not spin the loop.
const READ_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Create `interface` with `ip/prefix_len`, `mtu`, up. It exists as long as the returned
/// device (the file descriptor) does.
pub(super) fn create(
    interface: &str,
    ip: Ipv4Addr,
    prefix_len: u8,
    mtu: u16,
) -> Result<AsyncDevice> {
    let netmask = Ipv4Addr::from(u32::MAX << (32 - u32::from(prefix_len)));
    let mut config = tun::Configuration::default();
    config
        .tun_name(interface)
        .address(ip)
        .netmask(netmask)
        .mtu(mtu)
        .up();
    tun::create_as_async(&config).map_err(|source| MeshError::Tun {
        interface: interface.to_owned(),
        source,
    })
}

/// Read packets from the TUN and hand each to the peer owning its destination. A packet for a
/// mesh address without a peer is answered with ICMP host-unreachable; non-IPv4 packets (the
/// mesh is IPv4) are dropped.
pub(super) async fn read_loop(device: Arc<AsyncDevice>, shared: Arc<Shared>) {
    let mut buf = vec![0u8; frame::MAX_FRAME];
    loop {
        let len = match device.recv(&mut buf).await {
            Ok(len) => len,
            Err(err) => {
                warn!(target: LOG_TARGET, %err, "reading the TUN device failed; retrying");
                tokio::time::sleep(READ_ERROR_PAUSE).await;
                continue;
            }
        };
        let Some(packet) = buf.get(..len) else {
            continue;
        };
        if packet.len() > MAX_PACKET {
            trace!(target: LOG_TARGET, len, "packet too large for a frame; dropped");
            continue;
        }
        let Some(dst) = packet::ipv4_destination(packet) else {
            trace!(target: LOG_TARGET, len, "non-IPv4 packet dropped");
            continue;
        };
        // The guard is released before any await below.
        let routed = shared
            .read()
            .by_ip
            .get(&dst)
            .map(|link| link.packets.try_send(packet.to_vec()));
        match routed {
            Some(Ok(())) => {}
            Some(Err(TrySendError::Full(_))) => {
                // Like a full UDP socket buffer: drop, and let the sender's congestion control
                // slow down.
                trace!(target: LOG_TARGET, %dst, "peer queue full; packet dropped");
            }
            Some(Err(TrySendError::Closed(_))) => {
                trace!(target: LOG_TARGET, %dst, "peer stopping; packet dropped");
            }
            None => {
                if let Some(reply) = packet::host_unreachable(packet)
                    && let Err(err) = device.send(&reply).await
                {
                    trace!(target: LOG_TARGET, %dst, %err, "cannot write host-unreachable");
                }
            }
        }
    }
}
