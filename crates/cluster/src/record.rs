//! What a node tells the cluster about itself ([`NodeRecord`]) and the table of records a node
//! holds about the others (MOSIX's "window to the world").

use crate::id::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

pub const MAX_HOSTNAME: usize = 64;
pub const MAX_VERSION: usize = 32;

/// The node is draining and will leave: it accepts no guests, and a later "down" means it left.
pub const FLAG_LEAVING: u8 = 1;
/// The node accepts no guest jobs (`clump node block`, or outside its after-hours window).
pub const FLAG_BLOCKED: u8 = 2;
/// The node sends its guests away and takes none (`clump node drain`, an orderly shutdown, its
/// window ending); shown as leaving, but it stays a member.
pub const FLAG_DRAINING: u8 = 4;

/// A node's self-description, re-published every 750 ms. A higher `seq` from the same `id`
/// replaces the older record everywhere.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: NodeId,
    pub seq: u64,
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    pub mac: [u8; 6],
    pub hostname: String,
    pub cores: u32,
    /// Measured CPU speed; 1000 is the reference machine.
    pub speed: u32,
    pub mem_total_kib: u64,
    pub mem_free_kib: u64,
    /// Decayed runnable processes per core, normalised by speed, ×1000.
    pub load: u32,
    /// Decayed runnable processes ×1000.
    pub runnable: u32,
    pub jobs: u32,
    pub migrations_in: u64,
    pub migrations_out: u64,
    pub flags: u8,
    pub version: String,
}

impl NodeRecord {
    /// Bounds that serde cannot express; a record breaking them is dropped as malformed.
    pub fn is_valid(&self) -> bool {
        self.hostname.len() <= MAX_HOSTNAME && self.version.len() <= MAX_VERSION && self.prefix_len <= 32
    }

    pub fn leaving(&self) -> bool {
        self.flags & FLAG_LEAVING != 0
    }

    /// Leaving, or sending its guests away before it does.
    pub fn shown_leaving(&self) -> bool {
        self.flags & (FLAG_LEAVING | FLAG_DRAINING) != 0
    }

    /// Whether the node takes guest jobs now.
    pub fn accepts_guests(&self) -> bool {
        self.flags & (FLAG_LEAVING | FLAG_BLOCKED | FLAG_DRAINING) == 0
    }

    /// The host part of the address: the node number people see and `mosix.map` lists.
    pub fn number(&self) -> u32 {
        let mask = u32::MAX.checked_shr(u32::from(self.prefix_len)).unwrap_or(0);
        u32::from(self.addr) & mask
    }
}

#[derive(Clone, Debug)]
pub struct Held {
    pub record: NodeRecord,
    /// When a newer record of this node last arrived here (our clock).
    pub updated: Duration,
}

/// The records this node holds, at most `cap` of them: a 10,000-node cluster does not need every
/// node to keep every other's load, only a fresh window (MOSIX); the least recently updated go.
#[derive(Debug)]
pub struct RecordTable {
    held: HashMap<NodeId, Held>,
    cap: usize,
}

impl RecordTable {
    pub fn new(cap: usize) -> Self {
        Self {
            held: HashMap::new(),
            cap: cap.max(1),
        }
    }

    /// Keeps `record` if it is newer than what is held; true when it was.
    pub fn offer(&mut self, record: NodeRecord, now: Duration) -> bool {
        match self.held.get_mut(&record.id) {
            Some(held) if held.record.seq >= record.seq => false,
            Some(held) => {
                *held = Held { record, updated: now };
                true
            }
            None => {
                if self.held.len() >= self.cap {
                    self.evict_oldest();
                }
                self.held.insert(record.id, Held { record, updated: now });
                true
            }
        }
    }

    fn evict_oldest(&mut self) {
        if let Some(oldest) = self.held.values().min_by_key(|h| h.updated).map(|h| h.record.id) {
            self.held.remove(&oldest);
        }
    }

    pub fn get(&self, id: &NodeId) -> Option<&Held> {
        self.held.get(id)
    }

    pub fn remove(&mut self, id: &NodeId) {
        self.held.remove(id);
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Held> {
        self.held.values()
    }

    /// Up to `n` records, most recently updated first, leaving out `except`.
    pub fn freshest(&self, n: usize, except: &NodeId) -> Vec<&NodeRecord> {
        let mut all: Vec<&Held> = self.held.values().filter(|h| h.record.id != *except).collect();
        if n == 0 {
            return Vec::new();
        }
        if all.len() > n {
            all.select_nth_unstable_by_key(n - 1, |h| std::cmp::Reverse(h.updated));
            all.truncate(n);
        }
        all.sort_by_key(|h| std::cmp::Reverse(h.updated));
        all.into_iter().map(|h| &h.record).collect()
    }

    /// Forgets records not updated since `before`, except the ids `keep` says to keep.
    pub fn expire(&mut self, before: Duration, keep: impl Fn(&NodeId) -> bool) {
        self.held.retain(|id, h| h.updated >= before || keep(id));
    }
}

#[cfg(test)]
pub(crate) fn sample(id: u8, seq: u64) -> NodeRecord {
    NodeRecord {
        id: NodeId([id; 16]),
        seq,
        addr: Ipv4Addr::new(10, 0, 0, id),
        prefix_len: 24,
        mac: [0x52, 0x54, 0, 0, 0, id],
        hostname: format!("clump-{id}"),
        cores: 2,
        speed: 1000,
        mem_total_kib: 1 << 20,
        mem_free_kib: 1 << 19,
        load: 0,
        runnable: 0,
        jobs: 0,
        migrations_in: 0,
        migrations_out: 0,
        flags: 0,
        version: "0.1.0".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn newer_seq_replaces_older() {
        let mut table = RecordTable::new(8);
        assert!(table.offer(sample(1, 5), t(0)));
        assert!(!table.offer(sample(1, 5), t(1)));
        assert!(!table.offer(sample(1, 4), t(2)));
        assert!(table.offer(sample(1, 6), t(3)));
        assert_eq!(table.get(&NodeId([1; 16])).map(|h| h.record.seq), Some(6));
    }

    #[test]
    fn cap_evicts_least_recently_updated() {
        let mut table = RecordTable::new(2);
        table.offer(sample(1, 1), t(0));
        table.offer(sample(2, 1), t(5));
        table.offer(sample(1, 2), t(10));
        table.offer(sample(3, 1), t(20));
        assert_eq!(table.len(), 2);
        assert!(table.get(&NodeId([2; 16])).is_none());
    }

    #[test]
    fn freshest_first_without_self() {
        let mut table = RecordTable::new(16);
        for i in 1..=10u8 {
            table.offer(sample(i, 1), t(u64::from(i)));
        }
        let ids: Vec<u8> = table
            .freshest(3, &NodeId([10; 16]))
            .iter()
            .map(|r| r.id.0[0])
            .collect();
        assert_eq!(ids, [9, 8, 7]);
        assert!(table.freshest(0, &NodeId([0; 16])).is_empty());
        assert_eq!(table.freshest(100, &NodeId([0; 16])).len(), 10);
    }

    #[test]
    fn node_number_is_the_host_part() {
        let mut r = sample(12, 1);
        assert_eq!(r.number(), 12);
        r.addr = Ipv4Addr::new(169, 254, 3, 7);
        r.prefix_len = 16;
        assert_eq!(r.number(), 3 * 256 + 7);
        r.prefix_len = 32;
        assert_eq!(r.number(), 0);
        r.prefix_len = 0;
        assert_eq!(r.number(), u32::from(r.addr));
    }

    #[test]
    fn validity_bounds() {
        let mut r = sample(1, 1);
        assert!(r.is_valid());
        r.hostname = "x".repeat(MAX_HOSTNAME + 1);
        assert!(!r.is_valid());
        let mut r = sample(1, 1);
        r.prefix_len = 33;
        assert!(!r.is_valid());
    }

    #[test]
    fn expire_keeps_members() {
        let mut table = RecordTable::new(8);
        table.offer(sample(1, 1), t(0));
        table.offer(sample(2, 1), t(0));
        table.offer(sample(3, 1), t(100));
        table.expire(t(50), |id| *id == NodeId([1; 16]));
        assert_eq!(table.len(), 2);
        assert!(table.get(&NodeId([2; 16])).is_none());
    }
}
