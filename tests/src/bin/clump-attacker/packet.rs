//! A packet socket on the lab's bridge: it captures the cluster's genuine datagrams (the bridge
//! put in promiscuous mode, so frames between two nodes' ports reach it too) and sends IPv4/UDP
//! packets with a source address of our choosing.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const ETH_P_IP: u16 = 0x0800;

/// A datagram a node sent, as it crossed the bridge.
#[derive(Debug, Clone)]
pub struct Captured {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub src_mac: [u8; 6],
    pub payload: Vec<u8>,
}

#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn link_addr(ifindex: i32, mac: [u8; 6]) -> libc::sockaddr_ll {
    let mut sll_addr = [0u8; 8];
    sll_addr[..6].copy_from_slice(&mac);
    libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: ETH_P_IP.to_be(),
        sll_ifindex: ifindex,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr,
    }
}

impl PacketSocket {
    /// A cooked (`SOCK_DGRAM`) IPv4 packet socket on `iface`, which is set promiscuous.
    pub fn open(iface: &str) -> io::Result<Self> {
        let name = std::ffi::CString::new(iface).map_err(io::Error::other)?;
        // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        let ifindex = i32::try_from(ifindex).map_err(io::Error::other)?;
        // SAFETY: plain socket(2); the result is checked before use.
        let raw = check(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_IP.to_be()),
            )
        })?;
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let addr = link_addr(ifindex, [0; 6]);
        // SAFETY: `addr` is a fully initialised sockaddr_ll and its size is passed with it.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex,
            mr_type: libc::PACKET_MR_PROMISC as u16,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        // SAFETY: `mreq` is a fully initialised packet_mreq and its size is passed with it.
        check(unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                (&raw const mreq).cast(),
                size_of::<libc::packet_mreq>() as libc::socklen_t,
            )
        })?;
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        // SAFETY: as above, for a timeval.
        check(unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        })?;
        Ok(PacketSocket { fd, ifindex })
    }

    /// The next UDP datagram to or from `port` that another host sent, or `None` after 200 ms
    /// without one (or for any other packet).
    pub fn capture(&self, port: u16, buf: &mut [u8]) -> io::Result<Option<Captured>> {
        // SAFETY: zeroed is a valid sockaddr_ll (plain integers and arrays).
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `buf` and `from` are valid for writes of the sizes passed.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&raw mut from).cast(),
                &mut len,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e),
            };
        }
        if from.sll_pkttype == libc::PACKET_OUTGOING {
            return Ok(None); // our own
        }
        let packet = &buf[..(n as usize).min(buf.len())];
        let Some((src, dst, sport, dport, payload)) = parse_udp(packet) else {
            return Ok(None);
        };
        if sport != port && dport != port {
            return Ok(None);
        }
        let mut src_mac = [0u8; 6];
        src_mac.copy_from_slice(&from.sll_addr[..6]);
        Ok(Some(Captured {
            src,
            dst,
            src_mac,
            payload: payload.to_vec(),
        }))
    }

    /// Sends `payload` as UDP from `src` to `dst`, in a frame to `dst_mac`.
    pub fn send_udp(
        &self,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        payload: &[u8],
        dst_mac: [u8; 6],
        ident: u16,
    ) -> io::Result<()> {
        let packet = udp_packet(*src.ip(), *dst.ip(), src.port(), dst.port(), payload, ident);
        let to = link_addr(self.ifindex, dst_mac);
        // SAFETY: `packet` and `to` are valid for reads of the sizes passed.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&raw const to).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

fn checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet (no options, DF) carrying one UDP datagram with no checksum (allowed over
/// IPv4).
pub fn udp_packet(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
    ident: u16,
) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&[0x40, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let sum = checksum(&p);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// Source, destination, ports and payload of an unfragmented IPv4/UDP packet.
pub fn parse_udp(p: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, u16, u16, &[u8])> {
    if p.len() < 20 || p[0] >> 4 != 4 || p[9] != 17 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    let fragment = u16::from_be_bytes([p[6], p[7]]) & 0x3fff;
    if fragment != 0 || ihl < 20 || total > p.len() || total < ihl + 8 {
        return None;
    }
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    let u = &p[ihl..total];
    let sport = u16::from_be_bytes([u[0], u[1]]);
    let dport = u16::from_be_bytes([u[2], u[3]]);
    let len = usize::from(u16::from_be_bytes([u[4], u[5]]));
    if len < 8 || len > u.len() {
        return None;
    }
    Some((src, dst, sport, dport, &u[8..len]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_packet_parses_back_and_has_a_valid_header_checksum() {
        let src = Ipv4Addr::new(10, 99, 1, 2);
        let dst = Ipv4Addr::new(10, 64, 3, 101);
        let p = udp_packet(src, dst, 7171, 7171, b"CL\x01payload", 77);
        assert_eq!(checksum(&p[..20]), 0, "the header sums to 0xffff");
        let (s, d, sp, dp, payload) = parse_udp(&p).expect("parses");
        assert_eq!((s, d, sp, dp), (src, dst, 7171, 7171));
        assert_eq!(payload, b"CL\x01payload");
        assert!(parse_udp(&p[..25]).is_none(), "a truncated packet");
    }
}
