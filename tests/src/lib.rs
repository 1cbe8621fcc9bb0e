//! Helpers for the end-to-end tests: boot the built artefacts (`$CLUMP_OUT` or `out/`) in QEMU through
//! `clump-lab` and check what a user would check. The tests live in `tests/`; they fail (never skip)
//! when QEMU or the artefacts are missing.

mod procs;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use clump_lab::{workspace_root, Artefacts, Boot, NicModel, Node, NodeSpec};

pub use procs::{parse_procs, Proc, PS_COMMAND};

/// Bounds under TCG on two cores, generous enough for tests running in parallel:
/// a node is ready about 20 s after QEMU starts from the ISO, about 7 s by direct kernel boot.
pub const READY_FROM_ISO: Duration = Duration::from_secs(240);
pub const READY_FROM_KERNEL: Duration = Duration::from_secs(120);
/// One command in the root shell.
pub const SHELL: Duration = Duration::from_secs(60);
/// From the ACPI power button to QEMU's exit.
pub const POWEROFF: Duration = Duration::from_secs(60);

/// Starts node `name` booted `boot` with the given NICs. Its files stay in `target/e2e/<name>/`
/// (serial.log, qemu.log, qemu.cmdline) for a look after a failure.
pub fn start(name: &str, boot: Boot, nics: &[NicModel]) -> Result<Node> {
    let workdir = workspace_root().join("target/e2e").join(name);
    match std::fs::remove_dir_all(&workdir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cleaning {}", workdir.display()))
        }
        _ => {}
    }
    let mut spec = NodeSpec::from_artefacts(name, boot, &Artefacts::from_env())?.workdir(&workdir);
    for &model in nics {
        spec = spec.nic(model);
    }
    let node = Node::start(spec)?;
    eprintln!("{name}: booting {boot}, files in {}", workdir.display());
    Ok(node)
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
