//! What PID 1 does on a running node, checked on nodes booted directly from `out/pxe` (kernel +
//! initramfs; 3x faster than the ISO under TCG): NIC drivers, supervision, reaping, ACPI poweroff.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clump_e2e::{
    expected_drivers, node_spec, power_off_cleanly, procs, screen_is_drawn, sh, start, wait_for_shot,
    wait_ready, Proc, POWEROFF, READY_FROM_KERNEL,
};
use clump_lab::{Boot, NicModel, Node};
use regex::Regex;

/// A DRM driver's takeover is seen and drawn on within this time (screend looks every second).
const TAKEOVER: Duration = Duration::from_secs(30);

#[test]
fn every_nic_model_gets_its_driver_loaded_and_reported() -> Result<()> {
    let mut node = start("nics", Boot::Kernel, &NicModel::ALL)?;
    let ready = wait_ready(&mut node, READY_FROM_KERNEL)?;
    let log = node.log_lines()?.to_vec();

    // PID 1's report: `clump: nic iface=<if> driver=<driver> mac=<mac> carrier=up|down`.
    let nic_line = Regex::new(r"clump: nic iface=(\S+) driver=(\S+) mac=(\S+) carrier=(up|down)")?;
    let reported: BTreeMap<String, (String, String, String)> = log
        .iter()
        .filter_map(|l| nic_line.captures(l))
        .map(|c| {
            (
                c[3].to_lowercase(),
                (c[1].to_owned(), c[2].to_owned(), c[4].to_owned()),
            )
        })
        .collect();
    // What the kernel says, for checking the report against.
    let sysfs = sh(
        &mut node,
        "for n in /sys/class/net/*; do if [ -e $n/device/driver ]; then \
         echo ${n##*/} $(cat $n/address) $(basename $(readlink $n/device/driver)); fi; done",
    )?;

    let nics: Vec<_> = node.spec().nics.iter().map(|n| (n.model, n.mac)).collect();
    ensure!(
        nics.len() == NicModel::ALL.len(),
        "the node has {} NICs",
        nics.len()
    );
    for (model, mac) in &nics {
        let mac = mac.to_string();
        let Some((iface, driver, carrier)) = reported.get(&mac) else {
            bail!("no `clump: nic` line for the {model} NIC (mac {mac}); reported: {reported:?}");
        };
        ensure!(
            expected_drivers(*model).contains(&driver.as_str()),
            "{model} NIC {iface} reported with driver {driver}, expected one of {:?}",
            expected_drivers(*model)
        );
        ensure!(
            carrier == "up",
            "{model} NIC {iface} reported carrier={carrier} (its link is up in QEMU)"
        );
        ensure!(
            log.iter()
                .any(|l| l.contains(&format!("clump: module name={driver} result=loaded"))),
            "no `clump: module name={driver} result=loaded` line for the {model} NIC"
        );
        ensure!(
            sysfs
                .lines()
                .any(|l| l.trim() == format!("{iface} {mac} {driver}")),
            "the kernel does not show {iface} {mac} bound to {driver}:\n{sysfs}"
        );
    }
    let ready_nic = Regex::new(r"clump: ready iface=(\S+) driver=(\S+)")?;
    let c = ready_nic
        .captures(&ready)
        .context("the ready line names no iface/driver")?;
    ensure!(
        reported
            .values()
            .any(|(iface, driver, _)| *iface == c[1] && *driver == c[2]),
        "`{ready}` names a NIC that was not reported"
    );
    Ok(())
}

/// The pid in the last `clump: service started name=<service> pid=<pid>` line.
fn last_started(node: &mut Node, service: &str) -> Result<u32> {
    let started = Regex::new(&format!(r"clump: service started name={service} pid=(\d+)\b"))?;
    let lines = node.log_lines()?;
    let pid = lines
        .iter()
        .rev()
        .find_map(|l| started.captures(l))
        .map(|c| c[1].parse::<u32>());
    pid.with_context(|| format!("PID 1 never reported starting service {service}"))?
        .map_err(Into::into)
}

fn find(procs: &[Proc], pid: u32) -> Option<&Proc> {
    procs.iter().find(|p| p.pid == pid)
}

#[test]
fn killed_service_is_restarted_by_pid1() -> Result<()> {
    let mut node = start("restart", Boot::Kernel, &[NicModel::VirtioNetPci])?;
    wait_ready(&mut node, READY_FROM_KERNEL)?;
    let old = last_started(&mut node, "shell-tty2")?;
    let before = procs(&mut node)?;
    let victim = find(&before, old).with_context(|| format!("shell-tty2 (pid {old}) is not running"))?;
    ensure!(
        !victim.is_zombie(),
        "shell-tty2 (pid {old}) is a zombie before the test"
    );

    node.skip_log()?;
    sh(&mut node, &format!("kill -KILL {old}"))?;
    let exited = node.wait_for_line(
        &format!(r"clump: service exited name=shell-tty2 pid={old}\b.*\brestart_in_ms=\d+"),
        Duration::from_secs(30),
    )?;
    let restarted = node.wait_for_line(
        r"clump: service started name=shell-tty2 pid=\d+\b",
        Duration::from_secs(60),
    )?;
    let new = last_started(&mut node, "shell-tty2")?;
    ensure!(
        new != old,
        "restarted shell-tty2 has the old pid {old}: `{restarted}`"
    );
    eprintln!("`{exited}` then `{restarted}`");

    let after = procs(&mut node)?;
    let service =
        find(&after, new).with_context(|| format!("restarted shell-tty2 (pid {new}) is not running"))?;
    ensure!(
        !service.is_zombie(),
        "restarted shell-tty2 (pid {new}) is a zombie"
    );
    ensure!(
        find(&after, old).is_none(),
        "the killed shell-tty2 (pid {old}) is still in the process table"
    );
    Ok(())
}

#[test]
fn orphaned_children_leave_no_zombies() -> Result<()> {
    const ORPHANS: usize = 100;
    const LIFETIME_S: u64 = 10;
    let mut node = start("orphans", Boot::Kernel, &[NicModel::VirtioNetPci])?;
    wait_ready(&mut node, READY_FROM_KERNEL)?;

    // Each subshell starts a sleep in the background and exits at once: the sleep is orphaned.
    let spawned = Instant::now();
    sh(
        &mut node,
        &format!("for i in $(seq {ORPHANS}); do (sleep {LIFETIME_S} &); done"),
    )?;
    let orphan = |p: &Proc| p.comm == "sleep" && p.ppid == 1;
    // The last forks may not have exec'd `sleep` yet: look again until all are there.
    let mut adopted = 0;
    while adopted < ORPHANS {
        ensure!(
            spawned.elapsed() < Duration::from_secs(LIFETIME_S),
            "only {adopted} of {ORPHANS} orphaned sleeps are children of PID 1 (after {:?})",
            spawned.elapsed()
        );
        adopted = procs(&mut node)?.iter().filter(|p| orphan(p)).count();
    }
    eprintln!(
        "orphans: {adopted} orphaned sleeps adopted by PID 1 after {:.1} s",
        spawned.elapsed().as_secs_f64()
    );

    // Wait until every orphan has ended (a zombie has ended too), then give PID 1 a moment.
    let deadline = Instant::now() + Duration::from_secs(LIFETIME_S + 60);
    loop {
        let running = procs(&mut node)?
            .iter()
            .filter(|p| orphan(p) && !p.is_zombie())
            .count();
        if running == 0 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{running} orphaned sleeps still run long after {LIFETIME_S} s"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    std::thread::sleep(Duration::from_secs(2));
    let zombies: Vec<Proc> = procs(&mut node)?.into_iter().filter(Proc::is_zombie).collect();
    ensure!(zombies.is_empty(), "{} zombies left: {zombies:?}", zombies.len());
    Ok(())
}

#[test]
fn acpi_poweroff_ends_qemu_cleanly() -> Result<()> {
    let mut node = start("poweroff", Boot::Kernel, &[NicModel::VirtioNetPci])?;
    wait_ready(&mut node, READY_FROM_KERNEL)?;
    let pressed = Instant::now();
    power_off_cleanly(&mut node)?;
    eprintln!(
        "poweroff: QEMU exited {:.1} s after the power button",
        pressed.elapsed().as_secs_f64()
    );
    Ok(())
}

#[test]
fn a_node_without_a_nic_says_so_and_still_comes_up() -> Result<()> {
    let mut node = start("nonic", Boot::Kernel, &[])?;
    node.wait_for_line("clump: error: no network interface found", READY_FROM_KERNEL)?;
    let ready = wait_ready(&mut node, READY_FROM_KERNEL)?;
    ensure!(ready.contains("iface=none"), "ready line without a NIC: {ready}");
    // PID 1's ring buffer, as `clump log` prints it on the node.
    let log = sh(&mut node, "clump log -n 200")?;
    for stage in ["mounts", "coldplug", "nics", "ready"] {
        ensure!(
            log.contains(&format!("clump: stage={stage} t=")),
            "`clump log` lacks stage {stage}:\n{log}"
        );
    }
    ensure!(
        log.contains("no network interface found"),
        "`clump log` lacks the NIC error:\n{log}"
    );
    power_off_cleanly(&mut node)
}

#[test]
fn ctrl_alt_del_reboots_in_order() -> Result<()> {
    let mut node = start("cad", Boot::Kernel, &[NicModel::VirtioNetPci])?;
    wait_ready(&mut node, READY_FROM_KERNEL)?;
    let keys: Vec<serde_json::Value> = ["ctrl", "alt", "delete"]
        .iter()
        .map(|k| serde_json::json!({ "type": "qcode", "data": k }))
        .collect();
    node.qmp()
        .execute("send-key", Some(serde_json::json!({ "keys": keys })))?;
    // Ctrl-Alt-Del reaches PID 1 as SIGINT (not an immediate kernel reboot) and ends in an
    // orderly reboot; the lab runs QEMU with -no-reboot, so QEMU then exits.
    node.wait_for_line(r"clump: shutdown action=reboot reason=ctrl-alt-del", POWEROFF)?;
    node.wait_for_line(r"clump: stage=shutdown", POWEROFF)?;
    let status = node.wait_exit(POWEROFF)?;
    ensure!(status.success(), "QEMU exit status after the reboot: {status:?}");
    let log = node.log_lines()?.join("\n");
    ensure!(!log.contains("Kernel panic"), "kernel panic during the reboot");
    Ok(())
}

#[test]
fn without_a_framebuffer_the_status_screen_is_text_on_tty1() -> Result<()> {
    // SeaBIOS and direct kernel boot leave VGA in text mode; without bochs-drm there is no fb0.
    let spec = node_spec("nofb", Boot::Kernel)?
        .nic(NicModel::VirtioNetPci)
        .cmdline("clump.blacklist=bochs");
    let mut node = Node::start(spec)?;
    node.wait_for_line(r"no framebuffer, text on the terminal instead", READY_FROM_KERNEL)?;
    wait_ready(&mut node, READY_FROM_KERNEL)?;
    let fbs = sh(&mut node, "ls /sys/class/graphics/ | grep -c '^fb[0-9]' ; true")?;
    ensure!(fbs.trim() == "0", "the node has a framebuffer after all: {fbs}");
    // tty1's text as the monitor shows it (/dev/vcs1), read a few times: it is redrawn in place.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = sh(&mut node, "tr -s ' ' < /dev/vcs1; echo")?;
        if text.contains("Clump cluster") && text.contains("Esc: power off") {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "tty1 does not show the text screen:\n{text}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    power_off_cleanly(&mut node)
}

#[test]
fn a_drm_driver_taking_the_framebuffer_over_under_the_running_screen_is_followed() -> Result<()> {
    // OVMF gives the kernel a GOP framebuffer (efifb); bochs-drm, held back at boot, then takes
    // fb0 over while the screen draws on it, as on a PC whose DRM driver loads late.
    let mut spec = node_spec("takeover", Boot::Kernel)?
        .nic(NicModel::VirtioNetPci)
        .cmdline("clump.blacklist=bochs");
    spec.firmware = clump_lab::Firmware::Uefi;
    let mut node = Node::start(spec)?;
    node.wait_for_line(r"drawing on fb EFI VGA", READY_FROM_KERNEL)?;
    wait_ready(&mut node, READY_FROM_KERNEL)?;
    let before = screen_is_drawn(&mut node, "efifb")?;
    sh(&mut node, "modprobe bochs")?;
    node.wait_for_line(r"the framebuffer changed \(a new driver took it over\)", TAKEOVER)?;
    node.wait_for_line(r"drawing on fb bochs-drmdrmfb", TAKEOVER)?;
    let name = sh(&mut node, "cat /sys/class/graphics/fb0/name")?;
    ensure!(
        name.trim() == "bochs-drmdrmfb",
        "fb0 is {name:?} after modprobe bochs"
    );
    // Drawn since: the screen moves on (the uptime, or the boot stages to the tiles).
    wait_for_shot(&mut node, "bochs", TAKEOVER, |shot| {
        shot.shows_the_screen()?;
        ensure!(*shot != before, "the screen has not changed since the takeover");
        Ok(())
    })?;
    power_off_cleanly(&mut node)
}
