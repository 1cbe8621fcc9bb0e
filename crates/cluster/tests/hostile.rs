//! The membership core fed what an attacker without the key sends: the tables it keeps stay
//! bounded and it reports without flooding.

use clump_cluster::core::MAX_FOREIGN;
use clump_cluster::sim::record_of;
use clump_cluster::{Cluster, Config, Event};
use clump_seal::{ClusterKey, Sealer};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

fn key(byte: u8) -> ClusterKey {
    ClusterKey::from_hex(&format!("{byte:02x}").repeat(32)).expect("valid key")
}

#[test]
fn forged_datagrams_from_spoofed_addresses_keep_the_foreign_table_bounded_and_the_reports_few() {
    let start = Duration::from_secs(100);
    let mut cluster = Cluster::new(&key(1), record_of(0), 1, [1; 16], 7, Config::default(), start);
    let mut forger = Sealer::new(&key(2), [9; 16]);
    let sources = 5_000u32;
    // 5,000 addresses, one forged datagram each, 2,000 a second.
    for i in 0..sources {
        let now = start + Duration::from_micros(500 * u64::from(i));
        let from = SocketAddrV4::new(Ipv4Addr::from(0x0a40_0000 + i), 7171);
        let datagram = forger.seal(1, b"not a hello").expect("seal");
        cluster.handle_datagram(now, from, &datagram);
    }
    assert_eq!(cluster.counters().auth, u64::from(sources));
    let held = cluster.foreign().count();
    assert_eq!(held, MAX_FOREIGN, "foreign addresses held");
    // The first heard are those kept: a node with another key that was there before the flood
    // stays listed as refused, and a flood cannot push it out.
    let first = Ipv4Addr::from(0x0a40_0000);
    let newest = Ipv4Addr::from(0x0a40_0000 + sources - 1);
    assert!(cluster.foreign().any(|(a, _)| *a == first));
    assert!(!cluster.foreign().any(|(a, _)| *a == newest));
    let mut refused = 0;
    while let Some(e) = cluster.poll_event() {
        if matches!(e, Event::Refused { .. }) {
            refused += 1;
        }
    }
    // 2.5 s of forgeries: one report a second at most.
    assert!((1..=3).contains(&refused), "{refused} refused reports");
}
