//! Network interfaces of a node: finding the Ethernet NICs (sysfs) and configuring them (rtnetlink).

pub mod dhcp;
pub mod nic;
pub mod rtnl;

pub use nic::{list_ethernet, Nic};
pub use rtnl::{Rtnl, RtnlError};
