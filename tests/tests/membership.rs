//! Discovery, node map and membership (issue 4; the contract is ARCHITECTURE.md, "Cluster"), checked
//! the way a user checks them: `clump nodes --json` and `/etc/clump/mosix.map` on each node, read
//! through its serial console.
//!
//! One lab, to save boots: four nodes find each other and agree on the map; one is powered off and
//! the others declare it dead; a fifth booted later joins; a sixth with another cluster key is
//! refused by all. Every node boots the kernel directly (`out/pxe`), with 1 CPU and a modest RAM:
//! up to five TCG guests share the host's cores.
//!
//! Each node's serial log and final `nodes.json` are saved in `out/test-artifacts/membership/`
//! (`$CLUMP_OUT/test-artifacts/membership/`), with `summary.txt` holding the measured times.
//!
//! Times are measured on the host. A node's "ready" time is when its `clump: ready` line was first
//! seen in the serial log, which a thread per node polls every 50 ms from boot on: at most ~50 ms
//! (plus QEMU's write of the log) after the guest printed it. A map's time is when the shell command
//! that read it returned: at most one command round trip (under a second to a few seconds under TCG)
//! after the node's map said so. So each measured interval may be shorter than the true one by ~50 ms
//! and longer by one command round trip; the bounds below are checked against the measured value.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Read as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use clump_e2e::{parse_ready, start_lab, READY_FROM_KERNEL, SHELL};
use clump_lab::{Artefacts, Boot, Lab, LabConfig, NicModel, Node, NodeSpec};
use regex::Regex;
use serde_json::Value;

/// Guest RAM: the initramfs (~51 MiB unpacked) and the services fit with room to spare.
const NODE_MEMORY_MIB: u32 = 320;
/// A node lists every other node within this time of the later of the two leases (ready lines).
const JOIN_BOUND: Duration = Duration::from_secs(10);
/// A powered-off node is `dead` or `left` on every other node within this time of the power button.
const FAILURE_BOUND: Duration = Duration::from_secs(30);
/// A node with another key is listed as `foreign` within this time of its lease: the others hear
/// it at once (its hello broadcast at start), it hears them at their next hello broadcast (every
/// 15 s), and unicast hellos follow the ARP sweep.
const FOREIGN_BOUND: Duration = Duration::from_secs(60);
/// How long the lab keeps polling after a bound has passed, to report the actual time.
const OVERRUN: Duration = Duration::from_secs(60);
/// Pause between two reads of a map on one node (each read is a command round trip already).
const POLL_PAUSE: Duration = Duration::from_millis(200);

/// States of a member (ARCHITECTURE.md: mosix.map lists self, alive, suspect and leaving).
const MEMBER: &[&str] = &["self", "alive", "suspect", "leaving"];

#[test]
fn nodes_find_each_other_share_one_map_notice_a_death_take_a_newcomer_and_refuse_another_key() -> Result<()> {
    let artefacts = Artefacts::from_env();
    let saved = artefacts.out_dir().join("test-artifacts/membership");
    match std::fs::remove_dir_all(&saved) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cleaning {}", saved.display()))
        }
        _ => {}
    }
    let mut lab = start_lab("membership", LabConfig::default())?;
    let summary = Mutex::new(String::new());
    let result = scenario(&mut lab, &artefacts, &summary);
    let text = summary.lock().map(|s| s.clone()).unwrap_or_default();
    let outcome = match &result {
        Ok(()) => "passed".to_owned(),
        Err(e) => format!("FAILED: {e:#}"),
    };
    if let Err(e) = save_artefacts(&mut lab, &saved, &format!("{text}\nresult: {outcome}\n")) {
        eprintln!(
            "membership: could not save every artefact in {}: {e:#}",
            saved.display()
        );
    }
    eprintln!("membership: artefacts in {}\n{text}", saved.display());
    result?;
    lab.shutdown()?;
    Ok(())
}

/// What each step found, also written to `summary.txt`.
fn note(summary: &Mutex<String>, line: String) {
    eprintln!("membership: {line}");
    if let Ok(mut s) = summary.lock() {
        let _ = writeln!(s, "{line}");
    }
}

fn scenario(lab: &mut Lab, artefacts: &Artefacts, summary: &Mutex<String>) -> Result<()> {
    let started = Instant::now();
    let fingerprint = image_key_fingerprint(artefacts)?;

    // 1. Four nodes boot; each lists all four within JOIN_BOUND of the last lease.
    let first: Vec<usize> = (1..=4)
        .map(|i| boot(lab, &format!("member{i}"), None))
        .collect::<Result<_>>()?;
    let joins = on_nodes(lab, &first, |_, node| {
        let ready = wait_ready_timed(node)?;
        // Keep reading until the map holds 4 members, or long after the bound (to report the time).
        let complete = poll_map(node, ready.at + READY_FROM_KERNEL + OVERRUN, |map| {
            Ok(members(map)?.len() >= 4)
        })?;
        Ok((ready, complete))
    })?;
    let all_ready = joins.iter().map(|(r, _)| r.at).max().context("no node")?;
    let addrs: BTreeMap<Ipv4Addr, usize> = joins.iter().zip(&first).map(|((r, _), &i)| (r.addr, i)).collect();
    ensure!(addrs.len() == 4, "the four nodes share addresses: {joins:?}");
    note(
        summary,
        format!(
            "4 nodes ready {:.1} s after the lab started (first {:.1} s, last {:.1} s)",
            started.elapsed().as_secs_f64(),
            joins
                .iter()
                .map(|(r, _)| r.at)
                .min()
                .unwrap_or(all_ready)
                .duration_since(started)
                .as_secs_f64(),
            all_ready.duration_since(started).as_secs_f64()
        ),
    );
    let mut late = Vec::new();
    for (&i, (ready, complete)) in first.iter().zip(&joins) {
        let name = lab.node(i)?.name().to_owned();
        let since_last = complete.at.saturating_duration_since(all_ready);
        note(
            summary,
            format!(
                "{name} ({}): lists 4 nodes {:.1} s after its own ready line, {:.1} s after the last node's",
                ready.addr,
                complete.at.duration_since(ready.at).as_secs_f64(),
                since_last.as_secs_f64()
            ),
        );
        check_members(
            &name,
            &complete.map,
            &addrs.keys().copied().collect(),
            ready.addr,
            &fingerprint,
        )?;
        if since_last >= JOIN_BOUND {
            late.push(format!("{name}: {:.1} s", since_last.as_secs_f64()));
        }
    }
    ensure!(
        late.is_empty(),
        "nodes listed all 4 members later than {} s after the last lease: {late:?}",
        JOIN_BOUND.as_secs()
    );

    // 2. mosix.map: the same lines on all four, covering exactly their numbers and addresses.
    check_mosix_maps(lab, &first, &addrs.keys().copied().collect(), summary)?;

    // 3. One node powered off (ACPI): the others declare it dead (or left) within FAILURE_BOUND.
    let victim = first[1];
    let victim_addr = joins[1].0.addr;
    let victim_name = lab.node(victim)?.name().to_owned();
    let pressed = Instant::now();
    lab.node(victim)?.powerdown()?;
    let gone = on_nodes(lab, &first, |i, node| {
        if i == victim {
            node.power_off(clump_e2e::POWEROFF)
                .context("the ACPI power button")?;
            return Ok(Seen {
                at: Instant::now(),
                map: Value::Null,
            });
        }
        poll_map(node, pressed + FAILURE_BOUND + OVERRUN, |map| {
            let state = entry(map, victim_addr)?.map(|e| e["state"].as_str().unwrap_or("").to_owned());
            Ok(matches!(state.as_deref(), Some("dead" | "left")))
        })
    })?;
    let qemu_exit = gone[1].at;
    note(
        summary,
        format!(
            "{victim_name} ({victim_addr}) powered off by ACPI; QEMU exited {:.1} s after the button",
            qemu_exit.duration_since(pressed).as_secs_f64()
        ),
    );
    let mut slow = Vec::new();
    for (&i, seen) in first.iter().zip(&gone) {
        if i == victim {
            continue;
        }
        let name = lab.node(i)?.name().to_owned();
        let after = seen.at.duration_since(pressed);
        let state = entry(&seen.map, victim_addr)?.map(|e| e["state"].clone());
        note(
            summary,
            format!(
                "{name}: {victim_name} is {} {:.1} s after the power button ({:.1} s after QEMU exited)",
                state.unwrap_or(Value::Null),
                after.as_secs_f64(),
                seen.at.saturating_duration_since(qemu_exit).as_secs_f64()
            ),
        );
        if after >= FAILURE_BOUND {
            slow.push(format!("{name}: {:.1} s", after.as_secs_f64()));
        }
    }
    ensure!(
        slow.is_empty(),
        "{victim_name} was declared dead or left later than {} s after the power button: {slow:?}",
        FAILURE_BOUND.as_secs()
    );
    let live: Vec<usize> = first.iter().copied().filter(|&i| i != victim).collect();
    let live_addrs: BTreeSet<Ipv4Addr> = addrs.keys().copied().filter(|&a| a != victim_addr).collect();

    // 4. A fifth node booted later joins: every live node lists it, it lists them.
    let fifth = boot(lab, "member5", None)?;
    let newcomer = Newcomer::default();
    let mut watching = live.clone();
    watching.push(fifth);
    let joined = on_nodes(lab, &watching, |i, node| {
        if i == fifth {
            let ready = newcomer.ready(wait_ready_timed(node))?;
            let mut want = live_addrs.clone();
            want.insert(ready.addr);
            return poll_map(node, ready.at + READY_FROM_KERNEL + OVERRUN, |map| {
                Ok(member_addrs(map)? == want)
            });
        }
        let ready = newcomer.wait()?;
        poll_map(node, ready.at + JOIN_BOUND + OVERRUN, |map| {
            Ok(member_addrs(map)?.contains(&ready.addr))
        })
    })?;
    let fifth_ready = newcomer.wait()?;
    let mut live = live;
    live.push(fifth);
    let mut live_addrs = live_addrs;
    live_addrs.insert(fifth_ready.addr);
    let mut late = Vec::new();
    for (&i, seen) in watching.iter().zip(&joined) {
        let name = lab.node(i)?.name().to_owned();
        let after = seen.at.saturating_duration_since(fifth_ready.at);
        note(
            summary,
            format!(
                "{name}: lists member5 ({}) and the other live nodes {:.1} s after member5's ready line",
                fifth_ready.addr,
                after.as_secs_f64()
            ),
        );
        let own = if i == fifth {
            fifth_ready.addr
        } else {
            *addrs
                .iter()
                .find(|(_, &n)| n == i)
                .context("an address for every first node")?
                .0
        };
        check_members(&name, &seen.map, &live_addrs, own, &fingerprint)?;
        if after >= JOIN_BOUND {
            late.push(format!("{name}: {:.1} s", after.as_secs_f64()));
        }
    }
    ensure!(
        late.is_empty(),
        "member5 was listed later than {} s after its lease: {late:?}",
        JOIN_BOUND.as_secs()
    );
    // The dead node has left the map; the newcomer is in it, the same on every live node.
    check_mosix_maps(lab, &live, &live_addrs, summary)?;

    // 5. A sixth node with another key is refused by all: never a member, listed as foreign with
    // dropped datagrams; it says so itself, and lists the others as foreign.
    let other_key = random_key()?;
    let sixth = boot(lab, "stranger", Some(format!("clump.key={other_key}")))?;
    let stranger = Newcomer::default();
    let mut watching = live.clone();
    watching.push(sixth);
    let refused = on_nodes(lab, &watching, |i, node| {
        if i == sixth {
            let ready = stranger.ready(wait_ready_timed(node))?;
            let seen = poll_file_map(node, ready.at + FOREIGN_BOUND + OVERRUN, |map| {
                Ok(!foreign(map)?.is_empty())
            })?;
            let warn = wait_for_log(
                node,
                r"clumpd: .*\bWARN\b.*refused datagrams from=",
                seen.at + OVERRUN,
            )?;
            return Ok((seen, Some(warn)));
        }
        let ready = stranger.wait()?;
        let name = node.name().to_owned();
        let seen = poll_map(node, ready.at + FOREIGN_BOUND + OVERRUN, |map| {
            ensure!(
                entry(map, ready.addr)?.is_none(),
                "{name} lists the node with another key ({}) as a node:\n{map:#}",
                ready.addr
            );
            Ok(foreign(map)?
                .iter()
                .any(|(a, dropped)| *a == ready.addr && *dropped > 0))
        })?;
        Ok((seen, None))
    })?;
    let stranger_ready = stranger.wait()?;
    let mut slow = Vec::new();
    for (&i, (seen, warn)) in watching.iter().zip(&refused) {
        let node = lab.node(i)?;
        let name = node.name().to_owned();
        let after = seen.at.saturating_duration_since(stranger_ready.at);
        if i == sixth {
            let others: Vec<_> = foreign(&seen.map)?;
            ensure!(
                others.iter().all(|(a, _)| live_addrs.contains(a)) && others.iter().any(|(_, d)| *d > 0),
                "stranger: its foreign list is not the live nodes with dropped > 0: {others:?}\n{:#}",
                seen.map
            );
            ensure!(
                member_addrs(&seen.map)?.is_disjoint(&live_addrs),
                "stranger lists members of the other cluster as members:\n{:#}",
                seen.map
            );
            ensure!(
                seen.map["key_fingerprint"] != Value::String(fingerprint.clone()),
                "stranger runs with the image's key (fingerprint {fingerprint}), not its clump.key="
            );
            note(
                summary,
                format!(
                    "stranger ({}): lists {} foreign address(es) {:.1} s after its ready line; `{}`",
                    stranger_ready.addr,
                    others.len(),
                    after.as_secs_f64(),
                    warn.as_deref().unwrap_or("").trim()
                ),
            );
        } else {
            let dropped = foreign(&seen.map)?
                .into_iter()
                .find(|(a, _)| *a == stranger_ready.addr)
                .map_or(0, |(_, d)| d);
            note(
                summary,
                format!(
                    "{name}: lists the stranger as foreign (dropped={dropped}) {:.1} s after its ready line",
                    after.as_secs_f64()
                ),
            );
        }
        if after >= FOREIGN_BOUND {
            slow.push(format!("{name}: {:.1} s", after.as_secs_f64()));
        }
    }
    ensure!(
        slow.is_empty(),
        "the node with another key was not refused within {} s: {slow:?}",
        FOREIGN_BOUND.as_secs()
    );
    // The stranger's key came on its command line, which every user can read: PID 1 moved it
    // into the root-only key file (the fingerprint check above shows clumpd has it). A user
    // sees neither it nor the node's processes.
    let node = lab.node(sixth)?;
    let (_, seen) = node.shell(
        "cat /proc/cmdline; ls -l /etc/clump/cluster.key; setpriv --reuid=1000 --regid=1000 --clear-groups sh -c 'echo self=$$; ls /proc' | tr '\\n' ' '",
        SHELL,
    )?;
    ensure!(
        !seen.contains("clump.key=") && seen.contains("console="),
        "stranger: /proc/cmdline still shows clump.key= (or is empty):\n{seen}"
    );
    ensure!(
        seen.contains("-rw-------"),
        "stranger: the key file is not root's alone:\n{seen}"
    );
    let (self_pid, listed) = seen
        .split_once("self=")
        .and_then(|(_, after)| after.split_once(char::is_whitespace))
        .context("no self= line")?;
    let pids: Vec<&str> = listed
        .split_whitespace()
        .filter(|w| w.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    ensure!(
        pids.contains(&self_pid) && !pids.contains(&"1") && pids.len() <= 3,
        "stranger: a user sees processes not their own in /proc: {pids:?}\n{seen}"
    );
    note(
        summary,
        "stranger: /proc/cmdline without its key; a user sees only their own processes".into(),
    );
    // Still not a member anywhere, once more at the end.
    for &i in &live {
        let node = lab.node(i)?;
        let map = read_map(node)?;
        ensure!(
            entry(&map, stranger_ready.addr)?.is_none(),
            "{} lists the node with another key at the end:\n{map:#}",
            node.name()
        );
    }
    note(
        summary,
        format!(
            "scenario done {:.1} s after the lab started",
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(())
}

/// Starts a node booted from `out/pxe` on the lab's bridge, with extra kernel options if given.
fn boot(lab: &mut Lab, name: &str, cmdline: Option<String>) -> Result<usize> {
    let mut spec = NodeSpec::from_artefacts(name, Boot::Kernel, &Artefacts::from_env())?
        .memory_mib(NODE_MEMORY_MIB)
        .cpus(1)
        .nic(NicModel::VirtioNetPci);
    if let Some(option) = cmdline {
        spec = spec.cmdline(option);
    }
    let index = lab.start_node(spec)?;
    eprintln!("{name}: booting the kernel directly in the lab");
    Ok(index)
}

/// A node's `clump: ready` line, when the lab saw it, and its address.
#[derive(Debug, Clone, Copy)]
struct ReadyAt {
    at: Instant,
    addr: Ipv4Addr,
}

/// Waits for the ready line (a DHCP lease is required) and notes when it was seen.
fn wait_ready_timed(node: &mut Node) -> Result<ReadyAt> {
    let line = node.wait_for_line(r"clump: ready\b", READY_FROM_KERNEL)?;
    let at = Instant::now();
    let ready = parse_ready(&line)?;
    ensure!(ready.via == "dhcp", "{}: not a DHCP lease: {line}", node.name());
    eprintln!(
        "{}: `{line}` {:.1} s after QEMU started",
        node.name(),
        node.uptime().as_secs_f64()
    );
    Ok(ReadyAt { at, addr: ready.addr })
}

/// A node booted while others watch for it: its thread publishes its ready line, theirs wait for it.
#[derive(Default)]
struct Newcomer {
    ready: OnceLock<ReadyAt>,
    failed: AtomicBool,
}

impl Newcomer {
    fn ready(&self, ready: Result<ReadyAt>) -> Result<ReadyAt> {
        match ready {
            Ok(r) => {
                let _ = self.ready.set(r);
                Ok(r)
            }
            Err(e) => {
                self.failed.store(true, Ordering::SeqCst);
                Err(e)
            }
        }
    }

    fn wait(&self) -> Result<ReadyAt> {
        let deadline = Instant::now() + READY_FROM_KERNEL + Duration::from_secs(10);
        loop {
            if let Some(r) = self.ready.get() {
                return Ok(*r);
            }
            ensure!(
                !self.failed.load(Ordering::SeqCst),
                "the new node never became ready"
            );
            ensure!(Instant::now() < deadline, "the new node never became ready");
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A map and when the read that returned it ended.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    map: Value,
}

/// Reads `clump nodes --json` until `done` says yes (an error from `done` ends the wait at once);
/// reads that fail (the daemon not up yet, a garbled copy) are retried until `deadline`.
fn poll_map(node: &mut Node, deadline: Instant, done: impl FnMut(&Value) -> Result<bool>) -> Result<Seen> {
    poll(node, deadline, "`clump nodes --json`", read_map, done)
}

/// The same with `/run/clump/nodes.json` itself.
fn poll_file_map(
    node: &mut Node,
    deadline: Instant,
    done: impl FnMut(&Value) -> Result<bool>,
) -> Result<Seen> {
    poll(node, deadline, "/run/clump/nodes.json", read_nodes_file, done)
}

fn poll(
    node: &mut Node,
    deadline: Instant,
    what: &str,
    mut read: impl FnMut(&mut Node) -> Result<Value>,
    mut done: impl FnMut(&Value) -> Result<bool>,
) -> Result<Seen> {
    loop {
        let map = read(node);
        let at = Instant::now();
        if let Ok(m) = &map {
            if done(m)? {
                return Ok(Seen { at, map: m.clone() });
            }
        }
        if Instant::now() >= deadline {
            let name = node.name().to_owned();
            return Err(match map {
                Ok(m) => anyhow!("{name}: {what} never showed what was expected; last read:\n{m:#}"),
                Err(e) => e.context(format!("{name}: {what} never showed what was expected")),
            });
        }
        thread::sleep(POLL_PAUSE);
    }
}

/// `clump nodes --json` on the node: the node map (the shape of `nodes.json`).
fn read_map(node: &mut Node) -> Result<Value> {
    read_json(node, "clump nodes --json")
}

/// `/run/clump/nodes.json` on the node.
fn read_nodes_file(node: &mut Node) -> Result<Value> {
    read_json(node, "cat /run/clump/nodes.json")
}

/// Runs `command` and parses its output as one JSON object with a `nodes` list. The console is
/// shared with the log lines of PID 1 and clumpd, which are left out (whole lines); a copy that
/// still does not parse is read again (at most 3 times; the serial console once showed a stray
/// byte in `lease.json`), and the bad copy reported.
fn read_json(node: &mut Node, command: &str) -> Result<Value> {
    let log_line = Regex::new(r"^(clump# )?clumpd?: ")?;
    let mut tries = 0;
    loop {
        tries += 1;
        let (code, text) = node.shell(command, SHELL)?;
        ensure!(code == 0, "{}: `{command}` exited {code}:\n{text}", node.name());
        let json: String = text
            .lines()
            .filter(|l| !log_line.is_match(l))
            .collect::<Vec<_>>()
            .join("\n");
        match serde_json::from_str::<Value>(&json) {
            Ok(map) if map["nodes"].is_array() => return Ok(map),
            Ok(other) => bail!(
                "{}: `{command}` printed JSON without a `nodes` list:\n{other:#}",
                node.name()
            ),
            Err(e) if tries < 3 => {
                eprintln!(
                    "{}: `{command}` read as bad JSON ({e}), reading it again:\n{text}",
                    node.name()
                );
            }
            Err(e) => {
                return Err(e).with_context(|| format!("{}: `{command}` is not JSON:\n{text}", node.name()))
            }
        }
    }
}

/// The entries of the map's `nodes` list in a member state (self, alive, suspect, leaving), by
/// address.
fn members(map: &Value) -> Result<BTreeMap<Ipv4Addr, Value>> {
    let mut out = BTreeMap::new();
    for e in map["nodes"].as_array().context("no nodes list")? {
        let state = e["state"].as_str().unwrap_or("");
        if !MEMBER.contains(&state) {
            continue;
        }
        let addr: Ipv4Addr = e["address"]
            .as_str()
            .with_context(|| format!("a member without an address: {e}"))?
            .parse()
            .with_context(|| format!("a member with a bad address: {e}"))?;
        out.insert(addr, e.clone());
    }
    Ok(out)
}

fn member_addrs(map: &Value) -> Result<BTreeSet<Ipv4Addr>> {
    Ok(members(map)?.into_keys().collect())
}

/// The `nodes` entry with this address, in any state.
fn entry(map: &Value, addr: Ipv4Addr) -> Result<Option<Value>> {
    let want = addr.to_string();
    Ok(map["nodes"]
        .as_array()
        .context("no nodes list")?
        .iter()
        .find(|e| e["address"].as_str() == Some(want.as_str()))
        .cloned())
}

/// The `foreign` list: (address, dropped).
fn foreign(map: &Value) -> Result<Vec<(Ipv4Addr, u64)>> {
    let Some(list) = map["foreign"].as_array() else {
        bail!("no foreign list in the map:\n{map:#}");
    };
    list.iter()
        .map(|f| {
            let addr = f["address"]
                .as_str()
                .with_context(|| format!("a foreign entry without an address: {f}"))?
                .parse()
                .with_context(|| format!("a foreign entry with a bad address: {f}"))?;
            Ok((addr, f["dropped"].as_u64().unwrap_or(0)))
        })
        .collect()
}

/// What a user checks in a node's map once it has found the others: exactly `want` as members, all
/// alive but itself (`self`, at `own`), numbers that are the addresses' host parts, the node
/// `joined`, under the image's key.
fn check_members(
    name: &str,
    map: &Value,
    want: &BTreeSet<Ipv4Addr>,
    own: Ipv4Addr,
    fingerprint: &str,
) -> Result<()> {
    let members = members(map)?;
    let got: BTreeSet<Ipv4Addr> = members.keys().copied().collect();
    ensure!(
        got == *want,
        "{name}: members {got:?}, expected {want:?}:\n{map:#}"
    );
    for (addr, e) in &members {
        let state = e["state"].as_str().unwrap_or("");
        let expected = if *addr == own { "self" } else { "alive" };
        ensure!(
            state == expected,
            "{name}: {addr} is {state}, expected {expected}:\n{map:#}"
        );
        let number = u64::from(addr.octets()[3]);
        ensure!(
            e["number"].as_u64() == Some(number),
            "{name}: {addr} has number {}, expected {number} (the host part of a /24 address)",
            e["number"]
        );
    }
    ensure!(
        map["state"] == "joined",
        "{name}: map state {}, expected joined",
        map["state"]
    );
    ensure!(
        map["key_fingerprint"].as_str() == Some(fingerprint),
        "{name}: key fingerprint {}, but build.sh recorded {fingerprint} in manifest.json",
        map["key_fingerprint"]
    );
    Ok(())
}

/// `/etc/clump/mosix.map` on every node in `nodes`: the same lines everywhere (comments aside),
/// covering exactly the addresses in `want`, each with its host part as number. Read again until
/// that holds, for up to JOIN_BOUND (the map is rewritten when membership changes).
fn check_mosix_maps(
    lab: &mut Lab,
    nodes: &[usize],
    want: &BTreeSet<Ipv4Addr>,
    summary: &Mutex<String>,
) -> Result<()> {
    let expected: Covered = want.iter().map(|a| (u32::from(a.octets()[3]), *a)).collect();
    let deadline = Instant::now() + JOIN_BOUND;
    loop {
        let maps = on_nodes(lab, nodes, |_, node| {
            let (code, text) = node.shell("cat /etc/clump/mosix.map", SHELL)?;
            ensure!(code == 0, "{}: no /etc/clump/mosix.map:\n{text}", node.name());
            Ok((node.name().to_owned(), text))
        })?;
        let mut problems = Vec::new();
        let mut first_lines: Option<Vec<String>> = None;
        for (name, text) in &maps {
            let (lines, covered) = match parse_mosix_map(text) {
                Ok(x) => x,
                Err(e) => {
                    problems.push(format!("{name}: {e:#}"));
                    continue;
                }
            };
            if covered != expected {
                problems.push(format!(
                    "{name}: covers {covered:?}, expected {expected:?}:\n{text}"
                ));
            }
            match &first_lines {
                None => first_lines = Some(lines),
                Some(f) if *f != lines => problems.push(format!("{name}: lines {lines:?} differ from {f:?}")),
                Some(_) => {}
            }
        }
        if problems.is_empty() {
            note(
                summary,
                format!(
                    "mosix.map is the same on {} nodes: {:?}",
                    maps.len(),
                    first_lines.unwrap_or_default()
                ),
            );
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "mosix.map is not the same live set on every node:\n{}",
            problems.join("\n")
        );
        thread::sleep(Duration::from_secs(1));
    }
}

/// Node numbers and addresses, as a mosix.map covers them.
type Covered = BTreeSet<(u32, Ipv4Addr)>;

/// A mosix.map's map lines (comments and blank lines left out) and the (number, address) pairs they
/// cover. Each line is `first-number first-address count` (ARCHITECTURE.md, "Files").
fn parse_mosix_map(text: &str) -> Result<(Vec<String>, Covered)> {
    let log_line = Regex::new(r"^(clump# )?clumpd?: ")?;
    let mut lines = Vec::new();
    let mut covered = BTreeSet::new();
    for raw in text.lines() {
        if log_line.is_match(raw) {
            continue;
        }
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [first, addr, count] = fields[..] else {
            bail!("not `first-number first-address count`: {raw:?}");
        };
        let first: u32 = first.parse().with_context(|| format!("bad number in {raw:?}"))?;
        let addr: Ipv4Addr = addr.parse().with_context(|| format!("bad address in {raw:?}"))?;
        let count: u32 = count.parse().with_context(|| format!("bad count in {raw:?}"))?;
        ensure!(count >= 1, "a line of no nodes: {raw:?}");
        for k in 0..count {
            let a = Ipv4Addr::from(u32::from(addr).checked_add(k).context("address overflow")?);
            covered.insert((first + k, a));
        }
        lines.push(fields.join(" "));
    }
    Ok((lines, covered))
}

/// Waits until a line of the node's serial log (any line, from the start) matches `pattern`.
fn wait_for_log(node: &mut Node, pattern: &str, deadline: Instant) -> Result<String> {
    let re = Regex::new(pattern)?;
    loop {
        if let Some(line) = node.log_lines()?.iter().find(|l| re.is_match(l)) {
            return Ok(line.clone());
        }
        ensure!(
            Instant::now() < deadline,
            "{}: no console line matches {pattern:?} (see {})",
            node.name(),
            node.serial_log().display()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `f` on each node in `indices` at once (a thread each: a node's shell is slow under TCG and
/// the measurements need every node read continuously). Returns the results in `indices` order, or
/// every node's error.
fn on_nodes<T: Send>(
    lab: &mut Lab,
    indices: &[usize],
    f: impl Fn(usize, &mut Node) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let f = &f;
    let mut results: Vec<(usize, String, Result<T>)> = thread::scope(|s| {
        let handles: Vec<_> = lab
            .nodes_mut()
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| indices.contains(i))
            .map(|(i, node)| {
                let name = node.name().to_owned();
                (i, name, s.spawn(move || f(i, node)))
            })
            .collect();
        handles
            .into_iter()
            .map(|(i, name, h)| {
                let r = h
                    .join()
                    .unwrap_or_else(|_| Err(anyhow!("the thread for {name} panicked")));
                (i, name, r)
            })
            .collect()
    });
    ensure!(
        results.len() == indices.len(),
        "the lab has no node for some of {indices:?}"
    );
    results.sort_by_key(|(i, _, _)| indices.iter().position(|j| j == i));
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for (_, name, r) in results {
        match r {
            Ok(v) => out.push(v),
            Err(e) => errors.push(format!("{name}: {e:#}")),
        }
    }
    ensure!(errors.is_empty(), "{}", errors.join("\n\n"));
    Ok(out)
}

/// The fingerprint build.sh recorded for the image's key (`cluster_key.fingerprint` in manifest.json).
fn image_key_fingerprint(artefacts: &Artefacts) -> Result<String> {
    let path = artefacts.out_dir().join("manifest.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let manifest: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    manifest["cluster_key"]["fingerprint"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| {
            format!(
                "{} has no cluster_key.fingerprint: run ./build.sh all",
                path.display()
            )
        })
}

/// A fresh 256-bit key as 64 hex digits, for a node of another cluster.
fn random_key() -> Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Copies each node's serial log and, from each running node, its final `nodes.json` into `dir`,
/// with dnsmasq's log and the summary.
fn save_artefacts(lab: &mut Lab, dir: &Path, summary: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("summary.txt"), summary)?;
    let copy = |from: &Path, to: PathBuf| -> Result<()> {
        std::fs::copy(from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        Ok(())
    };
    let mut errors = Vec::new();
    if let Err(e) = copy(&lab.layout().dnsmasq_log.clone(), dir.join("dnsmasq.log")) {
        errors.push(format!("{e:#}"));
    }
    for node in lab.nodes_mut() {
        let name = node.name().to_owned();
        if let Err(e) = copy(node.serial_log(), dir.join(format!("{name}.serial.log"))) {
            errors.push(format!("{e:#}"));
        }
        if !matches!(node.try_wait(), Ok(None)) {
            continue; // powered off: only its serial log
        }
        match node.shell("cat /run/clump/nodes.json", SHELL) {
            Ok((0, text)) => std::fs::write(dir.join(format!("{name}.nodes.json")), text)?,
            Ok((code, text)) => errors.push(format!("{name}: cat nodes.json exited {code}: {text}")),
            Err(e) => errors.push(format!("{name}: {e:#}")),
        }
        // The serial log again: the last read is in it.
        let _ = copy(node.serial_log(), dir.join(format!("{name}.serial.log")));
    }
    ensure!(errors.is_empty(), "{}", errors.join("\n"));
    Ok(())
}

#[test]
fn mosix_map_lines_expand_to_numbers_and_addresses() -> Result<()> {
    let text = "# clumpd: the live nodes\n\
                clumpd: [12.345] INFO a log line on the console\n\
                \n\
                101 10.64.3.101 2\n\
                150   10.64.3.150 1 # trailing comment\n";
    let (lines, covered) = parse_mosix_map(text)?;
    assert_eq!(lines, ["101 10.64.3.101 2", "150 10.64.3.150 1"]);
    let want: Covered = [(101, "10.64.3.101"), (102, "10.64.3.102"), (150, "10.64.3.150")]
        .into_iter()
        .map(|(n, a)| Ok((n, a.parse()?)))
        .collect::<Result<_>>()?;
    assert_eq!(covered, want);
    assert!(parse_mosix_map("1 10.0.0.1").is_err());
    assert!(parse_mosix_map("1 10.0.0.1 0").is_err());
    assert!(parse_mosix_map("ALIAS 10.0.0.1 1").is_err());
    Ok(())
}

#[test]
fn members_and_foreign_entries_are_read_from_a_map() -> Result<()> {
    let map: Value = serde_json::from_str(
        r#"{"version":1,"state":"joined","nodes":[
            {"id":"a","number":5,"address":"10.0.0.5","state":"self"},
            {"id":"b","number":6,"address":"10.0.0.6","state":"alive"},
            {"id":"c","number":7,"address":"10.0.0.7","state":"dead"},
            {"id":"d","number":8,"address":"10.0.0.8","state":"suspect"}],
          "foreign":[{"address":"10.0.0.9","dropped":3,"last_ms":1}]}"#,
    )?;
    let want: BTreeSet<Ipv4Addr> = ["10.0.0.5", "10.0.0.6", "10.0.0.8"]
        .iter()
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    assert_eq!(member_addrs(&map)?, want);
    assert_eq!(
        entry(&map, "10.0.0.7".parse()?)?.map(|e| e["state"].clone()),
        Some("dead".into())
    );
    assert_eq!(foreign(&map)?, [("10.0.0.9".parse()?, 3)]);
    Ok(())
}
