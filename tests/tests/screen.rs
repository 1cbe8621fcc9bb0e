//! The status screen (issue 5), checked the way a person in the room checks it: by looking at each
//! node's monitor and using its keyboard. Three nodes boot in one lab:
//!
//! 1. a QMP screendump of each shows three tiles where the layout says, this node's tile marked,
//!    the others alive;
//! 2. after one node loses its power (QEMU killed, no goodbye), the two others show it dead within
//!    the membership timeout;
//! 3. the runtime (clumpd) of one node is killed: the screen survives it and shows the cluster
//!    again once the supervisor has restarted it;
//! 4. on the other node, F2 shows the shell's terminal instead of the screen and Alt-F1 brings the
//!    screen back; Esc then Y powers the node off in order.
//!
//! A tile's state is read from the colour of its badge at the point the layout names
//! (`TileLayout::badge_probe`), compared with `state_color`; the badge also carries the state in
//! words, which the golden images of `clump-screen` check. Screenshots and serial logs are saved in
//! `out/test-artifacts/screen/`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clump_api::NodeState;
use clump_e2e::Shot;
use clump_e2e::{parse_ready, sh, start_lab, POWEROFF, READY_FROM_KERNEL};
use clump_lab::{Artefacts, Boot, Lab, LabConfig, NicModel, NodeSpec};

const NODE_MEMORY_MIB: u32 = 320;
/// Every node shows the three tiles within this time of the last node's lease.
const JOIN_BOUND: Duration = Duration::from_secs(30);
/// A node without power is shown dead within this time (the membership test's failure bound).
const FAILURE_BOUND: Duration = Duration::from_secs(30);
/// PID 1 restarts a service after a backoff; the new clumpd then finds the other node again.
const RESTART_BOUND: Duration = Duration::from_secs(60);
/// A key press is drawn (or the terminal switched) within this time.
const KEY_BOUND: Duration = Duration::from_secs(15);

#[test]
fn three_nodes_show_their_tiles_a_dead_node_a_restarted_runtime_and_answer_the_keyboard() -> Result<()> {
    let artefacts = Artefacts::from_env();
    let saved = artefacts.out_dir().join("test-artifacts/screen");
    if saved.exists() {
        std::fs::remove_dir_all(&saved).with_context(|| format!("cleaning {}", saved.display()))?;
    }
    std::fs::create_dir_all(&saved).with_context(|| format!("creating {}", saved.display()))?;
    let mut lab = start_lab("screen", LabConfig::default())?;
    let result = scenario(&mut lab, &saved);
    for node in lab.nodes() {
        let to = saved.join(format!("{}.serial.log", node.name()));
        if let Err(e) = std::fs::copy(node.serial_log(), &to) {
            eprintln!("screen: cannot keep {}: {e}", to.display());
        }
    }
    eprintln!("screen: screenshots and logs in {}", saved.display());
    result?;
    lab.shutdown()?;
    Ok(())
}

/// What a tile must show: the node's number and the states accepted for it.
type Expect = Vec<(u32, &'static [NodeState])>;

fn scenario(lab: &mut Lab, saved: &Path) -> Result<()> {
    let mut numbers = Vec::new();
    for i in 1..=3 {
        let spec = NodeSpec::from_artefacts(format!("screen{i}"), Boot::Kernel, &Artefacts::from_env())?
            .memory_mib(NODE_MEMORY_MIB)
            .cpus(1)
            .nic(NicModel::VirtioNetPci);
        lab.start_node(spec)?;
    }
    for i in 0..3 {
        let node = lab.node(i)?;
        let line = node.wait_for_line(r"clump: ready\b", READY_FROM_KERNEL)?;
        let ready = parse_ready(&line)?;
        ensure!(ready.via == "dhcp", "{}: no DHCP lease: {line}", node.name());
        numbers.push(node_number(ready.addr, ready.prefix_len)?);
    }
    let (a, b, victim) = (numbers[0], numbers[1], numbers[2]);

    // 1. Three tiles, this node marked.
    let start = Instant::now();
    for (i, &me) in numbers.iter().enumerate() {
        let expect: Expect = numbers.iter().map(|&n| (n, state_of(n, me, &[]))).collect();
        let (took, path) = wait_for_screen(lab, i, saved, "3-nodes", start + JOIN_BOUND, |shot| {
            shot.tiles(&expect)
        })?;
        eprintln!(
            "screen: node {me} shows 3 tiles, its own marked, {:.1} s after the last lease ({})",
            took.as_secs_f64(),
            path.display()
        );
    }

    // 2. The third node loses its power: no leave is sent, the others must find it dead.
    lab.node(2)?.kill()?;
    let killed = Instant::now();
    for (i, &me) in [a, b].iter().enumerate() {
        let expect: Expect = numbers.iter().map(|&n| (n, state_of(n, me, &[victim]))).collect();
        let (_, path) = wait_for_screen(lab, i, saved, "after-death", killed + FAILURE_BOUND, |shot| {
            shot.tiles(&expect)
        })?;
        eprintln!(
            "screen: node {me} shows node {victim} dead {:.1} s after it lost power ({})",
            killed.elapsed().as_secs_f64(),
            path.display()
        );
    }

    // 3. Node b's runtime dies and is restarted by PID 1; the screen shows the cluster again. The
    // new clumpd may or may not have heard of the dead node by then: two tiles or three.
    lab.node(1)?.skip_log()?;
    sh(lab.node(1)?, "kill -9 $(pidof clumpd)")?;
    let restarted = Instant::now();
    lab.node(1)?
        .wait_for_line(r"clump: service started name=clumpd", RESTART_BOUND)?;
    let two: Expect = [a, b].iter().map(|&n| (n, state_of(n, b, &[]))).collect();
    let three: Expect = numbers.iter().map(|&n| (n, state_of(n, b, &[victim]))).collect();
    let (_, path) = wait_for_screen(
        lab,
        1,
        saved,
        "runtime-restarted",
        restarted + RESTART_BOUND,
        |shot| shot.tiles(&two).or_else(|_| shot.tiles(&three)),
    )?;
    eprintln!(
        "screen: node {b} shows the cluster again {:.1} s after its runtime was killed ({})",
        restarted.elapsed().as_secs_f64(),
        path.display()
    );

    // 4. Node a's keyboard: F2 shows the shell's terminal (text, no tiles), Alt-F1 the screen.
    let expect: Expect = numbers.iter().map(|&n| (n, state_of(n, a, &[victim]))).collect();
    // One press more if the first is not seen: under a loaded TCG host a QMP key press was
    // missed once in CI (the same run alone passes); two misses fail.
    let shell_shown = |shot: &Shot| match shot.tiles(&expect) {
        Ok(()) => bail!("the tiles are still shown"),
        Err(_) => Ok(()),
    };
    lab.node(0)?.send_keys(&["f2"])?;
    if wait_for_screen(lab, 0, saved, "f2-shell", Instant::now() + KEY_BOUND, shell_shown).is_err() {
        eprintln!("screen: F2 was not seen; pressing it once more");
        lab.node(0)?.send_keys(&["f2"])?;
        wait_for_screen(lab, 0, saved, "f2-shell", Instant::now() + KEY_BOUND, shell_shown)?;
    }
    lab.node(0)?.send_keys(&["alt", "f1"])?;
    wait_for_screen(lab, 0, saved, "alt-f1-back", Instant::now() + KEY_BOUND, |shot| {
        shot.tiles(&expect)
    })?;
    eprintln!("screen: F2 showed the shell's terminal, Alt-F1 the screen again");

    // Esc asks, Y confirms: the orderly power-off of PID 1, and QEMU exits.
    let node = lab.node(0)?;
    node.skip_log()?;
    node.send_keys(&["esc"])?;
    std::thread::sleep(Duration::from_secs(1));
    node.screendump(&saved.join(format!("{}-esc-question.png", node.name())))?;
    node.send_keys(&["y"])?;
    node.wait_for_line(r"power off asked at the node's keyboard", KEY_BOUND)?;
    node.wait_for_line(r"clump: shutdown action=poweroff", POWEROFF)?;
    let status = node.wait_exit(POWEROFF)?;
    ensure!(status.success(), "QEMU's exit after Esc, Y: {status:?}");
    eprintln!("screen: Esc then Y powered node {a} off in order");
    Ok(())
}

/// The states accepted for node `n` on node `me`'s screen.
fn state_of(n: u32, me: u32, dead: &[u32]) -> &'static [NodeState] {
    if n == me {
        &[NodeState::This]
    } else if dead.contains(&n) {
        &[NodeState::Dead]
    } else {
        &[NodeState::Alive]
    }
}

/// Takes screenshots of node `index` until `check` passes on one, or `deadline` passes; how long
/// it took and the file of the last screenshot.
fn wait_for_screen(
    lab: &mut Lab,
    index: usize,
    saved: &Path,
    label: &str,
    deadline: Instant,
    check: impl Fn(&Shot) -> Result<()>,
) -> Result<(Duration, PathBuf)> {
    let started = Instant::now();
    let node = lab.node(index)?;
    let name = node.name().to_owned();
    let path = saved.join(format!("{name}-{label}.png"));
    loop {
        node.screendump(&path)?;
        match Shot::read(&path).and_then(|shot| check(&shot)) {
            Ok(()) => return Ok((started.elapsed(), path)),
            Err(e) if Instant::now() >= deadline => {
                bail!(
                    "{name}: the screen does not show what it should by the deadline: {e:#} (see {})",
                    path.display()
                )
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// The host part of an address within its subnet: the node number the screen shows.
fn node_number(addr: Ipv4Addr, prefix_len: u8) -> Result<u32> {
    ensure!((1..=31).contains(&prefix_len), "prefix /{prefix_len}");
    Ok(u32::from(addr) & (u32::MAX >> prefix_len))
}
