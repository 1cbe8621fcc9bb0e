//! `clump-attacker`: a host on the lab's network without the cluster key, attacking every port
//! a Clump node listens on for a bounded time, paced. Run inside the lab's network namespace
//! (`ip netns exec <ns> clump-attacker ...`) with an address of its own on the bridge.
//!
//! UDP, to each node and to the subnet's broadcast address: random bytes, empty and truncated
//! datagrams, oversized ones (fragmented too), the right magic with another version, forged
//! seals (random, and sealed under a key of our own, also claiming a genuine sender's instance
//! with a seq ahead of it), forged seals from spoofed source addresses, garbage to the other
//! UDP ports the nodes listen on; and genuine datagrams captured off the bridge (a packet
//! socket, the bridge promiscuous) replayed verbatim to where they went, replayed to another
//! node, cut short, and with one byte flipped. TCP, to the cluster port and every other
//! listening port: see `stream.rs`.
//!
//! Uses only crates from crates.io, none of the project's: what an outsider has. Prints what it
//! sent by kind on stderr, and on stdout one JSON report: per node, how many datagrams must
//! have raised each of its drop counters (`certain`), for the test to check.

mod forge;
mod packet;
mod stream;

use anyhow::{bail, Context, Result};
use clap::Parser;
use forge::{Expect, Rng};
use packet::{Captured, PacketSocket};
use serde_json::json;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Attacks a Clump cluster from a host without its key (lab use only)")]
struct Args {
    /// The bridge (or interface) to capture genuine datagrams on and send spoofed ones from.
    #[arg(long, default_value = "br0")]
    iface: String,
    /// This host's own address on that network.
    #[arg(long)]
    from: Ipv4Addr,
    /// A node's address (repeat for each).
    #[arg(long = "node", required = true)]
    nodes: Vec<Ipv4Addr>,
    /// The subnet's broadcast address.
    #[arg(long)]
    broadcast: Ipv4Addr,
    /// The cluster port (UDP and TCP).
    #[arg(long, default_value_t = 7171)]
    port: u16,
    /// How long to attack.
    #[arg(long, default_value_t = 40)]
    seconds: u64,
    /// UDP datagrams a second, all kinds and targets together.
    #[arg(long, default_value_t = 1500)]
    rate: u32,
    /// Another UDP port the nodes listen on (garbage goes there too).
    #[arg(long = "udp-port")]
    udp_ports: Vec<u16>,
    /// Another TCP port the nodes listen on.
    #[arg(long = "tcp-port")]
    tcp_ports: Vec<u16>,
    /// Connections opened at once per node in the flood.
    #[arg(long, default_value_t = 40)]
    flood: usize,
    /// Spoofed source addresses are drawn from this /16 (its first two octets).
    #[arg(long, default_value = "10.99.0.0")]
    spoof_net: Ipv4Addr,
}

/// What the UDP side sent and what each node must have counted.
#[derive(Default)]
struct Book {
    sent: BTreeMap<(String, &'static str), u64>,
    certain: BTreeMap<Ipv4Addr, BTreeMap<&'static str, u64>>,
    send_errors: u64,
}

impl Book {
    fn note(&mut self, to: &str, kind: &'static str, certain_at: &[Ipv4Addr], expect: Expect) {
        *self.sent.entry((to.to_owned(), kind)).or_insert(0) += 1;
        if let Some(counter) = expect.counter() {
            for node in certain_at {
                *self.certain.entry(*node).or_default().entry(counter).or_insert(0) += 1;
            }
        }
    }
}

/// Genuine datagrams captured, newest last, and the nodes' MAC addresses.
#[derive(Default)]
struct Capture {
    seen: VecDeque<(Instant, Captured)>,
    total: u64,
    macs: HashMap<Ipv4Addr, [u8; 6]>,
}

const KEEP: usize = 4096;

fn seed() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        b = t.to_le_bytes();
    }
    u64::from_le_bytes(b)
}

fn capture_loop(sock: &PacketSocket, port: u16, nodes: &[Ipv4Addr], cap: &Mutex<Capture>, stop: &AtomicBool) {
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        match sock.capture(port, &mut buf) {
            Ok(Some(c)) => {
                if !nodes.contains(&c.src) {
                    continue;
                }
                if let Ok(mut cap) = cap.lock() {
                    cap.macs.insert(c.src, c.src_mac);
                    if forge::looks_genuine(&c.payload) {
                        cap.total += 1;
                        if cap.seen.len() >= KEEP {
                            cap.seen.pop_front();
                        }
                        cap.seen.push_back((Instant::now(), c));
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("clump-attacker: capture failed: {e}");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// A genuine datagram seen at least 50 ms ago (so its original reached the node first).
fn pick_genuine(cap: &Mutex<Capture>, rng: &mut Rng) -> Option<Captured> {
    let cap = cap.lock().ok()?;
    let old = cap
        .seen
        .iter()
        .filter(|(t, _)| t.elapsed() >= Duration::from_millis(50))
        .count();
    if old == 0 {
        return None;
    }
    cap.seen.get(rng.range(0, old - 1)).map(|(_, c)| c.clone())
}

#[derive(Clone, Copy)]
enum UdpKind {
    Short,
    Large,
    Random,
    Version,
    Forged,
    SealedOther,
    SealedLike,
    Flipped,
    Truncated,
    Replay,
    ReplayCross,
    Spoofed,
    PortGarbage,
}

const SCHEDULE: [UdpKind; 14] = [
    UdpKind::Short,
    UdpKind::Large,
    UdpKind::Random,
    UdpKind::Version,
    UdpKind::Forged,
    UdpKind::SealedOther,
    UdpKind::SealedLike,
    UdpKind::Flipped,
    UdpKind::Truncated,
    UdpKind::Replay,
    UdpKind::Replay,
    UdpKind::ReplayCross,
    UdpKind::Spoofed,
    UdpKind::PortGarbage,
];

struct Udp<'a> {
    args: &'a Args,
    sock: UdpSocket,
    raw: Option<&'a PacketSocket>,
    cap: &'a Mutex<Capture>,
    book: Book,
    rng: Rng,
    key: [u8; 32],
    ident: u16,
}

impl Udp<'_> {
    fn send(&mut self, to: Ipv4Addr, port: u16, bytes: &[u8]) -> bool {
        match self.sock.send_to(bytes, SocketAddrV4::new(to, port)) {
            Ok(_) => true,
            Err(_) => {
                self.book.send_errors += 1;
                false
            }
        }
    }

    /// A node or the broadcast address, and the nodes that certainly receive it.
    fn target(&mut self) -> (Ipv4Addr, String, Vec<Ipv4Addr>) {
        let n = self.args.nodes.len();
        let i = self.rng.range(0, n);
        if i == n {
            (self.args.broadcast, "broadcast".into(), self.args.nodes.clone())
        } else {
            let node = self.args.nodes[i];
            (node, node.to_string(), vec![node])
        }
    }

    fn one(&mut self, kind: UdpKind) {
        let port = self.args.port;
        let made: Option<(Vec<u8>, &'static str, Expect)> = match kind {
            UdpKind::Short => Some((forge::short(&mut self.rng), "short", Expect::TooShort)),
            UdpKind::Large => {
                let frag = self.rng.range(0, 7) == 0;
                let name = if frag { "oversized-fragmented" } else { "oversized" };
                Some((forge::large(&mut self.rng, frag), name, Expect::TooLarge))
            }
            UdpKind::Random => Some((forge::random(&mut self.rng), "random", Expect::NotClump)),
            UdpKind::Version => Some((
                forge::other_version(&mut self.rng),
                "other-version",
                Expect::Version,
            )),
            UdpKind::Forged => Some((forge::forged(&mut self.rng), "forged-random-seal", Expect::Auth)),
            UdpKind::SealedOther => Some((
                forge::sealed_with(&self.key, &mut self.rng, None),
                "forged-other-key",
                Expect::Auth,
            )),
            UdpKind::SealedLike => pick_genuine(self.cap, &mut self.rng).map(|g| {
                (
                    forge::sealed_with(&self.key, &mut self.rng, Some(&g.payload)),
                    "forged-genuine-instance",
                    Expect::Auth,
                )
            }),
            UdpKind::Flipped => pick_genuine(self.cap, &mut self.rng).map(|g| {
                (
                    forge::flipped(&g.payload, &mut self.rng),
                    "genuine-byte-flipped",
                    Expect::Auth,
                )
            }),
            UdpKind::Truncated => pick_genuine(self.cap, &mut self.rng).map(|g| {
                let (bytes, expect) = forge::truncated(&g.payload, &mut self.rng);
                (bytes, "genuine-truncated", expect)
            }),
            UdpKind::Replay => return self.replay(false),
            UdpKind::ReplayCross => return self.replay(true),
            UdpKind::Spoofed => return self.spoofed(),
            UdpKind::PortGarbage => return self.port_garbage(),
        };
        let Some((bytes, name, expect)) = made else {
            // Nothing captured yet: random bytes instead.
            return self.one(UdpKind::Random);
        };
        let (to, label, certain) = self.target();
        if self.send(to, port, &bytes) {
            self.book.note(&label, name, &certain, expect);
        }
    }

    /// A genuine datagram again, verbatim: to the node (or broadcast) it went to, where it is a
    /// replay for sure, or (`cross`) to a node it was not sent to, where it may pass as fresh.
    fn replay(&mut self, cross: bool) {
        let Some(g) = pick_genuine(self.cap, &mut self.rng) else {
            return self.one(UdpKind::Random);
        };
        let nodes = self.args.nodes.clone();
        let broadcast = g.dst == self.args.broadcast;
        if !cross {
            if !broadcast && !nodes.contains(&g.dst) {
                return self.one(UdpKind::Random); // a reply to us
            }
            // A broadcast reaches its sender too, but a looped-back copy of one's own
            // datagram is not certain to be counted: only the other nodes are.
            let certain: Vec<Ipv4Addr> = if broadcast {
                nodes.iter().copied().filter(|n| *n != g.src).collect()
            } else {
                vec![g.dst]
            };
            let label = if broadcast {
                "broadcast".to_owned()
            } else {
                g.dst.to_string()
            };
            if self.send(g.dst, self.args.port, &g.payload) {
                self.book.note(&label, "replay", &certain, Expect::Replay);
            }
            return;
        }
        let others: Vec<Ipv4Addr> = nodes
            .iter()
            .copied()
            .filter(|n| *n != g.src && *n != g.dst)
            .collect();
        if broadcast || others.is_empty() {
            return self.replay(false);
        }
        let to = others[self.rng.range(0, others.len() - 1)];
        if self.send(to, self.args.port, &g.payload) {
            self.book
                .note(&to.to_string(), "replay-to-another-node", &[], Expect::Unsure);
        }
    }

    /// A forged seal from a made-up source address (a packet socket writes the IP header).
    fn spoofed(&mut self) {
        let nodes = self.args.nodes.clone();
        let node = nodes[self.rng.range(0, nodes.len() - 1)];
        let mac = self.cap.lock().ok().and_then(|c| c.macs.get(&node).copied());
        let (Some(raw), Some(mac)) = (self.raw, mac) else {
            return self.one(UdpKind::Forged);
        };
        let [a, b, _, _] = self.args.spoof_net.octets();
        let src = Ipv4Addr::new(a, b, self.rng.range(0, 255) as u8, self.rng.range(1, 254) as u8);
        let bytes = forge::sealed_with(&self.key, &mut self.rng, None);
        self.ident = self.ident.wrapping_add(1);
        match raw.send_udp(
            SocketAddrV4::new(src, self.args.port),
            SocketAddrV4::new(node, self.args.port),
            &bytes,
            mac,
            self.ident,
        ) {
            // The node's reverse-path filter may drop a source it has no route back to.
            Ok(()) => self
                .book
                .note(&node.to_string(), "forged-spoofed-source", &[], Expect::Unsure),
            Err(_) => self.book.send_errors += 1,
        }
    }

    /// Random bytes to another UDP port the nodes listen on. To DHCP's client port they come
    /// from port 67 (through the packet socket), as a server's would, so the node's DHCP
    /// client parses them instead of filtering them out by port.
    fn port_garbage(&mut self) {
        if self.args.udp_ports.is_empty() {
            return self.one(UdpKind::Random);
        }
        let port = self.args.udp_ports[self.rng.range(0, self.args.udp_ports.len() - 1)];
        let n = self.rng.range(0, 1400);
        let bytes = self.rng.bytes(n);
        if port == 68 {
            let nodes = self.args.nodes.clone();
            let node = nodes[self.rng.range(0, nodes.len() - 1)];
            let mac = self.cap.lock().ok().and_then(|c| c.macs.get(&node).copied());
            if let (Some(raw), Some(mac)) = (self.raw, mac) {
                self.ident = self.ident.wrapping_add(1);
                match raw.send_udp(
                    SocketAddrV4::new(self.args.from, 67),
                    SocketAddrV4::new(node, 68),
                    &bytes,
                    mac,
                    self.ident,
                ) {
                    Ok(()) => self.book.note(
                        &format!("{node}:68"),
                        "garbage-dhcp-from-port-67",
                        &[],
                        Expect::Unsure,
                    ),
                    Err(_) => self.book.send_errors += 1,
                }
                return;
            }
        }
        let (to, label, _) = self.target();
        if self.send(to, port, &bytes) {
            self.book.note(
                &format!("{label}:{port}"),
                "garbage-other-udp-port",
                &[],
                Expect::Unsure,
            );
        }
    }
}

fn stream_attacks(
    targets: Vec<SocketAddr>,
    flood: usize,
    until: Instant,
    tally: &Arc<Mutex<stream::Tally>>,
) -> Vec<thread::JoinHandle<()>> {
    let mut handles = Vec::new();
    for (i, to) in targets.into_iter().enumerate() {
        let tally = tally.clone();
        handles.push(thread::spawn(move || {
            let mut rng = Rng::new(seed() ^ i as u64);
            let mut stalls: Vec<thread::JoinHandle<()>> = Vec::new();
            let mut flooded = false;
            let start = Instant::now();
            while Instant::now() < until {
                stream::garbage(to, &mut rng, &tally);
                stream::wrong_key(to, &mut rng, &tally);
                stalls.retain(|h| !h.is_finished());
                if stalls.len() < 2 {
                    for trickle in [false, true] {
                        let tally = tally.clone();
                        let mut r = Rng::new(rng.next());
                        stalls.push(thread::spawn(move || {
                            if trickle {
                                stream::trickle(to, &mut r, &tally);
                            } else {
                                stream::half(to, &mut r, &tally);
                            }
                        }));
                    }
                }
                if !flooded && start.elapsed() > Duration::from_secs(10) {
                    flooded = true;
                    stream::flood(to, flood, &tally);
                }
                thread::sleep(Duration::from_millis(100));
            }
            for h in stalls {
                let _ = h.join();
            }
        }));
    }
    handles
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.nodes.is_empty() || args.rate == 0 {
        bail!("give --node at least once and a --rate above 0");
    }
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let stop = Arc::new(AtomicBool::new(false));
    let cap = Arc::new(Mutex::new(Capture::default()));
    let raw = PacketSocket::open(&args.iface)
        .with_context(|| format!("cannot open a packet socket on {}", args.iface))?;
    let raw = Arc::new(raw);
    let capture = {
        let (raw, cap, stop, nodes, port) = (
            raw.clone(),
            cap.clone(),
            stop.clone(),
            args.nodes.clone(),
            args.port,
        );
        thread::spawn(move || capture_loop(&raw, port, &nodes, &cap, &stop))
    };

    let tally = Arc::new(Mutex::new(stream::Tally::default()));
    let mut tcp_targets = Vec::new();
    for node in &args.nodes {
        for port in std::iter::once(args.port).chain(args.tcp_ports.iter().copied()) {
            tcp_targets.push(SocketAddr::from((*node, port)));
        }
    }
    let streams = stream_attacks(tcp_targets, args.flood, until, &tally);

    let sock = UdpSocket::bind(SocketAddrV4::new(args.from, args.port))
        .with_context(|| format!("cannot bind {}:{}", args.from, args.port))?;
    sock.set_broadcast(true)?;
    let mut rng = Rng::new(seed());
    let key: [u8; 32] = rng.bytes(32).try_into().unwrap_or([0x5a; 32]);
    let mut udp = Udp {
        args: &args,
        sock,
        raw: Some(&raw),
        cap: &cap,
        book: Book::default(),
        rng,
        key,
        ident: 0,
    };
    // Let the capture gather genuine traffic for a moment before the kinds that need it.
    thread::sleep(Duration::from_secs(2));
    let every = Duration::from_secs(1) / args.rate;
    let mut next = Instant::now();
    let mut sent = 0u64;
    while Instant::now() < until {
        let kind = SCHEDULE[udp.rng.range(0, SCHEDULE.len() - 1)];
        udp.one(kind);
        sent += 1;
        next += every;
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        } else if now - next > Duration::from_millis(200) {
            next = now; // fell behind: do not burst to catch up
        }
    }
    let book = std::mem::take(&mut udp.book);
    drop(udp);
    for h in streams {
        let _ = h.join();
    }
    stop.store(true, Ordering::Relaxed);
    let _ = capture.join();

    let cap = cap.lock().map_err(|_| anyhow::anyhow!("capture lock poisoned"))?;
    let tally = tally.lock().map_err(|_| anyhow::anyhow!("tally lock poisoned"))?;
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "clump-attacker: {:.1} s, {sent} UDP datagrams ({} send errors), {} genuine datagrams captured, {} node MACs learnt",
        elapsed,
        book.send_errors,
        cap.total,
        cap.macs.len()
    );
    let mut by_kind: BTreeMap<&str, u64> = BTreeMap::new();
    for ((_, kind), n) in &book.sent {
        *by_kind.entry(kind).or_insert(0) += n;
    }
    for ((_, kind), n) in &tally.connected {
        *by_kind.entry(kind).or_insert(0) += n;
    }
    for (kind, n) in &by_kind {
        eprintln!("  {kind:<28} {n:>7}");
    }
    eprintln!(
        "  tcp connects failed {}, stalled connections the nodes never closed {}, longest held {:?}",
        tally.failed,
        tally.never_closed,
        tally.held_max.values().max().copied().unwrap_or_default()
    );
    let report = json!({
        "seconds": elapsed,
        "udp_sent": sent,
        "send_errors": book.send_errors,
        "captured": cap.total,
        "macs": cap.macs.len(),
        "sent": book.sent.iter().map(|((to, kind), n)| json!({"to": to, "kind": kind, "count": n})).collect::<Vec<_>>(),
        "by_kind": by_kind,
        "certain": book.certain.iter().map(|(node, c)| (node.to_string(), json!(c))).collect::<serde_json::Map<_, _>>(),
        "tcp": {
            "connected": tally.connected.iter().map(|((to, kind), n)| json!({"to": to.to_string(), "kind": kind, "count": n})).collect::<Vec<_>>(),
            "failed": tally.failed,
            "never_closed": tally.never_closed,
            "held_max_ms": tally.held_max.iter().map(|(to, d)| (to.to_string(), json!(d.as_millis() as u64))).collect::<serde_json::Map<_, _>>(),
        },
    });
    println!("{report}");
    Ok(())
}
