//! Who may start a handshake on the job-stream listener, what became of those that did not
//! finish, and how often that is logged.
//!
//! Anyone on the LAN can open TCP connections to the cluster port. Until the Noise handshake
//! ends nothing is known of the peer, so an address gets at most [`PER_ADDRESS`] handshakes in
//! progress at once: an attacker holding connections half open takes its own slots, not the
//! slots of the nodes that need streams. Every refusal is counted by reason (the `stats` API's
//! `streams_refused`), and logged at most once per [`LOG_EVERY`] with the count since the last
//! line, so a flood of connections cannot flood the console too.

use clump_api::StreamsRefused;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Handshakes in progress from one address at once.
pub const PER_ADDRESS: u32 = 4;
/// A refused stream is logged at most this often (the others are counted in the next line).
pub const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct State {
    handshaking: HashMap<IpAddr, u32>,
    accepted: u64,
    refused: StreamsRefused,
    last_log: Option<Instant>,
    unlogged: u64,
}

/// The listener's admission and refusal book-keeping, shared by its threads.
#[derive(Debug, Default)]
pub struct StreamGate {
    state: Mutex<State>,
}

/// A handshake in progress; its slot is given back when dropped.
#[derive(Debug)]
pub struct Ticket<'a> {
    gate: &'a StreamGate,
    from: IpAddr,
}

/// A refusal to log now: it and the `count - 1` held back since the last line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub count: u64,
}

impl StreamGate {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a handshake from `from`, or `None` (counted `busy`) when it has
    /// [`PER_ADDRESS`] already.
    pub fn admit(&self, from: IpAddr) -> Option<Ticket<'_>> {
        let mut s = self.lock();
        let n = s.handshaking.entry(from).or_insert(0);
        if *n >= PER_ADDRESS {
            s.refused.busy += 1;
            return None;
        }
        *n += 1;
        Some(Ticket { gate: self, from })
    }

    /// Counts a connection turned away before reading it (too many streams in all).
    pub fn busy(&self) {
        self.lock().refused.busy += 1;
    }

    /// Counts a stream that completed the handshake.
    pub fn accepted(&self) {
        self.lock().accepted += 1;
    }

    /// Counts a failed handshake by `reason` ([`clump_link::LinkError::reason`]) and says
    /// whether to log it now.
    pub fn refused(&self, reason: &str, now: Instant) -> Option<LogLine> {
        let mut s = self.lock();
        let r = &mut s.refused;
        match reason {
            "auth" | "malformed" | "too-large" => r.auth += 1,
            "timeout" => r.timeout += 1,
            "closed" => r.closed += 1,
            _ => r.other += 1,
        }
        Self::log_now(&mut s, now)
    }

    /// Whether a busy refusal is logged now (counted already by `admit` or `busy`).
    pub fn log_busy(&self, now: Instant) -> Option<LogLine> {
        Self::log_now(&mut self.lock(), now)
    }

    fn log_now(s: &mut State, now: Instant) -> Option<LogLine> {
        s.unlogged += 1;
        let due = s
            .last_log
            .is_none_or(|t| now.saturating_duration_since(t) >= LOG_EVERY);
        if !due {
            return None;
        }
        s.last_log = Some(now);
        let count = std::mem::take(&mut s.unlogged);
        Some(LogLine { count })
    }

    /// Streams accepted and refused so far.
    pub fn counts(&self) -> (u64, StreamsRefused) {
        let s = self.lock();
        (s.accepted, s.refused.clone())
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut s = self.gate.lock();
        if let Some(n) = s.handshaking.get_mut(&self.from) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.handshaking.remove(&self.from);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
    }

    #[test]
    fn one_address_gets_a_few_handshakes_at_once_and_others_are_not_held_up() {
        let gate = StreamGate::default();
        let held: Vec<_> = (0..PER_ADDRESS).map(|_| gate.admit(ip(66))).collect();
        assert!(held.iter().all(Option::is_some));
        assert!(gate.admit(ip(66)).is_none(), "a fifth handshake from one address");
        assert!(gate.admit(ip(2)).is_some(), "another address is held up");
        drop(held);
        assert!(gate.admit(ip(66)).is_some(), "slots are given back");
        assert_eq!(gate.counts().1.busy, 1);
        assert!(gate.lock().handshaking.is_empty(), "no address left behind");
    }

    #[test]
    fn refusals_are_counted_by_reason_and_logged_at_most_once_per_period() {
        let gate = StreamGate::default();
        let t = Instant::now();
        assert_eq!(gate.refused("auth", t), Some(LogLine { count: 1 }));
        for i in 1..100u64 {
            let reason = ["auth", "timeout", "closed", "io"][(i % 4) as usize];
            assert_eq!(gate.refused(reason, t + Duration::from_millis(i)), None);
        }
        gate.busy();
        assert_eq!(gate.log_busy(t + Duration::from_secs(1)), None);
        // The next line after the period says how many came meanwhile.
        assert_eq!(
            gate.refused("timeout", t + LOG_EVERY),
            Some(LogLine { count: 101 })
        );
        gate.accepted();
        let (accepted, refused) = gate.counts();
        assert_eq!(accepted, 1);
        assert_eq!(
            refused,
            StreamsRefused {
                auth: 25,
                timeout: 26,
                closed: 25,
                busy: 1,
                other: 25,
            }
        );
    }
}
