//! The harness of the daemon tests: real `clumpd`s on a bridge in network namespaces the test
//! creates and removes (no uplink; nothing reaches the machine's network). Needs root and `ip`.
#![allow(dead_code)]

use clump_api::{Client, NodeMap};
use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub const KEY: &str = "abababababababababababababababababababababababababababababababab";
pub const OTHER_KEY: &str = "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd";

pub fn ip(args: &[&str]) {
    let st = Command::new("ip")
        .args(args)
        .status()
        .expect("`ip` not found: install iproute2");
    assert!(st.success(), "ip {args:?} failed");
}

pub struct Net {
    pub hub: String,
    pub nodes: Vec<String>,
    pub dir: tempfile::TempDir,
    pub daemons: Vec<Option<Child>>,
}

impl Net {
    pub fn new(tag: &str, n: usize) -> Net {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test creates network namespaces: run as root"
        );
        let id = format!("{}{tag}", std::process::id() % 100_000);
        let hub = format!("clump-d-hub{id}");
        ip(&["netns", "add", &hub]);
        let mut net = Net {
            hub: hub.clone(),
            nodes: Vec::new(),
            dir: tempfile::tempdir().expect("tempdir"),
            daemons: Vec::new(),
        };
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        for i in 0..n {
            let ns = format!("clump-d-n{id}{i}");
            ip(&["netns", "add", &ns]);
            net.nodes.push(ns.clone());
            net.daemons.push(None);
            let (vh, vn) = (format!("vh{id}{i}"), format!("vn{id}{i}"));
            ip(&["link", "add", &vh, "type", "veth", "peer", "name", &vn]);
            ip(&["link", "set", &vh, "netns", &hub]);
            ip(&["-n", &hub, "link", "set", &vh, "master", "br0", "up"]);
            ip(&["link", "set", &vn, "netns", &ns, "name", "eth0"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("10.88.0.{}/24", i + 10),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        net
    }

    pub fn path(&self, i: usize, name: &str) -> PathBuf {
        self.dir.path().join(format!("n{i}")).join(name)
    }

    pub fn start(&mut self, i: usize, key: &str) {
        self.start_with(i, key, &[]);
    }

    /// Starts node `i`'s daemon with more arguments.
    pub fn start_with(&mut self, i: usize, key: &str, extra: &[&OsStr]) {
        std::fs::create_dir_all(self.path(i, "")).expect("dir");
        let out = Command::new("ip")
            .args(["-n", &self.nodes[i], "link", "show", "eth0"])
            .output()
            .expect("ip");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mac = text
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .expect("mac")
            .to_string();
        let lease = format!(
            r#"{{"iface":"eth0","driver":"veth","mac":"{mac}","via":"static","state":"bound","lease":{{"address":"10.88.0.{}","prefix_len":24}}}}"#,
            i + 10
        );
        std::fs::write(self.path(i, "lease.json"), lease).expect("lease");
        std::fs::write(
            self.path(i, "cmdline"),
            format!("console=ttyS0 clump.key={key} clump.probe_rate=500\n"),
        )
        .expect("cmdline");
        let log = std::fs::File::create(self.path(i, "log")).expect("log");
        let arg = |name: &str| self.path(i, name).into_os_string();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.nodes[i], env!("CARGO_BIN_EXE_clumpd")])
            .arg("--cmdline")
            .arg(arg("cmdline"))
            .arg("--key-file")
            .arg(arg("no-key-file"))
            .arg("--lease")
            .arg(arg("lease.json"))
            .arg("--nodes-json")
            .arg(arg("nodes.json"))
            .arg("--mosix-map")
            .arg(arg("mosix.map"))
            .arg("--socket")
            .arg(arg("sock"))
            .arg("--speed-override")
            .arg(arg("speed"))
            .arg("--node-id")
            .arg(arg("node-id"))
            .arg("--migrate-dir")
            .arg(arg("migrate"))
            .args(extra)
            .stderr(log)
            .spawn()
            .expect("clumpd");
        self.daemons[i] = Some(child);
    }

    pub fn stop(&mut self, i: usize) {
        let mut child = self.daemons[i].take().expect("running");
        let pid = rustix::process::Pid::from_child(&child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("signal");
        let st = child.wait().expect("wait");
        assert!(
            st.success(),
            "clumpd exited with {st} on SIGTERM\n{}",
            self.log(i)
        );
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.path(i, "log")).unwrap_or_default()
    }

    pub fn map(&self, i: usize) -> Option<NodeMap> {
        Client::connect(self.path(i, "sock")).ok()?.nodes().ok()
    }

    pub fn wait_for(&self, what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> Duration {
        let start = Instant::now();
        while !ok() {
            assert!(
                start.elapsed() < limit,
                "timed out waiting for {what}\n{}",
                (0..self.nodes.len())
                    .map(|i| format!("--- node {i}\n{}", self.log(i)))
                    .collect::<String>()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        start.elapsed()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for mut d in self.daemons.iter_mut().filter_map(Option::take) {
            let _ = d.kill();
            let _ = d.wait();
        }
        for ns in self.nodes.iter().chain([&self.hub]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// `clumpd` with every file of a node in `dir` and no key file (`missing.key`), for tests that run
/// it outside a namespace: without a key it never opens the cluster socket.
pub fn keyless_clumpd(dir: &std::path::Path) -> Command {
    let p = |name: &str| dir.join(name);
    let mut c = Command::new(env!("CARGO_BIN_EXE_clumpd"));
    c.arg("--cmdline")
        .arg(p("cmdline"))
        .arg("--key-file")
        .arg(p("missing.key"))
        .arg("--lease")
        .arg(p("lease.json"))
        .arg("--nodes-json")
        .arg(p("nodes.json"))
        .arg("--mosix-map")
        .arg(p("mosix.map"))
        .arg("--socket")
        .arg(p("sock"));
    c
}
