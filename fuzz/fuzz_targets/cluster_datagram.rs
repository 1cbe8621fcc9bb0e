//! Cluster messages from a node that holds the key but sends garbage: every message kind with an
//! arbitrary body, sealed correctly, into a running membership core. Nothing may panic; the core's
//! counters must account for every datagram.
#![no_main]

use clump_cluster::sim::record_of;
use clump_cluster::wire::Message;
use clump_cluster::{Cluster, Config};
use clump_seal::{ClusterKey, Sealer};
use libfuzzer_sys::fuzz_target;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let key = ClusterKey::from_bytes([7; 32]);
    // The first byte picks the kind (all 256, known or not); the rest is the body.
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let _ = Message::decode(kind, body);

    let now = Duration::from_secs(1);
    let mut cluster = Cluster::new(&key, record_of(0), 1, [1; 16], 42, Config::default(), now);
    let mut sealer = Sealer::new(&key, [2; 16]);
    let from = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 7171);
    if let Ok(datagram) = sealer.seal(kind, body) {
        cluster.handle_datagram(now, from, &datagram);
        cluster.handle_time(now + Duration::from_secs(2));
        let _ = cluster.view();
        while cluster.poll_transmit().is_some() {}
        while cluster.poll_event().is_some() {}
        let c = cluster.counters();
        assert_eq!(c.datagrams_in, 1);
        assert!(c.auth + c.replay + c.too_short + c.too_large + c.not_clump + c.version == 0);
    }
    // Unsealed bytes straight from the wire.
    cluster.handle_datagram(now, from, data);
});
