//! Link up to DHCP lease inside the QEMU lab: N nodes boot on the lab's bridge and get leases from
//! its dnsmasq; for each, the time from PID 1's `stage=nics` (links up, carrier seen) to
//! clump-netd's `lease` line, both on CLOCK_BOOTTIME. Then busybox `udhcpc` runs on the same node
//! and NIC as the anchor (with a new client id, so dnsmasq treats it as a new client), timed by
//! busybox `time`. Needs root (the lab's namespace).
//!
//! `cargo run --release -p clump-bench --bin lab-dhcp -- --nodes 3 --rounds 2`

use anyhow::{Context, Result};
use clap::Parser;
use clump_lab::{Artefacts, Boot, Lab, LabConfig, NicModel, NodeSpec};
use regex::Regex;
use std::time::Duration;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    #[arg(long, default_value_t = 2)]
    rounds: usize,
}

fn median(mut v: Vec<u64>) -> (u64, u64, u64) {
    v.sort_unstable();
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() -> Result<()> {
    let args = Args::parse();
    let nics = Regex::new(r"clump: stage=nics t=(\d+)")?;
    let lease = Regex::new(r"clump-netd: \[\s*(\d+)\.(\d{3})\].*INFO lease ")?;
    let real = Regex::new(r"real\s+(\d+)m\s*([\d.]+)s")?;
    let (mut netd, mut udhcpc) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let mut lab = Lab::start(LabConfig::default()).context("lab (needs root)")?;
        for n in 0..args.nodes {
            let spec =
                NodeSpec::from_artefacts(format!("dhcp{round}-{n}"), Boot::Kernel, &Artefacts::from_env())?
                    .nic(NicModel::VirtioNetPci);
            lab.start_node(spec)?;
        }
        for n in 0..args.nodes {
            let node = lab.node(n)?;
            node.wait_for_line("clump: ready .*via=dhcp", Duration::from_secs(180))?;
            let log = node.log_lines()?.join("\n");
            let up: u64 = nics.captures(&log).context("no stage=nics line")?[1].parse()?;
            let c = lease.captures(&log).context("no clump-netd lease line")?;
            let leased = c[1].parse::<u64>()? * 1000 + c[2].parse::<u64>()?;
            netd.push(leased.saturating_sub(up));
            let (_, out) = node.shell(
                "time udhcpc -f -q -n -i eth0 -s /bin/true 2>&1",
                Duration::from_secs(60),
            )?;
            let c = real
                .captures(&out)
                .with_context(|| format!("no time in {out:?}"))?;
            let secs: f64 = c[1].parse::<f64>()? * 60.0 + c[2].parse::<f64>()?;
            udhcpc.push((secs * 1000.0) as u64);
            eprintln!(
                "round {round} node {n}: netd {} ms, udhcpc {} ms",
                netd[netd.len() - 1],
                udhcpc[udhcpc.len() - 1]
            );
        }
        lab.shutdown()?;
    }
    let (m, lo, hi) = median(netd);
    println!("| clump-netd: links up (PID 1 stage=nics) to lease line | {m} | {lo} | {hi} |");
    let (m, lo, hi) = median(udhcpc);
    println!("| busybox udhcpc -q, new client id, same node and NIC afterwards | {m} | {lo} | {hi} |");
    Ok(())
}
