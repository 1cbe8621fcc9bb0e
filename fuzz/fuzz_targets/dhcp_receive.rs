//! The DHCP client's receive path: a frame off the packet socket, its UDP payload, the reply
//! checks, and the state machine in every phase it can reach. Nothing here may panic.
#![no_main]

use clump_net::dhcp::{parse_reply, Client, ClientConfig};
use clump_net::frame::parse_udp_ipv4;
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

fuzz_target!(|data: &[u8]| {
    if let Some(d) = parse_udp_ipv4(data) {
        let _ = d.payload.len();
    }
    // The transaction id the reply claims, so the checks past the xid are reached too.
    let xid = data
        .get(4..8)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let _ = parse_reply(data, &MAC, xid);

    let cfg = ClientConfig {
        mac: MAC,
        hostname: None,
        vendor_class: "fuzz".into(),
    };
    let mut client = Client::new(cfg, u64::from(xid));
    let mut now = Duration::ZERO;
    for chunk in data.chunks(300).take(8) {
        client.tick(now);
        client.handle(now, chunk);
        client.handle(now, data);
        client.probe_result(now, chunk.first().is_some_and(|b| b & 1 == 1));
        now += Duration::from_secs(u64::from(chunk.first().copied().unwrap_or(0)));
    }
    client.release();
});
