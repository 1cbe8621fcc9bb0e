//! Network interfaces of a node: finding the Ethernet NICs (sysfs) and configuring them (rtnetlink).

pub mod arp;
pub mod dhcp;
pub mod frame;
pub mod ipv4ll;
pub mod nic;
pub mod packet;
pub mod rtnl;

pub use nic::{list_ethernet, Nic};
pub use rtnl::{Rtnl, RtnlError};
