//! ARP packets built and parsed with `smoltcp::wire`, and the paced subnet sweep, sans-I/O: the
//! sweep hands out request frames when they are due and reads replies; the caller owns the packet
//! socket and the clock.
//!
//! Packets here are ARP payloads without the Ethernet header: the cooked packet socket
//! ([`crate::packet::PacketSocket::arp`]) adds and strips it.

use crate::ipv4ll::ArpSeen;
use smoltcp::wire::{ArpOperation, ArpPacket, ArpRepr, EthernetAddress};
use std::net::Ipv4Addr;
use std::time::Duration;

/// The ARP opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Request,
    Reply,
    /// Anything else (RARP opcodes and junk); parsed so that link-local conflict detection sees
    /// every claim of an address, whatever the opcode.
    Other(u16),
}

impl From<ArpOperation> for Operation {
    fn from(op: ArpOperation) -> Self {
        match op {
            ArpOperation::Request => Operation::Request,
            ArpOperation::Reply => Operation::Reply,
            ArpOperation::Unknown(n) => Operation::Other(n),
        }
    }
}

impl From<Operation> for ArpOperation {
    fn from(op: Operation) -> Self {
        match op {
            Operation::Request => ArpOperation::Request,
            Operation::Reply => ArpOperation::Reply,
            Operation::Other(n) => ArpOperation::Unknown(n),
        }
    }
}

/// One Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Message {
    pub operation: Operation,
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_mac: [u8; 6],
    pub target_ip: Ipv4Addr,
}

impl Message {
    /// The packet's bytes (28 for Ethernet/IPv4).
    pub fn emit(&self) -> Vec<u8> {
        let repr = ArpRepr::EthernetIpv4 {
            operation: self.operation.into(),
            source_hardware_addr: EthernetAddress(self.sender_mac),
            source_protocol_addr: self.sender_ip,
            target_hardware_addr: EthernetAddress(self.target_mac),
            target_protocol_addr: self.target_ip,
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut ArpPacket::new_unchecked(&mut buf));
        buf
    }

    /// `None` for anything but a well-formed Ethernet/IPv4 ARP packet.
    pub fn parse(packet: &[u8]) -> Option<Self> {
        let pkt = ArpPacket::new_checked(packet).ok()?;
        let ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr,
            source_protocol_addr,
            target_hardware_addr,
            target_protocol_addr,
        } = ArpRepr::parse(&pkt).ok()?
        else {
            return None;
        };
        Some(Message {
            operation: operation.into(),
            sender_mac: source_hardware_addr.0,
            sender_ip: source_protocol_addr,
            target_mac: target_hardware_addr.0,
            target_ip: target_protocol_addr,
        })
    }

    /// The addresses link-local conflict detection looks at.
    pub fn seen(&self) -> ArpSeen {
        ArpSeen {
            sender_mac: self.sender_mac,
            sender_ip: self.sender_ip,
            target_ip: self.target_ip,
        }
    }
}

/// An ARP request from `mac` claiming `sender_ip` and asking for `target_ip`.
pub fn request(mac: [u8; 6], sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    Message {
        operation: Operation::Request,
        sender_mac: mac,
        sender_ip,
        target_mac: [0; 6],
        target_ip,
    }
    .emit()
}

/// An ARP reply from `mac` at `sender_ip` to `target_mac` at `target_ip`.
pub fn reply(mac: [u8; 6], sender_ip: Ipv4Addr, target_mac: [u8; 6], target_ip: Ipv4Addr) -> Vec<u8> {
    Message {
        operation: Operation::Reply,
        sender_mac: mac,
        sender_ip,
        target_mac,
        target_ip,
    }
    .emit()
}

/// A probe (RFC 5227 2.1.1): sender IP 0.0.0.0, so nobody's ARP cache learns anything.
pub fn probe(mac: [u8; 6], target: Ipv4Addr) -> Vec<u8> {
    request(mac, Ipv4Addr::UNSPECIFIED, target)
}

/// An announcement (RFC 5227 2.3): sender and target IP both `addr`.
pub fn announce(mac: [u8; 6], addr: Ipv4Addr) -> Vec<u8> {
    request(mac, addr, addr)
}

/// The addresses in an ARP packet, for link-local conflict detection.
pub fn parse(packet: &[u8]) -> Option<ArpSeen> {
    Message::parse(packet).map(|m| m.seen())
}

/// True when an ARP packet shows another host using `target`: a reply or request from it, or
/// another host's probe for it (RFC 5227 2.1.1).
pub fn conflicts(packet: &[u8], own_mac: [u8; 6], target: Ipv4Addr) -> bool {
    let Some(m) = Message::parse(packet) else {
        return false;
    };
    if m.sender_mac == own_mac {
        return false;
    }
    m.sender_ip == target
        || (m.operation == Operation::Request && m.sender_ip.is_unspecified() && m.target_ip == target)
}

/// A host that answered the sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Host {
    pub addr: Ipv4Addr,
    pub mac: [u8; 6],
}

/// A paced ARP sweep of this node's subnet: who else is on the link, before any cluster datagram
/// is sent. Nodes then say hello unicast to the hosts found instead of relying on broadcast alone.
///
/// Pacing: consecutive frames are at least `1 / rate` apart (a token bucket holding one token), so
/// no 1 s window ever carries more than `rate` frames; a caller that polls late only slows the
/// sweep down.
#[derive(Debug, Clone)]
pub struct Sweep {
    own_mac: [u8; 6],
    addr: Ipv4Addr,
    /// `None` for an empty sweep (prefix of /31 or longer): nothing is asked or reported.
    subnet: Option<Subnet>,
    /// Offset of the last target from the network address; starts at our own offset.
    cursor: u64,
    total: usize,
    sent: usize,
    interval: Duration,
    due: Duration,
    last_sent: Option<Duration>,
    found: Vec<Host>,
}

#[derive(Debug, Clone, Copy)]
struct Subnet {
    network: u32,
    /// Number of addresses, network and broadcast included (up to 2^32 for a /0).
    size: u64,
}

impl Subnet {
    fn new(addr: Ipv4Addr, prefix_len: u8) -> Option<Self> {
        if prefix_len >= 31 {
            return None;
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix_len)).unwrap_or(0);
        Some(Subnet {
            network: u32::from(addr) & mask,
            size: 1u64 << (32 - prefix_len),
        })
    }

    fn offset(&self, ip: Ipv4Addr) -> Option<u64> {
        let off = u64::from(u32::from(ip).wrapping_sub(self.network));
        (off < self.size).then_some(off)
    }

    /// Neither the network nor the broadcast address.
    fn is_host_offset(&self, off: u64) -> bool {
        off != 0 && off != self.size - 1
    }

    fn at(&self, off: u64) -> Ipv4Addr {
        // off < size <= 2^32, and network + off stays inside the subnet: no wrap.
        Ipv4Addr::from(self.network.wrapping_add(off as u32))
    }
}

impl Sweep {
    /// Targets: every host address of `addr/prefix_len` except network, broadcast and `addr`
    /// itself, starting just after `addr` and wrapping (so neighbours are asked first), at most
    /// `cap` of them. `prefix_len >= 31` or `cap == 0` -> empty sweep. `rate` = frames per
    /// second; 0 is taken as 1.
    pub fn new(
        own_mac: [u8; 6],
        addr: Ipv4Addr,
        prefix_len: u8,
        cap: usize,
        rate: u32,
        now: Duration,
    ) -> Self {
        let subnet = Subnet::new(addr, prefix_len);
        let (cursor, total) = match subnet {
            Some(s) => {
                let own = s.offset(addr).unwrap_or(0);
                let mut hosts = s.size - 2;
                if s.is_host_offset(own) {
                    hosts -= 1;
                }
                (own, usize::try_from(hosts).unwrap_or(usize::MAX).min(cap))
            }
            None => (0, 0),
        };
        let rate = u64::from(rate.max(1));
        // Rounded up, so that `rate` intervals never add up to less than a second.
        let interval = Duration::from_nanos(1_000_000_000u64.div_ceil(rate));
        Sweep {
            own_mac,
            addr,
            subnet,
            cursor,
            total,
            sent: 0,
            interval,
            due: now,
            last_sent: None,
            found: Vec::new(),
        }
    }

    /// The next frame (an ARP request payload with our real sender IP, for the broadcast MAC) and
    /// its target, if one is due at `now`.
    pub fn poll_send(&mut self, now: Duration) -> Option<(Ipv4Addr, Vec<u8>)> {
        if self.sent >= self.total || now < self.due {
            return None;
        }
        let subnet = self.subnet?;
        let own = subnet.offset(self.addr);
        loop {
            self.cursor = (self.cursor + 1) % subnet.size;
            if subnet.is_host_offset(self.cursor) && Some(self.cursor) != own {
                break;
            }
        }
        let target = subnet.at(self.cursor);
        self.sent += 1;
        self.last_sent = Some(now);
        self.due = now + self.interval;
        Some((target, request(self.own_mac, self.addr, target)))
    }

    /// When the next frame is due (the caller's poll timeout); `None` when all are sent.
    pub fn next_due(&self) -> Option<Duration> {
        (self.sent < self.total).then_some(self.due)
    }

    /// Feeds a received ARP packet; `Some(host)` the first time an address answers. Any reply
    /// from a host address of the subnet counts, asked or not: a live host is a live host.
    /// Requests are ignored (they could be anyone's probes and prove nothing about the sender's
    /// address), as are our own frames and senders with a MAC no NIC can have.
    pub fn on_packet(&mut self, packet: &[u8]) -> Option<Host> {
        let subnet = self.subnet?;
        let m = Message::parse(packet)?;
        if m.operation != Operation::Reply
            || m.sender_ip == self.addr
            || m.sender_mac == self.own_mac
            || !is_unicast_mac(m.sender_mac)
        {
            return None;
        }
        let off = subnet.offset(m.sender_ip)?;
        if !subnet.is_host_offset(off) || self.found.iter().any(|h| h.addr == m.sender_ip) {
            return None;
        }
        let host = Host {
            addr: m.sender_ip,
            mac: m.sender_mac,
        };
        self.found.push(host);
        Some(host)
    }

    /// All frames are sent and `linger` has passed since the last one (late replies are in).
    pub fn is_done(&self, now: Duration, linger: Duration) -> bool {
        self.sent >= self.total && self.last_sent.is_none_or(|t| now >= t + linger)
    }

    /// When the last frame went out; with `linger`, when the sweep will be done.
    pub fn last_sent(&self) -> Option<Duration> {
        self.last_sent
    }

    /// The hosts found so far, in the order they answered.
    pub fn found(&self) -> &[Host] {
        &self.found
    }

    pub fn sent(&self) -> usize {
        self.sent
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// The spacing between frames that `rate` gives.
    pub fn interval(&self) -> Duration {
        self.interval
    }
}

/// Not all-zero and not group (multicast/broadcast): an address a NIC can send from.
fn is_unicast_mac(mac: [u8; 6]) -> bool {
    mac != [0; 6] && mac[0] & 1 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const OTHER: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const T: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 50);
    const MS: Duration = Duration::from_millis(1);

    fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
        Ipv4Addr::new(a, b, c, d)
    }

    /// Every target of a sweep, polling exactly when each frame is due.
    fn targets(mut s: Sweep) -> Vec<Ipv4Addr> {
        let mut out = Vec::new();
        while let Some(due) = s.next_due() {
            let (t, _) = s.poll_send(due).expect("a frame is due at next_due");
            out.push(t);
        }
        assert_eq!(out.len(), s.total());
        assert_eq!(s.sent(), s.total());
        out
    }

    fn sweep(addr: Ipv4Addr, prefix: u8, cap: usize) -> Sweep {
        Sweep::new(ME, addr, prefix, cap, 1_000_000, Duration::ZERO)
    }

    #[test]
    fn frames_round_trip() {
        let m = Message::parse(&request(ME, ip(10, 0, 0, 1), T)).expect("parses");
        assert_eq!(m.operation, Operation::Request);
        assert_eq!(
            (m.sender_mac, m.sender_ip, m.target_mac, m.target_ip),
            (ME, ip(10, 0, 0, 1), [0; 6], T)
        );
        let p = Message::parse(&probe(ME, T)).expect("parses");
        assert!(p.sender_ip.is_unspecified() && p.target_ip == T);
        let a = Message::parse(&announce(ME, T)).expect("parses");
        assert!(a.sender_ip == T && a.target_ip == T && a.operation == Operation::Request);
        let r = Message::parse(&reply(OTHER, T, ME, ip(10, 0, 0, 1))).expect("parses");
        assert_eq!(r.operation, Operation::Reply);
        assert_eq!(r.target_mac, ME);
        assert_eq!(request(ME, T, T).len(), 28);
        assert_eq!(
            parse(&announce(OTHER, T)),
            Some(ArpSeen {
                sender_mac: OTHER,
                sender_ip: T,
                target_ip: T
            })
        );
        assert_eq!(parse(b"garbage"), None);
        // An IPv6-sized ARP (hardware 1, protocol 0x86dd, plen 16) is not ours.
        let mut v6 = request(ME, T, T);
        v6[2..4].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(Message::parse(&v6), None);
    }

    #[test]
    fn conflict_rules() {
        let reply_from = |mac, src, dst| reply(mac, src, ME, dst);
        assert!(!conflicts(&probe(ME, T), ME, T), "our own probe");
        assert!(conflicts(&probe(OTHER, T), ME, T), "someone else probing");
        assert!(conflicts(&reply_from(OTHER, T, ip(10, 0, 0, 9)), ME, T));
        assert!(!conflicts(
            &request(OTHER, ip(10, 0, 0, 9), ip(10, 0, 0, 8)),
            ME,
            T
        ));
        assert!(!conflicts(b"garbage", ME, T));
        assert!(!conflicts(&[], ME, T));
    }

    #[test]
    fn slash_24_asks_neighbours_first_and_wraps() {
        let t = targets(sweep(ip(10, 0, 0, 12), 24, 1024));
        assert_eq!(t.len(), 253);
        assert_eq!(t[0], ip(10, 0, 0, 13));
        assert_eq!(t[241], ip(10, 0, 0, 254));
        assert_eq!(t[242], ip(10, 0, 0, 1), "wraps past broadcast and network");
        assert_eq!(t[252], ip(10, 0, 0, 11));
        let mut sorted = t.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 253, "no address twice");
        assert!(!t.contains(&ip(10, 0, 0, 0)) && !t.contains(&ip(10, 0, 0, 255)));
        assert!(!t.contains(&ip(10, 0, 0, 12)));
    }

    #[test]
    fn own_address_at_either_end_of_the_subnet() {
        let t = targets(sweep(ip(10, 0, 0, 254), 24, 1024));
        assert_eq!((t.len(), t[0], t[252]), (253, ip(10, 0, 0, 1), ip(10, 0, 0, 253)));
        let t = targets(sweep(ip(10, 0, 0, 1), 24, 1024));
        assert_eq!((t.len(), t[0], t[252]), (253, ip(10, 0, 0, 2), ip(10, 0, 0, 254)));
    }

    #[test]
    fn slash_22_is_1021_targets() {
        let t = targets(sweep(ip(10, 1, 2, 7), 22, 1024));
        assert_eq!(t.len(), 1021);
        assert_eq!(t[0], ip(10, 1, 2, 8));
        assert!(t.contains(&ip(10, 1, 0, 255)), "x.x.x.255 inside a /22 is a host");
        assert!(!t.contains(&ip(10, 1, 0, 0)) && !t.contains(&ip(10, 1, 3, 255)));
        assert_eq!(*t.last().expect("targets"), ip(10, 1, 2, 6));
    }

    #[test]
    fn cap_smaller_than_the_subnet() {
        let t = targets(sweep(ip(192, 168, 1, 250), 24, 10));
        assert_eq!(
            t,
            [251, 252, 253, 254, 1, 2, 3, 4, 5, 6]
                .map(|d| ip(192, 168, 1, d))
                .to_vec()
        );
    }

    #[test]
    fn nothing_to_sweep() {
        for s in [
            sweep(ip(10, 0, 0, 1), 31, 1024),
            sweep(ip(10, 0, 0, 1), 32, 1024),
            sweep(ip(10, 0, 0, 1), 40, 1024),
            sweep(ip(10, 0, 0, 1), 24, 0),
        ] {
            let mut s = s;
            assert_eq!(s.total(), 0);
            assert_eq!(s.next_due(), None);
            assert_eq!(s.poll_send(Duration::from_secs(1)), None);
            assert!(
                s.is_done(Duration::ZERO, Duration::from_secs(1)),
                "an empty sweep is done at once"
            );
        }
        let mut s = sweep(ip(10, 0, 0, 1), 32, 1024);
        assert_eq!(
            s.on_packet(&reply(OTHER, ip(10, 0, 0, 2), ME, ip(10, 0, 0, 1))),
            None
        );
    }

    #[test]
    fn link_local_slash_16_is_capped() {
        let t = targets(sweep(ip(169, 254, 10, 20), 16, 1024));
        assert_eq!(t.len(), 1024);
        assert_eq!(t[0], ip(169, 254, 10, 21));
        assert_eq!(t[1023], ip(169, 254, 14, 20));
        // Near the top of the range the sweep wraps to the bottom.
        let t = targets(sweep(ip(169, 254, 255, 250), 16, 1024));
        assert_eq!(t.len(), 1024);
        assert_eq!(t[..4], [251, 252, 253, 254].map(|d| ip(169, 254, 255, d)));
        assert_eq!(t[4], ip(169, 254, 0, 1));
    }

    #[test]
    fn slash_0_does_not_overflow() {
        let mut s = sweep(ip(10, 0, 0, 1), 0, 3);
        assert_eq!(s.total(), 3);
        let t: Vec<_> = std::iter::from_fn(|| s.poll_send(Duration::from_secs(9)).map(|(t, _)| t))
            .take(1)
            .collect();
        assert_eq!(t, [ip(10, 0, 0, 2)]);
        let t = targets(sweep(ip(255, 255, 255, 253), 0, 3));
        assert_eq!(t, [ip(255, 255, 255, 254), ip(0, 0, 0, 1), ip(0, 0, 0, 2)]);
    }

    #[test]
    fn frames_are_requests_with_our_real_address() {
        let mut s = Sweep::new(ME, ip(10, 0, 0, 12), 24, 1024, 100, Duration::ZERO);
        let (t, frame) = s
            .poll_send(Duration::ZERO)
            .expect("the first frame is due at once");
        let m = Message::parse(&frame).expect("parses");
        assert_eq!(m.operation, Operation::Request);
        assert_eq!(
            (m.sender_mac, m.sender_ip, m.target_ip),
            (ME, ip(10, 0, 0, 12), t)
        );
    }

    #[test]
    fn rate_10_is_exactly_100_ms_apart() {
        let mut s = Sweep::new(ME, ip(10, 0, 0, 12), 24, 1024, 10, Duration::from_secs(5));
        let mut times = Vec::new();
        let mut now = Duration::from_secs(5);
        while times.len() < 20 {
            // Polling early gives nothing.
            if let Some(due) = s.next_due() {
                assert_eq!(s.poll_send(due.saturating_sub(MS)), None);
                now = due;
            }
            assert!(s.poll_send(now).is_some());
            times.push(now);
        }
        for w in times.windows(2) {
            assert_eq!(w[1] - w[0], Duration::from_millis(100));
        }
    }

    #[test]
    fn rate_1000_never_more_than_1000_in_any_second() {
        let mut s = Sweep::new(ME, ip(10, 1, 0, 1), 16, 5000, 1000, Duration::ZERO);
        let mut times = Vec::new();
        // A caller that polls at an odd 0.3 ms tick, sometimes late by up to 2 ms.
        let mut now = Duration::ZERO;
        let mut i = 0u64;
        while now < Duration::from_secs(3) {
            while s.poll_send(now).is_some() {
                times.push(now);
            }
            i += 1;
            now += Duration::from_micros(300 + if i.is_multiple_of(97) { 2000 } else { 0 });
        }
        // A frame waits for the first tick at or after its due time, so a 0.3 ms tick costs up
        // to 0.3 ms per frame: slower than the rate, never faster.
        assert!(times.len() >= 2200, "sent {} in 3 s", times.len());
        for (k, t) in times.iter().enumerate() {
            if let Some(later) = times.get(k + 1000) {
                assert!(
                    *later - *t >= Duration::from_secs(1),
                    "1001 frames within {:?}",
                    *later - *t
                );
            }
        }
        for w in times.windows(2) {
            assert!(w[1] - w[0] >= MS);
        }
    }

    #[test]
    fn rate_1000_with_a_punctual_caller_is_1000_per_second() {
        let mut s = Sweep::new(ME, ip(10, 1, 0, 1), 16, 5000, 1000, Duration::ZERO);
        let mut in_first_second = 0;
        while let Some(due) = s.next_due().filter(|d| *d < Duration::from_secs(1)) {
            assert!(s.poll_send(due).is_some());
            in_first_second += 1;
        }
        assert_eq!(in_first_second, 1000);
    }

    #[test]
    fn done_after_linger() {
        let linger = Duration::from_millis(500);
        let mut s = Sweep::new(ME, ip(10, 0, 0, 1), 29, 1024, 100, Duration::ZERO);
        assert_eq!(s.total(), 5);
        let mut last = Duration::ZERO;
        while let Some(due) = s.next_due() {
            assert!(!s.is_done(due, linger));
            s.poll_send(due);
            last = due;
        }
        assert_eq!(last, Duration::from_millis(40));
        assert!(!s.is_done(last + linger - MS, linger));
        assert!(s.is_done(last + linger, linger));
    }

    #[test]
    fn replies_found_once_and_only_from_the_subnet() {
        let us = ip(10, 0, 0, 12);
        let mut s = Sweep::new(ME, us, 24, 1024, 100, Duration::ZERO);
        let a = ip(10, 0, 0, 40);
        let host = Host { addr: a, mac: OTHER };
        assert_eq!(
            s.on_packet(&reply(OTHER, a, ME, us)),
            Some(host),
            "a reply to our request"
        );
        assert_eq!(s.on_packet(&reply(OTHER, a, ME, us)), None, "duplicate");
        assert_eq!(
            s.on_packet(&reply([2, 0, 0, 0, 0, 9], a, ME, us)),
            None,
            "a second MAC for the same address is not a second host"
        );
        assert_eq!(
            s.on_packet(&request(OTHER, ip(10, 0, 0, 41), us)),
            None,
            "a request"
        );
        assert_eq!(
            s.on_packet(&reply(OTHER, ip(10, 0, 1, 5), ME, us)),
            None,
            "outside the subnet"
        );
        assert_eq!(
            s.on_packet(&reply(OTHER, ip(10, 0, 0, 255), ME, us)),
            None,
            "broadcast address"
        );
        assert_eq!(
            s.on_packet(&reply(OTHER, ip(10, 0, 0, 0), ME, us)),
            None,
            "network address"
        );
        assert_eq!(s.on_packet(&reply(OTHER, us, ME, us)), None, "our own address");
        assert_eq!(
            s.on_packet(&reply(ME, ip(10, 0, 0, 42), ME, us)),
            None,
            "our own MAC"
        );
        assert_eq!(
            s.on_packet(&reply([0; 6], ip(10, 0, 0, 43), ME, us)),
            None,
            "zero MAC"
        );
        assert_eq!(
            s.on_packet(&reply([0xff; 6], ip(10, 0, 0, 44), ME, us)),
            None,
            "broadcast MAC"
        );
        assert_eq!(s.on_packet(b"garbage"), None);
        assert_eq!(s.on_packet(&[]), None);
        let mut short = reply(OTHER, ip(10, 0, 0, 45), ME, us);
        short.truncate(27);
        assert_eq!(s.on_packet(&short), None, "truncated");
        // Never asked (nothing sent yet), but in the subnet and alive; also an unsolicited
        // broadcast reply.
        let b = ip(10, 0, 0, 200);
        let other2 = [2, 0, 0, 0, 0, 3];
        assert_eq!(
            s.on_packet(&reply(other2, b, [0xff; 6], b)),
            Some(Host { addr: b, mac: other2 })
        );
        assert_eq!(s.found(), &[host, Host { addr: b, mac: other2 }]);
    }
}
