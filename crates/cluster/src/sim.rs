//! A simulated network for the real membership code: latency, loss, partitions and churn over
//! any number of [`Cluster`] nodes, in virtual time. Used by the tests and by `bench/gossip-sim`.

use crate::core::{Cluster, Config, Event};
use crate::id::{Member, NodeId};
use crate::record::NodeRecord;
use clump_seal::ClusterKey;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Network {
    /// One-way latency, uniform in this range.
    pub latency: (Duration, Duration),
    /// Probability that a datagram is lost.
    pub loss: f64,
}

impl Default for Network {
    fn default() -> Self {
        Self {
            latency: (Duration::from_micros(200), Duration::from_micros(500)),
            loss: 0.0,
        }
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Wake(usize),
    Deliver {
        to: usize,
        from: SocketAddrV4,
        bytes: Vec<u8>,
    },
}

pub struct SimNode {
    pub cluster: Cluster,
    pub events: Vec<(Duration, Event)>,
    wake_at: Option<Duration>,
}

/// Virtual time and a queue of deliveries and wake-ups; nodes are addressed by index, their IP
/// address is `10.(i / 65536).(i / 256 % 256).(i % 256 + 1)`-style within one /8 subnet.
pub struct Sim {
    pub now: Duration,
    pub net: Network,
    pub config: Config,
    key: ClusterKey,
    nodes: Vec<Option<SimNode>>,
    by_addr: HashMap<Ipv4Addr, usize>,
    queue: BinaryHeap<Reverse<(Duration, u64, Due)>>,
    seq: u64,
    rng: StdRng,
    /// Nodes cut off from everyone else.
    pub partitioned: HashSet<usize>,
    pub bytes_sent: Vec<u64>,
    pub datagrams_sent: Vec<u64>,
    pub delivered: u64,
    pub lost: u64,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("now", &self.now)
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

pub fn addr_of(i: usize) -> Ipv4Addr {
    let host = (i + 1) as u32;
    Ipv4Addr::from(0x0a00_0000 | (host & 0x00ff_ffff))
}

pub fn record_of(i: usize) -> NodeRecord {
    let addr = addr_of(i);
    let o = addr.octets();
    let mac = [0x52, 0x54, 0x00, o[1], o[2], o[3]];
    NodeRecord {
        id: NodeId::from_mac(mac),
        seq: 1,
        addr,
        prefix_len: 8,
        mac,
        hostname: format!("sim-{i}"),
        cores: 2,
        speed: 1000,
        mem_total_kib: 2 << 20,
        mem_free_kib: 1 << 20,
        load: 0,
        runnable: 0,
        jobs: 0,
        migrations_in: 0,
        migrations_out: 0,
        flags: 0,
        version: "sim".into(),
    }
}

impl Sim {
    pub fn new(key: ClusterKey, config: Config, net: Network, seed: u64) -> Self {
        Self {
            now: Duration::ZERO,
            net,
            config,
            key,
            nodes: Vec::new(),
            by_addr: HashMap::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            rng: StdRng::seed_from_u64(seed),
            partitioned: HashSet::new(),
            bytes_sent: Vec::new(),
            datagrams_sent: Vec::new(),
            delivered: 0,
            lost: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Starts node `i` (a new one if `i == len()`) with the simulation's key, or with `key`.
    pub fn start(&mut self, i: usize, key: Option<&ClusterKey>) -> usize {
        self.start_as(i, record_of(i), key)
    }

    /// Starts node `i` claiming `record` (a cloned machine: another node's MAC or id).
    pub fn start_as(&mut self, i: usize, mut record: NodeRecord, key: Option<&ClusterKey>) -> usize {
        record.addr = addr_of(i);
        let mut instance = [0u8; 16];
        self.rng.fill(&mut instance);
        let gen = self.rng.random();
        let seed = self.rng.random();
        let cluster = Cluster::new(
            key.unwrap_or(&self.key),
            record,
            gen,
            instance,
            seed,
            self.config.clone(),
            self.now,
        );
        let node = SimNode {
            cluster,
            events: Vec::new(),
            wake_at: None,
        };
        if i >= self.nodes.len() {
            self.nodes.resize_with(i + 1, || None);
            self.bytes_sent.resize(i + 1, 0);
            self.datagrams_sent.resize(i + 1, 0);
        }
        self.by_addr.insert(addr_of(i), i);
        self.nodes[i] = Some(node);
        self.schedule(i, self.now);
        i
    }

    /// Node `i` disappears at once (power cut): no leave message.
    pub fn kill(&mut self, i: usize) {
        if let Some(slot) = self.nodes.get_mut(i) {
            *slot = None;
        }
    }

    pub fn node(&self, i: usize) -> Option<&SimNode> {
        self.nodes.get(i).and_then(Option::as_ref)
    }

    pub fn node_mut(&mut self, i: usize) -> Option<&mut SimNode> {
        self.nodes.get_mut(i).and_then(Option::as_mut)
    }

    pub fn member(&self, i: usize) -> Option<Member> {
        self.node(i).map(|n| n.cluster.me())
    }

    pub fn running(&self) -> impl Iterator<Item = (usize, &SimNode)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
    }

    /// Node `i` learns that `hosts` answered its ARP sweep.
    pub fn found_hosts(&mut self, i: usize, hosts: &[usize]) {
        let hosts: Vec<Ipv4Addr> = hosts.iter().map(|&h| addr_of(h)).collect();
        if let Some(n) = self.node_mut(i) {
            n.cluster.handle_hosts(&hosts);
        }
        self.flush(i);
    }

    /// Makes every running node believe every other is alive, as after a long quiet run.
    pub fn converge_instantly(&mut self) {
        let members: Vec<Member> = self.running().map(|(_, n)| n.cluster.me()).collect();
        let now = self.now;
        let ids: Vec<usize> = self.running().map(|(i, _)| i).collect();
        for i in ids {
            if let Some(n) = self.node_mut(i) {
                n.cluster.assume_members(&members, now);
            }
            self.flush(i);
            // The MemberUp of every other node is not news; 10,000 of them on 10,000 nodes
            // would be 8 GB.
            if let Some(n) = self.node_mut(i) {
                n.events.clear();
                n.events.shrink_to_fit();
            }
        }
    }

    /// Runs until virtual time `until`.
    pub fn run_until(&mut self, until: Duration) {
        while let Some(Reverse((t, _, _))) = self.queue.peek() {
            if *t > until {
                break;
            }
            let Some(Reverse((t, _, due))) = self.queue.pop() else {
                break;
            };
            self.now = t;
            match due {
                Due::Wake(i) => {
                    let Some(node) = self.node_mut(i) else { continue };
                    if node.wake_at != Some(t) {
                        continue;
                    }
                    node.wake_at = None;
                    node.cluster.handle_time(t);
                    self.flush(i);
                }
                Due::Deliver { to, from, bytes } => {
                    let Some(node) = self.node_mut(to) else { continue };
                    node.cluster.handle_datagram(t, from, &bytes);
                    self.delivered += 1;
                    self.flush(to);
                }
            }
        }
        self.now = until;
    }

    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    fn push(&mut self, at: Duration, due: Due) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, due)));
    }

    fn schedule(&mut self, i: usize, at: Duration) {
        let Some(node) = self.node_mut(i) else { return };
        if node.wake_at.is_some_and(|w| w <= at) {
            return;
        }
        node.wake_at = Some(at);
        self.push(at, Due::Wake(i));
    }

    /// Collects what node `i` wants to send and its events, and its next wake-up.
    fn flush(&mut self, i: usize) {
        let now = self.now;
        let mut sends = Vec::new();
        let deadline = {
            let Some(node) = self.node_mut(i) else { return };
            while let Some(s) = node.cluster.poll_transmit() {
                sends.push(s);
            }
            while let Some(e) = node.cluster.poll_event() {
                node.events.push((now, e));
            }
            node.cluster.next_deadline()
        };
        self.schedule(i, deadline.max(now));
        let from = SocketAddrV4::new(addr_of(i), self.config.port);
        for (to, bytes) in sends {
            self.bytes_sent[i] += bytes.len() as u64;
            self.datagrams_sent[i] += 1;
            let targets: Vec<usize> = if to.ip().octets()[1..] == [255, 255, 255] {
                self.running().map(|(j, _)| j).filter(|&j| j != i).collect()
            } else {
                self.by_addr.get(to.ip()).copied().into_iter().collect()
            };
            for to in targets {
                if self.partitioned.contains(&i) != self.partitioned.contains(&to)
                    || self.rng.random_bool(self.net.loss)
                {
                    self.lost += 1;
                    continue;
                }
                let (lo, hi) = self.net.latency;
                let lat = if hi > lo {
                    self.rng.random_range(lo..hi)
                } else {
                    lo
                };
                self.push(
                    now + lat,
                    Due::Deliver {
                        to,
                        from,
                        bytes: bytes.clone(),
                    },
                );
            }
        }
    }
}
