//! The lab itself: bounded waits report what the node printed, and no QEMU outlives its `Node`.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Result};
use clump_e2e::start;
use clump_lab::{Boot, Error, NicModel};

#[test]
fn timeouts_quote_the_log_and_dropping_a_node_kills_qemu() -> Result<()> {
    let mut node = start("lab", Boot::Kernel, &[NicModel::E1000])?;
    let pid = node.pid();
    ensure!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "QEMU (pid {pid}) is not running"
    );

    match node.wait_for_line("this line never comes", Duration::from_secs(2)) {
        Err(Error::Timeout { context, .. }) => {
            ensure!(
                context.contains("serial.log"),
                "the timeout names no log: {context}"
            )
        }
        other => bail!("expected a timeout, got {other:?}"),
    }

    drop(node);
    ensure!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "QEMU (pid {pid}) outlived its Node"
    );
    Ok(())
}
