//! One node's balancer: every second `clumpd` hands it this node's figures, the other nodes'
//! from gossip and the jobs running here; it names at most one move, and for the jobs it keeps,
//! why (shown by `clump ps`). Rules, first match wins:
//!
//! 1. **Drain** (`clump node drain`, shutdown, an after-hours window ending): every guest goes
//!    home, or to another node that takes guests when home is leaving too.
//! 2. **I/O**: a guest writing more output than `io_limit_bps` goes home, where its output goes;
//!    such a job at home stays there.
//! 3. **Memory**: free memory under the low mark moves the largest job that can be dumped (its
//!    images are staged in RAM first: at most half of what is free) to a node where it fits above
//!    that node's low mark.
//! 4. **Speed and load**: a CPU-bound job moves where it gets `stability` times the CPU it gets
//!    here, only when this node is overloaded or the other is faster, only when the time the move
//!    saves (its expected remaining run time, from its age) beats what the move costs (memory /
//!    measured bandwidth + overhead), at most once per `min_interval`, never for a job that
//!    arrived less than `settle` ago. Of the targets within 10 % of the best, one is drawn at
//!    random, and what this node sends counts on the target until its own figures show it
//!    (flood control).

use crate::policy::Policy;
use crate::rate;
use std::time::Duration;

/// A node as gossip shows it (alive ones only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub number: u32,
    pub cores: u32,
    /// 1000 = the reference machine.
    pub speed: u32,
    /// Runnable tasks, decayed, in thousandths.
    pub runnable_milli: u64,
    pub mem_free_kib: u64,
    pub mem_total_kib: u64,
    /// False when it is blocked, draining or outside its window.
    pub accepts_guests: bool,
}

/// This node: its figures (`runnable_milli` is the local decayed load, slow to rise) and
/// whether its guests must leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Here {
    pub node: Node,
    pub draining: bool,
    /// False when the balancer is off (`clump.balance=off`): only a drain moves jobs.
    pub balancing: bool,
}

/// A job running on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: String,
    pub home: u32,
    pub mem_kib: u64,
    /// CPU it used lately, decayed, in thousandths of a core.
    pub cpu_milli: u64,
    /// Since it started.
    pub age: Duration,
    /// Since it started or arrived on this node.
    pub here_for: Duration,
    /// stdout + stderr bytes a second, decayed.
    pub output_bps: u64,
    /// Why it cannot move (locked, pinned, moving), if so.
    pub stuck: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    Drain,
    Io,
    Memory,
    Faster,
    Load,
}

impl Why {
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Drain => "drain",
            Why::Io => "output",
            Why::Memory => "memory",
            Why::Faster => "speed",
            Why::Load => "load",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub job: String,
    pub to: u32,
    pub why: Why,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    pub mv: Option<Move>,
    /// Per job kept here, why the balancer keeps it (only where a user would ask).
    pub notes: Vec<(String, String)>,
}

#[derive(Debug)]
pub struct Balancer {
    pub policy: Policy,
    last_move: Option<Duration>,
    /// Jobs this node sent or placed lately: (target, when).
    sent: Vec<(u32, Duration)>,
    /// (job, target, until): a failed move not to retry yet.
    backoff: Vec<(String, u32, Duration)>,
    /// Measured bytes a second of the last large moves (decayed), once one was measured.
    bandwidth: Option<u64>,
    /// Measured fixed cost of a move (dump, restore, streams), from the last small moves.
    overhead: Option<Duration>,
    rng: u64,
}

/// A move carrying at least this much teaches the bandwidth; a smaller one the fixed cost.
const LARGE_MOVE: u64 = 8 << 20;

/// A job that would gain from moving, and where to.
struct Candidate<'a> {
    /// Time saved beyond the move's cost.
    net: Duration,
    job: &'a Job,
    /// (node, CPU the job gets there).
    targets: Vec<(u32, u64)>,
    why: Why,
}

/// Room beyond a job's memory that the source needs to stage its images.
const STAGE_MARGIN_KIB: u64 = 16 * 1024;

impl Balancer {
    pub fn new(policy: Policy, seed: u64) -> Self {
        Self {
            policy,
            last_move: None,
            sent: Vec::new(),
            backoff: Vec::new(),
            bandwidth: None,
            overhead: None,
            rng: seed | 1,
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64: the draw only spreads targets; it needs no quality beyond that.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// The bytes a second moves are taken to carry.
    pub fn bandwidth(&self) -> u64 {
        self.bandwidth.unwrap_or(self.policy.bandwidth_bps)
    }

    /// What a move costs beyond its bytes.
    pub fn overhead(&self) -> Duration {
        self.overhead.unwrap_or(self.policy.move_overhead)
    }

    /// A move went through: `bytes` in `took`. A large one teaches the bandwidth (its time past
    /// the fixed cost), a small one the fixed cost (its time past the bytes).
    pub fn moved(&mut self, bytes: u64, took: Duration) {
        let decay = |old: Option<u64>, new: u64| old.map_or(new, |o| (o * 3 + new) / 4);
        if bytes >= LARGE_MOVE {
            let secs = took.saturating_sub(self.overhead()).as_secs_f64().max(0.1);
            self.bandwidth = Some(decay(self.bandwidth, (bytes as f64 / secs) as u64));
        } else {
            let carried = Duration::from_secs_f64(bytes as f64 / self.bandwidth().max(1) as f64);
            let fixed = took.saturating_sub(carried).as_millis() as u64;
            let old = self.overhead.map(|d| d.as_millis() as u64);
            self.overhead = Some(Duration::from_millis(decay(old, fixed)));
        }
    }

    /// A move failed: not to that node again for a while.
    pub fn failed(&mut self, now: Duration, job: &str, to: u32) {
        self.backoff.push((job.to_owned(), to, now + self.policy.backoff));
    }

    /// Counts a job sent or placed on `to` until its figures show it.
    pub fn reserve(&mut self, now: Duration, to: u32) {
        self.sent.push((to, now));
    }

    fn reserved(&self, to: u32) -> u64 {
        self.sent.iter().filter(|(n, _)| *n == to).count() as u64
    }

    fn expire(&mut self, now: Duration) {
        let keep = self.policy.reserve_for;
        self.sent.retain(|(_, at)| now.saturating_sub(*at) < keep);
        self.backoff.retain(|(_, _, until)| *until > now);
    }

    fn backed_off(&self, job: &str, to: u32) -> bool {
        self.backoff.iter().any(|(j, n, _)| j == job && *n == to)
    }

    /// The CPU one more job would get on `n`, counting what this node sent there lately.
    fn share_there(&self, n: &Node) -> u64 {
        let tasks = n.runnable_milli + 1000 * (1 + self.reserved(n.number));
        rate::cpu_share(n.speed, n.cores, tasks)
    }

    fn fits(&self, n: &Node, mem_kib: u64) -> bool {
        n.mem_free_kib >= mem_kib.saturating_add(self.policy.mem_low_kib(n.mem_total_kib))
    }

    /// Of `candidates` (node, score), one drawn among those within 10 % of the best score.
    fn draw(&mut self, mut candidates: Vec<(u32, u64)>) -> Option<u32> {
        let best = candidates.iter().map(|(_, s)| *s).max()?;
        candidates.retain(|(_, s)| s.saturating_mul(10) >= best.saturating_mul(9));
        candidates.sort_unstable();
        let i = (self.next_random() % candidates.len() as u64) as usize;
        candidates.get(i).map(|(n, _)| *n)
    }

    /// Where a job starting here (its memory unknown yet) should run: another node only if one
    /// more job gets `stability` times the CPU there, and it takes guests; `None`: here.
    pub fn place(&mut self, now: Duration, here: &Here, others: &[Node]) -> Option<u32> {
        self.expire(now);
        let mine = rate::cpu_share(
            here.node.speed,
            here.node.cores,
            here.node.runnable_milli + 1000 * (1 + self.reserved(here.node.number)),
        );
        let bar = mine * self.policy.stability_milli / 1000;
        let candidates: Vec<(u32, u64)> = others
            .iter()
            .filter(|n| n.accepts_guests && n.number != here.node.number)
            .filter(|n| self.fits(n, 0))
            .map(|n| (n.number, self.share_there(n)))
            .filter(|(_, share)| *share > bar)
            .collect();
        let to = self.draw(candidates);
        self.reserve(now, to.unwrap_or(here.node.number));
        to
    }

    pub fn decide(&mut self, now: Duration, here: &Here, others: &[Node], jobs: &[Job]) -> Decision {
        self.expire(now);
        let mut d = Decision::default();
        let me = here.node.number;
        let movable: Vec<&Job> = jobs.iter().filter(|j| j.stuck.is_none()).collect();
        let io_limit = self.policy.io_limit_bps;
        let heavy_io = |j: &Job| j.output_bps > io_limit;
        let guests = |j: &&&Job| j.home != me;

        // 1. Drain: every guest leaves; home first.
        if here.draining {
            for j in movable.iter().filter(guests) {
                if let Some(to) = self.drain_target(j, others) {
                    return self.chose(now, d, j, to, Why::Drain);
                }
                d.notes.push((
                    j.id.clone(),
                    "must leave (draining), but no node can take it".into(),
                ));
            }
        }

        if !here.balancing {
            return d;
        }

        // 2. I/O: noisy guests go home; noisy jobs at home are noted.
        for j in &movable {
            if !heavy_io(j) {
                continue;
            }
            let rate = format!("{} KiB/s", j.output_bps.div_ceil(1024));
            if j.home == me {
                d.notes.push((
                    j.id.clone(),
                    format!(
                        "stays home: it writes {rate} of output (the balancer keeps I/O-heavy jobs at home)"
                    ),
                ));
            } else if others.iter().any(|n| n.number == j.home) && !self.backed_off(&j.id, j.home) {
                return self.chose(now, d, j, j.home, Why::Io);
            }
        }

        // 3. Memory: move the largest job that can be staged to where it fits.
        let low = self.policy.mem_low_kib(here.node.mem_total_kib);
        if here.node.mem_free_kib < low {
            // Staging takes the job's size in RAM while everything here goes on (a growing job
            // grows meanwhile): only a job of half what is free, or less, is staged.
            let room = (here.node.mem_free_kib / 2).saturating_sub(STAGE_MARGIN_KIB);
            let mut by_size: Vec<&&Job> = movable.iter().filter(|j| j.mem_kib <= room).collect();
            by_size.sort_by_key(|j| std::cmp::Reverse(j.mem_kib));
            for j in by_size {
                if let Some(to) = self.memory_target(j, others) {
                    return self.chose(now, d, j, to, Why::Memory);
                }
            }
            if movable.iter().any(|j| j.mem_kib > room) {
                d.notes.push((
                    String::new(),
                    format!(
                        "memory is short ({} MiB free) and no job fits a node with room or the {} MiB a move stages",
                        here.node.mem_free_kib >> 10,
                        room >> 10
                    ),
                ));
            }
        }

        // 4. Speed and load.
        if self
            .last_move
            .is_some_and(|t| now.saturating_sub(t) < self.policy.min_interval)
        {
            return d;
        }
        let tasks_here = here.node.runnable_milli.max(1000);
        let mine = rate::cpu_share(here.node.speed, here.node.cores, tasks_here);
        let overloaded = tasks_here > u64::from(here.node.cores.max(1)) * 1000 + self.policy.overload_milli;
        let mut best: Option<Candidate> = None;
        for j in &movable {
            if heavy_io(j)
                || j.here_for < self.policy.settle
                || j.cpu_milli * 1000 < mine_cores(mine, here) * self.policy.busy_milli
            {
                continue;
            }
            let cost = rate::cost(j.mem_kib, self.bandwidth(), self.overhead());
            let mut targets = Vec::new();
            let mut gain = Duration::ZERO;
            let mut why = Why::Load;
            for n in others.iter().filter(|n| n.number != me) {
                let may = n.accepts_guests || n.number == j.home;
                if !may || !self.fits(n, j.mem_kib) || self.backed_off(&j.id, n.number) {
                    continue;
                }
                let faster =
                    u64::from(n.speed) * 1000 > u64::from(here.node.speed) * self.policy.stability_milli;
                if !overloaded && !faster {
                    continue;
                }
                let there = self.share_there(n);
                if there * 1000 <= mine * self.policy.stability_milli {
                    continue;
                }
                let saves = rate::saving(rate::remaining(j.age), mine, there);
                if saves <= cost {
                    continue;
                }
                if saves > gain {
                    gain = saves;
                    why = if overloaded { Why::Load } else { Why::Faster };
                }
                targets.push((n.number, there));
            }
            if targets.is_empty() {
                continue;
            }
            let net = gain - cost;
            if best.as_ref().is_none_or(|b| net > b.net) {
                best = Some(Candidate {
                    net,
                    job: j,
                    targets,
                    why,
                });
            }
        }
        if let Some(Candidate {
            job: j, targets, why, ..
        }) = best
        {
            // Every overloaded node sees the same idle ones: each moves with the chance that
            // fills the free cores once (MOSIX's "gradual dissemination", done with the figures
            // gossip gives everyone), instead of all of them moving to one idle newcomer.
            if why == Why::Load && !self.my_turn(here, others) {
                return d;
            }
            if let Some(to) = self.draw(targets) {
                return self.chose(now, d, j, to, why);
            }
        }
        d
    }

    fn chose(&mut self, now: Duration, mut d: Decision, j: &Job, to: u32, why: Why) -> Decision {
        self.last_move = Some(now);
        self.reserve(now, to);
        d.mv = Some(Move {
            job: j.id.clone(),
            to,
            why,
        });
        d
    }

    /// Whether this overloaded node moves a job this round: with probability (room under the
    /// cluster's average load on the other nodes) / (nodes above it), 1 at most.
    fn my_turn(&mut self, here: &Here, others: &[Node]) -> bool {
        let all =
            || std::iter::once(&here.node).chain(others.iter().filter(|n| n.number != here.node.number));
        let tasks: u64 = all()
            .map(|n| n.runnable_milli + 1000 * self.reserved(n.number))
            .sum();
        let cores: u64 = all().map(|n| u64::from(n.cores.max(1))).sum();
        let per_core = tasks / cores.max(1);
        let (mut above, mut room) = (0u64, 0u64);
        for n in all() {
            let fair = per_core * u64::from(n.cores.max(1));
            let busy = n.runnable_milli + 1000 * self.reserved(n.number);
            if busy > fair {
                above += 1;
            } else if n.number != here.node.number && n.accepts_guests {
                room += fair.saturating_sub(busy);
            }
        }
        let above = above.max(1);
        if room >= above * 1000 {
            return true;
        }
        self.next_random() % (above * 1000) < room.max(1)
    }

    fn drain_target(&mut self, j: &Job, others: &[Node]) -> Option<u32> {
        if let Some(home) = others.iter().find(|n| n.number == j.home) {
            if home.accepts_guests || self.fits(home, j.mem_kib) {
                return Some(home.number);
            }
        }
        let candidates: Vec<(u32, u64)> = others
            .iter()
            .filter(|n| n.accepts_guests && self.fits(n, j.mem_kib) && !self.backed_off(&j.id, n.number))
            .map(|n| (n.number, self.share_there(n)))
            .collect();
        self.draw(candidates)
            .or_else(|| others.iter().any(|n| n.number == j.home).then_some(j.home))
    }

    fn memory_target(&mut self, j: &Job, others: &[Node]) -> Option<u32> {
        let usable = |b: &Self, n: &Node| {
            (n.accepts_guests || n.number == j.home) && b.fits(n, j.mem_kib) && !b.backed_off(&j.id, n.number)
        };
        if let Some(home) = others.iter().find(|n| n.number == j.home) {
            if usable(self, home) {
                return Some(home.number);
            }
        }
        let candidates: Vec<(u32, u64)> = others
            .iter()
            .filter(|n| usable(self, n))
            .map(|n| (n.number, self.share_there(n)))
            .collect();
        self.draw(candidates)
    }
}

/// The CPU a job can use here, in thousandths of a core: a whole core, or its slice of them.
fn mine_cores(mine_speed_units: u64, here: &Here) -> u64 {
    mine_speed_units * 1000 / u64::from(here.node.speed.max(1))
}

#[cfg(test)]
mod tests;
