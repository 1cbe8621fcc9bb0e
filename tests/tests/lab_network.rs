//! The N-node lab: nodes on a bridge in a private network namespace with dnsmasq as DHCP (and TFTP)
//! server. Each test creates its own namespace and subnet; the lab removes them when dropped.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::thread;
use std::time::Duration;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use clump_e2e::{
    add_node, expected_drivers, kernel_addrs, lease_json, parse_ready, ping, sh, start_lab, wait_ready,
    Ready, READY_FROM_ISO, READY_FROM_KERNEL, READY_FROM_PXE, SHELL,
};
use clump_lab::{Artefacts, Boot, Lab, LabConfig, NicModel};
use regex::Regex;

/// Checks that node `index` is ready with a DHCP lease in the lab's subnet, and that the address is
/// the same in the ready line, in dnsmasq's lease file (for the node's MAC), in the kernel
/// (`ip -4 addr`) and in `/run/clump/lease.json`. Returns what the ready line said.
fn check_dhcp_lease(lab: &mut Lab, index: usize, ready_line: &str) -> Result<Ready> {
    let ready = parse_ready(ready_line)?;
    ensure!(ready.via == "dhcp", "{ready_line}");
    check_dhcp_address(lab, index, &ready.iface, ready.addr, ready.prefix_len)?;
    Ok(ready)
}

/// Checks that node `index` uses `addr/prefix_len` on `iface` from a DHCP lease in the lab's subnet:
/// the kernel has exactly that address, `/run/clump/lease.json` says so, and dnsmasq leased it to the
/// node's MAC.
fn check_dhcp_address(
    lab: &mut Lab,
    index: usize,
    iface: &str,
    addr: Ipv4Addr,
    prefix_len: u8,
) -> Result<()> {
    let subnet = lab.subnet();
    let node = lab.node(index)?;
    let name = node.name().to_owned();
    let mac = node.spec().nics[0].mac;
    ensure!(
        subnet.contains(addr) && prefix_len == 24,
        "{name}: {addr}/{prefix_len} is not in the lab's {subnet}"
    );
    let kernel = kernel_addrs(node, iface)?;
    ensure!(
        kernel == [format!("{addr}/24")],
        "{name}: the kernel has {kernel:?} on {iface}, the node says {addr}"
    );
    let json = lease_json(node)?;
    ensure!(
        json["via"] == "dhcp"
            && json["state"] == "bound"
            && json["lease"]["address"] == addr.to_string()
            && json["mac"] == mac.to_string(),
        "{name}: lease.json does not match {addr} / {mac}:\n{json:#}"
    );
    let leases = lab.leases()?;
    let lease = leases
        .iter()
        .find(|l| l.mac == mac)
        .with_context(|| format!("dnsmasq has no lease for {name} ({mac}): {leases:?}"))?;
    ensure!(
        lease.address == addr,
        "{name}: dnsmasq leased {} to {mac}, the node uses {addr}",
        lease.address
    );
    Ok(())
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

#[test]
fn mixed_nic_models_in_one_lab_all_get_leases() -> Result<()> {
    // Direct kernel boot: this test is about the drivers and DHCP on each card, not the medium (the
    // ISO is covered above), and four TCG guests share two cores.
    let started = Instant::now();
    let mut lab = start_lab("lab-nics", LabConfig::default())?;
    for model in NicModel::ALL {
        add_node(&mut lab, &format!("nic-{model}"), Boot::Kernel, &[model])?;
    }
    let mut addrs = BTreeSet::new();
    for (i, model) in NicModel::ALL.into_iter().enumerate() {
        let line = wait_ready(lab.node(i)?, READY_FROM_KERNEL)?;
        let ready = check_dhcp_lease(&mut lab, i, &line)?;
        ensure!(
            expected_drivers(model).contains(&ready.driver.as_str()),
            "the {model} node is ready on driver {}: {line}",
            ready.driver
        );
        addrs.insert(ready.addr);
    }
    ensure!(addrs.len() == NicModel::ALL.len(), "shared addresses: {addrs:?}");
    eprintln!(
        "4 nodes with 4 NIC models have leases {:.1} s after the lab started",
        started.elapsed().as_secs_f64()
    );
    lab.shutdown()?;
    Ok(())
}

#[test]
fn two_nodes_netboot_by_pxe_bios_and_uefi_and_get_leases() -> Result<()> {
    let started = Instant::now();
    let tftp_root = Artefacts::from_env().pxe_dir()?;
    let mut lab = start_lab(
        "lab-pxe",
        LabConfig {
            tftp_root: Some(tftp_root),
            ..LabConfig::default()
        },
    )?;
    add_node(&mut lab, "pxe-bios", Boot::PxeBios, &[NicModel::VirtioNetPci])?;
    add_node(&mut lab, "pxe-uefi", Boot::PxeUefi, &[NicModel::E1000])?;
    for i in 0..2 {
        let line = wait_ready(lab.node(i)?, READY_FROM_PXE)?;
        check_dhcp_lease(&mut lab, i, &line)?;
        // The kernel came over the network: iPXE's script passed BOOTIF, and no disk exists.
        let node = lab.node(i)?;
        let cmdline = sh(node, "cat /proc/cmdline")?;
        let mac = node.spec().nics[0].mac.to_string().replace(':', "-");
        ensure!(
            cmdline.contains(&format!("BOOTIF=01-{mac}")),
            "{}: no BOOTIF for its NIC on the command line: {cmdline}",
            node.name()
        );
    }
    let log = lab.dnsmasq_log()?;
    for file in ["boot.ipxe", "vmlinuz", "initrd.img"] {
        let sent = log
            .lines()
            .filter(|l| l.starts_with("dnsmasq-tftp: sent ") && l.contains(&format!("/{file} to ")))
            .count();
        ensure!(
            sent >= 2,
            "dnsmasq sent {file} {sent} times, not to both nodes:\n{log}"
        );
    }
    ensure!(
        lab.node(1)?.shell("test -d /sys/firmware/efi", SHELL)?.0 == 0,
        "the UEFI node did not boot through UEFI"
    );
    eprintln!(
        "2 nodes netbooted to a lease {:.1} s after the lab started",
        started.elapsed().as_secs_f64()
    );
    lab.shutdown()?;
    Ok(())
}

#[test]
fn without_dnsmasq_nodes_fall_back_to_link_local_and_take_a_lease_when_it_returns() -> Result<()> {
    let started = Instant::now();
    let mut lab = start_lab("lab-link-local", LabConfig::default())?;
    lab.stop_dhcp()?;
    ensure!(!lab.dhcp_running()?, "dnsmasq still runs after stop_dhcp");
    for name in ["ll1", "ll2"] {
        add_node(&mut lab, name, Boot::Kernel, &[NicModel::VirtioNetPci])?;
    }
    let link_local = Regex::new(r"^169\.254\.")?;
    let mut readies = Vec::new();
    for i in 0..2 {
        // PID 1 waits `clump.addr_wait` (20 s) for an address: a link-local ready line means the
        // fallback (after 10 s without a server) happened within that bound.
        let line = wait_ready(lab.node(i)?, READY_FROM_KERNEL)?;
        let ready = parse_ready(&line)?;
        ensure!(
            ready.via == "link-local"
                && link_local.is_match(&ready.addr.to_string())
                && ready.prefix_len == 16,
            "not a link-local address: {line}"
        );
        let node = lab.node(i)?;
        let kernel = kernel_addrs(node, &ready.iface)?;
        ensure!(
            kernel == [format!("{}/16", ready.addr)],
            "{}: the kernel has {kernel:?}, the ready line says {}",
            node.name(),
            ready.addr
        );
        let json = lease_json(node)?;
        ensure!(
            json["via"] == "link-local" && json["lease"]["address"] == ready.addr.to_string(),
            "{}: lease.json does not say link-local {}:\n{json:#}",
            node.name(),
            ready.addr
        );
        readies.push(ready);
    }
    ensure!(
        readies[0].addr != readies[1].addr,
        "both nodes claimed {}",
        readies[0].addr
    );
    ensure!(
        lab.leases()?.is_empty(),
        "leases without a server: {:?}",
        lab.leases()?
    );
    ping(lab.node(0)?, readies[1].addr)?;
    ping(lab.node(1)?, readies[0].addr)?;
    eprintln!(
        "2 link-local nodes reach each other {:.1} s after the lab started",
        started.elapsed().as_secs_f64()
    );

    let back = Instant::now();
    lab.start_dhcp()?;
    for (i, ready) in readies.iter().enumerate() {
        let addr = wait_for_dhcp(&mut lab, i)?;
        check_dhcp_address(&mut lab, i, &ready.iface, addr, 24)?;
        eprintln!(
            "{}: moved from {} to the lease {addr} {:.1} s after dnsmasq came back",
            lab.node(i)?.name(),
            ready.addr,
            back.elapsed().as_secs_f64()
        );
    }
    lab.shutdown()?;
    Ok(())
}

/// The DHCP retransmission backoff reaches 64 s (RFC 2131 4.1), so a node may wait that long before
/// it asks the server that came back.
const DHCP_RETURN: Duration = Duration::from_secs(120);

/// Polls node `index`'s lease.json until it says `via: dhcp`, `state: bound`; returns the address.
fn wait_for_dhcp(lab: &mut Lab, index: usize) -> Result<Ipv4Addr> {
    let deadline = Instant::now() + DHCP_RETURN;
    loop {
        let json = lease_json(lab.node(index)?)?;
        if json["via"] == "dhcp" && json["state"] == "bound" {
            let addr = json["lease"]["address"]
                .as_str()
                .with_context(|| format!("no lease.address in {json:#}"))?;
            return Ok(addr.parse()?);
        }
        if Instant::now() >= deadline {
            let name = lab.node(index)?.name().to_owned();
            anyhow::bail!(
                "{name}: no DHCP lease {} s after dnsmasq came back; lease.json:\n{json:#}\ndnsmasq:\n{}",
                DHCP_RETURN.as_secs(),
                lab.dnsmasq_log()?
            );
        }
        thread::sleep(Duration::from_secs(2));
    }
}

#[test]
fn a_short_lease_is_renewed_at_t1_without_losing_the_address() -> Result<()> {
    let config = LabConfig {
        lease_time: clump_lab::MIN_LEASE,
        ..LabConfig::default()
    };
    let mut lab = start_lab("lab-renew", config)?;
    add_node(&mut lab, "renew", Boot::Kernel, &[NicModel::VirtioNetPci])?;
    let line = wait_ready(lab.node(0)?, READY_FROM_KERNEL)?;
    let ready = check_dhcp_lease(&mut lab, 0, &line)?;
    // dnsmasq's shortest lease is 2 minutes, so T1 comes 60 s after the lease.
    let acked = format!("DHCPACK(br0) {}", ready.addr);
    let deadline = Instant::now() + Duration::from_secs(110);
    while lab.dnsmasq_log()?.matches(&acked).count() < 2 {
        ensure!(
            Instant::now() < deadline,
            "no renewal within 110 s of a 120 s lease:\n{}",
            lab.dnsmasq_log()?
        );
        thread::sleep(Duration::from_secs(2));
    }
    // After the first ACK only a renewal may follow: a DISCOVER there would mean the lease was
    // lost. Before it, a retransmitted DISCOVER is normal (dnsmasq pings a new address for 3 s
    // before it offers it; the client retries after 4 +- 1 s).
    let log = lab.dnsmasq_log()?;
    let after_first_ack = log.split_once(&acked).map_or("", |(_, rest)| rest);
    ensure!(
        !after_first_ack.contains("DHCPDISCOVER"),
        "renewed, not rediscovered:\n{log}"
    );
    lab.node(0)?
        .wait_for_line("lease .*renewed=true", Duration::from_secs(10))?;
    check_dhcp_address(&mut lab, 0, &ready.iface, ready.addr, ready.prefix_len)?;
    lab.shutdown()?;
    Ok(())
}
