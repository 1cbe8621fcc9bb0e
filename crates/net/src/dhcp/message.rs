//! Building the client's messages and checking the server's replies.

use super::client::ClientConfig;
use super::lease::Options;
use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use std::net::Ipv4Addr;
use std::time::Duration;

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
/// What we accept in one datagram (option 57); an Ethernet MTU minus IP and UDP headers.
const MAX_MESSAGE_SIZE: u16 = 1500 - 28;

const PARAMETERS: [OptionCode; 10] = [
    OptionCode::SubnetMask,
    OptionCode::Router,
    OptionCode::DomainNameServer,
    OptionCode::Hostname,
    OptionCode::DomainName,
    OptionCode::InterfaceMtu,
    OptionCode::BroadcastAddr,
    OptionCode::AddressLeaseTime,
    OptionCode::Renewal,
    OptionCode::Rebinding,
];

/// An empty BOOTREQUEST: op 1, htype Ethernet, hlen 6, all else zero, the magic cookie and the
/// end option.
fn blank_request() -> [u8; OPTIONS_AT + 1] {
    let mut b = [0u8; OPTIONS_AT + 1];
    b[0] = 1;
    b[1] = 1;
    b[HLEN_AT] = ETHERNET_HLEN;
    b[OPTIONS_AT - 4..OPTIONS_AT].copy_from_slice(&[99, 130, 83, 99]);
    b[OPTIONS_AT] = 255;
    b
}

/// The fields every message of ours carries. Built by decoding a template because dhcproto's
/// constructors draw an xid from `rand::random()`, which blocks in early boot until the kernel's
/// random pool is ready (seen: a TCG guest sent no DISCOVER for 15 s).
fn base(cfg: &ClientConfig, kind: MessageType, xid: u32, secs: u16, ciaddr: Ipv4Addr) -> Message {
    let mut msg = Message::from_bytes(&blank_request()).unwrap_or_default();
    msg.set_xid(xid).set_chaddr(&cfg.mac).set_ciaddr(ciaddr);
    msg.set_secs(secs);
    // Before it has an address the client asks for broadcast replies (RFC 2131 4.1): some
    // servers and relays cannot unicast to an unconfigured host.
    if ciaddr.is_unspecified() {
        msg.set_flags(Flags::default().set_broadcast());
    }
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    let mut client_id = vec![1u8]; // hardware type Ethernet, then the MAC (RFC 2132 9.14)
    client_id.extend_from_slice(&cfg.mac);
    opts.insert(DhcpOption::ClientIdentifier(client_id));
    opts.insert(DhcpOption::ClassIdentifier(cfg.vendor_class.as_bytes().to_vec()));
    if let Some(name) = &cfg.hostname {
        opts.insert(DhcpOption::Hostname(name.clone()));
    }
    msg
}

fn encode(msg: &Message) -> Vec<u8> {
    // Encoding a message we built ourselves only fails on an option too long for its length
    // byte; our options are bounded, so an empty datagram (never sent) marks the impossible case.
    msg.to_vec().unwrap_or_default()
}

pub fn discover(cfg: &ClientConfig, xid: u32, secs: u16) -> Vec<u8> {
    let mut msg = base(cfg, MessageType::Discover, xid, secs, Ipv4Addr::UNSPECIFIED);
    msg.opts_mut()
        .insert(DhcpOption::ParameterRequestList(PARAMETERS.to_vec()));
    msg.opts_mut()
        .insert(DhcpOption::MaxMessageSize(MAX_MESSAGE_SIZE));
    encode(&msg)
}

/// REQUEST in SELECTING: names the chosen server and the offered address.
pub fn request_offer(cfg: &ClientConfig, xid: u32, secs: u16, offer: &Reply) -> Vec<u8> {
    let mut msg = base(cfg, MessageType::Request, xid, secs, Ipv4Addr::UNSPECIFIED);
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::ServerIdentifier(offer.server));
    opts.insert(DhcpOption::RequestedIpAddress(offer.yiaddr));
    opts.insert(DhcpOption::ParameterRequestList(PARAMETERS.to_vec()));
    opts.insert(DhcpOption::MaxMessageSize(MAX_MESSAGE_SIZE));
    encode(&msg)
}

/// REQUEST in RENEWING or REBINDING: `ciaddr` holds the address, no server identifier.
pub fn request_extend(cfg: &ClientConfig, xid: u32, secs: u16, address: Ipv4Addr) -> Vec<u8> {
    let mut msg = base(cfg, MessageType::Request, xid, secs, address);
    msg.opts_mut()
        .insert(DhcpOption::ParameterRequestList(PARAMETERS.to_vec()));
    encode(&msg)
}

pub fn decline(cfg: &ClientConfig, xid: u32, address: Ipv4Addr, server: Ipv4Addr) -> Vec<u8> {
    let mut msg = base(cfg, MessageType::Decline, xid, 0, Ipv4Addr::UNSPECIFIED);
    msg.opts_mut().insert(DhcpOption::RequestedIpAddress(address));
    msg.opts_mut().insert(DhcpOption::ServerIdentifier(server));
    encode(&msg)
}

pub fn release(cfg: &ClientConfig, xid: u32, address: Ipv4Addr, server: Ipv4Addr) -> Vec<u8> {
    let mut msg = base(cfg, MessageType::Release, xid, 0, address);
    msg.opts_mut().insert(DhcpOption::ServerIdentifier(server));
    encode(&msg)
}

/// A server reply that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub kind: MessageType,
    pub xid: u32,
    pub yiaddr: Ipv4Addr,
    pub server: Ipv4Addr,
    pub mask: Option<Ipv4Addr>,
    pub options: Options,
    pub lease_time: Option<Duration>,
    pub t1: Option<Duration>,
    pub t2: Option<Duration>,
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("not a DHCP message: {0}")]
    Malformed(String),
    #[error("not a server reply")]
    NotReply,
    #[error("for another client (chaddr)")]
    OtherClient,
    #[error("for another transaction (xid)")]
    OtherTransaction,
    #[error("invalid: {0}")]
    Invalid(&'static str),
}

impl ReplyError {
    /// Replies meant for someone else, as opposed to broken or hostile ones.
    pub fn is_foreign(&self) -> bool {
        matches!(self, ReplyError::OtherClient | ReplyError::OtherTransaction)
    }
}

/// Fixed BOOTP header plus the magic cookie: where the options start.
const OPTIONS_AT: usize = 240;

/// Offset of `hlen` in the BOOTP header.
const HLEN_AT: usize = 2;
const ETHERNET_HLEN: u8 = 6;

/// Rejects what dhcproto 0.15 would panic on before it decodes: `hlen` over 16 makes
/// `Message::chaddr()` slice out of bounds (in release builds too), and in the option area
/// (RFC 2132 TLVs) wrong lengths for options 80, 81, 94 and 151-155 hit a `debug_assert!` or a
/// `len - 1` underflow (upstream issue #77). Also refused: truncated options, and option
/// overload (52), which would move options into `sname`/`file` where this walk does not look.
/// No server a node talks to needs any of these.
fn sanity_check(data: &[u8]) -> Result<(), ReplyError> {
    let bad = |why: &'static str| Err(ReplyError::Malformed(why.to_string()));
    if data.len() < OPTIONS_AT {
        return bad("shorter than a BOOTP header");
    }
    if data[HLEN_AT] != ETHERNET_HLEN {
        return bad("hardware address is not Ethernet");
    }
    let mut rest = data.get(OPTIONS_AT..).unwrap_or_default();
    while let Some((&code, tail)) = rest.split_first() {
        match code {
            0 => {
                rest = tail;
                continue;
            }
            255 => return Ok(()),
            _ => {}
        }
        let Some((&len, tail)) = tail.split_first() else {
            return bad("truncated option");
        };
        let len = usize::from(len);
        if tail.len() < len {
            return bad("truncated option");
        }
        let ok = match code {
            52 => false,
            80 => len == 0,
            81 => len >= 3,
            94 => len == 3,
            151 => len >= 1,
            152..=155 => len == 4,
            _ => true,
        };
        if !ok {
            return bad("option with an impossible length");
        }
        rest = &tail[len..];
    }
    Ok(())
}

/// Decodes and checks a server reply for the client with `mac` in transaction `xid`.
pub fn parse_reply(data: &[u8], mac: &[u8; 6], xid: u32) -> Result<Reply, ReplyError> {
    sanity_check(data)?;
    let msg = Message::from_bytes(data).map_err(|e| ReplyError::Malformed(e.to_string()))?;
    if msg.opcode() != Opcode::BootReply {
        return Err(ReplyError::NotReply);
    }
    if msg.chaddr().get(..6) != Some(&mac[..]) {
        return Err(ReplyError::OtherClient);
    }
    if msg.xid() != xid {
        return Err(ReplyError::OtherTransaction);
    }
    let opts = msg.opts();
    let kind = opts.msg_type().ok_or(ReplyError::Invalid("no message type"))?;
    if !matches!(kind, MessageType::Offer | MessageType::Ack | MessageType::Nak) {
        return Err(ReplyError::Invalid("not an offer, ack or nak"));
    }
    let server = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => *ip,
        _ => return Err(ReplyError::Invalid("no server identifier")),
    };
    let ip = |code| match opts.get(code) {
        Some(DhcpOption::SubnetMask(a)) | Some(DhcpOption::BroadcastAddr(a)) => Some(*a),
        _ => None,
    };
    let secs = |code| match opts.get(code) {
        Some(DhcpOption::AddressLeaseTime(s))
        | Some(DhcpOption::Renewal(s))
        | Some(DhcpOption::Rebinding(s)) => Some(Duration::from_secs(u64::from(*s))),
        _ => None,
    };
    let reply = Reply {
        kind,
        xid,
        yiaddr: msg.yiaddr(),
        server,
        mask: ip(OptionCode::SubnetMask),
        options: Options {
            router: match opts.get(OptionCode::Router) {
                Some(DhcpOption::Router(list)) => list.first().copied(),
                _ => None,
            },
            dns: match opts.get(OptionCode::DomainNameServer) {
                Some(DhcpOption::DomainNameServer(list)) => list.iter().take(4).copied().collect(),
                _ => Vec::new(),
            },
            broadcast: ip(OptionCode::BroadcastAddr),
            mtu: match opts.get(OptionCode::InterfaceMtu) {
                Some(DhcpOption::InterfaceMtu(m)) => Some(*m),
                _ => None,
            },
            hostname: match opts.get(OptionCode::Hostname) {
                Some(DhcpOption::Hostname(h)) => Some(h.clone()),
                _ => None,
            },
            domain: match opts.get(OptionCode::DomainName) {
                Some(DhcpOption::DomainName(d)) => Some(d.clone()),
                _ => None,
            },
        },
        lease_time: secs(OptionCode::AddressLeaseTime),
        t1: secs(OptionCode::Renewal),
        t2: secs(OptionCode::Rebinding),
    };
    if kind != MessageType::Nak {
        let a = reply.yiaddr;
        if a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback() {
            return Err(ReplyError::Invalid("unusable address offered"));
        }
        if let Some(mask) = reply.mask {
            if super::lease::prefix_len(mask).is_none() {
                return Err(ReplyError::Invalid("non-contiguous subnet mask"));
            }
        }
    }
    Ok(reply)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    /// A server's reply as dnsmasq would send it.
    pub fn server_reply(kind: MessageType, xid: u32, yiaddr: Ipv4Addr, lease_secs: Option<u32>) -> Message {
        let mut m = Message::new_with_id(
            xid,
            Ipv4Addr::UNSPECIFIED,
            yiaddr,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &MAC,
        );
        m.set_opcode(Opcode::BootReply);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        o.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 1)));
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 0, 1)]));
        o.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(10, 0, 0, 1)]));
        if let Some(s) = lease_secs {
            o.insert(DhcpOption::AddressLeaseTime(s));
        }
        m
    }

    fn cfg() -> ClientConfig {
        ClientConfig {
            mac: MAC,
            hostname: Some("node1".into()),
            vendor_class: "clump".into(),
        }
    }

    #[test]
    fn the_template_decodes() {
        let m = Message::from_bytes(&blank_request()).unwrap();
        assert_eq!((m.opcode(), m.hlen(), m.xid()), (Opcode::BootRequest, 6, 0));
    }

    #[test]
    fn discover_asks_for_broadcast_and_identifies_clump() {
        let bytes = discover(&cfg(), 0xdead_beef, 3);
        let m = Message::from_bytes(&bytes).unwrap();
        assert_eq!(m.opcode(), Opcode::BootRequest);
        assert_eq!(m.xid(), 0xdead_beef);
        assert_eq!(m.secs(), 3);
        assert!(m.flags().broadcast());
        assert_eq!(m.opts().msg_type(), Some(MessageType::Discover));
        assert_eq!(
            m.opts().get(OptionCode::ClassIdentifier),
            Some(&DhcpOption::ClassIdentifier(b"clump".to_vec()))
        );
        let mut id = vec![1];
        id.extend_from_slice(&MAC);
        assert_eq!(
            m.opts().get(OptionCode::ClientIdentifier),
            Some(&DhcpOption::ClientIdentifier(id))
        );
    }

    #[test]
    fn renew_request_uses_ciaddr_and_no_server_id() {
        let m = Message::from_bytes(&request_extend(&cfg(), 7, 0, Ipv4Addr::new(10, 0, 0, 50))).unwrap();
        assert_eq!(m.ciaddr(), Ipv4Addr::new(10, 0, 0, 50));
        assert!(!m.flags().broadcast());
        assert!(m.opts().get(OptionCode::ServerIdentifier).is_none());
        assert!(m.opts().get(OptionCode::RequestedIpAddress).is_none());
    }

    #[test]
    fn replies_are_checked() {
        let yi = Ipv4Addr::new(10, 0, 0, 50);
        let good = server_reply(MessageType::Offer, 9, yi, Some(3600))
            .to_vec()
            .unwrap();
        let r = parse_reply(&good, &MAC, 9).unwrap();
        assert_eq!(
            (r.kind, r.yiaddr, r.server),
            (MessageType::Offer, yi, Ipv4Addr::new(10, 0, 0, 1))
        );
        assert_eq!(r.lease_time, Some(Duration::from_secs(3600)));
        assert_eq!(parse_reply(&good, &MAC, 10), Err(ReplyError::OtherTransaction));
        assert_eq!(
            parse_reply(&good, &[1, 2, 3, 4, 5, 6], 9),
            Err(ReplyError::OtherClient)
        );
        assert!(matches!(
            parse_reply(&good[..100], &MAC, 9),
            Err(ReplyError::Malformed(_))
        ));
        assert!(matches!(parse_reply(&[], &MAC, 9), Err(ReplyError::Malformed(_))));

        let req = discover(&cfg(), 9, 0);
        assert_eq!(parse_reply(&req, &MAC, 9), Err(ReplyError::NotReply));

        let mut m = server_reply(MessageType::Offer, 9, Ipv4Addr::BROADCAST, None);
        assert!(matches!(
            parse_reply(&m.to_vec().unwrap(), &MAC, 9),
            Err(ReplyError::Invalid(_))
        ));
        m = server_reply(MessageType::Offer, 9, yi, None);
        m.opts_mut()
            .insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 0, 255, 0)));
        assert!(matches!(
            parse_reply(&m.to_vec().unwrap(), &MAC, 9),
            Err(ReplyError::Invalid(_))
        ));
        m = server_reply(MessageType::Offer, 9, yi, None);
        m.opts_mut().remove(OptionCode::ServerIdentifier);
        assert!(matches!(
            parse_reply(&m.to_vec().unwrap(), &MAC, 9),
            Err(ReplyError::Invalid(_))
        ));
        m = server_reply(MessageType::Discover, 9, yi, None);
        assert!(matches!(
            parse_reply(&m.to_vec().unwrap(), &MAC, 9),
            Err(ReplyError::Invalid(_))
        ));
    }

    #[test]
    fn options_dhcproto_would_assert_on_are_rejected() {
        let good = server_reply(MessageType::Ack, 9, Ipv4Addr::new(10, 0, 0, 50), Some(120))
            .to_vec()
            .unwrap();
        assert!(parse_reply(&good, &MAC, 9).is_ok());
        for (code, len) in [(152u8, 2u8), (151, 0), (94, 1), (80, 1), (81, 1), (52, 1)] {
            let mut b = good[..OPTIONS_AT].to_vec();
            b.extend([code, len]);
            b.extend(std::iter::repeat_n(0x41, usize::from(len)));
            b.extend(&good[OPTIONS_AT..]);
            assert!(
                matches!(parse_reply(&b, &MAC, 9), Err(ReplyError::Malformed(_))),
                "option {code} len {len}"
            );
        }
        let mut long_hlen = good.clone();
        long_hlen[HLEN_AT] = 200;
        assert!(matches!(
            parse_reply(&long_hlen, &MAC, 9),
            Err(ReplyError::Malformed(_))
        ));
        let mut truncated = good[..OPTIONS_AT].to_vec();
        truncated.extend([6, 8, 10, 0]);
        assert!(matches!(
            parse_reply(&truncated, &MAC, 9),
            Err(ReplyError::Malformed(_))
        ));
    }

    #[test]
    fn corrupted_replies_never_panic() {
        let good = server_reply(MessageType::Ack, 9, Ipv4Addr::new(10, 0, 0, 50), Some(120))
            .to_vec()
            .unwrap();
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..5000 {
            let mut b = good.clone();
            for _ in 0..rng.usize(1..8) {
                let i = rng.usize(..b.len());
                b[i] = rng.u8(..);
            }
            b.truncate(rng.usize(..=b.len()));
            let _ = parse_reply(&b, &MAC, 9);
        }
    }
}
