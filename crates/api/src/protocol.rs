//! The local API's messages and line framing (ARCHITECTURE.md, "Local API").
//!
//! A stream socket carrying one JSON object per line each way. The client sends a [`Request`];
//! every line the server sends is a [`Reply`]: `{"ok": ...}` or `{"error": "message"}`. After
//! `{"op":"watch"}` the server sends one `{"ok": <Event>}` line per event until either side closes;
//! an `{"error": ...}` line ends the stream.

use crate::error::ApiError;
use crate::map::Dropped;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Read, Write};
use std::net::Ipv4Addr;

/// The longest line a request or an event may be, newline not counted. The server reads requests
/// from any local user, so it must not buffer more than this before deciding.
pub const MAX_LINE: usize = 65536;

/// The longest reply line the client accepts. Replies come from `clumpd` (root), and a node map
/// grows by about 400 bytes per node, so [`MAX_LINE`] would cap `nodes` at some 150 nodes; this
/// leaves room for a 10,000-node map several times over while still bounding a broken daemon.
pub const MAX_REPLY_LINE: usize = 32 << 20;

/// The version of this protocol. A request may carry it as `"v"`; one without is taken as
/// version 1 (the CLI of an older image), one with another is refused with a clear error.
pub const API_VERSION: u32 = 1;

/// A request as it goes on the wire: `{"v": 1, "op": ...}`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Versioned<R> {
    #[serde(default = "first_version")]
    pub v: u32,
    #[serde(flatten)]
    pub request: R,
}

fn first_version() -> u32 {
    1
}

impl<R> Versioned<R> {
    pub fn new(request: R) -> Self {
        Self {
            v: API_VERSION,
            request,
        }
    }

    /// The request, if its version is the one this side speaks.
    pub fn checked(self) -> Result<R, String> {
        if self.v == API_VERSION {
            Ok(self.request)
        } else {
            Err(format!(
                "local API version {} is not supported (this clumpd speaks version {API_VERSION})",
                self.v
            ))
        }
    }
}

/// What a client asks.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// The node map; the reply is a [`crate::NodeMap`].
    Nodes,
    /// The events with `seq` greater than `since` that the daemon still holds; the reply is a
    /// list of [`Event`]s, oldest first.
    Events {
        #[serde(default)]
        since: u64,
    },
    /// Counters of the gossip layer; the reply is [`Stats`].
    Stats,
    /// Fix this node's speed (root only), or with `None` go back to the measured figure; the
    /// reply is [`Speed`].
    SetSpeed { speed: Option<u32> },
    /// Turn the connection into an event stream: one `{"ok": <Event>}` line per event from now on.
    Watch,
    /// Start a job as the caller's uid and gid. Without `attach` the reply is a
    /// [`crate::jobs::Started`]; with it the connection becomes the job's stream (see
    /// [`crate::jobs::StreamOutput`] and [`crate::jobs::StreamInput`]), starting with `started`.
    Run {
        argv: Vec<String>,
        /// An absolute directory the job starts in.
        cwd: String,
        /// `NAME=value` strings, the whole environment of the job.
        #[serde(default)]
        env: Vec<String>,
        #[serde(default)]
        attach: bool,
        /// Where it should run; it starts here and moves there at once (as MOSIX did).
        #[serde(default)]
        place: crate::jobs::Place,
        /// Lock it to the node it runs on once placed.
        #[serde(default)]
        lock: bool,
    },
    /// Turn the connection into the stream of a running or ended job: from `offset` (default:
    /// the oldest byte kept), then live output, then its exit.
    Attach {
        job: String,
        #[serde(default)]
        offset: Option<u64>,
    },
    /// Every job this node holds; the reply is a list of [`crate::jobs::JobInfo`].
    /// With `local`, only this node's (its own jobs and its guests); else the cluster's.
    Ps {
        #[serde(default)]
        local: bool,
    },
    /// Send a signal (a name like `TERM` or a number) to a job; the reply is null.
    Signal { job: String, signal: String },
    /// What is kept of a job's output; the reply is a [`crate::jobs::Output`].
    Output { job: String },
    /// Wait until the job ends; the reply is its [`crate::jobs::ExitStatus`].
    Wait { job: String },
    /// Move a running job of this node to `node` (a number, hostname or address), or home
    /// with `None`; the reply, once it runs there, is a [`crate::jobs::Migrated`].
    /// `no_precopy` freezes the job for the whole copy of its memory (for comparison).
    /// Lock a job of this node to the node it runs on (`locked`), or let it move again; the
    /// reply is null.
    Lock { job: String, locked: bool },
    Migrate {
        job: String,
        #[serde(default)]
        node: Option<String>,
        #[serde(default)]
        no_precopy: bool,
    },
    /// This node's guest policy and balancer: with `change` (root only) apply it first; the
    /// reply is [`NodeControl`].
    Node {
        #[serde(default)]
        change: Option<NodeChange>,
    },
}

/// A change to how this node takes guests and balances (`clump node block|drain|window|balance`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum NodeChange {
    /// Take no guest jobs (`true`) or take them again.
    Block(bool),
    /// Send the guests away and take none (`true`), or stop draining.
    Drain(bool),
    /// Take guests only within `HH:MM-HH:MM` (the node's clock), or always with `None`.
    Window(Option<String>),
    /// Set a balancer knob by name (see `clump node balance`); the knob `balancer` takes `on`
    /// or `off`.
    Knob { name: String, value: String },
}

/// How this node takes guests and balances, after a `node` request.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeControl {
    pub blocked: bool,
    pub draining: bool,
    /// `HH:MM-HH:MM`, if the node has one.
    pub window: Option<String>,
    /// `open`, `closing` (guests leave before it ends) or `closed`; null without a window.
    pub window_state: Option<String>,
    /// Whether guests may come now.
    pub accepts_guests: bool,
    /// Guest jobs running here now.
    pub guests: u32,
    /// The balancer moves jobs of this node by itself.
    pub balancer: bool,
    /// The balancer's knobs by name, with their values.
    pub knobs: Vec<(String, u64)>,
}

/// Every line the server sends: `{"ok": <value>}` or `{"error": "message"}`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Reply<T> {
    Ok(T),
    Error(String),
}

impl<T> Reply<T> {
    /// The value, or the server's message as [`ApiError::Remote`].
    pub fn into_result(self) -> Result<T, ApiError> {
        match self {
            Reply::Ok(v) => Ok(v),
            Reply::Error(message) => Err(ApiError::Remote(message)),
        }
    }
}

/// Something that happened to the cluster, as `events` and `watch` report it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Counts from 1 per daemon start; a reader asks for `events` after the last one it saw.
    pub seq: u64,
    /// When it happened (unix ms).
    pub time_ms: u64,
    pub kind: EventKind,
    /// The node it is about (id), if any.
    pub node: Option<String>,
    pub number: Option<u32>,
    pub address: Option<Ipv4Addr>,
    /// A sentence for people, e.g. "node 12 (10.0.0.12) joined".
    pub text: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    NodeJoined,
    NodeAlive,
    NodeSuspect,
    NodeDead,
    NodeLeft,
    NodeLeaving,
    Conflict,
    /// Datagrams from an address were refused (failed authentication).
    Refused,
    /// This node joined a cluster.
    JoinedCluster,
    /// This node found no other node.
    Alone,
    /// A job of this node moved (its `number` is the node it went to).
    JobMigrated,
    /// A job of this node was restarted from its last checkpoint after the node running it
    /// died (its `number` is the node it runs on now).
    JobRecovered,
    /// A kind this build does not know (sent by a newer `clumpd`); never sent.
    #[serde(other)]
    Unknown,
}

/// Counters of the daemon and its gossip layer since it started. Missing fields read as 0, so
/// readers and writers of different versions agree on what they share.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(default)]
pub struct Stats {
    pub uptime_ms: u64,
    /// Nodes in a member state: self, alive, suspect, leaving.
    pub members: u64,
    /// Nodes in state self or alive.
    pub alive: u64,
    pub suspect: u64,
    pub dead: u64,
    /// Nodes flagged with a conflict.
    pub conflicts: u64,
    /// Addresses whose datagrams were refused (another cluster key).
    pub foreign: u64,
    /// UDP datagrams on the cluster port, every kind.
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Sends the kernel refused (no route, buffer full).
    pub send_errors: u64,
    /// Received datagrams dropped, by reason.
    pub dropped: Dropped,
    /// Hellos sent (broadcast and unicast) and received (authentic).
    pub hello_sent: u64,
    pub hello_received: u64,
    /// SWIM (foca) packets.
    pub swim_sent: u64,
    pub swim_received: u64,
    /// `Records` packets, and the records in them that were newer than the ones held.
    pub records_sent: u64,
    pub records_received: u64,
    pub records_applied: u64,
    /// Full state exchanges asked for and answered.
    pub sync_sent: u64,
    pub sync_received: u64,
    /// ARP sweeps of the subnet, requests sent, hosts that answered.
    pub sweep_runs: u64,
    pub sweep_sent: u64,
    pub sweep_found: u64,
    /// The last event's `seq`.
    pub events: u64,
    /// Times `nodes.json` and `mosix.map` were rewritten.
    pub map_writes: u64,
    /// TCP streams on the cluster port that completed the Noise handshake (job streams).
    pub streams_accepted: u64,
    /// TCP connections on the cluster port turned away before or at the handshake, by reason.
    pub streams_refused: StreamsRefused,
}

/// Connections to the job-stream listener that never became a stream.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(default)]
pub struct StreamsRefused {
    /// The handshake failed: no cluster key, another stream version, garbage or a replay.
    pub auth: u64,
    /// The handshake did not finish in its time (a peer that stalls or trickles).
    pub timeout: u64,
    /// The peer closed or reset the connection before the handshake ended.
    pub closed: u64,
    /// Turned away unread: too many handshakes from that address, or streams in all.
    pub busy: u64,
    /// Any other failure of the connection.
    pub other: u64,
}

impl StreamsRefused {
    /// All refusals together.
    pub fn total(&self) -> u64 {
        [self.auth, self.timeout, self.closed, self.busy, self.other]
            .iter()
            .fold(0u64, |a, b| a.saturating_add(*b))
    }
}

/// This node's speed after a `set-speed`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Speed {
    /// The figure in effect (the one set, else the measured one); null before the first measurement.
    pub speed: Option<u32>,
    /// What the node measured; null before the first measurement.
    pub measured: Option<u32>,
    /// True when `speed` was set by hand rather than measured.
    pub fixed: bool,
}

/// Reads one line of at most [`MAX_LINE`] bytes; see [`read_line_max`].
pub fn read_line<R: BufRead>(r: &mut R, buf: &mut Vec<u8>) -> Result<Option<String>, ApiError> {
    read_line_max(r, buf, MAX_LINE)
}

/// Reads one line (the newline, and a `\r` before it, removed); `None` at the end of the stream.
/// A last line without a newline is still a line. Refuses a line longer than `max` bytes after
/// reading at most `max + 1` of them, so a peer cannot make us buffer without bound; after
/// [`ApiError::TooLong`] the stream is out of step and should be closed. `buf` is scratch space
/// kept by the caller to save allocations.
pub fn read_line_max<R: BufRead>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<Option<String>, ApiError> {
    buf.clear();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    r.take(limit)
        .read_until(b'\n', buf)
        .map_err(|e| ApiError::io("cannot read from the socket", e))?;
    if buf.is_empty() {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    } else if buf.len() > max {
        return Err(ApiError::TooLong { limit: max });
    }
    match std::str::from_utf8(buf) {
        Ok(s) => Ok(Some(s.to_owned())),
        Err(e) => Err(ApiError::Protocol(format!("line is not UTF-8: {e}"))),
    }
}

/// Writes `value` as one line of compact JSON (which never holds a raw newline) and flushes.
pub fn write_line<W: Write, T: Serialize + ?Sized>(w: &mut W, value: &T) -> Result<(), ApiError> {
    let mut line =
        serde_json::to_vec(value).map_err(|e| ApiError::Protocol(format!("cannot encode: {e}")))?;
    line.push(b'\n');
    w.write_all(&line)
        .map_err(|e| ApiError::io("cannot write to the socket", e))?;
    w.flush()
        .map_err(|e| ApiError::io("cannot write to the socket", e))
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_request_carries_its_version_and_another_version_is_refused_by_name() {
        let line = serde_json::to_string(&Versioned::new(Request::Nodes)).unwrap();
        assert_eq!(line, r#"{"v":1,"op":"nodes"}"#);
        let old: Versioned<Request> = serde_json::from_str(r#"{"op":"stats"}"#).unwrap();
        assert_eq!(old.checked(), Ok(Request::Stats));
        let newer: Versioned<Request> = serde_json::from_str(r#"{"v":2,"op":"stats"}"#).unwrap();
        let err = newer.checked().unwrap_err();
        assert!(
            err.contains("version 2") && err.contains("speaks version 1"),
            "{err}"
        );
    }

    use super::*;
    use crate::map::tests::fixture;
    use serde_json::json;
    use std::io::{BufReader, Cursor};

    #[test]
    fn requests_are_the_documented_json() {
        let cases = [
            (Request::Nodes, json!({"op": "nodes"})),
            (Request::Events { since: 7 }, json!({"op": "events", "since": 7})),
            (Request::Stats, json!({"op": "stats"})),
            (
                Request::SetSpeed { speed: Some(5000) },
                json!({"op": "set-speed", "speed": 5000}),
            ),
            (
                Request::SetSpeed { speed: None },
                json!({"op": "set-speed", "speed": null}),
            ),
            (Request::Watch, json!({"op": "watch"})),
            (
                Request::Run {
                    argv: vec!["sh".into(), "-c".into(), "exit 3".into()],
                    cwd: "/tmp".into(),
                    env: vec!["HOME=/root".into()],
                    attach: true,
                    place: crate::jobs::Place::On("12".into()),
                    lock: true,
                },
                json!({"op": "run", "argv": ["sh", "-c", "exit 3"], "cwd": "/tmp",
                       "env": ["HOME=/root"], "attach": true, "place": {"on": "12"}, "lock": true}),
            ),
            (
                Request::Lock {
                    job: "0a1b2c3d".into(),
                    locked: false,
                },
                json!({"op": "lock", "job": "0a1b2c3d", "locked": false}),
            ),
            (
                Request::Attach {
                    job: "0a1b2c3d".into(),
                    offset: Some(7),
                },
                json!({"op": "attach", "job": "0a1b2c3d", "offset": 7}),
            ),
            (Request::Ps { local: false }, json!({"op": "ps", "local": false})),
            (
                Request::Signal {
                    job: "0a1b2c3d".into(),
                    signal: "TERM".into(),
                },
                json!({"op": "signal", "job": "0a1b2c3d", "signal": "TERM"}),
            ),
            (
                Request::Output {
                    job: "0a1b2c3d".into(),
                },
                json!({"op": "output", "job": "0a1b2c3d"}),
            ),
            (
                Request::Wait {
                    job: "0a1b2c3d".into(),
                },
                json!({"op": "wait", "job": "0a1b2c3d"}),
            ),
        ];
        for (request, want) in cases {
            assert_eq!(serde_json::to_value(&request).unwrap(), want);
            assert_eq!(serde_json::from_value::<Request>(want).unwrap(), request);
        }
    }

    #[test]
    fn requests_read_leniently() {
        let read = |s: &str| serde_json::from_str::<Request>(s);
        assert_eq!(read(r#"{"op":"events"}"#).unwrap(), Request::Events { since: 0 });
        assert_eq!(
            read(r#"{"op":"set-speed"}"#).unwrap(),
            Request::SetSpeed { speed: None }
        );
        assert_eq!(read(r#"{"client":"x","op":"nodes"}"#).unwrap(), Request::Nodes);
        assert!(read(r#"{"op":"reboot"}"#).is_err());
        assert_eq!(
            read(r#"{"op":"run","argv":["true"],"cwd":"/"}"#).unwrap(),
            Request::Run {
                argv: vec!["true".into()],
                cwd: "/".into(),
                env: vec![],
                attach: false,
                place: crate::jobs::Place::Best,
                lock: false,
            }
        );
        assert_eq!(
            read(r#"{"op":"attach","job":"x"}"#).unwrap(),
            Request::Attach {
                job: "x".into(),
                offset: None
            }
        );
        assert!(read(r#"{"op":"set-speed","speed":-1}"#).is_err());
        assert!(read(r#"{"since":1}"#).is_err());
    }

    #[test]
    fn replies_are_ok_or_error() {
        assert_eq!(serde_json::to_string(&Reply::Ok(3u32)).unwrap(), r#"{"ok":3}"#);
        assert_eq!(
            serde_json::to_string(&Reply::<()>::Ok(())).unwrap(),
            r#"{"ok":null}"#
        );
        assert_eq!(
            serde_json::to_string(&Reply::<u32>::Error("only root may set the speed".into())).unwrap(),
            r#"{"error":"only root may set the speed"}"#
        );
        let r: Reply<u32> = serde_json::from_str(r#"{"error":"no"}"#).unwrap();
        assert!(matches!(r.into_result(), Err(ApiError::Remote(m)) if m == "no"));
        let map = fixture();
        let line = serde_json::to_string(&Reply::Ok(&map)).unwrap();
        assert_eq!(
            serde_json::from_str::<Reply<crate::NodeMap>>(&line).unwrap(),
            Reply::Ok(map)
        );
    }

    #[test]
    fn events_and_stats_have_the_documented_words() {
        let e = Event {
            seq: 4,
            time_ms: 1_763_797_036_000,
            kind: EventKind::NodeJoined,
            node: Some("ab".repeat(16)),
            number: Some(12),
            address: Some(Ipv4Addr::new(10, 0, 0, 12)),
            text: "node 12 (10.0.0.12) joined".into(),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["kind"], "node-joined");
        assert_eq!(v["address"], "10.0.0.12");
        assert_eq!(serde_json::from_value::<Event>(v).unwrap(), e);
        for (k, word) in [
            (EventKind::NodeAlive, "node-alive"),
            (EventKind::NodeSuspect, "node-suspect"),
            (EventKind::NodeDead, "node-dead"),
            (EventKind::NodeLeft, "node-left"),
            (EventKind::NodeLeaving, "node-leaving"),
            (EventKind::Conflict, "conflict"),
            (EventKind::Refused, "refused"),
            (EventKind::JoinedCluster, "joined-cluster"),
            (EventKind::Alone, "alone"),
        ] {
            assert_eq!(serde_json::to_value(k).unwrap(), word);
        }
        let stats: Stats =
            serde_json::from_str(r#"{"uptime_ms":5,"dropped":{"auth":2},"future":1}"#).unwrap();
        assert_eq!(stats.uptime_ms, 5);
        assert_eq!(stats.dropped.auth, 2);
        assert_eq!(stats.members, 0);
    }

    #[test]
    fn read_line_splits_lines() {
        let mut r = Cursor::new(b"{\"op\":\"nodes\"}\r\n\nlast".to_vec());
        let mut buf = Vec::new();
        assert_eq!(
            read_line(&mut r, &mut buf).unwrap().as_deref(),
            Some(r#"{"op":"nodes"}"#)
        );
        assert_eq!(read_line(&mut r, &mut buf).unwrap().as_deref(), Some(""));
        assert_eq!(read_line(&mut r, &mut buf).unwrap().as_deref(), Some("last"));
        assert_eq!(read_line(&mut r, &mut buf).unwrap(), None);
    }

    #[test]
    fn read_line_takes_max_line_and_refuses_one_more() {
        let mut buf = Vec::new();
        let mut exact = vec![b'a'; MAX_LINE];
        exact.push(b'\n');
        let got = read_line(&mut Cursor::new(exact), &mut buf).unwrap().unwrap();
        assert_eq!(got.len(), MAX_LINE);
        let long = vec![b'a'; MAX_LINE + 1];
        assert!(matches!(
            read_line(&mut Cursor::new(long), &mut buf),
            Err(ApiError::TooLong { limit: MAX_LINE })
        ));
    }

    /// A reader that never ends, counting what is taken from it.
    struct Endless(usize);
    impl Read for Endless {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            out.fill(b'x');
            self.0 += out.len();
            Ok(out.len())
        }
    }

    #[test]
    fn read_line_does_not_read_an_endless_line_to_its_end() {
        let mut source = Endless(0);
        let mut r = BufReader::with_capacity(4096, &mut source);
        let mut buf = Vec::new();
        assert!(matches!(
            read_line(&mut r, &mut buf),
            Err(ApiError::TooLong { .. })
        ));
        assert!(buf.len() <= MAX_LINE + 1);
        drop(r);
        assert!(source.0 <= MAX_LINE + 4096, "read {} bytes", source.0);
    }

    #[test]
    fn read_line_refuses_bytes_that_are_not_utf8() {
        let mut buf = Vec::new();
        let e = read_line(&mut Cursor::new(b"\xff\xfe\n".to_vec()), &mut buf).unwrap_err();
        assert!(matches!(e, ApiError::Protocol(_)), "{e}");
    }

    #[test]
    fn write_line_then_read_line_round_trips() {
        let mut wire = Vec::new();
        write_line(&mut wire, &Request::Events { since: 3 }).unwrap();
        write_line(&mut wire, &Reply::Ok("two\nlines")).unwrap();
        assert_eq!(wire.iter().filter(|b| **b == b'\n').count(), 2);
        let mut r = Cursor::new(wire);
        let mut buf = Vec::new();
        let first = read_line(&mut r, &mut buf).unwrap().unwrap();
        assert_eq!(
            serde_json::from_str::<Request>(&first).unwrap(),
            Request::Events { since: 3 }
        );
        let second = read_line(&mut r, &mut buf).unwrap().unwrap();
        assert_eq!(
            serde_json::from_str::<Reply<String>>(&second).unwrap(),
            Reply::Ok("two\nlines".into())
        );
    }

    #[test]
    fn a_ten_thousand_node_map_fits_in_a_reply_line() {
        let mut map = fixture();
        let template = map.nodes[0].clone();
        map.nodes = (0..10_000u32)
            .map(|i| {
                let mut n = template.clone();
                n.id = format!("{i:032x}");
                n.number = Some(i);
                n.hostname = Some(format!("a-rather-long-hostname-{i}"));
                n
            })
            .collect();
        let len = serde_json::to_vec(&Reply::Ok(&map)).unwrap().len();
        assert!(len > MAX_LINE, "{len}");
        assert!(len * 4 < MAX_REPLY_LINE, "{len}");
    }
}
