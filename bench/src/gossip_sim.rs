//! The real membership code (`clump-cluster`) over a simulated network: how fast a join and a
//! death reach every node, how many false deaths, and how many bytes a node sends, for clusters of
//! 10 to 10,000 nodes. Prints a Markdown table for BENCHMARKS.md.

use anyhow::Result;
use clap::Parser;
use clump_cluster::sim::{Network, Sim};
use clump_cluster::{Cluster, Config, Event, Member};
use clump_seal::ClusterKey;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
struct Args {
    /// Cluster sizes to simulate.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    nodes: Vec<usize>,
    /// Datagram loss, 0..1.
    #[arg(long, default_value_t = 0.05)]
    loss: f64,
    /// Steady-state seconds over which traffic and false deaths are counted.
    #[arg(long, default_value_t = 30)]
    steady: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Records each node holds (the real default is 1024); lower only to fit 10,000 nodes in
    /// one process: it does not change who knows whom, nor the traffic (a datagram of records is
    /// full either way).
    #[arg(long)]
    record_cap: Option<usize>,
    /// Replay windows each node keeps (the real default is 16,384); lower only to fit 10,000
    /// nodes in one process: an evicted sender's next datagram is accepted as new.
    #[arg(long)]
    replay_cap: Option<usize>,
    /// Seconds to wait for a death to be known everywhere.
    #[arg(long, default_value_t = 120)]
    death_limit: u64,
}

struct Outcome {
    n: usize,
    join: Spread,
    death: Spread,
    false_deaths: usize,
    bytes_per_node_s: f64,
    datagrams_per_node_s: f64,
    wall: Duration,
}

/// How long until a change was known everywhere, or how many nodes still did not know it when
/// the wait ended.
#[derive(Clone, Copy, Debug)]
enum Spread {
    Everywhere(Duration),
    NotYet { left: usize, after: Duration },
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Spread::Everywhere(d) => write!(f, "{:.2} s", d.as_secs_f64()),
            Spread::NotYet { left, after } => {
                write!(f, "{left} nodes not within {} s", after.as_secs())
            }
        }
    }
}

/// `SIM_TRACE` set: progress on stderr.
fn tracing_on() -> bool {
    std::env::var_os("SIM_TRACE").is_some()
}

/// Runs in 50 ms steps until `settled` holds on every running node but `except`, or `limit`
/// passes.
fn until_all(sim: &mut Sim, except: &[usize], limit: Duration, settled: impl Fn(&Cluster) -> bool) -> Spread {
    let start = sim.now;
    let trace = tracing_on();
    let mut left = usize::MAX;
    while sim.now - start < limit {
        sim.run_for(Duration::from_millis(50));
        let now_left = sim
            .running()
            .filter(|(i, node)| !except.contains(i) && !settled(&node.cluster))
            .count();
        if trace && now_left != left {
            eprintln!("t+{:?}: {now_left} nodes left", sim.now - start);
        }
        left = now_left;
        if left == 0 {
            return Spread::Everywhere(sim.now - start);
        }
    }
    Spread::NotYet { left, after: limit }
}

fn run(n: usize, args: &Args, config: Config) -> Outcome {
    let (loss, steady, seed) = (args.loss, args.steady, args.seed);
    let wall = Instant::now();
    let key = ClusterKey::from_hex(&"5a".repeat(32)).unwrap_or_else(|_| ClusterKey::generate());
    let net = Network {
        loss,
        ..Network::default()
    };
    let mut sim = Sim::new(key, config, net, seed);
    for i in 0..n {
        sim.start(i, None);
    }
    sim.converge_instantly();
    sim.run_for(Duration::from_secs(5));

    // Steady state: traffic and false deaths.
    let bytes0: u64 = sim.bytes_sent.iter().sum();
    let dgrams0: u64 = sim.datagrams_sent.iter().sum();
    let events0: Vec<usize> = sim.running().map(|(_, node)| node.events.len()).collect();
    for _ in 0..steady {
        sim.run_for(Duration::from_secs(1));
        if tracing_on() {
            let events: usize = sim.running().map(|(_, n)| n.events.len()).sum();
            let fp = sim.running().next().map(|(_, n)| n.cluster.footprint());
            eprintln!(
                "t={:?} events={events} node0={fp:?} delivered={} lost={}",
                sim.now, sim.delivered, sim.lost
            );
        }
    }
    let bytes = sim.bytes_sent.iter().sum::<u64>() - bytes0;
    let dgrams = sim.datagrams_sent.iter().sum::<u64>() - dgrams0;
    let false_deaths = sim
        .running()
        .zip(events0)
        .map(|((_, node), from)| {
            node.events[from..]
                .iter()
                .filter(|(_, e)| matches!(e, Event::MemberDown { .. }))
                .count()
        })
        .sum();

    // A join: node n boots, its sweep finds one member.
    sim.start(n, None);
    sim.found_hosts(n, &[(seed as usize * 7919) % n]);
    let newcomer: Option<Member> = sim.member(n);
    let join = until_all(&mut sim, &[n], Duration::from_secs(60), |c| {
        newcomer.is_some_and(|m| c.counts_alive(&m))
    });

    // A death: a node loses power.
    let victim = (seed as usize * 104_729) % n;
    let dead = sim.member(victim);
    sim.kill(victim);
    // The newcomer is excluded: it may still be learning the membership (a node it never saw alive
    // has nothing to tell it), and SWIM leaves such a node to its own probe rounds.
    let death = until_all(&mut sim, &[n], Duration::from_secs(args.death_limit), |c| {
        dead.is_some_and(|m| !c.counts_alive(&m))
    });

    let timed_out: u64 = sim
        .running()
        .map(|(_, node)| node.cluster.counters().suspicions_timed_out)
        .sum();
    eprintln!("nodes that timed the suspicion out themselves: {timed_out}");
    if let (Spread::NotYet { .. }, Some(dead)) = (death, dead) {
        explain_laggards(&sim, n, &dead);
    }
    if tracing_on() {
        if let Some((i, node)) = sim.running().next() {
            eprintln!(
                "node {i}: {:?}, sim events {}",
                node.cluster.footprint(),
                node.events.len()
            );
        }
    }
    let secs = steady as f64;
    Outcome {
        n,
        join,
        death,
        false_deaths,
        bytes_per_node_s: bytes as f64 / n as f64 / secs,
        datagrams_per_node_s: dgrams as f64 / n as f64 / secs,
        wall: wall.elapsed(),
    }
}

/// Prints what the nodes that still count `dead` alive hold about it (SWIM state and
/// incarnation) and how many updates each still has to gossip: the difference between a Down
/// that never reached them and one they were told but did not keep.
fn explain_laggards(sim: &Sim, newcomer: usize, dead: &Member) {
    let mut views: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (i, node) in sim.running() {
        if i == newcomer || !node.cluster.counts_alive(dead) {
            continue;
        }
        let view = format!("{:?}", node.cluster.swim_view(dead));
        let entry = views.entry(view).or_default();
        entry.0 += 1;
        entry.1 += node.cluster.footprint().foca_updates;
    }
    for (view, (nodes, backlog)) in views {
        eprintln!(
            "laggards holding {view}: {nodes} nodes, {:.1} updates queued each",
            backlog as f64 / nodes as f64
        );
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    // Most of a large simulation's memory (10,000 membership lists) is touched seldom, and a
    // host that reclaims cold pages stalls the run on them (seen: a fifth of a core). Locking
    // only what is faulted in keeps the untouched tails unmapped. Wall time only: the figures
    // are in virtual time.
    use rustix::mm::{mlockall, MlockAllFlags};
    if let Err(err) = mlockall(MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT) {
        eprintln!("memory not locked ({err}): the run may stall under the host's reclaim");
    }
    println!(
        "loss {:.0} %, latency 0.2-0.5 ms one way, steady state {} s, seed {}",
        args.loss * 100.0,
        args.steady,
        args.seed
    );
    println!();
    println!("| nodes | join known everywhere | death known everywhere | false deaths | bytes/node/s | datagrams/node/s | wall time |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &args.nodes {
        let mut config = Config::default();
        config.record_cap = args.record_cap.unwrap_or(config.record_cap);
        config.replay_instances = args.replay_cap.unwrap_or(config.replay_instances);
        let o = run(n, &args, config);
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.1} | {:.0} s |",
            o.n,
            o.join,
            o.death,
            o.false_deaths,
            o.bytes_per_node_s,
            o.datagrams_per_node_s,
            o.wall.as_secs_f64()
        );
    }
    Ok(())
}
