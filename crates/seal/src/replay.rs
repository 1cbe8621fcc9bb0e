//! Replay protection: a sliding window of seqs per sender instance, and a bounded table of
//! instances that forgets the least recently heard one when full.

use std::collections::{BTreeMap, HashMap};

/// How many seqs below the highest one a window remembers, the highest included.
pub const WINDOW: u64 = 128;

/// The seqs seen from one instance: the highest, and a bitmap of the [`WINDOW`] seqs ending at it
/// (bit `i` set = seq `top - i` seen; bit 0 is `top` itself), as in IPsec (RFC 4303 §3.4.3) and
/// WireGuard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    top: u64,
    seen: u128,
}

impl Window {
    /// The window after the first seq heard from an instance.
    pub(crate) fn new(seq: u64) -> Self {
        Self { top: seq, seen: 1 }
    }

    /// Records `seq` and returns true when it was not seen before and is not older than the
    /// window; returns false (and changes nothing) otherwise.
    pub(crate) fn accept(&mut self, seq: u64) -> bool {
        if seq > self.top {
            let shift = seq - self.top;
            self.seen = if shift >= WINDOW { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.top = seq;
            return true;
        }
        let age = self.top - seq;
        if age >= WINDOW {
            return false;
        }
        let bit = 1u128 << age;
        if self.seen & bit != 0 {
            return false;
        }
        self.seen |= bit;
        true
    }
}

/// One remembered instance: its window and when it was last heard (a tick of [`Replay::clock`]).
#[derive(Debug)]
struct Entry {
    window: Window,
    heard: u64,
}

/// The windows of at most `capacity` instances. Finding an instance is a hash lookup; finding the
/// least recently heard one is the first entry of an ordered map keyed by a monotonic counter, so
/// every operation is O(log n).
#[derive(Debug)]
pub(crate) struct Replay {
    capacity: usize,
    clock: u64,
    instances: HashMap<[u8; 16], Entry>,
    by_heard: BTreeMap<u64, [u8; 16]>,
}

impl Replay {
    /// An empty table remembering at most `capacity` instances (at least 1).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            clock: 0,
            instances: HashMap::new(),
            by_heard: BTreeMap::new(),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn len(&self) -> usize {
        self.instances.len()
    }

    pub(crate) fn contains(&self, instance: &[u8; 16]) -> bool {
        self.instances.contains_key(instance)
    }

    /// Records (`instance`, `seq`) and returns true when it is new; false for a replay. Only call
    /// this for an authenticated datagram. An accepted datagram makes its instance the most
    /// recently heard; a new instance in a full table evicts the least recently heard one.
    pub(crate) fn accept(&mut self, instance: [u8; 16], seq: u64) -> bool {
        self.clock += 1;
        let now = self.clock;
        if let Some(entry) = self.instances.get_mut(&instance) {
            if !entry.window.accept(seq) {
                return false;
            }
            self.by_heard.remove(&entry.heard);
            entry.heard = now;
            self.by_heard.insert(now, instance);
            return true;
        }
        while self.instances.len() >= self.capacity {
            let Some((_, oldest)) = self.by_heard.pop_first() else {
                break;
            };
            self.instances.remove(&oldest);
        }
        self.instances.insert(
            instance,
            Entry {
                window: Window::new(seq),
                heard: now,
            },
        );
        self.by_heard.insert(now, instance);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_accepts_each_seq_once() {
        let mut w = Window::new(10);
        assert!(!w.accept(10));
        assert!(w.accept(12));
        assert!(w.accept(11));
        assert!(!w.accept(11));
        assert!(!w.accept(12));
        assert!(w.accept(5));
        assert!(!w.accept(5));
    }

    #[test]
    fn window_edges() {
        let mut w = Window::new(200);
        // 200 - 72 = 128: just outside.
        assert!(!w.accept(72));
        // 200 - 73 = 127: the oldest seq inside.
        assert!(w.accept(73));
        assert!(!w.accept(73));
        // A jump of exactly WINDOW clears everything; the old top is then too old.
        assert!(w.accept(328));
        assert!(!w.accept(200));
        assert!(w.accept(201));
        // A jump beyond the window.
        assert!(w.accept(10_000));
        assert!(!w.accept(328));
        assert!(w.accept(9_999));
        // Seq 0 and u64::MAX.
        let mut w = Window::new(0);
        assert!(!w.accept(0));
        assert!(w.accept(u64::MAX));
        assert!(!w.accept(u64::MAX));
        assert!(!w.accept(0));
        assert!(w.accept(u64::MAX - 127));
        assert!(!w.accept(u64::MAX - 128));
    }

    /// The window against a model that remembers every seq ever seen.
    #[test]
    fn window_matches_model() {
        let mut rng = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for _ in 0..50 {
            let first = next() % 1000;
            let mut w = Window::new(first);
            let mut seen = std::collections::HashSet::from([first]);
            let mut top = first;
            for _ in 0..2000 {
                let seq = top.saturating_sub(150) + next() % 300;
                let expect = seq > top || (top - seq < WINDOW && !seen.contains(&seq));
                assert_eq!(w.accept(seq), expect, "seq {seq} top {top}");
                if expect {
                    seen.insert(seq);
                    top = top.max(seq);
                }
            }
        }
    }

    #[test]
    fn table_evicts_least_recently_heard() {
        let mut r = Replay::new(2);
        assert!(r.accept([1; 16], 0));
        assert!(r.accept([2; 16], 0));
        assert!(r.accept([1; 16], 1)); // 1 is now more recent than 2
        assert!(!r.accept([2; 16], 0)); // a replay does not refresh 2
        assert!(r.accept([3; 16], 0)); // evicts 2
        assert_eq!(r.len(), 2);
        assert!(r.contains(&[1; 16]) && r.contains(&[3; 16]) && !r.contains(&[2; 16]));
        assert_eq!(r.by_heard.len(), 2);
    }

    #[test]
    fn zero_capacity_means_one() {
        let mut r = Replay::new(0);
        assert_eq!(r.capacity(), 1);
        assert!(r.accept([1; 16], 0));
        assert!(!r.accept([1; 16], 0));
        assert!(r.accept([2; 16], 0));
        assert_eq!(r.len(), 1);
    }
}
