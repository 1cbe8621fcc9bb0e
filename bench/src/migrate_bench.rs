//! Migration time against the link: two lab nodes (direct kernel boot, TCG); for each size, a
//! `clump-work mem` job of that many MiB (changing 256 pages a second) is moved node 1 -> node 2
//! and back with `clump migrate`, once without pre-copy and once with it. For each move: the
//! time it took (as `clump migrate` reports it: from the request to the target's confirmation)
//! and the time the job was frozen (the source's `frozen_ms`: from the final dump to the
//! target's "it runs"), beside the time the same bytes take over the same bridge as plain TCP
//! (busybox wget from busybox httpd, measured in the same run).
//! Needs root (the lab's namespace) and `out/pxe` with clump-work in it.
//!
//! `cargo run --release -p clump-bench --bin migrate-bench -- --sizes 16,64,256,1024`

#[path = "lab_nodes.rs"]
mod lab_nodes;

use anyhow::{bail, Context, Result};
use clap::Parser;
use clump_lab::Node;
use regex::Regex;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Job sizes in MiB.
    #[arg(long, value_delimiter = ',', default_value = "16,64,256,1024")]
    sizes: Vec<u64>,
    /// Guest RAM in MiB: the job, its images on the source's tmpfs and on the target's.
    #[arg(long, default_value_t = 3584)]
    mem: u32,
}

const LONG: Duration = Duration::from_secs(600);

fn job_id(out: &str) -> Result<String> {
    clump_lab::job_id(out).with_context(|| format!("no job id in {out}"))
}

/// Seconds from busybox `time`'s `real` line.
fn real_secs(out: &str) -> Result<f64> {
    let re = Regex::new(r"real\s+(\d+)m\s*([\d.]+)s")?;
    let c = re.captures(out).with_context(|| format!("no time in {out:?}"))?;
    Ok(c[1].parse::<f64>()? * 60.0 + c[2].parse::<f64>()?)
}

fn moved_ms(out: &str) -> Result<u64> {
    let re = Regex::new(r"moved from node \S+ to node \d+ in (\d+) ms")?;
    let c = re.captures(out).with_context(|| format!("no move in {out}"))?;
    Ok(c[1].parse()?)
}

/// `frozen_ms` of job `id`'s last move out of `node`, from its clumpd's log.
fn frozen_ms(node: &mut Node, id: &str) -> Result<u64> {
    let re = Regex::new(r"frozen_ms=(\d+)")?;
    let name = node.name().to_owned();
    let lines = node.log_lines()?;
    let line = lines
        .iter()
        .rev()
        .find(|l| l.contains(id) && l.contains("job moved"))
        .with_context(|| format!("no move of {id} in {name}'s log"))?;
    let c = re
        .captures(line)
        .with_context(|| format!("no frozen_ms in {line}"))?;
    Ok(c[1].parse()?)
}

fn shell(node: &mut Node, cmd: &str) -> Result<String> {
    lab_nodes::shell(node, cmd, LONG)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (mut lab, addrs) = lab_nodes::boot("move", 2, args.mem, "")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !shell(lab.node(0)?, "clump nodes")?.contains(&addrs[1]) {
        if Instant::now() > deadline {
            bail!("node 1 never listed node 2");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    // The bridge as plain TCP, one way and back, with the largest size (at most 256 MiB: it
    // sits in the tmpfs of the node serving it).
    let blob = args.sizes.iter().copied().max().unwrap_or(64).min(256);
    let mut link = Vec::new();
    for (from, to) in [(0usize, 1usize), (1, 0)] {
        shell(
            lab.node(from)?,
            &format!("dd if=/dev/urandom of=/tmp/blob bs=1M count={blob} 2>/dev/null; httpd -p 8088 -h /tmp"),
        )?;
        let out = shell(
            lab.node(to)?,
            &format!("time wget -q -O /dev/null http://{}:8088/blob 2>&1", addrs[from]),
        )?;
        let secs = real_secs(&out)?;
        link.push(blob as f64 / secs);
        shell(lab.node(from)?, "killall httpd; rm -f /tmp/blob")?;
    }
    let mib_s = link.iter().sum::<f64>() / link.len() as f64;
    eprintln!("link: {link:?} MiB/s (plain TCP, {blob} MiB)");
    println!("| size | pre-copy | to node 2: total / frozen | back: total / frozen | bytes / link (limit) | total / limit |");
    println!("|---:|---|---:|---:|---:|---:|");
    for &mib in &args.sizes {
        for precopy in [false, true] {
            let started = shell(
                lab.node(0)?,
                &format!("cd / && clump run --detach --home -- clump-work mem --mib {mib} --seconds 3600"),
            )?;
            let id = job_id(&started)?;
            let deadline = Instant::now() + LONG;
            while !shell(lab.node(0)?, &format!("clump output {id} | head -n 1"))?.contains("ready") {
                if Instant::now() > deadline {
                    bail!("job {id} never filled its {mib} MiB");
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            let flag = if precopy { "" } else { " --no-precopy" };
            let mut moves = Vec::new();
            for (to, source) in [(1usize, 0usize), (0, 1)] {
                let out = shell(lab.node(0)?, &format!("clump migrate{flag} {id} {}", addrs[to]))?;
                let total = moved_ms(&out)?;
                let frozen = frozen_ms(lab.node(source)?, &id)?;
                moves.push((total, frozen));
                std::thread::sleep(Duration::from_secs(2));
            }
            let out = shell(
                lab.node(0)?,
                &format!("clump kill -s KILL {id}; clump wait {id}; true"),
            )?;
            if !out.contains("KILL") && !out.contains("137") {
                eprintln!("job {id} ended: {out}");
            }
            // The parts of each move, as the nodes' clumpd logged them.
            for n in 0..2 {
                let node = lab.node(n)?;
                let name = node.name().to_owned();
                for line in node.log_lines()?.iter().filter(|l| {
                    l.contains(&id)
                        && (l.contains("dumped")
                            || l.contains("pre-copy round")
                            || l.contains("job moved")
                            || l.contains("restored"))
                }) {
                    eprintln!("{name}: {line}");
                }
            }
            let limit_ms = mib as f64 / mib_s * 1000.0;
            let ratio = (moves[0].0 + moves[1].0) as f64 / 2.0 / limit_ms;
            println!(
                "| {mib} MiB | {} | {} / {} ms | {} / {} ms | {limit_ms:.0} ms | {ratio:.2}x |",
                if precopy { "yes" } else { "no" },
                moves[0].0,
                moves[0].1,
                moves[1].0,
                moves[1].1
            );
        }
    }
    println!("\nlink: {mib_s:.1} MiB/s plain TCP over the lab bridge (mean of both ways, {blob} MiB)");
    lab.shutdown()?;
    Ok(())
}
