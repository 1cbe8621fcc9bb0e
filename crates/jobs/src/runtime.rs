//! The job runtime of a node: one thread ("jobs") polls every job's stdout, stderr and pidfd,
//! fills the output buffers, reaps, and samples CPU time and memory; the local API's threads
//! call the methods here, which take the same lock briefly and never wait on a job while
//! holding it.

use crate::buffer::ReaderId;
use crate::cgroup::Cgroups;
use crate::spawn::{self, SpawnError, Spawned};
use crate::table::{JobTable, TableError};
use clump_api::jobs::{base64_encode, MAX_CHUNK};
use clump_api::{ExitStatus, JobInfo, JobState, Output, Stream, StreamOutput};
use rustix::event::{poll, PollFd, PollFlags};
use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often CPU time and memory are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// The most bytes of argv plus environment a job may be started with.
const MAX_SPEC_BYTES: usize = 60 * 1024;

#[derive(Debug, Clone)]
pub struct Config {
    /// The binary that becomes each job's reaper (the daemon's own, run with
    /// [`crate::reaper::REAPER_ARG`]).
    pub exe: PathBuf,
    /// Where job cgroups go; `None` runs jobs without one.
    pub cgroup_root: Option<PathBuf>,
    /// Output kept per job.
    pub buffer: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error("{0}")]
    Invalid(String),
    #[error("job {0} has ended")]
    Ended(String),
    #[error("cannot write to the stdin of job {job}: {source}")]
    Stdin {
        job: String,
        #[source]
        source: std::io::Error,
    },
}

/// The runtime's side of a running job.
#[derive(Debug)]
pub(crate) struct Live {
    pub(crate) pid: i32,
    pub(crate) pidfd: Arc<OwnedFd>,
    pub(crate) stdout: Option<Arc<OwnedFd>>,
    pub(crate) stderr: Option<Arc<OwnedFd>>,
    pub(crate) stdin: Option<Arc<OwnedFd>>,
    pub(crate) status: OwnedFd,
    pub(crate) cgroup: Option<PathBuf>,
    /// Set once the reaper is reaped: how the job ended (`None`: unknown).
    pub(crate) reaped: Option<Option<ExitStatus>>,
    /// Being checkpointed: no second move, and `ps` does not read its pin reason meanwhile.
    pub(crate) moving: bool,
    /// Input the frozen job had not read yet, taken out of its pipe to travel with it; put
    /// back if it stays.
    pub(crate) held_stdin: Vec<u8>,
    /// The inode of its stdin pipe, which names it in images after `stdin` was closed.
    pub(crate) stdin_ino: u64,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) table: JobTable,
    pub(crate) live: HashMap<String, Live>,
    /// Jobs of this node that run on another: where signals and input go.
    pub(crate) routes: HashMap<String, crate::migration::Route>,
    /// Jobs of this node being moved: signals and input wait here until the move is over, then
    /// go where the job runs (see [`Runtime::hold_controls`]).
    pub(crate) held: HashMap<String, Vec<crate::migration::Control>>,
    pub(crate) home: Option<u32>,
}

/// The most input held for a moving job.
const MAX_HELD: usize = 1 << 20;

impl State {
    /// Queues `control` if the job is moving; the answer to give then.
    fn held(&mut self, job: &str, control: crate::migration::Control) -> Option<Result<(), JobError>> {
        let queue = self.held.get_mut(job)?;
        let bytes: usize = queue
            .iter()
            .map(|c| match c {
                crate::migration::Control::Stdin(b) => b.len(),
                _ => 0,
            })
            .sum();
        if matches!(&control, crate::migration::Control::Stdin(b) if bytes + b.len() > MAX_HELD) {
            return Some(Err(JobError::Invalid(format!(
                "job {job} is moving: its input waits until it runs again, and 1 MiB waits already"
            ))));
        }
        queue.push(control);
        Some(Ok(()))
    }
}

#[derive(Debug)]
pub struct Runtime {
    pub(crate) state: Mutex<State>,
    pub(crate) changed: Condvar,
    wake_r: OwnedFd,
    wake_w: OwnedFd,
    exe: CString,
    pub(crate) cgroups: Option<Cgroups>,
    pub(crate) buffer: usize,
    pub(crate) running: AtomicUsize,
    /// Jobs restored here and jobs that left, since the start.
    pub(crate) moved_in: std::sync::atomic::AtomicU64,
    pub(crate) moved_out: std::sync::atomic::AtomicU64,
    /// What the balancer says about jobs it keeps or sends away, shown by `ps`.
    pub(crate) notes: Mutex<HashMap<String, String>>,
}

/// What [`Attachment::next`] has for its stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Data(Vec<(Stream, Vec<u8>)>),
    /// The job has ended and everything it wrote was handed out.
    Exit(ExitStatus),
    /// The client went away, or the job was forgotten.
    Closed,
    /// Nothing for [`IDLE_AFTER`]: a relay may say it is still there.
    Idle,
}

/// How long [`Attachment::next`] waits for output before it returns [`Next::Idle`].
pub const IDLE_AFTER: Duration = Duration::from_secs(1);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    if rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()).is_err() {
        // A broken getrandom still leaves the id unique: the table re-draws on a clash.
        let t = Instant::now().elapsed().as_nanos() ^ u128::from(now_ms());
        return t as u32;
    }
    u32::from_ne_bytes(b)
}

fn set_nonblocking(fd: &OwnedFd) {
    if let Err(err) = rustix::fs::fcntl_setfl(fd, rustix::fs::OFlags::NONBLOCK) {
        tracing::warn!(%err, "cannot make a job pipe non-blocking");
    }
}

impl Runtime {
    /// Prepares the cgroup root (or logs why jobs go without) and starts the "jobs" thread.
    pub fn start(config: Config) -> std::io::Result<Arc<Runtime>> {
        let exe = CString::new(config.exe.as_os_str().as_encoded_bytes())
            .map_err(|_| std::io::Error::other("the runtime's path holds a NUL byte"))?;
        let cgroups = match &config.cgroup_root {
            None => {
                tracing::info!("jobs run without cgroups (none configured)");
                None
            }
            Some(root) => match Cgroups::prepare(root) {
                Ok(c) => {
                    tracing::info!(root = %root.display(), "jobs get a cgroup each");
                    Some(c)
                }
                Err(why) => {
                    tracing::warn!("jobs run without cgroups: {why}");
                    None
                }
            },
        };
        let (wake_r, wake_w) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK)?;
        let runtime = Arc::new(Runtime {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            wake_r,
            wake_w,
            exe,
            cgroups,
            buffer: config.buffer,
            running: AtomicUsize::new(0),
            moved_in: std::sync::atomic::AtomicU64::new(0),
            moved_out: std::sync::atomic::AtomicU64::new(0),
            notes: Mutex::new(HashMap::new()),
        });
        let worker = runtime.clone();
        std::thread::Builder::new()
            .name("jobs".into())
            .spawn(move || worker.relay())?;
        Ok(runtime)
    }

    /// A poisoned lock means an API thread panicked mid-update of plain data; carry on.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn wake(&self) {
        // A full pipe already means "wake up".
        let _ = rustix::io::write(&self.wake_w, &[1]);
    }

    /// This node's number, for the `home` of jobs started from now on.
    pub fn set_home(&self, number: u32) {
        self.lock().home = Some(number);
    }

    /// Jobs that moved in and out of this node (for its gossip record).
    pub fn migrations(&self) -> (u64, u64) {
        (
            self.moved_in.load(Ordering::Relaxed),
            self.moved_out.load(Ordering::Relaxed),
        )
    }

    /// Jobs running now (for the node's gossip record).
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// Starts a job as `uid`/`gid`; its id.
    pub fn run(
        &self,
        uid: u32,
        gid: u32,
        argv: Vec<String>,
        cwd: String,
        env: Vec<String>,
    ) -> Result<String, JobError> {
        let size: usize = argv.iter().chain(&env).map(|s| s.len() + 1).sum();
        if size > MAX_SPEC_BYTES {
            return Err(JobError::Invalid(format!(
                "the command and environment take {size} bytes, more than {MAX_SPEC_BYTES}"
            )));
        }
        if let Some(bad) = env.iter().find(|e| !e.contains('=')) {
            return Err(JobError::Invalid(format!(
                "environment entry {bad:?} is not NAME=value"
            )));
        }
        let mut st = self.lock();
        st.table.check_room()?;
        let id = st.table.allocate_id(random_u32);
        let cgroup = match &self.cgroups {
            None => None,
            Some(c) => match c.create(&id) {
                Ok(cg) => Some(cg),
                Err(err) => {
                    tracing::warn!(job = id, %err, "cannot create the job's cgroup; it runs without");
                    None
                }
            },
        };
        let spec = spawn::Spec {
            argv: argv.clone(),
            env,
            cwd,
            uid,
            gid,
        };
        let spawned = spawn::spawn(&self.exe, &spec, cgroup.as_ref().map(|(_, fd)| fd));
        let Spawned {
            pid,
            pidfd,
            stdin,
            stdout,
            stderr,
            status,
        } = match spawned {
            Ok(s) => s,
            Err(e) => {
                if let Some((dir, _)) = &cgroup {
                    let _ = std::fs::remove_dir(dir);
                }
                return Err(e.into());
            }
        };
        for fd in [&stdout, &stderr, &status] {
            set_nonblocking(fd);
        }
        let stdin_ino = rustix::fs::fstat(&stdin).map_or(0, |s| s.st_ino);
        let home = st.home;
        st.table.insert(
            JobInfo {
                id: id.clone(),
                argv,
                uid,
                home,
                node: home,
                state: Some(JobState::Running),
                started_ms: now_ms(),
                ..JobInfo::default()
            },
            self.buffer,
        );
        st.live.insert(
            id.clone(),
            Live {
                pid,
                pidfd: Arc::new(pidfd),
                stdout: Some(Arc::new(stdout)),
                stderr: Some(Arc::new(stderr)),
                stdin: Some(Arc::new(stdin)),
                status,
                cgroup: cgroup.map(|(dir, _)| dir),
                reaped: None,
                moving: false,
                held_stdin: Vec::new(),
                stdin_ino,
            },
        );
        self.running.fetch_add(1, Ordering::Relaxed);
        drop(st);
        tracing::info!(job = id, uid, pid, "job started");
        self.wake();
        Ok(id)
    }

    /// Every job, with why a running one cannot move read from `/proc` now (outside the lock:
    /// it walks each process's fds).
    pub fn ps(&self) -> Vec<JobInfo> {
        let (mut jobs, pids): (Vec<JobInfo>, HashMap<String, i32>) = {
            let st = self.lock();
            let pids = st
                .live
                .iter()
                .filter(|(_, l)| l.reaped.is_none() && !l.moving)
                .map(|(id, l)| (id.clone(), l.pid))
                .collect();
            (st.table.list(), pids)
        };
        let notes = self.notes.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for j in &mut jobs {
            if let Some(pid) = pids.get(&j.id) {
                j.pinned = crate::pin::reason(*pid);
            }
            j.balance = notes.get(&j.id).cloned();
        }
        jobs
    }

    /// The jobs running on this node, for the balancer: why each cannot move (`pinned`, or
    /// "moving" while it is checkpointed) read from `/proc` now.
    pub fn running_here(&self) -> Vec<JobInfo> {
        let (mut jobs, live): (Vec<JobInfo>, HashMap<String, (i32, bool)>) = {
            let st = self.lock();
            let live = st
                .live
                .iter()
                .filter(|(_, l)| l.reaped.is_none())
                .map(|(id, l)| (id.clone(), (l.pid, l.moving)))
                .collect();
            (st.table.list(), live)
        };
        jobs.retain(|j| live.contains_key(&j.id));
        for j in &mut jobs {
            j.pinned = match live.get(&j.id) {
                Some((_, true)) => Some("it is moving".into()),
                Some((pid, false)) => crate::pin::reason(*pid),
                None => None,
            };
        }
        jobs
    }

    /// Guest jobs running here (jobs of other homes).
    pub fn guests_here(&self) -> usize {
        let st = self.lock();
        st.live
            .iter()
            .filter(|(id, l)| l.reaped.is_none() && st.table.get(id).is_some_and(|j| j.info.home != st.home))
            .count()
    }

    /// Replaces what the balancer says about jobs (shown by `ps`).
    pub fn set_notes(&self, notes: HashMap<String, String>) {
        *self.notes.lock().unwrap_or_else(|p| p.into_inner()) = notes;
    }

    /// Sends `signal` (see [`crate::signals::parse`]) to the job's reaper, which passes it on.
    pub fn signal(&self, uid: u32, job: &str, signal: &str) -> Result<(), JobError> {
        let number = crate::signals::parse(signal).ok_or_else(|| {
            let names: Vec<&str> = crate::signals::ALLOWED.iter().map(|(n, _)| *n).collect();
            JobError::Invalid(format!(
                "cannot send signal {signal:?}: one of {} please",
                names.join(", ")
            ))
        })?;
        let mut st = self.lock();
        st.table.owned(job, uid)?;
        if let Some(answer) = st.held(job, crate::migration::Control::Signal(number)) {
            return answer;
        }
        if let Some(route) = st.routes.get(job) {
            return route.send(job, crate::migration::Control::Signal(number));
        }
        // Under the lock the reaper is not reaped yet (only the relay reaps, also under the
        // lock), so its pid cannot have been reused.
        let live = st
            .live
            .get(job)
            .filter(|l| l.reaped.is_none())
            .ok_or_else(|| JobError::Ended(job.into()))?;
        let signal =
            nix::sys::signal::Signal::try_from(number).map_err(|e| JobError::Invalid(e.to_string()))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(live.pid), signal)
            .map_err(|_| JobError::Ended(job.into()))?;
        tracing::info!(job, uid, signal = number, "signal sent");
        Ok(())
    }

    /// What is kept of the job's output.
    pub fn output(&self, uid: u32, job: &str) -> Result<Output, JobError> {
        let mut st = self.lock();
        let j = st.table.owned(job, uid)?;
        let read = j.output.read(0, usize::MAX);
        Ok(Output {
            job: job.into(),
            start: j.output.start(),
            end: j.output.end(),
            dropped: j.output.dropped(),
            chunks: read.chunks.into_iter().map(|(s, b)| chunk_line(s, &b)).collect(),
        })
    }

    /// Waits until the job has ended.
    pub fn wait(&self, uid: u32, job: &str) -> Result<ExitStatus, JobError> {
        let mut st = self.lock();
        st.table.owned(job, uid)?;
        loop {
            match st.table.get(job) {
                None => return Err(TableError::NotFound(job.into()).into()),
                Some(j) if !j.is_running() => return Ok(j.info.exit.unwrap_or_default()),
                Some(_) => {}
            }
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// A reader of the job's output from `offset` (default: the oldest byte kept).
    pub fn attach(
        self: &Arc<Self>,
        uid: u32,
        job: &str,
        offset: Option<u64>,
    ) -> Result<Attachment, JobError> {
        let mut st = self.lock();
        let j = st.table.owned(job, uid)?;
        let skipped = offset.map_or(0, |o| j.output.start().saturating_sub(o));
        let (reader, at) = j.output.attach(offset.map(|o| o.max(j.output.start())));
        Ok(Attachment {
            runtime: self.clone(),
            job: job.into(),
            reader,
            offset: at,
            skipped,
        })
    }

    /// Writes to the job's stdin, waiting while its pipe is full.
    pub fn write_stdin(&self, uid: u32, job: &str, mut bytes: &[u8]) -> Result<(), JobError> {
        let fd = {
            let mut st = self.lock();
            st.table.owned(job, uid)?;
            if let Some(answer) = st.held(job, crate::migration::Control::Stdin(bytes.to_vec())) {
                return answer;
            }
            if let Some(route) = st.routes.get(job) {
                return route.send(job, crate::migration::Control::Stdin(bytes.to_vec()));
            }
            st.live
                .get(job)
                .and_then(|l| l.stdin.clone())
                .ok_or_else(|| JobError::Ended(job.into()))?
        };
        while !bytes.is_empty() {
            match rustix::io::write(&fd, bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    return Err(JobError::Stdin {
                        job: job.into(),
                        source: e.into(),
                    })
                }
            }
        }
        Ok(())
    }

    /// Closes the runtime's end of the job's stdin: the job reads EOF.
    pub fn close_stdin(&self, uid: u32, job: &str) -> Result<(), JobError> {
        let mut st = self.lock();
        st.table.owned(job, uid)?;
        if let Some(answer) = st.held(job, crate::migration::Control::Eof) {
            return answer;
        }
        if let Some(route) = st.routes.get(job) {
            return route.send(job, crate::migration::Control::Eof);
        }
        if let Some(live) = st.live.get_mut(job) {
            live.stdin = None;
        }
        Ok(())
    }

    /// The relay thread.
    fn relay(&self) {
        let mut buf = vec![0u8; MAX_CHUNK];
        let mut next_sample = Instant::now();
        loop {
            let watched = self.watched();
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(watched.len() + 1);
            fds.push(PollFd::new(&self.wake_r, PollFlags::IN));
            fds.extend(
                watched
                    .iter()
                    .map(|(_, _, fd)| PollFd::new(fd.as_ref(), PollFlags::IN)),
            );
            let timeout = rustix::time::Timespec {
                tv_sec: 1,
                tv_nsec: 0,
            };
            if let Err(err) = poll(&mut fds, Some(&timeout)) {
                if err != rustix::io::Errno::INTR {
                    tracing::warn!(%err, "poll of job pipes failed");
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
            let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
            drop(fds);
            while let Ok(n) = rustix::io::read(&self.wake_r, &mut buf) {
                if n == 0 {
                    break;
                }
            }
            let mut st = self.lock();
            let mut changed = false;
            for ((job, what, fd), _) in watched.iter().zip(&ready[1..]).filter(|(_, r)| **r) {
                changed |= self.service(&mut st, job, *what, fd, &mut buf);
            }
            changed |= self.finish_ended(&mut st);
            if Instant::now() >= next_sample {
                next_sample = Instant::now() + SAMPLE_EVERY;
                sample(&mut st);
                changed = true;
            }
            drop(st);
            if changed {
                self.changed.notify_all();
            }
        }
    }

    /// The fds to poll: output pipes with room in their buffer, and pidfds not reaped yet.
    fn watched(&self) -> Vec<(String, Watch, Arc<OwnedFd>)> {
        let st = self.lock();
        let mut out = Vec::new();
        for (id, live) in &st.live {
            let room = st.table.get(id).map_or(0, |j| j.output.room());
            if room > 0 {
                if let Some(fd) = &live.stdout {
                    out.push((id.clone(), Watch::Out(Stream::Stdout), fd.clone()));
                }
                if let Some(fd) = &live.stderr {
                    out.push((id.clone(), Watch::Out(Stream::Stderr), fd.clone()));
                }
            }
            if live.reaped.is_none() {
                out.push((id.clone(), Watch::Exit, live.pidfd.clone()));
            }
        }
        out
    }

    /// Handles one ready fd; true when something changed.
    fn service(&self, st: &mut State, job: &str, what: Watch, fd: &OwnedFd, buf: &mut [u8]) -> bool {
        let State { table, live, .. } = st;
        let (Some(j), Some(l)) = (table.get_mut(job), live.get_mut(job)) else {
            return false;
        };
        match what {
            Watch::Out(stream) => {
                let room = j.output.room().min(buf.len());
                if room == 0 {
                    return false;
                }
                match rustix::io::read(fd, &mut buf[..room]) {
                    Ok(0) => close_stream(l, stream),
                    Ok(n) => j.output.push(stream, &buf[..n]),
                    Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => return false,
                    Err(err) => {
                        tracing::warn!(job, %err, "cannot read a job's output");
                        close_stream(l, stream);
                    }
                }
                true
            }
            Watch::Exit => {
                let status = rustix::process::waitid(
                    rustix::process::WaitId::PidFd(l.pidfd.as_fd()),
                    rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOHANG,
                );
                let status = match status {
                    Ok(Some(s)) => s,
                    Ok(None) => return false,
                    Err(err) => {
                        tracing::warn!(job, %err, "cannot wait for a job's reaper");
                        l.reaped = Some(None);
                        return true;
                    }
                };
                let mut byte = [0u8; 1];
                let by_signal = match rustix::io::read(&l.status, &mut byte) {
                    Ok(1) => Some(i32::from(byte[0])),
                    _ => None,
                };
                l.reaped = Some(if let Some(signal) = status.terminating_signal() {
                    Some(ExitStatus::signal(signal))
                } else if let Some(signal) = by_signal {
                    Some(ExitStatus::signal(signal))
                } else {
                    status.exit_status().map(ExitStatus::code)
                });
                true
            }
        }
    }

    /// Jobs whose reaper is reaped and whose pipes are drained end here (so `exit` always
    /// follows the last byte of output).
    fn finish_ended(&self, st: &mut State) -> bool {
        let done: Vec<String> = st
            .live
            .iter()
            .filter(|(_, l)| l.reaped.is_some() && l.stdout.is_none() && l.stderr.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in &done {
            let Some(live) = st.live.remove(id) else { continue };
            let status = live.reaped.flatten();
            if let Some(dir) = &live.cgroup {
                if let Some(j) = st.table.get_mut(id) {
                    let u = crate::stat::usage(live.pid, Some(dir));
                    j.info.cpu_ms = j.info.cpu_ms.max(u.cpu_ms);
                }
                if let Err(err) = std::fs::remove_dir(dir) {
                    tracing::debug!(job = id, %err, "cannot remove the job's cgroup");
                }
            }
            st.table.finish(id, status);
            self.running.fetch_sub(1, Ordering::Relaxed);
            tracing::info!(job = id, code = ?status.and_then(|s| s.code), signal = ?status.and_then(|s| s.signal), "job ended");
        }
        !done.is_empty()
    }
}

#[derive(Debug, Clone, Copy)]
enum Watch {
    Out(Stream),
    Exit,
}

fn close_stream(live: &mut Live, stream: Stream) {
    match stream {
        Stream::Stdout => live.stdout = None,
        Stream::Stderr => live.stderr = None,
    }
}

fn sample(st: &mut State) {
    let State { table, live, .. } = st;
    for (id, l) in live.iter().filter(|(_, l)| l.reaped.is_none()) {
        let usage = crate::stat::usage(l.pid, l.cgroup.as_deref());
        if let Some(j) = table.get_mut(id) {
            j.info.cpu_ms = usage.cpu_ms;
            j.info.mem_kib = usage.mem_kib;
        }
    }
}

/// A chunk of output as a stream line.
pub fn chunk_line(stream: Stream, bytes: &[u8]) -> StreamOutput {
    match stream {
        Stream::Stdout => StreamOutput::Stdout(base64_encode(bytes)),
        Stream::Stderr => StreamOutput::Stderr(base64_encode(bytes)),
    }
}

/// A client's place in a job's output; detaches when dropped.
#[derive(Debug)]
pub struct Attachment {
    runtime: Arc<Runtime>,
    job: String,
    reader: ReaderId,
    offset: u64,
    /// Bytes asked for that were no longer kept.
    pub skipped: u64,
}

impl Attachment {
    pub fn job(&self) -> &str {
        &self.job
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next output, or the exit once everything was handed out; waits for either, checking
    /// `closed` (the client went away) twice a second, and for [`IDLE_AFTER`] at most.
    pub fn next(&mut self, closed: &AtomicBool) -> Next {
        let idle_at = Instant::now() + IDLE_AFTER;
        let mut st = self.runtime.lock();
        loop {
            let Some(j) = st.table.get_mut(&self.job) else {
                return Next::Closed;
            };
            let read = j.output.read(self.offset, 4 * MAX_CHUNK);
            if !read.chunks.is_empty() {
                j.output.advance(self.reader, read.next);
                self.offset = read.next;
                drop(st);
                // Room may have opened for the relay to read more.
                self.runtime.wake();
                return Next::Data(read.chunks);
            }
            if !j.is_running() {
                return Next::Exit(j.info.exit.unwrap_or_default());
            }
            if closed.load(Ordering::Relaxed) {
                return Next::Closed;
            }
            let left = idle_at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Next::Idle;
            }
            st = self
                .runtime
                .changed
                .wait_timeout(st, left.min(Duration::from_millis(500)))
                .map_or_else(|p| p.into_inner().0, |(g, _)| g);
        }
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        if let Some(j) = self.runtime.lock().table.get_mut(&self.job) {
            j.output.detach(self.reader);
        }
        self.runtime.wake();
    }
}
