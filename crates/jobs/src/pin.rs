//! What keeps a job from moving, read from `/proc` before a move and every sample: what CRIU 3.17
//! cannot carry to another node (`../shared/research/migration_gossip.md`, section 1.8), said in
//! words for `clump ps` and the status screen.

use std::path::Path;

/// Devices a job may hold and still move: they exist alike on every node.
const PORTABLE_DEVICES: [&str; 5] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// Why an open file named `target` (a `/proc/<pid>/fd/<n>` link) pins a job, if it does.
pub fn fd_reason(target: &str) -> Option<String> {
    if target.starts_with("socket:") {
        return Some("it has a socket open (CRIU cannot move connections between nodes)".into());
    }
    if let Some(kind) = target.strip_prefix("anon_inode:") {
        let kind = kind.trim_matches(|c| c == '[' || c == ']');
        return match kind {
            "eventfd" | "eventpoll" | "inotify" | "fanotify" | "signalfd" | "timerfd" => None,
            k if k.starts_with("timerfd") => None,
            other => Some(format!("it uses {other}, which CRIU cannot checkpoint")),
        };
    }
    if target.starts_with("/dev/") && !PORTABLE_DEVICES.contains(&target) {
        return Some(format!("it has the device {target} open"));
    }
    None
}

/// Why a process with `/proc/<pid>/status` text `status` pins a job, if it does.
pub fn status_reason(status: &str) -> Option<String> {
    let tracer = status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(0);
    (tracer != 0).then(|| format!("it is being traced (by pid {tracer}), like under a debugger"))
}

/// The first reason the job under `reaper` cannot move, if any. The reaper itself is ours and
/// holds only /dev/null and its status pipe.
pub fn reason(reaper: i32) -> Option<String> {
    for pid in crate::stat::tree(reaper).into_iter().filter(|p| *p != reaper) {
        let proc = Path::new("/proc").join(pid.to_string());
        if let Some(why) = std::fs::read_to_string(proc.join("status"))
            .ok()
            .and_then(|s| status_reason(&s))
        {
            return Some(why);
        }
        let Ok(fds) = std::fs::read_dir(proc.join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if let Some(why) = fd_reason(&target.to_string_lossy()) {
                return Some(why);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_devices_and_foreign_anon_inodes_pin_pipes_and_files_do_not() {
        assert!(fd_reason("socket:[1234]").is_some_and(|w| w.contains("socket")));
        assert!(fd_reason("/dev/ttyS0").is_some_and(|w| w.contains("/dev/ttyS0")));
        assert!(fd_reason("anon_inode:[io_uring]").is_some_and(|w| w.contains("io_uring")));
        assert!(fd_reason("anon_inode:[pidfd]").is_some_and(|w| w.contains("pidfd")));
        for fine in [
            "pipe:[99]",
            "/dev/null",
            "/dev/urandom",
            "/root/data.txt",
            "anon_inode:[eventfd]",
            "anon_inode:[eventpoll]",
            "anon_inode:[timerfd]",
        ] {
            assert_eq!(fd_reason(fine), None, "{fine}");
        }
    }

    #[test]
    fn a_tracer_pins() {
        assert!(status_reason("Name:\tsh\nTracerPid:\t812\nUid:\t0\n").is_some_and(|w| w.contains("812")));
        assert_eq!(status_reason("Name:\tsh\nTracerPid:\t0\n"), None);
        assert_eq!(status_reason(""), None);
    }

    #[test]
    fn a_child_holding_a_socket_is_found_in_a_real_tree() {
        // This test process stands in for the reaper (skipped, like a reaper); its child
        // inherits a socket on purpose.
        let me = i32::try_from(std::process::id()).expect("pid");
        let mut plain = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        assert_eq!(reason(me), None, "a sleep holds nothing that pins");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        rustix::io::fcntl_setfd(&listener, rustix::io::FdFlags::empty()).expect("clear CLOEXEC");
        let mut holder = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let why = reason(me);
        for c in [&mut plain, &mut holder] {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert!(why.as_deref().is_some_and(|w| w.contains("socket")), "{why:?}");
    }
}
