//! `clump mon` as a person uses it: in tmux, against two real `clumpd` on a bridge in network
//! namespaces this test creates and deletes (every link is made inside a namespace and there is
//! no uplink, so nothing reaches the machine's network). It reads the screen with `capture-pane`,
//! types with `send-keys` and resizes the window. Needs root, `ip`, `tmux` and the `clumpd`
//! binary beside `clump` (`cargo test --workspace` builds it; alone: `cargo build -p
//! clump-clumpd`): without them the test fails, it does not skip.

use clump_api::{Client, NodeMap, NodeState};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

const KEY: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
const SESSION: &str = "mon";

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (install it: {e})"))
}

/// Runs `ip` with `args` split at spaces (no argument here contains one).
fn ip(args: &str) {
    let out = run("ip", &args.split_whitespace().collect::<Vec<_>>());
    assert!(
        out.status.success(),
        "ip {args} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two nodes and a tmux server; dropping it (also while a failed assertion unwinds) ends tmux
/// and the daemons and deletes the namespaces, and with them every link inside.
struct Lab {
    hub: String,
    nodes: Vec<String>,
    dir: tempfile::TempDir,
    daemons: Vec<Child>,
    /// The tmux server's socket (`tmux -S`, in `dir`), once started.
    tmux: Option<String>,
}

impl Lab {
    fn new() -> Lab {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test creates network namespaces: run it as root"
        );
        let clumpd = clumpd();
        assert!(
            clumpd.is_file(),
            "{} is not built: `cargo build -p clump-clumpd` first (cargo test --workspace builds it)",
            clumpd.display()
        );
        let id = std::process::id();
        let mut lab = Lab {
            hub: format!("clump-mon-hub{id}"),
            nodes: Vec::new(),
            dir: tempfile::tempdir().expect("temporary directory"),
            daemons: Vec::new(),
            tmux: None,
        };
        ip(&format!("netns add {}", lab.hub));
        let hub = lab.hub.clone();
        ip(&format!("-n {hub} link add br0 type bridge"));
        ip(&format!("-n {hub} link set br0 up"));
        for i in 0..2 {
            let ns = format!("clump-mon-n{id}-{i}");
            ip(&format!("netns add {ns}"));
            lab.nodes.push(ns.clone());
            ip(&format!(
                "-n {ns} link add eth0 type veth peer name vh{i} netns {hub}"
            ));
            ip(&format!("-n {hub} link set vh{i} master br0 up"));
            ip(&format!("-n {ns} addr add 10.77.0.{}/24 dev eth0", 10 + i));
            ip(&format!("-n {ns} link set eth0 up"));
            ip(&format!("-n {ns} link set lo up"));
        }
        lab
    }

    fn path(&self, i: usize, name: &str) -> PathBuf {
        self.dir.path().join(format!("n{i}")).join(name)
    }

    fn start(&mut self, i: usize) {
        std::fs::create_dir_all(self.path(i, "")).expect("node directory");
        let out = run("ip", &["-n", &self.nodes[i], "link", "show", "eth0"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mac = text
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .expect("a MAC on eth0")
            .to_owned();
        let lease = format!(
            r#"{{"iface":"eth0","driver":"veth","mac":"{mac}","via":"static","state":"bound","lease":{{"address":"10.77.0.{}","prefix_len":24}}}}"#,
            10 + i
        );
        std::fs::write(self.path(i, "lease.json"), lease).expect("lease");
        std::fs::write(
            self.path(i, "cmdline"),
            format!("console=ttyS0 clump.key={KEY} clump.probe_rate=500\n"),
        )
        .expect("cmdline");
        let log = std::fs::File::create(self.path(i, "log")).expect("log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.nodes[i]]).arg(clumpd());
        for (flag, file) in [
            ("--cmdline", "cmdline"),
            ("--key-file", "no-key-file"),
            ("--lease", "lease.json"),
            ("--nodes-json", "nodes.json"),
            ("--mosix-map", "mosix.map"),
            ("--socket", "sock"),
            ("--speed-override", "speed"),
            ("--node-id", "node-id"),
        ] {
            cmd.arg(flag).arg(self.path(i, file));
        }
        self.daemons.push(cmd.stderr(log).spawn().expect("start clumpd"));
    }

    fn map(&self, i: usize) -> Option<NodeMap> {
        Client::connect(self.path(i, "sock")).ok()?.nodes().ok()
    }

    fn logs(&self) -> String {
        (0..self.nodes.len())
            .map(|i| {
                let log = std::fs::read_to_string(self.path(i, "log")).unwrap_or_default();
                format!("--- clumpd {i}\n{log}")
            })
            .collect()
    }

    /// Waits up to `limit` for `ok`; on timeout fails with `what`, the last screen and the logs.
    fn wait_for(&self, what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
        let start = Instant::now();
        while !ok() {
            if start.elapsed() > limit {
                let screen = self.tmux.as_ref().map(|_| self.screen()).unwrap_or_default();
                let stderr = std::fs::read_to_string(self.mon_stderr()).unwrap_or_default();
                panic!(
                    "timed out after {limit:?} waiting for {what}\n--- screen\n{}\n--- mon's stderr\n{stderr}\n{}",
                    screen.join("\n"),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let server = self.tmux.as_deref().expect("tmux started");
        let mut all = vec!["-S", server];
        all.extend_from_slice(args);
        let out = run("tmux", &all);
        assert!(
            out.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `clump mon` in a detached tmux session of `width` x `height`, talking to node `i`.
    fn start_mon(&mut self, i: usize, width: u16, height: u16) {
        // Its own server and config: nothing of the user's tmux, no status line (the pane is the
        // whole window), and a pane that stays after mon exits, so the tmux commands still work.
        let conf = self.dir.path().join("tmux.conf");
        std::fs::write(&conf, "set -g status off\nset -g remain-on-exit on\n").expect("tmux.conf");
        self.tmux = Some(self.dir.path().join("tmux.sock").display().to_string());
        let socket = format!("CLUMP_API_SOCKET={}", self.path(i, "sock").display());
        let conf = conf.display().to_string();
        let (w, h) = (width.to_string(), height.to_string());
        self.tmux(&[
            "-f",
            &conf,
            "new-session",
            "-d",
            "-s",
            SESSION,
            "-x",
            &w,
            "-y",
            &h,
            "-e",
            &socket,
            "sh",
            "-c",
            "\"$0\" mon 2>\"$1\"; echo $? >\"$2\"",
            env!("CARGO_BIN_EXE_clump"),
            &self.mon_stderr().display().to_string(),
            &self.mon_status().display().to_string(),
        ]);
    }

    /// Where the shell that ran mon writes its exit status (128+N for signal N). Not tmux's
    /// pane_dead_status: tmux 3.3a at times leaves the exited pane process a zombie and never
    /// has a status to give.
    fn mon_status(&self) -> PathBuf {
        self.dir.path().join("mon.status")
    }

    /// Where mon's stderr goes (a panic message or an error would be lost with the pane).
    fn mon_stderr(&self) -> PathBuf {
        self.dir.path().join("mon.stderr")
    }

    fn screen(&self) -> Vec<String> {
        self.tmux(&["capture-pane", "-p", "-t", SESSION])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Waits for a screen that `ok` accepts and returns it.
    fn wait_screen(&self, what: &str, ok: impl Fn(&[String]) -> bool) -> Vec<String> {
        let mut last = Vec::new();
        self.wait_for(what, Duration::from_secs(10), || {
            last = self.screen();
            ok(&last)
        });
        last
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(server) = &self.tmux {
            let _ = Command::new("tmux").args(["-S", server, "kill-server"]).output();
        }
        for mut d in self.daemons.drain(..) {
            let _ = d.kill();
            let _ = d.wait();
        }
        for ns in self.nodes.iter().chain([&self.hub]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn clumpd() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_clump")).with_file_name("clumpd")
}

/// The node row of `number` (its number, hostname and state), if on the screen.
fn row<'a>(screen: &'a [String], number: &str) -> Option<Vec<&'a str>> {
    screen
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.first() == Some(&number) && w.len() > 3)
}

fn shows_both(screen: &[String]) -> bool {
    let state = |n| row(screen, n).map(|w| w[2]);
    state("10") == Some("this") && state("11") == Some("alive")
}

#[test]
fn once_without_clumpd_fails_in_one_line() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let out = Command::new(env!("CARGO_BIN_EXE_clump"))
        .args(["mon", "--once"])
        .env("CLUMP_API_SOCKET", dir.path().join("sock"))
        .output()
        .expect("clump mon --once");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "clump: clumpd is not running (no {})\n",
            dir.path().join("sock").display()
        )
    );
}

#[test]
fn mon_shows_the_nodes_switches_views_resizes_and_quits() {
    let started = Instant::now();
    let mut lab = Lab::new();
    lab.start(0);
    lab.start(1);
    lab.wait_for(
        "both nodes to see each other, with speed and memory",
        Duration::from_secs(30),
        || {
            lab.map(0).is_some_and(|m| {
                m.nodes.iter().any(|n| n.state == NodeState::This)
                    && m.nodes.iter().any(|n| {
                        n.state == NodeState::Alive
                            && n.number == Some(11)
                            && n.speed.is_some()
                            && n.mem_total_kib.is_some()
                    })
            })
        },
    );

    // --once: the frame as plain text, every node on it, no escape sequences.
    let out = Command::new(env!("CARGO_BIN_EXE_clump"))
        .args(["mon", "--once", "--view", "jobs"])
        .env("CLUMP_API_SOCKET", lab.path(1, "sock"))
        .output()
        .expect("clump mon --once");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert!(!text.contains('\x1b'), "{text}");
    assert!(
        lines[1].starts_with(" l load   m memory   s speed  [j jobs]"),
        "{text}"
    );
    assert_eq!(row(&lines, "10").map(|w| w[2]), Some("alive"), "{text}");
    assert_eq!(row(&lines, "11").map(|w| w[2]), Some("this"), "{text}");

    lab.start_mon(0, 100, 30);
    let s = lab.wait_screen("both nodes on the load view", shows_both);
    assert_eq!(s.len(), 30, "{s:#?}");
    assert!(s[0].starts_with("cluster joined: 2/2 nodes alive"), "{s:#?}");
    assert!(s[1].starts_with("[l load]"), "{s:#?}");
    assert!(s[2].contains("LOAD, 1.00 = all cores busy"), "{s:#?}");
    for n in ["10", "11"] {
        let w = row(&s, n).expect("row");
        assert!(w[3].starts_with('['), "a bar for node {n}: {w:?}");
    }
    assert!(s[29].starts_with("keys: l m s j"), "{s:#?}");

    lab.tmux(&["send-keys", "-t", SESSION, "m"]);
    let s = lab.wait_screen("the memory view", |s| s[2].contains("MEMORY used of total"));
    assert!(s[1].contains("[m memory]"), "{s:#?}");
    assert!(s[2].trim_end().ends_with("USED/TOTAL"), "{s:#?}");
    assert!(shows_both(&s), "{s:#?}");
    let used = row(&s, "10").expect("row");
    assert!(
        used.last().is_some_and(|u| *u == "GiB" || *u == "MiB"),
        "{used:?}"
    );

    lab.tmux(&["resize-window", "-t", SESSION, "-x", "60", "-y", "20"]);
    let s = lab.wait_screen("a 60x20 frame", |s| {
        s.len() == 20 && s[19].starts_with("l m s j Tab: view")
    });
    // Every line is what a 60x20 frame holds, nothing left over from the 100x30 one.
    assert!(s.iter().all(|l| l.chars().count() <= 60), "{s:#?}");
    assert!(s[0].starts_with("cluster joined: 2/2 nodes alive"), "{s:#?}");
    assert!(s[1].starts_with(" l load  [m memory]"), "{s:#?}");
    assert!(s[2].starts_with("NUM ") && s[2].contains("MEMORY"), "{s:#?}");
    assert!(shows_both(&s), "{s:#?}");
    assert!(
        s[3].trim_end().ends_with("iB") && s[4].trim_end().ends_with("iB"),
        "{s:#?}"
    );
    assert!(s[5..18].iter().all(|l| l.trim().is_empty()), "{s:#?}");
    assert!(s[18].is_empty() || s[18].starts_with("last event: "), "{s:#?}");

    lab.tmux(&["send-keys", "-t", SESSION, "Tab"]);
    lab.wait_screen("Tab to the speed view", |s| {
        s[1].contains("[s speed]") && s[2].contains("SPEED x CORES")
    });

    lab.tmux(&["send-keys", "-t", SESSION, "q"]);
    let mut status = String::new();
    lab.wait_for("mon to exit on q", Duration::from_secs(5), || {
        status = std::fs::read_to_string(lab.mon_status()).unwrap_or_default();
        status.ends_with('\n')
    });
    let stderr = std::fs::read_to_string(lab.mon_stderr()).unwrap_or_default();
    assert_eq!(status.trim(), "0", "mon exited with status {status}: {stderr}");
    assert_eq!(stderr, "");
    // The alternate screen was left: what shows now is the pane's normal screen, not a frame.
    let s = lab.screen();
    assert!(
        !s.iter().any(|l| l.contains("keys:") || l.contains("[s speed]")),
        "{s:#?}"
    );
    eprintln!("mon test took {:?}", started.elapsed());
}
