//! RFC 5227 address probe: is anyone already using the address the server offered? The frames
//! are `clump_net::arp`'s; this is the socket side and the timing.

use clump_net::arp;
use clump_net::packet::{PacketSocket, BROADCAST_MAC};
use std::net::Ipv4Addr;
use std::time::Duration;

pub use clump_net::arp::{conflicts, parse};

/// PROBE_NUM probes, PROBE_MIN apart (shortened from 1-2 s: a lab or office LAN answers in ms).
pub const PROBES: u32 = 3;
pub const INTERVAL: Duration = Duration::from_millis(300);

pub fn send_probe(sock: &PacketSocket, mac: [u8; 6], target: Ipv4Addr) -> std::io::Result<()> {
    sock.send_to(&arp::probe(mac, target), BROADCAST_MAC)
}

/// An announcement (RFC 5227 2.3): sender and target IP both `addr`.
pub fn announce_packet(mac: [u8; 6], addr: Ipv4Addr) -> Vec<u8> {
    arp::announce(mac, addr)
}
