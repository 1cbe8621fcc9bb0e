//! The Clump lab: boots Clump nodes in QEMU (TCG only) and drives them through their serial console
//! (ttyS0: a log file plus a socket to type into) and QMP.
//!
//! ```no_run
//! use std::time::Duration;
//! use clump_lab::{Artefacts, Boot, Node, NodeSpec, NicModel};
//!
//! let spec = NodeSpec::from_artefacts("node1", Boot::Kernel, &Artefacts::from_env())?.nic(NicModel::E1000);
//! let mut node = Node::start(spec)?;
//! // Not anchored with `^`: a `clump# ` prompt may precede PID 1's line on the console.
//! node.wait_for_line(r"clump: ready\b", Duration::from_secs(120))?;
//! let (code, out) = node.shell("uname -r", Duration::from_secs(30))?;
//! node.power_off(Duration::from_secs(60))?; // ACPI button, checked to end in a clean poweroff
//! # Ok::<(), clump_lab::Error>(())
//! ```
//!
//! Every wait is bounded; a timeout or an early QEMU exit is an error that quotes the end of the
//! serial log. Dropping a [`Node`] kills QEMU's process group; QEMU also dies with the lab process.
//!
//! A lone [`Node`]'s NICs never leave QEMU: each sits alone on its own QEMU hub (carrier up, no
//! traffic out). A [`Lab`] puts nodes on a bridge in a network namespace it creates, with dnsmasq as
//! DHCP (and TFTP) server there and no uplink. QEMU's user-mode networking is never used.

mod artefacts;
mod error;
mod firmware;
mod lab;
mod netfault;
mod node;
mod process;
mod qemu_args;
mod qmp;
mod serial;
mod shell;
mod spec;

pub use artefacts::{workspace_root, Artefacts};
pub use error::{Error, Result};
pub use firmware::Ovmf;
pub use lab::{
    link_names, netns_names, parse_leases, DhcpLease, Lab, LabConfig, LabLayout, Subnet, BRIDGE, MIN_LEASE,
    NETNS_PREFIX,
};
pub use netfault::{
    jitter_object, loss_ruleset, parse_drop_counters, udp_block_ruleset, Loss, BLOCK_TABLE, FAULT_TABLE,
};
pub use node::Node;
pub use qemu_args::{netdev_id, Layout, QEMU};
pub use qmp::Qmp;
pub use shell::job_id;
pub use spec::{
    Boot, Firmware, Mac, Medium, NetBackend, Nic, NicModel, NodeSpec, DEFAULT_MEMORY_MIB, NODE_CMDLINE,
};
