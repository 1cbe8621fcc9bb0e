//! DHCPv4 client (RFC 2131), sans-I/O: [`Client`] is fed packets and time and answers with
//! [`Action`]s; sockets, ARP probes and address configuration happen at the edge. dhcproto
//! encodes and decodes the messages.

mod client;
mod lease;
mod message;

pub use client::{Action, Client, ClientConfig, Counters, Dest, Phase};
pub use lease::{Lease, Options};
pub use message::{parse_reply, Reply, ReplyError, CLIENT_PORT, SERVER_PORT};
