//! The node map, the counters and events as text for a terminal (`clump nodes`, `clump stats`,
//! `clump events`, and the screen). Unknown values are shown as `-`.

use crate::map::{Dropped, MapState, NodeEntry, NodeMap, NodeState};
use crate::protocol::{Event, Stats};
use std::fmt::Write;

const UNKNOWN: &str = "-";

/// The node map as a table: a summary line, one row per node sorted by number, and one line per
/// refused (foreign) address. `now_ms` (unix ms) is what the SEEN column counts back from.
pub fn nodes(map: &NodeMap, now_ms: u64) -> String {
    let mut out = summary(map);
    out.push('\n');
    let mut rows: Vec<&NodeEntry> = map.nodes.iter().collect();
    // Numbered nodes first, in number order; the rest by address, then id.
    rows.sort_by_key(|n| (n.number.is_none(), n.number, n.address, n.id.as_str()));
    if rows.is_empty() {
        out.push_str("no nodes known yet\n");
    } else {
        let header = [
            "NUM", "ADDRESS", "HOSTNAME", "STATE", "SPEED", "CORES", "LOAD", "MEM", "JOBS", "MIG", "SEEN",
        ];
        let right = [
            true, false, false, false, true, true, true, true, true, true, true,
        ];
        let cells: Vec<[String; 11]> = rows.iter().map(|n| row(n, now_ms)).collect();
        let mut lines = vec![header.map(String::from)];
        lines.extend(cells);
        out.push_str(&align(&lines, &right));
    }
    for f in &map.foreign {
        let plural = if f.dropped == 1 { "datagram" } else { "datagrams" };
        let _ = writeln!(
            out,
            "refused {}: {} {plural} failed authentication (different cluster key?)",
            f.address, f.dropped
        );
    }
    out
}

fn summary(map: &NodeMap) -> String {
    let state = match map.state {
        MapState::Joining => "joining",
        MapState::Joined => "joined",
        MapState::Alone => "alone (no other node found)",
        MapState::NoKey => "no-key (no cluster key: not joining)",
        MapState::NoLease => "no-lease (no network lease yet)",
        MapState::Unknown => "unknown",
    };
    let key = map
        .key_fingerprint
        .as_deref()
        .map_or_else(|| "no key".to_owned(), |k| format!("key {k}"));
    let alive: Vec<&NodeEntry> = map.alive().collect();
    let cores: u64 = alive.iter().filter_map(|n| n.cores).map(u64::from).sum();
    let total = map.nodes.len();
    let noun = if total == 1 { "node" } else { "nodes" };
    format!(
        "cluster {state}, {key}, port {}: {} alive of {total} {noun}, {cores} cores",
        map.port,
        alive.len()
    )
}

fn row(n: &NodeEntry, now_ms: u64) -> [String; 11] {
    let opt = |v: Option<String>| v.unwrap_or_else(|| UNKNOWN.to_owned());
    let mut state = match n.state {
        NodeState::This => "this".to_owned(),
        s => s.as_str().to_owned(),
    };
    for c in &n.conflicts {
        state.push_str(", ");
        state.push_str(c.describe());
    }
    let migrations = match (n.migrations_in, n.migrations_out) {
        (None, None) => UNKNOWN.to_owned(),
        (i, o) => format!(
            "{}/{}",
            opt(i.map(|v| v.to_string())),
            opt(o.map(|v| v.to_string()))
        ),
    };
    let seen = if n.state == NodeState::This {
        "now".to_owned()
    } else {
        seen(n.last_seen_ms, now_ms)
    };
    [
        opt(n.number.map(|v| v.to_string())),
        opt(n.address.map(|v| v.to_string())),
        opt(n.hostname.clone()),
        state,
        opt(n.speed.map(|v| v.to_string())),
        opt(n.cores.map(|v| v.to_string())),
        opt(n.load.map(milli)),
        memory(n.mem_total_kib, n.mem_free_kib),
        opt(n.jobs.map(|v| v.to_string())),
        migrations,
        seen,
    ]
}

/// Lays rows out in columns two spaces apart, without trailing blanks.
fn align<const N: usize>(rows: &[[String; N]], right: &[bool; N]) -> String {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let w = widths[i];
            if right[i] {
                let _ = write!(line, "{cell:>w$}");
            } else {
                let _ = write!(line, "{cell:<w$}");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Thousandths as a decimal with two places, rounded: 870 → "0.87".
fn milli(v: u32) -> String {
    let centi = (u64::from(v) + 5) / 10;
    format!("{}.{:02}", centi / 100, centi % 100)
}

/// Used and total memory: "800/1000 MiB" below 1 GiB of total, "4.0/16.0 GiB" from there on.
fn memory(total_kib: Option<u64>, free_kib: Option<u64>) -> String {
    const GIB: u64 = 1024 * 1024;
    let Some(total) = total_kib else {
        return UNKNOWN.to_owned();
    };
    let used = free_kib.map(|f| total.saturating_sub(f));
    if total >= GIB {
        // Tenths of a GiB, rounded, in integers so no float rounding shows.
        let tenths = |kib: u64| {
            let t = (u128::from(kib) * 10 + u128::from(GIB / 2)) / u128::from(GIB);
            format!("{}.{}", t / 10, t % 10)
        };
        format!(
            "{}/{} GiB",
            used.map_or_else(|| UNKNOWN.to_owned(), tenths),
            tenths(total)
        )
    } else {
        let mib = |kib: u64| ((kib + 512) / 1024).to_string();
        format!(
            "{}/{} MiB",
            used.map_or_else(|| UNKNOWN.to_owned(), mib),
            mib(total)
        )
    }
}

/// How long ago `last_ms` was: "now", "12s", "3m", "5h", "2d"; "never" for 0.
fn seen(last_ms: u64, now_ms: u64) -> String {
    if last_ms == 0 {
        return "never".to_owned();
    }
    // A timestamp from the future (another node's clock) is shown as now.
    let s = now_ms.saturating_sub(last_ms) / 1000;
    match s {
        0 => "now".to_owned(),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// A duration for people: "3d 4h", "2h 5m", "4m 10s", "12s".
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    let (d, h, m, s) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// A byte count for people: "512 B", "56.7 KiB", "3.2 MiB".
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut scale = 1024u128;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if u128::from(n) < scale * 1024 {
            break;
        }
        scale *= 1024;
        unit = u;
    }
    let tenths = (u128::from(n) * 10 + scale / 2) / scale;
    format!("{}.{} {unit}", tenths / 10, tenths % 10)
}

/// The drops with their reasons, the non-zero ones only: "12 (auth 12)", or "none".
fn dropped(d: &Dropped) -> String {
    let reasons = [
        ("too-short", d.too_short),
        ("too-large", d.too_large),
        ("not-clump", d.not_clump),
        ("version", d.version),
        ("auth", d.auth),
        ("replay", d.replay),
        ("malformed", d.malformed),
    ];
    let parts: Vec<String> = reasons
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    if parts.is_empty() {
        "none".to_owned()
    } else {
        format!("{} ({})", d.total(), parts.join(", "))
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The counters as a two-column list.
pub fn stats(s: &Stats) -> String {
    let rows: Vec<[String; 2]> = [
        ("uptime", duration(s.uptime_ms)),
        (
            "nodes",
            format!(
                "{} members ({} alive, {} suspect), {} dead, {} in conflict, refused {}",
                s.members,
                s.alive,
                s.suspect,
                s.dead,
                s.conflicts,
                plural(s.foreign, "address", "addresses")
            ),
        ),
        (
            "datagrams",
            format!(
                "{} in ({}), {} out ({}), {} send errors",
                s.datagrams_in,
                bytes(s.bytes_in),
                s.datagrams_out,
                bytes(s.bytes_out),
                s.send_errors
            ),
        ),
        ("dropped", dropped(&s.dropped)),
        (
            "hellos",
            format!("{} sent, {} received", s.hello_sent, s.hello_received),
        ),
        (
            "swim",
            format!("{} sent, {} received", s.swim_sent, s.swim_received),
        ),
        (
            "records",
            format!(
                "{} sent, {} received, {} applied",
                s.records_sent, s.records_received, s.records_applied
            ),
        ),
        (
            "syncs",
            format!("{} sent, {} received", s.sync_sent, s.sync_received),
        ),
        (
            "arp sweeps",
            format!(
                "{} ({} requests, {} found)",
                s.sweep_runs,
                s.sweep_sent,
                plural(s.sweep_found, "host", "hosts")
            ),
        ),
        (
            "streams",
            format!(
                "{} accepted, refused {} (auth {}, timeout {}, closed {}, busy {}, other {})",
                s.streams_accepted,
                s.streams_refused.total(),
                s.streams_refused.auth,
                s.streams_refused.timeout,
                s.streams_refused.closed,
                s.streams_refused.busy,
                s.streams_refused.other
            ),
        ),
        ("events", s.events.to_string()),
        ("map writes", s.map_writes.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| [k.to_owned(), v])
    .collect();
    align(&rows, &[false, false])
}

/// One event as a line: "2026-11-22 07:37:16  #42  node 12 (10.0.0.12) joined" (UTC).
pub fn event(e: &Event) -> String {
    format!("{}  #{}  {}", utc(e.time_ms), e.seq, e.text)
}

/// Unix ms as "YYYY-MM-DD HH:MM:SS" in UTC (a node has no time zone).
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm), all in unsigned
    // arithmetic since the epoch is the earliest date a u64 of unix ms can hold.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::tests::fixture;
    use crate::protocol::EventKind;
    use std::net::Ipv4Addr;

    #[test]
    fn the_fixture_map_as_a_table() {
        let want = "\
cluster joined, key 1a2b3c4d, port 7171: 4 alive of 6 nodes, 14 cores
NUM  ADDRESS    HOSTNAME  STATE                     SPEED  CORES  LOAD           MEM  JOBS   MIG  SEEN
  1  10.0.0.1   node-1    this                      12000      4  0.87  4.0/16.0 GiB     3  10/2   now
  2  10.0.0.2   node-2    alive                     12000      2  0.01  800/1000 MiB     3  10/2    3s
  3  10.0.0.3   -         suspect                       -      -     -             -     -     -   12s
  5  10.0.0.5   node-5    dead                      12000      4  0.87  4.0/16.0 GiB     3  10/2    3m
 12  10.0.0.12  node-12   alive, duplicate address  12000      4  0.87  4.0/16.0 GiB     3  10/2   now
 12  10.0.0.12  intruder  alive, duplicate address  12000      4  0.87  4.0/16.0 GiB     3  10/2   now
refused 10.0.0.9: 12 datagrams failed authentication (different cluster key?)
";
        assert_eq!(nodes(&fixture(), 1_000_000), want);
    }

    #[test]
    fn a_node_alone_without_key_or_figures() {
        let mut map = fixture();
        map.state = MapState::NoKey;
        map.key_fingerprint = None;
        map.foreign.clear();
        map.nodes = vec![NodeEntry::unknown("a".repeat(32), NodeState::This)];
        map.nodes[0].migrations_out = Some(1);
        let want = "\
cluster no-key (no cluster key: not joining), no key, port 7171: 1 alive of 1 node, 0 cores
NUM  ADDRESS  HOSTNAME  STATE  SPEED  CORES  LOAD  MEM  JOBS  MIG  SEEN
  -  -        -         this       -      -     -    -     -  -/1   now
";
        assert_eq!(nodes(&map, 5), want);
        map.nodes.clear();
        map.state = MapState::NoLease;
        map.foreign = vec![crate::map::Foreign {
            address: Ipv4Addr::new(10, 1, 2, 3),
            dropped: 1,
            last_ms: 0,
        }];
        let want = "\
cluster no-lease (no network lease yet), no key, port 7171: 0 alive of 0 nodes, 0 cores
no nodes known yet
refused 10.1.2.3: 1 datagram failed authentication (different cluster key?)
";
        assert_eq!(nodes(&map, 5), want);
    }

    #[test]
    fn figures_for_people() {
        assert_eq!(milli(870), "0.87");
        assert_eq!(milli(0), "0.00");
        assert_eq!(milli(994), "0.99");
        assert_eq!(milli(995), "1.00");
        assert_eq!(milli(12_345), "12.35");
        assert_eq!(milli(u32::MAX), "4294967.30");
        assert_eq!(memory(Some(1024 * 1024 - 1), Some(0)), "1024/1024 MiB");
        assert_eq!(memory(Some(1024 * 1024), None), "-/1.0 GiB");
        assert_eq!(memory(Some(100), Some(200)), "0/0 MiB");
        assert_eq!(
            memory(Some(u64::MAX), Some(0)),
            "17592186044416.0/17592186044416.0 GiB"
        );
        assert_eq!(memory(None, Some(5)), "-");
        assert_eq!(seen(0, 10), "never");
        assert_eq!(seen(10_000, 5), "now");
        assert_eq!(seen(1, 60_000), "59s");
        assert_eq!(seen(1, 60_001), "1m");
        assert_eq!(seen(1, 7_200_001), "2h");
        assert_eq!(seen(1, 3 * 86_400_000 + 1), "3d");
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(250_000), "4m 10s");
        assert_eq!(duration(7_500_000), "2h 5m");
        assert_eq!(duration(3 * 86_400_000 + 4 * 3_600_000 + 1), "3d 4h");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(58_060), "56.7 KiB");
        assert_eq!(bytes(3_355_443), "3.2 MiB");
        assert_eq!(bytes(u64::MAX), "16384.0 PiB");
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc(1_763_797_036_999), "2025-11-22 07:37:16");
        assert_eq!(utc(4_102_444_799_000), "2099-12-31 23:59:59");
        // The far end of u64 does not overflow the arithmetic.
        assert!(utc(u64::MAX).ends_with(" 14:25:51"), "{}", utc(u64::MAX));
    }

    #[test]
    fn an_event_line() {
        let e = Event {
            seq: 42,
            time_ms: 1_763_797_036_000,
            kind: EventKind::NodeJoined,
            node: None,
            number: Some(12),
            address: Some(Ipv4Addr::new(10, 0, 0, 12)),
            text: "node 12 (10.0.0.12) joined".into(),
        };
        assert_eq!(event(&e), "2025-11-22 07:37:16  #42  node 12 (10.0.0.12) joined");
    }

    #[test]
    fn the_counters_as_a_list() {
        let s = Stats {
            uptime_ms: 7_500_000,
            members: 4,
            alive: 3,
            suspect: 1,
            dead: 1,
            conflicts: 2,
            foreign: 1,
            datagrams_in: 1234,
            datagrams_out: 2345,
            bytes_in: 58_060,
            bytes_out: 3_355_443,
            send_errors: 0,
            dropped: Dropped {
                auth: 12,
                replay: 1,
                ..Dropped::default()
            },
            hello_sent: 10,
            hello_received: 9,
            swim_sent: 500,
            swim_received: 498,
            records_sent: 300,
            records_received: 299,
            records_applied: 120,
            sync_sent: 1,
            sync_received: 2,
            sweep_runs: 1,
            sweep_sent: 253,
            sweep_found: 5,
            events: 42,
            map_writes: 7500,
            streams_accepted: 6,
            streams_refused: crate::StreamsRefused {
                auth: 3,
                busy: 40,
                ..Default::default()
            },
        };
        let want = "\
uptime      2h 5m
nodes       4 members (3 alive, 1 suspect), 1 dead, 2 in conflict, refused 1 address
datagrams   1234 in (56.7 KiB), 2345 out (3.2 MiB), 0 send errors
dropped     13 (auth 12, replay 1)
hellos      10 sent, 9 received
swim        500 sent, 498 received
records     300 sent, 299 received, 120 applied
syncs       1 sent, 2 received
arp sweeps  1 (253 requests, 5 hosts found)
streams     6 accepted, refused 43 (auth 3, timeout 0, closed 0, busy 40, other 0)
events      42
map writes  7500
";
        assert_eq!(stats(&s), want);
        assert!(stats(&Stats::default()).contains("dropped     none\n"));
    }
}

/// How a job stands, in words: "running", "exited 3", "killed TERM" ("killed 31" for a signal
/// without a common name).
pub fn job_state(job: &crate::JobInfo) -> String {
    use crate::JobState;
    let name = |s: i32| match s {
        1 => "HUP".to_owned(),
        2 => "INT".to_owned(),
        3 => "QUIT".to_owned(),
        6 => "ABRT".to_owned(),
        9 => "KILL".to_owned(),
        10 => "USR1".to_owned(),
        11 => "SEGV".to_owned(),
        12 => "USR2".to_owned(),
        13 => "PIPE".to_owned(),
        15 => "TERM".to_owned(),
        n => n.to_string(),
    };
    match (job.state, job.exit) {
        (Some(JobState::Exited), Some(crate::ExitStatus { code: Some(c), .. })) => format!("exited {c}"),
        (Some(JobState::Killed), Some(crate::ExitStatus { signal: Some(s), .. })) => {
            format!("killed {}", name(s))
        }
        (Some(state), _) => state.word().to_owned(),
        (None, _) => "unknown".to_owned(),
    }
}

/// The jobs as `clump ps` prints them, oldest first; `user` names a uid.
pub fn jobs(jobs: &[crate::JobInfo], now_ms: u64, user: impl Fn(u32) -> String) -> String {
    let node = |n: Option<u32>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let mut rows = vec![[
        "JOB", "USER", "HOME", "NODE", "STATE", "CPU", "MEM", "AGE", "MIG", "COMMAND",
    ]
    .map(str::to_owned)];
    for j in jobs {
        rows.push([
            j.id.clone(),
            user(j.uid),
            node(j.home),
            node(j.node),
            job_state(j),
            duration(j.cpu_ms),
            bytes(j.mem_kib.saturating_mul(1024)),
            duration(now_ms.saturating_sub(j.started_ms)),
            j.migrations.to_string(),
            j.argv.join(" "),
        ]);
    }
    let mut widths = [0usize; 10];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if jobs.is_empty() {
        out.push_str("(no jobs)\n");
    }
    for j in jobs.iter().filter(|j| j.state == Some(crate::JobState::Running)) {
        if j.locked {
            out.push_str(&format!(
                "job {} stays where it is: locked by its user (clump unlock {})\n",
                j.id, j.id
            ));
        } else if let Some(why) = &j.pinned {
            out.push_str(&format!("job {} stays where it is: {why}\n", j.id));
        } else if let Some(note) = &j.balance {
            out.push_str(&format!("job {} {note}\n", j.id));
        }
    }
    for j in jobs.iter().filter(|j| j.recovered > 0) {
        let times = if j.recovered == 1 {
            "once".to_owned()
        } else {
            format!("{} times", j.recovered)
        };
        out.push_str(&format!(
            "job {} was restarted from a checkpoint {times}: the node running it died\n",
            j.id
        ));
    }
    out
}

#[cfg(test)]
mod job_tests {
    use super::*;
    use crate::{ExitStatus, JobInfo, JobState};

    #[test]
    fn jobs_read_as_a_table_with_states_in_words() {
        let job = |id: &str, state, exit| JobInfo {
            id: id.into(),
            argv: vec!["sh".into(), "-c".into(), "exit 3".into()],
            uid: 0,
            home: Some(12),
            node: Some(12),
            state: Some(state),
            started_ms: 1000,
            cpu_ms: 1500,
            mem_kib: 2048,
            exit,
            ..JobInfo::default()
        };
        let text = jobs(
            &[
                job("0a1b2c3d", JobState::Running, None),
                job("11111111", JobState::Exited, Some(ExitStatus::code(3))),
                job("22222222", JobState::Killed, Some(ExitStatus::signal(15))),
            ],
            61_000,
            |uid| if uid == 0 { "root".into() } else { uid.to_string() },
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("JOB       USER  HOME  NODE  STATE"),
            "{text}"
        );
        assert!(
            lines[1].contains("running") && lines[1].ends_with("sh -c exit 3"),
            "{text}"
        );
        assert!(lines[2].contains("exited 3"), "{text}");
        assert!(lines[3].contains("killed TERM"), "{text}");
        assert!(lines[1].contains("2.0 MiB") && lines[1].contains("1s"), "{text}");
        assert_eq!(
            jobs(&[], 0, |u| u.to_string()),
            "JOB  USER  HOME  NODE  STATE  CPU  MEM  AGE  MIG  COMMAND\n(no jobs)\n"
        );
        let mut moved = job("33333333", JobState::Running, None);
        moved.node = Some(14);
        moved.migrations = 2;
        moved.pinned = Some("it has a socket open".into());
        moved.recovered = 2;
        let text = jobs(&[moved], 61_000, |u| u.to_string());
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].contains("12    14") && lines[1].contains(" 2    sh -c"),
            "{text}"
        );
        assert_eq!(
            lines[2], "job 33333333 stays where it is: it has a socket open",
            "{text}"
        );
        assert_eq!(
            lines[3], "job 33333333 was restarted from a checkpoint 2 times: the node running it died",
            "{text}"
        );
        let mut locked = job("44444444", JobState::Running, None);
        locked.locked = true;
        let text = jobs(&[locked], 61_000, |u| u.to_string());
        assert_eq!(
            text.lines().nth(2),
            Some("job 44444444 stays where it is: locked by its user (clump unlock 44444444)"),
            "{text}"
        );
    }
}
