//! The one way a node goes down: stop services, end every process, sync, power off or reboot.

use crate::log;
use crate::process::{reap_all, ProcessSpawner};
use crate::supervisor::Supervisor;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rustix::system::RebootCommand;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    PowerOff,
    Reboot,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::PowerOff => "poweroff",
            Action::Reboot => "reboot",
        }
    }
}

/// Services get this long to exit after SIGTERM, every other process as long again.
const GRACE: Duration = Duration::from_secs(3);
/// How long the next service waits for the one asked before it (services stop one by one, in
/// reverse start order).
const STEP: Duration = Duration::from_secs(2);

/// clumpd first sends its guest jobs away (up to 60 s, its `DRAIN_BOUND`), so the next service
/// (the network) waits for it longer.
const CLUMPD_STOP: Duration = Duration::from_secs(65);

fn stop_wait(name: &str) -> Duration {
    if name == "clumpd" {
        CLUMPD_STOP
    } else {
        STEP
    }
}

pub fn shutdown(action: Action, reason: &str, supervisor: &mut Supervisor) -> ! {
    tracing::info!(action = action.name(), reason, "shutdown");
    log::stage("shutdown");
    let mut spawner = ProcessSpawner;
    // One by one, the last started first: clumpd announces its leave while netd still holds
    // the address; a service that takes longer than STEP goes on stopping beside the next.
    while let Some(pid) = supervisor.stop_next(&mut spawner) {
        let wait = supervisor.name_of(pid).map_or(STEP, stop_wait);
        wait_until(wait, || {
            reap_services(supervisor);
            !supervisor.is_running(pid)
        });
    }
    wait_until(GRACE, || {
        reap_services(supervisor);
        supervisor.running() == 0
    });
    // Everything else (orphans, a job, a stuck service): TERM, then KILL.
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    wait_until(GRACE, || {
        reap_all();
        no_children()
    });
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    wait_until(Duration::from_secs(1), || {
        reap_all();
        no_children()
    });
    rustix::fs::sync();
    let cmd = match action {
        Action::PowerOff => RebootCommand::PowerOff,
        Action::Reboot => RebootCommand::Restart,
    };
    tracing::info!(action = action.name(), "bye");
    if let Err(e) = rustix::system::reboot(cmd) {
        tracing::error!(error = %e, "reboot system call failed; halting here");
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Reaps what has exited and logs the services among it.
fn reap_services(supervisor: &mut Supervisor) {
    for r in reap_all() {
        if let Some(ev) = supervisor.exited(r.pid, &r.status, Duration::ZERO) {
            ev.log();
        }
    }
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !done() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// True when PID 1 has no child left (waitpid answers ECHILD).
fn no_children() -> bool {
    matches!(
        nix::sys::wait::waitpid(None::<Pid>, Some(nix::sys::wait::WaitPidFlag::WNOHANG)),
        Err(nix::errno::Errno::ECHILD)
    )
}
