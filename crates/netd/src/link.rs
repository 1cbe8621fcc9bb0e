//! DHCP on one interface: the sans-I/O client wired to its sockets, the ARP probe and netlink.

use crate::arp_probe;
use crate::state_file::{self, LeaseFile};
use clump_net::dhcp::{Action, Client, ClientConfig, Counters, Dest, Lease, CLIENT_PORT, SERVER_PORT};
use clump_net::ipv4ll::{self as ll, LinkLocal};
use clump_net::packet::{PacketSocket, BROADCAST_MAC};
use clump_net::{frame, Nic, Rtnl};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::time::Duration;

pub struct Paths {
    pub lease_file: PathBuf,
    pub resolv_conf: PathBuf,
}

struct Probe {
    address: Ipv4Addr,
    sent: u32,
    next: Duration,
}

pub struct Link {
    pub nic: Nic,
    mac: [u8; 6],
    pub client: Client,
    raw: PacketSocket,
    arp: PacketSocket,
    /// Bound to the leased address once there is one: unicast renewals go through the kernel.
    udp: Option<UdpSocket>,
    probe: Option<Probe>,
    pub bound: Option<Lease>,
    /// RFC 3927 fallback, started by the service when no server answered in time.
    pub link_local: LinkLocal,
    /// The drop counters the lease file shows, and when it was written.
    written: (Counters, Duration),
}

/// The lease file is rewritten for new drop counters at most this often.
const COUNTERS_EVERY: Duration = Duration::from_secs(1);

/// Whether the lease file is due for a rewrite because the drop counters moved: the file was
/// written only when the lease changed, so packets dropped meanwhile never showed.
fn counters_due(written: &(Counters, Duration), now: &Counters, at: Duration) -> bool {
    written.0 != *now && at.saturating_sub(written.1) >= COUNTERS_EVERY
}

/// What a link reports to the service loop.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Bound,
    Unbound,
}

pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

impl Link {
    pub fn open(nic: Nic, hostname: Option<String>, seed: u64) -> std::io::Result<Self> {
        let mac = parse_mac(&nic.mac).ok_or_else(|| std::io::Error::other(format!("bad MAC {}", nic.mac)))?;
        let raw = PacketSocket::ipv4_udp_to(nic.index, CLIENT_PORT)?;
        let arp = PacketSocket::arp(nic.index)?;
        let cfg = ClientConfig {
            mac,
            hostname,
            vendor_class: format!("clump {}", env!("CARGO_PKG_VERSION")),
        };
        Ok(Link {
            nic,
            mac,
            client: Client::new(cfg, seed),
            raw,
            arp,
            udp: None,
            probe: None,
            bound: None,
            link_local: LinkLocal::new(mac, seed.rotate_left(17)),
            written: (Counters::default(), Duration::ZERO),
        })
    }

    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        let mut v = vec![self.raw.as_fd(), self.arp.as_fd()];
        if let Some(u) = &self.udp {
            v.push(u.as_fd());
        }
        v
    }

    pub fn deadline(&self) -> Option<Duration> {
        let probe = self.probe.as_ref().map(|p| p.next);
        [self.client.deadline(), probe, self.link_local.deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Advances timers, reads every socket, applies what the client decided.
    pub fn turn(&mut self, now: Duration, rtnl: &mut Rtnl, paths: &Paths) -> Vec<Outcome> {
        let mut actions = self.client.tick(now);
        actions.extend(self.probe_step(now));
        let mut buf = vec![0u8; 2048];
        while let Ok(Some(packet)) = self.raw.recv(&mut buf) {
            if let Some(d) = frame::parse_udp_ipv4(packet) {
                if d.src_port == SERVER_PORT && d.dst_port == CLIENT_PORT {
                    actions.extend(self.client.handle(now, d.payload));
                }
            }
        }
        let mut ll_actions = self.link_local.tick(now);
        while let Ok(Some(packet)) = self.arp.recv(&mut buf) {
            if let Some(seen) = arp_probe::parse(packet) {
                ll_actions.extend(self.link_local.arp(now, seen));
            }
            if let Some(p) = &self.probe {
                if arp_probe::conflicts(packet, self.mac, p.address) {
                    tracing::warn!(iface = %self.nic.name, address = %p.address, "offered address is in use: declining");
                    self.probe = None;
                    actions.extend(self.client.probe_result(now, true));
                }
            }
        }
        if let Some(u) = &self.udp {
            // Replies are read from the packet socket; this only keeps the queue empty.
            while u.recv(&mut buf).is_ok() {}
        }
        let mut out = self.apply(actions, now, rtnl, paths);
        out.extend(self.apply_link_local(ll_actions, rtnl, paths));
        if counters_due(&self.written, &self.client.counters(), now) {
            self.write_state(paths, "bound");
        }
        out
    }

    /// Carries out what the link-local state machine decided.
    pub fn apply_link_local(
        &mut self,
        actions: Vec<ll::Action>,
        rtnl: &mut Rtnl,
        paths: &Paths,
    ) -> Vec<Outcome> {
        let mut out = Vec::new();
        for action in actions {
            let result = match action {
                ll::Action::Probe(a) => arp_probe::send_probe(&self.arp, self.mac, a),
                ll::Action::Announce(a) => self
                    .arp
                    .send_to(&arp_probe::announce_packet(self.mac, a), BROADCAST_MAC),
                ll::Action::Configure(a) => {
                    let r =
                        rtnl.replace_address(self.nic.index, a, ll::PREFIX_LEN, Some(ll::BROADCAST), None);
                    if r.is_ok() {
                        tracing::info!(iface = %self.nic.name, addr = %format!("{a}/{}", ll::PREFIX_LEN), "link-local address");
                        if self.bound.is_none() {
                            self.write_state(paths, "bound");
                            out.push(Outcome::Bound);
                        }
                    }
                    r.map_err(std::io::Error::other)
                }
                ll::Action::Deconfigure(a) => {
                    tracing::info!(iface = %self.nic.name, addr = %a, "link-local address given up");
                    rtnl.delete_address(self.nic.index, a, ll::PREFIX_LEN)
                        .map_err(std::io::Error::other)
                }
            };
            if let Err(e) = result {
                tracing::warn!(iface = %self.nic.name, action = ?action, error = %e, "link-local step failed");
            }
        }
        out
    }

    fn probe_step(&mut self, now: Duration) -> Vec<Action> {
        let Some(p) = self.probe.as_mut() else {
            return Vec::new();
        };
        if now < p.next {
            return Vec::new();
        }
        if p.sent < arp_probe::PROBES {
            if let Err(e) = arp_probe::send_probe(&self.arp, self.mac, p.address) {
                tracing::warn!(iface = %self.nic.name, error = %e, "ARP probe not sent");
            }
            p.sent += 1;
            p.next = now + arp_probe::INTERVAL;
            return Vec::new();
        }
        self.probe = None;
        self.client.probe_result(now, false)
    }

    pub fn apply(
        &mut self,
        actions: Vec<Action>,
        now: Duration,
        rtnl: &mut Rtnl,
        paths: &Paths,
    ) -> Vec<Outcome> {
        let mut out = Vec::new();
        for action in actions {
            match action {
                Action::Send { payload, dest } => self.send(&payload, dest),
                Action::Probe(address) => {
                    self.probe = Some(Probe {
                        address,
                        sent: 0,
                        next: now,
                    })
                }
                Action::Bind(lease) => {
                    if self.bind(&lease, rtnl, paths) {
                        out.push(Outcome::Bound);
                    }
                }
                Action::Unbind { address, reason } => {
                    if reason == "released" {
                        tracing::info!(iface = %self.nic.name, address = %address, "lease released");
                    } else {
                        tracing::warn!(iface = %self.nic.name, address = %address, reason, "lease lost");
                    }
                    let prefix = self.bound.as_ref().map_or(32, |l| l.prefix_len);
                    if let Err(e) = rtnl.delete_address(self.nic.index, address, prefix) {
                        tracing::warn!(error = %e, "cannot remove address");
                    }
                    self.udp = None;
                    self.bound = None;
                    self.write_state(paths, "unbound");
                    out.push(Outcome::Unbound);
                }
            }
        }
        out
    }

    fn send(&self, payload: &[u8], dest: Dest) {
        tracing::info!(iface = %self.nic.name, phase = ?self.client.phase(), dest = ?dest, "dhcp send");
        let result = match (dest, &self.udp) {
            (Dest::Unicast(server), Some(udp)) => udp
                .send_to(payload, SocketAddrV4::new(server, SERVER_PORT))
                .map(|_| ()),
            (Dest::Broadcast, Some(udp)) => udp
                .send_to(payload, SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT))
                .map(|_| ()),
            (_, None) => {
                let packet = frame::udp_ipv4(
                    Ipv4Addr::UNSPECIFIED,
                    Ipv4Addr::BROADCAST,
                    CLIENT_PORT,
                    SERVER_PORT,
                    payload,
                );
                self.raw.send_to(&packet, BROADCAST_MAC)
            }
        };
        if let Err(e) = result {
            tracing::warn!(iface = %self.nic.name, error = %e, "DHCP message not sent");
        }
    }

    fn bind(&mut self, lease: &Lease, rtnl: &mut Rtnl, paths: &Paths) -> bool {
        let idx = self.nic.index;
        let fresh = self.bound.as_ref().map(|l| l.address) != Some(lease.address);
        if let Err(e) = rtnl.replace_address(
            idx,
            lease.address,
            lease.prefix_len,
            lease.options.broadcast,
            Some(lease.lease_time),
        ) {
            tracing::error!(iface = %self.nic.name, error = %e, "cannot configure the leased address");
            return false;
        }
        if let Some(mtu) = lease.options.mtu.filter(|m| *m >= 576) {
            if let Err(e) = rtnl.set_mtu(idx, u32::from(mtu)) {
                tracing::warn!(error = %e, "cannot set MTU");
            }
        }
        if let Some(gw) = lease.options.router {
            if let Err(e) = rtnl.replace_default_route(idx, gw) {
                tracing::warn!(gateway = %gw, error = %e, "cannot set the default route");
            }
        }
        if fresh {
            self.udp = open_udp(lease.address, &self.nic.name);
            if let Err(e) = state_file::write_resolv_conf(&paths.resolv_conf, lease) {
                tracing::warn!(error = %e, "cannot write resolv.conf");
            }
        }
        self.bound = Some(lease.clone());
        let ll_stop = self.link_local.stop();
        if !ll_stop.is_empty() {
            tracing::info!(iface = %self.nic.name, "DHCP lease replaces the link-local address");
            self.apply_link_local(ll_stop, rtnl, paths);
        }
        tracing::info!(
            iface = %self.nic.name,
            addr = %format!("{}/{}", lease.address, lease.prefix_len),
            server = %lease.server,
            lease_s = lease.lease_time.as_secs(),
            t1_s = lease.t1.as_secs(),
            t2_s = lease.t2.as_secs(),
            renewed = !fresh,
            "lease"
        );
        self.write_state(paths, "bound");
        true
    }

    fn write_state(&mut self, paths: &Paths, state: &str) {
        self.written = (self.client.counters(), crate::since_boot());
        let (via, lease) = match (&self.bound, self.link_local.address()) {
            (Some(l), _) => ("dhcp", serde_json::to_value(l).ok()),
            (None, Some(a)) => (
                "link-local",
                Some(serde_json::json!({ "address": a, "prefix_len": ll::PREFIX_LEN })),
            ),
            (None, None) => ("dhcp", None),
        };
        let state = if lease.is_some() { state } else { "unbound" };
        let file = LeaseFile {
            iface: &self.nic.name,
            driver: &self.nic.driver,
            mac: &self.nic.mac,
            via,
            state,
            lease,
            written_at: crate::since_boot().as_secs(),
            dropped: self.client.counters(),
        };
        if let Err(e) = state_file::write_json(&paths.lease_file, &file) {
            tracing::warn!(path = %paths.lease_file.display(), error = %e, "cannot write the lease file");
        }
    }

    /// Orderly shutdown: RELEASE and remove the address.
    pub fn release(&mut self, now: Duration, rtnl: &mut Rtnl, paths: &Paths) {
        let actions = self.client.release();
        self.apply(actions, now, rtnl, paths);
        let ll = self.link_local.stop();
        self.apply_link_local(ll, rtnl, paths);
    }
}

fn open_udp(address: Ipv4Addr, iface: &str) -> Option<UdpSocket> {
    let sock = match UdpSocket::bind(SocketAddrV4::new(address, CLIENT_PORT)) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(iface, error = %e, "no UDP socket for renewals; using broadcast");
            return None;
        }
    };
    let _ = sock.set_broadcast(true);
    let _ = sock.set_nonblocking(true);
    Some(sock)
}

#[cfg(test)]
mod tests {
    use super::{counters_due, parse_mac, Counters, COUNTERS_EVERY};
    use std::time::Duration;

    #[test]
    fn dropped_packets_reach_the_lease_file_within_a_second() {
        let t = Duration::from_secs(50);
        let written = (Counters::default(), t);
        let moved = Counters {
            malformed: 3,
            ..Counters::default()
        };
        assert!(!counters_due(
            &written,
            &Counters::default(),
            t + COUNTERS_EVERY * 10
        ));
        assert!(!counters_due(&written, &moved, t + COUNTERS_EVERY / 2));
        assert!(counters_due(&written, &moved, t + COUNTERS_EVERY));
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("52:54:00:12:34:56"),
            Some([0x52, 0x54, 0, 0x12, 0x34, 0x56])
        );
        assert_eq!(parse_mac("52:54:00:12:34"), None);
        assert_eq!(parse_mac("52:54:00:12:34:56:78"), None);
        assert_eq!(parse_mac("zz:54:00:12:34:56"), None);
    }
}
