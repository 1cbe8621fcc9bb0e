//! The kernel command line: `clump.*=` options configure the node (README.md lists them).

use std::collections::BTreeMap;
use std::time::Duration;

/// PID 1's settings, from the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Root shells on tty2 and the serial console (`clump.shell=on|off`).
    pub shell: bool,
    /// The status screen on the monitor (`clump.screen=on|off`).
    pub screen: bool,
    /// How long to wait for carrier on the NICs (`clump.carrier_wait=<ms>`).
    pub carrier_wait: Duration,
    /// Modules to load before coldplug (`clump.modules=a,b`).
    pub modules: Vec<String>,
    /// Modules never to load (`clump.blacklist=a,b`, also the kernel's `modprobe.blacklist=`).
    pub blacklist: Vec<String>,
    /// The interface to use (`clump.iface=eth1`); default: the first with carrier.
    pub iface: Option<String>,
    /// How long `ready` waits for an address, from DHCP or link-local (`clump.addr_wait=<ms>`):
    /// clump-netd claims a link-local address after 10 s without a server, ~7 s of probing later.
    pub addr_wait: Duration,
    /// The MAC of the NIC that network-booted the node (`BOOTIF=01-aa-bb-cc-dd-ee-ff`, set by
    /// iPXE and pxelinux), lower case with colons.
    pub boot_mac: Option<String>,
    /// A static address instead of DHCP (`clump.ip=10.0.0.7/24[,gateway]`), as given.
    pub static_ip: Option<String>,
    /// The longest wait before PID 1 restarts a service that keeps failing
    /// (`clump.restart_max_ms=<ms>`).
    pub restart_max: Duration,
    /// Serial consoles named by `console=ttyS0,115200`, without the options.
    pub serial_consoles: Vec<String>,
    /// Every `clump.*` option as given, for the services that read their own.
    pub options: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            shell: true,
            screen: true,
            carrier_wait: Duration::from_millis(5000),
            modules: Vec::new(),
            blacklist: Vec::new(),
            iface: None,
            boot_mac: None,
            static_ip: None,
            addr_wait: Duration::from_millis(20_000),
            restart_max: crate::supervisor::BACKOFF_MAX,
            serial_consoles: Vec::new(),
            options: BTreeMap::new(),
        }
    }
}

/// Options that later services read: known, so not warned about.
const SERVICE_OPTIONS: &[&str] = &[
    "clump.ip",
    "clump.probe",
    "clump.probe_rate",
    "clump.speed",
    "clump.key",
    "clump.port",
    "clump.window",
    "clump.checkpoint",
    "clump.block",
    "clump.balance",
    "clump.name",
];

/// Parses the command line. Bad values keep their default and produce a warning.
pub fn parse(cmdline: &str) -> (Config, Vec<String>) {
    let mut cfg = Config::default();
    let mut warnings = Vec::new();
    for word in split_words(cmdline) {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, v),
            None => (word.as_str(), ""),
        };
        match key {
            "console" => {
                let dev = value.split(',').next().unwrap_or("");
                if dev.starts_with("ttyS") || dev.starts_with("ttyAMA") || dev.starts_with("hvc") {
                    cfg.serial_consoles.push(dev.to_string());
                }
                continue;
            }
            "BOOTIF" => {
                match boot_mac(value) {
                    Some(mac) => cfg.boot_mac = Some(mac),
                    None => warnings.push(format!("BOOTIF={value:?}: expected 01-aa-bb-cc-dd-ee-ff")),
                }
                continue;
            }
            "modprobe.blacklist" => {
                cfg.blacklist.extend(list(value));
                continue;
            }
            _ if !key.starts_with("clump.") => continue,
            _ => {}
        }
        cfg.options.insert(key.to_string(), value.to_string());
        match key {
            "clump.shell" => match value {
                "on" | "1" | "yes" | "" => cfg.shell = true,
                "off" | "0" | "no" => cfg.shell = false,
                other => warnings.push(format!("clump.shell={other:?}: expected on or off")),
            },
            "clump.screen" => match value {
                "on" | "1" | "yes" | "" => cfg.screen = true,
                "off" | "0" | "no" => cfg.screen = false,
                other => warnings.push(format!("clump.screen={other:?}: expected on or off")),
            },
            "clump.carrier_wait" => match value.parse::<u64>() {
                Ok(ms) if ms <= 600_000 => cfg.carrier_wait = Duration::from_millis(ms),
                _ => warnings.push(format!(
                    "clump.carrier_wait={value:?}: expected milliseconds (0-600000)"
                )),
            },
            "clump.modules" => cfg.modules.extend(list(value)),
            "clump.blacklist" => cfg.blacklist.extend(list(value)),
            "clump.iface" if !value.is_empty() => cfg.iface = Some(value.to_string()),
            "clump.ip" if !value.is_empty() => cfg.static_ip = Some(value.to_string()),
            "clump.addr_wait" => match value.parse::<u64>() {
                Ok(ms) if ms <= 600_000 => cfg.addr_wait = Duration::from_millis(ms),
                _ => warnings.push(format!(
                    "clump.addr_wait={value:?}: expected milliseconds (0-600000)"
                )),
            },
            // Below 50 ms a service failing at once would have PID 1 spawning it without pause.
            "clump.restart_max_ms" => match value.parse::<u64>() {
                Ok(ms) if (50..=3_600_000).contains(&ms) => cfg.restart_max = Duration::from_millis(ms),
                _ => warnings.push(format!(
                    "clump.restart_max_ms={value:?}: expected milliseconds (50-3600000)"
                )),
            },
            _ if SERVICE_OPTIONS.contains(&key) || key.starts_with("clump.balance.") => {}
            _ => warnings.push(format!("unknown option {key}")),
        }
    }
    (cfg, warnings)
}

/// `01-52-54-00-12-34-56` (ARP hardware type 1, then the MAC) to `52:54:00:12:34:56`.
fn boot_mac(value: &str) -> Option<String> {
    let rest = value.strip_prefix("01-")?;
    let bytes: Vec<&str> = rest.split('-').collect();
    let ok = bytes.len() == 6
        && bytes
            .iter()
            .all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit()));
    ok.then(|| bytes.join(":").to_ascii_lowercase())
}

fn list(value: &str) -> impl Iterator<Item = String> + '_ {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Splits like the kernel does: on spaces, with double quotes grouping (`a="b c"` is one word,
/// the quotes removed).
fn split_words(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    for c in cmdline.chars() {
        match c {
            '"' => in_quotes = !in_quotes,
            c if c.is_whitespace() && !in_quotes => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_from_the_image_cmdline() {
        let (cfg, w) =
            parse("BOOT_IMAGE=/boot/vmlinuz console=tty0 console=ttyS0,115200 quiet loglevel=3 panic=10\n");
        assert!(w.is_empty());
        assert!(cfg.shell);
        assert_eq!(cfg.serial_consoles, ["ttyS0"]);
        assert_eq!(cfg.carrier_wait, Duration::from_secs(5));
        assert_eq!(cfg.restart_max, Duration::from_secs(30));
    }

    #[test]
    fn the_restart_cap() {
        let (cfg, w) = parse("clump.restart_max_ms=600");
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(cfg.restart_max, Duration::from_millis(600));
        for bad in [
            "clump.restart_max_ms=10",
            "clump.restart_max_ms=x",
            "clump.restart_max_ms=3600001",
        ] {
            let (cfg, w) = parse(bad);
            assert_eq!(cfg.restart_max, Duration::from_secs(30), "{bad}");
            assert!(
                w.len() == 1 && w[0].contains("clump.restart_max_ms"),
                "{bad}: {w:?}"
            );
        }
    }

    #[test]
    fn clump_options() {
        let (cfg, w) = parse(
            "clump.shell=off clump.carrier_wait=2500 clump.modules=e1000,,tun clump.blacklist=bochs modprobe.blacklist=nouveau clump.iface=eth1 clump.addr_wait=3000 clump.key=\"a b\" clump.port=7272",
        );
        assert!(w.is_empty(), "{w:?}");
        assert!(!cfg.shell);
        assert_eq!(cfg.carrier_wait, Duration::from_millis(2500));
        assert_eq!(cfg.modules, ["e1000", "tun"]);
        assert_eq!(cfg.blacklist, ["bochs", "nouveau"]);
        assert_eq!(cfg.iface.as_deref(), Some("eth1"));
        assert_eq!(cfg.addr_wait, Duration::from_secs(3));
        assert_eq!(cfg.options.get("clump.key").map(String::as_str), Some("a b"));
        assert_eq!(cfg.options.get("clump.port").map(String::as_str), Some("7272"));
    }

    #[test]
    fn the_runtimes_options_are_known() {
        let (_, w) = parse(
            "clump.checkpoint=10 clump.block=1 clump.balance=off clump.balance.stability=1500 clump.window=20:00-07:00",
        );
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn pxe_boot_interface_and_static_address() {
        let (cfg, w) = parse("BOOTIF=01-52-54-00-AB-cd-01 clump.ip=10.0.0.7/24,10.0.0.1");
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(cfg.boot_mac.as_deref(), Some("52:54:00:ab:cd:01"));
        assert_eq!(cfg.static_ip.as_deref(), Some("10.0.0.7/24,10.0.0.1"));
        for bad in [
            "BOOTIF=52-54-00-ab-cd-01",
            "BOOTIF=01-52-54-00-ab-cd",
            "BOOTIF=01-zz-54-00-ab-cd-01",
        ] {
            let (cfg, w) = parse(bad);
            assert!(cfg.boot_mac.is_none() && w.len() == 1, "{bad}");
        }
    }

    #[test]
    fn bad_values_warn_and_keep_defaults() {
        let (cfg, w) = parse("clump.shell=maybe clump.carrier_wait=-5 clump.carrier_wait=99999999 clump.bogus=1 \"unterminated");
        assert!(cfg.shell);
        assert_eq!(cfg.carrier_wait, Duration::from_secs(5));
        assert_eq!(w.len(), 4, "{w:?}");
        assert!(w[3].contains("clump.bogus"));
    }

    #[test]
    fn garbage_does_not_panic() {
        for s in [
            "",
            "   ",
            "=",
            "clump.=",
            "clump.shell",
            "\"\"\"",
            "\u{0}\u{ff}clump.iface=",
            "a=b=c clump.modules=,,,",
        ] {
            let _ = parse(s);
        }
        let (cfg, _) = parse("clump.shell");
        assert!(cfg.shell);
    }
}
