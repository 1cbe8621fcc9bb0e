//! IPv4/UDP datagrams built and checked with `smoltcp::wire`, for DHCP over a packet socket
//! (the interface has no address yet, so the kernel's UDP stack cannot send or receive for us).

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{IpProtocol, Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr};
use std::net::Ipv4Addr;

const TTL: u8 = 64;
const IPV4_HEADER: usize = 20;
const UDP_HEADER: usize = 8;

/// An IPv4 header plus UDP header plus `payload`, checksums filled in.
pub fn udp_ipv4(src: Ipv4Addr, dst: Ipv4Addr, src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let udp = UdpRepr { src_port, dst_port };
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Udp,
        payload_len: UDP_HEADER + payload.len(),
        hop_limit: TTL,
    };
    let mut buf = vec![0u8; IPV4_HEADER + UDP_HEADER + payload.len()];
    let caps = ChecksumCapabilities::default();
    let mut ip_packet = Ipv4Packet::new_unchecked(&mut buf);
    ip.emit(&mut ip_packet, &caps);
    let mut udp_packet = UdpPacket::new_unchecked(ip_packet.payload_mut());
    udp.emit(
        &mut udp_packet,
        &ip.src_addr.into(),
        &ip.dst_addr.into(),
        payload.len(),
        |b| b.copy_from_slice(payload),
        &caps,
    );
    buf
}

/// A received UDP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: &'a [u8],
}

/// Parses an IPv4 packet carrying UDP; `None` for anything else, truncated, fragmented or with a
/// wrong IP header checksum. The UDP checksum is not verified: a packet socket sees locally
/// generated or offloaded datagrams (veth, virtio) before the checksum is filled in
/// (`CHECKSUM_PARTIAL`), and the DHCP layer checks what it reads anyway.
pub fn parse_udp_ipv4(packet: &[u8]) -> Option<Datagram<'_>> {
    let mut caps = ChecksumCapabilities::default();
    caps.udp = smoltcp::phy::Checksum::Tx;
    let ip_packet = Ipv4Packet::new_checked(packet).ok()?;
    let ip = Ipv4Repr::parse(&ip_packet, &caps).ok()?;
    if ip.next_header != IpProtocol::Udp || ip_packet.more_frags() || ip_packet.frag_offset() != 0 {
        return None;
    }
    let udp_packet = UdpPacket::new_checked(ip_packet.payload()).ok()?;
    let udp = UdpRepr::parse(&udp_packet, &ip.src_addr.into(), &ip.dst_addr.into(), &caps).ok()?;
    Some(Datagram {
        src: ip.src_addr,
        dst: ip.dst_addr,
        src_port: udp.src_port,
        dst_port: udp.dst_port,
        payload: udp_packet.payload(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let b = udp_ipv4(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67, b"hello dhcp");
        let d = parse_udp_ipv4(&b).unwrap();
        assert_eq!(
            (d.src, d.dst, d.src_port, d.dst_port),
            (Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67)
        );
        assert_eq!(d.payload, b"hello dhcp");
        let mut partial = b.clone();
        partial[26] ^= 0xff; // UDP checksum as an offloading NIC leaves it
        assert_eq!(
            parse_udp_ipv4(&partial).map(|d| d.payload),
            Some(&b"hello dhcp"[..])
        );
        let mut bad = b.clone();
        bad[8] ^= 1;
        assert!(parse_udp_ipv4(&bad).is_none(), "IP header checksum");
        assert!(parse_udp_ipv4(&b[..25]).is_none());
        assert!(parse_udp_ipv4(&[]).is_none());
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..5000 {
            let v: Vec<u8> = (0..rng.usize(0..80)).map(|_| rng.u8(..)).collect();
            let _ = parse_udp_ipv4(&v);
        }
    }
}
