//! The status screen's cost: a full frame and a typical update (one node's load changed) at
//! 1024x768 and 1920x1080 with 64 nodes, and the CPU share of the screen's per-second work in a
//! 64-node cluster: decode the API's `nodes` and `stats` replies (JSON lines, as clumpd sends
//! them), build the view, render, copy what changed into a frame standing for /dev/fb0.
//! Prints Markdown for BENCHMARKS.md.

use anyhow::{Context, Result};
use clap::Parser;
use clump_api::{MapState, NodeEntry, NodeMap, NodeState, Reply, Stats, MAP_VERSION};
use clump_screen::{render, BackBuffer, Phase, PixelFormat, View};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
struct Args {
    /// Frames timed per case (the median is printed).
    #[arg(long, default_value_t = 60)]
    frames: usize,
    /// Seconds of the 1-per-second service loop.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    #[arg(long, default_value_t = 64)]
    nodes: u32,
}

fn node(i: u32) -> NodeEntry {
    let total = 8 * 1024 * 1024;
    NodeEntry {
        id: format!("{i:032x}"),
        number: Some(i),
        address: Some(Ipv4Addr::new(10, 0, 0, u8::try_from(i).unwrap_or(255))),
        prefix_len: Some(24),
        mac: Some(format!("52:54:00:12:34:{i:02x}")),
        hostname: Some(format!("node-{i:03}")),
        cores: Some(4),
        speed: Some(900 + i * 7),
        mem_total_kib: Some(total),
        mem_free_kib: Some(total / 3),
        load: Some(i * 37 % 1500),
        runnable: Some(1000),
        jobs: Some(i % 4),
        migrations_in: Some(u64::from(i % 5)),
        migrations_out: Some(u64::from(i % 3)),
        version: Some("0.1.0".into()),
        state: if i == 1 { NodeState::This } else { NodeState::Alive },
        last_seen_ms: 1_760_000_000_000,
        blocked: false,
        conflicts: Vec::new(),
    }
}

fn map(n: u32) -> NodeMap {
    NodeMap {
        version: MAP_VERSION,
        state: MapState::Joined,
        this: Some(format!("{:032x}", 1)),
        key_fingerprint: Some("e6001bd5".into()),
        port: 7171,
        updated_ms: 1_760_000_000_000,
        nodes: (1..=n).map(node).collect(),
        foreign: Vec::new(),
        dropped: Default::default(),
    }
}

fn view(map: NodeMap, stats: Stats) -> View {
    View {
        cluster: "clump".into(),
        map: Some(map),
        stats: Some(stats),
        events: Vec::new(),
        address: "10.0.0.1/24".into(),
        lease: "dhcp".into(),
        uptime_ms: 3_600_000,
        jobs: None,
        migrations_per_min: Some(3),
        now_ms: 1_760_000_000_000,
        notice: None,
        phase: Phase::Cluster,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

fn main() -> Result<()> {
    let args = Args::parse();
    println!("| screen | nodes | full frame (render + copy all) | typical update (render + copy changed) | bytes copied by the update |");
    println!("|---|---:|---:|---:|---:|");
    for (w, h) in [(1024u32, 768u32), (1920, 1080)] {
        let mut v = view(map(args.nodes), Stats::default());
        let mut back = BackBuffer::packed(w, h, PixelFormat::xrgb8888())?;
        let mut front = vec![0u8; back.frame_len()];
        let (mut full, mut update, mut bytes) = (Vec::new(), Vec::new(), 0usize);
        for i in 0..args.frames {
            let t = Instant::now();
            render(&v, &mut back).ok().context("render")?;
            back.flush_all(&mut front);
            full.push(t.elapsed());
            if let Some(n) = v.map.as_mut().and_then(|m| m.nodes.get_mut(5)) {
                n.load = Some((i as u32 * 97) % 1400);
            }
            let t = Instant::now();
            render(&v, &mut back).ok().context("render")?;
            bytes = back.flush_changed(&mut front).bytes;
            update.push(t.elapsed());
        }
        println!(
            "| {w}x{h} | {} | {} | {} | {} KiB |",
            args.nodes,
            ms(median(full)),
            ms(median(update)),
            bytes / 1024
        );
    }

    // The service's loop at one redraw a second: what it does besides waiting.
    let nodes_line = serde_json::to_string(&Reply::Ok(map(args.nodes)))?;
    let stats_line = serde_json::to_string(&Reply::Ok(Stats::default()))?;
    let mut back = BackBuffer::packed(1024, 768, PixelFormat::xrgb8888())?;
    let mut front = vec![0u8; back.frame_len()];
    let (cpu0, wall0) = (cpu_time(), Instant::now());
    let mut work = Vec::new();
    for tick in 0..args.seconds {
        let t = Instant::now();
        let mut m = serde_json::from_str::<Reply<NodeMap>>(&nodes_line)?
            .into_result()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let s = serde_json::from_str::<Reply<Stats>>(&stats_line)?
            .into_result()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(n) = m.nodes.get_mut((tick % 64) as usize) {
            n.load = Some((tick as u32 * 131) % 1400);
        }
        let mut v = view(m, s);
        v.uptime_ms += tick * 1000;
        render(&v, &mut back).ok().context("render")?;
        back.flush_changed(&mut front);
        work.push(t.elapsed());
        std::thread::sleep(Duration::from_secs(1).saturating_sub(t.elapsed()));
    }
    let (cpu, wall) = (cpu_time() - cpu0, wall0.elapsed());
    println!();
    println!(
        "service loop, 1024x768, {} nodes, one redraw a second for {} s: CPU {:.2} % of one core ({} CPU in {:.1} s), median work per tick {}",
        args.nodes,
        args.seconds,
        cpu.as_secs_f64() / wall.as_secs_f64() * 100.0,
        ms(cpu),
        wall.as_secs_f64(),
        ms(median(work))
    );
    Ok(())
}
