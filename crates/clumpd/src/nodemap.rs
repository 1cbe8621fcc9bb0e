//! The node map as people and tools read it: `clump_api::NodeMap` from the membership core's view,
//! written to `/run/clump/nodes.json` and `/etc/clump/mosix.map`.

use clump_api::{Conflict, Dropped, Foreign, MapState, NodeEntry, NodeMap, NodeState};
use clump_cluster::{Cluster, ConflictKind, Counters, MemberView, ViewState};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// Turns our monotonic clock into wall-clock milliseconds for people.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub mono: Duration,
    pub unix_ms: u64,
}

impl Clock {
    pub fn unix_ms_at(&self, t: Duration) -> u64 {
        let ago = self.mono.saturating_sub(t).as_millis() as u64;
        self.unix_ms.saturating_sub(ago)
    }
}

pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `subnet` is this node's (address, prefix length): a member heard of before its record arrived
/// is numbered by it when its address is in the same subnet, so it never shows without a number.
fn entry(row: &MemberView, clock: Clock, subnet: Option<(std::net::Ipv4Addr, u8)>) -> NodeEntry {
    let state = match row.state {
        ViewState::This => NodeState::This,
        ViewState::Alive => NodeState::Alive,
        ViewState::Suspect => NodeState::Suspect,
        ViewState::Leaving => NodeState::Leaving,
        ViewState::Dead => NodeState::Dead,
        ViewState::Left => NodeState::Left,
    };
    let mut e = NodeEntry::unknown(row.id.to_string(), state);
    e.last_seen_ms = match row.last_seen {
        None => clock.unix_ms,
        Some(t) => clock.unix_ms_at(t),
    };
    e.conflicts = row
        .conflicts
        .iter()
        .map(|c| match c {
            ConflictKind::DuplicateId => Conflict::DuplicateId,
            ConflictKind::DuplicateMac => Conflict::DuplicateMac,
            ConflictKind::DuplicateAddress => Conflict::DuplicateAddress,
        })
        .collect();
    if let Some(member) = row.member {
        let addr = *member.addr.ip();
        e.address = Some(addr);
        if let Some((own, prefix)) = subnet {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            if u32::from(own) & mask == u32::from(addr) & mask {
                e.number = Some(u32::from(addr) & !mask);
                e.prefix_len = Some(prefix);
            }
        }
    }
    if let Some(r) = &row.record {
        e.number = Some(r.number());
        e.address = Some(r.addr);
        e.prefix_len = Some(r.prefix_len);
        e.mac = Some(format_mac(r.mac));
        e.hostname = Some(r.hostname.clone());
        e.cores = Some(r.cores);
        e.speed = (r.speed > 0).then_some(r.speed);
        e.mem_total_kib = Some(r.mem_total_kib);
        e.mem_free_kib = Some(r.mem_free_kib);
        e.load = Some(r.load);
        e.runnable = Some(r.runnable);
        e.jobs = Some(r.jobs);
        e.migrations_in = Some(r.migrations_in);
        e.migrations_out = Some(r.migrations_out);
        e.version = Some(r.version.clone());
        e.blocked = !r.accepts_guests();
    }
    e
}

pub fn dropped(c: &Counters) -> Dropped {
    Dropped {
        too_short: c.too_short,
        too_large: c.too_large,
        not_clump: c.not_clump,
        version: c.version,
        auth: c.auth,
        replay: c.replay,
        malformed: c.malformed,
    }
}

pub fn build(cluster: &Cluster, fingerprint: &str, port: u16, clock: Clock) -> NodeMap {
    let view = cluster.view();
    let subnet = view
        .iter()
        .find(|row| row.state == ViewState::This)
        .and_then(|row| row.record.as_ref())
        .map(|r| (r.addr, r.prefix_len))
        .filter(|&(_, prefix)| (1..=31).contains(&prefix));
    let mut nodes: Vec<NodeEntry> = view.iter().map(|row| entry(row, clock, subnet)).collect();
    nodes.sort_by(|a, b| (a.number, &a.id).cmp(&(b.number, &b.id)));
    let mut foreign: Vec<Foreign> = cluster
        .foreign()
        .map(|(addr, f)| Foreign {
            address: *addr,
            dropped: f.dropped,
            last_ms: clock.unix_ms_at(f.last),
        })
        .collect();
    foreign.sort_by_key(|f| f.address);
    NodeMap {
        version: clump_api::MAP_VERSION,
        state: if cluster.is_joined() {
            MapState::Joined
        } else if cluster.is_alone() {
            MapState::Alone
        } else {
            MapState::Joining
        },
        this: Some(cluster.me().id.to_string()),
        key_fingerprint: Some(fingerprint.to_string()),
        port,
        updated_ms: clock.unix_ms,
        nodes,
        foreign,
        dropped: dropped(cluster.counters()),
    }
}

/// A map before the cluster runs: no key, or no lease yet.
pub fn without_cluster(state: MapState, port: u16, clock: Clock) -> NodeMap {
    NodeMap {
        version: clump_api::MAP_VERSION,
        state,
        this: None,
        key_fingerprint: None,
        port,
        updated_ms: clock.unix_ms,
        nodes: Vec::new(),
        foreign: Vec::new(),
        dropped: Dropped::default(),
    }
}

/// Replaces `path` atomically, so a reader never sees half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(tmp, path)
}

pub fn write_files(map: &NodeMap, nodes_json: &Path, mosix_map: &Path) -> std::io::Result<()> {
    let mut json = serde_json::to_vec_pretty(map).map_err(std::io::Error::other)?;
    json.push(b'\n');
    write_atomic(nodes_json, &json)?;
    write_atomic(mosix_map, clump_api::mosix_map::render(&map.nodes).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_converts_back_in_time() {
        let clock = Clock {
            mono: Duration::from_secs(100),
            unix_ms: 1_000_000,
        };
        assert_eq!(clock.unix_ms_at(Duration::from_secs(99)), 999_000);
        assert_eq!(clock.unix_ms_at(Duration::from_secs(200)), 1_000_000);
    }

    #[test]
    fn mac_format() {
        assert_eq!(format_mac([0x52, 0x54, 0, 0xab, 1, 2]), "52:54:00:ab:01:02");
    }

    #[test]
    fn a_member_without_a_record_yet_is_numbered_in_our_subnet_only() {
        use clump_cluster::{Member, NodeId};
        use std::net::{Ipv4Addr, SocketAddrV4};
        let clock = Clock {
            mono: Duration::from_secs(1),
            unix_ms: 1_000_000,
        };
        let row = |addr: Ipv4Addr| MemberView {
            member: Some(Member {
                addr: SocketAddrV4::new(addr, 7171),
                id: NodeId([7; 16]),
                gen: 1,
            }),
            id: NodeId([7; 16]),
            state: ViewState::Alive,
            record: None,
            last_seen: Some(Duration::ZERO),
            conflicts: Vec::new(),
        };
        let subnet = Some((Ipv4Addr::new(10, 1, 2, 3), 24));
        let e = entry(&row(Ipv4Addr::new(10, 1, 2, 133)), clock, subnet);
        assert_eq!((e.number, e.prefix_len), (Some(133), Some(24)));
        let e = entry(&row(Ipv4Addr::new(10, 9, 2, 133)), clock, subnet);
        assert_eq!(e.number, None, "another subnet: its prefix is not ours to assume");
        assert_eq!(
            entry(&row(Ipv4Addr::new(10, 1, 2, 133)), clock, None).number,
            None
        );
    }
}
