//! Real processes: spawning services (optionally on a terminal) and reaping every child.

use crate::supervisor::{ServiceSpec, Spawner};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// Spawns services with `std::process::Command`, which also resets the child's signal mask.
#[derive(Debug, Default)]
pub struct ProcessSpawner;

impl Spawner for ProcessSpawner {
    fn spawn(&mut self, spec: &ServiceSpec) -> std::io::Result<i32> {
        let (program, args) = spec
            .argv
            .split_first()
            .ok_or_else(|| std::io::Error::other("empty argv"))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir("/");
        match &spec.tty {
            Some(tty) => {
                let term = OpenOptions::new().read(true).write(true).open(tty)?;
                cmd.stdin(Stdio::from(term.try_clone()?));
                cmd.stdout(Stdio::from(term.try_clone()?));
                cmd.stderr(Stdio::from(term));
                // SAFETY: runs in the forked child before exec; sigprocmask, setsid and ioctl are
                // plain syscalls (async-signal-safe) and nothing is allocated.
                unsafe {
                    cmd.pre_exec(|| {
                        unblock_signals()?;
                        rustix::process::setsid()?;
                        rustix::process::ioctl_tiocsctty(rustix::stdio::stdin())?;
                        Ok(())
                    });
                }
            }
            None => {
                cmd.stdin(Stdio::null());
                // SAFETY: as above; sigprocmask and setsid are plain syscalls. A service gets its own session
                // so a shutdown can signal it without reaching PID 1.
                unsafe {
                    cmd.pre_exec(|| {
                        unblock_signals()?;
                        rustix::process::setsid()?;
                        Ok(())
                    });
                }
            }
        }
        let child = cmd.spawn()?;
        // PID 1 reaps with waitpid(-1); dropping the handle does not wait.
        Ok(child.id() as i32)
    }

    fn terminate(&mut self, spec: &ServiceSpec, pid: i32) {
        for &sig in stop_signals(spec) {
            let _ = kill(Pid::from_raw(pid), sig);
        }
    }
}

/// The signals that ask a service to exit: SIGTERM, and for a service on a terminal also SIGHUP (a
/// shell ignores SIGTERM but not a hangup of its terminal). A daemon gets SIGTERM alone: a hangup
/// right behind it would kill it before it is done (clumpd announces that it leaves the cluster).
pub fn stop_signals(spec: &ServiceSpec) -> &'static [Signal] {
    if spec.tty.is_some() {
        &[Signal::SIGTERM, Signal::SIGHUP]
    } else {
        &[Signal::SIGTERM]
    }
}

/// PID 1 blocks every signal and `std::process::Command` passes the mask on to the child: a
/// service with SIGTERM blocked could never be stopped. Async-signal-safe (one syscall).
fn unblock_signals() -> std::io::Result<()> {
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(std::io::Error::from)
}

/// One child that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    pub pid: i32,
    pub status: String,
}

/// Collects every zombie child, orphans included, until none is left.
pub fn reap_all() -> Vec<Reaped> {
    let mut out = Vec::new();
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => out.push(Reaped {
                pid: pid.as_raw(),
                status: format!("exit:{code}"),
            }),
            Ok(WaitStatus::Signaled(pid, sig, _core)) => out.push(Reaped {
                pid: pid.as_raw(),
                status: format!("signal:{}", sig.as_str()),
            }),
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => continue,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shells_are_hung_up_and_daemons_only_terminated() {
        let daemon = crate::services::clumpd();
        assert_eq!(stop_signals(&daemon), [Signal::SIGTERM]);
        let (cfg, _) = crate::cmdline::parse("console=ttyS0");
        for shell in crate::services::shells(&cfg) {
            assert_eq!(
                stop_signals(&shell),
                [Signal::SIGTERM, Signal::SIGHUP],
                "{}",
                shell.name
            );
        }
    }
}
