//! Crash recovery (issue 8), in one lab of three nodes that checkpoint their guests every 10 s
//! (`clump.checkpoint=10`; the balancer off, so only the test and the recovery move jobs):
//!
//! - a job of node 1 that runs on node 2 counts in a shell variable and prints a line a
//!   second; once checkpointed, node 2's gossip is blocked (its UDP port, both ways) until the
//!   others declare it dead, and for 15 s more while its TCP streams go on: home keeps the job
//!   where it runs (no restart from the checkpoint, one copy only), and node 2 is back in every
//!   map once the gossip is; then the job is moved to node 3 (a job dumped and resumed before moves
//!   again), checkpointed there twice (so the last checkpoint holds only what changed since
//!   the one before), and node 3 loses power: home restarts the job from its last checkpoint,
//!   and `clump run` on node 1 ends with code 0, every line exactly once and in order, and the
//!   right sum (which only a job that kept its memory across the crash can print);
//! - a job of node 1 that runs on node 2, checkpointed, and node 2 is cut off from the network
//!   (node 3 gone): home restarts the job from its checkpoint on itself while node 2's copy runs
//!   on unseen; once the partition heals node 2's copy ends, and the job's output is every line
//!   once, in order, with its sum;
//! - a job of node 1 that runs on node 2 (within the jobs' memory bound and its task limit
//!   there); node 1 (its home) loses power: the job runs to its end on node 2, and `clump
//!   output` there shows its output, whole and in order.
//!
//! The serial logs stay in `target/e2e/recovery/`.

use anyhow::{ensure, Context, Result};
use clump_e2e::{all_alive, cluster_ps, node_map, running_on, sh, start_lab, state_of, wait_until};
use clump_lab::{Artefacts, Boot, Lab, LabConfig, NicModel, Node, NodeSpec};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// A job printing `line 0` .. `line N-1`, one a second, then the sum of 0..N it kept in memory.
fn counting_job(lines: u32) -> String {
    format!(
        "sh -c 'i=0; s=0; while [ $i -lt {lines} ]; do echo line $i; s=$((s+i)); i=$((i+1)); sleep 1; done; echo sum=$s'"
    )
}

fn expected_sum(lines: u32) -> u32 {
    (0..lines).sum()
}

/// clumpd's cluster port (gossip, hellos, records): UDP, beside the jobs' TCP streams.
const GOSSIP_PORT: u16 = 7171;
/// How long node 2's gossip stays blocked once the others hold it dead.
const FALSE_DEATH: Duration = Duration::from_secs(15);

/// Job `id` as `node` sees it in `clump ps`.
fn job(node: &mut Node, id: &str) -> Result<Option<Value>> {
    Ok(cluster_ps(node)?.into_iter().find(|j| j["id"] == id))
}

/// Node 2 (lab index 1) is dead to the gossip while job `id` of node 1 runs there and its
/// stream to home speaks: the job must stay where it is, once, and keep writing.
fn false_death(lab: &mut Lab, num: &[u64], id: &str) -> Result<()> {
    wait_until("nodes 1 and 3 hold node 2 dead", Duration::from_secs(90), || {
        for i in [0, 2] {
            if state_of(&node_map(lab.node(i)?)?, num[1]).as_deref() != Some("dead") {
                return Ok(false);
            }
        }
        Ok(true)
    })?;
    let written = lines_and_sum(&sh(lab.node(0)?, "cat /tmp/r1.out")?).0.len();
    std::thread::sleep(FALSE_DEATH);
    let j = job(lab.node(0)?, id)?.context("the job is not listed at home")?;
    ensure!(
        j["state"] == "running" && j["node"] == num[1] && j["recovered"].as_u64().unwrap_or(0) == 0,
        "home did not keep the job on node 2, dead to the gossip but with its stream alive: {j}"
    );
    let on = running_on(lab, num, id)?;
    ensure!(on == [num[1]], "the job runs on {on:?}, not once on node 2");
    let now = lines_and_sum(&sh(lab.node(0)?, "cat /tmp/r1.out")?).0.len();
    ensure!(
        now > written,
        "no output reached home in {} s while the gossip held node 2 dead",
        FALSE_DEATH.as_secs()
    );
    Ok(())
}

/// Starts `counting_job(lines)` of node 1 on node 2, its `clump attach` at home writing to
/// `out` (then `exit=<code>`), and waits until home holds a checkpoint of it; returns its id.
fn start_checkpointed(lab: &mut Lab, node2: Ipv4Addr, num: &[u64], lines: u32, out: &str) -> Result<String> {
    let said = sh(
        lab.node(0)?,
        &format!(
            "cd / && clump run --detach --on {node2} -- {}",
            counting_job(lines)
        ),
    )?;
    let id = clump_lab::job_id(&said).with_context(|| format!("no job id:\n{said}"))?;
    sh(
        lab.node(0)?,
        &format!("(clump attach {id} < /dev/null > {out} 2>&1; echo exit=$? >> {out}) &"),
    )?;
    wait_until(
        &format!("job {id} runs on node 2 and home holds a checkpoint of it"),
        Duration::from_secs(120),
        || {
            let j = job(lab.node(0)?, &id)?.context("the job is not listed at home")?;
            Ok(j["node"] == num[1] && j["checkpoint_ms"].is_u64())
        },
    )?;
    Ok(id)
}

/// What `clump attach` wrote to `out` at home, once it has ended.
fn attached_output(lab: &mut Lab, out: &str) -> Result<String> {
    wait_until(
        &format!("`clump attach` into {out} ends"),
        Duration::from_secs(240),
        || Ok(sh(lab.node(0)?, &format!("cat {out}"))?.contains("exit=")),
    )?;
    sh(lab.node(0)?, &format!("cat {out}"))
}

/// Lines of the job that runs on node 2 while it is cut off: long enough that its copy there is
/// still running when the partition heals.
const CUT_OFF_LINES: u32 = 60;

/// Node 2 (lab index 1) is cut off from the network (not dead) while a job of node 1 runs
/// there, with node 3 gone: home holds node 2 dead and restarts the job from its checkpoint on
/// itself while node 2's copy runs on unseen; once the partition heals, node 2's copy ends (it
/// asks home, which has the job) and the job's output at home is every line once, in order.
fn cut_off(lab: &mut Lab, node2: Ipv4Addr, num: &[u64]) -> Result<()> {
    let id = start_checkpointed(lab, node2, num, CUT_OFF_LINES, "/tmp/r3.out")?;
    std::thread::sleep(Duration::from_secs(3));
    lab.partition(1)?;
    let cut = Instant::now();
    let restarted = wait_until(
        "home restarts the job of the cut-off node from its checkpoint",
        Duration::from_secs(120),
        || {
            let j = job(lab.node(0)?, &id)?.context("the job is no longer listed at home")?;
            ensure!(
                j["state"] == "running",
                "the job did not survive the partition: {j}"
            );
            Ok(j["node"] == num[0] && j["recovered"] == 1)
        },
    )
    .and_then(|()| {
        // Both copies run: the cut-off node did not stop its own.
        let on = running_on(lab, &num[..2], &id)?;
        ensure!(
            on == num[..2],
            "while node 2 is cut off the job should run on it and, restarted, at home: {on:?}"
        );
        Ok(cut.elapsed().as_secs())
    });
    lab.heal(1)?;
    let restarted = restarted?;
    let healed = Instant::now();
    wait_until(
        "node 2's copy ends once the partition heals",
        Duration::from_secs(90),
        || Ok(running_on(lab, &num[..2], &id)? == [num[0]]),
    )?;
    let ended = healed.elapsed().as_secs();
    wait_until(
        "nodes 1 and 2 hold each other alive again",
        Duration::from_secs(90),
        || all_alive(lab, &num[..2]),
    )?;
    let said = attached_output(lab, "/tmp/r3.out")?;
    let (numbers, sum) = lines_and_sum(&said);
    ensure!(
        numbers == (0..CUT_OFF_LINES).collect::<Vec<_>>()
            && sum == Some(expected_sum(CUT_OFF_LINES))
            && said.contains("exit=0"),
        "the job restarted beside its cut-off copy does not end with every line once, in order, \
         and its sum:\n{said}"
    );
    eprintln!(
        "recovery: node 2 cut off: the job ran again at home {restarted} s later; node 2's copy \
         ended {ended} s after the partition healed; all {CUT_OFF_LINES} lines once"
    );
    Ok(())
}

/// The `line N` numbers of `text` in order, and its `sum=` line; other lines (the console's)
/// are left out.
fn lines_and_sum(text: &str) -> (Vec<u32>, Option<u32>) {
    let numbers = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("line "))
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let sum = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("sum="))
        .and_then(|s| s.trim().parse().ok());
    (numbers, sum)
}

#[test]
fn a_job_survives_the_death_of_its_node_and_of_its_home() -> Result<()> {
    let mut lab = start_lab("recovery", LabConfig::default())?;
    for i in 1..=3 {
        let spec = NodeSpec::from_artefacts(format!("rec{i}"), Boot::Kernel, &Artefacts::from_env())?
            .memory_mib(1024)
            .nic(NicModel::VirtioNetPci)
            .cmdline("clump.balance=off clump.checkpoint=10");
        lab.start_node(spec)?;
    }
    let (addrs, num) = clump_e2e::ready_addrs(&mut lab, 3)?;
    wait_until(
        "node 1 lists the other two alive",
        Duration::from_secs(90),
        || {
            Ok(sh(lab.node(0)?, "clump nodes --json")?
                .matches("\"alive\"")
                .count()
                >= 2)
        },
    )?;

    // The node running a job dies, after a false death of the node it was checkpointed on
    // and a move from there, and two checkpoints on the new node.
    let lines = 160;
    let id = start_checkpointed(&mut lab, addrs[1], &num, lines, "/tmp/r1.out")?;
    lab.block_udp(1, GOSSIP_PORT)?;
    let blocked = Instant::now();
    let kept = false_death(&mut lab, &num, &id);
    lab.unblock_udp()?;
    kept?;
    let dead_for = blocked.elapsed().as_secs();
    wait_until(
        "node 2 is alive again in every map",
        Duration::from_secs(90),
        || all_alive(&mut lab, &num),
    )?;
    let on = running_on(&mut lab, &num, &id)?;
    ensure!(on == [num[1]], "after node 2 came back the job runs on {on:?}");
    eprintln!(
        "recovery: node 2 dead to the gossip for {dead_for} s with its stream alive: the job \
         stayed there, once, and node 2 came back"
    );
    let (code, said) = lab.node(0)?.shell(
        &format!("clump migrate {id} {}", addrs[2]),
        Duration::from_secs(180),
    )?;
    ensure!(
        code == 0 && said.contains("moved"),
        "a checkpointed job does not move on ({code}):\n{said}"
    );
    let mut checkpoints = Vec::new();
    wait_until(
        "home holds two checkpoints of the job taken on node 3",
        Duration::from_secs(120),
        || {
            let j = job(lab.node(0)?, &id)?.context("the job is not listed at home")?;
            ensure!(j["node"] == num[2], "the job left node 3: {j}");
            if let Some(at) = j["checkpoint_ms"].as_u64() {
                if checkpoints.last() != Some(&at) {
                    checkpoints.push(at);
                }
            }
            // The first one seen may be node 2's.
            Ok(checkpoints.len() >= 3)
        },
    )?;
    // A few lines after the checkpoint, so the restarted job writes some again.
    std::thread::sleep(Duration::from_secs(5));
    let before = lines_and_sum(&sh(lab.node(0)?, "cat /tmp/r1.out")?).0.len();
    lab.node(2)?.kill()?;
    let killed = Instant::now();
    let mut runs_again = None;
    wait_until(
        "the job runs again after its node died",
        Duration::from_secs(180),
        || {
            let j = job(lab.node(0)?, &id)?.context("the job is no longer listed at home")?;
            ensure!(j["state"] == "running", "the job did not survive its node: {j}");
            let moved_on = j["node"] != num[2] && j["recovered"] == 1;
            if moved_on {
                runs_again = j["node"].as_u64();
            }
            Ok(moved_on)
        },
    )?;
    let recovery_s = killed.elapsed().as_secs();
    let said = attached_output(&mut lab, "/tmp/r1.out")?;
    let (numbers, sum) = lines_and_sum(&said);
    ensure!(
        numbers == (0..lines).collect::<Vec<_>>(),
        "output after the crash is not every line once, in order:\n{said}"
    );
    ensure!(
        sum == Some(expected_sum(lines)),
        "the job's sum is {sum:?}, not {}:\n{said}",
        expected_sum(lines)
    );
    ensure!(said.contains("exit=0"), "the job did not end well:\n{said}");
    eprintln!(
        "recovery: node 3 died after {before} lines; the job ran again on node {runs_again:?} \
         {recovery_s} s later and ended with all {lines} lines once and sum={}",
        expected_sum(lines)
    );

    cut_off(&mut lab, addrs[1], &num)?;

    // The home of a job dies: the job runs on, its output stays where it runs.
    let lines = 40;
    let out = sh(
        lab.node(0)?,
        &format!(
            "cd / && clump run --detach --on {} -- {}",
            addrs[1],
            counting_job(lines)
        ),
    )?;
    let id = clump_lab::job_id(&out).with_context(|| format!("no job id:\n{out}"))?;
    wait_until("the second job runs on node 2", Duration::from_secs(120), || {
        Ok(job(lab.node(0)?, &id)?.is_some_and(|j| j["node"] == num[1]))
    })?;
    // Jobs are bounded on the node they run on: all of them together leave the node some
    // memory, and each has a task limit (a restored one too).
    let limits = sh(
        lab.node(1)?,
        &format!("cat /sys/fs/cgroup/clump/memory.max /sys/fs/cgroup/clump/{id}/pids.max /proc/meminfo"),
    )?;
    let words: Vec<&str> = limits.split_whitespace().collect();
    let jobs_max: u64 = words
        .first()
        .and_then(|w| w.parse().ok())
        .context("no memory.max")?;
    let total_kib: u64 = words
        .windows(2)
        .find(|w| w[0] == "MemTotal:")
        .and_then(|w| w[1].parse().ok())
        .context("no MemTotal")?;
    ensure!(
        jobs_max < total_kib * 1024 && jobs_max > total_kib * 1024 / 2 && words.get(1) == Some(&"4096"),
        "jobs' limits on node 2 are not as documented:\n{limits}"
    );
    std::thread::sleep(Duration::from_secs(3));
    lab.node(0)?.kill()?;
    wait_until(
        "the job ends on node 2 after its home died",
        Duration::from_secs(240),
        || Ok(job(lab.node(1)?, &id)?.is_some_and(|j| j["state"] != "running")),
    )?;
    let j = job(lab.node(1)?, &id)?.context("the job is gone from node 2")?;
    ensure!(j["exit"]["code"] == 0, "the job did not end well: {j}");
    let kept = sh(lab.node(1)?, &format!("clump output {id}"))?;
    let (numbers, sum) = lines_and_sum(&kept);
    let first = numbers.first().copied().context("no output kept on node 2")?;
    ensure!(
        numbers == (first..lines).collect::<Vec<_>>() && sum == Some(expected_sum(lines)),
        "node 2 does not hold the job's output from line {first} on, in order, with its sum:\n{kept}"
    );
    eprintln!("recovery: home died; the job ended on node 2, which kept its output from line {first} on");
    Ok(())
}

#[test]
fn output_lines_are_read_in_order_and_the_console_is_left_out() {
    let (n, s) = lines_and_sum("line 0\nclumpd: [1.0] INFO x\nline 1\r\nsum=1\nexit=0\n");
    assert_eq!((n, s), (vec![0, 1], Some(1)));
}
