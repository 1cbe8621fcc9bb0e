//! The services PID 1 supervises on a node.

use crate::cmdline::Config;
use crate::supervisor::ServiceSpec;

const SHELL: &str = "/bin/sh";
/// The network service (DHCP); an image built without it still boots, without addresses.
pub const NETD: &str = "/bin/clump-netd";

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
}
