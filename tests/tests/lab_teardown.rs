//! The lab leaves nothing behind: no namespace, tap, QEMU or dnsmasq after it is dropped, also when a
//! panic unwinds through it, and a namespace left by a lab whose process was killed is removed by
//! the next lab.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use clump_e2e::{add_node, start_lab};
use clump_lab::{link_names, netns_names, Boot, Lab, LabConfig, NicModel, NETNS_PREFIX};

/// What a running lab consists of, to look for after it is gone.
#[derive(Debug)]
struct Footprint {
    netns: String,
    interfaces: Vec<String>,
    pids: Vec<u32>,
    dir: PathBuf,
}

/// A lab with dnsmasq and two nodes (their QEMUs started, the boot not awaited), and its footprint,
/// checked to be really there.
fn running_lab(name: &str) -> Result<(Lab, Footprint)> {
    let mut lab = start_lab(name, LabConfig::default())?;
    add_node(&mut lab, &format!("{name}-a"), Boot::Kernel, &[NicModel::E1000])?;
    add_node(
        &mut lab,
        &format!("{name}-b"),
        Boot::Kernel,
        &[NicModel::VirtioNetPci, NicModel::Rtl8139],
    )?;
    let mut pids: Vec<u32> = lab.nodes().iter().map(|n| n.pid()).collect();
    pids.push(lab.dhcp_pid()?.context("dnsmasq is not running")?);
    let interfaces = lab.interfaces()?;
    for tap in ["br0", "tap0", "tap1", "tap2"] {
        ensure!(
            interfaces.iter().any(|i| i == tap),
            "no {tap} in the lab: {interfaces:?}"
        );
    }
    for pid in &pids {
        ensure!(alive(*pid), "process {pid} of the lab is not running");
    }
    ensure!(netns_names()?.contains(&lab.netns().to_owned()));
    let footprint = Footprint {
        netns: lab.netns().to_owned(),
        interfaces,
        pids,
        dir: lab.layout().dir.clone(),
    };
    Ok((lab, footprint))
}

fn alive(pid: u32) -> bool {
    // A zombie is dead too (its parent has not reaped it yet).
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").and_then(|(_, r)| r.chars().next()))
        .is_some_and(|state| state != 'Z')
}

fn host_interfaces() -> Result<Vec<String>> {
    let out = Command::new("ip").args(["-o", "link", "show"]).output()?;
    ensure!(out.status.success(), "ip -o link show failed");
    Ok(link_names(&String::from_utf8_lossy(&out.stdout)))
}

/// Checks that nothing of the lab is left: its namespace, its processes (also any process whose
/// command line names the lab's directory: QEMU's and dnsmasq's do), and no lab interface appeared
/// on the host.
fn check_gone(footprint: &Footprint, host_before: &[String]) -> Result<()> {
    // Killed process groups are reaped at once; allow a moment for the kernel to finish.
    let deadline = Instant::now() + Duration::from_secs(5);
    while footprint.pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    for &pid in &footprint.pids {
        ensure!(!alive(pid), "process {pid} outlived the lab");
    }
    let pgrep = Command::new("pgrep")
        .arg("-af")
        .arg(footprint.dir.as_os_str())
        .output()
        .context("running pgrep")?;
    let left = String::from_utf8_lossy(&pgrep.stdout).into_owned();
    ensure!(left.trim().is_empty(), "processes of the lab are left:\n{left}");
    let namespaces = netns_names()?;
    ensure!(
        !namespaces.contains(&footprint.netns),
        "namespace {} is left: {namespaces:?}",
        footprint.netns
    );
    let new_on_host: Vec<String> = host_interfaces()?
        .into_iter()
        .filter(|i| !host_before.contains(i) && footprint.interfaces.contains(i))
        .collect();
    ensure!(
        new_on_host.is_empty(),
        "lab interfaces showed up on the host: {new_on_host:?}"
    );
    Ok(())
}

#[test]
fn a_dropped_lab_leaves_no_namespace_tap_qemu_or_dnsmasq() -> Result<()> {
    let host_before = host_interfaces()?;
    let (lab, footprint) = running_lab("teardown-drop")?;
    eprintln!("lab: {footprint:?}");
    drop(lab);
    check_gone(&footprint, &host_before)
}

#[test]
fn a_panic_in_a_test_still_tears_the_lab_down() -> Result<()> {
    let host_before = host_interfaces()?;
    let (tx, rx) = mpsc::channel();
    let joined = thread::spawn(move || {
        let (_lab, footprint) = running_lab("teardown-panic").expect("the lab starts");
        tx.send(footprint).expect("the test thread listens");
        panic!("a failing test");
    })
    .join();
    ensure!(joined.is_err(), "the thread did not panic");
    let footprint = rx.recv().map_err(|_| anyhow!("the lab did not start"))?;
    check_gone(&footprint, &host_before)
}

#[test]
fn a_namespace_left_by_a_killed_lab_is_removed_by_the_next_lab() -> Result<()> {
    // A pid that is certainly gone: a child that has exited and been reaped.
    let mut child = Command::new("true").spawn()?;
    let dead = child.id();
    child.wait()?;
    ensure!(!Path::new(&format!("/proc/{dead}")).exists());
    let stale = format!("{NETNS_PREFIX}{dead}-0");
    let status = Command::new("ip").args(["netns", "add", &stale]).status()?;
    ensure!(status.success(), "ip netns add {stale} failed");

    let lab = Lab::start(LabConfig {
        dhcp: false,
        ..LabConfig::default()
    })?;
    let namespaces = netns_names()?;
    let own = lab.netns().to_owned();
    lab.shutdown()?;
    if namespaces.contains(&stale) {
        let _ = Command::new("ip").args(["netns", "del", &stale]).status();
        anyhow::bail!("the stale namespace {stale} survived a new lab: {namespaces:?}");
    }
    ensure!(
        !netns_names()?.contains(&own),
        "the lab's own namespace {own} is left"
    );
    Ok(())
}
