//! The boot stages the screen shows before the runtime answers: hardware, network card, address,
//! cluster. Read from PID 1's log (its console protocol, ARCHITECTURE.md) and the lease file,
//! both written by the node itself, and from the local API's answer when there is one.

use clump_api::MapState;
use clump_screen::{BootStage, StageStatus};

/// What the files and the API say so far.
#[derive(Debug, Default, Clone)]
pub struct BootFacts {
    pub coldplug_done: bool,
    pub modules_loaded: usize,
    pub modules_failed: usize,
    /// `iface (driver)` and whether its carrier is up, for each NIC PID 1 reported.
    pub nics: Vec<(String, bool)>,
    pub no_nic: bool,
    /// PID 1 printed `ready`.
    pub ready: bool,
    /// From `/run/clump/lease.json`: `(address/prefix, via)` once bound.
    pub lease: Option<(String, String)>,
    /// From the local API; `None` while it does not answer.
    pub cluster: Option<MapState>,
}

impl BootFacts {
    /// Reads PID 1's log lines (`clump: ...`).
    pub fn read_init_log(&mut self, text: &str) {
        let mut fresh = BootFacts {
            lease: self.lease.take(),
            cluster: self.cluster,
            ..BootFacts::default()
        };
        for line in text.lines() {
            let Some(msg) = line.split_once("clump: ").map(|(_, m)| m) else {
                continue;
            };
            if msg.starts_with("stage=coldplug") {
                fresh.coldplug_done = true;
            } else if let Some(rest) = msg.strip_prefix("module ") {
                if rest.contains("result=loaded") {
                    fresh.modules_loaded += 1;
                } else if rest.contains("result=failed") {
                    fresh.modules_failed += 1;
                }
            } else if let Some(rest) = msg.strip_prefix("nic ") {
                let iface = field(rest, "iface").unwrap_or("?");
                let driver = field(rest, "driver").unwrap_or("?");
                fresh.nics.push((
                    format!("{iface} ({driver})"),
                    field(rest, "carrier") == Some("up"),
                ));
            } else if msg.starts_with("error: no network interface found") {
                fresh.no_nic = true;
            } else if msg.starts_with("ready ") {
                fresh.ready = true;
            }
        }
        *self = fresh;
    }

    /// Reads `/run/clump/lease.json`; anything unreadable leaves the lease unknown.
    pub fn read_lease(&mut self, json: &str) {
        self.lease = lease_of(json);
    }

    pub fn stages(&self) -> Vec<BootStage> {
        let hardware = if self.coldplug_done {
            let mut d = format!("{} drivers loaded", self.modules_loaded);
            if self.modules_failed > 0 {
                d.push_str(&format!(", {} failed", self.modules_failed));
            }
            stage("Hardware", StageStatus::Done, d)
        } else {
            stage("Hardware", StageStatus::Running, "loading drivers".into())
        };
        let nic = if self.no_nic {
            stage(
                "Network card",
                StageStatus::Failed,
                "no network card found".into(),
            )
        } else if let Some((name, _)) = self.nics.iter().find(|(_, up)| *up) {
            stage("Network card", StageStatus::Done, format!("{name}, link up"))
        } else if let Some((name, _)) = self.nics.first() {
            let status = if self.ready {
                StageStatus::Failed
            } else {
                StageStatus::Running
            };
            stage("Network card", status, format!("{name}, no link (cable?)"))
        } else if self.coldplug_done {
            stage("Network card", StageStatus::Running, "looking for a link".into())
        } else {
            stage("Network card", StageStatus::Pending, String::new())
        };
        let address = match &self.lease {
            Some((addr, via)) => stage("Address", StageStatus::Done, format!("{addr} ({via})")),
            None if self.no_nic => stage("Address", StageStatus::Failed, "no network".into()),
            None if self.ready => stage(
                "Address",
                StageStatus::Failed,
                "no DHCP answer yet, still asking".into(),
            ),
            None if !self.nics.is_empty() => stage("Address", StageStatus::Running, "asking DHCP".into()),
            None => stage("Address", StageStatus::Pending, String::new()),
        };
        let cluster = match self.cluster {
            Some(MapState::NoKey) => stage(
                "Cluster",
                StageStatus::Failed,
                "no cluster key: this node joins nothing (boot with clump.key= or an image with a key)"
                    .into(),
            ),
            Some(MapState::NoLease) => {
                stage("Cluster", StageStatus::Running, "waiting for an address".into())
            }
            Some(MapState::Joining) => {
                stage("Cluster", StageStatus::Running, "looking for other nodes".into())
            }
            Some(MapState::Joined) => stage("Cluster", StageStatus::Done, "joined".into()),
            Some(MapState::Alone) => stage("Cluster", StageStatus::Done, "no other node yet".into()),
            Some(MapState::Unknown) => stage("Cluster", StageStatus::Running, String::new()),
            None if self.lease.is_some() => {
                stage("Cluster", StageStatus::Running, "starting the runtime".into())
            }
            None => stage("Cluster", StageStatus::Pending, String::new()),
        };
        vec![hardware, nic, address, cluster]
    }
}

fn stage(name: &str, status: StageStatus, detail: String) -> BootStage {
    BootStage {
        name: name.to_string(),
        status,
        detail,
    }
}

/// The value of `key=value` among space-separated fields.
fn field<'a>(fields: &'a str, key: &str) -> Option<&'a str> {
    fields
        .split_whitespace()
        .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
}

/// `(address/prefix, via)` of a bound lease file.
pub fn lease_of(json: &str) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    if v.get("state")?.as_str()? != "bound" {
        return None;
    }
    let lease = v.get("lease")?;
    let addr = lease.get("address")?.as_str()?;
    let prefix = lease.get("prefix_len")?.as_u64()?;
    let via = v.get("via").and_then(|x| x.as_str()).unwrap_or("dhcp");
    Some((format!("{addr}/{prefix}"), via.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "clump: stage=start t=3001\n\
        clump: module name=virtio_net result=loaded\n\
        clump: module name=bochs result=loaded\n\
        clump: module name=foo result=failed error=ENOENT\n\
        clump: stage=coldplug t=4100\n\
        clump: nic iface=eth0 driver=virtio_net mac=52:54:00:00:00:01 carrier=up\n";

    #[test]
    fn stages_follow_the_log_the_lease_and_the_api() {
        let mut f = BootFacts::default();
        assert_eq!(f.stages()[0].status, StageStatus::Running);
        f.read_init_log(LOG);
        let s = f.stages();
        assert_eq!(s[0].detail, "2 drivers loaded, 1 failed");
        assert_eq!(s[1].status, StageStatus::Done);
        assert_eq!(s[1].detail, "eth0 (virtio_net), link up");
        assert_eq!(s[2].status, StageStatus::Running);
        f.read_lease(
            r#"{"iface":"eth0","via":"dhcp","state":"bound","lease":{"address":"10.0.0.5","prefix_len":24}}"#,
        );
        f.read_init_log(LOG);
        assert_eq!(f.stages()[2].detail, "10.0.0.5/24 (dhcp)");
        assert_eq!(f.stages()[3].detail, "starting the runtime");
        f.cluster = Some(MapState::NoKey);
        assert_eq!(f.stages()[3].status, StageStatus::Failed);
    }

    #[test]
    fn no_nic_and_broken_files_are_said_plainly() {
        let mut f = BootFacts::default();
        f.read_init_log("clump: stage=coldplug t=1\nclump: error: no network interface found\n");
        assert_eq!(f.stages()[1].status, StageStatus::Failed);
        assert_eq!(f.stages()[2].status, StageStatus::Failed);
        f.read_lease("{not json");
        assert!(f.lease.is_none());
        f.read_lease(r#"{"state":"unbound"}"#);
        assert!(f.lease.is_none());
    }
}
