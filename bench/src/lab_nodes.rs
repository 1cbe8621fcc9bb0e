//! The lab part the migration and balance benchmarks share: direct-boot nodes on one bridge,
//! their addresses once each has a DHCP lease, and a shell command that must succeed.

use anyhow::{bail, Context, Result};
use clump_lab::{Artefacts, Boot, Lab, LabConfig, NicModel, Node, NodeSpec};
use std::time::Duration;

/// Starts a lab of `n` nodes named `PREFIX1..n` with `mem_mib` each and `cmdline` added to their
/// kernel command line; their addresses, in order.
pub fn boot(prefix: &str, n: usize, mem_mib: u32, cmdline: &str) -> Result<(Lab, Vec<String>)> {
    // The nodes' serial logs stay in target/bench/PREFIX for a look after the run.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bench")
        .join(prefix);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let config = LabConfig {
        workdir: Some(dir),
        ..LabConfig::default()
    };
    let mut lab = Lab::start(config).context("lab (needs root)")?;
    for i in 1..=n {
        let mut spec =
            NodeSpec::from_artefacts(format!("{prefix}{i}"), Boot::Kernel, &Artefacts::from_env())?
                .memory_mib(mem_mib)
                .nic(NicModel::VirtioNetPci);
        if !cmdline.is_empty() {
            spec = spec.cmdline(cmdline);
        }
        lab.start_node(spec)?;
    }
    let mut addrs = Vec::new();
    for i in 0..n {
        let ready = lab
            .node(i)?
            .wait_for_line(r"clump: ready .*via=dhcp", Duration::from_secs(180))?;
        addrs.push(addr_of(&ready)?);
    }
    Ok((lab, addrs))
}

fn addr_of(ready: &str) -> Result<String> {
    ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .and_then(|a| a.split('/').next())
        .map(str::to_owned)
        .with_context(|| format!("no address in {ready}"))
}

/// Runs `cmd` in the node's root shell; its output, or an error if it failed.
pub fn shell(node: &mut Node, cmd: &str, timeout: Duration) -> Result<String> {
    let (code, out) = node.shell(cmd, timeout)?;
    if code != 0 {
        bail!("`{cmd}` failed ({code}):\n{out}");
    }
    Ok(out)
}
