//! CPU speed: how fast one core of this node runs a fixed integer workload, relative to the
//! reference machine (speed 1000), MOSIX's convention. The balancer divides load by speed, so a
//! node twice as fast looks half as loaded with the same runnable tasks.
//!
//! The workload is single-threaded, deterministic and L1-resident (a 4 KiB table), with
//! multiplies, rotates and data-dependent branches: it measures a core, not memory or the number
//! of cores, and nodes under QEMU TCG (10-30x slower) finish a round in well under a second.
//! Rounds are timed in the thread's CPU time, so other work on the node does not make it look
//! slower.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// Words in the workload's table: 4 KiB, well inside any L1 data cache.
const TABLE_WORDS: usize = 512;

/// Iterations of one round (about 20 ms on the reference machine).
pub const ITERATIONS: u32 = 2_600_000;

/// What [`workload`] returns for [`ITERATIONS`]. If the workload changes, this changes, and so
/// must [`REFERENCE_NANOS`].
pub const CHECKSUM: u64 = 0x27f4_26b7_bada_0268;

/// Best CPU time of one round on the reference machine, which defines speed 1000: the build
/// host where this was measured, natively, in the release build `build.sh` makes (static,
/// opt-level "s"). /proc/cpuinfo: model name "AMD EPYC", family 25 model 1 stepping 1 (Zen 3,
/// Milan), a KVM guest with 2 vCPUs at 2.45 GHz. Bests of 20 rounds, six times over: 19.64-19.70
/// ms in CPU time while the host ran other builds (load 4-5), 19.45-19.6 ms of wall time when it
/// was quieter; code alignment moves it by ~1%.
pub const REFERENCE_NANOS: u64 = 19_600_000;

/// The speed of the reference machine.
pub const REFERENCE_SPEED: u32 = 1000;

/// Rounds run at boot (the best one counts) ...
pub const ROUNDS: u32 = 5;
/// ... unless the next one would end after this much time: a TCG guest runs one or two.
pub const BUDGET: Duration = Duration::from_secs(1);

/// Bounds of a speed set by hand (`clump node set-speed N`).
pub const MIN_SPEED: u32 = 1;
pub const MAX_SPEED: u32 = 1_000_000;

/// The result of a measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measurement {
    pub speed: u32,
    /// The fastest round.
    pub best: Duration,
    /// Rounds run.
    pub rounds: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpeedError {
    #[error("speed {0:?} is not a whole number")]
    NotANumber(String),
    #[error("speed {0} is out of range ({MIN_SPEED}..={MAX_SPEED})")]
    OutOfRange(u64),
}

/// The workload: `iterations` rounds of xorshift, table lookups, multiplies and rotates, with
/// branches on the data. Returns a checksum that depends on every step, so nothing can be
/// skipped, and is the same on every machine. Never inlined, so that every binary times the
/// same machine code.
#[inline(never)]
pub fn workload(iterations: u32) -> u64 {
    let mut table = [0u64; TABLE_WORDS];
    let mut x: u64 = black_box(0x9E37_79B9_7F4A_7C15);
    for (i, w) in table.iter_mut().enumerate() {
        x = xorshift(x);
        *w = x ^ i as u64;
    }
    let mut acc: u64 = 0;
    for _ in 0..iterations {
        x = xorshift(x);
        let i = (x as usize) & (TABLE_WORDS - 1);
        let v = table[i];
        // Random bits decide, so the branch predictor cannot learn the pattern: every node pays
        // for its mispredictions like the jobs it will run do.
        let v = if v & 1 == 0 {
            v.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ acc
        } else if v & 2 == 0 {
            v.rotate_left(23).wrapping_add(x)
        } else {
            (v ^ (v >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9)
        };
        table[(i + 1 + (acc as usize & 7)) & (TABLE_WORDS - 1)] = v;
        acc = acc.rotate_left(5) ^ v;
    }
    black_box(&table);
    acc
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// One timed round: its checksum and the CPU time it took. CPU time of this thread, not wall
/// time: the figure is the core's, and a node that is busy at boot (or a build host running
/// other work) would otherwise report itself slower for as long as it was shared. The clock is
/// monotonic for the thread and leaves out steal time on a paravirtualised guest.
pub fn round() -> (u64, Duration) {
    let start = thread_cpu_time();
    let sum = black_box(workload(black_box(ITERATIONS)));
    (sum, thread_cpu_time().saturating_sub(start))
}

fn thread_cpu_time() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(ts.tv_sec.unsigned_abs(), ts.tv_nsec.clamp(0, 999_999_999) as u32)
}

/// The speed figure for a best round of `best`: `round(1000 * REFERENCE_NANOS / best)`, at
/// least 1 and at most [`MAX_SPEED`].
pub fn speed_for(best: Duration) -> u32 {
    let nanos = best.as_nanos().max(1);
    let speed = (u128::from(REFERENCE_SPEED) * u128::from(REFERENCE_NANOS) + nanos / 2) / nanos;
    u32::try_from(speed.clamp(u128::from(MIN_SPEED), u128::from(MAX_SPEED))).unwrap_or(MAX_SPEED)
}

/// Measures with the boot settings ([`ROUNDS`] within [`BUDGET`]).
pub fn measure() -> Measurement {
    measure_with(ROUNDS, BUDGET)
}

/// Runs up to `rounds` rounds (at least one) and takes the best. Stops early when another round,
/// as long as the fastest so far, would end after `budget`.
pub fn measure_with(rounds: u32, budget: Duration) -> Measurement {
    let start = Instant::now();
    let mut best = Duration::MAX;
    let mut run = 0;
    while run < rounds.max(1) {
        if run > 0 && start.elapsed() + best > budget {
            break;
        }
        let (_, took) = round();
        best = best.min(took);
        run += 1;
    }
    Measurement {
        speed: speed_for(best),
        best,
        rounds: run,
    }
}

/// A speed given by hand (`clump node set-speed N`): a whole number in 1..=1,000,000.
pub fn parse_override(s: &str) -> Result<u32, SpeedError> {
    let t = s.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SpeedError::NotANumber(s.to_owned()));
    }
    // Only digits: the sole parse failure left is overflow, which is out of range too.
    let n: u64 = t.parse().unwrap_or(u64::MAX);
    if !(u64::from(MIN_SPEED)..=u64::from(MAX_SPEED)).contains(&n) {
        return Err(SpeedError::OutOfRange(n));
    }
    u32::try_from(n).map_err(|_| SpeedError::OutOfRange(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_is_deterministic() {
        assert_eq!(workload(ITERATIONS), CHECKSUM);
        assert_eq!(round().0, CHECKSUM);
        assert_eq!(workload(1000), workload(1000));
        assert_ne!(workload(1000), workload(1001));
    }

    #[test]
    fn speed_formula() {
        assert_eq!(speed_for(Duration::from_nanos(REFERENCE_NANOS)), 1000);
        assert_eq!(speed_for(Duration::from_nanos(REFERENCE_NANOS * 2)), 500);
        assert_eq!(speed_for(Duration::from_nanos(REFERENCE_NANOS / 4)), 4000);
        assert_eq!(speed_for(Duration::from_nanos(REFERENCE_NANOS * 3)), 333);
        assert_eq!(speed_for(Duration::from_secs(1_000_000)), MIN_SPEED);
        assert_eq!(speed_for(Duration::ZERO), MAX_SPEED);
    }

    #[test]
    fn this_host_is_near_the_reference() {
        let m = measure_with(5, Duration::from_secs(10));
        assert!(m.rounds >= 1 && m.best > Duration::ZERO);
        if cfg!(debug_assertions) {
            // Unoptimised code says nothing about the reference build.
            assert!(m.speed > 0);
        } else {
            // The build host is the reference; other work on it (parallel tests, builds) only
            // slows the best round down.
            assert!((500..=1600).contains(&m.speed), "speed {m:?}");
        }
    }

    #[test]
    fn budget_stops_early() {
        let m = measure_with(1000, Duration::ZERO);
        assert_eq!(m.rounds, 1, "at least one round, then the budget is spent");
        assert_eq!(measure_with(0, Duration::from_secs(10)).rounds, 1);
    }

    #[test]
    fn override_parsing() {
        assert_eq!(parse_override("1500"), Ok(1500));
        assert_eq!(parse_override(" 1\n"), Ok(1));
        assert_eq!(parse_override("1000000"), Ok(1_000_000));
        assert_eq!(parse_override("0"), Err(SpeedError::OutOfRange(0)));
        assert_eq!(parse_override("1000001"), Err(SpeedError::OutOfRange(1_000_001)));
        assert_eq!(
            parse_override("99999999999999999999999"),
            Err(SpeedError::OutOfRange(u64::MAX))
        );
        for bad in ["", " ", "-5", "+5", "1e3", "12.5", "fast", "0x10"] {
            assert_eq!(
                parse_override(bad),
                Err(SpeedError::NotANumber(bad.to_owned())),
                "{bad:?}"
            );
        }
    }
}
