//! `clump-lab demo`: boot a small cluster (three nodes from the ISO) in a lab (private bridge with
//! dnsmasq, so they get DHCP leases), wait until they know each other, print the node map as node 1
//! sees it, start a job on node 1 that prints a counter and move it, while it runs, to node 2 and
//! then node 3 (its output keeps arriving at node 1), keep every node's serial log and a
//! screenshot of its status screen, power them off.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clump_lab::{Artefacts, Boot, Lab, LabConfig, NicModel, Node, NodeSpec};

/// Nodes in the demo cluster.
const NODES: usize = 3;
/// Bounds under TCG (a node boots from the ISO in about 20 s on two cores; three at once, longer).
const READY_TIMEOUT: Duration = Duration::from_secs(300);
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(120);
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(90);
const SHELL_TIMEOUT: Duration = Duration::from_secs(60);
/// A move under TCG (dump, images over the bridge, restore) takes a few seconds.
const MOVE_TIMEOUT: Duration = Duration::from_secs(120);
/// Time for every screen to draw the last change after node 1 lists everyone.
const SCREEN_SETTLE: Duration = Duration::from_secs(3);

pub fn run(out: Option<PathBuf>) -> Result<()> {
    let artefacts = Artefacts::from_env();
    let out = out.unwrap_or_else(|| artefacts.out_dir().join("demo"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut lab = Lab::start(LabConfig::default())?;
    for i in 1..=NODES {
        let spec = NodeSpec::from_artefacts(format!("node{i}"), Boot::IsoBios, &artefacts)?
            .memory_mib(384)
            .nic(NicModel::VirtioNetPci);
        lab.start_node(spec)?;
    }
    let result = demo(&mut lab, &out);
    // Keep the logs whatever happened: they are what tells why.
    for node in lab.nodes() {
        let serial = out.join(format!("{}.serial.log", node.name()));
        std::fs::copy(node.serial_log(), &serial)
            .with_context(|| format!("copying the serial log to {}", serial.display()))?;
    }
    let dnsmasq = out.join("dnsmasq.log");
    std::fs::copy(&lab.layout().dnsmasq_log, &dnsmasq)
        .with_context(|| format!("copying dnsmasq's log to {}", dnsmasq.display()))?;
    result?;
    lab.shutdown()?;
    println!("serial logs: {}/node*.serial.log", out.display());
    println!(
        "screens:     {}/node*-screen.png (node1-screen.png also as screen.png)",
        out.display()
    );
    Ok(())
}

fn demo(lab: &mut Lab, out: &Path) -> Result<()> {
    let mut addrs = Vec::new();
    for i in 0..NODES {
        let node = lab.node(i)?;
        // Not anchored: a shell prompt may precede PID 1's line on the serial console.
        let ready = node.wait_for_line(r"clump: ready\b", READY_TIMEOUT)?;
        anyhow::ensure!(
            ready.contains("via=dhcp"),
            "{}: no DHCP lease from the lab's dnsmasq: {ready}",
            node.name()
        );
        println!(
            "{}: {ready}  ({:.1} s after QEMU started, TCG)",
            node.name(),
            node.uptime().as_secs_f64()
        );
        let addr = ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .and_then(|a| a.split('/').next())
            .map(str::to_owned)
            .with_context(|| format!("{}: no address in {ready}", node.name()))?;
        addrs.push(addr);
    }
    let table = wait_for_cluster(lab.node(0)?)?;
    println!("\nthe cluster as node1 sees it (`clump nodes`):\n{table}");
    let job = migrating_job(lab.node(0)?, &addrs)?;
    std::thread::sleep(SCREEN_SETTLE);
    for i in 0..NODES {
        let node = lab.node(i)?;
        let path = out.join(format!("{}-screen.png", node.name()));
        node.screendump(&path)?;
        if i == 0 {
            std::fs::copy(&path, out.join("screen.png")).context("copying screen.png")?;
        }
    }
    lab.node(0)?.shell(&format!("clump kill {job}"), SHELL_TIMEOUT)?;
    for i in 0..NODES {
        let node = lab.node(i)?;
        node.power_off(POWEROFF_TIMEOUT)?;
        println!("{}: powered off cleanly via ACPI", node.name());
    }
    Ok(())
}

/// Starts a job on `node` (node 1) that prints a counter with the name of the node it runs on,
/// moves it to the second and then the third node while it runs, and shows its output and
/// `clump ps` at home. Returns its id; it is still running, on node 3.
fn migrating_job(node: &mut Node, addrs: &[String]) -> Result<String> {
    let (_, started) = node.shell(
        r#"cd / && clump run --detach --home -- sh -c 'i=0; while [ $i -lt 1000 ]; do echo tick $i on $(sed -n "s/.*\"address\": \"\([0-9.]*\)\".*/\1/p" /run/clump/lease.json); i=$((i+1)); sleep 0.2; done'"#,
        SHELL_TIMEOUT,
    )?;
    let job = clump_lab::job_id(&started)
        .with_context(|| format!("`clump run --detach` printed no job id:\n{started}"))?;
    println!("\njob {job} started on node1: a counter that names the address of the node it runs on");
    std::thread::sleep(Duration::from_secs(2));
    for (name, addr) in ["node2", "node3"].iter().zip(&addrs[1..]) {
        let (code, said) = node.shell(&format!("clump migrate {job} {addr}"), MOVE_TIMEOUT)?;
        let line = said
            .lines()
            .find(|l| l.starts_with("job ") && l.contains(" moved "))
            .map(str::to_owned);
        match (code, line) {
            (0, Some(line)) => println!("`clump migrate {job} {addr}` ({name}): {line}"),
            _ => bail!("moving job {job} to {name} failed ({code}):\n{said}"),
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    let (_, ps) = node.shell("clump ps", SHELL_TIMEOUT)?;
    println!("\n`clump ps` on node1:\n{ps}");
    let (_, tail) = node.shell(&format!("clump output {job} | tail -n 4"), SHELL_TIMEOUT)?;
    println!("the job's latest output, read on node1:\n{tail}");
    Ok(job)
}

/// Reads `clump nodes` on `node` until it lists every node alive; returns the table.
fn wait_for_cluster(node: &mut Node) -> Result<String> {
    let deadline = Instant::now() + CLUSTER_TIMEOUT;
    loop {
        let (code, text) = node.shell("clump nodes", SHELL_TIMEOUT)?;
        let alive = text
            .lines()
            // Node rows start with the node's number; the summary line says "alive" too.
            .filter(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|w| w.parse::<u32>().is_ok())
            })
            .filter(|l| l.split_whitespace().any(|w| w == "this" || w == "alive"))
            .count();
        if code == 0 && alive >= NODES {
            return Ok(text);
        }
        if Instant::now() >= deadline {
            bail!(
                "{}: the cluster did not form within {CLUSTER_TIMEOUT:?}:\n{text}",
                node.name()
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
