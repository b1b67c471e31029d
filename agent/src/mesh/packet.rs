//! The little IPv4 the dataplane reads and writes: destination addresses for routing, and ICMP
//! "host unreachable" answers for mesh addresses that have no peer.

use std::net::Ipv4Addr;

const IPV4_HEADER_MIN: usize = 20;
const PROTO_ICMP: u8 = 1;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_HOST_UNREACH: u8 = 1;

/// The destination of an IPv4 packet; `None` for anything else (IPv6, garbage).
pub(super) fn ipv4_destination(packet: &[u8]) -> Option<Ipv4Addr> {
    let header = ipv4_header(packet)?;
    let dst: [u8; 4] = header.get(16..20)?.try_into().ok()?;
    Some(Ipv4Addr::from(dst))
}

/// The IPv4 header of `packet`, if it is a well-formed IPv4 packet.
fn ipv4_header(packet: &[u8]) -> Option<&[u8]> {
    let first = *packet.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(first & 0x0f) * 4;
    if header_len < IPV4_HEADER_MIN {
        return None;
    }
    packet.get(..header_len)
}

/// An ICMP "destination unreachable / host unreachable" for `original`, a packet the kernel
/// routed into the mesh towards an address with no peer; written back into the TUN it makes a
/// local `connect()` fail at once with EHOSTUNREACH instead of hanging until its timeout.
///
/// The answer's source is the unreachable address itself: a source that is one of this host's
/// own addresses would be dropped by the kernel as martian, while the unreachable address routes
/// back through the mesh interface, so reverse-path filtering accepts it. `None` (no answer) for
/// non-IPv4 packets, non-first fragments and ICMP errors, as RFC 1122 requires.
pub(super) fn host_unreachable(original: &[u8]) -> Option<Vec<u8>> {
    let header = ipv4_header(original)?;
    let fragment_offset = u16::from_be_bytes([*header.get(6)?, *header.get(7)?]) & 0x1fff;
    if fragment_offset != 0 {
        return None;
    }
    let protocol = *header.get(9)?;
    if protocol == PROTO_ICMP {
        let icmp_type = *original.get(header.len())?;
        // Only echo requests (8) are answered with an error; other ICMP (errors above all) not.
        if icmp_type != 8 {
            return None;
        }
    }
    let src: [u8; 4] = header.get(12..16)?.try_into().ok()?;
    let dst: [u8; 4] = header.get(16..20)?.try_into().ok()?;

    // The original IP header and the first 8 bytes of its payload (RFC 792).
    let quoted = original.get(..(header.len() + 8).min(original.len()))?;
    let total = IPV4_HEADER_MIN + 8 + quoted.len();
    let total_len = u16::try_from(total).ok()?;
    let mut reply = Vec::with_capacity(total);
    reply.extend_from_slice(&[0x45, 0]); // version 4, header 20 bytes; TOS 0
    reply.extend_from_slice(&total_len.to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]); // identification; no flags, offset 0
    reply.extend_from_slice(&[64, PROTO_ICMP, 0, 0]); // TTL, protocol, checksum placeholder
    reply.extend_from_slice(&dst); // from the unreachable address
    reply.extend_from_slice(&src); // back to the sender
    let ip_checksum = checksum(&reply);
    reply[10..12].copy_from_slice(&ip_checksum.to_be_bytes());

    reply.extend_from_slice(&[ICMP_DEST_UNREACH, ICMP_HOST_UNREACH, 0, 0, 0, 0, 0, 0]);
    reply.extend_from_slice(quoted);
    let icmp_checksum = checksum(&reply[IPV4_HEADER_MIN..]);
    reply[IPV4_HEADER_MIN + 2..IPV4_HEADER_MIN + 4].copy_from_slice(&icmp_checksum.to_be_bytes());
    Some(reply)
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut words = data.chunks_exact(2);
    for word in &mut words {
        sum += u32::from(u16::from_be_bytes([word[0], word[1]]));
    }
    if let [last] = words.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// A TCP SYN header from 10.88.0.1 to 10.88.0.2 with a valid IP checksum.
    fn syn() -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 40, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 88, 0, 1, 10, 88, 0, 2,
        ];
        let c = checksum(&p);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p.extend_from_slice(&[
            0x9c, 0x40, 0x1b, 0x58, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 2, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        p
    }

    #[test]
    fn destinations_are_read_from_ipv4_only() {
        assert_eq!(ipv4_destination(&syn()), Some(Ipv4Addr::new(10, 88, 0, 2)));
        assert_eq!(ipv4_destination(&[0x60; 40]), None);
        assert_eq!(ipv4_destination(&[0x45; 10]), None);
        assert_eq!(ipv4_destination(&[0x44; 40]), None);
        assert_eq!(ipv4_destination(&[]), None);
    }

    #[test]
    fn host_unreachable_quotes_the_packet_and_checksums_verify() {
        let original = syn();
        let reply = host_unreachable(&original).unwrap();
        assert_eq!(reply.len(), 20 + 8 + 28);
        assert_eq!(checksum(&reply[..20]), 0, "IP header checksum");
        assert_eq!(checksum(&reply[20..]), 0, "ICMP checksum");
        assert_eq!(&reply[12..16], &[10, 88, 0, 2]);
        assert_eq!(&reply[16..20], &[10, 88, 0, 1]);
        assert_eq!(&reply[20..22], &[3, 1]);
        assert_eq!(&reply[28..], &original[..28]);
    }

    #[test]
    fn no_answer_to_icmp_errors_fragments_or_garbage() {
        let mut icmp_error = syn();
        icmp_error[9] = PROTO_ICMP;
        icmp_error[20] = 3;
        assert!(host_unreachable(&icmp_error).is_none());
        icmp_error[20] = 8;
        assert!(host_unreachable(&icmp_error).is_some());
        let mut fragment = syn();
        fragment[7] = 1;
        assert!(host_unreachable(&fragment).is_none());
        assert!(host_unreachable(&[0x45, 0, 0]).is_none());
        assert!(host_unreachable(&[]).is_none());
        // A header only (no payload) is quoted as is.
        assert!(host_unreachable(&syn()[..20]).is_some());
    }
}
