//! CPU time and memory of a job: parsers (pure) and the readers of `/proc` and the cgroup.

use std::path::Path;

/// `utime + stime` in clock ticks from the text of `/proc/<pid>/stat`. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat_ticks(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state(3) ... utime(14) stime(15): skip 11 fields.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident pages from the text of `/proc/<pid>/statm` (second field).
pub fn parse_statm_resident(text: &str) -> Option<u64> {
    text.split_whitespace().nth(1)?.parse().ok()
}

/// `usage_usec` from the text of a cgroup's `cpu.stat`.
pub fn parse_cpu_stat_usec(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

/// The pids in `/proc/<pid>/task/<tid>/children` text.
pub fn parse_children(text: &str) -> Vec<i32> {
    text.split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

/// The real, effective, saved and file-system uids from the text of `/proc/<pid>/status`.
pub fn parse_status_uids(text: &str) -> Option<[u32; 4]> {
    let line = text.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    let mut ids = line.split_whitespace().map(|v| v.parse::<u32>().ok());
    let uids = [ids.next()??, ids.next()??, ids.next()??, ids.next()??];
    Some(uids)
}

/// The uids of process `pid` now (see [`parse_status_uids`]).
pub fn uids(pid: i32) -> Option<[u32; 4]> {
    parse_status_uids(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// CPU time (ms) and memory (KiB) of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub cpu_ms: u64,
    pub mem_kib: u64,
}

/// The process tree under `root` (the reaper), itself included; bounded so a fork bomb cannot
/// make the runtime walk forever.
pub fn tree(root: i32) -> Vec<i32> {
    let mut seen = vec![root];
    let mut i = 0;
    while i < seen.len() && seen.len() < 4096 {
        let pid = seen[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                let path = task.path().join("children");
                if let Ok(text) = std::fs::read_to_string(path) {
                    seen.extend(parse_children(&text));
                }
            }
        }
        i += 1;
    }
    seen
}

/// What the job uses: from its cgroup where there is one (exact, counts processes that are
/// gone), else summed over the living processes under the reaper.
pub fn usage(reaper: i32, cgroup: Option<&Path>) -> Usage {
    let ticks = rustix::param::clock_ticks_per_second().max(1);
    let page_kib = (rustix::param::page_size() / 1024) as u64;
    let pids = tree(reaper);
    let from_procs = |file: &str, parse: fn(&str) -> Option<u64>| -> u64 {
        pids.iter()
            .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/{file}")).ok())
            .filter_map(|t| parse(&t))
            .sum()
    };
    let cg_cpu = cgroup
        .and_then(|c| std::fs::read_to_string(c.join("cpu.stat")).ok())
        .and_then(|t| parse_cpu_stat_usec(&t));
    let cg_mem = cgroup
        .and_then(|c| std::fs::read_to_string(c.join("memory.current")).ok())
        .and_then(|t| t.trim().parse::<u64>().ok());
    Usage {
        cpu_ms: cg_cpu.map_or_else(
            || from_procs("stat", parse_stat_ticks) * 1000 / ticks,
            |us| us / 1000,
        ),
        mem_kib: cg_mem.map_or_else(
            || from_procs("statm", parse_statm_resident) * page_kib,
            |b| b / 1024,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_uids() {
        let text = "Name:\tsleep\nUmask:\t0022\nUid:\t1000\t0\t1000\t1000\nGid:\t5\t5\t5\t5\n";
        assert_eq!(parse_status_uids(text), Some([1000, 0, 1000, 1000]));
        assert_eq!(parse_status_uids("Uid:\t1\t2\n"), None);
        assert_eq!(parse_status_uids("Gid:\t1\t2\t3\t4\n"), None);
        let me = rustix::process::getuid().as_raw();
        let pid = i32::try_from(std::process::id()).expect("pid");
        assert_eq!(uids(pid).map(|u| u[0]), Some(me));
    }

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let line = "4242 (a b) c)) R 1 4242 4242 0 -1 4194560 120 0 0 0 37 5 0 0 20 0 1 0 99 1000 50";
        assert_eq!(parse_stat_ticks(line), Some(42));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn statm_cpu_stat_and_children() {
        assert_eq!(parse_statm_resident("1000 250 30 1 0 80 0\n"), Some(250));
        assert_eq!(
            parse_cpu_stat_usec("usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\n"),
            Some(123_456)
        );
        assert_eq!(parse_cpu_stat_usec("nr_periods 0\n"), None);
        assert_eq!(parse_children("12 13 \n"), vec![12, 13]);
    }

    #[test]
    fn this_process_has_a_usage() {
        let me = i32::try_from(std::process::id()).unwrap_or(1);
        let u = usage(me, None);
        assert!(u.mem_kib > 0, "{u:?}");
    }
}
