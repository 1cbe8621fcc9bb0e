//! The runtime's side of a move: freeze (dump, leave stopped, drain the pipes), then either
//! thaw (the move failed: the job runs on here) or let go (the target has it); on the target,
//! adopt the restored job. At home, a job that runs elsewhere has a [`Route`]: its output and
//! exit arrive through [`Runtime::remote_output`] and [`Runtime::remote_exit`], and signals and
//! input go to the node that runs it.

use crate::checkpoint::{self, NewPipes, Pipes};
use crate::runtime::{JobError, Live, Runtime};
use clump_api::{ExitStatus, JobInfo, Stream};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// What home sends to the node that runs one of its jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Stdin(Vec<u8>),
    Eof,
    Signal(i32),
}

/// Where a job of this node runs now, and how to reach it.
#[derive(Clone)]
pub struct Route {
    pub node: u32,
    send: Arc<dyn Fn(Control) -> bool + Send + Sync>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route").field("node", &self.node).finish()
    }
}

impl Route {
    /// `send` hands a control message to the connection to `node`; false when it is gone.
    pub fn new(node: u32, send: impl Fn(Control) -> bool + Send + Sync + 'static) -> Route {
        Route {
            node,
            send: Arc::new(send),
        }
    }

    pub(crate) fn send(&self, job: &str, control: Control) -> Result<(), JobError> {
        if (self.send)(control) {
            Ok(())
        } else {
            Err(JobError::Invalid(format!(
                "job {job} runs on node {}, which cannot be reached now",
                self.node
            )))
        }
    }
}

/// A job dumped and stopped, ready to travel.
#[derive(Debug, Clone)]
pub struct Frozen {
    pub info: JobInfo,
    /// The inodes of its pipes, which name them in the images.
    pub pipes: Pipes,
    pub pid: i32,
    pub dir: PathBuf,
    /// Input written to the job and not read yet: the target writes it to the job first.
    pub stdin: Vec<u8>,
}

/// The most unread input carried: a pipe's default capacity.
const MAX_HELD_STDIN: usize = 64 * 1024;

/// Takes the bytes waiting in the job's stdin pipe (inode `ino`) out of it, through a
/// process of the stopped tree that holds its read end: CRIU leaves inherited pipes' data
/// behind, so without this the target's job would never read them.
fn take_pending_stdin(reaper: i32, ino: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for pid in crate::stat::tree(reaper).into_iter().filter(|p| *p != reaper) {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let is_it =
                std::fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy() == format!("pipe:[{ino}]"));
            if !is_it {
                continue;
            }
            let Ok(reader) = rustix::fs::open(
                fd.path(),
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            ) else {
                continue;
            };
            let mut buf = vec![0u8; MAX_HELD_STDIN];
            while out.len() < MAX_HELD_STDIN {
                let room = MAX_HELD_STDIN - out.len();
                match rustix::io::read(&reader, &mut buf[..room]) {
                    Ok(0) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(rustix::io::Errno::INTR) => {}
                    Err(_) => break,
                }
            }
            return out;
        }
    }
    out
}

fn inode(fd: &OwnedFd) -> u64 {
    rustix::fs::fstat(fd).map_or(0, |s| s.st_ino)
}

fn pipe() -> Result<(OwnedFd, OwnedFd), JobError> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| JobError::Invalid(format!("cannot create pipes: {e}")))
}

/// A job this node has begun to move: still running, no other move may start.
#[derive(Debug, Clone)]
pub struct Moving {
    pub job: String,
    pub pid: i32,
    /// The inodes of its pipes, which name them in the images.
    pub pipes: Pipes,
    /// Its resident memory when the move began.
    pub mem_kib: u64,
}

impl Runtime {
    /// Begins moving a running job of this node: refuses one that is pinned or moving already.
    /// End it with [`Runtime::freeze`] and [`Runtime::thaw`] or [`Runtime::let_go`], or with
    /// [`Runtime::cancel_move`] before the freeze.
    pub fn start_move(&self, job: &str) -> Result<Moving, JobError> {
        let mut st = self.lock();
        let live = st
            .live
            .get_mut(job)
            .filter(|l| l.reaped.is_none())
            .ok_or_else(|| JobError::Invalid(format!("job {job} is not running on this node")))?;
        if live.moving {
            return Err(JobError::Invalid(format!("job {job} is moving already")));
        }
        if let Some(why) = crate::pin::reason(live.pid) {
            return Err(JobError::Invalid(format!("job {job} cannot move: {why}")));
        }
        let (Some(stdout), Some(stderr)) = (&live.stdout, &live.stderr) else {
            return Err(JobError::Invalid(format!(
                "job {job} closed its output: it is ending, not worth moving"
            )));
        };
        let pipes = Pipes {
            stdin: live.stdin.as_ref().map_or(live.stdin_ino, |f| inode(f)),
            stdout: inode(stdout),
            stderr: inode(stderr),
            status: inode(&live.status),
            stdin_closed: live.stdin.is_none(),
        };
        if pipes.stdin == 0 {
            return Err(JobError::Invalid(format!(
                "job {job}: the inode of its input pipe is unknown"
            )));
        }
        live.moving = true;
        let pid = live.pid;
        let cgroup = live.cgroup.clone();
        drop(st);
        Ok(Moving {
            job: job.to_owned(),
            pid,
            pipes,
            mem_kib: crate::stat::usage(pid, cgroup.as_deref()).mem_kib,
        })
    }

    /// One pre-copy round of a job being moved (it runs on); returns the bytes of memory the
    /// round wrote. `parent` is the previous round's directory relative to `dir`.
    pub fn pre_dump(&self, moving: &Moving, dir: &Path, parent: Option<&str>) -> Result<u64, JobError> {
        let started = std::time::Instant::now();
        let bytes = checkpoint::pre_dump(moving.pid, dir, parent)
            .map_err(|e| JobError::Invalid(format!("cannot pre-copy job {}: {e}", moving.job)))?;
        tracing::info!(
            job = moving.job,
            bytes,
            pre_dump_ms = started.elapsed().as_millis(),
            "pre-copy round"
        );
        Ok(bytes)
    }

    /// The move will not happen and the job was not frozen: it is free to move again.
    pub fn cancel_move(&self, job: &str) {
        if let Some(live) = self.lock().live.get_mut(job) {
            live.moving = false;
        }
    }

    /// Dumps a job being moved into `dir` (only what changed since `parent`'s round, if given)
    /// and leaves it stopped, with everything it wrote before in its buffer. On failure the
    /// job runs on here.
    pub fn freeze(&self, moving: &Moving, dir: &Path, parent: Option<&str>) -> Result<Frozen, JobError> {
        let Moving { job, pid, pipes, .. } = moving;
        let (job, pid, pipes) = (job.as_str(), *pid, *pipes);
        let started = std::time::Instant::now();
        if let Err(e) = checkpoint::dump(pid, dir, parent) {
            self.thaw(job);
            return Err(JobError::Invalid(format!("cannot checkpoint job {job}: {e}")));
        }
        let stdin = take_pending_stdin(pid, pipes.stdin);
        let mut st = self.lock();
        self.drain(&mut st, job);
        if let Some(live) = st.live.get_mut(job) {
            live.held_stdin = stdin.clone();
        }
        let info = st
            .table
            .get(job)
            .map(|j| j.info.clone())
            .ok_or_else(|| JobError::Invalid(format!("job {job} vanished while frozen")))?;
        drop(st);
        self.changed.notify_all();
        tracing::info!(
            job,
            dump_ms = started.elapsed().as_millis(),
            "job frozen and dumped"
        );
        Ok(Frozen {
            info,
            pipes,
            pid,
            dir: dir.to_owned(),
            stdin,
        })
    }

    /// Reads what the stopped job left in its pipes into its buffer.
    fn drain(&self, st: &mut crate::runtime::State, job: &str) {
        let crate::runtime::State { table, live, .. } = st;
        let (Some(j), Some(l)) = (table.get_mut(job), live.get(job)) else {
            return;
        };
        let mut buf = vec![0u8; 64 * 1024];
        for (stream, fd) in [(Stream::Stdout, &l.stdout), (Stream::Stderr, &l.stderr)] {
            let Some(fd) = fd else { continue };
            loop {
                match rustix::io::read(fd.as_ref(), &mut buf) {
                    Ok(0) => break,
                    Ok(n) => j.output.push(stream, &buf[..n]),
                    Err(rustix::io::Errno::INTR) => {}
                    Err(_) => break,
                }
            }
        }
    }

    /// The move failed: the job runs on here.
    pub fn thaw(&self, job: &str) {
        let mut st = self.lock();
        if let Some(live) = st.live.get_mut(job) {
            live.moving = false;
            // The pipe was emptied by the freeze, so what it held fits back in.
            let held = std::mem::take(&mut live.held_stdin);
            if let Some(fd) = live.stdin.as_ref().filter(|_| !held.is_empty()) {
                let mut rest = held.as_slice();
                while !rest.is_empty() {
                    match rustix::io::write(fd.as_ref(), rest) {
                        Ok(n) => rest = &rest[n..],
                        Err(rustix::io::Errno::INTR) => {}
                        Err(e) => {
                            tracing::warn!(job, "input the job had not read is lost: {e}");
                            break;
                        }
                    }
                }
            }
            checkpoint::resume(live.pid);
            tracing::info!(job, "job resumed here");
        }
    }

    /// The target runs the job now: the stopped copy here ends without being counted as an
    /// exit. At home the job stays listed, as running on `node`; a guest is forgotten.
    pub fn let_go(&self, job: &str, node: u32) {
        if self.end_here(job, Some(node)) {
            self.moved_out.fetch_add(1, Ordering::Relaxed);
            tracing::info!(job, node, "job moved away");
        }
    }

    /// Ends a guest that was restored but cannot stay (its home cannot be reached): it never
    /// counted as moved in.
    pub fn kill_guest(&self, job: &str) {
        if self.end_here(job, None) {
            self.moved_in.fetch_sub(1, Ordering::Relaxed);
            tracing::info!(job, "restored job ended: its home cannot be reached");
        }
    }

    /// Ends a guest whose home has the job elsewhere now (restarted from a checkpoint while
    /// this node was cut off) or ended it: this copy's work and output are nobody's.
    pub fn drop_replaced_guest(&self, job: &str) {
        if self.end_here(job, None) {
            tracing::warn!(
                job,
                "this copy of the job ended: its home runs it elsewhere or ended it"
            );
        }
    }

    /// Kills the job's copy here and reaps it unseen by the relay; at home the job stays listed
    /// as running on `moved_to`, a guest is forgotten. False when it did not run here.
    fn end_here(&self, job: &str, moved_to: Option<u32>) -> bool {
        let mut st = self.lock();
        let Some(live) = st.live.remove(job) else {
            return false;
        };
        let home = st.home;
        match (st.table.get_mut(job), moved_to) {
            (Some(j), Some(node)) if j.info.home == home => {
                j.info.node = Some(node);
                j.info.migrations += 1;
            }
            _ => {
                st.table.remove(job);
            }
        }
        drop(st);
        self.running.fetch_sub(1, Ordering::Relaxed);
        // Not reaped yet (only we or the relay reap, and the relay no longer sees it), so the
        // pid is still this job's.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(live.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = rustix::process::waitid(
            rustix::process::WaitId::PidFd(live.pidfd.as_fd()),
            rustix::process::WaitIdOptions::EXITED,
        );
        if let Some(dir) = &live.cgroup {
            remove_cgroup(dir);
        }
        self.changed.notify_all();
        self.wake();
        true
    }

    /// Restores `frozen.dir` here as job `info`: a job of this node comes home, a guest is
    /// added. The job's stdio and status pipes are new; the reaper becomes our child.
    pub fn adopt(&self, info: JobInfo, frozen_pipes: &Pipes, dir: &Path) -> Result<i32, JobError> {
        let job = info.id.clone();
        let (stdin_r, stdin_w) =
            pipe().map_err(|e| JobError::Invalid(format!("cannot create pipes: {e}")))?;
        let (stdout_r, stdout_w) =
            pipe().map_err(|e| JobError::Invalid(format!("cannot create pipes: {e}")))?;
        let (stderr_r, stderr_w) =
            pipe().map_err(|e| JobError::Invalid(format!("cannot create pipes: {e}")))?;
        let (status_r, status_w) =
            pipe().map_err(|e| JobError::Invalid(format!("cannot create pipes: {e}")))?;
        let cgroup = match &self.cgroups {
            None => None,
            Some(c) => match c.create(&job) {
                Ok((dir, _)) => Some(dir),
                Err(err) => {
                    tracing::warn!(job, %err, "cannot create the job's cgroup; it runs without");
                    None
                }
            },
        };
        let stdin_ino = inode(&stdin_r);
        let new = NewPipes {
            stdin: stdin_r,
            stdout: stdout_w,
            stderr: stderr_w,
            status: status_w,
        };
        let pid = match checkpoint::restore(dir, frozen_pipes, &new, cgroup.as_deref()) {
            Ok(pid) => pid,
            Err(e) => {
                if let Some(dir) = &cgroup {
                    remove_cgroup(dir);
                }
                return Err(JobError::Invalid(format!("cannot restore job {job}: {e}")));
            }
        };
        drop(new);
        // CRIU, as root, gives the restored tree the credentials the images hold. The reaper
        // always runs as the job's user, so it must have the uid this node lets act on the job
        // (home's own record when the job comes home): images that disagree are not run.
        let uid = self.lock().table.get(&job).map_or(info.uid, |j| j.info.uid);
        if let Err(why) = reaper_runs_as(pid, uid) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            if let Some(dir) = &cgroup {
                remove_cgroup(dir);
            }
            return Err(JobError::Invalid(format!("restored job {job} refused: {why}")));
        }
        let stdin_w = (!frozen_pipes.stdin_closed).then_some(stdin_w);
        let pidfd = rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(pid).ok_or_else(|| JobError::Invalid("restored pid 0".into()))?,
            rustix::process::PidfdFlags::empty(),
        )
        .map_err(|e| JobError::Invalid(format!("cannot watch the restored job: {e}")))?;
        for fd in [&stdout_r, &stderr_r, &status_r] {
            let _ = rustix::fs::fcntl_setfl(fd, rustix::fs::OFlags::NONBLOCK);
        }
        let mut st = self.lock();
        let here = st.home;
        st.routes.remove(&job);
        match st.table.get_mut(&job) {
            // Home counted this move when the source said `moved` (see `count_move`).
            Some(j) => j.info.node = here,
            None => {
                let mut info = info;
                info.node = here;
                info.migrations += 1;
                st.table.insert(info, self.buffer);
            }
        }
        st.live.insert(
            job.clone(),
            Live {
                pid,
                pidfd: Arc::new(pidfd),
                stdout: Some(Arc::new(stdout_r)),
                stderr: Some(Arc::new(stderr_r)),
                stdin: stdin_w.map(Arc::new),
                status: status_r,
                cgroup,
                reaped: None,
                moving: false,
                held_stdin: Vec::new(),
                stdin_ino,
            },
        );
        drop(st);
        self.running.fetch_add(1, Ordering::Relaxed);
        self.moved_in.fetch_add(1, Ordering::Relaxed);
        self.wake();
        self.changed.notify_all();
        tracing::info!(job, pid, "job restored here");
        Ok(pid)
    }

    /// At home: a node that ran the job says it moved on.
    pub fn count_move(&self, job: &str) {
        if let Some(j) = self.lock().table.get_mut(job) {
            j.info.migrations += 1;
        }
    }

    /// At home: the job runs on `route.node` from now on.
    pub fn set_route(&self, job: &str, route: Route) {
        let mut st = self.lock();
        if let Some(j) = st.table.get_mut(job) {
            j.info.node = Some(route.node);
        }
        st.routes.insert(job.to_owned(), route);
    }

    /// Where a job of this node runs, if elsewhere.
    pub fn route(&self, job: &str) -> Option<u32> {
        self.lock().routes.get(job).map(|r| r.node)
    }

    /// At home: bytes a job wrote on the node that runs it.
    pub fn remote_output(&self, job: &str, stream: Stream, bytes: &[u8]) {
        let mut st = self.lock();
        if let Some(j) = st.table.get_mut(job).filter(|j| j.is_running()) {
            j.output.push(stream, bytes);
        }
        drop(st);
        self.changed.notify_all();
    }

    /// At home: CPU time and memory of a job elsewhere.
    pub fn remote_usage(&self, job: &str, cpu_ms: u64, mem_kib: u64) {
        if let Some(j) = self.lock().table.get_mut(job) {
            j.info.cpu_ms = cpu_ms;
            j.info.mem_kib = mem_kib;
        }
    }

    /// At home: a job elsewhere ended (`None`: its node was lost).
    pub fn remote_exit(&self, job: &str, status: Option<ExitStatus>) {
        let mut st = self.lock();
        st.routes.remove(job);
        if st.table.get(job).is_some_and(|j| j.is_running()) {
            st.table.finish(job, status);
            tracing::info!(job, ?status, "job ended elsewhere");
        }
        drop(st);
        self.changed.notify_all();
    }

    /// The job's record, if `uid` may act on it.
    pub fn owned_info(&self, uid: u32, job: &str) -> Result<JobInfo, JobError> {
        Ok(self.lock().table.owned(job, uid)?.info.clone())
    }

    /// A move of the job begins (at its home): signals and input sent to it wait, so none is
    /// lost on a node the job is leaving.
    pub fn hold_controls(&self, job: &str) {
        self.lock().held.entry(job.to_owned()).or_default();
    }

    /// The move is over, either way: what waited goes where the job runs now, in order.
    pub fn release_controls(&self, job: &str) {
        let Some(queue) = self.lock().held.remove(job) else {
            return;
        };
        for control in queue {
            let sent = match control {
                Control::Signal(n) => self.signal(0, job, &n.to_string()),
                Control::Stdin(bytes) => self.write_stdin(0, job, &bytes),
                Control::Eof => self.close_stdin(0, job),
            };
            if let Err(e) = sent {
                tracing::warn!(job, "what waited for the move could not be delivered: {e}");
            }
        }
    }

    /// Locks a job of this node to the node it runs on, or lets it move again.
    pub fn set_locked(&self, uid: u32, job: &str, locked: bool) -> Result<(), JobError> {
        let mut st = self.lock();
        let home = st.home;
        let j = st.table.owned(job, uid)?;
        if j.info.home != home {
            return Err(JobError::Invalid(format!(
                "job {job} belongs to node {}: lock it from there",
                j.info.home.map_or("?".into(), |n| n.to_string())
            )));
        }
        j.info.locked = locked;
        Ok(())
    }

    /// The job's record, if this node holds it.
    pub fn info(&self, job: &str) -> Option<JobInfo> {
        self.lock().table.get(job).map(|j| j.info.clone())
    }

    /// Whether the job runs here (not ended, not elsewhere).
    pub fn runs_here(&self, job: &str) -> bool {
        self.lock().live.get(job).is_some_and(|l| l.reaped.is_none())
    }

    /// Waits up to `limit` until the job's reaper has started its program (a child that runs
    /// another executable than the reaper's), so a move does not catch it half way.
    pub fn wait_started(&self, job: &str, limit: Duration) {
        let Some(pid) = self.lock().live.get(job).map(|l| l.pid) else {
            return;
        };
        let exe = |p: i32| std::fs::read_link(format!("/proc/{p}/exe")).ok();
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            let reaper = exe(pid);
            if crate::stat::tree(pid)
                .into_iter()
                .any(|c| c != pid && exe(c).is_some_and(|e| Some(&e) != reaper.as_ref()))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The offset after the last byte of the job's output held here.
    pub fn output_end(&self, job: &str) -> u64 {
        self.lock().table.get(job).map_or(0, |j| j.output.end())
    }

    /// At home: where the job's own writing has got to, counting output still to be skipped
    /// after a restart from a checkpoint as not written yet.
    pub fn output_resume_point(&self, job: &str) -> u64 {
        self.lock().table.get(job).map_or(0, |j| j.output.resume_point())
    }

    /// At home: the job restarts from a checkpoint taken when its output had reached `at`;
    /// what it writes again up to the output held now is dropped, as the user saw it. Returns
    /// the bytes lost, written after `at` on the dead node and never received (0 normally).
    pub fn restart_output_at(&self, job: &str, at: u64) -> u64 {
        let mut st = self.lock();
        let Some(j) = st.table.get_mut(job) else {
            return 0;
        };
        let end = j.output.end();
        j.output.skip_next(end.saturating_sub(at));
        j.info.recovered += 1;
        at.saturating_sub(end)
    }

    /// At home: when the last checkpoint of a job away from home was taken (unix ms).
    pub fn set_checkpointed(&self, job: &str, unix_ms: Option<u64>) {
        if let Some(j) = self.lock().table.get_mut(job) {
            j.info.checkpoint_ms = unix_ms;
        }
    }

    /// This node's number.
    pub fn home(&self) -> Option<u32> {
        self.lock().home
    }
}

/// Whether the restored reaper `pid` runs as `uid`, all four of its uids.
fn reaper_runs_as(pid: i32, uid: u32) -> Result<(), String> {
    match crate::stat::uids(pid) {
        Some(uids) if uids.iter().all(|u| *u == uid) => Ok(()),
        Some(uids) => Err(format!(
            "its reaper runs as uid {uids:?}, the job belongs to uid {uid}"
        )),
        None => Err(format!("cannot read the uids of its reaper {pid}")),
    }
}

/// A job's cgroup goes once its last process has: the kernel refuses while any is left.
fn remove_cgroup(dir: &Path) {
    for _ in 0..50 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reaper_of_another_uid_is_refused() {
        let me = rustix::process::getuid().as_raw();
        let pid = i32::try_from(std::process::id()).expect("pid");
        assert_eq!(reaper_runs_as(pid, me), Ok(()));
        let err = reaper_runs_as(pid, me.wrapping_add(1)).expect_err("another uid");
        assert!(
            err.contains(&format!("belongs to uid {}", me.wrapping_add(1))),
            "{err}"
        );
        assert!(reaper_runs_as(-1, me).is_err());
    }
}
