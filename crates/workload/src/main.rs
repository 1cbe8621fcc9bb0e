//! `clump-work`: jobs whose result can be checked after they moved.
//!
//! - `mem --mib N --seconds S` (or `--kib N`): holds N MiB (KiB), every page written with a
//!   pattern derived from its index and a per-page version; keeps changing pages (a version bump
//!   rewrites a page) at `--dirty-per-s` pages a second, prints a line each second, and at the
//!   end checks every page against its version: `memory ok` or `memory corrupt at page P`. A
//!   migration that lost or mixed pages shows here. SIGTERM ends the S seconds early (the check
//!   still runs), so a test need not guess how long its moves take. `--ramp-s R` fills the
//!   memory evenly over R seconds: a job that grows, for memory-pressure tests.
//! - `cpu --units N`: N units of a fixed integer workload, printing progress; exits 0.

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::time::{Duration, Instant};

const PAGE: usize = 4096;

#[derive(Parser)]
#[command(about = "Workloads of known size for Clump's tests and benchmarks")]
struct Cli {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Hold and keep changing memory; check it at the end.
    Mem {
        #[arg(long, required_unless_present = "kib")]
        mib: Option<usize>,
        /// Hold this many KiB instead (a small job, quick to move over a slow link).
        #[arg(long, conflicts_with = "mib")]
        kib: Option<usize>,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Pages rewritten each second.
        #[arg(long, default_value_t = 256)]
        dirty_per_s: usize,
        /// Take this long to fill the memory (it grows evenly), instead of at once.
        #[arg(long, default_value_t = 0)]
        ramp_s: u64,
    },
    /// Fixed CPU work.
    Cpu {
        #[arg(long, default_value_t = 10)]
        units: u64,
    },
}

/// The byte at `offset` of page `page` at `version`: cheap, and different for every page and
/// version, so a page from elsewhere or from an older version is caught.
fn byte(page: usize, version: u32, offset: usize) -> u8 {
    let x = (page as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ u64::from(version).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    (x.rotate_left((offset % 61) as u32) as u8) ^ (offset as u8)
}

fn fill(mem: &mut [u8], page: usize, version: u32) {
    for (o, b) in mem[page * PAGE..(page + 1) * PAGE].iter_mut().enumerate() {
        *b = byte(page, version, o);
    }
}

fn first_bad(mem: &[u8], versions: &[u32]) -> Option<usize> {
    (0..versions.len()).find(|&p| {
        mem[p * PAGE..(p + 1) * PAGE]
            .iter()
            .enumerate()
            .any(|(o, b)| *b != byte(p, versions[p], o))
    })
}

/// The size held, in KiB, and how it is printed ("256 MiB", "64 KiB").
fn size(mib: Option<usize>, kib: Option<usize>) -> (usize, String) {
    match (mib, kib) {
        (_, Some(kib)) => (kib, format!("{kib} KiB")),
        (mib, None) => {
            let mib = mib.unwrap_or(0);
            (mib.saturating_mul(1024), format!("{mib} MiB"))
        }
    }
}

fn mem(kib: usize, shown: &str, seconds: u64, dirty_per_s: usize, ramp_s: u64) -> Result<()> {
    let pages = kib.saturating_mul(1024) / PAGE;
    if pages == 0 {
        bail!("hold at least one page (--mib 1 or --kib 4)");
    }
    let mut mem = vec![0u8; pages * PAGE];
    let mut versions = vec![0u32; pages];
    // The allocation is lazy: memory becomes the job's as its pages are first written.
    let ramp_start = Instant::now();
    let per_ms = pages as f64 / (ramp_s as f64 * 1000.0);
    for p in 0..pages {
        fill(&mut mem, p, 0);
        if ramp_s > 0 && p % 256 == 255 {
            let due = Duration::from_millis((p as f64 / per_ms) as u64);
            if let Some(wait) = due.checked_sub(ramp_start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    let mut out = std::io::stdout();
    writeln!(out, "ready {shown}")?;
    out.flush()?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    let start = Instant::now();
    let mut next = 0usize;
    let mut tick = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) && !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let second = Instant::now();
        for _ in 0..dirty_per_s {
            // Walk the pages with a stride so the dirty set spreads over the whole range.
            next = (next + 7919) % pages;
            versions[next] += 1;
            fill(&mut mem, next, versions[next]);
        }
        tick += 1;
        writeln!(out, "tick {tick}")?;
        out.flush()?;
        if let Some(left) = Duration::from_secs(1).checked_sub(second.elapsed()) {
            std::thread::sleep(left);
        }
    }
    match first_bad(&mem, &versions) {
        None => writeln!(out, "memory ok: {shown}, {pages} pages")?,
        Some(p) => {
            writeln!(out, "memory corrupt at page {p}")?;
            std::process::exit(1);
        }
    }
    Ok(())
}

fn cpu(units: u64) -> Result<()> {
    let mut out = std::io::stdout();
    let mut x = 1u64;
    for u in 1..=units {
        for i in 0..50_000_000u64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i);
        }
        writeln!(out, "unit {u}/{units} {:016x}", x)?;
        out.flush()?;
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().what {
        What::Mem {
            mib,
            kib,
            seconds,
            dirty_per_s,
            ramp_s,
        } => {
            let (kib, shown) = size(mib, kib);
            mem(kib, &shown, seconds, dirty_per_s, ramp_s)
        }
        What::Cpu { units } => cpu(units),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_is_given_in_mib_or_kib_and_printed_as_given() {
        assert_eq!(size(Some(256), None), (256 * 1024, "256 MiB".to_owned()));
        assert_eq!(size(None, Some(64)), (64, "64 KiB".to_owned()));
        assert!(Cli::try_parse_from(["clump-work", "mem", "--kib", "64"]).is_ok());
        assert!(Cli::try_parse_from(["clump-work", "mem"]).is_err());
        assert!(Cli::try_parse_from(["clump-work", "mem", "--mib", "1", "--kib", "64"]).is_err());
    }

    #[test]
    fn a_stale_or_foreign_page_is_caught() {
        let mut mem = vec![0u8; 4 * PAGE];
        let mut versions = vec![0u32; 4];
        for p in 0..4 {
            fill(&mut mem, p, 0);
        }
        assert_eq!(first_bad(&mem, &versions), None);
        versions[2] = 1;
        assert_eq!(
            first_bad(&mem, &versions),
            Some(2),
            "a page left at an older version"
        );
        fill(&mut mem, 2, 1);
        assert_eq!(first_bad(&mem, &versions), None);
        let (a, b) = mem.split_at_mut(PAGE);
        b[..PAGE].copy_from_slice(&a[..PAGE]);
        assert_eq!(first_bad(&mem, &versions), Some(1), "page 0's bytes in page 1");
    }
}
