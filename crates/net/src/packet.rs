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

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
