//! `clump.ip=10.0.0.7/24[,10.0.0.1]`: a fixed address instead of DHCP.

use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticAddr {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
}

pub fn parse(text: &str) -> Result<StaticAddr, String> {
    let (cidr, gateway) = match text.split_once(',') {
        Some((c, g)) => (
            c,
            Some(g.parse::<Ipv4Addr>().map_err(|_| format!("bad gateway {g:?}"))?),
        ),
        None => (text, None),
    };
    let (addr, prefix) = cidr
        .split_once('/')
        .ok_or_else(|| format!("{cidr:?}: expected ADDRESS/PREFIX"))?;
    let address: Ipv4Addr = addr.parse().map_err(|_| format!("bad address {addr:?}"))?;
    let prefix_len: u8 = prefix
        .parse()
        .ok()
        .filter(|p| (1..=32).contains(p))
        .ok_or_else(|| format!("bad prefix {prefix:?}"))?;
    if address.is_unspecified() || address.is_broadcast() || address.is_multicast() || address.is_loopback() {
        return Err(format!("{address} cannot be a node's address"));
    }
    Ok(StaticAddr {
        address,
        prefix_len,
        gateway,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(
            parse("10.0.0.7/24,10.0.0.1"),
            Ok(StaticAddr {
                address: Ipv4Addr::new(10, 0, 0, 7),
                prefix_len: 24,
                gateway: Some(Ipv4Addr::new(10, 0, 0, 1))
            })
        );
        assert_eq!(
            parse("10.0.0.7/16").map(|s| (s.prefix_len, s.gateway)),
            Ok((16, None))
        );
        for bad in [
            "10.0.0.7",
            "10.0.0.7/33",
            "10.0.0.7/0",
            "10.0.0/24",
            "0.0.0.0/8",
            "10.0.0.7/24,x",
            "",
            "/",
            ",",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
