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

/// Whether an fdinfo text's `flags:` (octal) opened the file for writing.
pub fn opened_for_writing(fdinfo: &str) -> bool {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        // O_WRONLY = 1, O_RDWR = 2.
        .is_some_and(|f| f & 0o3 != 0)
}

/// Why a regular file at `path` (open for writing or not) pins a job working in `cwd`: the
/// working directory travels, the image's files are on every node, anything else is neither.
pub fn file_reason(path: &Path, writing: bool, cwd: Option<&Path>) -> Option<String> {
    if !path.is_absolute() || cwd.is_some_and(|c| crate::workdir::travels(c) && path.starts_with(c)) {
        return None;
    }
    if writing {
        return Some(format!(
            "it has {} open for writing, outside its working directory",
            path.display()
        ));
    }
    crate::workdir::travels(path).then(|| {
        format!(
            "it has {} open, which is neither in the image nor in its working directory",
            path.display()
        )
    })
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
        let cwd = std::fs::read_link(proc.join("cwd")).ok();
        if let Some(why) = std::fs::read_link(proc.join("exe"))
            .ok()
            .and_then(|exe| file_reason(&exe, false, cwd.as_deref()))
        {
            return Some(why.replace("it has", "its program is").replace(" open,", ","));
        }
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if let Some(why) = fd_reason(&target.to_string_lossy()) {
                return Some(why);
            }
            // Only regular files: pipes, sockets and the like have no path to travel.
            if !std::fs::metadata(fd.path()).is_ok_and(|m| m.is_file()) {
                continue;
            }
            let fdinfo = proc.join("fdinfo").join(fd.file_name());
            let writing = std::fs::read_to_string(fdinfo).is_ok_and(|t| opened_for_writing(&t));
            if let Some(why) = file_reason(&target, writing, cwd.as_deref()) {
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
    fn files_pin_unless_they_travel_or_are_everywhere() {
        let cwd = Some(Path::new("/root/work"));
        assert_eq!(file_reason(Path::new("/root/work/out.txt"), true, cwd), None);
        assert_eq!(
            file_reason(Path::new("/usr/lib/x86_64-linux-gnu/libc.so.6"), false, cwd),
            None
        );
        assert!(file_reason(Path::new("/root/other/log"), true, cwd)
            .is_some_and(|w| w.contains("open for writing")));
        assert!(
            file_reason(Path::new("/etc/motd"), true, cwd).is_some(),
            "written system file"
        );
        assert!(file_reason(Path::new("/root/data/in"), false, cwd)
            .is_some_and(|w| w.contains("neither in the image")));
        // A job working in / takes nothing along: its own files pin it.
        assert!(file_reason(Path::new("/tmp/x"), true, Some(Path::new("/"))).is_some());
        assert!(opened_for_writing("pos:\t0\nflags:\t0100001\nmnt_id:\t22\n"));
        assert!(opened_for_writing("flags:\t02100002\n"));
        assert!(!opened_for_writing("pos:\t0\nflags:\t0100000\n"));
    }

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
        // A shell stands in for the reaper (skipped, like a reaper), its sleep for the job:
        // a tree of its own, so what other tests' children hold does not count, with the
        // stdio a job has (not the test's, which may be a log file open for writing).
        let tree = || {
            std::process::Command::new("sh")
                .args(["-c", "sleep 30 & wait"])
                .current_dir("/")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("sh")
        };
        let pid = |c: &std::process::Child| i32::try_from(c.id()).expect("pid");
        let started = |c: &std::process::Child| {
            for _ in 0..200 {
                if crate::stat::tree(pid(c)).len() > 1 {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        };
        let mut plain = tree();
        started(&plain);
        assert_eq!(reason(pid(&plain)), None, "a sleep holds nothing that pins");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        rustix::io::fcntl_setfd(&listener, rustix::io::FdFlags::empty()).expect("clear CLOEXEC");
        let mut holder = tree();
        started(&holder);
        let why = reason(pid(&holder));
        for c in [&mut plain, &mut holder] {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert!(why.as_deref().is_some_and(|w| w.contains("socket")), "{why:?}");
    }
}
