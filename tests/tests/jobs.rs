//! Jobs on a real node (issue 6, first slice): `clump run` on a node booted in the lab runs the
//! program under clumpd in its own PID namespace (the reaper is PID 1, the program PID 2), relays
//! its output and exits with its status; `--detach`, `clump ps` and `clump kill` work on the
//! Debian kernel the nodes run, with its cgroups.

use anyhow::{ensure, Result};
use clump_e2e::{add_node, parse_ready, sh, start_lab, READY_FROM_KERNEL, SHELL};
use clump_lab::{Boot, LabConfig, NicModel};

#[test]
fn a_job_runs_in_its_own_pid_namespace_relays_its_output_and_returns_its_status() -> Result<()> {
    let mut lab = start_lab("jobs", LabConfig::default())?;
    let index = add_node(&mut lab, "jobs1", Boot::Kernel, &[NicModel::VirtioNetPci])?;
    let node = lab.node(index)?;
    let ready = parse_ready(&node.wait_for_line(r"clump: ready\b", READY_FROM_KERNEL)?)?;
    ensure!(ready.via == "dhcp", "no DHCP lease");

    // The runtime answers once clumpd has the lease; try until it does.
    let mut out = String::new();
    for _ in 0..30 {
        let (code, text) = node.shell(
            "clump run -- sh -c 'echo pid $$ parent $PPID; echo oops >&2; exit 3'",
            SHELL,
        )?;
        out = text;
        if code == 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    ensure!(
        out.contains("pid 2 parent 1"),
        "the job is not PID 2 under its reaper:\n{out}"
    );
    ensure!(out.contains("oops"), "stderr was not relayed:\n{out}");

    let id = sh(node, "clump run --detach -- sleep 600")?;
    let id = clump_lab::job_id(&id);
    let Some(id) = id else {
        anyhow::bail!("`clump run --detach` printed no job id");
    };
    let ps = sh(node, "clump ps")?;
    ensure!(
        ps.contains(&id) && ps.contains("sleep 600"),
        "`clump ps` lacks the job:\n{ps}"
    );
    sh(node, &format!("clump kill {id}"))?;
    let (code, text) = node.shell(&format!("clump wait {id}"), SHELL)?;
    ensure!(
        code == 143,
        "`clump wait` after `clump kill` exited {code}, not 143:\n{text}"
    );
    lab.shutdown()?;
    Ok(())
}
