//! IPv4 link-local addresses (RFC 3927), sans-I/O: when no DHCP server answers, a node claims a
//! 169.254.x.y address after probing that nobody uses it, and defends it, so nodes on a bare
//! switch still form a cluster.

use std::net::Ipv4Addr;
use std::time::Duration;

/// RFC 3927 section 9 timings.
const PROBE_WAIT: Duration = Duration::from_secs(1);
const PROBE_NUM: u32 = 3;
const PROBE_MIN: Duration = Duration::from_secs(1);
const PROBE_MAX: Duration = Duration::from_secs(2);
const ANNOUNCE_WAIT: Duration = Duration::from_secs(2);
const ANNOUNCE_NUM: u32 = 2;
const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(2);
const MAX_CONFLICTS: u32 = 10;
const RATE_LIMIT_INTERVAL: Duration = Duration::from_secs(60);
const DEFEND_INTERVAL: Duration = Duration::from_secs(10);

pub const PREFIX_LEN: u8 = 16;
pub const BROADCAST: Ipv4Addr = Ipv4Addr::new(169, 254, 255, 255);

/// What the edge must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// ARP probe: sender IP 0.0.0.0, target the candidate.
    Probe(Ipv4Addr),
    /// ARP announcement: sender and target IP the address.
    Announce(Ipv4Addr),
    /// Put the address on the interface (169.254.0.0/16).
    Configure(Ipv4Addr),
    /// Take it off again.
    Deconfigure(Ipv4Addr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Probing {
        addr: Ipv4Addr,
        sent: u32,
        next: Duration,
    },
    Announcing {
        addr: Ipv4Addr,
        sent: u32,
        next: Duration,
    },
    Bound {
        addr: Ipv4Addr,
        last_defense: Option<Duration>,
    },
}

/// One ARP packet seen on the link, as far as link-local cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpSeen {
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

#[derive(Debug)]
pub struct LinkLocal {
    mac: [u8; 6],
    rng: fastrand::Rng,
    state: State,
    conflicts: u32,
    /// The first candidate comes from the MAC, so a node tends to get the same address each boot.
    first: bool,
}

impl LinkLocal {
    pub fn new(mac: [u8; 6], seed: u64) -> Self {
        LinkLocal {
            mac,
            rng: fastrand::Rng::with_seed(seed),
            state: State::Idle,
            conflicts: 0,
            first: true,
        }
    }

    /// The address on the interface: from the first announcement on.
    pub fn address(&self) -> Option<Ipv4Addr> {
        match self.state {
            State::Announcing { addr, .. } | State::Bound { addr, .. } => Some(addr),
            _ => None,
        }
    }

    pub fn is_running(&self) -> bool {
        self.state != State::Idle
    }

    pub fn deadline(&self) -> Option<Duration> {
        match self.state {
            State::Probing { next, .. } | State::Announcing { next, .. } => Some(next),
            _ => None,
        }
    }

    /// Starts claiming an address.
    pub fn start(&mut self, now: Duration) {
        if self.state == State::Idle {
            self.new_candidate(now);
        }
    }

    /// Gives the address up (a DHCP lease arrived, or shutdown).
    pub fn stop(&mut self) -> Vec<Action> {
        let out = self.address().map(Action::Deconfigure).into_iter().collect();
        self.state = State::Idle;
        out
    }

    pub fn tick(&mut self, now: Duration) -> Vec<Action> {
        match self.state {
            State::Probing { addr, sent, next } if now >= next => {
                if sent < PROBE_NUM {
                    let wait = if sent + 1 == PROBE_NUM {
                        ANNOUNCE_WAIT
                    } else {
                        self.between(PROBE_MIN, PROBE_MAX)
                    };
                    self.state = State::Probing {
                        addr,
                        sent: sent + 1,
                        next: now + wait,
                    };
                    vec![Action::Probe(addr)]
                } else {
                    self.conflicts = 0;
                    self.state = State::Announcing {
                        addr,
                        sent: 1,
                        next: now + ANNOUNCE_INTERVAL,
                    };
                    vec![Action::Configure(addr), Action::Announce(addr)]
                }
            }
            State::Announcing { addr, sent, next } if now >= next => {
                if sent + 1 >= ANNOUNCE_NUM {
                    self.state = State::Bound {
                        addr,
                        last_defense: None,
                    };
                } else {
                    self.state = State::Announcing {
                        addr,
                        sent: sent + 1,
                        next: now + ANNOUNCE_INTERVAL,
                    };
                }
                vec![Action::Announce(addr)]
            }
            _ => Vec::new(),
        }
    }

    /// Handles an ARP packet from the link: a conflict restarts probing with a new address, or
    /// is defended once per DEFEND_INTERVAL when the address is already in use by us.
    pub fn arp(&mut self, now: Duration, seen: ArpSeen) -> Vec<Action> {
        if seen.sender_mac == self.mac {
            return Vec::new();
        }
        match self.state {
            State::Probing { addr, .. } => {
                let probe_for_it = seen.sender_ip.is_unspecified() && seen.target_ip == addr;
                if seen.sender_ip == addr || probe_for_it {
                    self.conflict(now);
                }
                Vec::new()
            }
            State::Announcing { addr, .. } | State::Bound { addr, .. } if seen.sender_ip == addr => {
                let last = match self.state {
                    State::Bound { last_defense, .. } => last_defense,
                    _ => None,
                };
                match last {
                    Some(t) if now.saturating_sub(t) < DEFEND_INTERVAL => {
                        self.conflict(now);
                        vec![Action::Deconfigure(addr)]
                    }
                    _ => {
                        self.state = State::Bound {
                            addr,
                            last_defense: Some(now),
                        };
                        vec![Action::Announce(addr)]
                    }
                }
            }
            _ => Vec::new(),
        }
    }

    fn conflict(&mut self, now: Duration) {
        self.conflicts += 1;
        self.new_candidate(now);
        if self.conflicts >= MAX_CONFLICTS {
            if let State::Probing { addr, sent, .. } = self.state {
                self.state = State::Probing {
                    addr,
                    sent,
                    next: now + RATE_LIMIT_INTERVAL,
                };
            }
        }
    }

    fn new_candidate(&mut self, now: Duration) {
        let seed = if self.first {
            self.first = false;
            self.mac
                .iter()
                .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(*b)))
        } else {
            self.rng.u32(..)
        };
        // 169.254.1.0 to 169.254.254.255: the first and last 256 addresses are reserved.
        let addr = Ipv4Addr::from(0xA9FE_0100 + seed % 0xFE00);
        let wait = self.between(Duration::ZERO, PROBE_WAIT);
        self.state = State::Probing {
            addr,
            sent: 0,
            next: now + wait,
        };
    }

    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = (hi - lo).as_millis() as u64;
        lo + Duration::from_millis(self.rng.u64(0..=span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const OTHER: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn run_until_bound(ll: &mut LinkLocal, mut now: Duration) -> (Vec<Action>, Duration) {
        let mut all = Vec::new();
        for _ in 0..20 {
            let Some(d) = ll.deadline() else { break };
            now = d;
            all.extend(ll.tick(now));
        }
        (all, now)
    }

    #[test]
    fn probes_three_times_then_announces_twice_and_is_stable() {
        let mut ll = LinkLocal::new(ME, 1);
        ll.start(Duration::ZERO);
        let (actions, end) = run_until_bound(&mut ll, Duration::ZERO);
        let addr = ll.address().unwrap();
        assert_eq!(addr.octets()[..2], [169, 254]);
        assert!((1..=254).contains(&addr.octets()[2]));
        assert_eq!(
            actions,
            [
                Action::Probe(addr),
                Action::Probe(addr),
                Action::Probe(addr),
                Action::Configure(addr),
                Action::Announce(addr),
                Action::Announce(addr)
            ]
        );
        assert!(
            end >= Duration::from_secs(6) && end <= Duration::from_secs(10),
            "{end:?}"
        );
        let mut again = LinkLocal::new(ME, 99);
        again.start(Duration::ZERO);
        run_until_bound(&mut again, Duration::ZERO);
        assert_eq!(again.address(), Some(addr), "same MAC, same first address");
    }

    #[test]
    fn conflict_while_probing_picks_another_address() {
        let mut ll = LinkLocal::new(ME, 1);
        ll.start(Duration::ZERO);
        let first = match ll.tick(ll.deadline().unwrap())[..] {
            [Action::Probe(a)] => a,
            ref other => panic!("{other:?}"),
        };
        let now = ll.deadline().unwrap();
        ll.arp(
            now,
            ArpSeen {
                sender_mac: OTHER,
                sender_ip: first,
                target_ip: first,
            },
        );
        run_until_bound(&mut ll, now);
        assert_ne!(ll.address(), Some(first));
        assert!(ll.address().is_some());
    }

    #[test]
    fn defends_once_then_yields() {
        let mut ll = LinkLocal::new(ME, 1);
        ll.start(Duration::ZERO);
        let (_, now) = run_until_bound(&mut ll, Duration::ZERO);
        let addr = ll.address().unwrap();
        let hit = ArpSeen {
            sender_mac: OTHER,
            sender_ip: addr,
            target_ip: addr,
        };
        assert_eq!(ll.arp(now, hit), [Action::Announce(addr)]);
        assert_eq!(ll.address(), Some(addr));
        assert_eq!(
            ll.arp(now + Duration::from_secs(1), hit),
            [Action::Deconfigure(addr)]
        );
        assert!(ll.address().is_none());
        assert!(ll.deadline().is_some(), "probing a new address");
        // Our own packets and unrelated traffic are no conflict.
        let mut ll = LinkLocal::new(ME, 2);
        ll.start(Duration::ZERO);
        let (_, now) = run_until_bound(&mut ll, Duration::ZERO);
        let a = ll.address().unwrap();
        assert!(ll
            .arp(
                now,
                ArpSeen {
                    sender_mac: ME,
                    sender_ip: a,
                    target_ip: a
                }
            )
            .is_empty());
        assert!(ll
            .arp(
                now,
                ArpSeen {
                    sender_mac: OTHER,
                    sender_ip: Ipv4Addr::new(169, 254, 9, 9),
                    target_ip: a
                }
            )
            .is_empty());
        assert_eq!(ll.stop(), [Action::Deconfigure(a)]);
    }
}
