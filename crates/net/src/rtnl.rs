//! A synchronous rtnetlink client: PID 1 has no async runtime, and one request at a time is all
//! a node's network setup needs.

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, CacheInfo};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RtnlError {
    #[error("netlink socket: {0}")]
    Socket(io::Error),
    #[error("kernel refused {what}: {source}")]
    Refused { what: &'static str, source: io::Error },
    #[error("malformed netlink reply: {0}")]
    Malformed(String),
}

/// An open `NETLINK_ROUTE` socket.
pub struct Rtnl {
    socket: Socket,
    seq: u32,
}

impl std::fmt::Debug for Rtnl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rtnl").field("seq", &self.seq).finish()
    }
}

impl Rtnl {
    pub fn open() -> Result<Self, RtnlError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(RtnlError::Socket)?;
        socket.bind_auto().map_err(RtnlError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(RtnlError::Socket)?;
        Ok(Rtnl { socket, seq: 0 })
    }

    /// Sets the interface administratively up (`ip link set dev X up`).
    pub fn set_link_up(&mut self, index: u32) -> Result<(), RtnlError> {
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.header.flags = LinkFlags::Up;
        link.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(link), "link up")
    }

    /// Sets the interface MTU.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<(), RtnlError> {
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.attributes.push(LinkAttribute::Mtu(mtu));
        self.request(RouteNetlinkMessage::SetLink(link), "set mtu")
    }

    /// Adds or refreshes `address/prefix_len` on the interface (`ip addr replace`), with the
    /// lease time as its lifetime so the kernel drops it even if we die (`None`: forever).
    pub fn replace_address(
        &mut self,
        index: u32,
        address: Ipv4Addr,
        prefix_len: u8,
        broadcast: Option<Ipv4Addr>,
        lifetime: Option<Duration>,
    ) -> Result<(), RtnlError> {
        let mut msg = address_message(index, address, prefix_len);
        let bcast = broadcast.unwrap_or_else(|| broadcast_of(address, prefix_len));
        msg.attributes.push(AddressAttribute::Broadcast(bcast));
        if let Some(life) = lifetime {
            let secs = u32::try_from(life.as_secs()).unwrap_or(u32::MAX - 1);
            let mut info = CacheInfo::default();
            info.ifa_preferred = secs;
            info.ifa_valid = secs;
            msg.attributes.push(AddressAttribute::CacheInfo(info));
        }
        self.request_with(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            "add address",
        )
    }

    /// Removes `address/prefix_len` from the interface.
    pub fn delete_address(&mut self, index: u32, address: Ipv4Addr, prefix_len: u8) -> Result<(), RtnlError> {
        let msg = address_message(index, address, prefix_len);
        self.request(RouteNetlinkMessage::DelAddress(msg), "delete address")
    }

    /// Sets the default route via `gateway` on the interface (`ip route replace default`).
    pub fn replace_default_route(&mut self, index: u32, gateway: Ipv4Addr) -> Result<(), RtnlError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Dhcp;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        msg.attributes.push(RouteAttribute::Oif(index));
        self.request_with(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            "add default route",
        )
    }

    fn request(&mut self, msg: RouteNetlinkMessage, what: &'static str) -> Result<(), RtnlError> {
        self.request_with(msg, 0, what)
    }

    /// Sends one request and waits for the kernel's acknowledgement.
    fn request_with(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        what: &'static str,
    ) -> Result<(), RtnlError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0).map_err(RtnlError::Socket)?;

        let mut rx = vec![0u8; 16 * 1024];
        loop {
            let n = self.socket.recv(&mut &mut rx[..], 0).map_err(RtnlError::Socket)?;
            let mut offset = 0;
            while offset < n {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[offset..n])
                    .map_err(|e| RtnlError::Malformed(e.to_string()))?;
                let len = reply.header.length as usize;
                if reply.header.sequence_number == self.seq {
                    if let NetlinkPayload::Error(err) = reply.payload {
                        return match err.code {
                            None => Ok(()),
                            Some(code) => Err(RtnlError::Refused {
                                what,
                                source: io::Error::from_raw_os_error(-code.get()),
                            }),
                        };
                    }
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
        }
    }
}

fn address_message(index: u32, address: Ipv4Addr, prefix_len: u8) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = prefix_len;
    msg.header.index = index;
    msg.attributes.push(AddressAttribute::Local(IpAddr::V4(address)));
    msg.attributes
        .push(AddressAttribute::Address(IpAddr::V4(address)));
    msg
}

/// The directed broadcast address of a subnet.
pub fn broadcast_of(address: Ipv4Addr, prefix_len: u8) -> Ipv4Addr {
    let host_bits = u32::MAX.checked_shr(u32::from(prefix_len)).unwrap_or(0);
    Ipv4Addr::from(u32::from(address) | host_bits)
}

#[cfg(test)]
mod tests {
    use super::broadcast_of;
    use std::net::Ipv4Addr;

    #[test]
    fn broadcasts() {
        assert_eq!(
            broadcast_of(Ipv4Addr::new(10, 0, 0, 7), 24),
            Ipv4Addr::new(10, 0, 0, 255)
        );
        assert_eq!(
            broadcast_of(Ipv4Addr::new(10, 0, 5, 7), 22),
            Ipv4Addr::new(10, 0, 7, 255)
        );
        assert_eq!(
            broadcast_of(Ipv4Addr::new(10, 0, 0, 7), 32),
            Ipv4Addr::new(10, 0, 0, 7)
        );
        assert_eq!(broadcast_of(Ipv4Addr::new(10, 0, 0, 7), 0), Ipv4Addr::BROADCAST);
    }
}
