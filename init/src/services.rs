//! The services PID 1 supervises on a node.

use crate::cmdline::Config;
use crate::supervisor::ServiceSpec;

const SHELL: &str = "/bin/sh";
/// The network service (DHCP); an image built without it still boots, without addresses.
pub const NETD: &str = "/bin/clump-netd";
/// The runtime daemon (discovery, membership, node map); an image built without it still boots and
/// gets an address, but joins no cluster.
pub const CLUMPD: &str = "/bin/clumpd";

/// The services that need a NIC, in start order: `netd`, then `clumpd`, which waits for the lease
/// itself (it watches `/run/clump/lease.json`). None without a NIC (`chosen` is the name of the NIC
/// the node uses); each only if `installed` says its program is in the image.
pub fn network(chosen: Option<&str>, cfg: &Config, installed: impl Fn(&str) -> bool) -> Vec<ServiceSpec> {
    let mut out = Vec::new();
    let Some(nic) = chosen else {
        return out;
    };
    if installed(NETD) {
        // A NIC that was named, or that network-booted the node, is the one to use; otherwise
        // DHCP runs on every NIC with carrier and the first lease wins.
        let iface = (cfg.iface.is_some() || cfg.boot_mac.is_some()).then_some(nic);
        out.push(netd(iface, cfg.static_ip.as_deref()));
    }
    if installed(CLUMPD) {
        out.push(clumpd());
    }
    out
}

/// The status screen on the monitor (tty1); an image built without it still boots, with the text
/// console on tty1.
pub const SCREEND: &str = "/bin/clump-screend";

/// The status screen, unless `clump.screen=off` or the image has none.
pub fn screen(cfg: &Config, installed: impl Fn(&str) -> bool) -> Option<ServiceSpec> {
    if !cfg.screen || !installed(SCREEND) {
        return None;
    }
    Some(ServiceSpec {
        name: "screen".into(),
        argv: vec![SCREEND.to_string()],
        env: vec![("PATH".into(), "/bin:/sbin:/usr/bin:/usr/sbin".into())],
        tty: None,
    })
}

fn shell_env(term: &str) -> Vec<(String, String)> {
    [
        ("PATH", "/bin:/sbin:/usr/bin:/usr/sbin"),
        ("HOME", "/root"),
        ("TERM", term),
        ("PS1", "clump# "),
        ("SHELL", SHELL),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The network service on the chosen NIC (`iface`), or on every NIC with carrier; with a static
/// address (`clump.ip=`) instead of DHCP if one is given.
pub fn netd(iface: Option<&str>, static_ip: Option<&str>) -> ServiceSpec {
    let mut argv = vec![NETD.to_string()];
    if let Some(i) = iface {
        argv.extend(["--iface".to_string(), i.to_string()]);
    }
    if let Some(ip) = static_ip {
        argv.extend(["--static".to_string(), ip.to_string()]);
    }
    ServiceSpec {
        name: "netd".into(),
        argv,
        env: vec![("PATH".into(), "/bin:/sbin:/usr/bin:/usr/sbin".into())],
        tty: None,
    }
}

/// The runtime daemon. It reads its options (`clump.key=`, `clump.port=`) from /proc/cmdline and its
/// key from /etc/clump/cluster.key itself; it logs to stderr, which is the console.
pub fn clumpd() -> ServiceSpec {
    ServiceSpec {
        name: "clumpd".into(),
        argv: vec![CLUMPD.to_string()],
        env: vec![("PATH".into(), "/bin:/sbin:/usr/bin:/usr/sbin".into())],
        tty: None,
    }
}

/// The root shells (a live node has no passwords, like Clump/OS): tty2 for the keyboard, and
/// every serial console named on the command line.
pub fn shells(cfg: &Config) -> Vec<ServiceSpec> {
    let mut out = Vec::new();
    if !cfg.shell {
        return out;
    }
    let shell = |tty: &str, term: &str| ServiceSpec {
        name: format!("shell-{tty}"),
        argv: vec![SHELL.to_string()],
        env: shell_env(term),
        tty: Some(format!("/dev/{tty}")),
    };
    out.push(shell("tty2", "linux"));
    for serial in &cfg.serial_consoles {
        out.push(shell(serial, "vt100"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shells_follow_the_consoles_and_the_switch() {
        let (cfg, _) = crate::cmdline::parse("console=tty0 console=ttyS0,115200");
        let names: Vec<String> = shells(&cfg).into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["shell-tty2", "shell-ttyS0"]);
        let (cfg, _) = crate::cmdline::parse("console=ttyS0 clump.shell=off");
        assert!(shells(&cfg).is_empty());
        assert_eq!(netd(Some("eth1"), None).argv, [NETD, "--iface", "eth1"]);
        assert_eq!(
            netd(None, Some("10.0.0.7/24")).argv,
            [NETD, "--static", "10.0.0.7/24"]
        );
    }

    fn names(specs: &[ServiceSpec]) -> Vec<&str> {
        specs.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn clumpd_starts_right_after_netd_when_a_nic_was_chosen() {
        let (cfg, _) = crate::cmdline::parse("console=ttyS0 clump.key=00");
        let all = network(Some("eth0"), &cfg, |_| true);
        assert_eq!(names(&all), ["netd", "clumpd"]);
        assert_eq!(all[1].argv, [CLUMPD]);
        assert_eq!(all[1].tty, None, "its stderr is the console");
        // DHCP on every NIC with carrier unless one was named.
        assert_eq!(all[0].argv, [NETD]);
    }

    #[test]
    fn the_screen_runs_unless_turned_off_or_missing() {
        let (cfg, _) = crate::cmdline::parse("console=ttyS0");
        assert_eq!(
            screen(&cfg, |_| true).map(|s| s.argv),
            Some(vec![SCREEND.to_string()])
        );
        assert!(screen(&cfg, |_| false).is_none());
        let (cfg, _) = crate::cmdline::parse("clump.screen=off");
        assert!(screen(&cfg, |_| true).is_none());
    }

    #[test]
    fn no_nic_no_network_services_and_missing_programs_are_left_out() {
        let (cfg, _) = crate::cmdline::parse("console=ttyS0");
        assert!(network(None, &cfg, |_| true).is_empty());
        assert_eq!(names(&network(Some("eth0"), &cfg, |p| p == NETD)), ["netd"]);
        assert_eq!(names(&network(Some("eth0"), &cfg, |p| p == CLUMPD)), ["clumpd"]);
        assert!(network(Some("eth0"), &cfg, |_| false).is_empty());
    }

    #[test]
    fn a_named_or_boot_nic_is_given_to_netd() {
        let (cfg, _) = crate::cmdline::parse("clump.iface=eth1 clump.ip=10.0.0.7/24");
        let specs = network(Some("eth1"), &cfg, |_| true);
        assert_eq!(
            specs[0].argv,
            [NETD, "--iface", "eth1", "--static", "10.0.0.7/24"]
        );
        let (cfg, _) = crate::cmdline::parse("BOOTIF=01-52-54-00-ab-cd-01");
        assert_eq!(
            network(Some("eth2"), &cfg, |_| true)[0].argv,
            [NETD, "--iface", "eth2"]
        );
        assert_eq!(names(&network(Some("eth2"), &cfg, |_| true)), ["netd", "clumpd"]);
    }
}
