//! The lease `clump-netd` publishes in `/run/clump/lease.json`: which NIC, which address.

use serde::Deserialize;
use std::net::Ipv4Addr;
use std::path::Path;

pub const LEASE_FILE: &str = "/run/clump/lease.json";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub iface: String,
    pub mac: [u8; 6],
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    pub via: String,
}

#[derive(Deserialize)]
struct File {
    iface: String,
    mac: String,
    via: String,
    state: String,
    lease: Option<Address>,
}

#[derive(Deserialize)]
struct Address {
    address: Ipv4Addr,
    prefix_len: u8,
}

pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for byte in mac.iter_mut() {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The bound lease, or None while there is none (file missing, unbound, or unreadable).
pub fn read(path: &Path) -> Option<Lease> {
    let text = std::fs::read_to_string(path).ok()?;
    parse(&text)
}

pub fn parse(text: &str) -> Option<Lease> {
    let file: File = serde_json::from_str(text).ok()?;
    let address = file.lease.filter(|_| file.state == "bound")?;
    if address.prefix_len > 32 {
        return None;
    }
    Some(Lease {
        iface: file.iface,
        mac: parse_mac(&file.mac)?,
        addr: address.address,
        prefix_len: address.prefix_len,
        via: file.via,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_lease() {
        let text = r#"{"iface":"eth0","driver":"virtio_net","mac":"52:54:00:12:34:56","via":"dhcp",
            "state":"bound","lease":{"address":"10.0.0.12","prefix_len":24,"lease_time":3600},
            "written_at":3,"dropped":{}}"#;
        let lease = parse(text).expect("bound");
        assert_eq!(lease.addr, Ipv4Addr::new(10, 0, 0, 12));
        assert_eq!(lease.prefix_len, 24);
        assert_eq!(lease.mac, [0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    }

    #[test]
    fn no_lease_yet() {
        assert_eq!(
            parse(
                r#"{"iface":"eth0","mac":"52:54:00:12:34:56","via":"dhcp","state":"unbound","lease":null}"#
            ),
            None
        );
        assert_eq!(parse("{"), None);
        assert_eq!(
            parse(
                r#"{"iface":"eth0","mac":"zz","via":"dhcp","state":"bound","lease":{"address":"10.0.0.1","prefix_len":24}}"#
            ),
            None
        );
        assert_eq!(parse_mac("52:54:00:12:34"), None);
        assert_eq!(parse_mac("52:54:00:12:34:56:78"), None);
    }
}
