//! ARP packets from the wire: the frame parser and the subnet sweep's reply handling. Nothing may
//! panic, and a sweep reports a host only from its own subnet, once.
#![no_main]

use clump_net::arp::{self, Sweep};
use libfuzzer_sys::fuzz_target;
use std::net::Ipv4Addr;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let _ = arp::parse(data);
    let _ = arp::Message::parse(data);
    let own = Ipv4Addr::new(10, 1, 2, 3);
    let _ = arp::conflicts(data, [2, 0, 0, 0, 0, 1], own);
    let mut sweep = Sweep::new([2, 0, 0, 0, 0, 1], own, 24, 1024, 1000, Duration::ZERO);
    let first = sweep.on_packet(data);
    if let Some(host) = first {
        assert_eq!(
            u32::from(host.addr) >> 8,
            u32::from(own) >> 8,
            "host outside the subnet"
        );
        assert_ne!(host.addr, own);
        assert!(sweep.on_packet(data).is_none(), "the same host reported twice");
    }
});
