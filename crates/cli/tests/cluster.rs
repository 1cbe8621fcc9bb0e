//! The cluster commands of the built `clump` against a fake `clumpd`: a thread on a temporary
//! socket that speaks the local API with canned answers and records every request line. It stands
//! in for the daemon so the command's own logic (requests, rendering, fallbacks, exit codes) is
//! tested; the daemon's side is tested in clump-clumpd.

use clump_api::{
    read_line, Dropped, Event, EventKind, MapState, NodeEntry, NodeMap, NodeState, Reply, Request, Speed,
    Stats,
};
use std::io::{BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

struct FakeClumpd {
    dir: tempfile::TempDir,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FakeClumpd {
    /// Serves every connection: for each request, `answer` gives the lines to send; after a
    /// `watch` the connection is closed, as when clumpd stops.
    fn start(answer: impl Fn(&Request) -> Vec<String> + Send + Sync + 'static) -> FakeClumpd {
        let dir = tempfile::tempdir().expect("temporary directory");
        let listener = UnixListener::bind(dir.path().join("clumpd.sock")).expect("bind the fake socket");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let answer = Arc::new(answer);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (seen, answer) = (seen.clone(), answer.clone());
                std::thread::spawn(move || {
                    let mut out = stream.try_clone().expect("clone the stream");
                    let mut reader = BufReader::new(stream);
                    let mut buf = Vec::new();
                    while let Ok(Some(line)) = read_line(&mut reader, &mut buf) {
                        seen.lock().expect("requests lock").push(line.clone());
                        let request: Request =
                            serde_json::from_str(&line).expect("clump sent a valid request");
                        for reply in answer(&request) {
                            if writeln!(out, "{reply}").is_err() {
                                return;
                            }
                        }
                        if request == Request::Watch {
                            return;
                        }
                    }
                });
            }
        });
        FakeClumpd { dir, requests }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("clumpd.sock")
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("requests lock").clone()
    }
}

fn clump(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clump"))
        .args(args)
        .env("CLUMP_API_SOCKET", socket)
        .output()
        .expect("run the built clump")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("stderr is UTF-8")
}

fn ok<T: serde::Serialize>(v: T) -> Vec<String> {
    vec![serde_json::to_string(&Reply::Ok(v)).expect("encode a reply")]
}

/// Three nodes: this one, a live one, a dead one not heard from since the daemon started.
fn map() -> NodeMap {
    let node = |n: u8, state| NodeEntry {
        number: Some(u32::from(n)),
        address: Some(Ipv4Addr::new(10, 0, 0, n)),
        prefix_len: Some(24),
        mac: Some(format!("52:54:00:12:34:{n:02x}")),
        hostname: Some(format!("node-{n}")),
        cores: Some(4),
        speed: Some(10_000 + u32::from(n)),
        mem_total_kib: Some(8 * 1024 * 1024),
        mem_free_kib: Some(6 * 1024 * 1024),
        load: Some(250 * u32::from(n)),
        jobs: Some(u32::from(n)),
        migrations_in: Some(u64::from(n)),
        migrations_out: Some(0),
        ..NodeEntry::unknown(format!("{n:032x}"), state)
    };
    NodeMap {
        version: 1,
        state: MapState::Joined,
        this: Some(format!("{:032x}", 1)),
        key_fingerprint: Some("0badf00d".into()),
        port: 7171,
        updated_ms: 0,
        nodes: vec![
            node(1, NodeState::This),
            node(2, NodeState::Alive),
            node(3, NodeState::Dead),
        ],
        foreign: vec![clump_api::Foreign {
            address: Ipv4Addr::new(10, 0, 0, 9),
            dropped: 12,
            last_ms: 0,
        }],
        dropped: Dropped {
            auth: 12,
            ..Dropped::default()
        },
    }
}

const TABLE: &str = "\
cluster joined, key 0badf00d, port 7171: 2 alive of 3 nodes, 8 cores
NUM  ADDRESS   HOSTNAME  STATE  SPEED  CORES  LOAD          MEM  JOBS  MIG   SEEN
  1  10.0.0.1  node-1    this   10001      4  0.25  2.0/8.0 GiB     1  1/0    now
  2  10.0.0.2  node-2    alive  10002      4  0.50  2.0/8.0 GiB     2  2/0  never
  3  10.0.0.3  node-3    dead   10003      4  0.75  2.0/8.0 GiB     3  3/0  never
refused 10.0.0.9: 12 datagrams failed authentication (different cluster key?)
";

fn event(seq: u64) -> Event {
    Event {
        seq,
        time_ms: 1_763_797_036_000 + seq * 1000,
        kind: EventKind::NodeJoined,
        node: Some(format!("{seq:032x}")),
        number: Some(u32::try_from(seq).expect("small seq")),
        address: Some(Ipv4Addr::new(10, 0, 0, u8::try_from(seq).expect("small seq"))),
        text: format!("node {seq} (10.0.0.{seq}) joined"),
    }
}

#[test]
fn nodes_prints_the_table() {
    let clumpd = FakeClumpd::start(|_| ok(map()));
    let out = clump(&clumpd.socket(), &["nodes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), TABLE);
    assert_eq!(stderr(&out), "");
    assert_eq!(clumpd.requests(), [r#"{"v":1,"op":"nodes"}"#]);
}

#[test]
fn nodes_json_is_the_node_map() {
    let clumpd = FakeClumpd::start(|_| ok(map()));
    let out = clump(&clumpd.socket(), &["nodes", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("{\n  \"version\": 1,"), "{text}");
    assert_eq!(serde_json::from_str::<NodeMap>(&text).unwrap(), map());
}

#[test]
fn nodes_without_clumpd_reads_nodes_json_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("clumpd.sock");
    std::fs::write(
        dir.path().join("nodes.json"),
        serde_json::to_string(&map()).unwrap(),
    )
    .unwrap();
    let out = clump(&socket, &["nodes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), TABLE);
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "clump: clumpd is not running (no {}); showing {} as written ",
            socket.display(),
            dir.path().join("nodes.json").display()
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn without_clumpd_or_nodes_json_the_commands_fail_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("clumpd.sock");
    let not_running = format!("clump: clumpd is not running (no {})", socket.display());
    for args in [
        &["nodes"][..],
        &["nodes", "--json"],
        &["stats"],
        &["events"],
        &["node", "set-speed", "5"],
    ] {
        let out = clump(&socket, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(stdout(&out), "", "{args:?}");
        let err = stderr(&out);
        assert!(err.starts_with(&not_running), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
    let err = stderr(&clump(&socket, &["nodes"]));
    assert!(err.contains("and no node map to show: cannot read"), "{err}");
}

#[test]
fn set_speed_sends_the_figure_or_null() {
    let clumpd = FakeClumpd::start(|r| match r {
        Request::SetSpeed { speed } => ok(Speed {
            speed: speed.or(Some(9000)),
            measured: Some(9000),
            fixed: speed.is_some(),
        }),
        _ => vec![r#"{"error":"unexpected"}"#.into()],
    });
    let out = clump(&clumpd.socket(), &["node", "set-speed", "5000"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "speed of this node set to 5000 (measured: 9000)\n");
    let out = clump(&clumpd.socket(), &["node", "set-speed", "--measured"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "speed of this node back to the measured figure (9000)\n"
    );
    assert_eq!(
        clumpd.requests(),
        [
            r#"{"v":1,"op":"set-speed","speed":5000}"#,
            r#"{"v":1,"op":"set-speed","speed":null}"#
        ]
    );
    // Out of range: refused before anything is sent.
    let out = clump(&clumpd.socket(), &["node", "set-speed", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(clumpd.requests().len(), 2);
}

#[test]
fn an_error_from_clumpd_is_the_message_and_exit_code_1() {
    let clumpd = FakeClumpd::start(|_| vec![r#"{"error":"only root may set the speed"}"#.into()]);
    let out = clump(&clumpd.socket(), &["node", "set-speed", "5000"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "clump: clumpd: only root may set the speed\n");
}

#[test]
fn stats_as_a_list_and_as_json() {
    let stats = Stats {
        uptime_ms: 250_000,
        members: 2,
        alive: 2,
        datagrams_in: 7,
        ..Stats::default()
    };
    let reply = stats.clone();
    let clumpd = FakeClumpd::start(move |_| ok(&reply));
    let out = clump(&clumpd.socket(), &["stats"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), clump_api::table::stats(&stats));
    assert!(
        stdout(&out).starts_with("uptime      4m 10s\n"),
        "{}",
        stdout(&out)
    );
    let out = clump(&clumpd.socket(), &["stats", "--json"]);
    assert_eq!(serde_json::from_slice::<Stats>(&out.stdout).unwrap(), stats);
    assert_eq!(
        clumpd.requests(),
        [r#"{"v":1,"op":"stats"}"#, r#"{"v":1,"op":"stats"}"#]
    );
}

#[test]
fn events_prints_the_history_after_since() {
    let clumpd = FakeClumpd::start(|r| match r {
        Request::Events { since } => ok((since + 1..=5).map(event).collect::<Vec<_>>()),
        _ => vec![r#"{"error":"unexpected"}"#.into()],
    });
    let out = clump(&clumpd.socket(), &["events", "--since", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "2025-11-22 07:37:20  #4  node 4 (10.0.0.4) joined\n2025-11-22 07:37:21  #5  node 5 (10.0.0.5) joined\n"
    );
    let out = clump(&clumpd.socket(), &["events", "--json"]);
    let lines: Vec<Event> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, (1..=5).map(event).collect::<Vec<_>>());
    assert_eq!(
        clumpd.requests(),
        [
            r#"{"v":1,"op":"events","since":3}"#,
            r#"{"v":1,"op":"events","since":0}"#
        ]
    );
}

#[test]
fn events_follow_joins_history_and_stream_without_repeats() {
    // The stream repeats 2 (it happened between the watch and the history request), then has a
    // gap (4 was dropped for this watcher), then clumpd goes away.
    let clumpd = FakeClumpd::start(|r| match r {
        Request::Watch => [2, 3, 5].into_iter().flat_map(|s| ok(event(s))).collect(),
        Request::Events { since } => ok((since + 1..=2).map(event).collect::<Vec<_>>()),
        _ => vec![r#"{"error":"unexpected"}"#.into()],
    });
    let out = clump(&clumpd.socket(), &["events", "-f"]);
    let text = stdout(&out);
    let seqs: Vec<&str> = text.lines().filter_map(|l| l.split("  ").nth(1)).collect();
    assert_eq!(seqs, ["#1", "#2", "#3", "#5"], "{text}");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "clump: 1 event missed\nclump: clumpd closed the event stream (stopped or restarted?)\n"
    );
    // Two connections, served by two threads: the order they were recorded in is not the order sent.
    let mut requests = clumpd.requests();
    requests.sort();
    assert_eq!(
        requests,
        [r#"{"v":1,"op":"events","since":0}"#, r#"{"v":1,"op":"watch"}"#]
    );
}
