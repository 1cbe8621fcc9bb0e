//! Ethernet NICs as sysfs shows them under `/sys/class/net`.

use std::path::{Path, PathBuf};

/// One wired Ethernet interface backed by a device (not a bridge, tap or loopback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub name: String,
    pub index: u32,
    pub mac: String,
    /// Kernel driver bound to the device (`e1000`, `virtio_net`, ...).
    pub driver: String,
    /// Resolved device path: sorting by it orders NICs by bus position, like firmware does.
    pub device: PathBuf,
}

const ARPHRD_ETHER: &str = "1";

/// Every physical Ethernet NIC under `class_net` (normally `/sys/class/net`), in bus order.
/// Wireless and enslaved (bonded/bridged) interfaces are left out.
pub fn list_ethernet(class_net: &Path) -> Vec<Nic> {
    let Ok(entries) = std::fs::read_dir(class_net) else {
        return Vec::new();
    };
    let mut nics: Vec<Nic> = entries
        .flatten()
        .filter_map(|e| read_nic(&e.path(), true))
        .collect();
    nics.sort_by(|a, b| a.device.cmp(&b.device).then_with(|| a.name.cmp(&b.name)));
    nics
}

/// The Ethernet interface `name`, physical or not (a veth or tap named by the user).
pub fn by_name(class_net: &Path, name: &str) -> Option<Nic> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return None;
    }
    read_nic(&class_net.join(name), false)
}

fn read_nic(dir: &Path, physical_only: bool) -> Option<Nic> {
    let attr = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .ok()
            .map(|s| s.trim().to_string())
    };
    let device = match std::fs::canonicalize(dir.join("device")) {
        Ok(d) => d,
        Err(_) if !physical_only => dir.to_path_buf(),
        Err(_) => return None,
    };
    if attr("type")? != ARPHRD_ETHER || dir.join("wireless").exists() || dir.join("phy80211").exists() {
        return None;
    }
    if dir.join("master").exists() {
        return None;
    }
    let driver = std::fs::read_link(dir.join("device/driver"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "unknown".into());
    Some(Nic {
        name: dir.file_name()?.to_string_lossy().into_owned(),
        index: attr("ifindex")?.parse().ok()?,
        mac: attr("address")?,
        driver,
        device,
    })
}

/// Carrier of `iface`: `Some(true)` when the link is up with a cable/peer, `None` while the
/// interface is administratively down (the kernel answers EINVAL then) or gone.
pub fn carrier(class_net: &Path, iface: &str) -> Option<bool> {
    let text = std::fs::read_to_string(class_net.join(iface).join("carrier")).ok()?;
    match text.trim() {
        "1" => Some(true),
        "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn fake_nic(root: &Path, name: &str, index: u32, dev: &str, driver: &str, kind: &str) {
        let devdir = root.join("devices").join(dev);
        let drvdir = root.join("drivers").join(driver);
        std::fs::create_dir_all(&devdir).unwrap();
        std::fs::create_dir_all(&drvdir).unwrap();
        symlink(&drvdir, devdir.join("driver")).unwrap();
        let dir = root.join("class").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        symlink(&devdir, dir.join("device")).unwrap();
        std::fs::write(dir.join("type"), format!("{kind}\n")).unwrap();
        std::fs::write(dir.join("ifindex"), format!("{index}\n")).unwrap();
        std::fs::write(dir.join("address"), "52:54:00:12:34:56\n").unwrap();
        std::fs::write(dir.join("carrier"), "1\n").unwrap();
    }

    #[test]
    fn lists_physical_ethernet_in_bus_order() {
        let root = std::env::temp_dir().join(format!("clump-net-nic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        fake_nic(&root, "eth1", 3, "pci0000:00/0000:00:05.0", "e1000", "1");
        fake_nic(&root, "eth0", 2, "pci0000:00/0000:00:03.0", "virtio_net", "1");
        fake_nic(&root, "wlan0", 4, "pci0000:00/0000:00:06.0", "iwlwifi", "1");
        std::fs::create_dir_all(root.join("class/wlan0/wireless")).unwrap();
        fake_nic(&root, "ib0", 5, "pci0000:00/0000:00:07.0", "mlx", "32");
        std::fs::create_dir_all(root.join("class/lo")).unwrap();
        std::fs::write(root.join("class/lo/type"), "772\n").unwrap();

        let nics = list_ethernet(&root.join("class"));
        let names: Vec<(&str, &str, u32)> = nics
            .iter()
            .map(|n| (n.name.as_str(), n.driver.as_str(), n.index))
            .collect();
        assert_eq!(names, [("eth0", "virtio_net", 2), ("eth1", "e1000", 3)]);
        assert_eq!(carrier(&root.join("class"), "eth0"), Some(true));
        assert_eq!(carrier(&root.join("class"), "nope"), None);
        assert_eq!(by_name(&root.join("class"), "eth1").map(|n| n.index), Some(3));
        assert!(by_name(&root.join("class"), "../class/eth1").is_none());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn missing_directory_means_no_nics() {
        assert!(list_ethernet(Path::new("/nonexistent/class/net")).is_empty());
    }
}
