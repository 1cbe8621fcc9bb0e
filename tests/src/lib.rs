//! Helpers for the end-to-end tests: boot the built artefacts (`$CLUMP_OUT` or `out/`) in QEMU through
//! `clump-lab` and check what a user would check. The tests live in `tests/`; they fail (never skip)
//! when QEMU or the artefacts are missing.

mod procs;
mod shot;
mod views;

use std::time::Duration;

use std::net::Ipv4Addr;

use anyhow::{bail, ensure, Context, Result};
use clump_lab::{workspace_root, Artefacts, Boot, Lab, LabConfig, NicModel, Node, NodeSpec};
use regex::Regex;

pub use procs::{parse_procs, Proc, PS_COMMAND};
pub use shot::Shot;
pub use views::{all_alive, cluster_ps, local_ps, node_map, running_on, state_of};

/// Bounds under TCG on two cores, generous enough for tests running in parallel:
/// a node is ready about 20 s after QEMU starts from the ISO, about 7 s by direct kernel boot.
pub const READY_FROM_ISO: Duration = Duration::from_secs(240);
pub const READY_FROM_KERNEL: Duration = Duration::from_secs(120);
/// PXE: firmware, iPXE's DHCP and a TFTP transfer of kernel and initramfs come before the boot.
pub const READY_FROM_PXE: Duration = Duration::from_secs(300);
/// One command in the root shell.
pub const SHELL: Duration = Duration::from_secs(60);
/// From the ACPI power button to QEMU's exit.
pub const POWEROFF: Duration = Duration::from_secs(60);

/// `target/e2e/<name>`, emptied.
fn fresh_workdir(name: &str) -> Result<std::path::PathBuf> {
    let workdir = workspace_root().join("target/e2e").join(name);
    match std::fs::remove_dir_all(&workdir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cleaning {}", workdir.display()))
        }
        _ => {}
    }
    Ok(workdir)
}

/// Starts node `name` booted `boot` with the given NICs. Its files stay in `target/e2e/<name>/`
/// (serial.log, qemu.log, qemu.cmdline) for a look after a failure.
pub fn start(name: &str, boot: Boot, nics: &[NicModel]) -> Result<Node> {
    let mut spec = node_spec(name, boot)?;
    for &model in nics {
        spec = spec.nic(model);
    }
    let node = Node::start(spec)?;
    eprintln!("{name}: booting {boot}, files in {}", node.layout().dir.display());
    Ok(node)
}

/// A node of the built artefacts booted from `boot`, its files (serial log, screendumps) kept
/// in `target/e2e/<name>/`.
pub fn node_spec(name: &str, boot: Boot) -> Result<NodeSpec> {
    Ok(NodeSpec::from_artefacts(name, boot, &Artefacts::from_env())?.workdir(fresh_workdir(name)?))
}

/// Waits for `clump: ready` and returns the line.
pub fn wait_ready(node: &mut Node, timeout: Duration) -> Result<String> {
    // Not anchored: a shell prompt may precede PID 1's line on the serial console.
    let line = node.wait_for_line(r"clump: ready\b", timeout)?;
    eprintln!(
        "{}: `{line}` {:.1} s after QEMU started",
        node.name(),
        node.uptime().as_secs_f64()
    );
    Ok(line)
}

/// Runs `command` in the root shell and fails unless it exits 0; returns its output.
pub fn sh(node: &mut Node, command: &str) -> Result<String> {
    let (code, output) = node.shell(command, SHELL)?;
    ensure!(code == 0, "`{command}` exited {code}:\n{output}");
    Ok(output)
}

/// The node's processes, read from /proc/*/stat through the root shell.
pub fn procs(node: &mut Node) -> Result<Vec<Proc>> {
    let output = sh(node, PS_COMMAND)?;
    let procs = parse_procs(&output);
    ensure!(
        procs.iter().any(|p| p.pid == 1),
        "no PID 1 in the process list:\n{output}"
    );
    Ok(procs)
}

/// Waits up to 30 s for the status screen on `node`'s monitor (boot stages, or this node's tile);
/// the last screendump is kept as `<label>.png` in the node's directory.
pub fn screen_is_drawn(node: &mut Node, label: &str) -> Result<Shot> {
    wait_for_shot(node, label, Duration::from_secs(30), Shot::shows_the_screen)
}

/// Takes screendumps of `node` until one passes `check` (then returns it) or `limit` has
/// passed; the last is kept as `<label>.png` in the node's directory.
pub fn wait_for_shot(
    node: &mut Node,
    label: &str,
    limit: Duration,
    check: impl Fn(&Shot) -> Result<()>,
) -> Result<Shot> {
    let png = node.layout().dir.join(format!("{label}.png"));
    let deadline = std::time::Instant::now() + limit;
    loop {
        node.screendump(&png)?;
        let shot = Shot::read(&png)?;
        match check(&shot) {
            Ok(()) => return Ok(shot),
            Err(e) if std::time::Instant::now() >= deadline => {
                return Err(e).with_context(|| format!("{}: see {}", node.name(), png.display()))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// Presses the ACPI power button and checks the node powers off in an orderly way (see
/// [`Node::power_off`]).
pub fn power_off_cleanly(node: &mut Node) -> Result<()> {
    node.power_off(POWEROFF)
        .context("the ACPI power button did not power the node off cleanly")?;
    eprintln!(
        "{}: powered off via ACPI, {:.1} s after QEMU started",
        node.name(),
        node.uptime().as_secs_f64()
    );
    Ok(())
}

/// Starts a lab whose files (dnsmasq's log and leases, one directory per node) stay in
/// `target/e2e/<name>/`.
pub fn start_lab(name: &str, mut config: LabConfig) -> Result<Lab> {
    config.workdir = Some(fresh_workdir(name)?);
    let lab = Lab::start(config).context("starting the lab (needs root, ip, dnsmasq)")?;
    eprintln!(
        "{name}: lab in namespace {} on {}, files in {}",
        lab.netns(),
        lab.subnet(),
        lab.layout().dir.display()
    );
    Ok(lab)
}

/// Adds node `name` booted `boot` with the given NICs (all on the lab's bridge) and returns its index.
pub fn add_node(lab: &mut Lab, name: &str, boot: Boot, nics: &[NicModel]) -> Result<usize> {
    let mut spec = NodeSpec::from_artefacts(name, boot, &Artefacts::from_env())?;
    for &model in nics {
        spec = spec.nic(model);
    }
    let index = lab.start_node(spec)?;
    eprintln!("{name}: booting {boot} in the lab");
    Ok(index)
}

/// The address and node number (the host part of the address, as `clump nodes` numbers nodes)
/// of each of the lab's first `n` nodes, from their `clump: ready` lines.
pub fn ready_addrs(lab: &mut Lab, n: usize) -> Result<(Vec<Ipv4Addr>, Vec<u64>)> {
    let mut addrs = Vec::new();
    let mut numbers = Vec::new();
    for i in 0..n {
        let ready = parse_ready(&lab.node(i)?.wait_for_line(r"clump: ready\b", READY_FROM_KERNEL)?)?;
        addrs.push(ready.addr);
        numbers.push(u64::from(u32::from(ready.addr) & (u32::MAX >> ready.prefix_len)));
    }
    Ok((addrs, numbers))
}

/// What a `clump: ready` line says about the address in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub iface: String,
    pub driver: String,
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    pub via: String,
}

/// Parses `clump: ready iface=<if> driver=<d> addr=<a.b.c.d/nn> via=<how>`; fails on `addr=none`.
pub fn parse_ready(line: &str) -> Result<Ready> {
    let re = Regex::new(r"clump: ready iface=(\S+) driver=(\S+) addr=(\d+\.\d+\.\d+\.\d+)/(\d+) via=(\S+)")?;
    let Some(c) = re.captures(line) else {
        bail!("the ready line has no address: {line}");
    };
    Ok(Ready {
        iface: c[1].to_owned(),
        driver: c[2].to_owned(),
        addr: c[3].parse()?,
        prefix_len: c[4].parse()?,
        via: c[5].to_owned(),
    })
}

/// The IPv4 addresses (`a.b.c.d/nn`) the kernel has on `iface`, from `ip -4 -o addr`.
pub fn kernel_addrs(node: &mut Node, iface: &str) -> Result<Vec<String>> {
    let out = sh(node, &format!("ip -4 -o addr show dev {iface}"))?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet")?;
            words.next().map(str::to_owned)
        })
        .collect())
}

/// `/run/clump/lease.json` on the node. Read through the serial console, which once showed a stray
/// byte in it (`"declines": 00`); a copy that does not parse is read again (at most 3 times) and
/// the bad copy reported.
pub fn lease_json(node: &mut Node) -> Result<serde_json::Value> {
    let mut tries = 0;
    loop {
        tries += 1;
        let text = sh(node, "cat /run/clump/lease.json")?;
        match serde_json::from_str(&text) {
            Ok(json) => return Ok(json),
            Err(e) if tries < 3 => {
                eprintln!(
                    "{}: lease.json read as bad JSON ({e}), reading it again:\n{text}",
                    node.name()
                );
            }
            Err(e) => return Err(e).with_context(|| format!("lease.json is not JSON:\n{text}")),
        }
    }
}

/// Pings `addr` once from the node (busybox `ping -c1 -W2`), with a few tries for ARP to settle.
pub fn ping(node: &mut Node, addr: Ipv4Addr) -> Result<()> {
    let mut last = String::new();
    for _ in 0..3 {
        let (code, out) = node.shell(&format!("ping -c1 -W2 {addr}"), SHELL)?;
        if code == 0 {
            return Ok(());
        }
        last = out;
    }
    bail!("{} cannot ping {addr}:\n{last}", node.name())
}

/// The Linux drivers that may bind each emulated NIC (rtl8139: 8139cp claims revisions >= 0x20).
pub fn expected_drivers(model: NicModel) -> &'static [&'static str] {
    match model {
        NicModel::VirtioNetPci => &["virtio_net"],
        NicModel::E1000 => &["e1000"],
        NicModel::E1000e => &["e1000e"],
        NicModel::Rtl8139 => &["8139cp", "8139too"],
    }
}

/// The JSON value between the first `open` and the last `close` of a command's console output
/// (the shell's output, daemons' log lines already left out).
pub fn console_json(text: &str, open: char, close: char) -> Result<serde_json::Value> {
    let start = text.find(open).context("no JSON in the output")?;
    let end = text.rfind(close).context("no JSON in the output")?;
    serde_json::from_str(&text[start..=end]).with_context(|| format!("parsing {text}"))
}

/// Polls `done` every 2 s until it says yes; an error once `limit` has passed.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
    let end = std::time::Instant::now() + limit;
    while !done()? {
        ensure!(
            std::time::Instant::now() < end,
            "{what}: not within {} s",
            limit.as_secs()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    Ok(())
}
