//! Crash recovery against the checkpoint interval: for each interval, a lab of three nodes
//! (direct kernel boot, TCG, `clump.checkpoint=I`, balancer off); a job of node 1 that prints a
//! line a second runs on node 2; half an interval after home stored a checkpoint of it, node 2
//! loses power. Measured: the checkpoints' cost on node 2 (the job's freeze per checkpoint, the
//! bytes and time each took), the time from the power cut to the job running again, how old the
//! checkpoint was at the cut (the work the job does again), and that the output came out whole,
//! each line once. Needs root (the lab's namespace) and `out/pxe`.
//!
//! `cargo run --release -p clump-bench --bin recovery-bench -- --intervals 10,30`

#[path = "lab_nodes.rs"]
mod lab_nodes;

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use clump_lab::Node;
use regex::Regex;
use serde_json::Value;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Parser)]
struct Args {
    /// Checkpoint intervals in seconds.
    #[arg(long, value_delimiter = ',', default_value = "10,30")]
    intervals: Vec<u64>,
}

fn shell(node: &mut Node, cmd: &str) -> Result<String> {
    lab_nodes::shell(node, cmd, Duration::from_secs(120))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Job `id` as node 1 (its home) lists it.
fn job(node: &mut Node, id: &str) -> Result<Value> {
    let text: String = shell(node, "clump ps --json")?
        .lines()
        .filter(|l| !l.trim_start().starts_with("clumpd: ["))
        .collect::<Vec<_>>()
        .join("\n");
    let start = text.find('[').context("no JSON from clump ps")?;
    let end = text.rfind(']').context("no JSON from clump ps")?;
    let jobs: Vec<Value> = serde_json::from_str(&text[start..=end])?;
    jobs.into_iter()
        .find(|j| j["id"] == id)
        .with_context(|| format!("job {id} is not listed"))
}

/// Mean of the numbers after `key=` on the log lines of `node` that contain `what` and `id`.
fn mean_field(node: &mut Node, id: &str, what: &str, key: &str) -> Result<(usize, f64)> {
    // The whole key: `ms=` must not match the end of `checkpoint_age_ms=`.
    let re = Regex::new(&format!(r"\b{key}=(\d+)"))?;
    let values: Vec<f64> = node
        .log_lines()?
        .iter()
        .filter(|l| l.contains(what) && l.contains(id))
        .filter_map(|l| re.captures(l).and_then(|c| c[1].parse().ok()))
        .collect();
    let n = values.len();
    Ok((
        n,
        if n == 0 {
            0.0
        } else {
            values.iter().sum::<f64>() / n as f64
        },
    ))
}

struct Row {
    interval: u64,
    checkpoints: usize,
    freeze_ms: f64,
    ckpt_ms: f64,
    ckpt_bytes: f64,
    age_s: f64,
    recovery_s: f64,
    restore_ms: f64,
}

fn one(interval: u64) -> Result<Row> {
    let (mut lab, addrs) = lab_nodes::boot(
        "rcv",
        3,
        1024,
        &format!("clump.balance=off clump.checkpoint={interval}"),
    )?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while shell(lab.node(0)?, "clump nodes")?.matches(" alive").count() < 2 {
        ensure!(
            Instant::now() < deadline,
            "node 1 never listed the other two alive"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let lines = interval * 4 + 60;
    let out = shell(
        lab.node(0)?,
        &format!(
            "cd / && clump run --detach --on {} -- sh -c 'i=0; while [ $i -lt {lines} ]; do echo line $i; i=$((i+1)); sleep 1; done'",
            addrs[1]
        ),
    )?;
    let id = clump_lab::job_id(&out).with_context(|| format!("no job id in {out}"))?;
    // The second checkpoint, so the first (a full one) and an incremental one are measured.
    let mut seen = Vec::new();
    let t = Instant::now();
    let taken = loop {
        let j = job(lab.node(0)?, &id)?;
        if let Some(ms) = j["checkpoint_ms"].as_u64() {
            if !seen.contains(&ms) {
                seen.push(ms);
            }
            if seen.len() >= 2 {
                break ms;
            }
        }
        ensure!(
            t.elapsed() < Duration::from_secs(interval * 3 + 120),
            "no second checkpoint"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let (_, freeze_ms) = mean_field(lab.node(1)?, &id, "job frozen and dumped", "dump_ms")?;
    let (checkpoints, ckpt_ms) = mean_field(lab.node(1)?, &id, "checkpoint stored at home", "ms")?;
    let (_, ckpt_bytes) = mean_field(lab.node(1)?, &id, "checkpoint stored at home", "bytes")?;
    let cut_at = taken + interval * 500;
    std::thread::sleep(Duration::from_millis(cut_at.saturating_sub(unix_ms())));
    let cut = unix_ms();
    lab.node(1)?.kill()?;
    let killed = Instant::now();
    loop {
        let j = job(lab.node(0)?, &id)?;
        if j["state"] != "running" {
            bail!("the job did not survive: {j}");
        }
        if j["recovered"] == 1 && j["node"] != job_node_number(&addrs[1]) {
            break;
        }
        ensure!(
            killed.elapsed() < Duration::from_secs(180),
            "the job never ran again"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let recovery_s = killed.elapsed().as_secs_f64();
    let (_, restore_ms) = mean_field(lab.node(0)?, &id, "restarted from its last checkpoint", "ms")?;
    // The job prints a line a second to its end: wait as long as it has lines, and more.
    let waited = lab_nodes::shell(
        lab.node(0)?,
        &format!("clump wait {id}; clump output {id}"),
        Duration::from_secs(lines + 120),
    )?;
    let numbers: Vec<u64> = waited
        .lines()
        .filter_map(|l| l.trim().strip_prefix("line "))
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    ensure!(
        numbers == (0..lines).collect::<Vec<_>>(),
        "the output is not every line once:\n{waited}"
    );
    drop(lab);
    Ok(Row {
        interval,
        checkpoints,
        freeze_ms,
        ckpt_ms,
        ckpt_bytes,
        age_s: (cut.saturating_sub(taken)) as f64 / 1000.0,
        recovery_s,
        restore_ms,
    })
}

/// The node number of an address: its host part in the lab's /24.
fn job_node_number(addr: &str) -> u64 {
    addr.rsplit('.').next().and_then(|o| o.parse().ok()).unwrap_or(0)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut rows = Vec::new();
    for &interval in &args.intervals {
        let row = one(interval)?;
        eprintln!("interval {interval} s: recovered in {:.1} s", row.recovery_s);
        rows.push(row);
    }
    println!("| interval | checkpoints before the cut | job frozen per checkpoint | checkpoint (dump + send + store) | bytes per checkpoint | checkpoint age at the cut (work done again) | power cut -> running again | restart at home's side |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} s | {} | {:.0} ms | {:.0} ms | {:.0} KiB | {:.1} s | {:.1} s | {:.0} ms |",
            r.interval,
            r.checkpoints,
            r.freeze_ms,
            r.ckpt_ms,
            r.ckpt_bytes / 1024.0,
            r.age_s,
            r.recovery_s,
            r.restore_ms
        );
    }
    Ok(())
}
