//! `clump-lab demo`: boot one node from the ISO in a lab (private bridge with dnsmasq, so it gets a
//! DHCP lease), keep its serial log and a screenshot, power it off.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clump_lab::{Artefacts, Boot, Lab, LabConfig, NicModel, Node, NodeSpec};

/// Bounds under TCG (a node boots from the ISO in about 20 s on two cores).
const READY_TIMEOUT: Duration = Duration::from_secs(240);
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(90);
/// Time for the screen to be drawn after `clump: ready`.
const SCREEN_SETTLE: Duration = Duration::from_secs(2);

pub fn run(out: Option<PathBuf>) -> Result<()> {
    let artefacts = Artefacts::from_env();
    let out = out.unwrap_or_else(|| artefacts.out_dir().join("demo"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let spec = NodeSpec::from_artefacts("node1", Boot::IsoBios, &artefacts)?.nic(NicModel::VirtioNetPci);
    let mut lab = Lab::start(LabConfig::default())?;
    let index = lab.start_node(spec)?;
    let node = lab.node(index)?;
    let result = demo(node, &out);
    // Keep the logs whatever happened: they are what tells why.
    let serial = out.join("serial.log");
    std::fs::copy(node.serial_log(), &serial)
        .with_context(|| format!("copying the serial log to {}", serial.display()))?;
    let dnsmasq = out.join("dnsmasq.log");
    std::fs::copy(&lab.layout().dnsmasq_log, &dnsmasq)
        .with_context(|| format!("copying dnsmasq's log to {}", dnsmasq.display()))?;
    result?;
    lab.shutdown()?;
    println!("serial log: {}", serial.display());
    println!("screen:     {}", out.join("screen.png").display());
    Ok(())
}

fn demo(node: &mut Node, out: &std::path::Path) -> Result<()> {
    // Not anchored: a shell prompt may precede PID 1's line on the serial console.
    let ready = node.wait_for_line(r"clump: ready\b", READY_TIMEOUT)?;
    anyhow::ensure!(
        ready.contains("via=dhcp"),
        "the node has no DHCP lease from the lab's dnsmasq: {ready}"
    );
    println!(
        "{ready}  ({:.1} s after QEMU started, TCG)",
        node.uptime().as_secs_f64()
    );
    std::thread::sleep(SCREEN_SETTLE);
    node.screendump(&out.join("screen.png"))?;
    node.power_off(POWEROFF_TIMEOUT)?;
    println!(
        "powered off cleanly via ACPI ({:.1} s after QEMU started)",
        node.uptime().as_secs_f64()
    );
    Ok(())
}
