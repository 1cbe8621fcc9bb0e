//! clump-netd against a real dnsmasq, on a veth between two network namespaces that each test
//! creates and removes itself (no uplink; nothing reaches the machine's network). Needs root,
//! `ip` and `dnsmasq`: without them the tests fail, they do not skip.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SERVER_IP: &str = "10.77.0.1";

struct Lab {
    server_ns: String,
    clients: Vec<String>,
    dir: tempfile::TempDir,
    dnsmasq: Option<Child>,
    netd: Vec<Option<Child>>,
}

fn ip(args: &[&str]) {
    let st = Command::new("ip")
        .args(args)
        .status()
        .expect("`ip` not found: install iproute2");
    assert!(st.success(), "ip {args:?} failed");
}

impl Lab {
    /// A bridge in a server namespace and `clients` client namespaces on it; dnsmasq runs on the
    /// bridge if `dhcp`.
    fn new(tag: &str, clients: usize, dhcp: bool) -> Lab {
        assert!(
            rustix::process::geteuid().is_root(),
            "these tests create network namespaces: run as root"
        );
        let id = format!("{}{}", std::process::id() % 100_000, tag);
        let server_ns = format!("clump-t-srv{id}");
        ip(&["netns", "add", &server_ns]);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut lab = Lab {
            server_ns,
            clients: Vec::new(),
            dir,
            dnsmasq: None,
            netd: Vec::new(),
        };
        let srv = lab.server_ns.clone();
        ip(&["-n", &srv, "link", "add", "br0", "type", "bridge"]);
        ip(&[
            "-n",
            &srv,
            "addr",
            "add",
            &format!("{SERVER_IP}/24"),
            "dev",
            "br0",
        ]);
        ip(&["-n", &srv, "link", "set", "br0", "up"]);
        for i in 0..clients {
            let ns = format!("clump-t-cli{id}{i}");
            ip(&["netns", "add", &ns]);
            lab.clients.push(ns.clone());
            lab.netd.push(None);
            let (vs, vc) = (format!("vs{id}{i}"), format!("vc{id}{i}"));
            ip(&["link", "add", &vs, "type", "veth", "peer", "name", &vc]);
            ip(&["link", "set", &vs, "netns", &srv]);
            ip(&["-n", &srv, "link", "set", &vs, "master", "br0", "up"]);
            ip(&["link", "set", &vc, "netns", &ns, "name", "vc"]);
            ip(&["-n", &ns, "link", "set", "vc", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        if dhcp {
            lab.start_dnsmasq();
        }
        lab
    }

    fn start_dnsmasq(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("dnsmasq.log"))
            .expect("log file");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.server_ns,
                "dnsmasq",
                "--no-daemon",
                "--conf-file=/dev/null",
            ])
            .args(["--interface=br0", "--bind-interfaces", "--port=0"])
            .args(["--dhcp-range=10.77.0.50,10.77.0.99,2m", "--log-dhcp"])
            .arg(format!(
                "--dhcp-leasefile={}",
                self.path("dnsmasq.leases").display()
            ))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dnsmasq not found: install dnsmasq-base");
        self.dnsmasq = Some(child);
        self.wait_for("dnsmasq listening", Duration::from_secs(10), || {
            self.dnsmasq_log().contains("DHCP, sockets bound")
        });
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn start_netd(&mut self, client: usize, extra: &[&str]) {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.clients[client],
                env!("CARGO_BIN_EXE_clump-netd"),
                "--iface",
                "vc",
            ])
            .arg("--lease-file")
            .arg(self.path(&format!("lease{client}.json")))
            .arg("--resolv-conf")
            .arg(self.path(&format!("resolv{client}.conf")))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.path(&format!("netd{client}.log"))).expect("log file"))
            .spawn()
            .expect("cannot start clump-netd");
        self.netd[client] = Some(child);
    }

    fn dnsmasq_log(&self) -> String {
        std::fs::read_to_string(self.path("dnsmasq.log")).unwrap_or_default()
    }

    fn netd_log(&self, client: usize) -> String {
        std::fs::read_to_string(self.path(&format!("netd{client}.log"))).unwrap_or_default()
    }

    fn lease(&self, client: usize) -> Option<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(self.path(&format!("lease{client}.json"))).ok()?).ok()
    }

    /// The IPv4 address on a client's interface, as the kernel reports it.
    fn client_address(&self, client: usize) -> Option<String> {
        let out = Command::new("ip")
            .args([
                "-n",
                &self.clients[client],
                "-4",
                "-o",
                "addr",
                "show",
                "dev",
                "vc",
            ])
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
                "timed out waiting for {what}\n--- netd logs:\n{}\n--- dnsmasq log:\n{}",
                (0..self.clients.len())
                    .map(|i| self.netd_log(i))
                    .collect::<Vec<_>>()
                    .join("\n"),
                self.dnsmasq_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn stop_netd(&mut self, client: usize) -> std::process::ExitStatus {
        let mut child = self.netd[client].take().expect("netd running");
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

    /// Sends one UDP datagram from client `from` to `to_addr` and returns what client `to` got.
    fn udp_reaches(&self, from: usize, to: usize, to_addr: &str) -> bool {
        let listener = Command::new("ip")
            .args(["netns", "exec", &self.clients[to], "python3", "-c"])
            .arg("import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(('',9999));s.settimeout(8);print(s.recvfrom(64)[0].decode())")
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        std::thread::sleep(Duration::from_millis(500));
        let _ = Command::new("ip")
            .args(["netns", "exec", &self.clients[from], "python3", "-c"])
            .arg(format!("import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);[s.sendto(b'hello-clump',('{to_addr}',9999)) for _ in range(3)]"))
            .status();
        let out = listener.wait_with_output().expect("listener");
        String::from_utf8_lossy(&out.stdout).contains("hello-clump")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for mut n in self.netd.iter_mut().filter_map(Option::take) {
            let _ = n.kill();
            let _ = n.wait();
        }
        if let Some(mut d) = self.dnsmasq.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        for ns in self.clients.iter().chain([&self.server_ns]) {
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
    let mut lab = Lab::new("a", 1, true);
    lab.start_netd(0, &[]);
    lab.wait_for("a bound lease", Duration::from_secs(30), || {
        lab.lease(0).is_some_and(|l| l["state"] == "bound")
    });
    let lease = lab.lease(0).unwrap();
    let address = leased_address(&lease);
    assert_eq!(
        lab.client_address(0).as_ref(),
        Some(&address),
        "the kernel has the leased address"
    );
    let ip_only = address.split('/').next().unwrap().to_string();
    let leases = std::fs::read_to_string(lab.path("dnsmasq.leases")).unwrap();
    assert!(
        leases.contains(&ip_only),
        "dnsmasq's lease file names {ip_only}: {leases}"
    );
    assert!(lab.dnsmasq_log().contains(&format!("DHCPACK(br0) {ip_only}")));
    assert_eq!(lease["lease"]["router"], SERVER_IP);
    let routes = Command::new("ip")
        .args(["-n", &lab.clients[0], "route"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&routes.stdout).contains(&format!("default via {SERVER_IP} dev vc")));

    let status = lab.stop_netd(0);
    assert!(status.success(), "clump-netd exits cleanly: {status:?}");
    assert!(lab.client_address(0).is_none(), "the address is removed");
    assert!(lab.dnsmasq_log().contains(&format!("DHCPRELEASE(br0) {ip_only}")));
    assert_eq!(lab.lease(0).unwrap()["state"], "unbound");
}

#[test]
fn renews_a_short_lease_at_t1_without_losing_the_address() {
    let mut lab = Lab::new("b", 1, true);
    lab.start_netd(0, &[]);
    lab.wait_for("a bound lease", Duration::from_secs(30), || {
        lab.lease(0).is_some_and(|l| l["state"] == "bound")
    });
    let address = leased_address(&lab.lease(0).unwrap());
    let ip_only = address.split('/').next().unwrap().to_string();
    // dnsmasq's shortest lease is 2 minutes: T1 comes after 60 s. Check the address every second.
    let end = Instant::now() + Duration::from_secs(80);
    let acks = |log: &str| log.matches(&format!("DHCPACK(br0) {ip_only}")).count();
    while acks(&lab.dnsmasq_log()) < 2 {
        assert!(
            Instant::now() < end,
            "no renewal within 80 s:\n{}",
            lab.dnsmasq_log()
        );
        assert_eq!(
            lab.client_address(0).as_ref(),
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
        lab.netd_log(0).contains("renewed=true")
    });
    assert_eq!(lab.client_address(0), Some(address));
}

#[test]
fn without_a_server_nodes_take_link_local_addresses_then_move_to_dhcp() {
    let mut lab = Lab::new("c", 2, false);
    lab.start_netd(0, &["--link-local-after", "2"]);
    lab.start_netd(1, &["--link-local-after", "2"]);
    for c in 0..2 {
        lab.wait_for("a link-local address", Duration::from_secs(30), || {
            lab.lease(c)
                .is_some_and(|l| l["state"] == "bound" && l["via"] == "link-local")
        });
    }
    let a0 = lab.client_address(0).expect("client 0 has an address");
    let a1 = lab.client_address(1).expect("client 1 has an address");
    for a in [&a0, &a1] {
        assert!(
            a.starts_with("169.254.") && a.ends_with("/16"),
            "link-local address: {a}"
        );
    }
    assert_ne!(a0, a1, "two nodes, two addresses");
    let ip1 = a1.split('/').next().unwrap().to_string();
    assert!(
        lab.udp_reaches(0, 1, &ip1),
        "node 0 reaches node 1 at {ip1} over link-local"
    );

    // A server appears: DHCP, which kept trying, takes over and the link-local address goes.
    lab.start_dnsmasq();
    for c in 0..2 {
        lab.wait_for(
            "a DHCP lease after the server came",
            Duration::from_secs(60),
            || {
                lab.lease(c)
                    .is_some_and(|l| l["state"] == "bound" && l["via"] == "dhcp")
            },
        );
        let addr = lab.client_address(c).expect("address");
        assert!(
            addr.starts_with("10.77.0."),
            "client {c} moved to the leased address: {addr}"
        );
    }
}

#[test]
fn a_static_address_is_configured_published_and_removed() {
    let mut lab = Lab::new("d", 1, false);
    lab.start_netd(0, &["--static", "10.77.0.200/24,10.77.0.1"]);
    lab.wait_for("the static address on file", Duration::from_secs(10), || {
        lab.lease(0)
            .is_some_and(|l| l["state"] == "bound" && l["via"] == "static")
    });
    assert_eq!(lab.client_address(0).as_deref(), Some("10.77.0.200/24"));
    let routes = Command::new("ip")
        .args(["-n", &lab.clients[0], "route"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&routes.stdout).contains("default via 10.77.0.1 dev vc"));
    assert!(lab.stop_netd(0).success());
    assert!(
        lab.client_address(0).is_none(),
        "the address is removed on SIGTERM"
    );
    assert_eq!(lab.lease(0).unwrap()["state"], "unbound");
}
