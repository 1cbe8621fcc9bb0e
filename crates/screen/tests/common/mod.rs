//! Deterministic views for the golden images and the layout checks: fixed numbers, a few suspect,
//! dead, leaving and left nodes, one with nothing known, one conflict, one "this".
#![allow(dead_code)]

use clump_api::{Conflict, Event, EventKind, MapState, NodeEntry, NodeMap, NodeState, Stats, MAP_VERSION};
use clump_screen::{BootStage, Phase, StageStatus, View};
use std::net::Ipv4Addr;

/// 2025-10-09 08:53:20 UTC.
pub const NOW_MS: u64 = 1_760_000_000_000;
const GIB: u64 = 1024 * 1024;

/// The node numbered `i` (1-based) of a synthetic cluster; node 3 (or 1 in a smaller one) is this.
pub fn node(i: u32, n: u32) -> NodeEntry {
    let this = if n >= 3 { 3 } else { 1 };
    let state = if i == this {
        NodeState::This
    } else if i % 9 == 2 {
        NodeState::Suspect
    } else if i % 11 == 5 {
        NodeState::Dead
    } else if i % 13 == 7 {
        NodeState::Leaving
    } else if i % 29 == 10 {
        NodeState::Left
    } else {
        NodeState::Alive
    };
    let address = Ipv4Addr::new(
        10,
        0,
        u8::try_from(i / 256).expect("small"),
        u8::try_from(i % 256).expect("byte"),
    );
    if i % 17 == 8 {
        // Heard of, nothing known yet.
        return NodeEntry {
            number: Some(i),
            address: Some(address),
            ..NodeEntry::unknown(format!("{i:032x}"), state)
        };
    }
    let total = [4, 8, 16, 64][i as usize % 4] * GIB;
    let hostname = if i % 7 == 4 {
        format!("build-server-with-a-very-long-hostname-{i}")
    } else {
        format!("node-{i:03}")
    };
    NodeEntry {
        id: format!("{i:032x}"),
        number: Some(i),
        address: Some(address),
        prefix_len: Some(24),
        mac: Some(format!("52:54:00:12:{:02x}:{:02x}", i / 256, i % 256)),
        hostname: Some(hostname),
        cores: Some([2, 4, 8, 16][i as usize % 4]),
        speed: Some(8000 + (i * 731) % 9000),
        mem_total_kib: Some(total),
        mem_free_kib: Some(total * u64::from((i * 37) % 90 + 5) / 100),
        load: Some((i * 173) % 1400),
        runnable: Some(1000),
        jobs: Some(i % 5),
        migrations_in: Some(u64::from(i * 3 % 50)),
        migrations_out: Some(u64::from(i * 7 % 40)),
        version: Some("0.1.0".into()),
        state,
        last_seen_ms: NOW_MS - u64::from(i) * 1000,
        blocked: false,
        conflicts: if i == 6 {
            vec![Conflict::DuplicateAddress]
        } else {
            vec![]
        },
    }
}

pub fn map(n: u32) -> NodeMap {
    // Listed out of order, as a map may be: the screen sorts.
    let mut nodes: Vec<NodeEntry> = (1..=n).rev().map(|i| node(i, n)).collect();
    let third = nodes.len() / 3;
    nodes.rotate_left(third);
    NodeMap {
        version: MAP_VERSION,
        state: if n > 1 { MapState::Joined } else { MapState::Alone },
        this: Some(format!("{:032x}", if n >= 3 { 3 } else { 1 })),
        key_fingerprint: Some("1a2b3c4d".into()),
        port: 7171,
        updated_ms: NOW_MS,
        nodes,
        foreign: vec![],
        dropped: Default::default(),
    }
}

fn event(seq: u64, ago_s: u64, kind: EventKind, number: Option<u32>, text: &str) -> Event {
    Event {
        seq,
        time_ms: NOW_MS - ago_s * 1000,
        kind,
        node: None,
        number,
        address: number.map(|n| Ipv4Addr::new(10, 0, 0, u8::try_from(n).unwrap_or(0))),
        text: text.to_owned(),
    }
}

pub fn events() -> Vec<Event> {
    vec![
        event(1, 3605, EventKind::JoinedCluster, None, "joined cluster lab (12 members)"),
        event(2, 1800, EventKind::NodeJoined, Some(12), "node 12 (10.0.0.12) joined"),
        event(3, 600, EventKind::NodeSuspect, Some(2), "node 2 (10.0.0.2) is suspect: missed its probes"),
        event(4, 300, EventKind::NodeDead, Some(5), "node 5 (10.0.0.5) is dead"),
        event(
            5,
            61,
            EventKind::Refused,
            None,
            "refused datagrams from 10.0.0.99: 12 failed authentication (a different cluster key?) and this line is long enough to be cut at any width",
        ),
        event(6, 2, EventKind::Conflict, Some(6), "node 6: duplicate address 10.0.0.6"),
    ]
}

/// The cluster screen of a synthetic cluster of `n` nodes.
pub fn cluster_view(n: u32) -> View {
    let map = map(n);
    let members = map.nodes.iter().filter(|e| e.state.is_member()).count() as u64;
    View {
        cluster: "lab".into(),
        stats: Some(Stats {
            uptime_ms: 12_312_000,
            members,
            conflicts: u64::from(n >= 6),
            ..Stats::default()
        }),
        map: Some(map),
        events: events(),
        address: "10.0.0.3/24".into(),
        lease: "bound".into(),
        uptime_ms: 12_312_000,
        jobs: None,
        migrations_per_min: Some(12),
        now_ms: NOW_MS,
        notice: (n == 4).then(|| "Press Esc again within 5 s to power off this node".to_owned()),
        phase: Phase::Cluster,
    }
}

pub fn boot_view() -> View {
    let stage = |name: &str, status, detail: &str| BootStage {
        name: name.into(),
        status,
        detail: detail.into(),
    };
    View {
        cluster: String::new(),
        map: None,
        stats: None,
        events: vec![],
        address: "no address".into(),
        lease: "none".into(),
        uptime_ms: 9_000,
        jobs: None,
        migrations_per_min: None,
        now_ms: NOW_MS,
        notice: Some("No cluster key: this node joins nothing".into()),
        phase: Phase::Boot(vec![
            stage("hardware", StageStatus::Done, "4 cores, 15.6 GiB, 2 NICs"),
            stage(
                "Network card",
                StageStatus::Done,
                "eth0 52:54:00:12:34:56 link up 1000 Mb/s",
            ),
            stage(
                "lease",
                StageStatus::Running,
                "DHCP discover on eth0, attempt 3 (waiting for an answer from any server)",
            ),
            stage(
                "key",
                StageStatus::Failed,
                "no clump.key= and no /etc/clump/cluster.key",
            ),
            stage("probe", StageStatus::Pending, ""),
            stage("runtime", StageStatus::Pending, "clumpd"),
        ]),
    }
}
