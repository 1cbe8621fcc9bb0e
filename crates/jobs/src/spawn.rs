//! Starting a job's reaper as PID 1 of new PID, IPC and time namespaces (clone3), in its own
//! session, as the submitting user, with its stdio on pipes the runtime holds.
//!
//! `clone3` rather than `unshare` + fork: the child is PID 1 of the new namespace at once, is
//! born in the job's cgroup (`CLONE_INTO_CGROUP`, so no process of the job ever runs outside it)
//! and comes with a pidfd (no pid-reuse races for signals and waiting). The runtime is
//! multi-threaded, so between clone3 and execve the child does only async-signal-safe system
//! calls on data prepared beforehand, and sets ids with raw system calls (glibc's wrappers would
//! try to signal the parent's other threads, which do not exist in the child).

use crate::reaper::REAPER_ARG;
use nix::libc;
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const CLONE_NEWTIME: u64 = 0x80;
const CLONE_PIDFD: u64 = 0x1000;
const CLONE_NEWIPC: u64 = 0x0800_0000;
const CLONE_NEWPID: u64 = 0x2000_0000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;

/// `struct clone_args` of `linux/sched.h` (version 2, with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot create pipes for the job: {0}")]
    Pipe(#[source] std::io::Error),
    #[error("cannot create the job's namespaces (clone3): {0}; clumpd must run as root on Linux >= 5.7 with time namespaces")]
    Clone(#[source] std::io::Error),
    #[error("cannot {stage} for the job: {source}")]
    Setup {
        stage: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// What a job is started with.
#[derive(Debug)]
pub struct Spec {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
}

/// The runtime's side of a started job.
#[derive(Debug)]
pub struct Spawned {
    pub pid: i32,
    pub pidfd: OwnedFd,
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// Read end of the reaper's status pipe (see [`crate::reaper`]).
    pub status: OwnedFd,
}

fn cstrings(what: &str, items: impl IntoIterator<Item = String>) -> Result<Vec<CString>, SpawnError> {
    items
        .into_iter()
        .map(|s| CString::new(s).map_err(|_| SpawnError::Invalid(format!("{what} holds a NUL byte"))))
        .collect()
}

fn pointers(items: &[CString]) -> Vec<*const libc::c_char> {
    items
        .iter()
        .map(|c| c.as_ptr())
        .chain([std::ptr::null()])
        .collect()
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| SpawnError::Pipe(e.into()))
}

/// Stages the child reports through the error pipe, by index.
const STAGES: [&str; 6] = [
    "block signals and start a session",
    "set up stdio",
    "set the groups",
    "set the user",
    "enter the working directory",
    "execute the reaper",
];

/// Starts `exe` (the runtime's own binary) as the reaper of `spec`, in `cgroup` if given.
pub fn spawn(exe: &CStr, spec: &Spec, cgroup: Option<&OwnedFd>) -> Result<Spawned, SpawnError> {
    if spec.argv.is_empty() || spec.argv[0].is_empty() {
        return Err(SpawnError::Invalid("no program to run".into()));
    }
    if !spec.cwd.starts_with('/') {
        return Err(SpawnError::Invalid(format!(
            "the working directory {:?} is not absolute",
            spec.cwd
        )));
    }
    let argv = cstrings(
        "the command",
        ["clump-reaper".to_owned(), REAPER_ARG.to_owned()]
            .into_iter()
            .chain(spec.argv.iter().cloned()),
    )?;
    let env = cstrings("the environment", spec.env.iter().cloned())?;
    let cwd = cstrings("the working directory", [spec.cwd.clone()])?.remove(0);
    let argv_ptrs = pointers(&argv);
    let env_ptrs = pointers(&env);

    // SAFETY: sigfillset initialises the set it is given.
    let all_signals = unsafe {
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigfillset(set.as_mut_ptr());
        set.assume_init()
    };
    let (stdin_r, stdin_w) = pipe()?;
    let (stdout_r, stdout_w) = pipe()?;
    let (stderr_r, stderr_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let child = Child {
        exe,
        argv: &argv_ptrs,
        env: &env_ptrs,
        cwd: &cwd,
        uid: spec.uid,
        gid: spec.gid,
        stdio: [
            stdin_r.as_raw_fd(),
            stdout_w.as_raw_fd(),
            stderr_w.as_raw_fd(),
            status_w.as_raw_fd(),
        ],
        err: err_w.as_raw_fd(),
        all_signals,
    };

    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
        flags: CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWTIME | CLONE_PIDFD,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    if let Some(cg) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = cg.as_raw_fd() as u64;
    }
    // SAFETY: `args` is a valid clone_args of the size given and outlives the call; without
    // CLONE_VM the child gets a copy of this address space (as with fork) and runs only
    // `Child::exec`, which never returns.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        child.exec();
    }
    if pid < 0 {
        return Err(SpawnError::Clone(std::io::Error::last_os_error()));
    }
    let pid = i32::try_from(pid).unwrap_or(-1);
    // SAFETY: the kernel wrote a new pidfd (CLONE_PIDFD) that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    drop((stdin_r, stdout_w, stderr_w, status_w, err_w));
    // The error pipe closes on a successful exec (CLOEXEC); before that the child writes
    // which stage failed and errno.
    let mut report = [0u8; 5];
    let mut got = 0;
    while got < report.len() {
        match rustix::io::read(&err_r, &mut report[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => break,
        }
    }
    if got == report.len() {
        let _ = rustix::process::waitid(
            rustix::process::WaitId::PidFd(std::os::fd::AsFd::as_fd(&pidfd)),
            rustix::process::WaitIdOptions::EXITED,
        );
        let errno = i32::from_ne_bytes([report[1], report[2], report[3], report[4]]);
        return Err(SpawnError::Setup {
            stage: STAGES.get(usize::from(report[0])).copied().unwrap_or("start"),
            source: std::io::Error::from_raw_os_error(errno),
        });
    }
    Ok(Spawned {
        pid,
        pidfd,
        stdin: stdin_w,
        stdout: stdout_r,
        stderr: stderr_r,
        status: status_r,
    })
}

/// Everything the child needs, prepared before clone3.
struct Child<'a> {
    exe: &'a CStr,
    argv: &'a [*const libc::c_char],
    env: &'a [*const libc::c_char],
    cwd: &'a CStr,
    uid: u32,
    gid: u32,
    /// Become fds 0, 1, 2 and 3.
    stdio: [RawFd; 4],
    err: RawFd,
    /// Blocked across execve: a signal sent before the reaper's code runs would otherwise be
    /// discarded (PID 1 of a namespace ignores signals it has no handler for) instead of
    /// waiting for the reaper to take it.
    all_signals: libc::sigset_t,
}

impl Child<'_> {
    /// Runs in the child of clone3: raw system calls only, then execve or `_exit`.
    fn exec(&self) -> ! {
        // SAFETY: each call is an async-signal-safe system call on fds and memory prepared
        // before clone3; the pointer arrays are NUL-terminated and point into live CStrings.
        unsafe {
            // Out of the way of fds 0-3, which are placed below.
            let err = match libc::fcntl(self.err, libc::F_DUPFD_CLOEXEC, 10) {
                fd if fd >= 0 => fd,
                _ => self.err,
            };
            if libc::sigprocmask(libc::SIG_SETMASK, &self.all_signals, std::ptr::null_mut()) < 0 {
                fail(err, 0);
            }
            if libc::setsid() < 0 {
                fail(err, 0);
            }
            // Move the pipes above 0-3 first, so placing one cannot clobber another.
            let mut high = [0; 4];
            for (h, fd) in high.iter_mut().zip(self.stdio) {
                *h = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
                if *h < 0 {
                    fail(err, 1);
                }
            }
            for (target, fd) in high.into_iter().enumerate() {
                if libc::dup2(fd, target as RawFd) < 0 {
                    fail(err, 1);
                }
            }
            // Nothing else of the daemon's reaches the job.
            libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, CLOSE_RANGE_CLOEXEC);
            let groups = [self.gid];
            if libc::syscall(libc::SYS_setgroups, 1usize, groups.as_ptr()) < 0 {
                fail(err, 2);
            }
            if libc::syscall(libc::SYS_setresgid, self.gid, self.gid, self.gid) < 0 {
                fail(err, 2);
            }
            if libc::syscall(libc::SYS_setresuid, self.uid, self.uid, self.uid) < 0 {
                fail(err, 3);
            }
            // After the user change, so the directory is entered with the user's rights.
            if libc::chdir(self.cwd.as_ptr()) < 0 {
                fail(err, 4);
            }
            libc::execve(self.exe.as_ptr(), self.argv.as_ptr(), self.env.as_ptr());
            fail(err, 5)
        }
    }
}

/// Reports the failed stage and errno to the parent and ends the child.
fn fail(err: RawFd, stage: u8) -> ! {
    // SAFETY: reading errno, write and _exit are async-signal-safe; `report` lives on this stack.
    unsafe {
        let errno = *libc::__errno_location();
        let e = errno.to_ne_bytes();
        let report = [stage, e[0], e[1], e[2], e[3]];
        libc::write(err, report.as_ptr().cast(), report.len());
        libc::_exit(127)
    }
}
