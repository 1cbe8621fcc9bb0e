//! Time from kernel start to `clump: ready`, split by PID 1's stages, over several boots under TCG.
//! Prints a Markdown table of medians (and min/max) for BENCHMARKS.md.
//!
//! `cargo run --release -p clump-bench --bin boot-stages -- --runs 5 --boot kernel`

use anyhow::{bail, Context, Result};
use clap::Parser;
use clump_lab::{Artefacts, Boot, Medium, NicModel, Node, NodeSpec};
use regex::Regex;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Number of boots.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Boot medium: kernel (direct, out/pxe), iso-bios, iso-uefi or usb.
    #[arg(long, default_value = "kernel")]
    boot: String,
    /// Extra kernel command line (kernel medium only). By default `ready` does not wait for a
    /// DHCP lease: the lab's isolated NIC has no server, and this measures the boot itself.
    #[arg(long, default_value = "clump.addr_wait=0")]
    cmdline: String,
}

/// The stages PID 1 logs, in order (ARCHITECTURE.md).
const STAGES: [&str; 8] = [
    "start", "mounts", "console", "cmdline", "coldplug", "nics", "services", "ready",
];

fn main() -> Result<()> {
    let args = Args::parse();
    let boot = match args.boot.as_str() {
        "kernel" => Boot::Kernel,
        "iso-bios" => Boot::IsoBios,
        "iso-uefi" => Boot::IsoUefi,
        "usb" => Boot::Usb,
        other => bail!("unknown boot medium {other:?}"),
    };
    let stage_re = Regex::new(r"clump: stage=(\w+) t=(\d+)")?;
    let mut samples: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut wall = Vec::new();
    for run in 0..args.runs {
        let mut spec = NodeSpec::from_artefacts(format!("bench{run}"), boot, &Artefacts::from_env())?
            .nic(NicModel::VirtioNetPci);
        if let Medium::Kernel { append, .. } = &mut spec.medium {
            append.push(' ');
            append.push_str(&args.cmdline);
        }
        let started = Instant::now();
        let mut node = Node::start(spec)?;
        node.wait_for_line("clump: ready", Duration::from_secs(300))
            .context("node did not become ready")?;
        wall.push(started.elapsed().as_millis() as u64);
        node.wait_for_line("clump: stage=ready", Duration::from_secs(30))?;
        let mut times = BTreeMap::new();
        for line in node.log_lines()? {
            if let Some(c) = stage_re.captures(line) {
                times.insert(c[1].to_string(), c[2].parse::<u64>()?);
            }
        }
        for (i, stage) in STAGES.iter().enumerate() {
            let Some(&t) = times.get(*stage) else {
                bail!("run {run}: stage {stage} missing from the log")
            };
            let since_prev = if i == 0 {
                t
            } else {
                t.saturating_sub(times[STAGES[i - 1]])
            };
            samples.entry(stage).or_default().push(since_prev);
        }
        samples.entry("total").or_default().push(times["ready"]);
        node.power_off(Duration::from_secs(60))?;
        eprintln!(
            "run {}: ready at {} ms after kernel start",
            run + 1,
            times["ready"]
        );
    }
    println!(
        "Boot medium `{}`, {} boots, TCG, 1 vCPU, virtio-net (ms):\n",
        args.boot, args.runs
    );
    println!("| stage | what it covers | median | min | max |\n|---|---|---|---|---|");
    let what = |s: &str| match s {
        "start" => "kernel start to PID 1's first line",
        "mounts" => "mount table, log sinks",
        "console" => "hostname",
        "cmdline" => "kernel command line",
        "coldplug" => "module index, drivers for every device",
        "nics" => "link up, wait for carrier",
        "services" => "start shells",
        "ready" => "ready line",
        "total" => "kernel start to `clump: stage=ready`",
        _ => "",
    };
    for stage in STAGES.iter().copied().chain(["total"]) {
        let mut v = samples.remove(stage).unwrap_or_default();
        v.sort_unstable();
        let (Some(min), Some(max)) = (v.first(), v.last()) else {
            continue;
        };
        println!(
            "| {stage} | {} | {} | {min} | {max} |",
            what(stage),
            v[v.len() / 2]
        );
    }
    wall.sort_unstable();
    println!(
        "\nWall clock from QEMU start to `clump: ready` (firmware and loader included): median {} ms.",
        wall[wall.len() / 2]
    );
    Ok(())
}
