//! NIC bring-up: every Ethernet NIC is set up, carrier is awaited (bounded), and one NIC is chosen
//! for the node. Addresses come from the network service (DHCP), not from PID 1.

use clump_net::{nic, Nic, Rtnl};
use std::path::Path;
use std::time::{Duration, Instant};

const CLASS_NET: &str = "/sys/class/net";
const POLL: Duration = Duration::from_millis(50);

/// The NIC the node uses, if any.
#[derive(Debug, Clone)]
pub struct Chosen {
    pub nic: Nic,
    pub carrier: bool,
}

/// Brings up loopback and every NIC, waits up to `carrier_wait` for carrier on all of them, logs
/// each one and returns the chosen one: the one named by `prefer` (name) if it exists, else the one
/// with `boot_mac` (the NIC that network-booted the node), else the first with carrier in bus
/// order, else the first.
pub fn bring_up(carrier_wait: Duration, prefer: Option<&str>, boot_mac: Option<&str>) -> Option<Chosen> {
    let class_net = Path::new(CLASS_NET);
    let mut rtnl = match Rtnl::open() {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!(error = %e, "cannot open rtnetlink: interfaces stay down");
            None
        }
    };
    if let (Some(r), Some(lo)) = (rtnl.as_mut(), ifindex(class_net, "lo")) {
        if let Err(e) = r.set_link_up(lo) {
            tracing::warn!(iface = "lo", error = %e, "link up failed");
        }
    }
    let nics = nic::list_ethernet(class_net);
    if nics.is_empty() {
        tracing::error!("no network interface found");
        return None;
    }
    for n in &nics {
        if let Some(r) = rtnl.as_mut() {
            if let Err(e) = r.set_link_up(n.index) {
                tracing::warn!(iface = %n.name, error = %e, "link up failed");
            }
        }
    }
    let deadline = Instant::now() + carrier_wait;
    let carriers = loop {
        let c: Vec<bool> = nics
            .iter()
            .map(|n| nic::carrier(class_net, &n.name) == Some(true))
            .collect();
        if c.iter().all(|up| *up) || Instant::now() >= deadline {
            break c;
        }
        std::thread::sleep(POLL);
    };
    for (n, up) in nics.iter().zip(&carriers) {
        tracing::info!(iface = %n.name, driver = %n.driver, mac = %n.mac, carrier = if *up { "up" } else { "down" }, "nic");
    }
    let pick = prefer
        .and_then(|name| nics.iter().position(|n| n.name == name))
        .or_else(|| boot_mac.and_then(|mac| nics.iter().position(|n| n.mac.eq_ignore_ascii_case(mac))))
        .or_else(|| carriers.iter().position(|up| *up))
        .unwrap_or(0);
    if let Some(want) = prefer {
        if nics[pick].name != want {
            tracing::warn!(
                iface = want,
                "clump.iface names no Ethernet interface; using another"
            );
        }
    }
    Some(Chosen {
        nic: nics[pick].clone(),
        carrier: carriers[pick],
    })
}

fn ifindex(class_net: &Path, iface: &str) -> Option<u32> {
    std::fs::read_to_string(class_net.join(iface).join("ifindex"))
        .ok()?
        .trim()
        .parse()
        .ok()
}
