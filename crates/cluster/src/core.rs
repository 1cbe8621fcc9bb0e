//! The membership state machine of one node: datagrams and time in, datagrams and events out.
//! Nothing here touches a socket or a clock, so the daemon and the 10,000-node simulation run the
//! same code.

use crate::id::{Member, NodeId};
use crate::record::{NodeRecord, RecordTable};
use crate::suspicion::Suspicions;
use crate::wire::{self, Hello, Message, Records};
use clump_seal::{ClusterKey, OpenError, Opener, Sealer};
use foca::{AccumulatingRuntime, Foca, NoCustomBroadcast, OwnedNotification, PostcardCodec, State, Timer};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::num::NonZeroU32;
use std::time::Duration;

/// How many nodes answer a broadcast hello in a big cluster: enough for the newcomer to join,
/// few enough that 10,000 nodes do not all answer at once.
const ANSWERS_WANTED: f64 = 4.0;
/// Auth failures from one address are reported at these counts, then every 1000.
const REPORT_AT: [u64; 4] = [1, 10, 100, 1000];
/// At most one `Refused` event (a console line) this often: spoofed addresses are each new, and
/// each would have reported itself.
const REFUSED_EVENT_EVERY: Duration = Duration::from_secs(1);
/// A node id heard from two daemon instances alternately within this time is two machines.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(30);
/// Addresses whose datagrams fail authentication that are remembered at most. Source addresses
/// cost nothing to forge: without a bound, forged datagrams from ever new addresses would grow
/// the table (and `nodes.json`, rewritten every second) without end, one warning each. Beyond
/// it they are only counted (`auth`).
pub const MAX_FOREIGN: usize = 256;
/// A refused address not heard from for this long is forgotten.
const FOREIGN_FORGET: Duration = Duration::from_secs(10 * 60);

#[derive(Clone, Debug)]
pub struct Config {
    pub port: u16,
    /// How often this node sends its record (and the freshest others) to one random member.
    pub records_every: Duration,
    /// How often a node that has not joined yet broadcasts a hello.
    pub hello_every: Duration,
    /// How often a joined node broadcasts a hello (no reply wanted), so a node outside the
    /// cluster (another key, a healed partition) hears of it; stretched in a big cluster so the
    /// subnet carries about one such broadcast a second.
    pub presence_every: Duration,
    /// Records held at most (the window to the world).
    pub record_cap: usize,
    /// How long a dead node stays in the map as dead.
    pub remove_down_after: Duration,
    /// Senders (daemon instances) whose replay windows are remembered.
    pub replay_instances: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            port: 7171,
            records_every: Duration::from_millis(750),
            hello_every: Duration::from_secs(5),
            presence_every: Duration::from_secs(15),
            record_cap: 1024,
            remove_down_after: Duration::from_secs(15 * 60),
            replay_instances: clump_seal::DEFAULT_INSTANCES,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConflictKind {
    DuplicateId,
    DuplicateMac,
    DuplicateAddress,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// At least one other node knows us.
    JoinedCluster,
    /// Every other node left or died.
    Alone,
    MemberUp(Member),
    MemberDown {
        member: Member,
        left: bool,
    },
    /// A node restarted (new generation) or another took its address.
    Renamed {
        old: Member,
        new: Member,
    },
    /// Datagrams from `from` fail authentication: a node with another key, or an attacker.
    Refused {
        from: Ipv4Addr,
        count: u64,
    },
    Conflict {
        id: NodeId,
        kind: ConflictKind,
    },
    /// The cluster declared this node down and it rejoined under a new generation.
    Rejoined(Member),
}

/// What arrived and what was thrown away, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub hello_sent: u64,
    pub too_short: u64,
    pub too_large: u64,
    pub not_clump: u64,
    pub version: u64,
    pub auth: u64,
    pub replay: u64,
    pub malformed: u64,
    /// Suspects this node declared down itself because no verdict reached it in time.
    pub suspicions_timed_out: u64,
}

/// Sizes of the core's tables (see [`Cluster::footprint`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    pub members: usize,
    pub alive: usize,
    pub records: usize,
    pub replay_windows: usize,
    pub instances: usize,
    pub timers: usize,
    pub events: usize,
    pub outgoing: usize,
    pub foca_updates: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Foreign {
    pub dropped: u64,
    pub last: Duration,
}

/// One row of the node map as the core sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    pub member: Option<Member>,
    pub id: NodeId,
    pub state: ViewState,
    pub record: Option<NodeRecord>,
    /// When we last heard from or about it (our clock); None for ourselves.
    pub last_seen: Option<Duration>,
    pub conflicts: Vec<ConflictKind>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewState {
    This,
    Alive,
    Suspect,
    Leaving,
    Dead,
    Left,
}

/// Usually one instance per node id; a short list, not a map, keeps 10,000 of them small.
#[derive(Debug, Default)]
struct InstanceTrack {
    current: [u8; 16],
    seen: Vec<([u8; 16], Duration)>,
}

/// Live members sorted by address: found by binary search, picked at random by index (at 10,000
/// nodes, walking foca's list twice a second on every node would cost more than the gossip
/// itself). No map beside the list: at 10,000 nodes an address index costs more per node (17
/// bytes a bucket, 16,384 buckets) than the list itself, and membership changes, which shift the
/// list, are rare next to lookups.
#[derive(Debug, Default)]
struct Alive {
    list: Vec<Member>,
}

impl Alive {
    fn position(&self, addr: &SocketAddrV4) -> Result<usize, usize> {
        self.list.binary_search_by(|m| m.addr.cmp(addr))
    }

    fn get(&self, addr: &SocketAddrV4) -> Option<&Member> {
        self.position(addr).ok().map(|i| &self.list[i])
    }

    fn insert(&mut self, m: Member) {
        match self.position(&m.addr) {
            Ok(i) => self.list[i] = m,
            Err(i) => {
                // Grow by an eighth, not double: a join into a list of 10,000 must not reserve
                // room for 10,000 more.
                if self.list.len() == self.list.capacity() {
                    self.list.reserve_exact(self.list.len() / 8 + 1);
                }
                self.list.insert(i, m);
            }
        }
    }

    fn remove(&mut self, m: &Member) {
        if let Ok(i) = self.position(&m.addr) {
            if self.list[i].id == m.id {
                self.list.remove(i);
            }
        }
    }

    fn contains(&self, m: &Member) -> bool {
        self.get(&m.addr) == Some(m)
    }

    fn has_id(&self, addr: &SocketAddrV4, id: &NodeId) -> bool {
        self.get(addr).is_some_and(|m| m.id == *id)
    }
}

/// Queues keep this much room once emptied; a burst (the `MemberUp` of every node after a bulk
/// join, a leave sent to every member) gives the rest back.
const QUEUE_KEEP: usize = 16;

fn release_if_empty<T>(queue: &mut VecDeque<T>) {
    if queue.is_empty() && queue.capacity() > QUEUE_KEEP {
        queue.shrink_to(QUEUE_KEEP);
    }
}

type Swim = Foca<Member, PostcardCodec, StdRng, NoCustomBroadcast>;

pub struct Cluster {
    config: Config,
    foca: Swim,
    rt: AccumulatingRuntime<Member>,
    sealer: Sealer,
    opener: Opener,
    rng: StdRng,
    me: Member,
    record: NodeRecord,
    records: RecordTable,
    alive: Alive,
    timers: BTreeMap<(Duration, u64), Timer<Member>>,
    timer_seq: u64,
    next_records: Duration,
    next_hello: Duration,
    next_expire: Duration,
    suspicions: Suspicions,
    broadcast: Option<SocketAddrV4>,
    joined: bool,
    /// Joined once and then lost every other node: "alone" rather than "joining".
    was_joined: bool,
    sized_for: u32,
    out: VecDeque<(SocketAddrV4, Vec<u8>)>,
    events: VecDeque<Event>,
    counters: Counters,
    foreign: HashMap<Ipv4Addr, Foreign>,
    /// When the last `Refused` event was queued.
    last_refused_event: Option<Duration>,
    instances: HashMap<NodeId, InstanceTrack>,
    flagged: HashSet<(NodeId, ConflictKind)>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("me", &self.me)
            .field("members", &self.alive.list.len())
            .finish()
    }
}

fn foca_config(size: u32, remove_down_after: Duration) -> foca::Config {
    let mut config = foca::Config::new_lan(NonZeroU32::new(size.max(1)).unwrap_or(NonZeroU32::MIN));
    config.remove_down_after = Some(remove_down_after);
    if let Some(max) = std::num::NonZeroUsize::new(Sealer::max_payload()) {
        config.max_packet_size = max;
    }
    config
}

impl Cluster {
    /// `seed` feeds foca's and our own random choices; `instance` names this run in the seal.
    pub fn new(
        key: &ClusterKey,
        record: NodeRecord,
        gen: u32,
        instance: [u8; 16],
        seed: u64,
        config: Config,
        now: Duration,
    ) -> Self {
        let me = Member {
            addr: SocketAddrV4::new(record.addr, config.port),
            id: record.id,
            gen,
        };
        let broadcast =
            broadcast_of(record.addr, record.prefix_len).map(|a| SocketAddrV4::new(a, config.port));
        let foca = Foca::new(
            me,
            foca_config(2, config.remove_down_after),
            StdRng::seed_from_u64(seed),
            PostcardCodec,
        );
        let opener = Opener::with_capacity(key, config.replay_instances);
        Self {
            records: RecordTable::new(config.record_cap),
            next_records: now,
            next_hello: now,
            next_expire: now,
            suspicions: Suspicions::default(),
            config,
            foca,
            rt: AccumulatingRuntime::new(),
            sealer: Sealer::new(key, instance),
            opener,
            rng: StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15),
            me,
            record,
            alive: Alive::default(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            broadcast,
            joined: false,
            was_joined: false,
            sized_for: 2,
            out: VecDeque::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
            foreign: HashMap::new(),
            last_refused_event: None,
            instances: HashMap::new(),
            flagged: HashSet::new(),
        }
    }

    pub fn me(&self) -> Member {
        self.me
    }

    pub fn record(&self) -> &NodeRecord {
        &self.record
    }

    pub fn is_joined(&self) -> bool {
        self.joined
    }

    /// Was in a cluster once and is not now: every other node left or died.
    pub fn is_alone(&self) -> bool {
        !self.joined && self.was_joined
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn foreign(&self) -> impl Iterator<Item = (&Ipv4Addr, &Foreign)> {
        self.foreign.iter()
    }

    /// How many entries each table holds: the state that grows with the cluster.
    pub fn footprint(&self) -> Footprint {
        Footprint {
            members: self.foca.iter_membership_state().len(),
            alive: self.alive.list.len(),
            records: self.records.len(),
            replay_windows: self.opener.remembered(),
            instances: self.instances.len(),
            timers: self.timers.len(),
            events: self.events.len(),
            outgoing: self.out.len(),
            foca_updates: self.foca.updates_backlog(),
        }
    }

    /// What foca holds about `member` (state and incarnation), for the simulation to explain
    /// a node that still counts a dead one alive.
    pub fn swim_view(&self, member: &Member) -> Option<(State, u16)> {
        self.foca
            .iter_membership_state()
            .find(|m| m.id() == member)
            .map(|m| (m.state(), m.incarnation()))
    }

    /// True while this node counts `member` among the live ones.
    pub fn counts_alive(&self, member: &Member) -> bool {
        self.alive.contains(member)
    }

    pub fn alive_count(&self) -> usize {
        self.alive.list.len()
    }

    /// Changes this node's record (load, memory, speed, flags); the new `seq` goes out with the
    /// next round.
    pub fn update_record(&mut self, change: impl FnOnce(&mut NodeRecord)) {
        change(&mut self.record);
        self.record.id = self.me.id;
        self.record.seq += 1;
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddrV4, Vec<u8>)> {
        let next = self.out.pop_front();
        release_if_empty(&mut self.out);
        next
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        let next = self.events.pop_front();
        release_if_empty(&mut self.events);
        next
    }

    /// When `handle_time` must be called next.
    pub fn next_deadline(&self) -> Duration {
        let timer = self.timers.keys().next().map(|(t, _)| *t);
        let next = self.next_records.min(self.next_expire).min(self.next_hello);
        timer.map_or(next, |t| t.min(next))
    }

    /// About one presence broadcast a second on the whole subnet, at least `presence_every` apart.
    fn presence_interval(&self) -> Duration {
        let spread = Duration::from_secs(1) * self.alive.list.len() as u32;
        self.config.presence_every.max(spread)
    }

    /// Hosts that answered the ARP sweep: ask each whether it runs Clump with our key.
    pub fn handle_hosts(&mut self, hosts: &[Ipv4Addr]) {
        for host in hosts {
            if host != self.me.addr.ip() {
                self.send_hello(SocketAddrV4::new(*host, self.config.port), true, false);
            }
        }
    }

    pub fn handle_time(&mut self, now: Duration) {
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            // A foca error on its own timer is a state it recovers from on the next one.
            let _ = self.foca.handle_timer(timer, &mut self.rt);
            self.drain_foca(now);
        }
        if now >= self.next_hello {
            let joined = self.joined;
            self.next_hello = now
                + if joined {
                    self.presence_interval()
                } else {
                    self.config.hello_every
                };
            if let Some(to) = self.broadcast {
                self.send_hello(to, !joined, true);
            }
        }
        if now >= self.next_records {
            self.next_records = now + self.config.records_every;
            self.gossip_records();
        }
        if now >= self.next_expire {
            self.next_expire = now + Duration::from_secs(5);
            self.expire(now);
            // Housekeeping pace: a few seconds late on a timeout of tens of seconds is fine
            // for a safety net, and it spares a scan of every member each second.
            self.time_out_suspicions(now);
        }
    }

    /// Declares down the suspects whose verdict did not reach this node within twice foca's
    /// suspicion time (see `suspicion`), and spreads the verdict.
    fn time_out_suspicions(&mut self, now: Duration) {
        let timeout = 2 * foca_config(self.sized_for, self.config.remove_down_after).suspect_to_down_after;
        let view = self
            .foca
            .iter_membership_state()
            .map(|m| (*m.id(), m.state(), m.incarnation()));
        let expired = self.suspicions.expired(view, now, timeout);
        if expired.is_empty() {
            return;
        }
        for (member, incarnation) in expired {
            tracing::info!(
                ?member,
                "no verdict on a suspect within {timeout:?}: declaring it down"
            );
            self.counters.suspicions_timed_out += 1;
            let down = foca::Member::new(member, incarnation, State::Down);
            // An error here leaves the member suspect; the next check tries again.
            let _ = self.foca.apply_many(std::iter::once(down), true, &mut self.rt);
        }
        self.drain_foca(now);
    }

    pub fn handle_datagram(&mut self, now: Duration, from: SocketAddrV4, datagram: &[u8]) {
        self.counters.datagrams_in += 1;
        self.counters.bytes_in += datagram.len() as u64;
        let opened = match self.opener.open(datagram) {
            Ok(opened) => opened,
            Err(err) => return self.count_refused(now, from, &err),
        };
        if opened.instance == self.sealer.instance() {
            return; // our own broadcast, looped back
        }
        let message = match Message::decode(opened.kind, &opened.payload) {
            Ok(m) => m,
            Err(_) => {
                self.counters.malformed += 1;
                return;
            }
        };
        match message {
            Message::Hello(hello) => self.on_hello(now, from, opened.instance, hello),
            Message::Swim(bytes) => {
                if self.foca.handle_data(&bytes, &mut self.rt).is_err() {
                    self.counters.malformed += 1;
                }
                self.drain_foca(now);
            }
            Message::Records(Records { records }) => {
                if let Some(first) = records.first() {
                    self.track_instance(now, first.id, opened.instance);
                }
                for (i, record) in records.into_iter().enumerate() {
                    // Only the sender speaks for itself; about others we only take records of
                    // nodes foca knows are alive, so a dead node's last record cannot circulate.
                    let about_member = self
                        .alive
                        .has_id(&SocketAddrV4::new(record.addr, self.config.port), &record.id);
                    if i == 0 || about_member {
                        self.offer(record, now);
                    }
                }
            }
            Message::SyncRequest => self.send_all_records(from),
        }
    }

    /// Tells the cluster this node leaves on purpose (not a crash), then leaves.
    pub fn leave(&mut self, now: Duration) {
        self.update_record(|r| r.flags |= crate::record::FLAG_LEAVING);
        let members: Vec<_> = self.alive.list.iter().map(|m| m.addr).collect();
        let payload = Message::Records(Records {
            records: vec![self.record.clone()],
        });
        for to in members {
            self.send(to, &payload);
        }
        let _ = self.foca.leave_cluster(&mut self.rt);
        self.drain_foca(now);
    }

    /// Takes `members` as alive without hearing from them: how the simulation starts from a
    /// converged cluster of 10,000 nodes instead of spending minutes forming it.
    pub fn assume_members(&mut self, members: &[Member], now: Duration) {
        let updates = members
            .iter()
            .filter(|m| m.addr != self.me.addr)
            .map(|m| foca::Member::alive(*m));
        let _ = self.foca.apply_many(updates, false, &mut self.rt);
        self.drain_foca(now);
        self.expire(now);
        // The bulk left foca's queues sized for one notification per member and our list with up
        // to twice the room it needs; 10,000 nodes each keeping that slack cost gigabytes in the
        // simulation. Our events queue gives its room back once polled empty.
        self.rt = AccumulatingRuntime::new();
        self.alive.list.shrink_to_fit();
    }

    /// This node, every member foca knows (alive, suspect or down), with what their records say.
    pub fn view(&self) -> Vec<MemberView> {
        let mut rows = vec![MemberView {
            member: Some(self.me),
            id: self.me.id,
            state: if self.record.shown_leaving() {
                ViewState::Leaving
            } else {
                ViewState::This
            },
            record: Some(self.record.clone()),
            last_seen: None,
            conflicts: Vec::new(),
        }];
        for m in self.foca.iter_membership_state() {
            let id = m.id();
            let record = self.records.get(&id.id).map(|h| h.record.clone());
            let leaving = record.as_ref().is_some_and(NodeRecord::leaving);
            let shown_leaving = record.as_ref().is_some_and(NodeRecord::shown_leaving);
            let state = match (m.state(), leaving) {
                (State::Alive, _) if shown_leaving => ViewState::Leaving,
                (State::Alive, _) => ViewState::Alive,
                (State::Suspect, _) => ViewState::Suspect,
                (State::Down, false) => ViewState::Dead,
                (State::Down, true) => ViewState::Left,
            };
            rows.push(MemberView {
                member: Some(*id),
                id: id.id,
                state,
                record,
                last_seen: self.records.get(&id.id).map(|h| h.updated),
                conflicts: Vec::new(),
            });
        }
        self.mark_conflicts(&mut rows);
        rows
    }

    fn mark_conflicts(&self, rows: &mut [MemberView]) {
        let live = |r: &MemberView| !matches!(r.state, ViewState::Dead | ViewState::Left);
        let mut by_mac: HashMap<[u8; 6], HashSet<NodeId>> = HashMap::new();
        let mut by_addr: HashMap<Ipv4Addr, HashSet<NodeId>> = HashMap::new();
        for row in rows.iter().filter(|r| live(r)) {
            if let Some(rec) = &row.record {
                by_mac.entry(rec.mac).or_default().insert(row.id);
                by_addr.entry(rec.addr).or_default().insert(row.id);
            }
        }
        for row in rows.iter_mut() {
            let mut kinds: Vec<ConflictKind> = self
                .flagged
                .iter()
                .filter(|(id, _)| *id == row.id)
                .map(|(_, k)| *k)
                .collect();
            if let (true, Some(rec)) = (live(row), &row.record) {
                if by_mac.get(&rec.mac).is_some_and(|ids| ids.len() > 1) {
                    kinds.push(ConflictKind::DuplicateMac);
                }
                if by_addr.get(&rec.addr).is_some_and(|ids| ids.len() > 1) {
                    kinds.push(ConflictKind::DuplicateAddress);
                }
            }
            kinds.sort();
            kinds.dedup();
            row.conflicts = kinds;
        }
    }

    fn count_refused(&mut self, now: Duration, from: SocketAddrV4, err: &OpenError) {
        let c = &mut self.counters;
        match err {
            OpenError::TooShort => c.too_short += 1,
            OpenError::TooLarge => c.too_large += 1,
            OpenError::NotClump => c.not_clump += 1,
            OpenError::Version(_) => c.version += 1,
            OpenError::Replay => c.replay += 1,
            OpenError::Auth => {
                c.auth += 1;
                let ip = *from.ip();
                if self.foreign.len() >= MAX_FOREIGN && !self.foreign.contains_key(&ip) {
                    return;
                }
                let entry = self.foreign.entry(ip).or_insert(Foreign {
                    dropped: 0,
                    last: now,
                });
                entry.dropped += 1;
                entry.last = now;
                let n = entry.dropped;
                let quiet = self
                    .last_refused_event
                    .is_none_or(|t| now.saturating_sub(t) >= REFUSED_EVENT_EVERY);
                if quiet && (REPORT_AT.contains(&n) || n.is_multiple_of(1000)) {
                    self.last_refused_event = Some(now);
                    self.events.push_back(Event::Refused { from: ip, count: n });
                }
            }
        }
    }

    fn on_hello(&mut self, now: Duration, from: SocketAddrV4, instance: [u8; 16], hello: Hello) {
        let sender = Member {
            addr: from,
            id: hello.record.id,
            gen: hello.gen,
        };
        self.track_instance(now, sender.id, instance);
        self.offer(hello.record, now);
        let share = ANSWERS_WANTED / (self.alive.list.len().max(1) as f64);
        let lucky = share >= 1.0 || self.rng.random_bool(share.clamp(0.0, 1.0));
        if hello.want_reply && (!hello.broadcast || lucky) {
            self.send_hello(from, false, false);
        }
        if !self.alive.contains(&sender) && (!self.joined || lucky) {
            let _ = self.foca.announce(sender, &mut self.rt);
            self.drain_foca(now);
        }
    }

    fn offer(&mut self, record: NodeRecord, now: Duration) {
        if record.id == self.me.id {
            return;
        }
        self.records.offer(record, now);
    }

    /// Two machines with one node id (cloned MACs) show up as two daemon instances whose
    /// datagrams alternate; a restart switches instance once and never back.
    fn track_instance(&mut self, now: Duration, id: NodeId, instance: [u8; 16]) {
        if id == self.me.id && instance != self.sealer.instance() {
            if self.flagged.insert((id, ConflictKind::DuplicateId)) {
                self.events.push_back(Event::Conflict {
                    id,
                    kind: ConflictKind::DuplicateId,
                });
            }
            return;
        }
        let track = self.instances.entry(id).or_insert_with(|| InstanceTrack {
            current: instance,
            ..Default::default()
        });
        track
            .seen
            .retain(|(_, t)| now.saturating_sub(*t) < DUPLICATE_WINDOW);
        if track.current != instance {
            let flipped_back = track.seen.iter().any(|(i, _)| *i == instance);
            track.current = instance;
            if flipped_back && self.flagged.insert((id, ConflictKind::DuplicateId)) {
                self.events.push_back(Event::Conflict {
                    id,
                    kind: ConflictKind::DuplicateId,
                });
            }
        }
        match track.seen.iter_mut().find(|(i, _)| *i == instance) {
            Some(entry) => entry.1 = now,
            None => track.seen.push((instance, now)),
        }
    }

    fn send_hello(&mut self, to: SocketAddrV4, want_reply: bool, broadcast: bool) {
        let hello = Message::Hello(Hello {
            record: self.record.clone(),
            gen: self.me.gen,
            want_reply,
            broadcast,
        });
        self.counters.hello_sent += 1;
        self.send(to, &hello);
    }

    fn send(&mut self, to: SocketAddrV4, message: &Message) {
        match self.sealer.seal(message.kind(), &message.encode()) {
            Ok(bytes) => {
                self.counters.datagrams_out += 1;
                self.counters.bytes_out += bytes.len() as u64;
                self.out.push_back((to, bytes));
            }
            Err(err) => tracing::warn!(%err, kind = message.kind(), "datagram not sent"),
        }
    }

    /// MOSIX's step: our record and the freshest others that fit, to one random live member.
    fn gossip_records(&mut self) {
        if self.alive.list.is_empty() {
            return;
        }
        let pick = self.rng.random_range(0..self.alive.list.len());
        let to = self.alive.list[pick].addr;
        let batch = self.batch(
            self.records
                .freshest(64, &self.me.id)
                .into_iter()
                .cloned()
                .collect(),
        );
        if let Some(first) = batch.into_iter().next() {
            self.send(to, &Message::Records(Records { records: first }));
        }
    }

    fn send_all_records(&mut self, to: SocketAddrV4) {
        let others: Vec<NodeRecord> = self.records.iter().map(|h| h.record.clone()).collect();
        for records in self.batch(others) {
            self.send(to, &Message::Records(Records { records }));
        }
    }

    /// Splits records into datagram-sized batches, each led by our own record.
    fn batch(&self, others: Vec<NodeRecord>) -> Vec<Vec<NodeRecord>> {
        let budget = Sealer::max_payload().saturating_sub(8);
        let own_len = wire::record_len(&self.record);
        let mut batches = Vec::new();
        let mut current = vec![self.record.clone()];
        let mut used = own_len;
        for record in others {
            let len = wire::record_len(&record);
            if used + len > budget {
                batches.push(std::mem::replace(&mut current, vec![self.record.clone()]));
                used = own_len;
            }
            used += len;
            current.push(record);
        }
        batches.push(current);
        batches
    }

    fn expire(&mut self, now: Duration) {
        let cutoff = now.saturating_sub(Duration::from_secs(60));
        self.foreign
            .retain(|_, f| now.saturating_sub(f.last) < FOREIGN_FORGET);
        let alive: HashSet<NodeId> = self.alive.list.iter().map(|m| m.id).collect();
        self.records.expire(cutoff, |id| alive.contains(id));
        // Duplicate ids show within DUPLICATE_WINDOW; older tracks only cost memory.
        self.instances.retain(|id, t| {
            alive.contains(id)
                && t.seen
                    .iter()
                    .any(|(_, at)| now.saturating_sub(*at) < DUPLICATE_WINDOW)
        });
        let size = (self.alive.list.len() as u32 + 1).next_power_of_two();
        if size != self.sized_for {
            self.sized_for = size;
            let _ = self
                .foca
                .set_config(foca_config(size, self.config.remove_down_after));
        }
    }

    /// Turns what foca asked for into sealed datagrams, timers and events.
    fn drain_foca(&mut self, now: Duration) {
        while let Some((to, data)) = self.rt.to_send() {
            self.send(to.addr, &Message::Swim(data.to_vec()));
        }
        while let Some((after, timer)) = self.rt.to_schedule() {
            self.timer_seq += 1;
            self.timers.insert((now + after, self.timer_seq), timer);
        }
        while let Some(notification) = self.rt.to_notify() {
            match notification {
                OwnedNotification::MemberUp(m) => {
                    self.alive.insert(m);
                    self.events.push_back(Event::MemberUp(m));
                }
                OwnedNotification::MemberDown(m) => {
                    self.alive.remove(&m);
                    let left = self.records.get(&m.id).is_some_and(|h| h.record.leaving());
                    self.events.push_back(Event::MemberDown { member: m, left });
                }
                OwnedNotification::Rename(old, new) => {
                    if old.id != new.id {
                        for id in [old.id, new.id] {
                            if self.flagged.insert((id, ConflictKind::DuplicateAddress)) {
                                self.events.push_back(Event::Conflict {
                                    id,
                                    kind: ConflictKind::DuplicateAddress,
                                });
                            }
                        }
                    }
                    if self.alive.contains(&old) {
                        self.alive.remove(&old);
                        self.alive.insert(new);
                    }
                    self.events.push_back(Event::Renamed { old, new });
                }
                OwnedNotification::Active => {
                    self.joined = true;
                    self.was_joined = true;
                    // Presence hellos start at a random point of the interval: a cluster that
                    // forms at once must not broadcast at once.
                    let interval = self.presence_interval();
                    self.next_hello = now + interval.mul_f64(self.rng.random_range(0.0..1.0));
                    self.events.push_back(Event::JoinedCluster);
                    // Pull the full record table from one member instead of waiting for the
                    // window to bring every record.
                    // A random one, so a cluster that forms at once does not ask one node only.
                    if !self.alive.list.is_empty() {
                        let m = self.alive.list[self.rng.random_range(0..self.alive.list.len())];
                        self.send(m.addr, &Message::SyncRequest);
                    }
                }
                OwnedNotification::Idle => {
                    self.joined = false;
                    self.next_hello = now;
                    self.events.push_back(Event::Alone);
                }
                OwnedNotification::Rejoin(m) => {
                    self.me = m;
                    self.events.push_back(Event::Rejoined(m));
                }
                OwnedNotification::Defunct => {
                    // Expected after `leave`; otherwise identities renew, so log the surprise.
                    if !self.record.leaving() {
                        tracing::warn!("foca declared this identity defunct");
                    }
                }
            }
        }
    }
}

/// The subnet's broadcast address, if it has one (not /31, /32).
pub fn broadcast_of(addr: Ipv4Addr, prefix_len: u8) -> Option<Ipv4Addr> {
    if prefix_len >= 31 {
        return None;
    }
    let host_mask = u32::MAX.checked_shr(u32::from(prefix_len)).unwrap_or(u32::MAX);
    Some(Ipv4Addr::from(u32::from(addr) | host_mask))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A suspect whose verdict never arrives is declared down by this node itself, not before
    /// twice foca's suspicion time, and the verdict is queued for gossip.
    #[test]
    fn a_suspect_without_a_verdict_is_declared_down_here() {
        let start = Duration::from_secs(1);
        let mut c = node(start);
        let mut peer = c.me();
        peer.addr = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 7171);
        peer.id = NodeId([2; 16]);
        c.assume_members(&[peer], start);
        let suspect = foca::Member::new(peer, 0, State::Suspect);
        let _ = c.foca.apply_many(std::iter::once(suspect), true, &mut c.rt);
        c.drain_foca(start);
        let timeout = 2 * foca_config(c.sized_for, c.config.remove_down_after).suspect_to_down_after;
        let mut now = start;
        while now < start + timeout + Duration::from_secs(12) {
            // Our own probes would reach the same verdict; only the rule may act here.
            c.timers.clear();
            now += Duration::from_millis(500);
            c.handle_time(now);
            if now < start + timeout {
                assert!(c.counts_alive(&peer), "declared down early, at {now:?}");
            }
        }
        assert!(!c.counts_alive(&peer));
        assert_eq!(c.counters().suspicions_timed_out, 1);
        assert_eq!(c.swim_view(&peer).map(|(s, _)| s), Some(State::Down));
        let downs = std::iter::from_fn(|| c.poll_event())
            .filter(|e| matches!(e, Event::MemberDown { member, .. } if *member == peer))
            .count();
        assert_eq!(downs, 1);
    }

    fn node(now: Duration) -> Cluster {
        let key = ClusterKey::from_bytes([7; 32]);
        Cluster::new(
            &key,
            crate::record::sample(1, 1),
            1,
            [1; 16],
            1,
            Config::default(),
            now,
        )
    }

    /// Forged datagrams from ever new (spoofed) addresses: counted, but the table of refused
    /// addresses, and the warnings, stay bounded; old entries are forgotten.
    #[test]
    fn forged_datagrams_from_many_addresses_keep_the_foreign_table_bounded() {
        let now = Duration::from_secs(1);
        let mut c = node(now);
        let other = ClusterKey::from_bytes([8; 32]);
        let mut forger = Sealer::new(&other, [9; 16]);
        let datagram = forger.seal(wire::KIND_SYNC_REQUEST, &[]).expect("seal");
        for i in 0..10_000u32 {
            let from = SocketAddrV4::new(Ipv4Addr::from(0x0a00_0000 + i), 7171);
            c.handle_datagram(now, from, &datagram);
        }
        assert_eq!(c.counters().auth, 10_000);
        assert_eq!(c.foreign().count(), MAX_FOREIGN);
        let refused = std::iter::from_fn(|| c.poll_event())
            .filter(|e| matches!(e, Event::Refused { .. }))
            .count();
        assert_eq!(refused, 1, "at most one warning a second");
        // A remembered address still counts up.
        let first = SocketAddrV4::new(Ipv4Addr::from(0x0a00_0000), 7171);
        c.handle_datagram(now, first, &datagram);
        assert_eq!(
            c.foreign()
                .find(|(a, _)| **a == *first.ip())
                .map(|(_, f)| f.dropped),
            Some(2)
        );
        let later = now + FOREIGN_FORGET + Duration::from_secs(10);
        c.handle_time(later);
        assert_eq!(c.foreign().count(), 0, "forgotten after {FOREIGN_FORGET:?}");
    }
}
