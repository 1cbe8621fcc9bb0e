//! The balancer's thread: once a second it reads the node map, this node's control and the
//! jobs running here, lets [`clump_balance::Balancer`] decide, and carries out the move it names
//! (a job of this node directly, a guest through its home). At home it also ends the streams of
//! guests whose node the map shows dead, so their jobs are marked lost.

use crate::api_server::Hub;
use crate::peer::Peers;
use clump_api::{NodeEntry, NodeMap, NodeState};
use clump_balance::{Here, Job, Node};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const TICK: Duration = Duration::from_secs(1);

/// What the thread remembers of a job between ticks, for its rates.
struct Seen {
    since: Instant,
    at: Instant,
    cpu_ms: u64,
    output: u64,
    cpu_milli: u64,
    output_bps: u64,
}

pub fn start(hub: Arc<Hub>, peers: Arc<Peers>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("balance".into())
        .spawn(move || {
            let mut seen: HashMap<String, Seen> = HashMap::new();
            loop {
                std::thread::sleep(TICK);
                tick(&hub, &peers, crate::daemon::mono(), &mut seen);
            }
        })
        .map(|_| ())
}

/// A node of the map as the balancer sees it; `None` until its record gave every figure.
pub fn node_of(e: &NodeEntry) -> Option<Node> {
    Some(Node {
        number: e.number?,
        cores: e.cores?,
        speed: e.speed?,
        runnable_milli: u64::from(e.runnable?),
        mem_free_kib: e.mem_free_kib?,
        mem_total_kib: e.mem_total_kib?,
        accepts_guests: !e.blocked,
    })
}

fn gone(map: &NodeMap, number: u32) -> bool {
    map.nodes
        .iter()
        .find(|n| n.number == Some(number))
        .is_none_or(|n| matches!(n.state, NodeState::Dead | NodeState::Left))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Decays `old` towards `new` by a half each second.
fn ewma(old: u64, new: u64) -> u64 {
    (old + new).div_ceil(2)
}

fn tick(hub: &Hub, peers: &Arc<Peers>, now: Duration, seen: &mut HashMap<String, Seen>) {
    for o in peers.take_outcomes() {
        let mut b = hub.balancer();
        match o.result {
            Ok(stats) => b.moved(stats.bytes, o.took),
            Err(_) => b.failed(now, &o.job, o.node),
        }
    }
    let map = hub.lock().map.clone();
    peers.drop_dead_guests(|n| gone(&map, n));

    let control = hub.control().clone();
    let minute = crate::control::minute_of_day(SystemTime::now());
    let draining = control.sends_guests_away(minute);
    hub.balancer().policy = control.policy.clone();

    let Some(me) = hub.jobs.home() else { return };
    let Some(mut here) = map
        .nodes
        .iter()
        .find(|n| matches!(n.state, NodeState::This | NodeState::Leaving) && n.number == Some(me))
        .and_then(node_of)
    else {
        return;
    };
    here.runnable_milli = hub.local_runnable.load(Ordering::Relaxed);
    let others: Vec<Node> = map
        .nodes
        .iter()
        .filter(|n| n.state == NodeState::Alive && n.number != Some(me) && n.address.is_some())
        .filter_map(node_of)
        .collect();

    let t = Instant::now();
    let infos = hub.jobs.running_here();
    seen.retain(|id, _| infos.iter().any(|i| &i.id == id));
    let wall = unix_ms();
    let jobs: Vec<Job> = infos
        .iter()
        .map(|i| {
            let s = seen.entry(i.id.clone()).or_insert(Seen {
                since: t,
                at: t,
                cpu_ms: i.cpu_ms,
                output: i.output_bytes,
                cpu_milli: 0,
                output_bps: 0,
            });
            let dt = t.duration_since(s.at).as_millis() as u64;
            let per_s = |d: u64| (d * 1000).checked_div(dt);
            if let (Some(cpu), Some(out)) = (
                per_s(i.cpu_ms.saturating_sub(s.cpu_ms)),
                per_s(i.output_bytes.saturating_sub(s.output)),
            ) {
                s.cpu_milli = ewma(s.cpu_milli, cpu);
                s.output_bps = ewma(s.output_bps, out);
                (s.at, s.cpu_ms, s.output) = (t, i.cpu_ms, i.output_bytes);
            }
            let age = Duration::from_millis(wall.saturating_sub(i.started_ms));
            Job {
                id: i.id.clone(),
                home: i.home.unwrap_or(me),
                mem_kib: i.mem_kib,
                cpu_milli: s.cpu_milli,
                age,
                here_for: t.duration_since(s.since).min(age),
                output_bps: s.output_bps,
                stuck: if i.locked {
                    Some("locked by its user".into())
                } else {
                    i.pinned.clone()
                },
            }
        })
        .collect();
    let h = Here {
        node: here,
        draining,
        balancing: control.balancer,
    };
    let decision = hub.balancer().decide(now, &h, &others, &jobs);
    hub.jobs.set_notes(
        decision
            .notes
            .iter()
            .filter(|(job, _)| !job.is_empty())
            .cloned()
            .collect(),
    );
    for (job, note) in decision.notes.iter().filter(|(job, _)| job.is_empty()) {
        tracing::debug!(job, "balancer: {note}");
    }
    let Some(mv) = decision.mv else { return };
    let Some(addr) = peers.alive_addr(mv.to) else {
        return;
    };
    tracing::info!(
        job = mv.job,
        to = mv.to,
        why = mv.why.as_str(),
        "balancer moves a job"
    );
    if let Err(e) = peers.balance(&mv.job, (mv.to, addr), mv.why.as_str()) {
        tracing::info!(job = mv.job, to = mv.to, "balancer's move failed: {e}");
        hub.balancer().failed(now, &mv.job, mv.to);
    }
}
