//! Makespan of a batch under the balancer (issue 7): three lab nodes (direct kernel boot, TCG),
//! node 1 made slow for real by a host CPU quota on its QEMU (cgroup v1 `cpu` or v2 `cpu.max`);
//! a batch of `--jobs` CPU-bound jobs of `--units` units each (`clump-work cpu`) started on node 1,
//! in one run:
//!
//! - **capacity**: one job on every node at once, the units each node does per second with all
//!   three busy (the host has fewer cores than guests: alone a node would be faster); the nodes'
//!   speed figures are set from these (`clump node set-speed`), as the boot benchmark would on
//!   real machines; **ideal** = total work / total capacity;
//! - **all on node 1**: balancer off, every job `--home`;
//! - **round robin**: balancer off, job i `--on` node (i mod 3) + 1, no migration after;
//! - **balancer**: balancer on, every job a plain `clump run` (placement and moves its own).
//!
//! For each: the makespan (first start to last end, from the jobs' own times), migrations, and
//! the balancer's CPU (clumpd's CPU time on each node during the run).
//! Needs root (the lab's namespace, the host cgroup) and `out/pxe` with clump-work in it.
//!
//! `cargo run --release -p clump-bench --bin balance-bench -- --jobs 12 --units 12`

#[path = "lab_nodes.rs"]
mod lab_nodes;

use anyhow::{bail, Context, Result};
use clap::Parser;
use clump_lab::{Lab, Node};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 12)]
    jobs: usize,
    /// Units of `clump-work cpu` per job.
    #[arg(long, default_value_t = 12)]
    units: u64,
    /// The slow node's QEMU gets this share of one host core, in percent.
    #[arg(long, default_value_t = 30)]
    slow_percent: u32,
}

const LONG: Duration = Duration::from_secs(3600);

/// A host cgroup holding the slow node's QEMU to `percent` of a core; removed on drop.
struct Quota(PathBuf);

impl Quota {
    fn new(pid: u32, percent: u32) -> Result<Quota> {
        let v2 = PathBuf::from("/sys/fs/cgroup/cgroup.controllers");
        let (dir, write): (PathBuf, Vec<(&str, String)>) = if v2.exists() {
            let dir = PathBuf::from("/sys/fs/cgroup/clump-bench-slow");
            (dir, vec![("cpu.max", format!("{} 100000", percent * 1000))])
        } else {
            let dir = PathBuf::from("/sys/fs/cgroup/cpu/clump-bench-slow");
            (
                dir,
                vec![
                    ("cpu.cfs_period_us", "100000".into()),
                    ("cpu.cfs_quota_us", format!("{}", percent * 1000)),
                ],
            )
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for (file, value) in write {
            std::fs::write(dir.join(file), value).with_context(|| format!("writing {file}"))?;
        }
        std::fs::write(dir.join("cgroup.procs"), pid.to_string()).context("moving QEMU into the cgroup")?;
        Ok(Quota(dir))
    }
}

impl Drop for Quota {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

struct Done {
    makespan: f64,
    migrations: u64,
}

/// Starts one job per entry of `how` (the `clump run` options) on node 1, waits for all, and
/// returns the makespan measured inside the guest (`cut -d' ' -f1 /proc/uptime` around each job, in node 1's
/// clock: every job's start and end are written at home).
fn batch(lab: &mut Lab, how: &[String], units: u64) -> Result<Done> {
    shell(lab.node(0)?, "rm -rf /tmp/b && mkdir -p /tmp/b")?;
    let before = moves(lab)?;
    let n = how.len();
    for (i, opts) in how.iter().enumerate() {
        shell(
            lab.node(0)?,
            &format!(
                "(cd / && cut -d' ' -f1 /proc/uptime > /tmp/b/{i}.start; clump run {opts} -- clump-work cpu --units {units} < /dev/null > /tmp/b/{i}.out 2>&1; echo $? > /tmp/b/{i}.rc; cut -d' ' -f1 /proc/uptime > /tmp/b/{i}.end) &"
            ),
        )?;
    }
    let t = Instant::now();
    loop {
        let out = shell(lab.node(0)?, "ls /tmp/b | grep -c end; true")?;
        let done = out
            .lines()
            .filter_map(|l| l.trim().parse::<usize>().ok())
            .next_back()
            .unwrap_or(0);
        if done == n {
            break;
        }
        if t.elapsed() > LONG {
            bail!("the batch did not end in an hour ({done} of {n})");
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    let out = shell(
        lab.node(0)?,
        "cat /tmp/b/*.rc | sort | uniq -c; echo starts $(sort -n /tmp/b/*.start | head -n 1); echo ends $(sort -n /tmp/b/*.end | tail -n 1)",
    )?;
    let field = |name: &str| -> Result<f64> {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(name)?.trim().parse::<f64>().ok())
            .with_context(|| format!("no {name} in {out}"))
    };
    let rcs: u64 = out
        .lines()
        .filter(|l| l.trim().ends_with(" 0"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    if rcs != n as u64 {
        bail!("not every job exited 0:\n{out}");
    }
    Ok(Done {
        makespan: field("ends ")? - field("starts ")?,
        migrations: moves(lab)? - before,
    })
}

/// Moves of every job node 1 ever started (its table keeps the ended ones).
fn moves(lab: &mut Lab) -> Result<u64> {
    let ps = shell(lab.node(0)?, "clump ps --local --json")?;
    Ok(ps
        .match_indices("\"migrations\":")
        .filter_map(|(i, m)| {
            ps[i + m.len()..]
                .trim_start()
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum())
}

/// clumpd's CPU seconds on each node (utime + stime of its /proc/PID/stat).
fn clumpd_cpu(lab: &mut Lab) -> Result<Vec<f64>> {
    (0..3)
        .map(|i| {
            let out = shell(lab.node(i)?, "cat /proc/$(pidof clumpd)/stat")?;
            let line = out
                .lines()
                .find(|l| l.contains("(clumpd)"))
                .context("no clumpd stat")?;
            let after = line.rsplit_once(") ").context("odd stat")?.1;
            let f: Vec<&str> = after.split_whitespace().collect();
            let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
                + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            Ok(ticks / 100.0)
        })
        .collect()
}

fn set_balancer(lab: &mut Lab, on: bool) -> Result<()> {
    for i in 0..3 {
        shell(
            lab.node(i)?,
            &format!("clump node balance balancer {}", if on { "on" } else { "off" }),
        )?;
    }
    Ok(())
}

fn shell(node: &mut Node, cmd: &str) -> Result<String> {
    lab_nodes::shell(node, cmd, Duration::from_secs(600))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (mut lab, addrs) = lab_nodes::boot("bal", 3, 1024, "")?;
    let _quota = Quota::new(lab.node(0)?.pid(), args.slow_percent)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while shell(lab.node(0)?, "clump nodes")?.matches(" alive").count() < 2 {
        if Instant::now() > deadline {
            bail!("node 1 never listed the other two alive");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    set_balancer(&mut lab, false)?;

    // Capacity with every node busy: one job of `units` on each at once, each started and
    // timed on its own node (no move in it: a move's CRIU work would count against the node).
    let _ = batch(&mut lab, &["--home".to_string()], 1)?; // page cache and TCG warm
    for i in 0..3 {
        shell(
            lab.node(i)?,
            &format!(
                "rm -rf /tmp/cap; mkdir -p /tmp/cap; (cd / && a=$(cut -d' ' -f1 /proc/uptime); clump run --home -- clump-work cpu --units {u} < /dev/null >/dev/null 2>&1; b=$(cut -d' ' -f1 /proc/uptime); echo $a $b > /tmp/cap/t) &",
                u = args.units
            ),
        )?;
    }
    let mut rates = Vec::new();
    for i in 0..3 {
        let t = Instant::now();
        let line = loop {
            let out = shell(lab.node(i)?, "cat /tmp/cap/t 2>/dev/null; true")?;
            if let Some(l) = out.lines().find(|l| l.split_whitespace().count() == 2) {
                break l.to_owned();
            }
            if t.elapsed() > LONG {
                bail!("capacity run {i} did not end");
            }
            std::thread::sleep(Duration::from_secs(2));
        };
        let v: Vec<f64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        rates.push(args.units as f64 / (v[1] - v[0]));
    }
    let max = rates.iter().cloned().fold(0.0, f64::max);
    for (i, r) in rates.iter().enumerate() {
        let speed = ((r / max) * 1000.0).round().max(1.0) as u32;
        shell(lab.node(i)?, &format!("clump node set-speed {speed}"))?;
        eprintln!(
            "node {}: {r:.3} units/s with all busy, speed figure {speed}",
            i + 1
        );
    }
    let work = (args.jobs as u64 * args.units) as f64;
    let ideal = work / rates.iter().sum::<f64>();
    std::thread::sleep(Duration::from_secs(5));

    let home: Vec<String> = (0..args.jobs).map(|_| "--home".to_string()).collect();
    let rr: Vec<String> = (0..args.jobs).map(|i| format!("--on {}", addrs[i % 3])).collect();
    let plain: Vec<String> = (0..args.jobs).map(|_| String::new()).collect();
    let all_home = batch(&mut lab, &home, args.units)?;
    eprintln!("all on node 1: {:.1} s", all_home.makespan);
    let round_robin = batch(&mut lab, &rr, args.units)?;
    eprintln!("round robin: {:.1} s", round_robin.makespan);
    set_balancer(&mut lab, true)?;
    std::thread::sleep(Duration::from_secs(3));
    let cpu_before = clumpd_cpu(&mut lab)?;
    let balanced = batch(&mut lab, &plain, args.units)?;
    let cpu_after = clumpd_cpu(&mut lab)?;
    eprintln!("balancer: {:.1} s", balanced.makespan);
    let cpu: Vec<f64> = cpu_after.iter().zip(&cpu_before).map(|(a, b)| a - b).collect();

    println!(
        "{} jobs x {} units; node 1 held to {} % of a host core; capacity with all busy (units/s): {}",
        args.jobs,
        args.units,
        args.slow_percent,
        rates
            .iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!();
    println!("| placement | makespan | / ideal | migrations | migrations per job |");
    println!("|---|---:|---:|---:|---:|");
    println!("| ideal (work / capacity) | {ideal:.1} s | 1.00x | - | - |");
    for (name, d) in [
        ("all on node 1", &all_home),
        ("round robin, no migration", &round_robin),
        ("balancer", &balanced),
    ] {
        println!(
            "| {name} | {:.1} s | {:.2}x | {} | {:.2} |",
            d.makespan,
            d.makespan / ideal,
            d.migrations,
            d.migrations as f64 / args.jobs as f64
        );
    }
    println!();
    println!(
        "clumpd CPU during the balanced batch (every thread, gossip included): {} s of {:.0} s ({})",
        cpu.iter()
            .map(|c| format!("{c:.1}"))
            .collect::<Vec<_>>()
            .join(", "),
        balanced.makespan,
        cpu.iter()
            .map(|c| format!("{:.1} %", c / balanced.makespan * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    lab.shutdown()?;
    Ok(())
}
