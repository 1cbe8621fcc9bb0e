use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub enum Action {
    PowerOff,
    Reboot,
}

/// Asks PID 1 for an orderly shutdown, with the signals busybox's `poweroff` and `reboot` use.
pub fn request(action: Action) -> Result<()> {
    let sig = match action {
        Action::PowerOff => Signal::SIGUSR2,
        Action::Reboot => Signal::SIGTERM,
    };
    kill(Pid::from_raw(1), sig).context("cannot signal PID 1 (only root may shut the node down)")
}
