//! `/run/clump/lease.json` and `/etc/resolv.conf`: what the node's other services and people read.

use clump_net::dhcp::Counters;
use serde::Serialize;
use std::io::Write;
use std::path::Path;

#[derive(Serialize)]
pub struct LeaseFile<'a> {
    pub iface: &'a str,
    pub driver: &'a str,
    pub mac: &'a str,
    pub via: &'a str,
    pub state: &'a str,
    /// `address` and `prefix_len` always; the DHCP lease's other fields when `via` is dhcp.
    pub lease: Option<serde_json::Value>,
    /// Seconds since boot when this was written.
    pub written_at: u64,
    pub dropped: Counters,
}

/// Writes `value` as JSON atomically (temp file + rename), so a reader never sees half a file.
pub fn write_json(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    serde_json::to_writer_pretty(&mut f, value)?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(tmp, path)
}

pub fn write_resolv_conf(path: &Path, lease: &clump_net::dhcp::Lease) -> std::io::Result<()> {
    let mut text = String::from("# written by clump-netd from the DHCP lease\n");
    if let Some(domain) = &lease.options.domain {
        text.push_str(&format!("search {domain}\n"));
    }
    for server in &lease.options.dns {
        text.push_str(&format!("nameserver {server}\n"));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)
}
