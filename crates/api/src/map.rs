//! The node map: what `clumpd` knows about the cluster, as `/run/clump/nodes.json` holds it and the
//! `nodes` request returns it (ARCHITECTURE.md, "Files").
//!
//! Readers are forward compatible: unknown fields are ignored, missing lists and counters read as
//! empty or zero, and an enum value this build does not know reads as `Unknown` instead of failing
//! the whole map, so an older `clump` still shows a newer daemon's map.

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// The `version` field this build writes.
pub const MAP_VERSION: u32 = 1;

/// Where `clumpd` publishes the node map (rewritten atomically on every change and at least every second).
pub const NODES_FILE: &str = "/run/clump/nodes.json";

/// The whole node map.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct NodeMap {
    /// Always [`MAP_VERSION`] for this shape.
    pub version: u32,
    /// Where this node stands in the cluster.
    pub state: MapState,
    /// This node's id (32 hex digits); null before the id is known.
    pub this: Option<String>,
    /// The cluster key's fingerprint (8 hex digits, safe to show); null without a key.
    pub key_fingerprint: Option<String>,
    /// The UDP port of the cluster protocol.
    pub port: u16,
    /// When the map was written (unix ms).
    pub updated_ms: u64,
    /// Every node known, this one included.
    #[serde(default)]
    pub nodes: Vec<NodeEntry>,
    /// Addresses whose Clump datagrams fail authentication (another cluster key): "refused".
    #[serde(default)]
    pub foreign: Vec<Foreign>,
    /// Datagrams dropped on receipt, by reason.
    #[serde(default)]
    pub dropped: Dropped,
}

/// Where this node stands in the cluster.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum MapState {
    /// Has a key and a lease, looking for other nodes.
    Joining,
    /// A member of a cluster of more than one node.
    Joined,
    /// Looked and found no other node with this key.
    Alone,
    /// No cluster key: `clumpd` does not join.
    NoKey,
    /// No network lease yet.
    NoLease,
    /// A state this build does not know (written by a newer `clumpd`); never written.
    #[serde(other)]
    Unknown,
}

/// One node as this node sees it. Fields not known yet are null.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct NodeEntry {
    /// Node id, 32 hex digits.
    pub id: String,
    /// Node number: the host part of the address within its subnet (10.0.0.12/24 → 12).
    pub number: Option<u32>,
    pub address: Option<Ipv4Addr>,
    pub prefix_len: Option<u8>,
    /// MAC of the cluster interface, "52:54:00:12:34:56".
    pub mac: Option<String>,
    pub hostname: Option<String>,
    pub cores: Option<u32>,
    /// Measured (or set) CPU speed; bigger is faster.
    pub speed: Option<u32>,
    pub mem_total_kib: Option<u64>,
    pub mem_free_kib: Option<u64>,
    /// Load normalised to speed, in thousandths (870 = 0.87).
    pub load: Option<u32>,
    /// Runnable processes, averaged, in thousandths.
    pub runnable: Option<u32>,
    /// Clump jobs running on the node.
    pub jobs: Option<u32>,
    pub migrations_in: Option<u64>,
    pub migrations_out: Option<u64>,
    /// The Clump version the node runs.
    pub version: Option<String>,
    pub state: NodeState,
    /// When this node last heard from it (unix ms, 0 = never).
    pub last_seen_ms: u64,
    /// It takes no guest jobs now: blocked (`clump node block`), outside its after-hours
    /// window, draining or leaving.
    #[serde(default)]
    pub blocked: bool,
    /// Conflicts are flagged, never merged.
    #[serde(default)]
    pub conflicts: Vec<Conflict>,
}

impl NodeEntry {
    /// A node of which only the id and state are known (every other field null).
    pub fn unknown(id: String, state: NodeState) -> NodeEntry {
        NodeEntry {
            id,
            number: None,
            address: None,
            prefix_len: None,
            mac: None,
            hostname: None,
            cores: None,
            speed: None,
            mem_total_kib: None,
            mem_free_kib: None,
            load: None,
            runnable: None,
            jobs: None,
            migrations_in: None,
            migrations_out: None,
            version: None,
            state,
            last_seen_ms: 0,
            blocked: false,
            conflicts: Vec::new(),
        }
    }
}

/// Membership state of one node.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum NodeState {
    /// This node (`"self"` in JSON; `self` is a keyword in Rust).
    #[serde(rename = "self")]
    This,
    Alive,
    /// Missed its probes; not declared dead yet.
    Suspect,
    /// Announced it is leaving.
    Leaving,
    Dead,
    /// Left in order.
    Left,
    /// A state this build does not know (written by a newer `clumpd`); never written.
    #[serde(other)]
    Unknown,
}

impl NodeMap {
    /// The nodes that are up: this one and those alive (suspect, leaving, dead and left are not
    /// counted in the cluster's figures).
    pub fn alive(&self) -> impl Iterator<Item = &NodeEntry> {
        self.nodes
            .iter()
            .filter(|n| matches!(n.state, NodeState::This | NodeState::Alive))
    }

    /// The node a user means by `name`: its number, hostname or address. Numbers first, so a
    /// hostname that looks like a number cannot shadow one.
    pub fn resolve(&self, name: &str) -> Option<&NodeEntry> {
        let name = name.trim();
        if let Ok(n) = name.parse::<u32>() {
            return self.nodes.iter().find(|e| e.number == Some(n));
        }
        if let Ok(a) = name.parse::<std::net::Ipv4Addr>() {
            return self.nodes.iter().find(|e| e.address == Some(a));
        }
        self.nodes.iter().find(|e| e.hostname.as_deref() == Some(name))
    }

    /// The load of the cluster taken as one machine, in the nodes' unit (thousandths, speed
    /// 1000 per core): a node's load is its runnable work scaled by 10^6 / (cores × speed), so its
    /// work is load × cores × speed, and the cluster's load is the sum of the work over the sum of
    /// the capacity. `None` until a node up reports load, cores and speed.
    pub fn cluster_load(&self) -> Option<u32> {
        let (mut work, mut capacity) = (0u128, 0u128);
        for n in self.alive() {
            if let (Some(load), Some(cores), Some(speed)) = (n.load, n.cores, n.speed) {
                let c = u128::from(cores.max(1)) * u128::from(speed.max(1));
                work += u128::from(load) * c;
                capacity += c;
            }
        }
        (capacity > 0).then(|| u32::try_from((work + capacity / 2) / capacity).unwrap_or(u32::MAX))
    }
}

impl NodeState {
    /// States that count as members (in `mosix.map` and the "alive" figures).
    pub fn is_member(self) -> bool {
        matches!(
            self,
            NodeState::This | NodeState::Alive | NodeState::Suspect | NodeState::Leaving
        )
    }

    /// The word for this state in JSON and on screens.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::This => "self",
            NodeState::Alive => "alive",
            NodeState::Suspect => "suspect",
            NodeState::Leaving => "leaving",
            NodeState::Dead => "dead",
            NodeState::Left => "left",
            NodeState::Unknown => "unknown",
        }
    }
}

/// Two nodes that claim what only one may have.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Conflict {
    /// Two live instances claim one id.
    DuplicateId,
    /// Two ids, one MAC.
    DuplicateMac,
    /// Two ids, one address.
    DuplicateAddress,
    /// A conflict this build does not know (written by a newer `clumpd`); never written.
    #[serde(other)]
    Unknown,
}

impl Conflict {
    /// The conflict in words, for screens.
    pub fn describe(self) -> &'static str {
        match self {
            Conflict::DuplicateId => "duplicate id",
            Conflict::DuplicateMac => "duplicate MAC",
            Conflict::DuplicateAddress => "duplicate address",
            Conflict::Unknown => "conflict",
        }
    }
}

/// An address whose Clump datagrams fail authentication.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Foreign {
    pub address: Ipv4Addr,
    /// Datagrams refused from it.
    pub dropped: u64,
    /// When the last one came (unix ms).
    pub last_ms: u64,
}

/// Datagrams dropped on receipt, one counter per check of the seal (ARCHITECTURE.md, "Sealed
/// datagram") plus `malformed` for authentic datagrams whose content does not decode.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(default)]
pub struct Dropped {
    pub too_short: u64,
    pub too_large: u64,
    pub not_clump: u64,
    pub version: u64,
    pub auth: u64,
    pub replay: u64,
    pub malformed: u64,
}

impl Dropped {
    /// All drops together.
    pub fn total(&self) -> u64 {
        [
            self.too_short,
            self.too_large,
            self.not_clump,
            self.version,
            self.auth,
            self.replay,
            self.malformed,
        ]
        .iter()
        .fold(0u64, |a, b| a.saturating_add(*b))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A map with one node of each kind a screen must show: this node, a live one, a suspect with
    /// nothing known yet, a dead one, and two that conflict.
    pub(crate) fn fixture() -> NodeMap {
        let node = |n: u8, state: NodeState| NodeEntry {
            id: format!("{n:032x}"),
            number: Some(u32::from(n)),
            address: Some(Ipv4Addr::new(10, 0, 0, n)),
            prefix_len: Some(24),
            mac: Some(format!("52:54:00:12:34:{n:02x}")),
            hostname: Some(format!("node-{n}")),
            cores: Some(4),
            speed: Some(12000),
            mem_total_kib: Some(16 * 1024 * 1024),
            mem_free_kib: Some(12 * 1024 * 1024),
            load: Some(870),
            runnable: Some(1200),
            jobs: Some(3),
            migrations_in: Some(10),
            migrations_out: Some(2),
            version: Some("0.1.0".into()),
            state,
            last_seen_ms: 1_000_000,
            blocked: false,
            conflicts: vec![],
        };
        let mut small = node(2, NodeState::Alive);
        small.mem_total_kib = Some(1000 * 1024);
        small.mem_free_kib = Some(200 * 1024);
        small.cores = Some(2);
        small.load = Some(5);
        small.last_seen_ms = 997_000;
        let suspect = NodeEntry {
            number: Some(3),
            address: Some(Ipv4Addr::new(10, 0, 0, 3)),
            last_seen_ms: 988_000,
            blocked: false,
            ..NodeEntry::unknown("3".repeat(32), NodeState::Suspect)
        };
        let mut dead = node(5, NodeState::Dead);
        dead.last_seen_ms = 1_000_000 - 180_000;
        let mut twin_a = node(12, NodeState::Alive);
        twin_a.conflicts = vec![Conflict::DuplicateAddress];
        let mut twin_b = node(12, NodeState::Alive);
        twin_b.id = "c".repeat(32);
        twin_b.mac = Some("52:54:00:aa:bb:cc".into());
        twin_b.hostname = Some("intruder".into());
        twin_b.conflicts = vec![Conflict::DuplicateAddress];
        NodeMap {
            version: MAP_VERSION,
            state: MapState::Joined,
            this: Some(format!("{:032x}", 1)),
            key_fingerprint: Some("1a2b3c4d".into()),
            port: 7171,
            updated_ms: 1_000_000,
            nodes: vec![node(1, NodeState::This), small, suspect, dead, twin_a, twin_b],
            foreign: vec![Foreign {
                address: Ipv4Addr::new(10, 0, 0, 9),
                dropped: 12,
                last_ms: 999_000,
            }],
            dropped: Dropped {
                auth: 12,
                replay: 1,
                ..Dropped::default()
            },
        }
    }

    #[test]
    fn json_has_the_documented_shape() {
        let map = fixture();
        let v = serde_json::to_value(&map).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["state"], "joined");
        assert_eq!(v["nodes"][0]["state"], "self");
        assert_eq!(v["nodes"][0]["address"], "10.0.0.1");
        assert_eq!(v["nodes"][0]["mac"], "52:54:00:12:34:01");
        assert_eq!(v["nodes"][2]["hostname"], serde_json::Value::Null);
        assert_eq!(v["nodes"][4]["conflicts"][0], "duplicate-address");
        assert_eq!(v["foreign"][0]["address"], "10.0.0.9");
        assert_eq!(v["dropped"]["too_short"], 0);
        assert_eq!(v["dropped"]["auth"], 12);
        let back: NodeMap = serde_json::from_value(v).unwrap();
        assert_eq!(back, map);
    }

    #[test]
    fn every_state_word_is_the_documented_one() {
        for (state, word) in [
            (MapState::Joining, "joining"),
            (MapState::Joined, "joined"),
            (MapState::Alone, "alone"),
            (MapState::NoKey, "no-key"),
            (MapState::NoLease, "no-lease"),
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), word);
        }
        for s in [
            NodeState::This,
            NodeState::Alive,
            NodeState::Suspect,
            NodeState::Leaving,
            NodeState::Dead,
            NodeState::Left,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for (c, word) in [
            (Conflict::DuplicateId, "duplicate-id"),
            (Conflict::DuplicateMac, "duplicate-mac"),
            (Conflict::DuplicateAddress, "duplicate-address"),
        ] {
            assert_eq!(serde_json::to_value(c).unwrap(), word);
        }
    }

    #[test]
    fn a_newer_daemons_map_still_reads() {
        // Unknown fields, unknown enum values, and lists a newer writer might leave out.
        let text = r#"{"version":1,"state":"federated","this":null,"key_fingerprint":null,"port":7171,
            "updated_ms":5,"gpu_count":2,
            "nodes":[{"id":"ab","number":null,"address":null,"prefix_len":null,"mac":null,
              "hostname":null,"cores":null,"speed":null,"mem_total_kib":null,"mem_free_kib":null,
              "load":null,"runnable":null,"jobs":null,"migrations_in":null,"migrations_out":null,
              "version":null,"state":"hibernating","last_seen_ms":0,"conflicts":["duplicate-gpu"],
              "gpus":[]}],
            "dropped":{"auth":3,"quantum":1}}"#;
        let map: NodeMap = serde_json::from_str(text).unwrap();
        assert_eq!(map.state, MapState::Unknown);
        assert_eq!(map.nodes[0].state, NodeState::Unknown);
        assert_eq!(map.nodes[0].conflicts, vec![Conflict::Unknown]);
        assert!(map.foreign.is_empty());
        assert_eq!(map.dropped.auth, 3);
    }

    #[test]
    fn missing_optional_fields_read_as_null() {
        let text = r#"{"id":"ab","state":"alive","last_seen_ms":1}"#;
        let node: NodeEntry = serde_json::from_str(text).unwrap();
        assert_eq!(
            node,
            NodeEntry::unknown("ab".into(), NodeState::Alive).with_seen(1)
        );
    }

    impl NodeEntry {
        fn with_seen(mut self, ms: u64) -> Self {
            self.last_seen_ms = ms;
            self
        }
    }
}
