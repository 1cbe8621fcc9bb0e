//! Coldplug: load drivers for the devices that exist before anyone listened for uevents.

use crate::{LoadEvent, Loader, ModuleSys};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// What a coldplug run did.
#[derive(Debug, Default)]
pub struct ColdplugReport {
    pub passes: usize,
    pub modaliases: usize,
    pub events: Vec<LoadEvent>,
}

/// Every `modalias` under `<sysfs>/bus/*/devices/*/`. Unreadable entries are skipped: a device
/// can vanish while we walk.
pub fn scan_modaliases(sysfs: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let Ok(buses) = std::fs::read_dir(sysfs.join("bus")) else {
        return found;
    };
    for bus in buses.flatten() {
        let Ok(devices) = std::fs::read_dir(bus.path().join("devices")) else {
            continue;
        };
        for dev in devices.flatten() {
            if let Ok(text) = std::fs::read_to_string(dev.path().join("modalias")) {
                let alias = text.trim();
                if !alias.is_empty() {
                    found.insert(alias.to_string());
                }
            }
        }
    }
    found
}

/// Loads drivers for every device in sysfs, then again for the devices those drivers created
/// (virtio_pci creates the virtio devices that virtio_net binds to), until a pass finds nothing
/// new or `max_passes` is reached. `settle` is the pause after a pass that loaded something, for
/// buses that enumerate asynchronously (USB).
pub fn coldplug<S: ModuleSys>(
    loader: &mut Loader<S>,
    sysfs: &Path,
    max_passes: usize,
    settle: Duration,
) -> ColdplugReport {
    let mut report = ColdplugReport::default();
    let mut seen = BTreeSet::new();
    while report.passes < max_passes {
        let current = scan_modaliases(sysfs);
        let new: Vec<String> = current.difference(&seen).cloned().collect();
        if new.is_empty() {
            break;
        }
        report.passes += 1;
        let before = report.events.len();
        for alias in &new {
            report.events.extend(loader.load_modalias(alias));
        }
        seen.extend(new);
        if report.events.len() > before && !settle.is_zero() {
            std::thread::sleep(settle);
        }
    }
    report.modaliases = seen.len();
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AliasTable, DepTable, Outcome};
    use std::io;
    use std::path::PathBuf;

    /// Simulates the kernel: loading virtio_pci makes a virtio device appear in the fake sysfs.
    struct FakeKernel {
        sysfs: PathBuf,
        loaded: Vec<String>,
    }

    impl ModuleSys for FakeKernel {
        fn load(&mut self, path: &Path) -> io::Result<()> {
            let name = crate::module_name(&path.to_string_lossy());
            if name == "virtio_pci" {
                add_device(&self.sysfs, "virtio", "virtio0", "virtio:d00000001v00001AF4");
            }
            self.loaded.push(name);
            Ok(())
        }
    }

    fn add_device(sysfs: &Path, bus: &str, dev: &str, alias: &str) {
        let dir = sysfs.join("bus").join(bus).join("devices").join(dev);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("modalias"), format!("{alias}\n")).unwrap();
    }

    #[test]
    fn second_pass_finds_devices_created_by_the_first() {
        let tmp = std::env::temp_dir().join(format!("clump-kmod-coldplug-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        add_device(
            &tmp,
            "pci",
            "0000:00:03.0",
            "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
        );
        add_device(
            &tmp,
            "pci",
            "0000:00:01.0",
            "pci:v00008086d00007000sv0sd0bc06sc01i00",
        );
        std::fs::create_dir_all(tmp.join("bus/empty/devices/nothing")).unwrap();
        let (aliases, _) =
            AliasTable::parse("alias pci:v00001AF4d* virtio_pci\nalias virtio:d00000001v* virtio_net\n");
        let (deps, _) = DepTable::parse("k/virtio_pci.ko:\nk/virtio_net.ko:\n");
        let sys = FakeKernel {
            sysfs: tmp.clone(),
            loaded: Vec::new(),
        };
        let mut loader = Loader::new(PathBuf::from("/m"), aliases, deps, Default::default(), sys);
        let report = coldplug(&mut loader, &tmp, 8, Duration::ZERO);
        assert_eq!(report.passes, 2);
        assert_eq!(report.modaliases, 3);
        let mods: Vec<&str> = report.events.iter().map(|e| e.module.as_str()).collect();
        assert_eq!(mods, ["virtio_pci", "virtio_net"]);
        assert!(report.events.iter().all(|e| e.outcome == Outcome::Loaded));
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn missing_sysfs_is_empty_not_an_error() {
        assert!(scan_modaliases(Path::new("/nonexistent/sysfs")).is_empty());
    }
}
