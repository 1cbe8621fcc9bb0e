//! The event loop: one thread polls the cluster socket, the ARP sweep and the signal fd, feeds the
//! membership core, samples the node, and publishes the map to files and the local API.

use crate::api_server::{Command, Hub};
use crate::config::Options;
use crate::lease::Lease;
use crate::nodemap::{self, Clock};
use crate::sample::{self, Load};
use crate::sweep::SweepDriver;
use clump_api::{Event, EventKind, Speed, Stats};
use clump_cluster::{Cluster, Config, ConflictKind, Event as ClusterEvent, NodeId, NodeRecord};
use clump_seal::ClusterKey;
use rustix::event::{poll, PollFd, PollFlags};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SAMPLE_EVERY: Duration = Duration::from_millis(250);
const RECORD_EVERY: Duration = Duration::from_millis(500);
const WRITE_EVERY: Duration = Duration::from_secs(1);
const LEASE_CHECK_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct Paths {
    pub lease: PathBuf,
    pub nodes_json: PathBuf,
    pub mosix_map: PathBuf,
    pub speed_override: PathBuf,
    pub node_id: PathBuf,
}

/// The daemon's clock: monotonic, counting suspend, the kernel's `t=` and clump-netd's clock too.
pub fn mono() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    Duration::new(ts.tv_sec.unsigned_abs(), ts.tv_nsec.clamp(0, 999_999_999) as u32)
}

pub fn clock() -> Clock {
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Clock {
        mono: mono(),
        unix_ms,
    }
}

/// Why the loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    Signal,
    LeaseChanged,
    /// What the loop ran for is over.
    Done,
}

pub struct Daemon {
    options: Options,
    paths: Paths,
    hub: Arc<Hub>,
    cluster: Cluster,
    socket: UdpSocket,
    fingerprint: String,
    lease: Lease,
    load: Load,
    speed_measured: Option<u32>,
    speed_fixed: Option<u32>,
    speed_rx: mpsc::Receiver<u32>,
    sweep: Option<SweepDriver>,
    stats: Stats,
    started: Duration,
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The seal's instance must differ between runs; getrandom failing would be a broken kernel.
    if rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()).is_err() {
        let t = mono().as_nanos().to_le_bytes();
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = t[i % t.len()] ^ (i as u8).wrapping_mul(0x9d);
        }
    }
    b
}

fn node_id(paths: &Paths, mac: [u8; 6]) -> NodeId {
    std::fs::read_to_string(&paths.node_id)
        .ok()
        .and_then(|t| NodeId::from_hex(&t))
        .unwrap_or_else(|| NodeId::from_mac(mac))
}

/// The hostname, set to `clump-<number>` when nobody has set one.
fn hostname(number: u32) -> String {
    let current = sample::hostname().unwrap_or_default();
    if !current.is_empty() && current != "(none)" && current != "localhost" {
        return current;
    }
    let name = format!("clump-{number}");
    if rustix::system::sethostname(name.as_bytes()).is_err() {
        tracing::warn!(name, "cannot set the hostname");
    }
    name
}

/// The cluster socket's receive buffer. The kernel's default (about 200 KiB, some 90 datagrams
/// at the truesize of a virtio-net receive) overflowed in the lab whenever a flood of junk met a
/// guest whose CPU was busy for a moment, and the cluster's own datagrams were lost with the
/// junk (nodes declared dead). 4 MiB holds seconds of a flood while the loop catches up.
pub const RECEIVE_BUFFER: usize = 4 << 20;

/// Sets the socket's receive buffer to `bytes`, past `rmem_max` when allowed (root); returns
/// what the kernel granted (it reports twice the figure asked for, its book-keeping included).
pub fn enlarge_receive_buffer(socket: &UdpSocket, bytes: usize) -> std::io::Result<usize> {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    if setsockopt(socket, sockopt::RcvBufForce, &bytes).is_err() {
        setsockopt(socket, sockopt::RcvBuf, &bytes)?;
    }
    Ok(getsockopt(socket, sockopt::RcvBuf)?)
}

fn udp_socket(lease: &Lease, port: u16) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))?;
    // Cluster traffic belongs to the lease's NIC only, even on a node with several.
    nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::BindToDevice,
        &std::ffi::OsString::from(&lease.iface),
    )?;
    socket.set_broadcast(true)?;
    socket.set_nonblocking(true)?;
    match enlarge_receive_buffer(&socket, RECEIVE_BUFFER) {
        Ok(granted) if granted < RECEIVE_BUFFER => {
            tracing::warn!(
                granted,
                wanted = RECEIVE_BUFFER,
                "small receive buffer for the cluster socket"
            );
        }
        Ok(_) => {}
        Err(err) => tracing::warn!(%err, "cannot enlarge the cluster socket's receive buffer"),
    }
    Ok(socket)
}

impl Daemon {
    pub fn new(
        options: Options,
        paths: Paths,
        hub: Arc<Hub>,
        key: &ClusterKey,
        lease: Lease,
    ) -> std::io::Result<Self> {
        let socket = udp_socket(&lease, options.port)?;
        let id = node_id(&paths, lease.mac);
        let mem = sample::memory().unwrap_or(sample::Memory {
            total_kib: 0,
            available_kib: 0,
        });
        let mut record = NodeRecord {
            id,
            seq: 1,
            addr: lease.addr,
            prefix_len: lease.prefix_len,
            mac: lease.mac,
            hostname: String::new(),
            cores: sample::cores(),
            speed: 0,
            mem_total_kib: mem.total_kib,
            mem_free_kib: mem.available_kib,
            load: 0,
            runnable: 0,
            jobs: 0,
            migrations_in: 0,
            migrations_out: 0,
            flags: 0,
            version: env!("CARGO_PKG_VERSION").into(),
        };
        record.hostname = hostname(record.number());
        hub.jobs.set_home(record.number());
        let speed_fixed = options.speed.or_else(|| {
            std::fs::read_to_string(&paths.speed_override)
                .ok()
                .and_then(|t| crate::speed::parse_override(t.trim()).ok())
        });
        record.speed = speed_fixed.unwrap_or(0);
        let now = mono();
        let config = Config {
            port: options.port,
            ..Config::default()
        };
        let seed = u64::from_le_bytes(random_bytes());
        let gen = generation(std::time::SystemTime::now());
        let cluster = Cluster::new(key, record, gen, random_bytes(), seed, config, now);

        // The benchmark takes a second or two under emulation: the node joins meanwhile and
        // publishes its speed when known.
        let (tx, speed_rx) = mpsc::channel();
        std::thread::Builder::new().name("speed".into()).spawn(move || {
            let m = crate::speed::measure();
            tracing::info!(
                measured = m.speed,
                best_ms = m.best.as_millis() as u64,
                rounds = m.rounds,
                "speed"
            );
            let _ = tx.send(m.speed);
        })?;

        let sweep = if options.probe_cap > 0 {
            match SweepDriver::new(
                &lease.iface,
                lease.mac,
                lease.addr,
                lease.prefix_len,
                options.probe_cap,
                options.probe_rate,
                now,
            ) {
                Ok(s) => Some(s),
                Err(err) => {
                    tracing::warn!(%err, "no ARP sweep: cannot open a packet socket");
                    None
                }
            }
        } else {
            None
        };
        tracing::info!(
            id = %id, number = cluster.record().number(), address = %lease.addr, prefix = lease.prefix_len,
            port = options.port, key = key.fingerprint(), "starting"
        );
        Ok(Self {
            fingerprint: key.fingerprint(),
            options,
            paths,
            hub,
            cluster,
            socket,
            lease,
            load: Load::default(),
            speed_measured: None,
            speed_fixed,
            speed_rx,
            sweep,
            stats: Stats::default(),
            started: now,
        })
    }

    pub fn run(&mut self, sigfd: &impl AsFd) -> Exit {
        self.run_while(sigfd, || true)
    }

    /// The loop, until a signal or `keep` says stop (`Exit::Done`).
    pub fn run_while(&mut self, sigfd: &impl AsFd, mut keep: impl FnMut() -> bool) -> Exit {
        let mut next_sample = mono();
        let mut next_record = mono();
        let mut next_write = mono();
        let mut next_lease_check = mono() + LEASE_CHECK_EVERY;
        let mut dirty = true;
        let mut buf = vec![0u8; 2048];
        loop {
            if !keep() {
                return Exit::Done;
            }
            let now = mono();
            let mut deadline = self
                .cluster
                .next_deadline()
                .min(next_sample)
                .min(next_record)
                .min(next_write)
                .min(next_lease_check);
            if let Some(due) = self
                .sweep
                .as_ref()
                .and_then(|s| s.deadline(self.options.probe_linger))
            {
                deadline = deadline.min(due);
            }
            let timeout = deadline.saturating_sub(now);
            let ts = rustix::time::Timespec {
                tv_sec: timeout.as_secs() as i64,
                tv_nsec: i64::from(timeout.subsec_nanos()),
            };
            let sweep_fd = self.sweep.as_ref().map(|s| s.fd());
            let mut fds = vec![
                PollFd::new(&self.socket, PollFlags::IN),
                PollFd::new(sigfd, PollFlags::IN),
            ];
            if let Some(fd) = &sweep_fd {
                fds.push(PollFd::from_borrowed_fd(*fd, PollFlags::IN));
            }
            let _ = poll(&mut fds, Some(&ts));
            let signalled = !fds[1].revents().is_empty();
            drop(fds);
            if signalled {
                return Exit::Signal;
            }
            let now = mono();

            // Datagrams first: they are what time-outs are measured against.
            loop {
                match self.socket.recv_from(&mut buf) {
                    Ok((n, std::net::SocketAddr::V4(from))) => {
                        self.cluster.handle_datagram(now, from, &buf[..n])
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        tracing::debug!(%e, "recv");
                        break;
                    }
                }
            }
            self.drive_sweep(now);
            self.cluster.handle_time(now);
            self.apply_commands();
            if let Ok(speed) = self.speed_rx.try_recv() {
                self.speed_measured = Some(speed);
                if self.speed_fixed.is_none() {
                    self.cluster.update_record(|r| r.speed = speed);
                }
                dirty = true;
            }
            if now >= next_sample {
                next_sample = now + SAMPLE_EVERY;
                self.load.update(sample::runnable().unwrap_or(0));
                self.hub
                    .local_runnable
                    .store(self.load.local_milli(), std::sync::atomic::Ordering::Relaxed);
            }
            if now >= next_record {
                next_record = now + RECORD_EVERY;
                self.refresh_record();
            }
            self.flush();
            dirty |= self.publish_events();
            if now >= next_lease_check {
                next_lease_check = now + LEASE_CHECK_EVERY;
                if crate::lease::read(&self.paths.lease).as_ref() != Some(&self.lease) {
                    return Exit::LeaseChanged;
                }
            }
            if dirty || now >= next_write {
                next_write = now + WRITE_EVERY;
                dirty = false;
                self.write_map();
            }
        }
    }

    /// A graceful goodbye so the others show this node as left, not dead.
    pub fn leave(&mut self) {
        self.cluster.leave(mono());
        self.flush();
        let _ = self.publish_events();
        self.write_map();
    }

    fn drive_sweep(&mut self, now: Duration) {
        let Some(sweep) = self.sweep.as_mut() else { return };
        let found = sweep.on_time(now);
        if !found.is_empty() {
            let hosts: Vec<Ipv4Addr> = found.iter().map(|h| h.addr).collect();
            self.cluster.handle_hosts(&hosts);
        }
        if sweep.is_done(now, self.options.probe_linger) {
            tracing::info!(sent = sweep.sent(), found = sweep.found().len(), "ARP sweep done");
            self.stats.sweep_runs += 1;
            self.stats.sweep_sent += sweep.sent() as u64;
            self.stats.sweep_found += sweep.found().len() as u64;
            self.sweep = None;
        }
    }

    fn apply_commands(&mut self) {
        for command in self.hub.take_commands() {
            match command {
                Command::SetSpeed(speed) => {
                    self.speed_fixed = speed;
                    let effective = speed.or(self.speed_measured).unwrap_or(0);
                    self.cluster.update_record(|r| r.speed = effective);
                    let saved = match speed {
                        Some(s) => {
                            nodemap::write_atomic(&self.paths.speed_override, format!("{s}\n").as_bytes())
                        }
                        None => std::fs::remove_file(&self.paths.speed_override).or_else(|e| {
                            if e.kind() == std::io::ErrorKind::NotFound {
                                Ok(())
                            } else {
                                Err(e)
                            }
                        }),
                    };
                    if let Err(err) = saved {
                        tracing::warn!(%err, "cannot keep the speed override");
                    }
                    tracing::info!(speed = effective, fixed = speed.is_some(), "speed set");
                }
            }
        }
    }

    fn refresh_record(&mut self) {
        let mem = sample::memory().unwrap_or(sample::Memory {
            total_kib: 0,
            available_kib: 0,
        });
        let speed = self.speed_fixed.or(self.speed_measured).unwrap_or(0);
        // Until the benchmark is done (a second or two), load is normalised as for the reference.
        let norm_speed = if speed == 0 {
            crate::speed::REFERENCE_SPEED
        } else {
            speed
        };
        // Moves coming in count as tasks here already, so that other nodes do not all choose
        // this one before its own load shows them (flood control).
        let incoming = self.hub.peers.get().map_or(0, |p| p.incoming());
        let mut load = self.load;
        load.add_tasks(incoming);
        let minute = crate::control::minute_of_day(SystemTime::now());
        let flags = self.hub.control().flags(minute);
        let jobs = u32::try_from(self.hub.jobs.running()).unwrap_or(u32::MAX);
        let (moved_in, moved_out) = self.hub.jobs.migrations();
        self.cluster.update_record(|r| {
            r.jobs = jobs;
            r.migrations_in = moved_in;
            r.migrations_out = moved_out;
            r.mem_total_kib = mem.total_kib;
            r.mem_free_kib = mem.available_kib;
            r.runnable = u32::try_from(load.exported_milli()).unwrap_or(u32::MAX);
            r.load = u32::try_from(load.normalised_milli(norm_speed, r.cores.max(1))).unwrap_or(u32::MAX);
            r.speed = speed;
            r.flags = (r.flags & clump_cluster::record::FLAG_LEAVING) | flags;
        });
    }

    fn flush(&mut self) {
        while let Some((to, bytes)) = self.cluster.poll_transmit() {
            if let Err(err) = self.socket.send_to(&bytes, to) {
                self.stats.send_errors += 1;
                tracing::debug!(%err, %to, "send");
            }
        }
    }

    /// Logs the core's events and hands them to the local API; true when the map changed.
    fn publish_events(&mut self) -> bool {
        let mut any = false;
        while let Some(event) = self.cluster.poll_event() {
            any = true;
            if let Some(e) = self.describe(&event) {
                self.hub.push_event(e);
            }
        }
        any
    }

    fn describe(&self, event: &ClusterEvent) -> Option<Event> {
        // The node number is the host part of the address (ARCHITECTURE.md, "Node identity").
        let mask = u32::MAX
            .checked_shr(u32::from(self.lease.prefix_len))
            .unwrap_or(0);
        let number_of = |addr: Ipv4Addr| u32::from(addr) & mask;
        let clock = clock();
        let mk = |kind, id: Option<NodeId>, addr: Option<Ipv4Addr>, text: String| Event {
            seq: 0,
            time_ms: clock.unix_ms,
            kind,
            node: id.map(|i| i.to_string()),
            number: match (id, addr) {
                (Some(_), Some(a)) => Some(number_of(a)),
                _ => None,
            },
            address: addr,
            text,
        };
        Some(match event {
            ClusterEvent::JoinedCluster => {
                tracing::info!(members = self.cluster.alive_count(), "joined cluster");
                mk(
                    EventKind::JoinedCluster,
                    None,
                    None,
                    "this node joined the cluster".into(),
                )
            }
            ClusterEvent::Alone => {
                tracing::warn!("alone: every other node left or died");
                mk(EventKind::Alone, None, None, "no other node is reachable".into())
            }
            ClusterEvent::MemberUp(m) => {
                let n = number_of(*m.addr.ip());
                tracing::info!(number = n, address = %m.addr.ip(), id = %m.id, "node joined");
                mk(
                    EventKind::NodeJoined,
                    Some(m.id),
                    Some(*m.addr.ip()),
                    format!("node {n} ({}) joined", m.addr.ip()),
                )
            }
            ClusterEvent::MemberDown { member: m, left } => {
                let n = number_of(*m.addr.ip());
                if *left {
                    tracing::info!(number = n, address = %m.addr.ip(), id = %m.id, "node left");
                    mk(
                        EventKind::NodeLeft,
                        Some(m.id),
                        Some(*m.addr.ip()),
                        format!("node {n} ({}) left", m.addr.ip()),
                    )
                } else {
                    tracing::warn!(number = n, address = %m.addr.ip(), id = %m.id, "node dead");
                    mk(
                        EventKind::NodeDead,
                        Some(m.id),
                        Some(*m.addr.ip()),
                        format!("node {n} ({}) is dead", m.addr.ip()),
                    )
                }
            }
            ClusterEvent::Renamed { old, new } => {
                tracing::info!(address = %new.addr.ip(), old = %old.id, new = %new.id, "node restarted");
                mk(
                    EventKind::NodeAlive,
                    Some(new.id),
                    Some(*new.addr.ip()),
                    format!("node at {} restarted", new.addr.ip()),
                )
            }
            ClusterEvent::Refused { from, count } => {
                tracing::warn!(
                    "refused datagrams from={from} reason=auth count={count} (a different cluster key?)"
                );
                mk(
                    EventKind::Refused,
                    None,
                    Some(*from),
                    format!("refused {count} datagrams from {from}: not signed with this cluster's key"),
                )
            }
            ClusterEvent::Conflict { id, kind } => {
                let what = match kind {
                    ConflictKind::DuplicateId => "two machines claim one node id (cloned MAC?)",
                    ConflictKind::DuplicateMac => "two nodes share one MAC address",
                    ConflictKind::DuplicateAddress => "two nodes share one IP address",
                };
                tracing::warn!(id = %id, "conflict: {what}");
                mk(EventKind::Conflict, Some(*id), None, format!("conflict: {what}"))
            }
            ClusterEvent::Rejoined(m) => {
                tracing::warn!(gen = m.gen, "the cluster declared this node dead; rejoined");
                mk(
                    EventKind::JoinedCluster,
                    Some(m.id),
                    Some(*m.addr.ip()),
                    "this node rejoined the cluster".into(),
                )
            }
        })
    }

    fn write_map(&mut self) {
        let clock = clock();
        let map = nodemap::build(&self.cluster, &self.fingerprint, self.options.port, clock);
        if let Err(err) = nodemap::write_files(&map, &self.paths.nodes_json, &self.paths.mosix_map) {
            tracing::warn!(%err, "cannot write the node map");
        }
        let c = self.cluster.counters().clone();
        self.stats.map_writes += 1;
        let mut stats = self.stats.clone();
        stats.uptime_ms = clock.mono.saturating_sub(self.started).as_millis() as u64;
        stats.members = map.nodes.len() as u64;
        stats.alive = map.nodes.iter().filter(|n| n.state.is_member()).count() as u64;
        stats.suspect = map
            .nodes
            .iter()
            .filter(|n| n.state == clump_api::NodeState::Suspect)
            .count() as u64;
        stats.dead = map
            .nodes
            .iter()
            .filter(|n| n.state == clump_api::NodeState::Dead)
            .count() as u64;
        stats.conflicts = map.nodes.iter().filter(|n| !n.conflicts.is_empty()).count() as u64;
        stats.foreign = map.foreign.len() as u64;
        stats.datagrams_in = c.datagrams_in;
        stats.datagrams_out = c.datagrams_out;
        stats.bytes_in = c.bytes_in;
        stats.bytes_out = c.bytes_out;
        stats.hello_sent = c.hello_sent;
        stats.dropped = nodemap::dropped(&c);
        if let Some(peers) = self.hub.peers.get() {
            (stats.streams_accepted, stats.streams_refused) = peers.gate.counts();
        }
        let speed = Speed {
            speed: self.speed_fixed.or(self.speed_measured),
            measured: self.speed_measured,
            fixed: self.speed_fixed.is_some(),
        };
        self.hub.publish(|s| {
            s.map = map;
            s.stats = stats;
            s.speed = speed;
        });
    }
}

/// This run's generation: tenths of a second since the Unix epoch, wrapping. A restarted daemon
/// must win over its previous instance, which the others may still hold (alive, or dead for
/// `remove_down_after`): foca compares the two with wrapping arithmetic, so a random generation
/// lost half the time, and the new instance was declared dead again and again. Tenths of a
/// second keep the order for 6.8 years between two instances, far beyond how long anyone holds
/// the old one.
fn generation(now: std::time::SystemTime) -> u32 {
    let tenths = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() / 100);
    (tenths % (1u128 << 32)) as u32
}

#[cfg(test)]
mod receive_buffer_tests {
    use super::{enlarge_receive_buffer, RECEIVE_BUFFER};
    use nix::sys::socket::{getsockopt, sockopt};

    #[test]
    fn the_cluster_socket_gets_a_receive_buffer_for_seconds_of_a_flood() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let default = getsockopt(&socket, sockopt::RcvBuf).expect("getsockopt");
        let granted = enlarge_receive_buffer(&socket, RECEIVE_BUFFER).expect("setsockopt");
        assert!(granted >= default, "{granted} < {default}");
        // Root may pass rmem_max (clumpd runs as root); others get at most rmem_max.
        if rustix::process::geteuid().is_root() {
            assert!(granted >= RECEIVE_BUFFER, "{granted}");
        }
    }
}

#[cfg(test)]
mod generation_tests {
    use super::generation;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn a_later_start_has_a_later_generation_even_across_the_wrap() {
        let wins = |new: u32, old: u32| (new.wrapping_sub(old) as i32) > 0;
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert!(wins(generation(t + Duration::from_millis(200)), generation(t)));
        assert!(wins(
            generation(t + Duration::from_secs(86_400 * 365 * 6)),
            generation(t)
        ));
        // 2^32 tenths after the epoch the counter wraps; the order holds across it.
        let wrap = UNIX_EPOCH + Duration::from_millis(100 * (1u64 << 32));
        assert!(wins(
            generation(wrap + Duration::from_secs(5)),
            generation(wrap - Duration::from_secs(5))
        ));
    }
}
