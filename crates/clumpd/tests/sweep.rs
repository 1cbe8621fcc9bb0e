//! The ARP sweep on a real link: three network namespaces this test creates and deletes itself
//! (no uplink; nothing reaches the machine's network). "us" sweeps 10.99.0.0/24 over a veth into
//! a bridge namespace that owns two addresses; a third namespace on the same bridge owns one
//! more, watches the frames arrive and injects ARP packets the sweep must ignore. Needs root and
//! `ip`: without them the test fails, it does not skip.

use clump_clumpd::sweep;
use clump_net::arp::{self, Host, Operation};
use clump_net::packet::{PacketSocket, BROADCAST_MAC};
use rustix::event::{PollFd, PollFlags, Timespec};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const US_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xaa, 0x01];
const BRIDGE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xbb, 0x01];
const C_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xcc, 0x01];
const US: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

/// Runs `ip` with `args` split at spaces (no argument here contains one).
fn ip(args: &str) {
    let st = Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .expect("`ip` not found: install iproute2");
    assert!(st.success(), "ip {args} failed");
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The namespaces of one test; dropping it (also while a failed assertion unwinds) deletes
/// them and with them every interface inside.
struct Lab {
    us: String,
    bridge: String,
    other: String,
    created: Vec<String>,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test creates network namespaces: run as root"
        );
        let id = format!("{}{tag}", std::process::id());
        let mut lab = Lab {
            us: format!("clump-sw-us{id}"),
            bridge: format!("clump-sw-br{id}"),
            other: format!("clump-sw-c{id}"),
            created: Vec::new(),
        };
        for ns in [lab.us.clone(), lab.bridge.clone(), lab.other.clone()] {
            ip(&format!("netns add {ns}"));
            lab.created.push(ns);
        }
        let (us, br, c) = (&lab.us, &lab.bridge, &lab.other);
        let (us_mac, br_mac, c_mac) = (mac_text(US_MAC), mac_text(BRIDGE_MAC), mac_text(C_MAC));
        // Every link is created inside a namespace: nothing ever appears in the host's.
        ip(&format!("-n {br} link add br0 address {br_mac} type bridge"));
        ip(&format!(
            "-n {us} link add vus address {us_mac} type veth peer name vb1 netns {br}"
        ));
        ip(&format!(
            "-n {c} link add vc address {c_mac} type veth peer name vb2 netns {br}"
        ));
        for port in ["vb1", "vb2"] {
            ip(&format!("-n {br} link set {port} master br0 up"));
        }
        ip(&format!("-n {br} addr add 10.99.0.5/24 dev br0"));
        ip(&format!("-n {br} addr add 10.99.0.77/24 dev br0"));
        ip(&format!("-n {br} link set br0 up"));
        ip(&format!("-n {us} addr add 10.99.0.1/24 dev vus"));
        ip(&format!("-n {us} link set vus up"));
        ip(&format!("-n {c} addr add 10.99.0.200/24 dev vc"));
        // Another subnet on the same wire: never asked, so never found.
        ip(&format!("-n {c} addr add 10.98.0.9/24 dev vc"));
        ip(&format!("-n {c} link set vc up"));
        lab
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in &self.created {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Moves the calling thread (only) into `ns`; panics rather than go on in the host's.
fn enter(ns: &str) {
    let f = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns file");
    rustix::thread::move_into_link_name_space(f.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
        .expect("setns");
}

/// ARP requests from `US_MAC` seen on `vc` in the other namespace, with arrival times. When the
/// first arrives it injects packets the sweep must not report: a reply from outside the subnet
/// and a request from an address that does not otherwise exist.
fn watch(ns: String, stop: Arc<AtomicBool>) -> Vec<(Instant, Ipv4Addr)> {
    enter(&ns);
    let sock =
        PacketSocket::arp(sweep::ifindex("vc").expect("vc in the other namespace")).expect("ARP socket");
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 2048];
    let mut injected = false;
    while !stop.load(Ordering::SeqCst) {
        let ts = Timespec {
            tv_sec: 0,
            tv_nsec: 20_000_000,
        };
        let mut fds = [PollFd::new(&sock, PollFlags::IN)];
        let _ = rustix::event::poll(&mut fds, Some(&ts));
        while let Ok(Some(packet)) = sock.recv(&mut buf) {
            let at = Instant::now();
            let Some(m) = arp::Message::parse(packet) else {
                continue;
            };
            if m.sender_mac != US_MAC || m.operation != Operation::Request {
                continue;
            }
            seen.push((at, m.target_ip));
            if !injected {
                injected = true;
                let outside = arp::reply(C_MAC, Ipv4Addr::new(10, 98, 0, 9), US_MAC, US);
                let request = arp::request(C_MAC, Ipv4Addr::new(10, 99, 0, 201), US);
                sock.send_to(&outside, US_MAC).expect("inject");
                sock.send_to(&request, BROADCAST_MAC).expect("inject");
            }
        }
    }
    seen
}

struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn finds_exactly_the_live_addresses_at_the_configured_rate() {
    let lab = Lab::new("a");
    // Let the links come up (carrier on both veth ends, bridge ports forwarding).
    std::thread::sleep(Duration::from_millis(300));
    let stop = Arc::new(AtomicBool::new(false));
    // Stops the watcher however this test ends.
    let stopper = StopOnDrop(stop.clone());
    let watcher = {
        let (ns, stop) = (lab.other.clone(), stop.clone());
        std::thread::spawn(move || watch(ns, stop))
    };
    std::thread::sleep(Duration::from_millis(100));

    const RATE: u32 = 200;
    let linger = Duration::from_millis(300);
    let us_ns = lab.us.clone();
    let (full, took, capped) = std::thread::spawn(move || {
        enter(&us_ns);
        let ifindex = sweep::ifindex("vus").expect("vus in our namespace");
        let start = Instant::now();
        let full = sweep::run(ifindex, US_MAC, US, 24, 1024, RATE, linger).expect("sweep");
        let took = start.elapsed();
        // A cap of 10 asks .2 to .11 only.
        let capped = sweep::run(ifindex, US_MAC, US, 24, 10, 1000, linger).expect("capped sweep");
        (full, took, capped)
    })
    .join()
    .expect("sweep thread");
    drop(stopper);
    let seen = watcher.join().expect("watcher thread");

    let found: BTreeSet<(Ipv4Addr, [u8; 6])> = full.iter().map(|h| (h.addr, h.mac)).collect();
    let expected: BTreeSet<(Ipv4Addr, [u8; 6])> = [
        (Ipv4Addr::new(10, 99, 0, 5), BRIDGE_MAC),
        (Ipv4Addr::new(10, 99, 0, 77), BRIDGE_MAC),
        (Ipv4Addr::new(10, 99, 0, 200), C_MAC),
    ]
    .into();
    assert_eq!(found, expected, "found {full:?}");
    assert_eq!(found.len(), full.len(), "each host once");
    assert_eq!(
        capped,
        [Host {
            addr: Ipv4Addr::new(10, 99, 0, 5),
            mac: BRIDGE_MAC
        }]
    );

    // On the wire: 253 frames, one per host address but ours, neighbours first, then the 10 of
    // the capped sweep.
    assert_eq!(seen.len(), 253 + 10, "frames seen by the other namespace");
    let (first, second) = seen.split_at(253);
    let targets: Vec<Ipv4Addr> = first.iter().map(|(_, t)| *t).collect();
    let expected_order: Vec<Ipv4Addr> = (2..=254).map(|d| Ipv4Addr::new(10, 99, 0, d)).collect();
    assert_eq!(targets, expected_order);
    let capped_targets: Vec<Ipv4Addr> = second.iter().map(|(_, t)| *t).collect();
    assert_eq!(
        capped_targets,
        (2..=11).map(|d| Ipv4Addr::new(10, 99, 0, d)).collect::<Vec<_>>()
    );

    // The rate: never more than RATE frames in any second (arrival times jitter by a few ms),
    // and not much slower than asked.
    let jitter = Duration::from_millis(20);
    for (k, (t, _)) in first.iter().enumerate() {
        if let Some((later, _)) = first.get(k + RATE as usize) {
            assert!(
                *later - *t + jitter >= Duration::from_secs(1),
                "{} frames within {:?}",
                RATE + 1,
                *later - *t
            );
        }
    }
    let span = first[252].0 - first[0].0;
    let ideal = Duration::from_secs(252) / RATE;
    assert!(
        span + jitter >= ideal,
        "253 frames in {span:?}, faster than {RATE}/s"
    );
    assert!(
        span <= ideal * 2,
        "253 frames in {span:?}, far slower than {RATE}/s"
    );
    assert!(
        took >= ideal + linger,
        "run returned after {took:?}, before the linger was over"
    );
    drop(lab);
}
