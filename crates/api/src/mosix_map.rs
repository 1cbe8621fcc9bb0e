//! `/etc/clump/mosix.map`: the live nodes in the MOSIX/openMosix map format, so tools and people
//! who know MOSIX can read the cluster (ARCHITECTURE.md, "Files").
//!
//! Each line is `first-number first-address count`: `count` nodes numbered from `first-number` at
//! consecutive addresses from `first-address`. Node numbers are the host part of the address, so a
//! subnet of consecutive nodes is one line. openMosix's fourth field and `ALIAS` lines are not
//! written, and [`parse`] refuses them by name rather than guessing.

use crate::map::NodeEntry;
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

/// Where `clumpd` writes the map.
pub const MAP_FILE: &str = "/etc/clump/mosix.map";

const HEADER: &str = "\
# mosix.map: the live nodes of this Clump cluster, in the MOSIX/openMosix map format.
# Written by clumpd, which rewrites it whenever membership changes: edits are lost.
# Each line: first-number first-address count
#   (\"1 10.0.0.1 3\" is nodes 1, 2 and 3 at 10.0.0.1, 10.0.0.2 and 10.0.0.3).
";

/// One line of the map: `count` nodes numbered from `first` at consecutive addresses from `address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapLine {
    pub first: u32,
    pub address: Ipv4Addr,
    /// At least 1; `first + count - 1` and `address + count - 1` do not overflow.
    pub count: u32,
}

impl MapLine {
    /// The nodes the line stands for, as (number, address).
    pub fn nodes(&self) -> impl Iterator<Item = (u32, Ipv4Addr)> {
        let (first, base) = (self.first, u32::from(self.address));
        // Wrapping is unreachable for lines from `parse` or `render` (both check the ends), and
        // keeps a hand-made line from panicking.
        (0..self.count).map(move |i| (first.wrapping_add(i), Ipv4Addr::from(base.wrapping_add(i))))
    }

    /// The last node of the line, or None when the line's arithmetic overflows (never for lines
    /// from [`parse`]).
    pub fn last(&self) -> Option<(u32, Ipv4Addr)> {
        let span = self.count.checked_sub(1)?;
        let number = self.first.checked_add(span)?;
        let address = u32::from(self.address).checked_add(span)?;
        Some((number, Ipv4Addr::from(address)))
    }
}

impl fmt::Display for MapLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.first, self.address, self.count)
    }
}

/// The map for `nodes`: a comment header, then the members (self, alive, suspect, leaving) that
/// have a number and an address, sorted by number, consecutive numbers at consecutive addresses
/// coalesced. A number two nodes claim is a conflict: each such node gets its own line, after a
/// `# conflict:` comment naming them, and never joins a run (MOSIX would otherwise route one
/// node's work to the other).
pub fn render(nodes: &[NodeEntry]) -> String {
    let mut by_number: BTreeMap<u32, Vec<(Ipv4Addr, &str)>> = BTreeMap::new();
    for node in nodes.iter().filter(|n| n.state.is_member()) {
        if let (Some(number), Some(address)) = (node.number, node.address) {
            by_number.entry(number).or_default().push((address, &node.id));
        }
    }
    let mut out = String::from(HEADER);
    let mut run: Option<MapLine> = None;
    let flush = |run: &mut Option<MapLine>, out: &mut String| {
        if let Some(line) = run.take() {
            out.push_str(&format!("{line}\n"));
        }
    };
    for (number, mut claims) in by_number {
        if let [(address, _)] = claims[..] {
            let extends = run.as_ref().is_some_and(|r| {
                r.last()
                    .and_then(|(n, a)| Some((n.checked_add(1)?, u32::from(a).checked_add(1)?)))
                    == Some((number, u32::from(address)))
            });
            match run.as_mut() {
                Some(r) if extends => r.count += 1,
                _ => {
                    flush(&mut run, &mut out);
                    run = Some(MapLine {
                        first: number,
                        address,
                        count: 1,
                    });
                }
            }
            continue;
        }
        flush(&mut run, &mut out);
        claims.sort();
        let who: Vec<String> = claims.iter().map(|(a, id)| format!("{a} (id {id})")).collect();
        out.push_str(&format!(
            "# conflict: node number {number} is claimed by {} nodes: {}\n",
            claims.len(),
            who.join(", ")
        ));
        for (address, _) in claims {
            out.push_str(&format!(
                "{}\n",
                MapLine {
                    first: number,
                    address,
                    count: 1
                }
            ));
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Why a map line was refused; `line` counts from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mosix.map line {line}: {kind}")]
pub struct MapError {
    pub line: usize,
    pub kind: MapErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapErrorKind {
    #[error("expected `first-number first-address count`, found {0} field(s)")]
    TooFewFields(usize),
    #[error("unexpected field `{0}` after the count (openMosix's fourth field is not supported)")]
    ExtraField(String),
    #[error("openMosix ALIAS lines are not supported")]
    Alias,
    #[error("node number `{0}` is not a number from 0 to 4294967295")]
    BadNumber(String),
    #[error("address `{0}` is not an IPv4 address")]
    BadAddress(String),
    #[error("count `{0}` is not a number from 1 to 4294967295")]
    BadCount(String),
    #[error("{count} nodes from number {first} run past node number 4294967295")]
    NumberOverflow { first: u32, count: u32 },
    #[error("{count} nodes from {address} run past 255.255.255.255")]
    AddressOverflow { address: Ipv4Addr, count: u32 },
}

/// Reads a map back: comments (from `#` to the end of the line) and blank lines are skipped; every
/// other line must be exactly `first-number first-address count`.
pub fn parse(text: &str) -> Result<Vec<MapLine>, MapError> {
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let err = |kind| MapError { line: i + 1, kind };
        let content = raw.split_once('#').map_or(raw, |(before, _)| before);
        let fields: Vec<&str> = content.split_whitespace().collect();
        match fields[..] {
            [] => continue,
            [alias, ..] if alias.eq_ignore_ascii_case("alias") => return Err(err(MapErrorKind::Alias)),
            [first, address, count] => lines.push(parse_line(first, address, count).map_err(err)?),
            [_, _, _, extra, ..] => return Err(err(MapErrorKind::ExtraField(extra.to_owned()))),
            _ => return Err(err(MapErrorKind::TooFewFields(fields.len()))),
        }
    }
    Ok(lines)
}

fn parse_line(first: &str, address: &str, count: &str) -> Result<MapLine, MapErrorKind> {
    let first = first
        .parse::<u32>()
        .map_err(|_| MapErrorKind::BadNumber(first.to_owned()))?;
    let address = address
        .parse::<Ipv4Addr>()
        .map_err(|_| MapErrorKind::BadAddress(address.to_owned()))?;
    let count = match count.parse::<u32>() {
        Ok(n) if n >= 1 => n,
        _ => return Err(MapErrorKind::BadCount(count.to_owned())),
    };
    let span = count - 1;
    if first.checked_add(span).is_none() {
        return Err(MapErrorKind::NumberOverflow { first, count });
    }
    if u32::from(address).checked_add(span).is_none() {
        return Err(MapErrorKind::AddressOverflow { address, count });
    }
    Ok(MapLine {
        first,
        address,
        count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::{NodeEntry, NodeState};

    fn node(number: u32, address: [u8; 4], state: NodeState) -> NodeEntry {
        NodeEntry {
            number: Some(number),
            address: Some(Ipv4Addr::from(address)),
            ..NodeEntry::unknown(format!("{number:032x}"), state)
        }
    }

    fn body(map: &str) -> Vec<&str> {
        map.lines()
            .filter(|l| !l.starts_with("# ") || l.starts_with("# conflict"))
            .collect()
    }

    #[test]
    fn consecutive_nodes_are_one_line() {
        let nodes = [
            node(3, [10, 0, 0, 3], NodeState::Alive),
            node(1, [10, 0, 0, 1], NodeState::This),
            node(2, [10, 0, 0, 2], NodeState::Suspect),
            node(7, [10, 0, 0, 7], NodeState::Leaving),
            node(8, [10, 0, 0, 8], NodeState::Alive),
            // A gap in the addresses ends a run even when the numbers go on.
            node(9, [10, 0, 1, 9], NodeState::Alive),
        ];
        let map = render(&nodes);
        assert!(map.starts_with("# mosix.map: "), "{map}");
        assert!(map.contains("clumpd"), "{map}");
        assert!(map.contains("first-number first-address count"), "{map}");
        assert_eq!(body(&map), ["1 10.0.0.1 3", "7 10.0.0.7 2", "9 10.0.1.9 1"]);
    }

    #[test]
    fn only_members_with_number_and_address_are_listed() {
        let mut no_address = node(4, [0; 4], NodeState::Alive);
        no_address.address = None;
        let mut no_number = node(5, [10, 0, 0, 5], NodeState::Alive);
        no_number.number = None;
        let nodes = [
            node(1, [10, 0, 0, 1], NodeState::This),
            node(2, [10, 0, 0, 2], NodeState::Dead),
            node(3, [10, 0, 0, 3], NodeState::Left),
            no_address,
            no_number,
            node(6, [10, 0, 0, 6], NodeState::Unknown),
        ];
        assert_eq!(body(&render(&nodes)), ["1 10.0.0.1 1"]);
        assert_eq!(body(&render(&[])), Vec::<&str>::new());
    }

    #[test]
    fn a_number_two_nodes_claim_is_not_merged() {
        let mut twin = node(12, [10, 0, 0, 12], NodeState::Alive);
        twin.id = "c".repeat(32);
        let nodes = [
            node(11, [10, 0, 0, 11], NodeState::Alive),
            node(12, [10, 0, 0, 12], NodeState::Alive),
            twin,
            node(13, [10, 0, 0, 13], NodeState::Alive),
            node(14, [10, 0, 0, 14], NodeState::Alive),
        ];
        let map = render(&nodes);
        assert_eq!(
            body(&map),
            [
                "11 10.0.0.11 1",
                &format!(
                    "# conflict: node number 12 is claimed by 2 nodes: 10.0.0.12 (id {:032x}), 10.0.0.12 (id {})",
                    12,
                    "c".repeat(32)
                ),
                "12 10.0.0.12 1",
                "12 10.0.0.12 1",
                "13 10.0.0.13 2",
            ]
        );
        // Still readable by the parser (the conflict line is a comment).
        assert_eq!(parse(&map).unwrap().len(), 4);
    }

    #[test]
    fn runs_stop_at_the_ends_of_the_number_and_address_space() {
        let nodes = [
            node(u32::MAX - 1, [255, 255, 255, 254], NodeState::Alive),
            node(u32::MAX, [255, 255, 255, 255], NodeState::Alive),
        ];
        let map = render(&nodes);
        assert_eq!(body(&map), [format!("{} 255.255.255.254 2", u32::MAX - 1)]);
        assert_eq!(
            parse(&map).unwrap()[0].last(),
            Some((u32::MAX, Ipv4Addr::BROADCAST))
        );
    }

    #[test]
    fn round_trip_gives_back_every_member() {
        // 1..=40 on 10.0.0.x, less a few, one moved off its address: several runs.
        let mut nodes: Vec<NodeEntry> = (1..=40u8)
            .filter(|n| ![5, 6, 20].contains(n))
            .map(|n| node(u32::from(n), [10, 0, 0, n], NodeState::Alive))
            .collect();
        nodes.push(node(5, [10, 0, 0, 99], NodeState::Alive));
        nodes.push(node(300, [10, 0, 1, 44], NodeState::Dead));
        let lines = parse(&render(&nodes)).unwrap();
        let mut back: Vec<(u32, Ipv4Addr)> = lines.iter().flat_map(MapLine::nodes).collect();
        let mut want: Vec<(u32, Ipv4Addr)> = nodes
            .iter()
            .filter(|n| n.state.is_member())
            .filter_map(|n| Some((n.number?, n.address?)))
            .collect();
        back.sort();
        want.sort();
        assert_eq!(back, want);
        assert_eq!(
            lines.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "1 10.0.0.1 4",
                "5 10.0.0.99 1",
                "7 10.0.0.7 13",
                "21 10.0.0.21 20"
            ]
        );
    }

    #[test]
    fn parse_skips_comments_and_blank_lines() {
        let text = "# header\n\n   \t\n1 10.0.0.1 3 # three nodes\n  20\t10.0.0.20   1\n";
        assert_eq!(
            parse(text).unwrap(),
            [
                MapLine {
                    first: 1,
                    address: Ipv4Addr::new(10, 0, 0, 1),
                    count: 3
                },
                MapLine {
                    first: 20,
                    address: Ipv4Addr::new(10, 0, 0, 20),
                    count: 1
                },
            ]
        );
    }

    #[test]
    fn parse_errors_name_the_line_and_the_problem() {
        let cases: &[(&str, MapErrorKind)] = &[
            ("1 10.0.0.1", MapErrorKind::TooFewFields(2)),
            ("1 10.0.0.1 2 p", MapErrorKind::ExtraField("p".into())),
            ("ALIAS 10.0.0.1 2", MapErrorKind::Alias),
            ("x 10.0.0.1 1", MapErrorKind::BadNumber("x".into())),
            ("-1 10.0.0.1 1", MapErrorKind::BadNumber("-1".into())),
            (
                "4294967296 10.0.0.1 1",
                MapErrorKind::BadNumber("4294967296".into()),
            ),
            ("1 10.0.0 1", MapErrorKind::BadAddress("10.0.0".into())),
            ("1 node1 1", MapErrorKind::BadAddress("node1".into())),
            ("1 10.0.0.1 0", MapErrorKind::BadCount("0".into())),
            ("1 10.0.0.1 many", MapErrorKind::BadCount("many".into())),
            (
                "4294967295 10.0.0.1 2",
                MapErrorKind::NumberOverflow {
                    first: u32::MAX,
                    count: 2,
                },
            ),
            (
                "1 255.255.255.250 7",
                MapErrorKind::AddressOverflow {
                    address: Ipv4Addr::new(255, 255, 255, 250),
                    count: 7,
                },
            ),
        ];
        for (line, kind) in cases {
            let text = format!("# header\n1 10.0.0.1 1\n{line}\n");
            assert_eq!(
                parse(&text),
                Err(MapError {
                    line: 3,
                    kind: kind.clone()
                }),
                "{line}"
            );
        }
        let e = parse("1 255.255.255.250 7").unwrap_err();
        assert_eq!(
            e.to_string(),
            "mosix.map line 1: 7 nodes from 255.255.255.250 run past 255.255.255.255"
        );
        // The last address itself is fine.
        assert!(parse("1 255.255.255.250 6").is_ok());
    }
}
