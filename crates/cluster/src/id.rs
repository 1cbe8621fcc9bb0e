//! Who a node is: its stable [`NodeId`] and the identity foca gossips about ([`Member`]).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::net::SocketAddrV4;

/// A node's stable 128-bit identity, kept across reboots of the same hardware.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub [u8; 16]);

impl NodeId {
    /// A RAM-only node has nowhere to keep a random id, so it derives one from its NIC's MAC: the
    /// same PC gets the same id on every boot, and two PCs only share one if their MACs clash.
    pub fn from_mac(mac: [u8; 6]) -> Self {
        let digest = Sha256::new()
            .chain_update(b"clump node id v1")
            .chain_update(mac)
            .finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        Self(id)
    }

    /// Parses the 32 hex digits that [`fmt::Display`] writes (as kept in `/var/lib/clump/node-id`).
    pub fn from_hex(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.len() != 32 || !text.is_ascii() {
            return None;
        }
        let mut id = [0u8; 16];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Self(id))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The first 8 digits tell nodes apart in logs; the whole id is in nodes.json.
        write!(f, "{}", &self.to_string()[..8])
    }
}

/// The identity foca's SWIM rounds are about: where to reach a node, which node it is, and which
/// run of its daemon (`gen`, random per start, +1 when it rejoins after being declared down).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    pub addr: SocketAddrV4,
    pub id: NodeId,
    pub gen: u32,
}

impl foca::Identity for Member {
    /// One member per socket address: a node that restarts (new `gen`) replaces its old self.
    type Addr = SocketAddrV4;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            gen: self.gen.wrapping_add(1),
            ..*self
        })
    }

    fn addr(&self) -> SocketAddrV4 {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        // Wrapping comparison so a renewed gen past u32::MAX still wins over its predecessor.
        (self.gen.wrapping_sub(adversary.gen) as i32) > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;
    use std::net::Ipv4Addr;

    #[test]
    fn id_from_mac_is_stable_and_distinct() {
        let a = NodeId::from_mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert_eq!(a, NodeId::from_mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        assert_ne!(a, NodeId::from_mac([0x52, 0x54, 0, 0x12, 0x34, 0x57]));
        assert_eq!(NodeId::from_hex(&a.to_string()), Some(a));
        assert_eq!(format!("{a:?}").len(), 8);
    }

    #[test]
    fn hex_rejects_garbage() {
        assert_eq!(NodeId::from_hex("00"), None);
        assert_eq!(NodeId::from_hex(&"zz".repeat(16)), None);
        assert_eq!(NodeId::from_hex(&"é".repeat(16)), None);
        assert!(NodeId::from_hex(&format!(" {} \n", "ab".repeat(16))).is_some());
    }

    #[test]
    fn renewed_identity_wins() {
        let m = Member {
            addr: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 7171),
            id: NodeId([1; 16]),
            gen: u32::MAX,
        };
        let renewed = m.renew().expect("renews");
        assert!(renewed.win_addr_conflict(&m));
        assert!(!m.win_addr_conflict(&renewed));
        assert_eq!(renewed.addr(), m.addr());
    }
}
