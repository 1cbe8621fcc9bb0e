//! `AF_PACKET` sockets bound to one interface: DHCP before the interface has an address, and ARP.

use rustix::net::addr::{SocketAddrArg, SocketAddrLen, SocketAddrOpaque};
use rustix::net::{AddressFamily, Protocol, RecvFlags, SendFlags, SocketFlags, SocketType};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];
const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;

/// A link-layer address (`struct sockaddr_ll`), which rustix does not provide.
#[derive(Debug, Clone, Copy)]
struct LinkAddr {
    ifindex: u32,
    protocol: u16,
    mac: [u8; 6],
}

// SAFETY: `with_sockaddr` passes `f` a pointer to a fully initialised `sockaddr_ll` on the stack
// and its exact size, valid for the duration of the call, which is what the trait requires.
unsafe impl SocketAddrArg for LinkAddr {
    unsafe fn with_sockaddr<R>(&self, f: impl FnOnce(*const SocketAddrOpaque, SocketAddrLen) -> R) -> R {
        let mut sll_addr = [0u8; 8];
        sll_addr[..6].copy_from_slice(&self.mac);
        let addr = libc::sockaddr_ll {
            sll_family: libc::AF_PACKET as u16,
            sll_protocol: self.protocol.to_be(),
            sll_ifindex: self.ifindex as i32,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 6,
            sll_addr,
        };
        f((&raw const addr).cast(), size_of::<libc::sockaddr_ll>() as _)
    }
}

/// A cooked (`SOCK_DGRAM`) packet socket for one EtherType on one interface: the kernel adds and
/// strips the Ethernet header; we see the IP or ARP packet.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
    protocol: u16,
}

impl PacketSocket {
    /// IPv4 packets of the interface (DHCP before there is an address).
    pub fn ipv4(ifindex: u32) -> io::Result<Self> {
        Self::open(ifindex, ETH_P_IP)
    }

    /// IPv4 packets of the interface carrying UDP to `port` (unfragmented), the rest filtered out
    /// in the kernel. Unfiltered, the DHCP client woke for every IPv4 packet the node received:
    /// in the lab a flood at the cluster port cost clump-netd a tenth of a guest's CPU.
    pub fn ipv4_udp_to(ifindex: u32, port: u16) -> io::Result<Self> {
        let socket = Self::open(ifindex, ETH_P_IP)?;
        socket.attach_filter(&udp_to_port(port))?;
        // What arrived before the filter was attached.
        let mut buf = [0u8; 2048];
        while socket.recv(&mut buf)?.is_some() {}
        Ok(socket)
    }

    fn attach_filter(&self, program: &[libc::sock_filter]) -> io::Result<()> {
        let prog = libc::sock_fprog {
            len: u16::try_from(program.len()).map_err(io::Error::other)?,
            filter: program.as_ptr().cast_mut(),
        };
        // SAFETY: `prog` points at `program`, alive for the call; the kernel copies the program
        // and checks it before attaching.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&raw const prog).cast(),
                size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// ARP packets of the interface (address probes, link-local claims, the subnet sweep).
    pub fn arp(ifindex: u32) -> io::Result<Self> {
        Self::open(ifindex, ETH_P_ARP)
    }

    fn open(ifindex: u32, protocol: u16) -> io::Result<Self> {
        let proto = Protocol::from_raw(
            rustix::net::RawProtocol::new(u32::from(protocol.to_be()))
                .ok_or_else(|| io::Error::other("protocol 0"))?,
        );
        let fd = rustix::net::socket_with(
            AddressFamily::PACKET,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            Some(proto),
        )?;
        rustix::net::bind(
            &fd,
            &LinkAddr {
                ifindex,
                protocol,
                mac: [0; 6],
            },
        )?;
        Ok(PacketSocket {
            fd,
            ifindex,
            protocol,
        })
    }

    /// Sends one packet (without Ethernet header) to `dst_mac`.
    pub fn send_to(&self, packet: &[u8], dst_mac: [u8; 6]) -> io::Result<()> {
        let to = LinkAddr {
            ifindex: self.ifindex,
            protocol: self.protocol,
            mac: dst_mac,
        };
        rustix::net::sendto(&self.fd, packet, SendFlags::empty(), &to)?;
        Ok(())
    }

    /// Receives one packet without blocking; `Ok(None)` when there is none.
    pub fn recv<'b>(&self, buf: &'b mut [u8]) -> io::Result<Option<&'b [u8]>> {
        match rustix::net::recv(&self.fd, &mut *buf, RecvFlags::DONTWAIT) {
            Ok((n, _)) => Ok(Some(&buf[..n.min(buf.len())])),
            Err(rustix::io::Errno::AGAIN) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// Classic BPF over an IPv4 packet (a cooked socket: the IP header at offset 0): accept UDP,
/// not a fragment, to `port`; drop everything else.
fn udp_to_port(port: u16) -> [libc::sock_filter; 9] {
    let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    const LD_B_ABS: u16 = 0x30;
    const LD_H_ABS: u16 = 0x28;
    const LD_H_IND: u16 = 0x48;
    const LDX_B_MSH: u16 = 0xb1;
    const JEQ_K: u16 = 0x15;
    const JSET_K: u16 = 0x45;
    const RET_K: u16 = 0x06;
    [
        op(LD_B_ABS, 0, 0, 9),    // protocol
        op(JEQ_K, 0, 6, 17),      // UDP, else drop
        op(LD_H_ABS, 0, 0, 6),    // flags and fragment offset
        op(JSET_K, 4, 0, 0x1fff), // a fragment: drop
        op(LDX_B_MSH, 0, 0, 0),   // x = header length
        op(LD_H_IND, 0, 0, 2),    // destination port
        op(JEQ_K, 0, 1, u32::from(port)),
        op(RET_K, 0, 0, 0xffff), // accept
        op(RET_K, 0, 0, 0),      // drop
    ]
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::PacketSocket;
    use std::net::UdpSocket;
    use std::time::{Duration, Instant};

    #[test]
    fn the_udp_port_filter_lets_only_that_port_through() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: a packet socket needs root");
            return;
        }
        let lo: u32 = std::fs::read_to_string("/sys/class/net/lo/ifindex")
            .expect("lo")
            .trim()
            .parse()
            .expect("an index");
        let sock = PacketSocket::ipv4_udp_to(lo, 6868).expect("packet socket");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let (mut hits, mut others) = (0, 0);
        let end = Instant::now() + Duration::from_secs(2);
        let mut buf = [0u8; 2048];
        while Instant::now() < end && hits == 0 {
            tx.send_to(b"other", "127.0.0.1:6969").expect("send");
            tx.send_to(b"dhcp", "127.0.0.1:6868").expect("send");
            std::thread::sleep(Duration::from_millis(20));
            while let Some(p) = sock.recv(&mut buf).expect("recv") {
                match crate::frame::parse_udp_ipv4(p).map(|d| d.dst_port) {
                    Some(6868) => hits += 1,
                    _ => others += 1,
                }
            }
        }
        assert!(hits > 0, "the port's packets were filtered out");
        assert_eq!(others, 0, "other packets passed the filter");
    }
}
