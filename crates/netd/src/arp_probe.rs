//! RFC 5227 address probe: is anyone already using the address the server offered?

use clump_net::packet::{PacketSocket, BROADCAST_MAC};
use smoltcp::wire::{ArpOperation, ArpPacket, ArpRepr, EthernetAddress};
use std::net::Ipv4Addr;
use std::time::Duration;

/// PROBE_NUM probes, PROBE_MIN apart (shortened from 1-2 s: a lab or office LAN answers in ms).
pub const PROBES: u32 = 3;
pub const INTERVAL: Duration = Duration::from_millis(300);

/// An ARP request from `mac` claiming `sender_ip` and asking for `target_ip`.
fn request(mac: [u8; 6], sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    let repr = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(mac),
        source_protocol_addr: sender_ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target_ip,
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit(&mut ArpPacket::new_unchecked(&mut buf));
    buf
}

/// A probe (RFC 5227 2.1.1): sender IP 0.0.0.0, so nobody's ARP cache learns anything.
pub fn probe_packet(mac: [u8; 6], target: Ipv4Addr) -> Vec<u8> {
    request(mac, Ipv4Addr::UNSPECIFIED, target)
}

pub fn send_probe(sock: &PacketSocket, mac: [u8; 6], target: Ipv4Addr) -> std::io::Result<()> {
    sock.send_to(&probe_packet(mac, target), BROADCAST_MAC)
}

/// An announcement (RFC 5227 2.3): sender and target IP both `addr`.
pub fn announce_packet(mac: [u8; 6], addr: Ipv4Addr) -> Vec<u8> {
    request(mac, addr, addr)
}

/// The addresses in an ARP packet, for link-local conflict detection.
pub fn parse(packet: &[u8]) -> Option<clump_net::ipv4ll::ArpSeen> {
    let pkt = ArpPacket::new_checked(packet).ok()?;
    let ArpRepr::EthernetIpv4 {
        source_hardware_addr,
        source_protocol_addr,
        target_protocol_addr,
        ..
    } = ArpRepr::parse(&pkt).ok()?
    else {
        return None;
    };
    Some(clump_net::ipv4ll::ArpSeen {
        sender_mac: source_hardware_addr.0,
        sender_ip: source_protocol_addr,
        target_ip: target_protocol_addr,
    })
}

/// True when an ARP packet shows another host using `target`: a reply or request from it, or
/// another host's probe for it (RFC 5227 2.1.1).
pub fn conflicts(packet: &[u8], own_mac: [u8; 6], target: Ipv4Addr) -> bool {
    let Ok(pkt) = ArpPacket::new_checked(packet) else {
        return false;
    };
    let Ok(ArpRepr::EthernetIpv4 {
        source_hardware_addr,
        source_protocol_addr,
        target_protocol_addr,
        operation,
        ..
    }) = ArpRepr::parse(&pkt)
    else {
        return false;
    };
    if source_hardware_addr.0 == own_mac {
        return false;
    }
    source_protocol_addr == target
        || (operation == ArpOperation::Request
            && source_protocol_addr.is_unspecified()
            && target_protocol_addr == target)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const OTHER: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const T: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 50);

    fn reply(mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        let mut b = request(mac, src, dst);
        ArpPacket::new_unchecked(&mut b).set_operation(ArpOperation::Reply);
        b
    }

    #[test]
    fn conflict_rules() {
        assert!(!conflicts(&probe_packet(ME, T), ME, T), "our own probe");
        assert!(conflicts(&probe_packet(OTHER, T), ME, T), "someone else probing");
        assert!(conflicts(&reply(OTHER, T, Ipv4Addr::new(10, 0, 0, 9)), ME, T));
        assert!(!conflicts(
            &request(OTHER, Ipv4Addr::new(10, 0, 0, 9), Ipv4Addr::new(10, 0, 0, 8)),
            ME,
            T
        ));
        assert!(!conflicts(b"garbage", ME, T));
        assert!(!conflicts(&[], ME, T));
    }
}
