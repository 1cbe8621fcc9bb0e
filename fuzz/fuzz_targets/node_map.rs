//! The node map as `/run/clump/nodes.json` holds it (read by `clump nodes` when `clumpd` does not
//! answer, and by the screen) and the lease file `clump-netd` writes for `clumpd`. A map that
//! reads survives a round trip; `resolve` finds what it is asked; the table, the load figure
//! and the `mosix.map` written from it never panic, and that `mosix.map` reads back.
#![no_main]

use clump_api::{mosix_map, table, NodeMap};
use clump_clumpd::lease;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(l) = std::str::from_utf8(data).ok().and_then(lease::parse) {
        assert!(l.prefix_len <= 32);
    }
    let Ok(map) = serde_json::from_slice::<NodeMap>(data) else {
        return;
    };
    let again = serde_json::to_string(&map).expect("a node map encodes");
    assert_eq!(serde_json::from_str::<NodeMap>(&again).ok().as_ref(), Some(&map));

    for n in map.nodes.iter().take(32) {
        if let Some(number) = n.number {
            let found = map.resolve(&number.to_string()).expect("a node by its number");
            assert_eq!(found.number, Some(number));
        }
        if let Some(hostname) = &n.hostname {
            let _ = map.resolve(hostname);
        }
    }
    let _ = map.cluster_load();
    let _ = table::nodes(&map, map.updated_ms.saturating_add(1000));
    let rendered = mosix_map::render(&map.nodes);
    if let Err(e) = mosix_map::parse(&rendered) {
        panic!("render wrote what parse refuses: {e}\n{rendered}");
    }
});
