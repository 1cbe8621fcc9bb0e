//! Figures `clump mon` draws, computed from the node map: the order of the rows, the words for
//! states, the cluster's load, and how full each bar is.

use clump_api::{NodeEntry, NodeMap, NodeState};

/// Load 1000 (1.00): every core runs one task at the reference speed (`clumpd`'s
/// `sample::normalise`). A bar is at least this long at full scale, so an idle cluster does not
/// look busy because its busiest node fills the bar.
pub const FULL_LOAD: u64 = 1000;

/// The rows in the order `clump nodes` prints them: numbered nodes by number, then by address,
/// then id.
pub fn sorted(map: &NodeMap) -> Vec<&NodeEntry> {
    let mut rows: Vec<&NodeEntry> = map.nodes.iter().collect();
    rows.sort_by_key(|n| (n.number.is_none(), n.number, n.address, n.id.as_str()));
    rows
}

/// The word for a node's state on the screen: "this" for this node (as `clump nodes` says).
pub fn state_word(state: NodeState) -> &'static str {
    match state {
        NodeState::This => "this",
        s => s.as_str(),
    }
}

/// Whether a node's figures are current: a dead or departed node's are only its last words.
pub fn is_current(n: &NodeEntry) -> bool {
    n.state.is_member()
}

/// The header's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// This node and the nodes alive (as `clump nodes` counts them).
    pub alive: usize,
    pub total: usize,
    /// Cores of the nodes alive.
    pub cores: u64,
    /// The cluster's load, normalised as a node's is; `None` until a node alive has load, cores
    /// and speed.
    pub load: Option<u64>,
}

pub fn summary(map: &NodeMap) -> Summary {
    let alive: Vec<&NodeEntry> = map.alive().collect();
    let load = map.cluster_load().map(u64::from);
    Summary {
        alive: alive.len(),
        total: map.nodes.len(),
        cores: alive.iter().filter_map(|n| n.cores).map(u64::from).sum(),
        load,
    }
}

/// The value at full bar for the load view: [`FULL_LOAD`] or the highest current load shown,
/// whichever is bigger, so bars of one screen compare.
pub fn load_scale(rows: &[&NodeEntry]) -> u64 {
    rows.iter()
        .filter(|n| is_current(n))
        .filter_map(|n| n.load)
        .map(u64::from)
        .fold(FULL_LOAD, u64::max)
}

/// The biggest of a figure among current nodes, at least 1 (a bar's full scale).
pub fn max_of(rows: &[&NodeEntry], figure: impl Fn(&NodeEntry) -> Option<u64>) -> u64 {
    rows.iter()
        .filter(|n| is_current(n))
        .filter_map(|n| figure(n))
        .fold(1, u64::max)
}

/// Cells of a bar `width` wide filled for `value` out of `scale`, rounded; a value above zero
/// fills at least one cell, so "a little" is not shown as "nothing".
pub fn filled(value: u64, scale: u64, width: usize) -> usize {
    if value == 0 || width == 0 {
        return 0;
    }
    let w = u128::try_from(width).unwrap_or(u128::MAX);
    let scale = u128::from(scale.max(1));
    let cells = (u128::from(value) * w + scale / 2) / scale;
    usize::try_from(cells).unwrap_or(usize::MAX).clamp(1, width)
}

/// Memory used, KiB: total less free; `None` unless both are known.
pub fn mem_used_kib(n: &NodeEntry) -> Option<u64> {
    Some(n.mem_total_kib?.saturating_sub(n.mem_free_kib?))
}

/// Thousandths as a decimal with two places, rounded: 870 → "0.87".
pub fn milli(v: u64) -> String {
    let centi = (v + 5) / 10;
    format!("{}.{:02}", centi / 100, centi % 100)
}

/// Used and total memory: "800/1000 MiB" below 1 GiB of total, "4.0/16.0 GiB" from there on
/// (as `clump nodes` writes it).
pub fn memory(total_kib: Option<u64>, used_kib: Option<u64>) -> String {
    const GIB: u64 = 1024 * 1024;
    let Some(total) = total_kib else {
        return "-".to_owned();
    };
    let text = |kib: u64| {
        if total >= GIB {
            let t = (u128::from(kib) * 10 + u128::from(GIB / 2)) / u128::from(GIB);
            format!("{}.{}", t / 10, t % 10)
        } else {
            ((kib + 512) / 1024).to_string()
        }
    };
    let unit = if total >= GIB { "GiB" } else { "MiB" };
    format!(
        "{}/{} {unit}",
        used_kib.map_or_else(|| "-".to_owned(), text),
        text(total)
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use clump_api::{MapState, NodeMap};
    use std::net::Ipv4Addr;

    pub(crate) fn node(n: u8, state: NodeState, load: u32, cores: u32, speed: u32) -> NodeEntry {
        NodeEntry {
            number: Some(u32::from(n)),
            address: Some(Ipv4Addr::new(10, 0, 0, n)),
            prefix_len: Some(24),
            hostname: Some(format!("node-{n}")),
            cores: Some(cores),
            speed: Some(speed),
            mem_total_kib: Some(16 * 1024 * 1024),
            mem_free_kib: Some(12 * 1024 * 1024),
            load: Some(load),
            runnable: Some(load),
            jobs: Some(u32::from(n) % 4),
            migrations_in: Some(u64::from(n)),
            migrations_out: Some(1),
            last_seen_ms: 1_000_000,
            blocked: false,
            ..NodeEntry::unknown(format!("{n:032x}"), state)
        }
    }

    pub(crate) fn map(nodes: Vec<NodeEntry>) -> NodeMap {
        NodeMap {
            version: 1,
            state: MapState::Joined,
            this: nodes.first().map(|n| n.id.clone()),
            key_fingerprint: Some("1a2b3c4d".into()),
            port: 7171,
            updated_ms: 1_000_000,
            nodes,
            foreign: vec![],
            dropped: Default::default(),
        }
    }

    #[test]
    fn the_cluster_load_is_its_work_over_its_capacity() {
        // Node 1: 4 cores at 1000, all busy (4 tasks). Node 2: 4 cores at 3000, idle.
        // Together: 4 tasks on 4 × 1000 + 4 × 3000 of capacity = 0.25.
        let m = map(vec![
            node(1, NodeState::This, 1000, 4, 1000),
            node(2, NodeState::Alive, 0, 4, 3000),
            node(3, NodeState::Dead, 5000, 64, 1000),
            NodeEntry::unknown("9".repeat(32), NodeState::Suspect),
        ]);
        assert_eq!(
            summary(&m),
            Summary {
                alive: 2,
                total: 4,
                cores: 8,
                load: Some(250)
            }
        );
        let m = map(vec![NodeEntry::unknown("a".into(), NodeState::This)]);
        assert_eq!(summary(&m).load, None);
        assert_eq!(summary(&map(vec![])).alive, 0);
    }

    #[test]
    fn bars_scale_to_one_per_core_or_the_busiest_node() {
        let idle = [node(1, NodeState::This, 300, 4, 1000)];
        let idle: Vec<&NodeEntry> = idle.iter().collect();
        assert_eq!(load_scale(&idle), FULL_LOAD);
        let busy = [
            node(1, NodeState::This, 300, 4, 1000),
            node(2, NodeState::Alive, 2500, 4, 1000),
            // A dead node's last load does not stretch the scale.
            node(3, NodeState::Dead, 9000, 4, 1000),
        ];
        let busy: Vec<&NodeEntry> = busy.iter().collect();
        assert_eq!(load_scale(&busy), 2500);
        assert_eq!(max_of(&busy, |n| n.speed.map(u64::from)), 1000);
        assert_eq!(max_of(&[], |n| n.speed.map(u64::from)), 1);

        assert_eq!(filled(0, 1000, 40), 0);
        assert_eq!(filled(1, 1000, 40), 1, "a little is not nothing");
        assert_eq!(filled(500, 1000, 40), 20);
        assert_eq!(filled(1000, 1000, 40), 40);
        assert_eq!(filled(2500, 1000, 40), 40, "never past the end");
        assert_eq!(filled(870, 1000, 10), 9);
        assert_eq!(filled(5, 1000, 0), 0);
        assert_eq!(filled(u64::MAX, u64::MAX, usize::MAX), usize::MAX);
        assert_eq!(filled(7, 0, 3), 3, "a zero scale is taken as 1");
    }

    #[test]
    fn rows_are_in_number_order_and_states_have_words() {
        let m = map(vec![
            node(12, NodeState::Alive, 0, 1, 1),
            NodeEntry::unknown("b".into(), NodeState::Suspect),
            node(2, NodeState::This, 0, 1, 1),
        ]);
        let order: Vec<Option<u32>> = sorted(&m).iter().map(|n| n.number).collect();
        assert_eq!(order, [Some(2), Some(12), None]);
        for (state, word) in [
            (NodeState::This, "this"),
            (NodeState::Alive, "alive"),
            (NodeState::Suspect, "suspect"),
            (NodeState::Leaving, "leaving"),
            (NodeState::Dead, "dead"),
            (NodeState::Left, "left"),
            (NodeState::Unknown, "unknown"),
        ] {
            assert_eq!(state_word(state), word);
        }
    }

    #[test]
    fn figures_for_people() {
        assert_eq!(milli(870), "0.87");
        assert_eq!(milli(995), "1.00");
        assert_eq!(milli(0), "0.00");
        assert_eq!(
            memory(Some(16 * 1024 * 1024), Some(4 * 1024 * 1024)),
            "4.0/16.0 GiB"
        );
        assert_eq!(memory(Some(1000 * 1024), Some(800 * 1024)), "800/1000 MiB");
        assert_eq!(memory(Some(1000 * 1024), None), "-/1000 MiB");
        assert_eq!(memory(None, Some(5)), "-");
        let mut n = node(1, NodeState::Alive, 0, 1, 1);
        assert_eq!(mem_used_kib(&n), Some(4 * 1024 * 1024));
        n.mem_free_kib = Some(u64::MAX);
        assert_eq!(mem_used_kib(&n), Some(0));
        n.mem_free_kib = None;
        assert_eq!(mem_used_kib(&n), None);
    }
}
