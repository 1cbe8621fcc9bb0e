//! Crash recovery (ARCHITECTURE.md, "Crash recovery"): the node running a job of another home
//! checkpoints it to that home every interval, while it runs on; each checkpoint after the
//! first holds only the pages written since the one before (CRIU's parent images), and every
//! [`FULL_EVERY`]th starts a new chain. Home keeps the last chain with the output offset it
//! was taken at. When the job's node dies, home restarts the job from it on the best node that
//! takes guests, else on itself, and drops the output the restarted job writes again up to
//! what the user saw already.

use super::{
    base64_decode, base64_encode, drop_pages, receive_images, version, Hello, Last, Peers, Restored, Round,
    Transfer, CONNECT_TIMEOUT,
};
use clump_link::Link;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A chain of incremental checkpoints is at most this long: a restore sends it as one move's
/// rounds.
const FULL_EVERY: u32 = super::MAX_ROUNDS as u32;
use crate::config::DEFAULT_CHECKPOINT;

/// Home: the last checkpoint of each of its jobs away from home.
#[derive(Debug)]
pub struct Checkpoints {
    root: PathBuf,
    jobs: Mutex<HashMap<String, Stored>>,
}

#[derive(Debug, Clone)]
struct Stored {
    /// The node it came from.
    node: u32,
    seq: u32,
    /// Round directories, oldest first, each the parent of the next.
    chain: Vec<PathBuf>,
    last: Arc<Last>,
    /// Home's output offset when it was taken.
    output_at: u64,
    /// When it was stored: the work a restart loses is about this old.
    stored_at: Instant,
}

impl Checkpoints {
    pub fn new(root: PathBuf) -> Checkpoints {
        Checkpoints {
            root,
            jobs: Mutex::new(HashMap::new()),
        }
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Stored>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The job ended or runs at home: its checkpoint is of no more use.
    pub fn forget(&self, job: &str) {
        if self.jobs().remove(job).is_some() {
            let _ = std::fs::remove_dir_all(self.root.join(job));
        }
    }

    fn get(&self, job: &str) -> Option<Stored> {
        self.jobs().get(job).cloned()
    }
}

/// The node running a job of another home: how it checkpoints the job there.
pub(super) struct Checkpointer {
    pub peers: Arc<Peers>,
    pub job: String,
    pub home: SocketAddr,
    /// Output bytes its forwarder has handed home (this node's offsets).
    pub forwarded: Arc<AtomicU64>,
    /// The guest stream ended: no more checkpoints.
    pub closed: Arc<AtomicBool>,
    /// Set while a checkpoint holds the job (a move waits for it).
    pub busy: Arc<AtomicBool>,
}

impl Checkpointer {
    /// Every interval until the job leaves or ends here, or its home goes.
    pub fn run(self) {
        let mut seq = 0u32;
        let mut chain = 0u32;
        let mut next = Instant::now() + self.peers.checkpoint_interval().unwrap_or(DEFAULT_CHECKPOINT);
        while !self.closed.load(Ordering::SeqCst) && self.peers.jobs.runs_here(&self.job) {
            std::thread::sleep(Duration::from_millis(250));
            let Some(every) = self.peers.checkpoint_interval() else {
                continue;
            };
            if Instant::now() < next {
                continue;
            }
            next = Instant::now() + every;
            seq += 1;
            let full = chain == 0 || chain >= FULL_EVERY;
            let started = Instant::now();
            self.busy.store(true, Ordering::SeqCst);
            let taken = self.take(seq, full);
            self.busy.store(false, Ordering::SeqCst);
            match taken {
                Ok(bytes) => {
                    chain = if full { 1 } else { chain + 1 };
                    tracing::info!(
                        job = self.job,
                        seq,
                        full,
                        bytes,
                        ms = started.elapsed().as_millis(),
                        "checkpoint stored at home"
                    );
                }
                Err(e) => {
                    // Home lacks this round: the next one starts a new chain.
                    chain = 0;
                    tracing::warn!(job = self.job, seq, "no checkpoint this time: {e}");
                }
            }
        }
        let _ = std::fs::remove_dir_all(self.dir());
    }

    fn dir(&self) -> PathBuf {
        self.peers.work.join(format!("ckpt-{}", self.job))
    }

    /// Dumps the job (stopped meanwhile), lets it run on, then sends the round home.
    fn take(&self, seq: u32, full: bool) -> Result<u64, String> {
        let jobs = &self.peers.jobs;
        let info = jobs
            .info(&self.job)
            .ok_or_else(|| format!("job {} is not here", self.job))?;
        // Images are staged in RAM on both nodes (no page server): a job too big for either
        // goes without checkpoints rather than pushing a node out of memory.
        let need = info.mem_kib.saturating_mul(1024).saturating_mul(2);
        let here = super::room(&self.peers.work);
        if here < need {
            return Err(format!("{here} bytes free here for images, {need} wanted"));
        }
        let hello = Hello::Checkpoint {
            job: self.job.clone(),
            node: self.peers.number,
            version: version(),
            seq,
            full,
        };
        let home_number = info.home.unwrap_or(0);
        let mut transfer = Transfer::open_with(&self.peers.key, home_number, self.home, &hello)
            .map_err(|e| e.to_string())?;
        if transfer.room < need {
            return Err(format!(
                "home has {} bytes free for images, {need} wanted",
                transfer.room
            ));
        }
        let moving = jobs.start_move(&self.job).map_err(|e| e.to_string())?;
        if let Err(e) = self.peers.workdir_of(&self.job, moving.pid) {
            jobs.cancel_move(&self.job);
            return Err(e);
        }
        let dir = self.dir();
        if full {
            let _ = std::fs::remove_dir_all(&dir);
        }
        let round = dir.join(seq.to_string());
        let parent = (!full).then(|| format!("../{}", seq - 1));
        let frozen = jobs
            .freeze(&moving, &round, parent.as_deref())
            .map_err(|e| e.to_string())?;
        // Every byte it wrote before the dump is in its buffer now, none after.
        let output = jobs.output_end(&self.job);
        let workdir = self.peers.workdir_of(&self.job, moving.pid);
        jobs.thaw(&self.job);
        let sent = workdir.and_then(|workdir| {
            // Home holds all output up to the checkpoint before it holds the checkpoint.
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.forwarded.load(Ordering::SeqCst) < output {
                if Instant::now() > deadline {
                    return Err("the job's output did not reach its home in time".to_string());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let last = Last {
                job: frozen.info.clone(),
                pipes: frozen.pipes,
                workdir,
                stdin: base64_encode(&frozen.stdin),
                output,
            };
            transfer
                .send_round(&round, Some(last))
                .and_then(|()| transfer.verdict())
                .map(|()| transfer.bytes)
                .map_err(|e| e.to_string())
        });
        match sent {
            Ok(bytes) => {
                // The next dump reads only this one's page maps.
                drop_pages(&round);
                Ok(bytes)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&round);
                Err(e)
            }
        }
    }
}

impl Peers {
    /// How often a job away from home is checkpointed to it; `None`: never.
    pub fn checkpoint_interval(&self) -> Option<Duration> {
        match self.checkpoint_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    pub fn set_checkpoint_interval(&self, every: Option<Duration>) {
        let ms = every.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1));
        self.checkpoint_ms.store(ms, Ordering::Relaxed);
    }

    /// Home: receives a checkpoint of job `job` from `node`, which runs it.
    pub(super) fn receive_checkpoint(
        &self,
        link: &mut Link,
        job: &str,
        node: u32,
        seq: u32,
        full: bool,
        v: &str,
    ) {
        let answer = self
            .accepts(job, v)
            .and_then(|()| self.expects_checkpoint(job, node, seq, full));
        let base = match answer {
            Ok(base) => base,
            Err(e) => {
                tracing::warn!(job, node, "checkpoint refused: {e}");
                let _ = link.send_json(&Restored {
                    error: Some(e),
                    room: None,
                });
                return;
            }
        };
        if let Err(e) = std::fs::create_dir_all(&self.checkpoints.root) {
            tracing::warn!(dir = %self.checkpoints.root.display(), "cannot keep checkpoints: {e}");
        }
        let room = super::room(&self.checkpoints.root);
        if link
            .send_json(&Restored {
                error: None,
                room: Some(room),
            })
            .is_err()
        {
            return;
        }
        let dir = self.checkpoints.root.join(job).join(seq.to_string());
        let stored = self.store_round(link, job, node, seq, full, &dir, base);
        let error = stored.err();
        if let Some(e) = &error {
            tracing::warn!(job, node, seq, "checkpoint not stored: {e}");
            let _ = std::fs::remove_dir_all(&dir);
        }
        let _ = link.send_json(&Restored { error, room: None });
    }

    /// Whether home takes checkpoint `seq` of `job` from `node`; the output offset that node's
    /// offsets start from.
    fn expects_checkpoint(&self, job: &str, node: u32, seq: u32, full: bool) -> Result<u64, String> {
        let base = self
            .guests()
            .get(job)
            .filter(|g| g.node == node)
            .map(|g| g.base)
            .ok_or_else(|| format!("job {job} does not run on node {node} as far as its home knows"))?;
        if !full {
            let prev = self.checkpoints.get(job);
            let follows = prev
                .is_some_and(|p| p.node == node && p.seq + 1 == seq && p.chain.len() < FULL_EVERY as usize);
            if !follows {
                return Err(format!(
                    "checkpoint {seq} of job {job} has no parent here: send a full one"
                ));
            }
        }
        Ok(base)
    }

    #[allow(clippy::too_many_arguments)]
    fn store_round(
        &self,
        link: &mut Link,
        job: &str,
        node: u32,
        seq: u32,
        full: bool,
        dir: &Path,
        base: u64,
    ) -> Result<(), String> {
        link.set_read_timeout(Some(super::RESTORE_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let round: Round = link
            .recv_json()
            .map_err(|e| format!("the checkpoint stopped coming: {e}"))?;
        let Some(last) = round.last else {
            return Err("a checkpoint without its job".into());
        };
        if last.job.id != job || last.job.home != Some(self.number) {
            return Err(format!("the images are of job {}, not ours {job}", last.job.id));
        }
        if base64_decode(&last.stdin).is_none() {
            return Err("the job's pending input is not base64".into());
        }
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        if !full {
            std::os::unix::fs::symlink(format!("../{}", seq - 1), dir.join("parent"))
                .map_err(|e| format!("cannot link checkpoint {seq} to its parent: {e}"))?;
        }
        receive_images(link, dir, &round.files, 0)?;
        if let Some(wd) = &last.workdir {
            // At home this is the job's own directory: it holds what the job had written.
            self.receive_workdir(link, &last.job, wd)?;
        }
        let mut chain = match (full, self.checkpoints.get(job)) {
            (false, Some(prev)) => prev.chain,
            _ => Vec::new(),
        };
        chain.push(dir.to_owned());
        let output_at = base + last.output;
        let old = self.checkpoints.jobs().insert(
            job.to_owned(),
            Stored {
                node,
                seq,
                chain: chain.clone(),
                last: Arc::new(*last),
                output_at,
                stored_at: Instant::now(),
            },
        );
        if let Some(old) = old.filter(|_| full) {
            for d in old.chain.iter().filter(|d| !chain.contains(d)) {
                let _ = std::fs::remove_dir_all(d);
            }
        }
        self.jobs
            .set_checkpointed(job, Some(crate::daemon::clock().unix_ms));
        Ok(())
    }

    /// Home: the node running `job` is gone. Restarts the job from its last checkpoint; false
    /// when there is none or no node could take it (the job is lost).
    pub(super) fn recover(self: &Arc<Self>, job: &str, dead: u32) -> bool {
        let Some(stored) = self.checkpoints.get(job) else {
            return false;
        };
        let Some(last_dir) = stored.chain.last().cloned() else {
            return false;
        };
        self.jobs.hold_controls(job);
        let repeated = self.jobs.output_end(job).saturating_sub(stored.output_at);
        let lost = self.jobs.restart_output_at(job, stored.output_at);
        if lost > 0 {
            tracing::warn!(
                job,
                lost,
                "output written after the checkpoint never reached home"
            );
        }
        let mut targets = Vec::new();
        if let Some(hub) = self.hub.upgrade() {
            if let Some(n) = crate::api_server::best_node(&hub, self.number).filter(|n| *n != dead) {
                if let Some(addr) = self.alive_addr(n) {
                    targets.push((n, addr));
                }
            }
        }
        targets.push((self.number, self.me));
        let started = Instant::now();
        let mut result = Err("no node to restart it on".to_string());
        for (n, addr) in targets {
            result = if n == self.number {
                self.restart_here(job, &stored, &last_dir)
            } else {
                self.restart_on(job, &stored, (n, addr))
            }
            .map(|()| n);
            match &result {
                Ok(_) => break,
                Err(e) => tracing::warn!(job, node = n, "cannot restart the job there: {e}"),
            }
        }
        self.jobs.release_controls(job);
        match result {
            Ok(n) => {
                tracing::info!(
                    job,
                    dead,
                    node = n,
                    seq = stored.seq,
                    checkpoint_age_ms = stored.stored_at.elapsed().as_millis(),
                    repeated_bytes = repeated,
                    ms = started.elapsed().as_millis(),
                    "job restarted from its last checkpoint"
                );
                if let Some(hub) = self.hub.upgrade() {
                    hub.push_event(clump_api::Event {
                        seq: 0,
                        time_ms: crate::daemon::clock().unix_ms,
                        kind: clump_api::EventKind::JobRecovered,
                        node: None,
                        number: Some(n),
                        address: None,
                        text: format!("job {job} restarted on node {n} from a checkpoint (node {dead} died)"),
                    });
                }
                if n == self.number {
                    self.checkpoints.forget(job);
                }
                true
            }
            Err(e) => {
                tracing::warn!(job, "the job is lost: {e}");
                false
            }
        }
    }

    fn restart_here(&self, job: &str, stored: &Stored, last_dir: &Path) -> Result<(), String> {
        let last = &stored.last;
        self.jobs
            .adopt(last.job.clone(), &last.pipes, last_dir)
            .map_err(|e| e.to_string())?;
        let stdin = base64_decode(&last.stdin).unwrap_or_default();
        if !stdin.is_empty() {
            if let Err(e) = self.jobs.write_stdin(0, job, &stdin) {
                tracing::warn!(job, "the input the job had not read is lost: {e}");
            }
        }
        Ok(())
    }

    fn restart_on(
        self: &Arc<Self>,
        job: &str,
        stored: &Stored,
        (node, to): (u32, SocketAddr),
    ) -> Result<(), String> {
        let mut transfer = Transfer::open(&self.key, job, node, to, self.me).map_err(|e| e.to_string())?;
        let Some((last_dir, earlier)) = stored.chain.split_last() else {
            return Err("an empty checkpoint".into());
        };
        for dir in earlier {
            transfer.send_round(dir, None).map_err(|e| e.to_string())?;
        }
        let mut last = Last::clone(&stored.last);
        if let Some(wd) = &last.workdir {
            // Sent from home's copy, which the checkpoint brought up to date.
            last.workdir = Some(
                clump_jobs::workdir::scan(Path::new(&wd.root), self.workdir_limit)
                    .map_err(|e| e.to_string())?,
            );
        }
        transfer
            .send_round(last_dir, Some(last))
            .map_err(|e| e.to_string())?;
        transfer.verdict().map_err(|e| e.to_string())?;
        // The target opens the job's stream here before it answers; wait until it is in.
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        while self.jobs.route(job) != Some(node) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}
