//! PID 1 of a job's PID namespace: starts the program, forwards signals to it, reaps every
//! process that ends up its child, and exits with the program's status (catatonit and tini are
//! the models: all signals blocked, taken one at a time with `sigwait`, reaping in a loop).
//!
//! It is the runtime's own binary executed again with [`REAPER_ARG`] (a fresh process image,
//! so nothing of the multi-threaded daemon carries over). It runs as the job's user. fds 0-2 are
//! the job's pipes; fd 3 is the status pipe: when the program ends on a signal the reaper writes
//! the signal number there as one byte, because PID 1 of a namespace cannot die of a signal its
//! own child got, and its exit code alone (128 + signal) would be ambiguous.

use nix::errno::Errno;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;

/// The hidden first argument that makes the binary a reaper.
pub const REAPER_ARG: &str = "--clump-job-reaper";
/// The fd the status pipe is on in the reaper.
pub const STATUS_FD: i32 = 3;

/// Signals passed on to the program; KILL and STOP cannot be caught and end or stop the reaper.
pub const FORWARDED: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Becomes the reaper and never returns when the process was started as one; returns at once
/// otherwise. Call it first in `main`, before threads or logging exist.
pub fn run_if_asked() {
    let mut args = std::env::args_os();
    if args.nth(1).as_deref() != Some(OsStr::new(REAPER_ARG)) {
        return;
    }
    let argv: Vec<OsString> = args.collect();
    std::process::exit(reap(&argv));
}

fn say(what: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "clump: {what}");
}

fn reap(argv: &[OsString]) -> i32 {
    // SAFETY: the runtime put the status pipe on fd 3 for us and nothing else in this fresh
    // process image owns it; if it is not open, fcntl below fails and we go without it.
    let status = unsafe { OwnedFd::from_raw_fd(STATUS_FD) };
    let status = match rustix::io::fcntl_setfd(status.as_fd(), rustix::io::FdFlags::CLOEXEC) {
        Ok(()) => Some(status),
        Err(_) => {
            std::mem::forget(status);
            None
        }
    };
    // The runtime blocked them all across execve already (see `spawn`); again in case the
    // reaper was started some other way.
    if let Err(e) = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::all()), None) {
        say(format_args!("cannot block signals: {e}"));
        return 126;
    }
    let Some(program) = argv.first() else {
        say(format_args!("no program to run"));
        return 126;
    };
    // No transparent huge pages for the job (the flag survives fork and exec, and CRIU carries
    // it): the kernel tracks writes for pre-copy per page table entry, and a 2 MiB page that
    // takes one write would be copied whole again in every round.
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        say(format_args!("cannot turn off huge pages for the job: {e}"));
    }
    let mut command = std::process::Command::new(program);
    command.args(&argv[1..]);
    // SAFETY: the hook runs in the forked child before exec and calls only sigprocmask and
    // sigaction (nix's signal), which are async-signal-safe; this process has one thread.
    unsafe {
        command.pre_exec(|| {
            // The program starts as from a clean shell: nothing blocked (we block everything),
            // nothing ignored (an ignored disposition survives exec; whoever started the
            // daemon may have ignored INT and QUIT, as a shell does for background jobs).
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
            for signal in Signal::iterator().filter(|s| !matches!(s, Signal::SIGKILL | Signal::SIGSTOP)) {
                nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigDfl)?;
            }
            Ok(())
        });
    }
    let child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            say(format_args!("cannot run {}: {e}", program.to_string_lossy()));
            return if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
        }
    };
    let child = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    // The reaper lets go of the job's pipes, so they close when the program's side does.
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..=2 {
            // SAFETY: fds 0-2 are this process's stdio, which nothing here uses any more;
            // dup2 replaces them atomically with /dev/null.
            let mut target = unsafe { OwnedFd::from_raw_fd(fd) };
            let _ = rustix::io::dup2(&null, &mut target);
            std::mem::forget(target);
        }
    }
    let mut wanted = SigSet::empty();
    wanted.add(Signal::SIGCHLD);
    // Taken and dropped: the SIGCONT that resumes a job after a checkpoint or a failed move
    // would otherwise stay pending here (blocked, never waited for), go into the job's next
    // dump, and CRIU's restore of that dump fails: "stopped by signal 5".
    wanted.add(Signal::SIGCONT);
    for s in FORWARDED {
        wanted.add(s);
    }
    loop {
        match wanted.wait() {
            Ok(Signal::SIGCHLD) => {}
            Ok(Signal::SIGCONT) => continue,
            // The program may already be gone; ESRCH is not worth a word.
            Ok(signal) => {
                let _ = kill(child, signal);
            }
            Err(_) => continue,
        }
        if let Some(code) = reap_all(child, status.as_ref()) {
            return code;
        }
    }
}

/// Reaps every child that has ended; the exit code to leave with once the program has.
fn reap_all(program: Pid, status: Option<&OwnedFd>) -> Option<i32> {
    let mut result = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == program => result = Some(code),
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == program => {
                let number = signal as i32;
                if let Some(fd) = status {
                    let _ = rustix::io::write(fd, &[u8::try_from(number).unwrap_or(0)]);
                }
                result = Some(128 + number);
            }
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return result,
            Ok(_) | Err(_) => {}
        }
    }
}
