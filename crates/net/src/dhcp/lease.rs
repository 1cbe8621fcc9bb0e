use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::time::Duration;

/// The network configuration a server hands out with an address (options 3, 6, 28, 26, 12, 15).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub broadcast: Option<Ipv4Addr>,
    pub mtu: Option<u16>,
    pub hostname: Option<String>,
    pub domain: Option<String>,
}

/// An address lease as the server granted it. Times are relative to `acquired`, a point on the
/// client's monotonic clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub server: Ipv4Addr,
    #[serde(flatten)]
    pub options: Options,
    #[serde(with = "secs")]
    pub lease_time: Duration,
    #[serde(with = "secs")]
    pub t1: Duration,
    #[serde(with = "secs")]
    pub t2: Duration,
    /// When the ACK arrived, on the client's clock.
    #[serde(with = "secs")]
    pub acquired: Duration,
}

impl Lease {
    pub fn renew_at(&self) -> Duration {
        self.acquired + self.t1
    }
    pub fn rebind_at(&self) -> Duration {
        self.acquired + self.t2
    }
    pub fn expires_at(&self) -> Duration {
        self.acquired + self.lease_time
    }
}

/// Fixes T1/T2 the way RFC 2131 4.4.5 defines the defaults (0.5 and 0.875 of the lease) when the
/// server gave none or gave values out of order.
pub fn timers(lease: Duration, t1: Option<Duration>, t2: Option<Duration>) -> (Duration, Duration) {
    let d1 = lease / 2;
    let d2 = lease * 7 / 8;
    let t2 = t2.filter(|t| *t < lease && !t.is_zero()).unwrap_or(d2);
    let t1 = t1.filter(|t| *t < t2 && !t.is_zero()).unwrap_or(d1.min(t2));
    (t1, t2)
}

/// A contiguous netmask's prefix length; `None` for masks like 255.0.255.0.
pub fn prefix_len(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_and_bad_timers() {
        let h = Duration::from_secs(3600);
        assert_eq!(
            timers(h, None, None),
            (Duration::from_secs(1800), Duration::from_secs(3150))
        );
        let (t1, t2) = timers(h, Some(Duration::from_secs(4000)), Some(Duration::from_secs(100)));
        assert_eq!((t1, t2), (Duration::from_secs(100), Duration::from_secs(100)));
        let (t1, t2) = timers(h, Some(Duration::from_secs(600)), Some(Duration::from_secs(1200)));
        assert_eq!((t1, t2), (Duration::from_secs(600), Duration::from_secs(1200)));
    }

    #[test]
    fn prefixes() {
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 252, 0)), Some(22));
        assert_eq!(prefix_len(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(prefix_len(Ipv4Addr::new(255, 0, 255, 0)), None);
    }
}
