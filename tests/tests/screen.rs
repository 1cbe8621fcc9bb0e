//! The status screen (issue 5), checked the way a person in the room checks it: by looking at each
//! node's monitor. Three nodes boot in one lab; a QMP screendump of each shows three tiles where
//! the layout says, this node's tile marked, the others alive; after one node loses its power
//! (QEMU killed, no goodbye), the two others show it dead within the membership timeout.
//!
//! A tile's state is read from the colour of its badge at the point the layout names
//! (`TileLayout::badge_probe`), compared with `state_color`; the badge also carries the state in
//! words, which the golden images of `clump-screen` check. Screenshots are saved in
//! `out/test-artifacts/screen/`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clump_api::NodeState;
use clump_e2e::{parse_ready, start_lab, READY_FROM_KERNEL};
use clump_lab::{Artefacts, Boot, Lab, LabConfig, NicModel, NodeSpec};
use clump_screen::{layout, state_color};
use embedded_graphics::pixelcolor::RgbColor as _;

const NODE_MEMORY_MIB: u32 = 320;
/// Every node shows the three tiles within this time of the last node's lease.
const JOIN_BOUND: Duration = Duration::from_secs(30);
/// A node without power is shown dead within this time (the membership test's failure bound).
const FAILURE_BOUND: Duration = Duration::from_secs(30);

#[test]
fn three_nodes_show_three_tiles_mark_themselves_and_show_a_dead_node_dead() -> Result<()> {
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
    // Tiles are in node-number order (`clump_screen::display_order`).
    let mut order = numbers.clone();
    order.sort_unstable();
    let tile_of = |number: u32| order.iter().position(|&n| n == number).unwrap_or(usize::MAX);

    let expect_all = |me: u32| -> Vec<(u32, &'static [NodeState])> {
        order
            .iter()
            .map(|&n| {
                let states: &'static [NodeState] = if n == me {
                    &[NodeState::This]
                } else {
                    &[NodeState::Alive]
                };
                (n, states)
            })
            .collect()
    };
    let start = Instant::now();
    for (i, &me) in numbers.iter().enumerate() {
        let shot = wait_for_screen(
            lab,
            i,
            saved,
            "3-nodes",
            &expect_all(me),
            &tile_of,
            start + JOIN_BOUND,
        )?;
        eprintln!(
            "screen: node {me} shows 3 tiles, its own marked, {:.1} s after the last lease ({})",
            shot.0.as_secs_f64(),
            shot.1.display()
        );
    }

    // The third node loses its power: no leave is sent, the others must find it dead.
    let victim = numbers[2];
    lab.node(2)?.kill()?;
    let killed = Instant::now();
    for (i, &me) in numbers.iter().enumerate().take(2) {
        let expect: Vec<(u32, &'static [NodeState])> = order
            .iter()
            .map(|&n| {
                let states: &'static [NodeState] = if n == me {
                    &[NodeState::This]
                } else if n == victim {
                    &[NodeState::Dead]
                } else {
                    &[NodeState::Alive]
                };
                (n, states)
            })
            .collect();
        let shot = wait_for_screen(
            lab,
            i,
            saved,
            "after-death",
            &expect,
            &tile_of,
            killed + FAILURE_BOUND,
        )?;
        eprintln!(
            "screen: node {me} shows node {victim} dead {:.1} s after it lost power ({})",
            killed.elapsed().as_secs_f64(),
            shot.1.display()
        );
    }
    Ok(())
}

/// Takes screenshots of node `index` until every tile's badge shows one of the expected states,
/// or `deadline` passes; the time it took from the first screenshot's start and the last file.
fn wait_for_screen(
    lab: &mut Lab,
    index: usize,
    saved: &Path,
    label: &str,
    expect: &[(u32, &[NodeState])],
    tile_of: &dyn Fn(u32) -> usize,
    deadline: Instant,
) -> Result<(Duration, PathBuf)> {
    let started = Instant::now();
    let node = lab.node(index)?;
    let name = node.name().to_owned();
    let path = saved.join(format!("{name}-{label}.png"));
    loop {
        node.screendump(&path)?;
        let verdict = check_tiles(&path, expect, tile_of);
        match verdict {
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

/// Reads a screendump and checks each expected tile's badge colour.
fn check_tiles(path: &Path, expect: &[(u32, &[NodeState])], tile_of: &dyn Fn(u32) -> usize) -> Result<()> {
    let (width, height, rgb) = read_png(path)?;
    let l = layout(width, height, expect.len());
    ensure!(
        l.tiles.len() == expect.len(),
        "the layout at {width}x{height} has {} tiles for {} nodes",
        l.tiles.len(),
        expect.len()
    );
    for (number, states) in expect {
        let tile = l
            .tiles
            .get(tile_of(*number))
            .with_context(|| format!("no tile for node {number}"))?;
        let p = tile.badge_probe();
        let (x, y) = (u32::try_from(p.x)?, u32::try_from(p.y)?);
        ensure!(x < width && y < height, "badge probe {p:?} is off the screen");
        let at = (y as usize * width as usize + x as usize) * 3;
        let seen = (rgb[at], rgb[at + 1], rgb[at + 2]);
        let matches = |s: &NodeState| {
            let c = state_color(*s);
            close(seen, (c.r(), c.g(), c.b()))
        };
        if !states.iter().any(matches) {
            bail!("node {number}'s badge at {p:?} is {seen:?}, not the colour of {states:?}");
        }
    }
    Ok(())
}

fn close(a: (u8, u8, u8), b: (u8, u8, u8)) -> bool {
    a.0.abs_diff(b.0) <= 8 && a.1.abs_diff(b.1) <= 8 && a.2.abs_diff(b.2) <= 8
}

/// A PNG as width, height and packed RGB.
fn read_png(path: &Path) -> Result<(u32, u32, Vec<u8>)> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .with_context(|| format!("reading {}", path.display()))?;
    let mut buf = vec![0; reader.output_buffer_size().context("PNG too large")?];
    let info = reader.next_frame(&mut buf)?;
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => bail!("{}: colour type {other:?}", path.display()),
    };
    ensure!(
        info.bit_depth == png::BitDepth::Eight,
        "{}: not 8 bits a channel",
        path.display()
    );
    let rgb = buf[..info.buffer_size()]
        .chunks(channels)
        .flat_map(|px| [px[0], px[1], px[2]])
        .collect();
    Ok((info.width, info.height, rgb))
}

/// The host part of an address within its subnet: the node number the screen shows.
fn node_number(addr: Ipv4Addr, prefix_len: u8) -> Result<u32> {
    ensure!((1..=31).contains(&prefix_len), "prefix /{prefix_len}");
    Ok(u32::from(addr) & (u32::MAX >> prefix_len))
}
