//! The `mosix.map` reader (`clump_api::mosix_map::parse`): any text gives lines or an error naming
//! one of its lines, never a panic; what it accepts stays inside the number and address spaces;
//! and the nodes it read, written again by `render`, read back the same.
#![no_main]

use clump_api::mosix_map::{parse, render, MapLine};
use clump_api::{NodeEntry, NodeState};
use libfuzzer_sys::fuzz_target;
use std::net::Ipv4Addr;

/// At most this many nodes per line go through the round trip, so a line of 4 billion nodes
/// costs no more than a short one.
const PER_LINE: usize = 64;

/// Every (number, address) the lines stand for, sorted. Only for lines whose total is bounded.
fn pairs(lines: &[MapLine]) -> Vec<(u32, Ipv4Addr)> {
    let mut v: Vec<(u32, Ipv4Addr)> = lines.iter().flat_map(MapLine::nodes).collect();
    v.sort();
    v
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines = match parse(&text) {
        Ok(lines) => lines,
        Err(e) => {
            assert!(e.line >= 1 && e.line <= text.lines().count(), "{e}");
            return;
        }
    };
    for line in &lines {
        assert!(line.count >= 1);
        assert!(line.last().is_some(), "{line} overflows");
    }
    let nodes: Vec<NodeEntry> = lines
        .iter()
        .flat_map(|l| l.nodes().take(PER_LINE))
        .enumerate()
        .map(|(i, (number, address))| NodeEntry {
            number: Some(number),
            address: Some(address),
            ..NodeEntry::unknown(format!("{i:032x}"), NodeState::Alive)
        })
        .collect();
    let rendered = render(&nodes);
    let back =
        parse(&rendered).unwrap_or_else(|e| panic!("render wrote what parse refuses: {e}\n{rendered}"));
    // `back` holds exactly the nodes given, so its total is bounded too.
    let mut given: Vec<(u32, Ipv4Addr)> = nodes
        .iter()
        .filter_map(|n| Some((n.number?, n.address?)))
        .collect();
    given.sort();
    assert_eq!(pairs(&back), given);
});
