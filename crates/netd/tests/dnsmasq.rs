//! clump-netd against a real dnsmasq, on a veth between two network namespaces that each test
//! creates and removes itself (no uplink; nothing reaches the machine's network). Needs root,
//! `ip` and `dnsmasq`: without them the tests fail, they do not skip.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SERVER_IP: &str = "10.77.0.1";

struct Lab {
    server_ns: String,
    client_ns: String,
    dir: tempfile::TempDir,
    dnsmasq: Child,
    netd: Option<Child>,
}

fn ip(args: &[&str]) {
    let st = Command::new("ip")
        .args(args)
        .status()
        .expect("`ip` not found: install iproute2");
    assert!(st.success(), "ip {args:?} failed");
}

impl Lab {
    fn new(tag: &str) -> Lab {
        assert!(
            rustix::process::geteuid().is_root(),
            "these tests create network namespaces: run as root"
        );
        let id = format!("{}{}", std::process::id() % 100_000, tag);
        let (server_ns, client_ns) = (format!("clump-t-srv{id}"), format!("clump-t-cli{id}"));
        ip(&["netns", "add", &server_ns]);
        ip(&["netns", "add", &client_ns]);
        let (vs, vc) = (format!("vs{id}"), format!("vc{id}"));
        ip(&["link", "add", &vs, "type", "veth", "peer", "name", &vc]);
        ip(&["link", "set", &vs, "netns", &server_ns, "name", "vs"]);
        ip(&["link", "set", &vc, "netns", &client_ns, "name", "vc"]);
        ip(&[
            "-n",
            &server_ns,
            "addr",
            "add",
            &format!("{SERVER_IP}/24"),
            "dev",
            "vs",
        ]);
        ip(&["-n", &server_ns, "link", "set", "vs", "up"]);
        ip(&["-n", &client_ns, "link", "set", "vc", "up"]);
        ip(&["-n", &client_ns, "link", "set", "lo", "up"]);
        let dir = tempfile::tempdir().expect("tempdir");
        let dnsmasq = Command::new("ip")
            .args([
                "netns",
                "exec",
                &server_ns,
                "dnsmasq",
                "--no-daemon",
                "--conf-file=/dev/null",
                "--interface=vs",
            ])
            .args([
                "--bind-interfaces",
                "--port=0",
                "--dhcp-range=10.77.0.50,10.77.0.99,2m",
                "--log-dhcp",
            ])
            .arg(format!(
                "--dhcp-leasefile={}",
                dir.path().join("dnsmasq.leases").display()
            ))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("dnsmasq.log")).expect("log file"))
            .spawn()
            .expect("dnsmasq not found: install dnsmasq-base");
        let lab = Lab {
            server_ns,
            client_ns,
            dir,
            dnsmasq,
            netd: None,
        };
        lab.wait_for("dnsmasq listening", Duration::from_secs(10), || {
            lab.dnsmasq_log().contains("DHCP, IP range")
        });
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn start_netd(&mut self) {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.client_ns,
                env!("CARGO_BIN_EXE_clump-netd"),
                "--iface",
                "vc",
            ])
            .arg("--lease-file")
            .arg(self.path("lease.json"))
            .arg("--resolv-conf")
            .arg(self.path("resolv.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.path("netd.log")).expect("log file"))
            .spawn()
            .expect("cannot start clump-netd");
        self.netd = Some(child);
    }

    fn dnsmasq_log(&self) -> String {
        std::fs::read_to_string(self.path("dnsmasq.log")).unwrap_or_default()
    }

    fn lease(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(self.path("lease.json")).ok()?).ok()
    }

    /// The IPv4 address on the client's interface, as the kernel reports it.
    fn client_address(&self) -> Option<String> {
        let out = Command::new("ip")
            .args(["-n", &self.client_ns, "-4", "-o", "addr", "show", "dev", "vc"])
            .output();
        let text = String::from_utf8_lossy(&out.expect("ip").stdout).into_owned();
        text.split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .map(str::to_string)
    }

    fn wait_for(&self, what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
        let end = Instant::now() + limit;
        while !ok() {
            assert!(
                Instant::now() < end,
                "timed out waiting for {what}\n--- netd log:\n{}\n--- dnsmasq log:\n{}",
                std::fs::read_to_string(self.path("netd.log")).unwrap_or_default(),
                self.dnsmasq_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn stop_netd(&mut self) -> std::process::ExitStatus {
        let mut child = self.netd.take().expect("netd running");
        // `ip netns exec` execs the program, so the child is clump-netd itself.
        let pid = rustix::process::Pid::from_child(&child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("signal netd");
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = child.try_wait().expect("wait") {
                return st;
            }
            assert!(Instant::now() < end, "clump-netd did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut n) = self.netd.take() {
            let _ = n.kill();
            let _ = n.wait();
        }
        let _ = self.dnsmasq.kill();
        let _ = self.dnsmasq.wait();
        for ns in [&self.server_ns, &self.client_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn leased_address(lease: &serde_json::Value) -> String {
    let l = &lease["lease"];
    format!("{}/{}", l["address"].as_str().unwrap_or("?"), l["prefix_len"])
}

#[test]
fn gets_the_address_dnsmasq_gives_and_releases_it_on_sigterm() {
    let mut lab = Lab::new("a");
    lab.start_netd();
    lab.wait_for("a bound lease", Duration::from_secs(30), || {
        lab.lease().is_some_and(|l| l["state"] == "bound")
    });
    let lease = lab.lease().unwrap();
    let address = leased_address(&lease);
    assert_eq!(
        lab.client_address().as_ref(),
        Some(&address),
        "the kernel has the leased address"
    );
    let ip_only = address.split('/').next().unwrap().to_string();
    let leases = std::fs::read_to_string(lab.path("dnsmasq.leases")).unwrap();
    assert!(
        leases.contains(&ip_only),
        "dnsmasq's lease file names {ip_only}: {leases}"
    );
    assert!(lab.dnsmasq_log().contains(&format!("DHCPACK(vs) {ip_only}")));
    assert_eq!(lease["lease"]["router"], SERVER_IP);
    let routes = Command::new("ip")
        .args(["-n", &lab.client_ns, "route"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&routes.stdout).contains(&format!("default via {SERVER_IP} dev vc")));

    let status = lab.stop_netd();
    assert!(status.success(), "clump-netd exits cleanly: {status:?}");
    assert!(lab.client_address().is_none(), "the address is removed");
    assert!(lab.dnsmasq_log().contains(&format!("DHCPRELEASE(vs) {ip_only}")));
    assert_eq!(lab.lease().unwrap()["state"], "unbound");
}

#[test]
fn renews_a_short_lease_at_t1_without_losing_the_address() {
    let mut lab = Lab::new("b");
    lab.start_netd();
    lab.wait_for("a bound lease", Duration::from_secs(30), || {
        lab.lease().is_some_and(|l| l["state"] == "bound")
    });
    let address = leased_address(&lab.lease().unwrap());
    let ip_only = address.split('/').next().unwrap().to_string();
    // dnsmasq's shortest lease is 2 minutes: T1 comes after 60 s. Check the address every second.
    let end = Instant::now() + Duration::from_secs(80);
    let acks = |log: &str| log.matches(&format!("DHCPACK(vs) {ip_only}")).count();
    while acks(&lab.dnsmasq_log()) < 2 {
        assert!(
            Instant::now() < end,
            "no renewal within 80 s:\n{}",
            lab.dnsmasq_log()
        );
        assert_eq!(
            lab.client_address().as_ref(),
            Some(&address),
            "address kept while renewing"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        !lab.dnsmasq_log().contains("DHCPDISCOVER(vs) ")
            || lab.dnsmasq_log().matches("DHCPDISCOVER").count() == 1
    );
    lab.wait_for("the renewed lease on file", Duration::from_secs(5), || {
        std::fs::read_to_string(lab.path("netd.log"))
            .unwrap_or_default()
            .contains("renewed=true")
    });
    assert_eq!(lab.client_address(), Some(address));
}
