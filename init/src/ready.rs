//! The `clump: ready` line: once the NIC is up and the network service has a lease (or the wait
//! for one is over), with the interface, driver and address the node uses.

use crate::network::Chosen;
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// Where `clump-netd` publishes its lease (see ARCHITECTURE.md).
pub const LEASE_FILE: &str = "/run/clump/lease.json";

#[derive(Deserialize)]
struct LeaseFile {
    state: String,
    iface: String,
    via: String,
    lease: Option<LeaseAddr>,
}

#[derive(Deserialize)]
struct LeaseAddr {
    address: String,
    prefix_len: u8,
}

/// The address on file, if the lease is bound: `(iface, "a.b.c.d/nn", via)`.
pub fn bound_address(path: &Path) -> Option<(String, String, String)> {
    let f: LeaseFile = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let l = f.lease.filter(|_| f.state == "bound")?;
    Some((f.iface, format!("{}/{}", l.address, l.prefix_len), f.via))
}

#[derive(Debug)]
pub struct Readiness {
    chosen: Option<Chosen>,
    /// Waiting for a lease until then; `None` once the line is out (or nothing to wait for).
    deadline: Option<Duration>,
}

impl Readiness {
    /// `wait` is `None` when no network service runs: ready comes at once.
    pub fn new(chosen: Option<Chosen>, now: Duration, wait: Option<Duration>) -> Self {
        let mut r = Readiness {
            chosen,
            deadline: Some(now + wait.unwrap_or_default()),
        };
        if wait.is_none() || r.chosen.is_none() {
            r.announce(None);
        }
        r
    }

    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// Prints the ready line when the lease is on file or the wait is over.
    pub fn poll(&mut self, now: Duration) {
        let Some(deadline) = self.deadline else { return };
        if let Some(bound) = bound_address(Path::new(LEASE_FILE)) {
            self.announce(Some(bound));
        } else if now >= deadline {
            tracing::warn!(
                waited_ms = deadline.as_millis() as u64,
                "no address yet; the network service keeps trying"
            );
            self.announce(None);
        }
    }

    fn announce(&mut self, bound: Option<(String, String, String)>) {
        self.deadline = None;
        match (&self.chosen, bound) {
            (_, Some((iface, addr, via))) => {
                let driver = self
                    .chosen
                    .as_ref()
                    .filter(|c| c.nic.name == iface)
                    .map_or("unknown", |c| c.nic.driver.as_str());
                tracing::info!(iface = %iface, driver = %driver, addr = %addr, via = %via, "ready");
            }
            (Some(c), None) => tracing::info!(
                iface = %c.nic.name,
                driver = %c.nic.driver,
                carrier = if c.carrier { "up" } else { "down" },
                addr = "none",
                "ready"
            ),
            (None, None) => tracing::info!(iface = "none", "ready"),
        }
        crate::log::stage("ready");
        crate::log::boot_done();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_bound_lease_only() {
        let dir = std::env::temp_dir().join(format!("clump-init-ready-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("lease.json");
        std::fs::write(
            &p,
            r#"{"iface":"eth0","via":"dhcp","state":"bound","lease":{"address":"10.0.0.7","prefix_len":24}}"#,
        )
        .unwrap();
        assert_eq!(
            bound_address(&p),
            Some(("eth0".into(), "10.0.0.7/24".into(), "dhcp".into()))
        );
        std::fs::write(
            &p,
            r#"{"iface":"eth0","via":"dhcp","state":"unbound","lease":null}"#,
        )
        .unwrap();
        assert_eq!(bound_address(&p), None);
        std::fs::write(&p, "{not json").unwrap();
        assert_eq!(bound_address(&p), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
