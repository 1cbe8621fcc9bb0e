//! Live migration (issue 6): `clump run --on NODE` runs a CPU-bound job there with its output
//! and status at home; a signal from home reaches a job on another node; a job with a socket is
//! pinned (`clump ps` says why, the move is refused); a job holding 256 MiB of changing memory
//! moves there and back with pre-copy (rounds while it runs, then frozen for less than the
//! whole move) and finds every page as it left it; a job that prints a counter every 100 ms is
//! moved, while it runs,
//! from its home node to a second node, from there to a third, and back home, with CRIU on the
//! nodes' Debian kernel and the images on authenticated streams between the nodes. The output
//! read at home is complete and in order (no gap, no repeat), the exit status is the job's, and
//! each node's `clump ps` tells where the job is.
//!
//! Input written to a job before a move and not read yet is read after it. A job working in a
//! directory of its own takes it along (an open input file included) and its
//! output comes back to home's copy when it ends. A source node that loses power after the move
//! leaves the job running at the target; a target that loses power during the move leaves it
//! running at the source, once.
//!
//! The serial logs stay in `target/e2e/migration/`.

use anyhow::{bail, ensure, Context, Result};
use clump_e2e::{console_json, parse_ready, sh, start_lab, READY_FROM_KERNEL, SHELL};
use clump_lab::{Artefacts, Boot, LabConfig, NicModel, Node, NodeSpec};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// A move under TCG: dump, images over the bridge, restore (a 256 MiB job with pre-copy sends
/// 400-500 MB at 4-13 MiB/s through the emulated cipher).
const MOVE: Duration = Duration::from_secs(300);
/// Lines the job prints; at ~0.15 s a line under TCG (60 s) it outlasts the three moves (~30 s).
const LINES: u32 = 400;

fn host_part(addr: Ipv4Addr, prefix: u8) -> u32 {
    u32::from(addr) & (u32::MAX >> prefix)
}

/// The jobs of `node` itself (started there, or guests there).
fn ps(node: &mut Node) -> Result<Vec<Value>> {
    parse_ps(&sh(node, "clump ps --local --json")?)
}

/// The jobs of the cluster, as `node` gathers them.
fn cluster_ps(node: &mut Node) -> Result<Vec<Value>> {
    parse_ps(&sh(node, "clump ps --json")?)
}

fn parse_ps(text: &str) -> Result<Vec<Value>> {
    let list = console_json(text, '[', ']').context("`clump ps --json`")?;
    serde_json::from_value(list).context("`clump ps --json` is not a list")
}

fn job<'a>(jobs: &'a [Value], id: &str) -> Option<&'a Value> {
    jobs.iter().find(|j| j["id"] == id)
}

/// Runs a move; returns `clump migrate`'s line about it.
fn migrate(node: &mut Node, command: &str) -> Result<String> {
    let (code, out) = node.shell(command, MOVE)?;
    ensure!(
        code == 0 && out.contains("moved"),
        "`{command}` failed ({code}):\n{out}"
    );
    let said = out
        .lines()
        .find(|l| l.starts_with("job ") && l.contains(" moved "))
        .unwrap_or_default();
    eprintln!("migration: {said}");
    Ok(said.to_owned())
}

/// From "... in T ms (frozen F ms, ...": (T, F).
fn move_times(said: &str) -> Option<(u64, u64)> {
    let total = said.split(" in ").nth(1)?.split(' ').next()?.parse().ok()?;
    let frozen = said.split("(frozen ").nth(1)?.split(' ').next()?.parse().ok()?;
    Some((total, frozen))
}

#[test]
fn a_running_job_moves_home_to_two_to_three_to_home_with_its_output_complete_and_in_order() -> Result<()> {
    let mut lab = start_lab("migration", LabConfig::default())?;
    let mut addrs = Vec::new();
    let mut prefix = 24;
    for i in 1..=3 {
        // Room for a 256 MiB job, its pre-copy rounds in the source's tmpfs and all of them
        // in the target's.
        let spec = NodeSpec::from_artefacts(format!("mig{i}"), Boot::Kernel, &Artefacts::from_env())?
            .memory_mib(1536)
            .nic(NicModel::VirtioNetPci)
            // Every move here is asked for (the balancer's own are tested in `balance`), and a
            // checkpoint's freeze would blur the figures (recovery has its own test).
            .cmdline("clump.balance=off clump.checkpoint=off");
        lab.start_node(spec)?;
    }
    for i in 0..3 {
        let ready = parse_ready(&lab.node(i)?.wait_for_line(r"clump: ready\b", READY_FROM_KERNEL)?)?;
        ensure!(ready.via == "dhcp", "node {i} has no DHCP lease");
        prefix = ready.prefix_len;
        addrs.push(ready.addr);
    }
    let numbers: Vec<u32> = addrs.iter().map(|a| host_part(*a, prefix)).collect();

    // Every node knows the others before anything moves.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let map = sh(lab.node(0)?, "clump nodes --json")?;
        if addrs.iter().all(|a| map.contains(&format!("\"{a}\""))) && map.matches("\"alive\"").count() >= 2 {
            break;
        }
        if Instant::now() > deadline {
            bail!("node 1 does not list the other two:\n{map}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }

    // Placement: a CPU-bound job started with --on runs there (it reads the boot id of the
    // node it runs on: every boot has its own) and its output and status arrive here.
    let boot2 = sh(lab.node(1)?, "echo boot=$(cat /proc/sys/kernel/random/boot_id)")?;
    let boot2 = boot2
        .lines()
        .find_map(|l| l.trim().strip_prefix("boot="))
        .filter(|id| id.len() == 36)
        .with_context(|| format!("no boot id from node 2: {boot2}"))?
        .to_owned();
    let (code, out) = lab.node(0)?.shell(
        &format!(
            "cd / && clump run --on {} -- sh -c 'i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo counted $i on $(cat /proc/sys/kernel/random/boot_id); exit 4'",
            addrs[1]
        ),
        MOVE,
    )?;
    ensure!(
        code == 4 && out.contains(&format!("counted 200000 on {boot2}")),
        "`clump run --on` did not run on node 2 (boot {boot2}) or lost its status ({code}):\n{out}"
    );

    // A signal reaches a job on another node: `clump kill` at home, `clump wait` says how it died.
    let remote = sh(
        lab.node(0)?,
        &format!("cd / && clump run --detach --on {} -- sleep 600", addrs[2]),
    )?;
    let remote = clump_lab::job_id(&remote).with_context(|| format!("no job id:\n{remote}"))?;
    let there = ps(lab.node(2)?)?;
    ensure!(
        job(&there, &remote).is_some_and(|j| j["state"] == "running"),
        "node 3 does not run {remote}: {there:?}"
    );
    sh(lab.node(0)?, &format!("clump kill -s INT {remote}"))?;
    let (code, text) = lab.node(0)?.shell(&format!("clump wait {remote}"), SHELL)?;
    ensure!(
        code == 130,
        "a remote job killed with INT: `clump wait` exited {code}, not 130:\n{text}"
    );

    // A job with a socket open (busybox httpd listening) is pinned: `clump ps` says why, and a
    // move is refused and leaves it running at home.
    let pinned = sh(
        lab.node(0)?,
        "cd / && clump run --detach --home -- httpd -f -p 5555 -h /",
    )?;
    let pinned = clump_lab::job_id(&pinned).with_context(|| format!("no job id:\n{pinned}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let why = format!("job {pinned} stays where it is: it has a socket open");
    while !sh(lab.node(0)?, "clump ps")?.contains(&why) {
        ensure!(
            Instant::now() < deadline,
            "`clump ps` never said why job {pinned} is pinned"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let (code, out) = lab
        .node(0)?
        .shell(&format!("clump migrate {pinned} {}", addrs[1]), MOVE)?;
    ensure!(
        code != 0 && out.contains("cannot move"),
        "a pinned job was moved ({code}):\n{out}"
    );
    let home = ps(lab.node(0)?)?;
    ensure!(
        job(&home, &pinned).is_some_and(|j| j["state"] == "running" && j["node"] == numbers[0]),
        "the pinned job did not stay running at home: {home:?}"
    );
    sh(lab.node(0)?, &format!("clump kill {pinned}"))?;

    // Memory: a job holding 256 MiB that keeps changing moves there and back with pre-copy;
    // told to end (TERM), it checks every page against what it last wrote.
    let mem = sh(
        lab.node(0)?,
        "cd / && clump run --detach --home -- clump-work mem --mib 256 --seconds 1200",
    )?;
    let mem = clump_lab::job_id(&mem).with_context(|| format!("no job id:\n{mem}"))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !sh(lab.node(0)?, &format!("clump output {mem} | head -n 1"))?.contains("ready 256 MiB") {
        ensure!(Instant::now() < deadline, "clump-work never filled its 256 MiB");
        std::thread::sleep(Duration::from_secs(1));
    }
    let check_precopy = |command: &str, said: &str| -> Result<()> {
        let (total, frozen) =
            move_times(said).with_context(|| format!("no times in `{command}`'s answer: {said}"))?;
        ensure!(
            said.contains("copying while it ran") && frozen < total,
            "`{command}` did not pre-copy (frozen {frozen} of {total} ms): {said}"
        );
        Ok(())
    };
    let there = format!("clump migrate {mem} {}", addrs[1]);
    check_precopy(&there, &migrate(lab.node(0)?, &there)?)?;
    // Back home; then TERM: the job checks its pages and ends. (TERM sent during this move
    // made the restore at home fail in 3 of 3 runs: an open bug, see the issue note.)
    let home = format!("clump home {mem}");
    check_precopy(&home, &migrate(lab.node(0)?, &home)?)?;
    sh(lab.node(0)?, &format!("clump kill -s TERM {mem}"))?;
    let (code, text) = lab
        .node(0)?
        .shell(&format!("clump wait {mem}"), Duration::from_secs(300))?;
    let (_, out) = lab
        .node(0)?
        .shell(&format!("clump output {mem} | tail -n 2"), SHELL)?;
    ensure!(
        code == 0 && out.contains("memory ok: 256 MiB"),
        "the memory job after two moves ({code}):\n{text}\n{out}"
    );

    let start = sh(
        lab.node(0)?,
        &format!("cd / && clump run --detach --home -- sh -c 'i=0; while [ $i -lt {LINES} ]; do echo $i; i=$((i+1)); sleep 0.1; done; exit 7'"),
    )?;
    let id = clump_lab::job_id(&start)
        .with_context(|| format!("`clump run --detach` printed no job id:\n{start}"))?;
    std::thread::sleep(Duration::from_secs(3));

    migrate(lab.node(0)?, &format!("clump migrate {id} {}", addrs[1]))?;
    let guest = ps(lab.node(1)?)?;
    let g = job(&guest, &id).with_context(|| format!("node 2 does not list job {id}: {guest:?}"))?;
    ensure!(
        g["state"] == "running" && g["node"] == numbers[1] && g["home"] == numbers[0],
        "{g}"
    );
    let home = ps(lab.node(0)?)?;
    let h = job(&home, &id).context("home lost the job")?;
    ensure!(
        h["state"] == "running" && h["node"] == numbers[1],
        "home says {h}"
    );
    // Node 3, which never had the job, lists it too: once, as its home tells it.
    let all = cluster_ps(lab.node(2)?)?;
    let seen: Vec<&Value> = all.iter().filter(|j| j["id"] == id).collect();
    ensure!(
        seen.len() == 1
            && seen[0]["node"] == numbers[1]
            && seen[0]["home"] == numbers[0]
            && seen[0]["migrations"] == 1,
        "the cluster's ps from node 3: {all:?}"
    );
    std::thread::sleep(Duration::from_secs(3));

    migrate(lab.node(0)?, &format!("clump migrate {id} {}", addrs[2]))?;
    let third = ps(lab.node(2)?)?;
    ensure!(
        job(&third, &id).is_some_and(|j| j["state"] == "running"),
        "node 3: {third:?}"
    );
    let second = ps(lab.node(1)?)?;
    ensure!(
        job(&second, &id).is_none(),
        "node 2 still lists the job it let go: {second:?}"
    );
    std::thread::sleep(Duration::from_secs(3));

    migrate(lab.node(0)?, &format!("clump home {id}"))?;
    let home = ps(lab.node(0)?)?;
    let h = job(&home, &id).context("home lost the job")?;
    ensure!(
        h["state"] == "running" && h["node"] == numbers[0] && h["migrations"] == 3,
        "home says {h}"
    );

    let (code, text) = lab
        .node(0)?
        .shell(&format!("clump wait {id}"), Duration::from_secs(300))?;
    ensure!(code == 7, "`clump wait` exited {code}, not the job's 7:\n{text}");
    let (_, output) = lab.node(0)?.shell(
        &format!("clump output {id} | md5sum; seq 0 {} | md5sum", LINES - 1),
        SHELL,
    )?;
    let sums: Vec<&str> = output.lines().filter(|l| l.contains(" -")).collect();
    if sums.len() != 2 || sums[0] != sums[1] {
        let (_, full) = lab
            .node(0)?
            .shell(&format!("clump output {id} | tr '\\n' ' '"), SHELL)?;
        bail!("the output is not 0..{} once each, in order:\n{full}", LINES - 1);
    }

    working_directory_travels_and_comes_back(&mut lab, &addrs)?;
    unread_input_travels(&mut lab, &addrs)?;
    source_powered_off_after_the_move(&mut lab, &addrs)?;
    target_powered_off_during_the_move(&mut lab, &addrs, numbers[0])?;
    lab.shutdown()?;
    Ok(())
}

/// Whether job `id`'s output (read at home) is the lines 0..n-1, once each, in order.
fn output_is_seq(node: &mut Node, id: &str, n: u32) -> Result<bool> {
    let (_, output) = node.shell(
        &format!("clump output {id} | md5sum; seq 0 {} | md5sum", n - 1),
        SHELL,
    )?;
    let sums: Vec<&str> = output.lines().filter(|l| l.contains(" -")).collect();
    Ok(sums.len() == 2 && sums[0] == sums[1])
}

/// A job working in /root/work (not part of the image) with its input file open moves to node
/// 2, reads the input there, writes its output there and ends: the output is in node 1's
/// /root/work with the right content, and node 2 keeps nothing of it.
fn working_directory_travels_and_comes_back(lab: &mut clump_lab::Lab, addrs: &[Ipv4Addr]) -> Result<()> {
    let start = sh(
        lab.node(0)?,
        "mkdir -p /root/work && cd /root/work && seq 1 5000 > in.txt && md5sum < in.txt > /tmp/in.md5 \
         && clump run --detach --home -- sh -c 'exec 3< in.txt; sleep 10; wc -l <&3 > out.txt; md5sum < in.txt >> out.txt; exit 3'",
    )?;
    let id = clump_lab::job_id(&start).with_context(|| format!("no job id:\n{start}"))?;
    migrate(lab.node(0)?, &format!("clump migrate {id} {}", addrs[1]))?;
    let (code, text) = lab
        .node(0)?
        .shell(&format!("clump wait {id}"), Duration::from_secs(120))?;
    ensure!(code == 3, "`clump wait` exited {code}, not the job's 3:\n{text}");
    let out = sh(lab.node(0)?, "cat /root/work/out.txt; echo; cat /tmp/in.md5")?;
    let lines: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("clumpd:"))
        .collect();
    let sum = lines.last().copied().unwrap_or_default();
    ensure!(
        lines.first() == Some(&"5000") && sum.len() > 30 && lines.iter().filter(|l| **l == sum).count() == 2,
        "the job's output at home is not 5000 lines and the input's checksum:\n{out}"
    );
    let left = sh(lab.node(1)?, "ls /root/work 2>&1 | head -n 3; echo end")?;
    ensure!(
        left.contains("No such file"),
        "node 2 kept the job's working directory:\n{left}"
    );
    Ok(())
}

/// Input written to a job that has not read it yet when it moves is read on the new node.
fn unread_input_travels(lab: &mut clump_lab::Lab, addrs: &[Ipv4Addr]) -> Result<()> {
    let start = sh(
        lab.node(0)?,
        "cd / && clump run --detach --home -- sh -c 'sleep 8; read line; echo got $line; exit 5'",
    )?;
    let id = clump_lab::job_id(&start).with_context(|| format!("no job id:\n{start}"))?;
    // Input that stays open: the line waits unread in the pipe while the job moves.
    sh(
        lab.node(0)?,
        &format!("(echo pending-input; sleep 300) | clump attach {id} > /tmp/attach.out 2>&1 &"),
    )?;
    std::thread::sleep(Duration::from_secs(1));
    migrate(lab.node(0)?, &format!("clump migrate {id} {}", addrs[1]))?;
    let (code, text) = lab
        .node(0)?
        .shell(&format!("clump wait {id}"), Duration::from_secs(120))?;
    ensure!(code == 5, "`clump wait` exited {code}, not the job's 5:\n{text}");
    let out = sh(lab.node(0)?, &format!("clump output {id}"))?;
    ensure!(
        out.contains("got pending-input"),
        "the input written before the move was not read after it:\n{out}"
    );
    sh(lab.node(0)?, "pkill -f 'sleep 300'; true")?;
    Ok(())
}

/// A job of node 1 moved from node 2 to node 3; then node 2 loses power: the job runs on at
/// node 3 and ends with its whole output at home.
fn source_powered_off_after_the_move(lab: &mut clump_lab::Lab, addrs: &[Ipv4Addr]) -> Result<()> {
    const N: u32 = 300;
    let start = sh(
        lab.node(0)?,
        &format!("cd / && clump run --detach --on {} -- sh -c 'i=0; while [ $i -lt {N} ]; do echo $i; i=$((i+1)); sleep 0.1; done; exit 7'", addrs[1]),
    )?;
    let id = clump_lab::job_id(&start).with_context(|| format!("no job id:\n{start}"))?;
    migrate(lab.node(0)?, &format!("clump migrate {id} {}", addrs[2]))?;
    lab.node(1)?.kill()?;
    eprintln!("migration: node 2 powered off after it moved {id} to node 3");
    ensure!(
        job(&ps(lab.node(2)?)?, &id).is_some_and(|j| j["state"] == "running"),
        "node 3 does not run {id} after node 2 died"
    );
    let (code, text) = lab
        .node(0)?
        .shell(&format!("clump wait {id}"), Duration::from_secs(300))?;
    ensure!(code == 7, "`clump wait` exited {code}, not the job's 7:\n{text}");
    ensure!(
        output_is_seq(lab.node(0)?, &id, N)?,
        "the output of {id} is not 0..{} once each, in order",
        N - 1
    );
    Ok(())
}

/// Node 3 loses power while a 128 MiB job is on its way there from node 1: the move fails,
/// the job runs on at node 1, once, with its memory intact.
fn target_powered_off_during_the_move(lab: &mut clump_lab::Lab, addrs: &[Ipv4Addr], home: u32) -> Result<()> {
    let started = sh(
        lab.node(0)?,
        "cd / && clump run --detach --home -- clump-work mem --mib 128 --seconds 1200",
    )?;
    let id = clump_lab::job_id(&started).with_context(|| format!("no job id:\n{started}"))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !sh(lab.node(0)?, &format!("clump output {id} | head -n 1"))?.contains("ready 128 MiB") {
        ensure!(Instant::now() < deadline, "clump-work never filled its 128 MiB");
        std::thread::sleep(Duration::from_secs(1));
    }
    sh(
        lab.node(0)?,
        &format!(
            "(clump migrate {id} {} > /tmp/move.out 2>&1; echo exit=$? >> /tmp/move.out) &",
            addrs[2]
        ),
    )?;
    // The first pre-copy round is dumped and on its way.
    let deadline = Instant::now() + MOVE;
    while !lab
        .node(0)?
        .log_lines()?
        .iter()
        .any(|l| l.contains("pre-copy round") && l.contains(&id))
    {
        ensure!(Instant::now() < deadline, "the move of {id} never began");
        std::thread::sleep(Duration::from_millis(200));
    }
    lab.node(2)?.kill()?;
    eprintln!("migration: node 3 powered off while {id} moved there");
    let deadline = Instant::now() + MOVE + Duration::from_secs(60);
    let said = loop {
        let out = sh(lab.node(0)?, "cat /tmp/move.out")?;
        if out.contains("exit=") {
            break out;
        }
        ensure!(
            Instant::now() < deadline,
            "`clump migrate` did not give up on a dead target"
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    ensure!(
        !said.contains("exit=0"),
        "the move to a dead node succeeded:\n{said}"
    );
    eprintln!("migration: the move to the dead node: {}", said.trim());
    let h = ps(lab.node(0)?)?;
    let j = job(&h, &id).context("home lost the job")?;
    ensure!(
        j["state"] == "running" && j["node"] == home && j["migrations"] == 0,
        "the job after its failed move: {j}"
    );
    let ticks = |node: &mut Node| -> Result<u64> {
        let out = sh(node, &format!("clump output {id} | grep -c tick"))?;
        Ok(out
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .next_back()
            .unwrap_or(0))
    };
    let before = ticks(lab.node(0)?)?;
    std::thread::sleep(Duration::from_secs(4));
    let after = ticks(lab.node(0)?)?;
    ensure!(
        after > before,
        "the job is not running on after the failed move ({before} -> {after} ticks)"
    );
    sh(lab.node(0)?, &format!("clump kill -s TERM {id}"))?;
    let (code, text) = lab
        .node(0)?
        .shell(&format!("clump wait {id}"), Duration::from_secs(120))?;
    let (_, out) = lab
        .node(0)?
        .shell(&format!("clump output {id} | tail -n 2"), SHELL)?;
    ensure!(
        code == 0 && out.contains("memory ok: 128 MiB"),
        "the job after the failed move ({code}):\n{text}\n{out}"
    );
    Ok(())
}
