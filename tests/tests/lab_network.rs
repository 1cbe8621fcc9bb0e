//! The N-node lab: nodes on a bridge in a private network namespace with dnsmasq as DHCP (and TFTP)
//! server. Each test creates its own namespace and subnet; the lab removes them when dropped.

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use clump_e2e::{
    add_node, kernel_addrs, lease_json, parse_ready, ping, start_lab, wait_ready, Ready, READY_FROM_ISO,
};
use clump_lab::{Boot, Lab, LabConfig, NicModel};

/// Checks that node `index` is ready with a DHCP lease in the lab's subnet, and that the address is
/// the same in the ready line, in dnsmasq's lease file (for the node's MAC), in the kernel
/// (`ip -4 addr`) and in `/run/clump/lease.json`. Returns what the ready line said.
fn check_dhcp_lease(lab: &mut Lab, index: usize, ready_line: &str) -> Result<Ready> {
    let subnet = lab.subnet();
    let ready = parse_ready(ready_line)?;
    let node = lab.node(index)?;
    let name = node.name().to_owned();
    let mac = node.spec().nics[0].mac;
    ensure!(ready.via == "dhcp", "{name}: {ready_line}");
    ensure!(
        subnet.contains(ready.addr) && ready.prefix_len == 24,
        "{name}: {} is not in the lab's {subnet}",
        ready.addr
    );
    let kernel = kernel_addrs(node, &ready.iface)?;
    ensure!(
        kernel == [format!("{}/24", ready.addr)],
        "{name}: the kernel has {kernel:?} on {}, the ready line says {}",
        ready.iface,
        ready.addr
    );
    let json = lease_json(node)?;
    ensure!(
        json["via"] == "dhcp"
            && json["state"] == "bound"
            && json["lease"]["address"] == ready.addr.to_string()
            && json["mac"] == mac.to_string(),
        "{name}: lease.json does not match {ready:?} / {mac}:\n{json:#}"
    );
    let leases = lab.leases()?;
    let lease = leases
        .iter()
        .find(|l| l.mac == mac)
        .with_context(|| format!("dnsmasq has no lease for {name} ({mac}): {leases:?}"))?;
    ensure!(
        lease.address == ready.addr,
        "{name}: dnsmasq leased {} to {mac}, the node uses {}",
        lease.address,
        ready.addr
    );
    Ok(ready)
}

#[test]
fn three_nodes_from_the_iso_get_distinct_leases_and_reach_each_other() -> Result<()> {
    let started = Instant::now();
    let mut lab = start_lab("lab-3-iso", LabConfig::default())?;
    eprintln!("lab up in {:.2} s", started.elapsed().as_secs_f64());
    for i in 1..=3 {
        add_node(
            &mut lab,
            &format!("iso{i}"),
            Boot::IsoBios,
            &[NicModel::VirtioNetPci],
        )?;
    }
    let mut readies = Vec::new();
    for i in 0..3 {
        let line = wait_ready(lab.node(i)?, READY_FROM_ISO)?;
        readies.push(check_dhcp_lease(&mut lab, i, &line)?);
    }
    eprintln!(
        "3 nodes booted from the ISO with leases {:.1} s after the lab started",
        started.elapsed().as_secs_f64()
    );
    let addrs: BTreeSet<_> = readies.iter().map(|r| r.addr).collect();
    ensure!(addrs.len() == 3, "the nodes share addresses: {readies:?}");
    ensure!(lab.leases()?.len() == 3, "dnsmasq: {:?}", lab.leases()?);

    for (i, from) in readies.iter().enumerate() {
        for to in readies.iter().filter(|r| r.addr != from.addr) {
            ping(lab.node(i)?, to.addr)?;
        }
        // And the host side of the bridge (the gateway, where dnsmasq runs).
        let gateway = lab.subnet().gateway();
        ping(lab.node(i)?, gateway)?;
    }
    lab.shutdown()?;
    Ok(())
}
