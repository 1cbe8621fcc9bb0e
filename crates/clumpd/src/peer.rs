//! Streams between nodes for jobs (ARCHITECTURE.md, "Migration"): on the cluster port over TCP,
//! each a [`clump_link::Link`] (only holders of the cluster key get one), opened with a [`Hello`]:
//!
//! - `restore`: a node moving a job asks whether this node takes it, then sends its CRIU images
//!   in [`Round`]s: pre-copy rounds while the job runs on, then the final one, frozen; this node
//!   restores it and says whether it runs. The sender lets its stopped copy go only on "yes",
//!   else resumes it.
//! - `guest`: the node that runs a job opens this to the job's home: output, usage and the exit
//!   go up ([`Up`]), input, signals and "move on" come down ([`Down`]).

use crate::api_server::Hub;
use crate::stream_gate::StreamGate;
use clump_api::jobs::{base64_decode, base64_encode, MAX_CHUNK};
use clump_api::{ExitStatus, JobInfo, Stream};
use clump_jobs::checkpoint::Pipes;
use clump_jobs::precopy::{self, Rounds};
use clump_jobs::workdir::{self, Workdir, WorkdirError};
use clump_jobs::{Control, Next, Route, Runtime};
use clump_link::{Link, LinkError, Receiver, Sender};
use clump_seal::ClusterKey;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod recovery;
pub use recovery::Checkpoints;

/// Connect and handshake bound.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a target may take to restore.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(120);
/// The most bytes of images one move may carry.
const MAX_IMAGES: u64 = 8 << 30;
/// The most rounds a move may have: pre-copy's and the final one.
const MAX_ROUNDS: usize = precopy::MAX_ROUNDS + 1;
/// The most job records taken from one node for `clump ps`.
const MAX_LISTED: usize = 10_000;
/// How long another node's job list may take: well inside the local API client's 5 s, so a
/// node that died but is not known dead yet leaves `clump ps` in time.
const PS_TIMEOUT: Duration = Duration::from_secs(3);
/// How long home waits, once a move succeeded, for the new node's guest stream (see
/// [`Peers::wait_stream_in`]): TCP's retransmissions of a lost hello take seconds, not more.
const STREAM_IN: Duration = Duration::from_secs(30);
/// More concurrent peer streams than this are turned away.
const MAX_STREAMS: usize = 64;
/// A guest's stream silent this long (its heartbeat comes every second) is taken as gone once
/// the gossip says its node is dead; one that still speaks is kept. Under loss and jitter the
/// gossip has declared live nodes dead for seconds: ending their streams made home restart a
/// job from its checkpoint while it still ran.
const STREAM_SILENT: Duration = Duration::from_secs(5);

#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Hello {
    Restore {
        job: String,
        /// Where the job's home listens, for the guest stream.
        home: SocketAddr,
        version: String,
    },
    Guest {
        job: String,
        node: u32,
    },
    /// `clump ps` of another node: the answer is one job record per message, then `null`.
    Ps,
    /// A node whose stream to the job's home broke while the job ran on there asks whether
    /// home still counts on it: the answer is [`Rejoined`].
    Rejoin {
        job: String,
        node: u32,
    },
    /// The node running a job of this home sends a checkpoint of it: one [`Round`] with its
    /// `last`; `full` starts a new chain, else it holds what changed since `seq - 1`.
    Checkpoint {
        job: String,
        node: u32,
        version: String,
        seq: u32,
        full: bool,
    },
}

/// One round of a move's images, followed on the stream by their bytes in order. Each round
/// after the first holds only what changed since the one before (CRIU's parent images).
#[derive(Serialize, Deserialize, Debug)]
pub struct Round {
    pub files: Vec<ImageFile>,
    /// The final round (the job is frozen) carries the job.
    pub last: Option<Box<Last>>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Last {
    pub job: JobInfo,
    pub pipes: Pipes,
    /// The job's working directory, when it travels: its files' bytes follow the images.
    #[serde(default)]
    pub workdir: Option<Workdir>,
    /// Input it had not read when it froze (base64): the target writes it to the job first.
    #[serde(default)]
    pub stdin: String,
    /// In a checkpoint: the job's output offset on the node it came from when it was taken.
    #[serde(default)]
    pub output: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ImageFile {
    pub name: String,
    pub size: u64,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Up {
    Output {
        stream: Stream,
        data: String,
    },
    Usage {
        cpu_ms: u64,
        mem_kib: u64,
    },
    Exit {
        status: ExitStatus,
    },
    /// Before `exit`: the job's working directory as it left it here, for home's copy; its
    /// files' bytes follow as `bytes` messages.
    Files {
        workdir: Workdir,
    },
    Bytes {
        data: String,
    },
    /// Frozen, and every byte it wrote was sent: home may let a new node's output in.
    Drained,
    Moved {
        node: u32,
        #[serde(default)]
        stats: MoveStats,
    },
    Failed {
        reason: String,
    },
    /// The guest's balancer wants the job on `node` (its home, or another): home moves it as
    /// `clump migrate` would, holding signals and input meanwhile.
    Move {
        node: u32,
        why: String,
    },
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Down {
    Stdin {
        data: String,
    },
    Eof,
    Signal {
        signal: i32,
    },
    Migrate {
        node: u32,
        to: SocketAddr,
        #[serde(default = "yes")]
        precopy: bool,
    },
    DrainedAck,
}

/// Home's answer to [`Hello::Rejoin`].
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejoined {
    /// Home has the job, running on another node or ended: the asker's copy must go. False:
    /// home does not know it (it restarted), so the copy runs on and keeps its output.
    pub known: bool,
}

/// What a move took, for the one who asked for it.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MoveStats {
    /// Rounds of images: pre-copy's and the final one.
    pub rounds: u32,
    /// From the final dump to the target's "it runs".
    pub frozen_ms: u64,
    /// Bytes of images sent.
    pub bytes: u64,
}

fn yes() -> bool {
    true
}

/// The target's answer to a restore: to the hello (it takes the job or not), after each
/// pre-copy round (with the room left for more), after the last round (it runs or not).
#[derive(Serialize, Deserialize, Debug)]
pub struct Restored {
    pub error: Option<String>,
    /// Bytes the target has left for images.
    #[serde(default)]
    pub room: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error("{0}")]
    Refused(String),
    #[error("the stream to node {node} failed: {source}")]
    Link {
        node: u32,
        #[source]
        source: LinkError,
    },
}

/// This node's side of the job streams.
pub struct Peers {
    key: ClusterKey,
    pub jobs: Arc<Runtime>,
    /// The node map (weak: the hub holds these peers).
    hub: std::sync::Weak<Hub>,
    me: SocketAddr,
    number: u32,
    work: PathBuf,
    /// At home: per job running elsewhere, the way to its node and who waits for a move.
    guests: Mutex<HashMap<String, GuestLink>>,
    /// Working directories this node made for guests, by job: removed when the guest leaves.
    staged: Mutex<HashMap<String, PathBuf>>,
    /// The most bytes of files a working directory may carry.
    workdir_limit: u64,
    streams: AtomicU64,
    /// Handshakes in progress per address, and what became of the connections refused.
    pub gate: StreamGate,
    /// Moves coming in, and those restored in the last few seconds: counted in this node's
    /// published load until its own figures show the job.
    incoming: Mutex<Vec<Instant>>,
    /// Moves this node carried out (as source), for the balancer to learn from.
    outcomes: Mutex<Vec<Outcome>>,
    /// Guests running here: their stream to home, to ask home for a move.
    running_guests: Mutex<HashMap<String, Arc<Mutex<Sender>>>>,
    /// At home: the last checkpoint of each job away from home.
    checkpoints: Checkpoints,
    /// How often guests here are checkpointed to their home, in ms; 0: never.
    checkpoint_ms: AtomicU64,
}

/// How a move this node carried out ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub job: String,
    pub node: u32,
    pub took: Duration,
    pub result: Result<MoveStats, String>,
}

/// A restored job counts in this node's load this long after its restore.
const SETTLING: Duration = Duration::from_secs(3);

/// One move coming in; once dropped it counts [`SETTLING`] longer, unless cancelled.
struct Incoming<'a> {
    peers: &'a Peers,
    at: Instant,
}

impl Incoming<'_> {
    fn settle(&self, until: Instant) {
        let mut v = self.peers.incoming.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = v.iter_mut().find(|t| **t == self.at) {
            *slot = until;
        }
    }

    /// The move did not come: it counts no more.
    fn cancel(&self) {
        self.settle(Instant::now());
    }
}

impl Drop for Incoming<'_> {
    fn drop(&mut self) {
        let until = Instant::now() + SETTLING;
        let mut v = self.peers.incoming.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = v.iter_mut().find(|t| **t == self.at) {
            *slot = (*slot).min(until);
        }
    }
}

struct GuestLink {
    node: u32,
    down: mpsc::Sender<Down>,
    waiter: Option<mpsc::Sender<Result<MoveStats, String>>>,
    /// Ends the stream when the guest's node is known dead.
    closer: Option<clump_link::Closer>,
    /// When home last heard from the guest on the stream (`mono_ms`).
    heard: Arc<AtomicU64>,
    /// The node is dead in the map but the stream speaks: said once.
    kept: bool,
    /// Home's output offset that the guest's offset 0 stands for.
    base: u64,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("me", &self.me)
            .field("number", &self.number)
            .finish()
    }
}

/// The image's version (`version=` in `/etc/clump/release`, which build.sh writes: the
/// workspace version and the commit), else clumpd's own.
fn version() -> String {
    std::fs::read_to_string("/etc/clump/release")
        .ok()
        .and_then(|text| release_version(&text))
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned())
}

fn release_version(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("version="))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

impl Peers {
    /// Listens on `addr:port` (TCP) and serves streams on threads.
    pub fn start(
        key: ClusterKey,
        hub: Arc<Hub>,
        addr: Ipv4Addr,
        port: u16,
        number: u32,
        work: PathBuf,
        workdir_limit: u64,
    ) -> std::io::Result<Arc<Peers>> {
        let me = SocketAddr::from((addr, port));
        let listener = TcpListener::bind(me)?;
        if let Err(e) = private_dir(&work) {
            tracing::warn!(dir = %work.display(), "cannot create the migration directory; moves will fail: {e}");
        }
        let peers = Arc::new(Peers {
            key,
            jobs: hub.jobs.clone(),
            hub: Arc::downgrade(&hub),
            me,
            number,
            guests: Mutex::new(HashMap::new()),
            staged: Mutex::new(HashMap::new()),
            workdir_limit,
            streams: AtomicU64::new(0),
            gate: StreamGate::default(),
            incoming: Mutex::new(Vec::new()),
            outcomes: Mutex::new(Vec::new()),
            running_guests: Mutex::new(HashMap::new()),
            checkpoints: Checkpoints::new(work.join("checkpoints")),
            checkpoint_ms: AtomicU64::new(0),
            work,
        });
        let server = peers.clone();
        std::thread::Builder::new().name("peers".into()).spawn(move || {
            for conn in listener.incoming() {
                let conn = match conn {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of descriptors the same connection waits again at once: pause
                        // instead of spinning on it.
                        tracing::debug!("accept: {e}");
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                };
                let from = conn.peer_addr().ok();
                if server.streams.load(Ordering::Relaxed) as usize >= MAX_STREAMS {
                    server.gate.busy();
                    if let Some(line) = server.gate.log_busy(Instant::now()) {
                        tracing::warn!(peer = ?from, count = line.count, "too many peer streams; refused");
                    }
                    continue;
                }
                let p = server.clone();
                server.streams.fetch_add(1, Ordering::Relaxed);
                let spawned = std::thread::Builder::new().name("peer".into()).spawn(move || {
                    p.accept(conn, from);
                    p.streams.fetch_sub(1, Ordering::Relaxed);
                });
                if spawned.is_err() {
                    server.streams.fetch_sub(1, Ordering::Relaxed);
                }
            }
        })?;
        tracing::info!(%me, "serving job streams");
        Ok(peers)
    }

    fn guests(&self) -> std::sync::MutexGuard<'_, HashMap<String, GuestLink>> {
        self.guests.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn staged(&self) -> std::sync::MutexGuard<'_, HashMap<String, PathBuf>> {
        self.staged.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A guest left or ended: the working directory made for it goes.
    fn unstage(&self, job: &str) {
        if let Some(root) = self.staged().remove(job) {
            if let Err(e) = std::fs::remove_dir_all(&root) {
                tracing::warn!(job, dir = %root.display(), "cannot remove the job's staged working directory: {e}");
            }
        }
    }

    /// The working directory a job takes along, if it has one that travels.
    fn workdir_of(&self, job: &str, pid: i32) -> Result<Option<Workdir>, String> {
        match workdir::of(pid).filter(|d| workdir::travels(d)) {
            None => Ok(None),
            Some(dir) => workdir::scan(&dir, self.workdir_limit)
                .map(Some)
                .map_err(|e| format!("job {job} stays where it is: {e}")),
        }
    }

    /// Target: writes a job's working directory before the restore needs it. At the job's
    /// home it is the home's own (what changed away comes back); elsewhere a directory of that
    /// path must not exist yet, unless this node made it for the job.
    fn receive_workdir(&self, link: &mut Link, info: &JobInfo, wd: &Workdir) -> Result<(), String> {
        let root = workdir::check(wd, self.workdir_limit).map_err(|e| e.to_string())?;
        let at_home = info.home == Some(self.number);
        let ours = self.staged().get(&info.id) == Some(&root);
        if !at_home && !ours && std::fs::symlink_metadata(&root).is_ok() {
            return Err(format!(
                "node {} has a {} of its own: the job's working directory cannot go there",
                self.number,
                root.display()
            ));
        }
        // At home the job's user is the one home knows, whatever the record that came says.
        let owner = if at_home {
            self.jobs.info(&info.id).map_or(info.uid, |i| i.uid)
        } else {
            info.uid
        };
        let written = workdir::write(wd, Some(owner), || {
            link.recv()
                .map_err(|e| WorkdirError::Io(std::io::Error::other(e.to_string())))
        });
        if !at_home {
            self.staged().insert(info.id.clone(), root);
        }
        written.map_err(|e| format!("cannot write the job's working directory: {e}"))
    }

    /// One connection: the handshake, within the address's share of handshakes, then the stream.
    fn accept(self: &Arc<Self>, conn: std::net::TcpStream, from: Option<SocketAddr>) {
        let ip = from.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
        let Some(ticket) = self.gate.admit(ip) else {
            if let Some(line) = self.gate.log_busy(Instant::now()) {
                tracing::warn!(
                    peer = ?from, count = line.count,
                    "peer streams refused: too many handshakes from one address"
                );
            }
            return;
        };
        let link = Link::accept(conn, &self.key, CONNECT_TIMEOUT);
        drop(ticket);
        let link = match link {
            Ok(link) => link,
            Err(e) => {
                let reason = e.reason();
                if let Some(line) = self.gate.refused(reason, Instant::now()) {
                    tracing::warn!(
                        peer = ?from, reason, count = line.count,
                        "peer streams refused at the handshake: {e}"
                    );
                }
                return;
            }
        };
        self.gate.accepted();
        if let Err(e) = self.serve(link) {
            tracing::warn!(peer = ?from, "peer stream: {e}");
        }
    }

    fn serve(self: &Arc<Self>, mut link: Link) -> Result<(), LinkError> {
        link.set_read_timeout(Some(CONNECT_TIMEOUT))?;
        let hello: Hello = link.recv_json()?;
        link.set_read_timeout(None)?;
        match hello {
            Hello::Restore {
                job,
                home,
                version: v,
            } => {
                let refused = self.accepts(&job, &v).and_then(|()| self.takes_guest(home)).err();
                if let Some(e) = &refused {
                    tracing::warn!(job, "move refused: {e}");
                }
                let done = refused.is_some();
                let room = Some(room(&self.work));
                link.send_json(&Restored { error: refused, room })?;
                if done {
                    return Ok(());
                }
                let reserved = self.reserve_incoming();
                let result = self.restore(&mut link, &job, home);
                if result.is_err() {
                    reserved.cancel();
                }
                drop(reserved);
                let error = result.as_ref().err().cloned();
                if let Some(e) = &error {
                    tracing::warn!("restore refused: {e}");
                }
                link.send_json(&Restored { error, room: None })?;
                if let Ok(Some(guest)) = result {
                    guest.run();
                }
                Ok(())
            }
            Hello::Guest { job, node } => {
                self.home_side(link, job, node);
                Ok(())
            }
            Hello::Ps => {
                for job in self.jobs.ps() {
                    link.send_json(&Some(job))?;
                }
                link.send_json(&None::<JobInfo>)
            }
            Hello::Rejoin { job, node } => {
                let known = self.jobs.info(&job).is_some_and(|i| i.home == Some(self.number));
                tracing::info!(job, node, known, "a node cut off from the job asks about it");
                link.send_json(&Rejoined { known })
            }
            Hello::Checkpoint {
                job,
                node,
                version: v,
                seq,
                full,
            } => {
                self.receive_checkpoint(&mut link, &job, node, seq, full, &v);
                Ok(())
            }
        }
    }

    /// Target: whether this node takes job `job` from an image of version `v`.
    fn accepts(&self, job: &str, v: &str) -> Result<(), String> {
        if v != version() {
            return Err(format!(
                "node {} runs image version {}, the job comes from {v}: nodes move jobs only within one version",
                self.number,
                version()
            ));
        }
        if !valid_job_id(job) {
            return Err(format!("{job:?} is not a job id"));
        }
        Ok(())
    }

    /// Target: a job of another home comes only while this node takes guests.
    fn takes_guest(&self, home: SocketAddr) -> Result<(), String> {
        let minute = crate::control::minute_of_day(std::time::SystemTime::now());
        let accepts = self
            .hub
            .upgrade()
            .is_none_or(|hub| hub.control().accepts_guests(minute));
        if home == self.me || accepts {
            return Ok(());
        }
        Err(format!(
            "node {} takes no guest jobs now (blocked, draining or outside its window)",
            self.number
        ))
    }

    /// The job-stream address of node `number`, if the map shows it alive.
    pub fn alive_addr(&self, number: u32) -> Option<SocketAddr> {
        let hub = self.hub.upgrade()?;
        let map = &hub.lock().map;
        let addr = map.alive().find(|n| n.number == Some(number))?.address?;
        Some(SocketAddr::from((addr, self.me.port())))
    }

    /// Moves coming in or just restored here, counted in this node's load.
    pub fn incoming(&self) -> u32 {
        let now = Instant::now();
        let mut v = self.incoming.lock().unwrap_or_else(|p| p.into_inner());
        v.retain(|until| *until > now);
        v.len() as u32
    }

    fn reserve_incoming(&self) -> Incoming<'_> {
        let far = Instant::now() + Duration::from_secs(24 * 3600);
        let mut v = self.incoming.lock().unwrap_or_else(|p| p.into_inner());
        v.push(far);
        Incoming { peers: self, at: far }
    }

    /// The moves carried out since the last call.
    pub fn take_outcomes(&self) -> Vec<Outcome> {
        std::mem::take(&mut *self.outcomes.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn record_outcome(&self, job: &str, node: u32, took: Duration, result: &Result<MoveStats, MoveError>) {
        let result = match result {
            Ok(s) => Ok(*s),
            Err(e) => Err(e.to_string()),
        };
        self.outcomes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Outcome {
                job: job.to_owned(),
                node,
                took,
                result,
            });
    }

    /// The balancer of this node wants job `job` (running here) on `node` at `to`: carried out
    /// here for a job of this node, asked of its home for a guest (home holds its signals and
    /// input meanwhile). Returns once a job of this node moved, at once for a guest.
    pub fn balance(
        self: &Arc<Self>,
        job: &str,
        (node, to): (u32, SocketAddr),
        why: &str,
    ) -> Result<(), String> {
        let guest = self
            .running_guests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(job)
            .cloned();
        match guest {
            Some(tx) => Guest::send(
                &tx,
                &Up::Move {
                    node,
                    why: why.to_owned(),
                },
            )
            .map_err(|e| format!("cannot ask the job's home: {e}")),
            None => self
                .migrate(job, (node, to), true)
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }

    /// Home: ends the streams of jobs whose node `dead` says is gone (a node that lost power
    /// never closes its end): those jobs are lost, and `clump run` says so.
    pub fn drop_dead_guests(&self, dead: impl Fn(u32) -> bool) {
        end_dead_streams(&mut self.guests(), dead, mono_ms());
    }

    /// Target: receives the rounds of images and restores the job; for a job of another home,
    /// opens the guest stream there first (no stream, no job: it is killed and the source
    /// resumes).
    fn restore(
        self: &Arc<Self>,
        link: &mut Link,
        job: &str,
        home: SocketAddr,
    ) -> Result<Option<Guest>, String> {
        let dir = self.work.join(format!("in-{job}"));
        let _ = std::fs::remove_dir_all(&dir);
        let started = Instant::now();
        let received = receive_rounds(link, &dir);
        let received_ms = started.elapsed().as_millis();
        let (last, images) = match received {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let Last {
            job: info,
            pipes,
            workdir: wd,
            stdin,
            ..
        } = last;
        let Some(stdin) = base64_decode(&stdin) else {
            let _ = std::fs::remove_dir_all(&dir);
            return Err("the job's pending input is not base64".into());
        };
        if info.id != job {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(format!("the images are of job {}, not {job}", info.id));
        }
        if let Some(wd) = &wd {
            if let Err(e) = self.receive_workdir(link, &info, wd) {
                let _ = std::fs::remove_dir_all(&dir);
                self.unstage(job);
                return Err(e);
            }
        }
        let restored = self.jobs.adopt(info.clone(), &pipes, &images);
        if restored.is_err() {
            // The images go (they are RAM); CRIU's log of the last failed restore stays.
            let _ = std::fs::copy(images.join("restore.log"), self.work.join("failed-restore.log"));
        }
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(e) = restored {
            self.unstage(job);
            return Err(e.to_string());
        }
        if !stdin.is_empty() {
            if let Err(e) = self.jobs.write_stdin(0, job, &stdin) {
                tracing::warn!(job, "the input the job had not read is lost: {e}");
            }
        }
        tracing::info!(
            job,
            received_ms,
            restored_ms = started.elapsed().as_millis() - received_ms,
            "images received and restored"
        );
        if info.home == Some(self.number) {
            self.checkpoints.forget(job);
            return Ok(None);
        }
        match Guest::open(self.clone(), job, home) {
            Ok(guest) => Ok(Some(guest)),
            Err(e) => {
                self.jobs.kill_guest(job);
                Err(format!("cannot reach the job's home {home}: {e}"))
            }
        }
    }

    /// Home: a node says it runs one of our jobs; relay until it ends or moves on.
    fn home_side(self: &Arc<Self>, link: Link, job: String, node: u32) {
        if self.jobs.info(&job).is_none_or(|i| i.home != Some(self.number)) {
            tracing::warn!(job, node, "a node claims a job that is not ours");
            return;
        }
        let base = self.jobs.output_resume_point(&job);
        let (mut tx, mut rx) = link.split();
        let closer = tx.closer().ok();
        let heard = Arc::new(AtomicU64::new(mono_ms()));
        let (down_tx, down_rx) = mpsc::channel::<Down>();
        let writer = std::thread::Builder::new()
            .name("guest-down".into())
            .spawn(move || {
                for msg in down_rx {
                    if tx.send_json(&msg).is_err() {
                        break;
                    }
                }
                tx.shutdown();
            });
        if writer.is_err() {
            return;
        }
        let route_tx = down_tx.clone();
        self.jobs.set_route(
            &job,
            Route::new(node, move |c| {
                let msg = match c {
                    Control::Stdin(bytes) => Down::Stdin {
                        data: base64_encode(&bytes),
                    },
                    Control::Eof => Down::Eof,
                    Control::Signal(signal) => Down::Signal { signal },
                };
                route_tx.send(msg).is_ok()
            }),
        );
        {
            let mut guests = self.guests();
            let waiter = guests.remove(&job).and_then(|g| g.waiter);
            guests.insert(
                job.clone(),
                GuestLink {
                    node,
                    down: down_tx.clone(),
                    waiter,
                    closer,
                    heard: heard.clone(),
                    kept: false,
                    base,
                },
            );
        }
        tracing::info!(job, node, "job runs on another node");
        let mut moved = false;
        loop {
            let msg = match rx.recv_json::<Up>() {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(job, node, "stream from the job's node ended: {e}");
                    break;
                }
            };
            heard.store(mono_ms(), Ordering::Relaxed);
            match msg {
                Up::Output { stream, data } => match base64_decode(&data) {
                    Some(bytes) => self.jobs.remote_output(&job, stream, &bytes),
                    None => tracing::warn!(job, "undecodable output from node {node}"),
                },
                Up::Usage { cpu_ms, mem_kib } => self.jobs.remote_usage(&job, cpu_ms, mem_kib),
                Up::Files { workdir: wd } => {
                    let owner = self.jobs.info(&job).map(|i| i.uid);
                    if let Err(e) = copy_back(&mut rx, &wd, owner, self.workdir_limit) {
                        tracing::warn!(job, node, "the job's working directory did not come back: {e}");
                    } else {
                        tracing::info!(
                            job,
                            node,
                            dir = wd.root,
                            bytes = wd.bytes(),
                            "working directory copied back"
                        );
                    }
                }
                Up::Bytes { .. } => tracing::warn!(job, node, "file bytes out of place"),
                Up::Exit { status } => {
                    self.checkpoints.forget(&job);
                    self.jobs.remote_exit(&job, Some(status));
                    self.finish_waiter(&job, Some(node), Err("the job ended".into()));
                    self.forget(&job, node);
                    return;
                }
                Up::Drained => {
                    let _ = down_tx.send(Down::DrainedAck);
                }
                Up::Moved { stats, .. } => {
                    moved = true;
                    self.jobs.count_move(&job);
                    // By now the new node may hold the entry (and the waiter, carried over).
                    self.finish_waiter(&job, None, Ok(stats));
                    break;
                }
                Up::Failed { reason } => self.finish_waiter(&job, Some(node), Err(reason)),
                Up::Move { node: to_node, why } => self.move_for_guest(&job, node, to_node, &why),
            }
        }
        // The guest went away without a word: its node died or dropped the job.
        if !moved && self.jobs.route(&job) == Some(node) {
            self.finish_waiter(&job, Some(node), Err(format!("node {node} went away")));
            self.forget(&job, node);
            if !self.recover(&job, node) {
                tracing::warn!(job, node, "lost the job with its node");
                self.checkpoints.forget(&job);
                self.jobs.remote_exit(&job, None);
            }
            return;
        }
        self.forget(&job, node);
    }

    /// Home: the balancer of the job's node (`from`) asks for the job on `to`: moved as `clump
    /// migrate` would (the job's lock holds; a node not alive in the map is refused).
    fn move_for_guest(self: &Arc<Self>, job: &str, from: u32, to: u32, why: &str) {
        if self.jobs.info(job).is_some_and(|i| i.locked) {
            tracing::info!(job, from, to, "the job's node asks to move it, but it is locked");
            return;
        }
        let Some(addr) = self.alive_addr(to) else {
            tracing::warn!(
                job,
                from,
                to,
                "the job's node asks to move it to a node not alive here"
            );
            return;
        };
        let (peers, job, why) = (self.clone(), job.to_owned(), why.to_owned());
        let _ = std::thread::Builder::new()
            .name("balance-move".into())
            .spawn(move || {
                tracing::info!(job, from, to, why, "moving the job as its node asks");
                if let Err(e) = peers.migrate(&job, (to, addr), true) {
                    tracing::warn!(job, from, to, "the move its node asked for failed: {e}");
                }
            });
    }

    /// Tells who waits for the job's move how it went; with `node`, only while that node holds
    /// the job.
    fn finish_waiter(&self, job: &str, node: Option<u32>, result: Result<MoveStats, String>) {
        let mut guests = self.guests();
        if let Some(g) = guests.get_mut(job).filter(|g| node.is_none_or(|n| g.node == n)) {
            if let Some(w) = g.waiter.take() {
                let _ = w.send(result);
            }
        }
    }

    fn forget(&self, job: &str, node: u32) {
        let mut guests = self.guests();
        if guests.get(job).is_some_and(|g| g.node == node) {
            guests.remove(job);
        }
    }

    /// This node's number and job-stream address.
    /// The jobs of the node at `to`.
    pub fn remote_ps(&self, to: SocketAddr) -> Result<Vec<JobInfo>, LinkError> {
        let mut link = Link::connect(to, &self.key, PS_TIMEOUT)?;
        link.send_json(&Hello::Ps)?;
        link.set_read_timeout(Some(PS_TIMEOUT))?;
        let mut jobs = Vec::new();
        while let Some(job) = link.recv_json::<Option<JobInfo>>()? {
            if jobs.len() >= MAX_LISTED {
                break;
            }
            jobs.push(job);
        }
        Ok(jobs)
    }

    pub fn me(&self) -> (u32, SocketAddr) {
        (self.number, self.me)
    }

    /// `clump migrate` at home: moves the job to `node` at `to` (this node for "home").
    pub fn migrate(
        self: &Arc<Self>,
        job: &str,
        (node, to): (u32, SocketAddr),
        precopy: bool,
    ) -> Result<MoveStats, MoveError> {
        self.jobs.hold_controls(job);
        let moved = self
            .move_job(job, (node, to), precopy)
            .and_then(|stats| self.wait_stream_in(job, node).map(|()| stats));
        self.jobs.release_controls(job);
        moved
    }

    /// Home, after the target said the job runs there: waits until that node's guest stream
    /// is in (its route set, its entry in `guests`). The target opened the stream before it
    /// said yes, but home may take it in later than the source's `moved` (under packet loss
    /// a retransmitted hello came seconds after): answering `migrate` before then let the
    /// next `migrate` find no way to the job ("not running here nor on a node this one can
    /// reach") and let held signals and input go to the old node's dead route.
    fn wait_stream_in(&self, job: &str, node: u32) -> Result<(), MoveError> {
        if node == self.number {
            return Ok(());
        }
        let started = Instant::now();
        let deadline = started + STREAM_IN;
        loop {
            if stream_in(&self.guests(), job, node) {
                let waited_ms = started.elapsed().as_millis();
                if waited_ms > 0 {
                    // How often and how long the race is run shows in the faults e2e's logs.
                    tracing::info!(
                        job,
                        node,
                        waited_ms,
                        "the new node's stream came in after the move's yes"
                    );
                }
                return Ok(());
            }
            // A job that ended at the new node at once has no stream to wait for.
            if self
                .jobs
                .info(job)
                .is_none_or(|i| i.state != Some(clump_api::JobState::Running))
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(MoveError::Refused(format!(
                    "job {job} runs on node {node} now, but that node's stream to home did not come in within {} s",
                    STREAM_IN.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn move_job(
        self: &Arc<Self>,
        job: &str,
        (node, to): (u32, SocketAddr),
        precopy: bool,
    ) -> Result<MoveStats, MoveError> {
        if self.jobs.runs_here(job) {
            if node == self.number {
                return Err(MoveError::Refused(format!(
                    "job {job} runs on node {node} already"
                )));
            }
            return carry(self, job, (node, to), self.me, precopy, || Ok(()));
        }
        let (tx, rx) = mpsc::channel();
        {
            let mut guests = self.guests();
            let Some(g) = guests.get_mut(job) else {
                return Err(MoveError::Refused(format!(
                    "job {job} is not running here nor on a node this one can reach"
                )));
            };
            if g.node == node {
                return Err(MoveError::Refused(format!(
                    "job {job} runs on node {node} already"
                )));
            }
            if g.waiter.is_some() {
                return Err(MoveError::Refused(format!("job {job} is moving already")));
            }
            g.waiter = Some(tx);
            let _ = g.down.send(Down::Migrate { node, to, precopy });
        }
        // The guest stream ending ends the wait too (its node died): this bound is for a move
        // that hangs, so it grows with the job's memory (pre-copy may send it twice, at 1 MiB/s).
        let mib = self.jobs.info(job).map_or(0, |i| i.mem_kib >> 10);
        let bound = RESTORE_TIMEOUT + Duration::from_secs(60 + 2 * mib);
        match rx.recv_timeout(bound) {
            Ok(Ok(stats)) => Ok(stats),
            Ok(Err(reason)) => Err(MoveError::Refused(reason)),
            Err(_) => Err(MoveError::Refused(format!(
                "job {job}: no word of the move in time"
            ))),
        }
    }
}

/// Ends the streams of guests on nodes that `dead` names and that have been silent for
/// [`STREAM_SILENT`] by `now` (ms); gives their jobs.
fn end_dead_streams(
    guests: &mut HashMap<String, GuestLink>,
    dead: impl Fn(u32) -> bool,
    now: u64,
) -> Vec<String> {
    let mut ended = Vec::new();
    for (job, g) in guests.iter_mut() {
        if !dead(g.node) {
            g.kept = false;
            continue;
        }
        let silent = Duration::from_millis(now.saturating_sub(g.heard.load(Ordering::Relaxed)));
        if silent < STREAM_SILENT {
            if !std::mem::replace(&mut g.kept, true) {
                tracing::warn!(
                    job,
                    node = g.node,
                    "the job's node is dead in the map but its stream still speaks: kept"
                );
            }
            continue;
        }
        tracing::warn!(job, node = g.node, "the job's node is dead: its stream ends");
        if let Some(c) = &g.closer {
            c.close();
        }
        ended.push(job.clone());
    }
    ended
}

fn mono_ms() -> u64 {
    u64::try_from(crate::daemon::mono().as_millis()).unwrap_or(u64::MAX)
}

/// Whether home holds the guest stream of `job` from `node`.
fn stream_in(guests: &HashMap<String, GuestLink>, job: &str, node: u32) -> bool {
    guests.get(job).is_some_and(|g| g.node == node)
}

/// Creates `dir` for root alone (0700), or makes it so: the images staged in it are the
/// memory of other users' jobs.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

fn valid_job_id(id: &str) -> bool {
    id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Image file names are CRIU's: plain names in one directory.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Target: the rounds of a move into `dir/1`, `dir/2`, ..., each linked to the one before as
/// CRIU's parent; returns the last round's job and its directory, to restore from.
fn receive_rounds(link: &mut Link, dir: &Path) -> Result<(Last, PathBuf), String> {
    link.set_read_timeout(Some(RESTORE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut total = 0u64;
    for n in 1..=MAX_ROUNDS {
        let round: Round = link
            .recv_json()
            .map_err(|e| format!("the images stopped coming: {e}"))?;
        let here = dir.join(n.to_string());
        std::fs::create_dir_all(&here).map_err(|e| format!("cannot create {}: {e}", here.display()))?;
        if n > 1 {
            std::os::unix::fs::symlink(format!("../{}", n - 1), here.join("parent"))
                .map_err(|e| format!("cannot link round {n} to its parent: {e}"))?;
        }
        total += receive_images(link, &here, &round.files, total)?;
        if let Some(last) = round.last {
            link.set_read_timeout(None).map_err(|e| e.to_string())?;
            return Ok((*last, here));
        }
        link.send_json(&Restored {
            error: None,
            room: Some(room(dir)),
        })
        .map_err(|e| format!("the source went away: {e}"))?;
    }
    Err(format!("more than {MAX_ROUNDS} rounds of images"))
}

/// Checks a round's list of files before anything is written: plain names, and no more than
/// [`MAX_IMAGES`] bytes with the `before` of earlier rounds. Returns this round's bytes.
pub fn check_round(files: &[ImageFile], before: u64) -> Result<u64, String> {
    // Checked: sizes are the peer's, and a wrapped sum would pass the limit below.
    let total = files
        .iter()
        .try_fold(before, |sum, f| sum.checked_add(f.size))
        .filter(|&total| total <= MAX_IMAGES)
        .ok_or_else(|| format!("the images are more than the {MAX_IMAGES} bytes accepted"))?;
    if let Some(bad) = files.iter().find(|f| !valid_name(&f.name)) {
        return Err(format!("{:?} is not an image file name", bad.name));
    }
    Ok(total - before)
}

/// One round's files into `dir`; `before` bytes came in earlier rounds. Returns this round's.
fn receive_images(link: &mut Link, dir: &Path, files: &[ImageFile], before: u64) -> Result<u64, String> {
    let bytes = check_round(files, before)?;
    let left = room(dir);
    if bytes > left {
        return Err(format!(
            "no room for {bytes} bytes of images in {} ({left} free)",
            dir.display()
        ));
    }
    for f in files {
        let path = dir.join(&f.name);
        let mut out =
            std::fs::File::create(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let mut left = f.size;
        while left > 0 {
            let chunk = link
                .recv()
                .map_err(|e| format!("the images stopped coming: {e}"))?;
            if chunk.len() as u64 > left {
                return Err(format!("image {} is longer than announced", f.name));
            }
            left -= chunk.len() as u64;
            out.write_all(&chunk)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
    }
    Ok(bytes)
}

/// Source: the stream to the target of a move, from "do you take it" to "it runs".
struct Transfer {
    link: Link,
    node: u32,
    bytes: u64,
    /// What the target said it has left for images.
    room: u64,
    buf: Vec<u8>,
}

impl Transfer {
    fn open(
        key: &ClusterKey,
        job: &str,
        node: u32,
        to: SocketAddr,
        home: SocketAddr,
    ) -> Result<Transfer, MoveError> {
        let hello = Hello::Restore {
            job: job.to_owned(),
            home,
            version: version(),
        };
        Transfer::open_with(key, node, to, &hello)
    }

    /// Opens a stream to `node` at `to` with `hello` and waits for its yes.
    fn open_with(key: &ClusterKey, node: u32, to: SocketAddr, hello: &Hello) -> Result<Transfer, MoveError> {
        let link_err = |source| MoveError::Link { node, source };
        let mut link = Link::connect(to, key, CONNECT_TIMEOUT).map_err(link_err)?;
        link.send_json(hello).map_err(link_err)?;
        link.set_read_timeout(Some(CONNECT_TIMEOUT)).map_err(link_err)?;
        let answer: Restored = link.recv_json().map_err(link_err)?;
        link.set_read_timeout(None).map_err(link_err)?;
        if let Some(e) = answer.error {
            return Err(MoveError::Refused(format!("node {node}: {e}")));
        }
        Ok(Transfer {
            link,
            node,
            bytes: 0,
            room: answer.room.unwrap_or(0),
            buf: vec![0u8; clump_link::MAX_MESSAGE],
        })
    }

    fn link_err(&mut self, source: LinkError) -> MoveError {
        // A target that gave up (a full disk, say) said why before it closed.
        let _ = self.link.set_read_timeout(Some(Duration::from_secs(1)));
        match self.link.recv_json::<Restored>() {
            Ok(Restored { error: Some(e), .. }) => MoveError::Refused(format!("node {}: {e}", self.node)),
            _ => MoveError::Link {
                node: self.node,
                source,
            },
        }
    }

    /// Sends the images in `dir` as one round; for a pre-copy round, waits for the target's
    /// room left.
    fn send_round(&mut self, dir: &Path, last: Option<Last>) -> Result<(), MoveError> {
        let precopy = last.is_none();
        let mut files = Vec::new();
        let entries =
            std::fs::read_dir(dir).map_err(|e| MoveError::Refused(format!("cannot read the images: {e}")))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".img") {
                continue;
            }
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            files.push(ImageFile { name, size });
        }
        let round = Round {
            files: files.clone(),
            last: last.map(Box::new),
        };
        if let Err(e) = self.link.send_json(&round) {
            return Err(self.link_err(e));
        }
        let workdir = round.last.as_ref().and_then(|l| l.workdir.clone());
        for f in &files {
            let mut file = std::fs::File::open(dir.join(&f.name))
                .map_err(|e| MoveError::Refused(format!("cannot read image {}: {e}", f.name)))?;
            let mut left = f.size;
            while left > 0 {
                let want = usize::try_from(left).unwrap_or(usize::MAX).min(self.buf.len());
                std::io::Read::read_exact(&mut file, &mut self.buf[..want])
                    .map_err(|e| MoveError::Refused(format!("cannot read image {}: {e}", f.name)))?;
                if let Err(e) = self.link.send(&self.buf[..want]) {
                    return Err(self.link_err(e));
                }
                left -= want as u64;
            }
            self.bytes += f.size;
        }
        if let Some(wd) = &workdir {
            let mut failed = None;
            let sent = workdir::read_files(wd, clump_link::MAX_MESSAGE, |chunk| {
                self.link.send(chunk).map_err(|e| {
                    let text = e.to_string();
                    failed = Some(e);
                    WorkdirError::Io(std::io::Error::other(text))
                })
            });
            if let Some(e) = failed {
                return Err(self.link_err(e));
            }
            sent.map_err(|e| MoveError::Refused(format!("cannot read the job's working directory: {e}")))?;
            self.bytes += wd.bytes();
        }
        if precopy {
            let node = self.node;
            let ack: Restored = self
                .link
                .recv_json()
                .map_err(|source| MoveError::Link { node, source })?;
            if let Some(e) = ack.error {
                return Err(MoveError::Refused(format!("node {node}: {e}")));
            }
            self.room = ack.room.unwrap_or(0);
        }
        Ok(())
    }

    /// After the last round: whether the job runs at the target.
    fn verdict(&mut self) -> Result<(), MoveError> {
        let node = self.node;
        let link_err = |source| MoveError::Link { node, source };
        self.link
            .set_read_timeout(Some(RESTORE_TIMEOUT))
            .map_err(link_err)?;
        let verdict: Restored = self.link.recv_json().map_err(link_err)?;
        match verdict.error {
            None => Ok(()),
            Some(e) => Err(MoveError::Refused(format!("node {node}: {e}"))),
        }
    }
}

/// Guest, at the job's end: its working directory goes home, if this node staged one for it.
fn send_workdir_home(peers: &Peers, tx: &Mutex<Sender>, job: &str) {
    let Some(root) = peers.staged().get(job).cloned() else {
        return;
    };
    let wd = match workdir::scan(&root, peers.workdir_limit) {
        Ok(wd) => wd,
        Err(e) => {
            tracing::warn!(job, "the working directory cannot go home: {e}");
            return;
        }
    };
    if Guest::send(tx, &Up::Files { workdir: wd.clone() }).is_err() {
        return;
    }
    let sent = workdir::read_files(&wd, MAX_CHUNK, |chunk| {
        Guest::send(
            tx,
            &Up::Bytes {
                data: base64_encode(chunk),
            },
        )
        .map_err(|e| WorkdirError::Io(std::io::Error::other(e.to_string())))
    });
    if let Err(e) = sent {
        tracing::warn!(job, "the working directory did not go home: {e}");
    }
}

/// Home: writes what a guest sends of the job's working directory at its end into home's own.
fn copy_back(rx: &mut Receiver, wd: &Workdir, owner: Option<u32>, limit: u64) -> Result<(), WorkdirError> {
    workdir::check(wd, limit)?;
    workdir::write(wd, owner, || match rx.recv_json::<Up>() {
        Ok(Up::Bytes { data }) => {
            base64_decode(&data).ok_or_else(|| WorkdirError::BadPath("undecodable file bytes".into()))
        }
        Ok(other) => Err(WorkdirError::BadPath(format!("{other:?} among the file bytes"))),
        Err(e) => Err(WorkdirError::Io(std::io::Error::other(e.to_string()))),
    })
}

/// Why a dump failed, with the free space for images when it is less than the job holds.
fn dump_failed(error: &str, free: u64, mem_kib: u64, dir: &Path) -> String {
    if free < mem_kib.saturating_mul(1024) {
        format!(
            "{error}: no room for the job's images on this node ({free} bytes free in {}, the job holds {mem_kib} KiB)",
            dir.display()
        )
    } else {
        error.to_owned()
    }
}

/// RAM a node keeps for itself when images are staged in RAM.
const STAGING_RAM_RESERVE: u64 = 64 << 20;

/// Bytes that images may take in `dir`: what its file system has free, and on a RAM-backed
/// one (tmpfs: every node's /run) no more than the RAM available less a reserve. A tmpfs may
/// say it has room that the node's memory has not (its size is a cap, not a reservation):
/// staging there under RAM pressure would push the node into the OOM killer mid-move instead
/// of refusing the move.
fn room(dir: &Path) -> u64 {
    let Ok(fs) = rustix::fs::statfs(dir) else {
        return 0;
    };
    let free = rustix::fs::statvfs(dir).map_or(0, |s| s.f_bavail.saturating_mul(s.f_frsize));
    // TMPFS_MAGIC, RAMFS_MAGIC
    let in_ram = matches!(fs.f_type as u64, 0x0102_1994 | 0x8584_58f6);
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| crate::sample::parse_meminfo(&t).ok())
        .map(|m| m.available_kib.saturating_mul(1024));
    staging_room(free, in_ram, available)
}

fn staging_room(fs_free: u64, in_ram: bool, ram_available: Option<u64>) -> u64 {
    match (in_ram, ram_available) {
        (true, Some(ram)) => fs_free.min(ram.saturating_sub(STAGING_RAM_RESERVE)),
        // Memory unknown: the file system's figure, as before.
        _ => fs_free,
    }
}

/// Empties the page contents of a round the target has: the next round reads only the
/// parent's page maps (which pages it holds), never its pages, and the RAM is the node's.
fn drop_pages(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("pages-") && name.ends_with(".img") {
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .open(e.path())
                .and_then(|f| f.set_len(0));
        }
    }
}

/// Source: moves job `job` of this node to `node` at `to`: pre-copy rounds while it runs (if
/// `precopy` and its memory is worth it), then frozen, `drained` (the guest hands home its last
/// output), the final round and the target's verdict. The job ends here on "it runs", else it
/// runs on here.
fn carry(
    peers: &Peers,
    job: &str,
    (node, to): (u32, SocketAddr),
    home: SocketAddr,
    precopy: bool,
    drained: impl FnOnce() -> Result<(), String>,
) -> Result<MoveStats, MoveError> {
    let started = Instant::now();
    let result = carry_job(peers, job, (node, to), home, precopy, drained);
    peers.record_outcome(job, node, started.elapsed(), &result);
    result
}

fn carry_job(
    peers: &Peers,
    job: &str,
    (node, to): (u32, SocketAddr),
    home: SocketAddr,
    precopy: bool,
    drained: impl FnOnce() -> Result<(), String>,
) -> Result<MoveStats, MoveError> {
    let jobs = &peers.jobs;
    let refused = |e: clump_jobs::JobError| MoveError::Refused(e.to_string());
    let moving = jobs.start_move(job).map_err(refused)?;
    // Before any round: a working directory that cannot travel keeps the job here.
    if let Err(e) = peers.workdir_of(job, moving.pid) {
        jobs.cancel_move(job);
        return Err(MoveError::Refused(e));
    }
    let dir = peers.work.join(format!("out-{job}"));
    let _ = std::fs::remove_dir_all(&dir);
    let started = Instant::now();
    let result = (|| {
        let mut transfer = Transfer::open(&peers.key, job, node, to, home)?;
        let mut rounds = Rounds::new();
        if precopy && precopy::worth_it(moving.mem_kib) {
            loop {
                let n = rounds.count() + 1;
                let here = dir.join(n.to_string());
                let parent = (n > 1).then(|| format!("../{}", n - 1));
                // The first round writes all the job's memory, on both nodes (where the images
                // share RAM with everything else); later rounds the last one's size or less,
                // and the final round the same again.
                let need = match rounds.count() {
                    0 => moving.mem_kib.saturating_mul(1024),
                    // What it wrote since the last round, for this round and the final one.
                    _ => precopy::dirty_bytes(&clump_jobs::stat::tree(moving.pid)).saturating_mul(2),
                };
                if room(&peers.work) < need || transfer.room < need {
                    tracing::warn!(
                        job,
                        round = n,
                        need,
                        here = room(&peers.work),
                        there = transfer.room,
                        "no room for another pre-copy round: freezing now"
                    );
                    break;
                }
                let bytes = match jobs.pre_dump(&moving, &here, parent.as_deref()) {
                    Ok(b) => b,
                    Err(e) => {
                        // The rounds so far stand; the final dump goes on from them.
                        tracing::warn!(job, round = n, "pre-copy stops: {e}");
                        let _ = std::fs::remove_dir_all(&here);
                        break;
                    }
                };
                transfer.send_round(&here, None)?;
                drop_pages(&here);
                if !rounds.another(bytes) {
                    break;
                }
            }
        }
        Ok::<_, MoveError>((transfer, rounds))
    })();
    let (mut transfer, rounds) = match result {
        Ok(r) => r,
        Err(e) => {
            jobs.cancel_move(job);
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let n = rounds.count() + 1;
    let here = dir.join(n.to_string());
    let parent = (n > 1).then(|| format!("../{}", n - 1));
    let frozen_at = Instant::now();
    let frozen = match jobs.freeze(&moving, &here, parent.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            // A full disk leaves CRIU no room even for its log: say what the cause was.
            let free = room(&peers.work);
            return Err(MoveError::Refused(dump_failed(
                &e.to_string(),
                free,
                moving.mem_kib,
                &peers.work,
            )));
        }
    };
    let precopied = transfer.bytes;
    let result = drained()
        .and_then(|()| peers.workdir_of(job, moving.pid))
        .map_err(MoveError::Refused)
        .and_then(|wd| {
            transfer.send_round(
                &here,
                Some(Last {
                    job: frozen.info.clone(),
                    pipes: frozen.pipes,
                    workdir: wd,
                    stdin: base64_encode(&frozen.stdin),
                    output: 0,
                }),
            )?;
            transfer.verdict()
        });
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(()) => {
            let frozen_ms = u64::try_from(frozen_at.elapsed().as_millis()).unwrap_or(u64::MAX);
            jobs.let_go(job, node);
            peers.unstage(job);
            tracing::info!(
                job,
                node,
                rounds = rounds.count() + 1,
                precopied,
                bytes = transfer.bytes,
                frozen_ms,
                total_ms = started.elapsed().as_millis(),
                "job moved"
            );
            Ok(MoveStats {
                rounds: u32::try_from(rounds.count() + 1).unwrap_or(u32::MAX),
                frozen_ms,
                bytes: transfer.bytes,
            })
        }
        Err(e) => {
            jobs.thaw(job);
            Err(e)
        }
    }
}

/// How often a guest cut off from its home asks it whether the job is still this node's.
const REJOIN_EVERY: Duration = Duration::from_secs(10);

/// Guest, its stream to home gone while the job runs here: asks home every [`REJOIN_EVERY`]
/// while the job runs; a home that has the job (elsewhere now, or ended) ends this copy, one
/// that does not know it leaves it to run on with its output kept here (`clump output`).
fn cut_off(peers: &Arc<Peers>, job: &str, home: SocketAddr) {
    let ask = |peers: &Peers| -> Result<Rejoined, LinkError> {
        let mut link = Link::connect(home, &peers.key, CONNECT_TIMEOUT)?;
        link.send_json(&Hello::Rejoin {
            job: job.to_owned(),
            node: peers.number,
        })?;
        link.set_read_timeout(Some(CONNECT_TIMEOUT))?;
        link.recv_json()
    };
    tracing::warn!(job, %home, "cut off from the job's home: the job runs on here");
    while peers.jobs.runs_here(job) {
        match ask(peers) {
            Ok(Rejoined { known: true }) => {
                peers.jobs.drop_replaced_guest(job);
                peers.unstage(job);
                return;
            }
            Ok(Rejoined { known: false }) => {
                tracing::info!(job, "the job's home does not know it any more: it runs on here");
                return;
            }
            Err(e) => tracing::debug!(job, "the job's home does not answer: {e}"),
        }
        std::thread::sleep(REJOIN_EVERY);
    }
}

/// The node that runs a job of another home: its stream there.
struct Guest {
    peers: Arc<Peers>,
    job: String,
    home: SocketAddr,
    tx: Arc<Mutex<Sender>>,
    rx: Receiver,
}

impl Guest {
    fn open(peers: Arc<Peers>, job: &str, home: SocketAddr) -> Result<Guest, LinkError> {
        let mut link = Link::connect(home, &peers.key, CONNECT_TIMEOUT)?;
        link.send_json(&Hello::Guest {
            job: job.to_owned(),
            node: peers.number,
        })?;
        let (tx, rx) = link.split();
        Ok(Guest {
            peers,
            job: job.to_owned(),
            home,
            tx: Arc::new(Mutex::new(tx)),
            rx,
        })
    }

    fn send(tx: &Mutex<Sender>, msg: &Up) -> Result<(), LinkError> {
        tx.lock().unwrap_or_else(|p| p.into_inner()).send_json(msg)
    }

    /// Relays until the job ends here or moves on.
    fn run(self) {
        let peers = self.peers.clone();
        let job = self.job.clone();
        peers
            .running_guests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job.clone(), self.tx.clone());
        let home = self.home;
        self.relay();
        peers
            .running_guests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&job);
        if peers.jobs.runs_here(&job) {
            // The stream broke, the job did not move or end: home died, or this node was cut
            // off and home may have restarted the job elsewhere.
            cut_off(&peers, &job, home);
        }
    }

    fn relay(mut self) {
        let jobs = self.peers.jobs.clone();
        let job = self.job.clone();
        let forwarded = Arc::new(AtomicU64::new(0));
        let closed = Arc::new(AtomicBool::new(false));
        let Ok(mut attachment) = jobs.attach(0, &job, Some(0)) else {
            return;
        };
        let (tx, fwd, stop) = (self.tx.clone(), forwarded.clone(), closed.clone());
        let peers = self.peers.clone();
        let forwarder = std::thread::Builder::new()
            .name("guest-up".into())
            .spawn(move || {
                let mut last_usage = Instant::now();
                loop {
                    match attachment.next(&stop) {
                        Next::Data(chunks) => {
                            for (stream, bytes) in chunks {
                                for piece in bytes.chunks(MAX_CHUNK) {
                                    let msg = Up::Output {
                                        stream,
                                        data: base64_encode(piece),
                                    };
                                    if Guest::send(&tx, &msg).is_err() {
                                        return;
                                    }
                                }
                            }
                            fwd.store(attachment.offset(), Ordering::SeqCst);
                        }
                        Next::Exit(status) => {
                            send_workdir_home(&peers, &tx, attachment.job());
                            let _ = Guest::send(&tx, &Up::Exit { status });
                            peers.unstage(attachment.job());
                            return;
                        }
                        Next::Closed => return,
                        Next::Idle => {}
                    }
                    // Also the stream's heartbeat: home tells a live stream from a node that
                    // the gossip wrongly declared dead by it (see `drop_dead_guests`).
                    if last_usage.elapsed() >= clump_jobs::runtime::IDLE_AFTER {
                        last_usage = Instant::now();
                        if let Some(i) = jobs.info(attachment.job()) {
                            let _ = Guest::send(
                                &tx,
                                &Up::Usage {
                                    cpu_ms: i.cpu_ms,
                                    mem_kib: i.mem_kib,
                                },
                            );
                        }
                    }
                }
            });
        if forwarder.is_err() {
            return;
        }
        let busy = Arc::new(AtomicBool::new(false));
        let checkpointer = recovery::Checkpointer {
            peers: self.peers.clone(),
            job: job.clone(),
            home: self.home,
            forwarded: forwarded.clone(),
            closed: closed.clone(),
            busy: busy.clone(),
        };
        if let Err(e) = std::thread::Builder::new()
            .name("guest-ckpt".into())
            .spawn(move || checkpointer.run())
        {
            tracing::warn!(job, "no checkpoints for the job: {e}");
        }
        loop {
            let msg = match self.rx.recv_json::<Down>() {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(job, "stream to the job's home ended: {e}");
                    break;
                }
            };
            let jobs = &self.peers.jobs;
            let result = match msg {
                Down::Stdin { data } => match base64_decode(&data) {
                    Some(bytes) => jobs.write_stdin(0, &job, &bytes).map_err(|e| e.to_string()),
                    None => Err("undecodable input".into()),
                },
                Down::Eof => jobs.close_stdin(0, &job).map_err(|e| e.to_string()),
                Down::Signal { signal } => jobs
                    .signal(0, &job, &signal.to_string())
                    .map_err(|e| e.to_string()),
                Down::DrainedAck => Ok(()),
                Down::Migrate { node, to, precopy } => {
                    match self.move_on(node, to, precopy, &forwarded, &busy) {
                        Ok(stats) => {
                            closed.store(true, Ordering::SeqCst);
                            let _ = Guest::send(&self.tx, &Up::Moved { node, stats });
                            return;
                        }
                        Err(reason) => {
                            tracing::warn!(job, node, "move failed: {reason}");
                            let _ = Guest::send(&self.tx, &Up::Failed { reason });
                            Ok(())
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(job, "home's request failed: {e}");
            }
        }
        closed.store(true, Ordering::SeqCst);
    }

    /// Pre-copy and freeze here, hand home every byte, then restore at `to`.
    fn move_on(
        &mut self,
        node: u32,
        to: SocketAddr,
        precopy: bool,
        forwarded: &AtomicU64,
        checkpointing: &AtomicBool,
    ) -> Result<MoveStats, String> {
        // A checkpoint under way holds the job for seconds at most.
        let deadline = Instant::now() + RESTORE_TIMEOUT;
        while checkpointing.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let peers = self.peers.clone();
        let jobs = peers.jobs.clone();
        let job = self.job.clone();
        let (tx, rx) = (self.tx.clone(), &mut self.rx);
        let drained = || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while forwarded.load(Ordering::SeqCst) < jobs.output_end(&job) {
                if Instant::now() > deadline {
                    return Err("the job's output did not reach its home in time".to_string());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Guest::send(&tx, &Up::Drained).map_err(|e| e.to_string())?;
            loop {
                match rx.recv_json::<Down>() {
                    Ok(Down::DrainedAck) => return Ok(()),
                    Ok(other) => tracing::warn!(job, "dropped {other:?} sent during a move"),
                    Err(e) => return Err(format!("home went away during the move: {e}")),
                }
            }
        };
        carry(&peers, &self.job, (node, to), self.home, precopy, drained).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn images_staged_in_ram_never_take_the_nodes_last_memory() {
        const MIB: u64 = 1 << 20;
        // A half-RAM tmpfs with 500 MiB free on a node with 200 MiB available: 136 MiB.
        assert_eq!(staging_room(500 * MIB, true, Some(200 * MIB)), 136 * MIB);
        assert_eq!(staging_room(500 * MIB, true, Some(32 * MIB)), 0);
        assert_eq!(staging_room(100 * MIB, true, Some(2048 * MIB)), 100 * MIB);
        // A disk, or memory unknown: the file system's figure.
        assert_eq!(staging_room(500 * MIB, false, Some(32 * MIB)), 500 * MIB);
        assert_eq!(staging_room(500 * MIB, true, None), 500 * MIB);
    }

    use super::*;

    fn link(node: u32) -> GuestLink {
        GuestLink {
            node,
            down: mpsc::channel().0,
            waiter: None,
            closer: None,
            heard: Arc::new(AtomicU64::new(mono_ms())),
            kept: false,
            base: 0,
        }
    }

    #[test]
    fn a_dump_that_failed_for_want_of_room_says_so() {
        let dir = Path::new("/run/clump/migrate");
        let said = dump_failed("criu dump failed", 0, 412, dir);
        assert_eq!(
            said,
            "criu dump failed: no room for the job's images on this node (0 bytes free in /run/clump/migrate, the job holds 412 KiB)"
        );
        assert_eq!(
            dump_failed("criu dump failed", 1 << 30, 412, dir),
            "criu dump failed"
        );
    }

    #[test]
    fn a_move_is_in_only_once_the_new_node_s_stream_is() {
        let mut guests = HashMap::new();
        // The old node's entry, still there or gone after its `moved`: not yet.
        assert!(!stream_in(&guests, "0a1b2c3d", 3));
        guests.insert("0a1b2c3d".to_owned(), link(2));
        assert!(!stream_in(&guests, "0a1b2c3d", 3));
        // The new node's stream came in (it replaces the old entry).
        guests.insert("0a1b2c3d".to_owned(), link(3));
        assert!(stream_in(&guests, "0a1b2c3d", 3));
        assert!(!stream_in(&guests, "ffffffff", 3));
    }

    #[test]
    fn a_dead_node_s_stream_ends_only_once_it_is_silent() {
        let mut guests = HashMap::new();
        let (on_2, on_3) = (link(2), link(3));
        on_2.heard.store(10_000, Ordering::Relaxed);
        on_3.heard.store(10_000, Ordering::Relaxed);
        guests.insert("0a1b2c3d".to_owned(), on_2);
        guests.insert("4e5f6a7b".to_owned(), on_3);
        let dead_2 = |n: u32| n == 2;
        // Node 2 declared dead while its stream spoke a second ago: a false death, kept.
        assert!(end_dead_streams(&mut guests, dead_2, 11_000).is_empty());
        assert!(guests["0a1b2c3d"].kept);
        // Silent past the bound: gone; node 3's silent stream stays, its node is alive.
        let ended = end_dead_streams(&mut guests, dead_2, 10_000 + 5_000);
        assert_eq!(ended, ["0a1b2c3d"]);
        // A stream heard again after its node came back is kept; back alive clears the flag.
        guests["0a1b2c3d"].heard.store(20_000, Ordering::Relaxed);
        assert!(end_dead_streams(&mut guests, |_| false, 20_500).is_empty());
        assert!(!guests["0a1b2c3d"].kept);
    }

    #[test]
    fn only_plain_image_names_and_job_ids_pass() {
        assert!(valid_name("pages-1.img"));
        assert!(valid_name("core-22.img"));
        for bad in ["", ".", "..", "../x", "a/b", "x\0", &"a".repeat(129)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert!(valid_job_id("0a1b2c3d"));
        assert!(!valid_job_id("0a1b2c3"));
        assert!(!valid_job_id("../../x1"));
    }

    #[test]
    fn the_migration_directory_is_root_s_alone() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().expect("tempdir");
        let fresh = base.path().join("run/migrate");
        private_dir(&fresh).expect("create");
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&fresh), 0o700);
        let old = base.path().join("old");
        std::fs::create_dir(&old).expect("mkdir");
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        private_dir(&old).expect("existing");
        assert_eq!(mode(&old), 0o700, "one left by an earlier run is closed too");
    }

    #[test]
    fn a_round_cannot_pass_the_image_limit_by_wrapping_its_sizes() {
        let file = |name: &str, size| ImageFile {
            name: name.into(),
            size,
        };
        // Summed in u64 these are 0 bytes: they passed the limit, then the receiver took 2^64.
        let wrapped = [file("pages-1.img", u64::MAX), file("pages-2.img", 1)];
        assert!(check_round(&wrapped, 0).is_err());
        assert!(check_round(&[file("pages-1.img", 1)], u64::MAX).is_err());
        assert!(check_round(&[file("pages-1.img", MAX_IMAGES)], 1).is_err());
        let fits = [file("pages-1.img", MAX_IMAGES / 2), file("core-1.img", 7)];
        assert_eq!(check_round(&fits, 1), Ok(MAX_IMAGES / 2 + 7));
        assert!(check_round(&[file("../pages-1.img", 1)], 0).is_err());
    }

    #[test]
    fn the_image_version_comes_from_the_release_file() {
        let text = "version=0.1.0+g0123456789ab\nkernel=6.1.0-57-amd64\n";
        assert_eq!(release_version(text).as_deref(), Some("0.1.0+g0123456789ab"));
        assert_eq!(release_version("kernel=6.1\n"), None);
        assert_eq!(release_version("version=\n"), None);
    }

    #[test]
    fn messages_have_the_documented_shape() {
        let up = serde_json::to_value(Up::Moved {
            node: 3,
            stats: MoveStats::default(),
        })
        .expect("json");
        assert_eq!(
            up,
            serde_json::json!({"op": "moved", "node": 3, "stats": {"rounds": 0, "frozen_ms": 0, "bytes": 0}})
        );
        let old: Up = serde_json::from_str(r#"{"op":"moved","node":3}"#).expect("parse");
        assert!(matches!(old, Up::Moved { node: 3, stats } if stats == MoveStats::default()));
        let down: Down = serde_json::from_str(r#"{"op":"signal","signal":15}"#).expect("parse");
        assert!(matches!(down, Down::Signal { signal: 15 }));
        assert!(serde_json::from_str::<Down>(r#"{"op":"rm -rf"}"#).is_err());
        let hello = serde_json::to_value(Hello::Checkpoint {
            job: "0a1b2c3d".into(),
            node: 12,
            version: "1".into(),
            seq: 2,
            full: false,
        })
        .expect("json");
        assert_eq!(
            hello,
            serde_json::json!({"op": "checkpoint", "job": "0a1b2c3d", "node": 12, "version": "1", "seq": 2, "full": false})
        );
        let rejoin: Hello =
            serde_json::from_str(r#"{"op":"rejoin","job":"0a1b2c3d","node":12}"#).expect("parse");
        assert!(matches!(rejoin, Hello::Rejoin { node: 12, .. }));
        let last: Last = serde_json::from_str(
            r#"{"job":{"id":"0a1b2c3d"},"pipes":{"stdin":1,"stdout":2,"stderr":3,"status":4}}"#,
        )
        .expect("a last round of an older version");
        assert!(!last.pipes.stdin_closed && last.output == 0 && last.workdir.is_none());
    }
}
