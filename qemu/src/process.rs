//! A QEMU process that never outlives the lab.
//!
//! QEMU runs in its own process group, killed as a whole on [`Process::kill`] and on drop. If the lab
//! process itself dies (Ctrl-C on `cargo test`, SIGKILL), the kernel kills QEMU: `PR_SET_PDEATHSIG` is
//! armed in the child. That signal follows the *thread* that forked, so all forks happen on one
//! spawner thread that lives as long as the process.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{getpid, getppid, Pid};

/// How often bounded waits look at the process.
const POLL: Duration = Duration::from_millis(20);

type Job = (Command, mpsc::Sender<io::Result<Child>>);

/// A child process in its own process group; killed with its group when dropped.
#[derive(Debug)]
pub struct Process {
    child: Child,
    status: Option<ExitStatus>,
}

impl Process {
    /// Spawns `cmd` in a new process group, to be killed if this process dies.
    pub fn spawn(mut cmd: Command) -> io::Result<Process> {
        let parent = getpid();
        cmd.process_group(0);
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe system
        // calls (prctl, getppid); it allocates nothing and takes no lock.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
                // The lab died between fork and prctl: do not start an orphan.
                if getppid() != parent {
                    return Err(io::Error::other("the lab exited while starting the process"));
                }
                Ok(())
            });
        }
        let (reply_tx, reply_rx) = mpsc::channel();
        spawner()?
            .send((cmd, reply_tx))
            .map_err(|_| io::Error::other("the spawner thread is gone"))?;
        let child = reply_rx
            .recv()
            .map_err(|_| io::Error::other("the spawner thread is gone"))??;
        Ok(Process { child, status: None })
    }

    /// The process id (also its process group id).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has ended.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// Waits at most `timeout` for the process to end.
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(POLL);
        }
    }

    /// Kills the whole process group with SIGKILL and reaps the process.
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        let pgid = i32::try_from(self.child.id()).map_err(io::Error::other)?;
        match killpg(Pid::from_raw(pgid), Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => return Err(e.into()),
        }
        let status = self.child.wait()?;
        self.status = Some(status);
        Ok(status)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Err(e) = self.kill() {
            tracing::error!(pid = self.child.id(), "could not kill process group: {e}");
        }
    }
}

/// The process-wide spawner thread's queue.
fn spawner() -> io::Result<&'static mpsc::Sender<Job>> {
    static SPAWNER: OnceLock<Result<mpsc::Sender<Job>, String>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            thread::Builder::new()
                .name("clump-lab-spawner".into())
                .spawn(move || {
                    for (mut cmd, reply) in rx {
                        // The requester may have given up; nothing to do then.
                        let _ = reply.send(cmd.spawn());
                    }
                })
                .map(|_| tx)
                .map_err(|e| format!("cannot start the spawner thread: {e}"))
        })
        .as_ref()
        .map_err(|e| io::Error::other(e.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_takes_the_whole_group() {
        // A shell that starts a grandchild in the same group, prints its pid, and waits.
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("sleep 300 & echo $! > {}; wait", pidfile.display()));
        let mut p = Process::spawn(cmd).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let grandchild = loop {
            if let Ok(s) = std::fs::read_to_string(&pidfile) {
                if let Ok(pid) = s.trim().parse::<i32>() {
                    break pid;
                }
            }
            assert!(Instant::now() < deadline, "grandchild did not start");
            thread::sleep(POLL);
        };
        assert_eq!(p.wait_timeout(Duration::from_millis(100)).unwrap(), None);
        drop(p);
        // The grandchild was reparented and gets reaped by whoever adopted it; it must be gone or a zombie.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let state = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
            let state = state.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
            if matches!(state, None | Some(Some('Z'))) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "grandchild {grandchild} survived: {state:?}"
            );
            thread::sleep(POLL);
        }
    }

    #[test]
    fn exit_status_is_reported() {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("exit 3");
        let mut p = Process::spawn(cmd).unwrap();
        let status = p.wait_timeout(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(status.code(), Some(3));
        assert_eq!(p.kill().unwrap().code(), Some(3));
    }
}
