//! A job's checkpoint and restore with CRIU's command line (3.17 in the image): the dump leaves
//! the job stopped, so the caller decides afterwards whether it ends here (the target has it) or
//! carries on (anything failed); the restore takes fresh pipes in place of the job's stdio and
//! status pipes and makes the restored reaper the caller's child.
//!
//! Options, from `../shared/research/migration_gossip.md`: `--tcp-close` (no network lock, which
//! is broken with iptables-nft in 3.17), `--file-locks`, `--cpu-cap=fpu,ins` on both sides (a
//! target CPU without the source's instructions refuses the restore instead of SIGILL later),
//! `--manage-cgroups=ignore` (the runtime puts the restored job in its own cgroup itself).
//!
//! CRIU runs with `CRIU_FAULT=130` (its `FI_NO_BREAKPOINTS`): CRIU then steps restored tasks
//! to their last syscall with `PTRACE_SYSCALL` instead of x86 debug-register breakpoints, as it
//! does by itself on Xen guests; correct everywhere, a little slower. It went in while restores
//! of CPU-busy jobs failed in the lab with tasks "stopped by signal 5: Trace/breakpoint trap";
//! those failures stopped only once the inherited pipes were no longer overwritten (see
//! [`restore`]), and a later case of that symptom was a SIGCONT left pending in the reaper
//! (see `reaper`), so the breakpoints may never have been the cause: it stays until a lab run
//! with them shows no such failure.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where the image has CRIU.
pub const CRIU: &str = "/usr/sbin/criu";

/// A CRIU command with the environment every run needs (see the module's notes).
fn criu() -> Command {
    let mut cmd = Command::new(CRIU);
    cmd.env("CRIU_FAULT", "130");
    cmd
}
/// The job's pipes as the runtime sees them: the inode of each, which names it in the images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pipes {
    pub stdin: u64,
    pub stdout: u64,
    pub stderr: u64,
    pub status: u64,
    /// The job's input was closed (its end of the stdin pipe has no writer): the restored job
    /// gets a pipe whose write end is closed at once, so it reads EOF as before.
    #[serde(default)]
    pub stdin_closed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot run {CRIU}: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("criu {action} failed ({status}): {log}")]
    Failed {
        action: &'static str,
        status: String,
        /// The last error lines of CRIU's log.
        log: String,
    },
    #[error("criu restore left no pid in {0}")]
    NoPid(PathBuf),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

const COMMON: [&str; 4] = [
    "--tcp-close",
    "--file-locks",
    "--cpu-cap=fpu,ins",
    "--manage-cgroups=ignore",
];

/// The lines of a CRIU log worth showing: its errors, else its last lines.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("Error")).collect();
    let mut lines: Vec<&str> = if errors.is_empty() {
        text.lines().collect()
    } else {
        errors
    };
    let keep = lines.len().saturating_sub(3);
    lines.drain(..keep);
    lines.join(" | ")
}

/// CRIU's stderr, kept beside its log: what it says before its log is open goes there.
fn stderr_file(log: &Path) -> Stdio {
    std::fs::File::create(log.with_extension("stderr")).map_or_else(|_| Stdio::null(), Stdio::from)
}

fn check(action: &'static str, status: std::process::ExitStatus, log: &Path) -> Result<(), CheckpointError> {
    if status.success() {
        return Ok(());
    }
    let mut tail = log_tail(log);
    if tail.is_empty() {
        tail = log_tail(&log.with_extension("stderr"));
    }
    if tail.is_empty() {
        tail = format!("{} is empty and CRIU wrote nothing on stderr", log.display());
    }
    Err(CheckpointError::Failed {
        action,
        status: status.to_string(),
        log: tail,
    })
}

/// Dumps the process tree of `reaper` into `dir` and leaves it stopped. With `parent` (the
/// previous [`pre_dump`] round's directory, relative to `dir` as CRIU wants: `../1`), only the
/// pages written since that round go into `dir`.
pub fn dump(reaper: i32, dir: &Path, parent: Option<&str>) -> Result<(), CheckpointError> {
    std::fs::create_dir_all(dir)?;
    let log = dir.join("dump.log");
    let mut cmd = criu();
    cmd.arg("dump")
        .arg("-t")
        .arg(reaper.to_string())
        .arg("-D")
        .arg(dir)
        .arg("-o")
        .arg(&log)
        .arg("--leave-stopped")
        // Without it a dump ignores its parent and writes every page again; and a job that
        // resumes after a checkpoint needs its writes tracked from here for the next one.
        .arg("--track-mem")
        .args(COMMON);
    if let Some(parent) = parent {
        cmd.arg("--prev-images-dir").arg(parent);
    }
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr_file(&log))
        .status()
        .map_err(CheckpointError::Spawn)?;
    check("dump", status, &log)
}

/// One pre-copy round: copies the memory of `reaper`'s tree into `dir` while it runs on (it is
/// stopped only while CRIU reads the page tables) and starts tracking what it writes after, for
/// the next round; `parent` as for [`dump`]. Returns the bytes of memory the round wrote.
pub fn pre_dump(reaper: i32, dir: &Path, parent: Option<&str>) -> Result<u64, CheckpointError> {
    std::fs::create_dir_all(dir)?;
    let log = dir.join("pre-dump.log");
    let mut cmd = criu();
    cmd.arg("pre-dump")
        .arg("-t")
        .arg(reaper.to_string())
        .arg("-D")
        .arg(dir)
        .arg("-o")
        .arg(&log)
        .arg("--track-mem")
        // "read" copies the pages with process_vm_readv after the tree runs again: a shorter
        // stop than "splice" (CRIU's man page).
        .arg("--pre-dump-mode=read")
        .arg("--manage-cgroups=ignore");
    if let Some(parent) = parent {
        cmd.arg("--prev-images-dir").arg(parent);
    }
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr_file(&log))
        .status()
        .map_err(CheckpointError::Spawn)?;
    check("pre-dump", status, &log)?;
    Ok(pages_bytes(dir))
}

/// The bytes of memory in a round's images: CRIU's `pages-*.img` files hold only page contents.
pub fn pages_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("pages-") && name.ends_with(".img")
        })
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Lets a tree that [`dump`] left stopped run on: SIGCONT to every process of it.
pub fn resume(reaper: i32) {
    for pid in crate::stat::tree(reaper) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGCONT);
    }
}

/// The fds the restore hands CRIU for the job's pipes, in [`Pipes`] order.
#[derive(Debug)]
pub struct NewPipes {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub status: OwnedFd,
}

/// Where the inherited fds sit in CRIU's process: distinct numbers (one fd may stand for only
/// one pipe) above stdio.
const INHERIT_FDS: [RawFd; 4] = [10, 11, 12, 13];
/// Where the job's pipes are parked in the child before they go to [`INHERIT_FDS`].
const HIGH_FD: RawFd = 64;

/// Restores the images in `dir`: the job's ends of its pipes become `pipes` (the job's side:
/// stdin's read end, the write ends of the others), the restored reaper a child of this process,
/// in `cgroup` if given. Returns its pid.
pub fn restore(
    dir: &Path,
    old: &Pipes,
    pipes: &NewPipes,
    cgroup: Option<&Path>,
) -> Result<i32, CheckpointError> {
    let log = dir.join("restore.log");
    let pidfile = dir.join("restore.pid");
    let _ = std::fs::remove_file(&pidfile);
    let sources: [RawFd; 4] = [
        pipes.stdin.as_raw_fd(),
        pipes.stdout.as_raw_fd(),
        pipes.stderr.as_raw_fd(),
        pipes.status.as_raw_fd(),
    ];
    let inodes = [old.stdin, old.stdout, old.stderr, old.status];
    let procs = cgroup
        .map(|c| CString::new(c.join("cgroup.procs").as_os_str().as_encoded_bytes()))
        .transpose()
        .map_err(|_| std::io::Error::other("the cgroup path holds a NUL byte"))?;
    let mut cmd = criu();
    cmd.arg("restore")
        .arg("-D")
        .arg(dir)
        .arg("-o")
        .arg(&log)
        .arg("--restore-detached")
        .arg("--restore-sibling")
        .arg("--pidfile")
        .arg(&pidfile)
        .args(COMMON)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr_file(&log));
    for (fd, ino) in INHERIT_FDS.iter().zip(inodes) {
        cmd.arg("--inherit-fd").arg(format!("fd[{fd}]:pipe:[{ino}]"));
    }
    // SAFETY: between fork and exec only async-signal-safe calls: fcntl, dup2, open, write, close, on
    // memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            // A source may itself be numbered 10-13 (clumpd reuses low fds): moving the sources
            // straight to 10-13 in turn would overwrite one before it is copied. First above
            // them all, then down.
            let mut high = [0; 4];
            for (h, src) in high.iter_mut().zip(sources) {
                *h = nix::libc::fcntl(src, nix::libc::F_DUPFD_CLOEXEC, HIGH_FD);
                if *h < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (src, dst) in high.iter().zip(INHERIT_FDS) {
                // dup2 clears CLOEXEC on the copy, so CRIU gets it.
                if nix::libc::dup2(*src, dst) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(procs) = &procs {
                let fd = nix::libc::open(procs.as_ptr(), nix::libc::O_WRONLY | nix::libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let written = nix::libc::write(fd, b"0".as_ptr().cast(), 1);
                nix::libc::close(fd);
                if written != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let status = cmd.status().map_err(CheckpointError::Spawn)?;
    check("restore", status, &log)?;
    let pid = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
        .filter(|p| *p > 0)
        .ok_or(CheckpointError::NoPid(pidfile))?;
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_tail_shows_errors_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("x.log");
        std::fs::write(&log, "(00.1) a\nError (x.c:1): bad thing\n(00.2) b\n(00.3) c\n").expect("write");
        assert_eq!(log_tail(&log), "Error (x.c:1): bad thing");
        std::fs::write(&log, "1\n2\n3\n4\n").expect("write");
        assert_eq!(log_tail(&log), "2 | 3 | 4");
        assert_eq!(log_tail(&dir.path().join("none")), "");
    }
}
