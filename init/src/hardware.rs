//! Drivers for the hardware the node finds: coldplug at boot, then hotplug from kernel uevents
//! (a USB NIC plugged in later gets its driver too), and the ACPI power button.

use clump_kmod::{coldplug, LinuxModules, LoadEvent, Loader, Outcome};
use rustix::net::{netlink, RecvFlags, SocketFlags, SocketType};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

const MAX_PASSES: usize = 8;
const SETTLE: Duration = Duration::from_millis(100);

/// Module loading and device events.
pub struct Hardware {
    loader: Option<Loader<LinuxModules>>,
    uevents: Option<OwnedFd>,
    power_buttons: Vec<File>,
}

impl std::fmt::Debug for Hardware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hardware")
            .field("power_buttons", &self.power_buttons.len())
            .finish()
    }
}

/// What a uevent means to PID 1.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// A network interface appeared.
    NetAdded(String),
    /// An input device appeared (maybe a power button).
    InputAdded,
}

impl Hardware {
    /// Opens the uevent socket first (so nothing that happens during coldplug is missed), then the
    /// module index. Either can fail; the node carries on without it.
    pub fn open(modules_dir: &Path, blacklist: &[String]) -> Self {
        let uevents = match open_uevent_socket() {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::warn!(error = %e, "no uevent socket: devices that appear later get no driver");
                None
            }
        };
        let loader = match Loader::open(modules_dir, Path::new("/proc/modules"), LinuxModules) {
            Ok((mut loader, bad_lines)) => {
                for e in bad_lines.iter().take(10) {
                    tracing::warn!(error = %e, "skipped line of module index");
                }
                for name in blacklist {
                    loader.skip(name);
                }
                Some(loader)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the module index: no drivers will be loaded");
                None
            }
        };
        Hardware {
            loader,
            uevents,
            power_buttons: Vec::new(),
        }
    }

    /// Loads the named modules, then the drivers of every device present. Returns the number of
    /// modules loaded.
    pub fn coldplug(&mut self, extra: &[String]) -> usize {
        let Some(loader) = self.loader.as_mut() else {
            return 0;
        };
        let mut loaded = 0;
        for name in extra {
            loaded += log_events(&loader.load(name));
        }
        let report = coldplug(loader, Path::new("/sys"), MAX_PASSES, SETTLE);
        loaded += log_events(&report.events);
        // Devices that the drivers just loaded created (the ACPI button's input device, which
        // evdev serves) announced themselves on the uevent socket: load their drivers now, so
        // the power button works from the moment the node says it is ready.
        for _ in 0..MAX_PASSES {
            let (_, more) = self.drain_uevents();
            if more == 0 {
                break;
            }
            loaded += more;
            std::thread::sleep(SETTLE);
        }
        tracing::info!(
            devices = report.modaliases,
            passes = report.passes,
            loaded,
            "coldplug"
        );
        self.open_power_buttons();
        loaded
    }

    pub fn uevent_fd(&self) -> Option<BorrowedFd<'_>> {
        self.uevents.as_ref().map(|fd| fd.as_fd())
    }

    pub fn power_button_fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.power_buttons.iter().map(|f| f.as_fd())
    }

    /// Handles every pending uevent.
    pub fn handle_uevents(&mut self) -> Vec<Change> {
        let (changes, _) = self.drain_uevents();
        if changes.contains(&Change::InputAdded) {
            self.open_power_buttons();
        }
        changes
    }

    /// Loads drivers for every pending uevent; returns the changes and how many modules loaded.
    fn drain_uevents(&mut self) -> (Vec<Change>, usize) {
        let mut changes = Vec::new();
        let mut loaded = 0;
        let Some(fd) = self.uevents.as_ref() else {
            return (changes, loaded);
        };
        let mut buf = [0u8; 8192];
        while let Ok((n, _)) = rustix::net::recv(fd, &mut buf[..], RecvFlags::DONTWAIT) {
            let Some(ev) = clump_kmod::uevent::parse(&buf[..n.min(buf.len())]) else {
                continue;
            };
            if ev.action != "add" {
                continue;
            }
            if let (Some(alias), Some(loader)) = (ev.modalias.as_deref(), self.loader.as_mut()) {
                loaded += log_events(&loader.load_modalias(alias));
            }
            match (ev.subsystem.as_deref(), ev.interface) {
                (Some("net"), Some(iface)) => changes.push(Change::NetAdded(iface)),
                (Some("input"), _) => changes.push(Change::InputAdded),
                _ => {}
            }
        }
        (changes, loaded)
    }

    /// True when a power button was pressed since the last call.
    pub fn power_pressed(&mut self) -> bool {
        let mut pressed = false;
        for dev in &mut self.power_buttons {
            let mut buf = [0u8; INPUT_EVENT_SIZE * 16];
            while let Ok(n) = rustix::io::read(&*dev, &mut buf) {
                if n == 0 {
                    break;
                }
                pressed |= buf[..n].chunks_exact(INPUT_EVENT_SIZE).any(is_power_key_press);
            }
        }
        pressed
    }

    /// Opens the evdev device of every input device named "Power Button" (the ACPI button driver).
    fn open_power_buttons(&mut self) {
        let Ok(entries) = std::fs::read_dir("/sys/class/input") else {
            return;
        };
        let mut found = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("event") {
                continue;
            }
            let Ok(label) = std::fs::read_to_string(e.path().join("device/name")) else {
                continue;
            };
            if label.trim() != "Power Button" {
                continue;
            }
            let path = Path::new("/dev/input").join(&name);
            match rustix::fs::open(
                &path,
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            ) {
                Ok(fd) => found.push(File::from(fd)),
                Err(e) => tracing::warn!(device = %path.display(), error = %e, "cannot open power button"),
            }
        }
        if found.len() != self.power_buttons.len() {
            tracing::info!(count = found.len(), "power buttons");
        }
        self.power_buttons = found;
    }
}

fn open_uevent_socket() -> std::io::Result<OwnedFd> {
    let fd = rustix::net::socket_with(
        rustix::net::AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        Some(netlink::KOBJECT_UEVENT),
    )?;
    // Coldplug makes a burst of events; a small buffer would drop some (Alpine uses 512 KiB).
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size_force(&fd, 512 * 1024);
    rustix::net::bind(&fd, &netlink::SocketAddrNetlink::new(0, 1))?;
    Ok(fd)
}

fn log_events(events: &[LoadEvent]) -> usize {
    let mut loaded = 0;
    for ev in events {
        match &ev.outcome {
            Outcome::Loaded => {
                loaded += 1;
                tracing::info!(name = %ev.module, result = "loaded", "module");
            }
            Outcome::Failed(error) => {
                tracing::warn!(name = %ev.module, result = "failed", error = %error, "module")
            }
            Outcome::NotShipped => tracing::warn!(name = %ev.module, result = "not-shipped", "module"),
            Outcome::Builtin | Outcome::AlreadyLoaded => {}
        }
    }
    loaded
}

/// `struct input_event` on 64-bit Linux: a 16-byte timeval, u16 type, u16 code, i32 value.
const INPUT_EVENT_SIZE: usize = 24;
const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;

fn is_power_key_press(ev: &[u8]) -> bool {
    let field = |at: usize| u16::from_ne_bytes([ev[at], ev[at + 1]]);
    let value = i32::from_ne_bytes([ev[20], ev[21], ev[22], ev[23]]);
    ev.len() == INPUT_EVENT_SIZE && field(16) == EV_KEY && field(18) == KEY_POWER && value == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u16, code: u16, value: i32) -> Vec<u8> {
        let mut v = vec![0u8; 16];
        v.extend(kind.to_ne_bytes());
        v.extend(code.to_ne_bytes());
        v.extend(value.to_ne_bytes());
        v
    }

    #[test]
    fn power_key_press_only() {
        assert!(is_power_key_press(&event(EV_KEY, KEY_POWER, 1)));
        assert!(!is_power_key_press(&event(EV_KEY, KEY_POWER, 0)), "release");
        assert!(!is_power_key_press(&event(EV_KEY, 30, 1)), "another key");
        assert!(!is_power_key_press(&event(0, 0, 0)), "sync");
    }
}
