//! The local API on `/run/clump/clumpd.sock`: one thread per client, reading a snapshot the event
//! loop publishes; requests that change something go back to the loop as commands.

use clump_api::jobs::base64_decode;
use clump_api::{
    read_line, write_line, ApiError, Event, Migrated, NodeMap, Place, Reply, Request, Speed, Started, Stats,
    StreamInput, StreamOutput, Versioned,
};
use clump_jobs::{Attachment, JobError, Next, Runtime};
use std::collections::VecDeque;
use std::io::BufReader;
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Events kept for `events` requests and late watchers.
const EVENT_RING: usize = 512;

#[derive(Debug)]
pub enum Command {
    SetSpeed(Option<u32>),
}

#[derive(Debug)]
pub struct Snapshot {
    pub map: NodeMap,
    pub stats: Stats,
    pub speed: Speed,
    pub events: VecDeque<Event>,
    pub next_seq: u64,
}

#[derive(Debug)]
pub struct Hub {
    /// The node's jobs; API threads call it directly (it has its own lock and thread).
    pub jobs: Arc<Runtime>,
    state: Mutex<Snapshot>,
    changed: Condvar,
    commands: Mutex<Vec<Command>>,
    /// Connections held, by caller (see [`crate::client_slots`]).
    clients: crate::client_slots::ClientSlots,
    /// The job streams to other nodes, once this node has an address.
    pub peers: std::sync::OnceLock<Arc<crate::peer::Peers>>,
    /// How this node takes guests and balances; read by the daemon and the balancer.
    pub control: Mutex<crate::control::Control>,
    /// Placement of new jobs and the balancer's memory of recent moves.
    pub balancer: Mutex<clump_balance::Balancer>,
    /// This node's runnable tasks as its own decisions see them (slow to rise), thousandths.
    pub local_runnable: std::sync::atomic::AtomicU64,
}

impl Hub {
    pub fn new(map: NodeMap, jobs: Arc<Runtime>) -> Arc<Self> {
        Arc::new(Self {
            jobs,
            state: Mutex::new(Snapshot {
                map,
                stats: Stats::default(),
                speed: Speed {
                    speed: None,
                    measured: None,
                    fixed: false,
                },
                events: VecDeque::new(),
                next_seq: 1,
            }),
            changed: Condvar::new(),
            commands: Mutex::new(Vec::new()),
            clients: crate::client_slots::ClientSlots::default(),
            peers: std::sync::OnceLock::new(),
            control: Mutex::new(crate::control::Control::default()),
            balancer: Mutex::new(clump_balance::Balancer::new(
                clump_balance::Policy::default(),
                seed(),
            )),
            local_runnable: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn control(&self) -> MutexGuard<'_, crate::control::Control> {
        self.control.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn balancer(&self) -> MutexGuard<'_, clump_balance::Balancer> {
        self.balancer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A poisoned lock means a client thread panicked mid-update of plain data; the data is
    /// still usable, so carry on rather than take the daemon down.
    pub fn lock(&self) -> MutexGuard<'_, Snapshot> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn publish(&self, update: impl FnOnce(&mut Snapshot)) {
        update(&mut self.lock());
        self.changed.notify_all();
    }

    /// Adds an event (its `seq` is assigned here) and wakes the watchers.
    pub fn push_event(&self, mut event: Event) -> Event {
        let mut s = self.lock();
        event.seq = s.next_seq;
        s.next_seq += 1;
        if s.events.len() == EVENT_RING {
            s.events.pop_front();
        }
        s.events.push_back(event.clone());
        drop(s);
        self.changed.notify_all();
        event
    }

    pub fn take_commands(&self) -> Vec<Command> {
        std::mem::take(&mut *self.commands.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn command(&self, c: Command) {
        self.commands.lock().unwrap_or_else(|p| p.into_inner()).push(c);
    }
}

/// A seed for the balancer's draws: only needs to differ between nodes.
fn seed() -> u64 {
    let mut b = [0u8; 8];
    if rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()).is_err() {
        return u64::from(std::process::id()) | 1;
    }
    u64::from_le_bytes(b)
}

/// Binds the socket (replacing a stale one from an earlier run) and serves it on a thread.
pub fn serve(path: &Path, hub: Arc<Hub>) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    // Everyone may read the map; changes are checked per request against the peer's uid.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    std::thread::Builder::new().name("api".into()).spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let uid = peer(&stream).map(|(uid, _)| uid);
            if !hub.clients.take(uid) {
                let mut s = stream;
                let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = write_line(
                    &mut s,
                    &Reply::<()>::Error("too many connections of this user".into()),
                );
                continue;
            }
            let hub = hub.clone();
            let client_hub = hub.clone();
            let spawned = std::thread::Builder::new()
                .name("api-client".into())
                .spawn(move || {
                    if let Err(err) = client(stream, &client_hub) {
                        tracing::debug!(%err, "api client");
                    }
                    client_hub.clients.give(uid);
                });
            if spawned.is_err() {
                hub.clients.give(uid);
                tracing::warn!("cannot start a thread for an api client");
            }
        }
    })?;
    Ok(())
}

/// The peer's uid and gid; jobs run as them.
fn peer(stream: &UnixStream) -> Option<(u32, u32)> {
    rustix::net::sockopt::socket_peercred(stream)
        .ok()
        .map(|c| (c.uid.as_raw(), c.gid.as_raw()))
}

/// Writes the job call's result as a reply line.
fn reply<T: serde::Serialize>(out: &mut UnixStream, result: Result<T, JobError>) -> Result<(), ApiError> {
    match result {
        Ok(v) => write_line(out, &Reply::Ok(v)),
        Err(e) => write_line(out, &Reply::<()>::Error(e.to_string())),
    }
}

fn client(stream: UnixStream, hub: &Hub) -> Result<(), clump_api::ApiError> {
    stream.set_write_timeout(Some(Duration::from_secs(5))).ok();
    let creds = peer(&stream);
    let uid = creds.map(|(uid, _)| uid);
    let mut out = stream
        .try_clone()
        .map_err(|e| clump_api::ApiError::io("clone", e))?;
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    while let Some(line) = read_line(&mut reader, &mut buf)? {
        let request: Request = match serde_json::from_str::<Versioned<Request>>(&line) {
            Ok(r) => match r.checked() {
                Ok(r) => r,
                Err(e) => {
                    write_line(&mut out, &Reply::<()>::Error(e))?;
                    continue;
                }
            },
            Err(e) => {
                write_line(&mut out, &Reply::<()>::Error(format!("bad request: {e}")))?;
                continue;
            }
        };
        match request {
            Request::Nodes => write_line(&mut out, &Reply::Ok(&hub.lock().map))?,
            Request::Stats => write_line(&mut out, &Reply::Ok(&hub.lock().stats))?,
            Request::Events { since } => {
                let events: Vec<Event> = hub
                    .lock()
                    .events
                    .iter()
                    .filter(|e| e.seq > since)
                    .cloned()
                    .collect();
                write_line(&mut out, &Reply::Ok(events))?
            }
            Request::SetSpeed { speed } => {
                if uid != Some(0) {
                    write_line(
                        &mut out,
                        &Reply::<()>::Error("only root may set the speed".into()),
                    )?;
                } else if speed.is_some_and(|s| !(1..=1_000_000).contains(&s)) {
                    write_line(&mut out, &Reply::<()>::Error("speed must be 1..=1000000".into()))?;
                } else {
                    hub.command(Command::SetSpeed(speed));
                    let measured = hub.lock().speed.measured;
                    let reply = Speed {
                        speed: speed.or(measured),
                        measured,
                        fixed: speed.is_some(),
                    };
                    write_line(&mut out, &Reply::Ok(reply))?
                }
            }
            Request::Watch => return watch(out, hub),
            Request::Node { change } => {
                let minute = crate::control::minute_of_day(std::time::SystemTime::now());
                let guests = u32::try_from(hub.jobs.guests_here()).unwrap_or(u32::MAX);
                let result = match change {
                    Some(_) if uid != Some(0) => {
                        Err("only root may change how this node takes guests".to_string())
                    }
                    Some(c) => {
                        let mut control = hub.control();
                        control.apply(&c).map(|()| {
                            tracing::info!(change = ?c, "node control changed");
                            control.report(minute, guests)
                        })
                    }
                    None => Ok(hub.control().report(minute, guests)),
                };
                match result {
                    Ok(r) => write_line(&mut out, &Reply::Ok(r))?,
                    Err(e) => write_line(&mut out, &Reply::<()>::Error(e))?,
                }
            }
            request => {
                // Jobs act as the caller: without its credentials nothing is safe to do.
                let Some((uid, gid)) = creds else {
                    write_line(
                        &mut out,
                        &Reply::<()>::Error("cannot tell who you are (SO_PEERCRED)".into()),
                    )?;
                    continue;
                };
                let jobs = &hub.jobs;
                match request {
                    Request::Run {
                        argv,
                        cwd,
                        env,
                        attach,
                        place,
                        lock,
                    } => {
                        let started = jobs.run(uid, gid, argv, cwd, env);
                        let notice = match &started {
                            Ok(job) => {
                                let notice = place_job(hub, uid, job, &place);
                                if lock {
                                    if let Err(e) = jobs.set_locked(uid, job, true) {
                                        tracing::warn!(job, "cannot lock the job: {e}");
                                    }
                                }
                                notice
                            }
                            Err(_) => None,
                        };
                        match (started, attach) {
                            (Ok(job), true) => {
                                // From the first byte, so nothing written before we attach is missed.
                                let attachment = jobs.attach(uid, &job, Some(0));
                                let attachment = match attachment {
                                    Ok(a) => a,
                                    Err(e) => return reply::<()>(&mut out, Err(e)),
                                };
                                write_line(&mut out, &Reply::Ok(StreamOutput::Started(job)))?;
                                if let Some(n) = notice {
                                    write_line(&mut out, &Reply::Ok(StreamOutput::Notice(n)))?;
                                }
                                return job_stream(reader, out, jobs, uid, attachment);
                            }
                            (started, _) => reply(&mut out, started.map(|job| Started { job, notice }))?,
                        }
                    }
                    Request::Attach { job, offset } => match jobs.attach(uid, &job, offset) {
                        Ok(attachment) => {
                            let first = StreamOutput::Attached {
                                job,
                                offset: attachment.offset(),
                                skipped: attachment.skipped,
                            };
                            write_line(&mut out, &Reply::Ok(first))?;
                            return job_stream(reader, out, jobs, uid, attachment);
                        }
                        Err(e) => reply::<()>(&mut out, Err(e))?,
                    },
                    Request::Ps { local } => {
                        let mine = jobs.ps();
                        let list = match hub.peers.get() {
                            Some(peers) if !local => {
                                let map = hub.lock().map.clone();
                                crate::cluster_ps::gather(peers, &map, mine)
                            }
                            _ => mine,
                        };
                        write_line(&mut out, &Reply::Ok(hide_others_commands(uid, list)))?
                    }
                    Request::Signal { job, signal } => reply(&mut out, jobs.signal(uid, &job, &signal))?,
                    Request::Output { job } => reply(&mut out, jobs.output(uid, &job))?,
                    Request::Wait { job } => reply(&mut out, jobs.wait(uid, &job))?,
                    Request::Lock { job, locked } => reply(&mut out, jobs.set_locked(uid, &job, locked))?,
                    Request::Migrate {
                        job,
                        node,
                        no_precopy,
                    } => {
                        let started = std::time::Instant::now();
                        let result =
                            migrate(hub, uid, &job, node.as_deref(), !no_precopy).map(|(from, to, stats)| {
                                Migrated {
                                    job: job.clone(),
                                    from,
                                    to,
                                    ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                                    frozen_ms: stats.frozen_ms,
                                    rounds: stats.rounds,
                                    bytes: stats.bytes,
                                }
                            });
                        reply(&mut out, result)?
                    }
                    Request::Nodes
                    | Request::Stats
                    | Request::Events { .. }
                    | Request::SetSpeed { .. }
                    | Request::Node { .. }
                    | Request::Watch => {}
                }
            }
        }
    }
    Ok(())
}

/// Where a new job should run, by the balancer (which counts the jobs it placed lately, until
/// their targets' figures show them); `None`: here.
pub(crate) fn best_node(hub: &Hub, home: u32) -> Option<u32> {
    let map = hub.lock().map.clone();
    let node = crate::balance::node_of;
    let mut here = map.nodes.iter().find(|n| n.number == Some(home)).and_then(node)?;
    here.runnable_milli = hub
        .local_runnable
        .load(Ordering::Relaxed)
        .max(here.runnable_milli);
    let others: Vec<_> = map
        .nodes
        .iter()
        .filter(|n| n.state == clump_api::NodeState::Alive && n.number != Some(home) && n.address.is_some())
        .filter_map(node)
        .collect();
    let here = clump_balance::Here {
        node: here,
        draining: false,
        balancing: true,
    };
    hub.balancer().place(crate::daemon::mono(), &here, &others)
}

/// Moves a job just started to where `place` says; why it stays here, if it was asked to go.
fn place_job(hub: &Hub, uid: u32, job: &str, place: &Place) -> Option<String> {
    let home = hub.jobs.home()?;
    let target = match place {
        Place::Home => return None,
        Place::On(node) => {
            if hub.lock().map.resolve(node).and_then(|n| n.number) == Some(home) {
                return None;
            }
            node.clone()
        }
        // Chosen quietly: staying home is an answer, not a failure.
        Place::Best => best_node(hub, home)?.to_string(),
    };
    // Not while the reaper is still starting the program.
    hub.jobs.wait_started(job, Duration::from_secs(2));
    match migrate(hub, uid, job, Some(&target), true) {
        Ok(_) => None,
        Err(e) if matches!(place, Place::Best) => {
            tracing::info!(job, to = target, "job stays home: {e}");
            None
        }
        Err(e) => Some(format!("job {job} runs on this node: {e}")),
    }
}

/// Moves a job of this node to `node` (a number, hostname or address; `None`: home). Returns
/// the node numbers it moved from and to, and what the move took.
fn migrate(
    hub: &Hub,
    uid: u32,
    job: &str,
    node: Option<&str>,
    precopy: bool,
) -> Result<(Option<u32>, u32, crate::peer::MoveStats), JobError> {
    let Some(peers) = hub.peers.get() else {
        return Err(JobError::Invalid(
            "this node is not in a cluster yet: jobs cannot move".into(),
        ));
    };
    let info = hub.jobs.owned_info(uid, job)?;
    let (number, me) = peers.me();
    if info.home != Some(number) {
        return Err(JobError::Invalid(format!(
            "job {job} belongs to node {}: move it from there",
            info.home.map_or("?".into(), |n| n.to_string())
        )));
    }
    if info.state != Some(clump_api::JobState::Running) {
        return Err(JobError::Ended(job.into()));
    }
    if info.locked {
        return Err(JobError::Invalid(format!(
            "job {job} is locked to node {} (`clump unlock {job}` lets it move)",
            info.node.map_or("?".into(), |n| n.to_string())
        )));
    }
    let (to_number, to) = match node {
        None => (number, me),
        Some(name) => {
            let map = hub.lock().map.clone();
            let entry = map.resolve(name).ok_or_else(|| {
                JobError::Invalid(format!(
                    "no node {name:?} in the cluster (a number, hostname or address)"
                ))
            })?;
            if entry.state != clump_api::NodeState::Alive && entry.state != clump_api::NodeState::This {
                return Err(JobError::Invalid(format!(
                    "node {name} is {}",
                    entry.state.as_str()
                )));
            }
            match (entry.number, entry.address) {
                (Some(n), Some(a)) => (n, std::net::SocketAddr::from((a, map.port))),
                _ => return Err(JobError::Invalid(format!("node {name} has no address yet"))),
            }
        }
    };
    let stats = peers
        .migrate(job, (to_number, to), precopy)
        .map_err(|e| JobError::Invalid(e.to_string()))?;
    let from = info.node.map_or("?".into(), |n| n.to_string());
    hub.push_event(Event {
        seq: 0,
        time_ms: crate::daemon::clock().unix_ms,
        kind: clump_api::EventKind::JobMigrated,
        node: None,
        number: Some(to_number),
        address: match to.ip() {
            std::net::IpAddr::V4(a) => Some(a),
            std::net::IpAddr::V6(_) => None,
        },
        text: format!("job {job} migrated {from}->{to_number}"),
    });
    Ok((info.node, to_number, stats))
}

/// The connection as a job's stream: a thread sends output and then the exit; this one reads
/// the client's stdin chunks, EOF and signals until the client or the stream ends.
fn job_stream(
    mut reader: BufReader<UnixStream>,
    out: UnixStream,
    jobs: &Arc<Runtime>,
    uid: u32,
    mut attachment: Attachment,
) -> Result<(), ApiError> {
    let closed = Arc::new(AtomicBool::new(false));
    let job = attachment.job().to_owned();
    let sender = {
        let closed = closed.clone();
        let mut out = out.try_clone().map_err(|e| ApiError::io("clone", e))?;
        std::thread::Builder::new()
            .name("api-stream".into())
            .spawn(move || {
                // An attached client that reads slowly (or is stopped, Ctrl-Z) holds its job
                // back, as a terminal does; a client that dies closes the socket and frees it.
                let _ = out.set_write_timeout(None);
                loop {
                    let line = match attachment.next(&closed) {
                        Next::Data(chunks) => chunks
                            .iter()
                            .map(|(s, b)| clump_jobs::runtime::chunk_line(*s, b))
                            .try_for_each(|l| write_line(&mut out, &Reply::Ok(l))),
                        Next::Exit(status) => {
                            let _ = write_line(&mut out, &Reply::Ok(StreamOutput::Exit(status)));
                            break;
                        }
                        Next::Closed => break,
                        Next::Idle => Ok(()),
                    };
                    if line.is_err() {
                        break;
                    }
                }
                // Ends the reading side too.
                let _ = out.shutdown(Shutdown::Both);
            })
            .map_err(|e| ApiError::io("cannot start a stream thread", e))?
    };
    let mut buf = Vec::new();
    let mut mine = out;
    while let Ok(Some(line)) = read_line(&mut reader, &mut buf) {
        let input: StreamInput = match serde_json::from_str(&line) {
            Ok(i) => i,
            Err(e) => {
                let _ = write_line(&mut mine, &Reply::<()>::Error(format!("bad stream input: {e}")));
                break;
            }
        };
        let done = match input {
            StreamInput::Stdin { data } => match base64_decode(&data) {
                Some(bytes) => jobs.write_stdin(uid, &job, &bytes),
                None => Err(JobError::Invalid("stdin data is not base64".into())),
            },
            StreamInput::Eof => jobs.close_stdin(uid, &job),
            StreamInput::Signal { signal } => jobs.signal(uid, &job, &signal),
        };
        if let Err(err) = done {
            // The job may have closed its stdin or ended; its output still flows.
            tracing::debug!(job, %err, "stream input");
        }
    }
    closed.store(true, Ordering::Relaxed);
    let _ = sender.join();
    Ok(())
}

/// Streams every event from now on until the client goes away.
fn watch(mut out: UnixStream, hub: &Hub) -> Result<(), clump_api::ApiError> {
    let mut seen = hub.lock().next_seq - 1;
    loop {
        let pending: Vec<Event> = {
            let mut s = hub.lock();
            while s.next_seq - 1 == seen {
                s = hub.changed.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            s.events.iter().filter(|e| e.seq > seen).cloned().collect()
        };
        for event in pending {
            seen = event.seq;
            write_line(&mut out, &Reply::Ok(&event))?;
        }
    }
}

/// Other users' jobs are listed without their command line, which may hold what its user
/// would not show (SECURITY.md, G11); root sees every one whole.
fn hide_others_commands(uid: u32, mut jobs: Vec<clump_api::JobInfo>) -> Vec<clump_api::JobInfo> {
    if uid != 0 {
        for job in jobs.iter_mut().filter(|j| j.uid != uid) {
            job.argv.clear();
        }
    }
    jobs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_sees_other_users_jobs_without_their_command_line() {
        let job = |uid: u32| clump_api::JobInfo {
            id: format!("j{uid}"),
            argv: vec!["secret".into()],
            uid,
            ..Default::default()
        };
        let seen = hide_others_commands(1000, vec![job(1000), job(0), job(1001)]);
        let argv: Vec<usize> = seen.iter().map(|j| j.argv.len()).collect();
        assert_eq!(argv, vec![1, 0, 0]);
        let seen = hide_others_commands(0, vec![job(1000), job(1001)]);
        assert!(seen.iter().all(|j| j.argv == ["secret"]));
    }
}
