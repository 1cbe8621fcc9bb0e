//! PID 1 signal handling, catatonit style: every signal is blocked and read from one signalfd,
//! so none can interrupt a half-done operation and none is lost while PID 1 is busy.

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// What PID 1 does about the signals it received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Reap,
    PowerOff(&'static str),
    Reboot(&'static str),
}

pub struct Signals {
    fd: SignalFd,
}

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signals")
    }
}

/// Signals the kernel raises synchronously on a fault: blocking them would hang or kill PID 1.
const FAULTS: [Signal; 7] = [
    Signal::SIGFPE,
    Signal::SIGILL,
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGABRT,
    Signal::SIGTRAP,
    Signal::SIGSYS,
];

impl Signals {
    /// Blocks all signals but the fault signals and opens the signalfd. Call before any thread
    /// starts: threads inherit the mask.
    pub fn block_all() -> nix::Result<Self> {
        let mut set = SigSet::all();
        for s in FAULTS {
            set.remove(s);
        }
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&set), None)?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(Signals { fd })
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.fd)
    }

    /// Drains the signalfd into requests.
    pub fn read(&mut self) -> Vec<Request> {
        let mut out = Vec::new();
        while let Ok(Some(info)) = self.fd.read_signal() {
            let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            if let Some(r) = request_for(sig) {
                out.push(r);
            }
        }
        out
    }
}

/// The meaning of each signal to PID 1, as busybox's and sysvinit's `reboot`, `poweroff` and
/// `halt` send them, so those commands in the root shell do what they say. Ctrl-Alt-Del arrives
/// as SIGINT (see `reboot(CAD_OFF)`). A halted node that stays on helps nobody: halt powers off.
pub fn request_for(sig: Signal) -> Option<Request> {
    match sig {
        Signal::SIGCHLD => Some(Request::Reap),
        Signal::SIGINT => Some(Request::Reboot("ctrl-alt-del")),
        Signal::SIGTERM => Some(Request::Reboot("SIGTERM")),
        Signal::SIGUSR1 => Some(Request::PowerOff("SIGUSR1")),
        Signal::SIGUSR2 => Some(Request::PowerOff("SIGUSR2")),
        Signal::SIGPWR => Some(Request::PowerOff("SIGPWR")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meanings() {
        assert_eq!(request_for(Signal::SIGINT), Some(Request::Reboot("ctrl-alt-del")));
        assert_eq!(request_for(Signal::SIGTERM), Some(Request::Reboot("SIGTERM")));
        assert_eq!(request_for(Signal::SIGUSR2), Some(Request::PowerOff("SIGUSR2")));
        assert_eq!(request_for(Signal::SIGPWR), Some(Request::PowerOff("SIGPWR")));
        assert_eq!(request_for(Signal::SIGCHLD), Some(Request::Reap));
        assert_eq!(request_for(Signal::SIGHUP), None);
    }
}
