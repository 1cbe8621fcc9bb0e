//! The RFC 2131 client state machine: INIT, SELECTING, REQUESTING, (probing), BOUND, RENEWING,
//! REBINDING. It owns no socket and no clock.

use super::lease::{prefix_len, timers, Lease};
use super::message::{self, parse_reply, Reply, ReplyError};
use dhcproto::v4::MessageType;
use std::net::Ipv4Addr;
use std::time::Duration;

/// Who the client is on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    pub mac: [u8; 6],
    pub hostname: Option<String>,
    /// Option 60, so servers (and people reading their logs) can tell Clump nodes apart.
    pub vendor_class: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// 255.255.255.255 from 0.0.0.0, over a packet socket while there is no address.
    Broadcast,
    /// To the server, from the leased address (RENEWING).
    Unicast(Ipv4Addr),
}

/// What the edge must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send {
        payload: Vec<u8>,
        dest: Dest,
    },
    /// ARP-probe the address (RFC 5227) and report with [`Client::probe_result`].
    Probe(Ipv4Addr),
    /// Configure (or refresh) this lease on the interface.
    Bind(Lease),
    /// Remove the address: the lease ended, was refused or released.
    Unbind {
        address: Ipv4Addr,
        reason: &'static str,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Init,
    Selecting,
    Requesting,
    Probing,
    Bound,
    Renewing,
    Rebinding,
    Stopped,
}

/// Datagrams dropped, by reason: bad input is counted, never acted on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub malformed: u64,
    pub foreign: u64,
    pub unexpected: u64,
    pub naks: u64,
    pub declines: u64,
}

/// After this many unanswered REQUESTs in REQUESTING, start over with DISCOVER.
const MAX_REQUESTS: u32 = 4;
/// RFC 2131 3.1.5: wait at least 10 s after a DECLINE before trying again.
const DECLINE_WAIT: Duration = Duration::from_secs(10);
/// After a NAK, start over soon but not in a tight loop with a misbehaving server.
const NAK_WAIT: Duration = Duration::from_secs(1);
/// How long the edge has to report an ARP probe before we take silence as "free".
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// RFC 2131 4.4.5 says 60 s; lab leases of 2 minutes would then get one retry at most.
const MIN_EXTEND_RETRY: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Client {
    cfg: ClientConfig,
    rng: fastrand::Rng,
    phase: Phase,
    xid: u32,
    /// When the current exchange began, for the `secs` field.
    began: Duration,
    attempt: u32,
    deadline: Option<Duration>,
    offer: Option<Reply>,
    /// Lease waiting for its probe (PROBING) or in force (BOUND and later).
    lease: Option<Lease>,
    counters: Counters,
}

impl Client {
    pub fn new(cfg: ClientConfig, seed: u64) -> Self {
        Client {
            cfg,
            rng: fastrand::Rng::with_seed(seed),
            phase: Phase::Init,
            xid: 0,
            began: Duration::ZERO,
            attempt: 0,
            deadline: Some(Duration::ZERO),
            offer: None,
            lease: None,
            counters: Counters::default(),
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }
    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref().filter(|_| self.phase != Phase::Probing)
    }
    pub fn counters(&self) -> Counters {
        self.counters
    }
    /// When [`Client::tick`] next has work; `None` when stopped.
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// Acts on time passing: sends, retransmits, moves to RENEWING/REBINDING, expires a lease.
    pub fn tick(&mut self, now: Duration) -> Vec<Action> {
        match self.deadline {
            Some(d) if d <= now => {}
            _ => return Vec::new(),
        }
        match self.phase {
            Phase::Init => self.discover(now),
            Phase::Selecting => {
                self.attempt += 1;
                self.send_discover(now)
            }
            Phase::Requesting if self.attempt + 1 >= MAX_REQUESTS => self.discover(now),
            Phase::Requesting => {
                self.attempt += 1;
                self.send_request(now)
            }
            Phase::Probing => self.bind(now),
            Phase::Bound => {
                self.phase = Phase::Renewing;
                self.new_exchange(now);
                self.send_extend(now)
            }
            Phase::Renewing | Phase::Rebinding => self.extend_timeout(now),
            Phase::Stopped => Vec::new(),
        }
    }

    /// Handles one datagram from port 67. Anything not for us, broken or unexpected is counted.
    pub fn handle(&mut self, now: Duration, data: &[u8]) -> Vec<Action> {
        let reply = match parse_reply(data, &self.cfg.mac, self.xid) {
            Ok(r) => r,
            Err(e) if e.is_foreign() => {
                self.counters.foreign += 1;
                return Vec::new();
            }
            Err(ReplyError::NotReply) => return Vec::new(), // our own broadcast, looped back
            Err(_) => {
                self.counters.malformed += 1;
                return Vec::new();
            }
        };
        match (self.phase, reply.kind) {
            (Phase::Selecting, MessageType::Offer) => {
                self.offer = Some(reply);
                self.phase = Phase::Requesting;
                self.attempt = 0;
                self.send_request(now)
            }
            (Phase::Requesting, MessageType::Ack) if self.sent_by_offer_server(&reply) => {
                match self.lease_from(&reply, now) {
                    Some(lease) => {
                        let address = lease.address;
                        self.lease = Some(lease);
                        self.phase = Phase::Probing;
                        self.deadline = Some(now + PROBE_TIMEOUT);
                        vec![Action::Probe(address)]
                    }
                    None => {
                        self.counters.malformed += 1;
                        Vec::new()
                    }
                }
            }
            (Phase::Requesting, MessageType::Nak) if self.sent_by_offer_server(&reply) => self.nak(now),
            (Phase::Renewing | Phase::Rebinding, MessageType::Ack) if self.may_extend(&reply) => {
                match self.lease_from(&reply, now) {
                    Some(lease) => self.extended(now, lease),
                    None => {
                        self.counters.malformed += 1;
                        Vec::new()
                    }
                }
            }
            (Phase::Renewing | Phase::Rebinding, MessageType::Nak) if self.may_extend(&reply) => {
                self.nak(now)
            }
            _ => {
                self.counters.unexpected += 1;
                Vec::new()
            }
        }
    }

    /// The ARP probe's answer for the address in PROBING.
    pub fn probe_result(&mut self, now: Duration, in_use: bool) -> Vec<Action> {
        if self.phase != Phase::Probing {
            return Vec::new();
        }
        if !in_use {
            return self.bind(now);
        }
        self.counters.declines += 1;
        let mut actions = Vec::new();
        if let Some(lease) = self.lease.take() {
            actions.push(Action::Send {
                payload: message::decline(&self.cfg, self.xid, lease.address, lease.server),
                dest: Dest::Broadcast,
            });
        }
        self.phase = Phase::Init;
        self.deadline = Some(now + DECLINE_WAIT);
        actions
    }

    /// Gives the lease back (orderly shutdown) and stops.
    pub fn release(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        if let (Some(lease), Phase::Bound | Phase::Renewing | Phase::Rebinding) =
            (self.lease.take(), self.phase)
        {
            actions.push(Action::Send {
                payload: message::release(&self.cfg, self.rng.u32(..), lease.address, lease.server),
                dest: Dest::Unicast(lease.server),
            });
            actions.push(Action::Unbind {
                address: lease.address,
                reason: "released",
            });
        }
        self.phase = Phase::Stopped;
        self.deadline = None;
        actions
    }

    fn new_exchange(&mut self, now: Duration) {
        self.xid = self.rng.u32(..);
        self.began = now;
        self.attempt = 0;
    }

    fn secs(&self, now: Duration) -> u16 {
        u16::try_from(now.saturating_sub(self.began).as_secs()).unwrap_or(u16::MAX)
    }

    /// RFC 2131 4.1: 4 s, 8 s, ... up to 64 s, each randomised by up to one second either way.
    fn retransmit_delay(&mut self) -> Duration {
        let base = Duration::from_secs(4u64 << self.attempt.min(4));
        let jitter = Duration::from_millis(self.rng.u64(0..=2000));
        (base + jitter).saturating_sub(Duration::from_secs(1))
    }

    fn discover(&mut self, now: Duration) -> Vec<Action> {
        self.phase = Phase::Selecting;
        self.offer = None;
        self.new_exchange(now);
        self.send_discover(now)
    }

    fn send_discover(&mut self, now: Duration) -> Vec<Action> {
        self.deadline = Some(now + self.retransmit_delay());
        vec![Action::Send {
            payload: message::discover(&self.cfg, self.xid, self.secs(now)),
            dest: Dest::Broadcast,
        }]
    }

    fn send_request(&mut self, now: Duration) -> Vec<Action> {
        let Some(offer) = self.offer.as_ref() else {
            return self.discover(now);
        };
        let payload = message::request_offer(&self.cfg, self.xid, self.secs(now), offer);
        self.deadline = Some(now + self.retransmit_delay());
        vec![Action::Send {
            payload,
            dest: Dest::Broadcast,
        }]
    }

    fn send_extend(&mut self, now: Duration) -> Vec<Action> {
        let Some(lease) = self.lease.as_ref() else {
            return self.discover(now);
        };
        let (dest, until) = match self.phase {
            Phase::Renewing => (Dest::Unicast(lease.server), lease.rebind_at()),
            _ => (Dest::Broadcast, lease.expires_at()),
        };
        let payload = message::request_extend(&self.cfg, self.xid, self.secs(now), lease.address);
        // RFC 2131 4.4.5: retry after half the time left until T2 (renewing) or expiry (rebinding).
        let wait = (until.saturating_sub(now) / 2).max(MIN_EXTEND_RETRY);
        self.deadline = Some((now + wait).min(until));
        vec![Action::Send { payload, dest }]
    }

    fn extend_timeout(&mut self, now: Duration) -> Vec<Action> {
        let Some(lease) = self.lease.as_ref() else {
            return self.discover(now);
        };
        if now >= lease.expires_at() {
            let address = lease.address;
            self.lease = None;
            let mut actions = vec![Action::Unbind {
                address,
                reason: "expired",
            }];
            actions.extend(self.discover(now));
            return actions;
        }
        if self.phase == Phase::Renewing && now >= lease.rebind_at() {
            self.phase = Phase::Rebinding;
        }
        self.attempt += 1;
        self.send_extend(now)
    }

    fn bind(&mut self, now: Duration) -> Vec<Action> {
        let Some(lease) = self.lease.as_ref() else {
            return self.discover(now);
        };
        self.phase = Phase::Bound;
        self.deadline = Some(lease.renew_at());
        vec![Action::Bind(lease.clone())]
    }

    fn extended(&mut self, now: Duration, lease: Lease) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(old) = self.lease.as_ref().filter(|old| old.address != lease.address) {
            actions.push(Action::Unbind {
                address: old.address,
                reason: "server moved the lease",
            });
        }
        self.lease = Some(lease);
        actions.extend(self.bind(now));
        actions
    }

    fn nak(&mut self, now: Duration) -> Vec<Action> {
        self.counters.naks += 1;
        let mut actions = Vec::new();
        if let Some(lease) = self.lease.take() {
            if self.phase != Phase::Probing && self.phase != Phase::Requesting {
                actions.push(Action::Unbind {
                    address: lease.address,
                    reason: "refused by server",
                });
            }
        }
        self.phase = Phase::Init;
        self.deadline = Some(now + NAK_WAIT);
        actions
    }

    fn sent_by_offer_server(&self, reply: &Reply) -> bool {
        self.offer.as_ref().is_some_and(|o| o.server == reply.server)
    }

    /// RENEWING talks to the lease's server; REBINDING accepts any server.
    fn may_extend(&self, reply: &Reply) -> bool {
        self.phase == Phase::Rebinding || self.lease.as_ref().is_some_and(|l| l.server == reply.server)
    }

    fn lease_from(&self, reply: &Reply, now: Duration) -> Option<Lease> {
        let lease_time = reply.lease_time?;
        let (t1, t2) = timers(lease_time, reply.t1, reply.t2);
        let prefix_len = match reply.mask {
            Some(m) => prefix_len(m)?,
            None => classful_prefix(reply.yiaddr),
        };
        Some(Lease {
            address: reply.yiaddr,
            prefix_len,
            server: reply.server,
            options: reply.options.clone(),
            lease_time,
            t1,
            t2,
            acquired: now,
        })
    }
}

/// The prefix a server without option 1 implies (RFC 2131 leaves it to the client).
fn classful_prefix(a: Ipv4Addr) -> u8 {
    match a.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

#[cfg(test)]
mod tests {
    use super::super::message::tests::{server_reply, MAC};
    use super::*;
    use dhcproto::v4::{DhcpOption, Message};
    use dhcproto::{Decodable, Encodable};

    const S: fn(u64) -> Duration = Duration::from_secs;
    const ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 50);
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    fn client() -> Client {
        Client::new(
            ClientConfig {
                mac: MAC,
                hostname: None,
                vendor_class: "clump".into(),
            },
            42,
        )
    }

    fn sent(actions: &[Action]) -> Message {
        match actions.iter().find_map(|a| match a {
            Action::Send { payload, .. } => Some(payload),
            _ => None,
        }) {
            Some(p) => Message::from_bytes(p).unwrap(),
            None => panic!("nothing sent in {actions:?}"),
        }
    }

    fn reply(kind: MessageType, xid: u32, lease: Option<u32>) -> Vec<u8> {
        server_reply(kind, xid, ADDR, lease).to_vec().unwrap()
    }

    /// Runs DISCOVER, OFFER, REQUEST, ACK and a clean probe; returns the client bound at t=1 s.
    fn bound(lease_secs: u32) -> Client {
        let mut c = client();
        let d = sent(&c.tick(S(0)));
        assert_eq!(d.opts().msg_type(), Some(MessageType::Discover));
        let r = sent(&c.handle(S(0), &reply(MessageType::Offer, d.xid(), Some(lease_secs))));
        assert_eq!(r.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(r.xid(), d.xid());
        assert_eq!(
            r.opts().get(dhcproto::v4::OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(ADDR))
        );
        assert_eq!(
            c.handle(S(1), &reply(MessageType::Ack, d.xid(), Some(lease_secs))),
            [Action::Probe(ADDR)]
        );
        let b = c.probe_result(S(1), false);
        assert!(
            matches!(&b[..], [Action::Bind(l)] if l.address == ADDR && l.prefix_len == 24 && l.options.router == Some(SERVER))
        );
        assert_eq!(c.phase(), Phase::Bound);
        c
    }

    #[test]
    fn full_exchange_then_renew_at_t1_keeps_the_address() {
        let mut c = bound(120);
        assert_eq!(c.deadline(), Some(S(61)));
        assert!(c.tick(S(60)).is_empty());
        let renew = c.tick(S(61));
        assert!(matches!(
            renew[0],
            Action::Send {
                dest: Dest::Unicast(SERVER),
                ..
            }
        ));
        let m = sent(&renew);
        assert_eq!(m.ciaddr(), ADDR);
        assert_eq!(c.phase(), Phase::Renewing);
        let ack = c.handle(S(62), &reply(MessageType::Ack, m.xid(), Some(120)));
        assert!(matches!(&ack[..], [Action::Bind(l)] if l.address == ADDR && l.acquired == S(62)));
        assert_eq!(c.phase(), Phase::Bound);
        assert_eq!(c.deadline(), Some(S(122)));
    }

    #[test]
    fn silent_server_rebinds_then_expires() {
        let mut c = bound(120); // acquired 1, T1 61, T2 106, expiry 121
        c.tick(S(61));
        let mut t = S(61);
        let mut phases = Vec::new();
        let mut unbound = None;
        while t < S(200) && unbound.is_none() {
            t = c.deadline().unwrap().max(t);
            for a in c.tick(t) {
                match a {
                    Action::Unbind { reason, .. } => unbound = Some((t, reason)),
                    Action::Send { dest, .. } => phases.push((c.phase(), dest)),
                    _ => {}
                }
            }
        }
        assert!(phases
            .iter()
            .any(|(p, d)| *p == Phase::Renewing && *d == Dest::Unicast(SERVER)));
        assert!(phases
            .iter()
            .any(|(p, d)| *p == Phase::Rebinding && *d == Dest::Broadcast));
        assert_eq!(unbound, Some((S(121), "expired")));
        assert_eq!(c.phase(), Phase::Selecting, "starts over with DISCOVER");
    }

    #[test]
    fn discover_is_retransmitted_with_growing_randomised_delay() {
        let mut c = client();
        let xid = sent(&c.tick(S(0))).xid();
        let mut last = S(0);
        let mut gaps = Vec::new();
        for _ in 0..6 {
            let d = c.deadline().unwrap();
            gaps.push(d - last);
            last = d;
            let m = sent(&c.tick(d));
            assert_eq!(m.xid(), xid, "same transaction");
        }
        for (i, g) in gaps.iter().enumerate() {
            let base = 4u64 << i.min(4);
            assert!(*g >= S(base - 1) && *g <= S(base + 1), "gap {i}: {g:?}");
        }
    }

    #[test]
    fn nak_restarts_and_decline_waits() {
        let mut c = client();
        let xid = sent(&c.tick(S(0))).xid();
        c.handle(S(0), &reply(MessageType::Offer, xid, Some(600)));
        assert!(c.handle(S(1), &reply(MessageType::Nak, xid, None)).is_empty());
        assert_eq!(c.phase(), Phase::Init);
        assert_eq!(c.counters().naks, 1);
        let xid = sent(&c.tick(S(2))).xid();
        c.handle(S(2), &reply(MessageType::Offer, xid, Some(600)));
        c.handle(S(2), &reply(MessageType::Ack, xid, Some(600)));
        let d = c.probe_result(S(3), true);
        assert_eq!(sent(&d).opts().msg_type(), Some(MessageType::Decline));
        assert_eq!(c.phase(), Phase::Init);
        assert!(c.tick(S(12)).is_empty());
        assert_eq!(
            sent(&c.tick(S(13))).opts().msg_type(),
            Some(MessageType::Discover)
        );
    }

    #[test]
    fn nak_while_renewing_unbinds() {
        let mut c = bound(120);
        let xid = sent(&c.tick(S(61))).xid();
        let a = c.handle(S(62), &reply(MessageType::Nak, xid, None));
        assert_eq!(
            a,
            [Action::Unbind {
                address: ADDR,
                reason: "refused by server"
            }]
        );
        assert_eq!(c.phase(), Phase::Init);
    }

    #[test]
    fn foreign_malformed_and_unexpected_are_counted_not_acted_on() {
        let mut c = client();
        let xid = sent(&c.tick(S(0))).xid();
        assert!(c
            .handle(S(0), &reply(MessageType::Offer, xid.wrapping_add(1), Some(60)))
            .is_empty());
        let mut other = server_reply(MessageType::Offer, xid, ADDR, Some(60));
        other.set_chaddr(&[9, 9, 9, 9, 9, 9]);
        assert!(c.handle(S(0), &other.to_vec().unwrap()).is_empty());
        assert!(c.handle(S(0), b"\x02\x01garbage").is_empty());
        assert!(
            c.handle(S(0), &reply(MessageType::Ack, xid, Some(60))).is_empty(),
            "ACK before any OFFER"
        );
        assert_eq!(
            c.counters(),
            Counters {
                malformed: 1,
                foreign: 2,
                unexpected: 1,
                naks: 0,
                declines: 0
            }
        );
        assert_eq!(c.phase(), Phase::Selecting);
    }

    #[test]
    fn ack_from_another_server_is_ignored_while_requesting() {
        let mut c = client();
        let xid = sent(&c.tick(S(0))).xid();
        c.handle(S(0), &reply(MessageType::Offer, xid, Some(60)));
        let mut rogue = server_reply(MessageType::Ack, xid, ADDR, Some(60));
        rogue
            .opts_mut()
            .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 66)));
        assert!(c.handle(S(0), &rogue.to_vec().unwrap()).is_empty());
        assert_eq!(c.phase(), Phase::Requesting);
    }

    #[test]
    fn release_gives_the_lease_back() {
        let mut c = bound(600);
        let a = c.release();
        assert_eq!(sent(&a).opts().msg_type(), Some(MessageType::Release));
        assert!(matches!(
            a[0],
            Action::Send {
                dest: Dest::Unicast(SERVER),
                ..
            }
        ));
        assert_eq!(
            a[1],
            Action::Unbind {
                address: ADDR,
                reason: "released"
            }
        );
        assert_eq!(c.deadline(), None);
        assert!(c.tick(S(10_000)).is_empty());
    }

    #[test]
    fn random_datagrams_in_every_phase_never_panic() {
        let mut rng = fastrand::Rng::with_seed(7);
        for seed in 0..200u64 {
            let mut c = Client::new(
                ClientConfig {
                    mac: MAC,
                    hostname: None,
                    vendor_class: "x".into(),
                },
                seed,
            );
            let mut now = S(0);
            for _ in 0..50 {
                now += Duration::from_millis(rng.u64(0..30_000));
                let xid = c.xid;
                let mut data = match rng.u8(0..4) {
                    0 => reply(MessageType::Offer, xid, Some(rng.u32(..))),
                    1 => reply(MessageType::Ack, xid, Some(rng.u32(0..1000))),
                    2 => reply(MessageType::Nak, xid, None),
                    _ => (0..rng.usize(0..600)).map(|_| rng.u8(..)).collect(),
                };
                if rng.bool() && !data.is_empty() {
                    let i = rng.usize(..data.len());
                    data[i] ^= rng.u8(1..);
                }
                c.handle(now, &data);
                c.tick(now);
                if c.phase() == Phase::Probing {
                    c.probe_result(now, rng.bool());
                }
            }
        }
    }
}
