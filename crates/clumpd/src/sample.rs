//! Node facts from /proc and /sys: cores, memory, runnable tasks, hostname, MAC, and the
//! MOSIX-style decayed load. The parsers take text so the fixtures in the tests cover them; the
//! readers at the bottom are the only part that touches files.

use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Duration;

/// How often the daemon samples; the decay weights of [`Load`] are chosen for this period.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("bad CPU list {0:?}")]
    CpuList(String),
    #[error("/proc/meminfo has no {0}")]
    MemInfo(&'static str),
    #[error("/proc/stat has no procs_running")]
    ProcsRunning,
    #[error("bad MAC address {0:?}")]
    Mac(String),
    #[error("empty hostname")]
    Hostname,
}

fn read(path: impl AsRef<Path>) -> Result<String, SampleError> {
    let path = path.as_ref();
    std::fs::read_to_string(path).map_err(|source| SampleError::Read {
        path: path.display().to_string(),
        source,
    })
}

// ---- parsers ----

/// Counts the CPUs in a kernel CPU list (`0-3,5,7-8` -> 7), as in
/// /sys/devices/system/cpu/online.
pub fn parse_cpu_list(text: &str) -> Result<u32, SampleError> {
    let bad = || SampleError::CpuList(text.to_owned());
    let t = text.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let mut count: u32 = 0;
    for part in t.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo, hi),
            None => (part, part),
        };
        let lo: u32 = lo.trim().parse().map_err(|_| bad())?;
        let hi: u32 = hi.trim().parse().map_err(|_| bad())?;
        if hi < lo {
            return Err(bad());
        }
        count = count.checked_add(hi - lo + 1).ok_or_else(bad)?;
    }
    Ok(count)
}

/// Memory of the node, in KiB (what /proc/meminfo calls kB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub total_kib: u64,
    /// What new work can use without swapping: `MemAvailable`, or on kernels before 3.14
    /// `MemFree + Buffers + Cached`.
    pub available_kib: u64,
}

pub fn parse_meminfo(text: &str) -> Result<Memory, SampleError> {
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    let total_kib = field("MemTotal").ok_or(SampleError::MemInfo("MemTotal"))?;
    let available_kib = match field("MemAvailable") {
        Some(a) => a,
        None => {
            let free = field("MemFree").ok_or(SampleError::MemInfo("MemAvailable or MemFree"))?;
            free + field("Buffers").unwrap_or(0) + field("Cached").unwrap_or(0)
        }
    };
    Ok(Memory {
        total_kib,
        available_kib: available_kib.min(total_kib),
    })
}

/// Runnable tasks from /proc/stat, minus the sampler itself (it is running while it reads).
pub fn parse_runnable(stat: &str) -> Result<u32, SampleError> {
    let running: u32 = stat
        .lines()
        .find_map(|line| line.strip_prefix("procs_running ")?.trim().parse().ok())
        .ok_or(SampleError::ProcsRunning)?;
    Ok(running.saturating_sub(1))
}

/// `aa:bb:cc:dd:ee:ff` (any case, surrounding whitespace allowed).
pub fn parse_mac(text: &str) -> Result<[u8; 6], SampleError> {
    let bad = || SampleError::Mac(text.to_owned());
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for byte in &mut mac {
        let p = parts.next().ok_or_else(bad)?;
        if p.len() != 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    match parts.next() {
        None => Ok(mac),
        Some(_) => Err(bad()),
    }
}

// ---- load ----

/// One exponential-average step in fixed point: `old + (new - old) * num / den`, rounded to
/// nearest, and at least one unit towards `new` so that a constant input is reached exactly.
pub fn decay_step(old: u64, new: u64, num: u64, den: u64) -> u64 {
    let den = den.max(1);
    let num = num.min(den);
    if new == old || num == 0 {
        return old;
    }
    let diff = old.abs_diff(new);
    let step = ((u128::from(diff) * u128::from(num) + u128::from(den / 2)) / u128::from(den)).max(1);
    let step = u64::try_from(step).unwrap_or(diff).min(diff);
    if new > old {
        old + step
    } else {
        old - step
    }
}

/// Weights `(num, den)` per sample of [`SAMPLE_INTERVAL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weights {
    pub up: (u64, u64),
    pub down: (u64, u64),
}

/// The load shown to other nodes: up in about one sample, down by ~12% a second (MOSIX keeps
/// 7/8 of its upper load per 1 s period; (31/32)^4 ≈ 0.88). Other nodes must not see a burst
/// of idleness and all send work here at once.
pub const EXPORTED: Weights = Weights {
    up: (1, 2),
    down: (1, 32),
};

/// The load this node acts on: up slowly (MOSIX mixes 3/8 of a new value per second;
/// 1 - (7/8)^4 ≈ 0.41 per second here), down within a second. A short spike does not push jobs
/// away; once it is over, the node takes work again.
pub const LOCAL: Weights = Weights {
    up: (1, 8),
    down: (1, 2),
};

/// Decayed load averages of runnable tasks, in milli-tasks (2 runnable = 2000). Fed one sample
/// per [`SAMPLE_INTERVAL`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    exported: u64,
    local: u64,
}

impl Load {
    pub fn new() -> Self {
        Load::default()
    }

    /// Folds in one sample of `runnable` tasks.
    pub fn update(&mut self, runnable: u32) {
        self.update_milli(u64::from(runnable) * 1000);
    }

    pub fn update_milli(&mut self, sample_milli: u64) {
        self.exported = step(EXPORTED, self.exported, sample_milli);
        self.local = step(LOCAL, self.local, sample_milli);
    }

    /// Counts `tasks` more in what other nodes see, at once (jobs on their way here).
    pub fn add_tasks(&mut self, tasks: u32) {
        self.exported += u64::from(tasks) * 1000;
    }

    /// Rises fast, falls slowly: what other nodes see (Kerrighed's `upper_load`).
    pub fn exported_milli(&self) -> u64 {
        self.exported
    }

    /// Rises slowly, falls fast: what this node's own decisions use (Kerrighed's `mean_load`).
    pub fn local_milli(&self) -> u64 {
        self.local
    }

    /// The exported load per core, relative to a reference-speed core:
    /// `exported_milli * 1000 / (cores * speed)`, rounded. 1000 means every core has one
    /// runnable task and runs at the reference speed (1000); the same two tasks on a
    /// two-core node of speed 2000 give 500. `cores` and `speed` of 0 are taken as 1.
    pub fn normalised_milli(&self, speed: u32, cores: u32) -> u64 {
        normalise(self.exported, speed, cores)
    }
}

fn step(w: Weights, old: u64, new: u64) -> u64 {
    let (num, den) = if new > old { w.up } else { w.down };
    decay_step(old, new, num, den)
}

/// `load_milli * 1000 / (cores * speed)`, rounded to nearest.
pub fn normalise(load_milli: u64, speed: u32, cores: u32) -> u64 {
    let div = u128::from(cores.max(1)) * u128::from(speed.max(1));
    let n = (u128::from(load_milli) * 1000 + div / 2) / div;
    u64::try_from(n).unwrap_or(u64::MAX)
}

// ---- readers ----

/// Online CPUs: /sys/devices/system/cpu/online, else the CPUs this process may run on.
pub fn cores() -> u32 {
    match read("/sys/devices/system/cpu/online").and_then(|t| parse_cpu_list(&t)) {
        Ok(n) if n > 0 => n,
        Ok(_) | Err(_) => {
            let n = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
            u32::try_from(n).unwrap_or(u32::MAX)
        }
    }
}

pub fn memory() -> Result<Memory, SampleError> {
    parse_meminfo(&read("/proc/meminfo")?)
}

pub fn runnable() -> Result<u32, SampleError> {
    parse_runnable(&read("/proc/stat")?)
}

pub fn hostname() -> Result<String, SampleError> {
    let name = read("/proc/sys/kernel/hostname")?.trim().to_owned();
    if name.is_empty() {
        return Err(SampleError::Hostname);
    }
    Ok(name)
}

/// The MAC address of `iface`, from /sys/class/net.
pub fn mac_of(iface: &str) -> Result<[u8; 6], SampleError> {
    parse_mac(&read(Path::new("/sys/class/net").join(iface).join("address"))?)
}

/// What one sample reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub cores: u32,
    pub memory: Memory,
    pub runnable: u32,
}

pub fn sample() -> Result<Sample, SampleError> {
    Ok(Sample {
        cores: cores(),
        memory: memory()?,
        runnable: runnable()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:        8041232 kB
MemFree:         1022304 kB
MemAvailable:    5123456 kB
Buffers:          204800 kB
Cached:          3000000 kB
SwapCached:            0 kB
";

    const MEMINFO_OLD: &str = "MemTotal:        1000000 kB
MemFree:          100000 kB
Buffers:           20000 kB
Cached:            30000 kB
SwapCached:         5000 kB
";

    const STAT: &str = "cpu  10132153 290696 3084719 46828483 16683 0 25195 0 0 0
cpu0 1393280 32966 572056 13343292 6130 0 17875 0 0 0
intr 1462898 0 0 0
ctxt 115315
btime 1700000000
processes 7723
procs_running 3
procs_blocked 1
softirq 12 0 0
";

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0\n").ok(), Some(1));
        assert_eq!(parse_cpu_list("0-3").ok(), Some(4));
        assert_eq!(parse_cpu_list("0-3,5,7-8\n").ok(), Some(7));
        assert_eq!(parse_cpu_list("0,2,4").ok(), Some(3));
        for bad in ["", "\n", "x", "3-1", "0-", "-2", "0,,1", "0-3,a"] {
            assert!(parse_cpu_list(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn meminfo() {
        let m = parse_meminfo(MEMINFO).expect("parses");
        assert_eq!(
            m,
            Memory {
                total_kib: 8_041_232,
                available_kib: 5_123_456
            }
        );
        let m = parse_meminfo(MEMINFO_OLD).expect("parses");
        assert_eq!(
            m.available_kib, 150_000,
            "MemFree + Buffers + Cached, not SwapCached"
        );
        assert!(matches!(
            parse_meminfo("MemFree: 5 kB\n"),
            Err(SampleError::MemInfo("MemTotal"))
        ));
        assert!(parse_meminfo("MemTotal: 5 kB\n").is_err());
        assert!(parse_meminfo("MemTotal: lots kB\nMemAvailable: 1 kB\n").is_err());
    }

    #[test]
    fn runnable_excludes_the_sampler() {
        assert_eq!(parse_runnable(STAT).ok(), Some(2));
        assert_eq!(parse_runnable("procs_running 1\n").ok(), Some(0));
        assert_eq!(parse_runnable("procs_running 0\n").ok(), Some(0), "floor 0");
        assert!(parse_runnable("procs_blocked 1\n").is_err());
        assert!(parse_runnable("procs_running many\n").is_err());
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("52:54:00:AB:cd:0f\n").ok(),
            Some([0x52, 0x54, 0, 0xab, 0xcd, 0x0f])
        );
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0f:00",
            "5:54:00:ab:cd:0f",
            "zz:54:00:ab:cd:0f",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn decay_step_reaches_a_constant_input_exactly() {
        assert_eq!(decay_step(0, 1000, 1, 2), 500);
        assert_eq!(decay_step(1000, 0, 1, 2), 500);
        assert_eq!(decay_step(0, 3, 1, 32), 1, "at least one unit");
        assert_eq!(decay_step(5, 5, 1, 2), 5);
        assert_eq!(decay_step(0, 10, 0, 2), 0, "zero weight never moves");
        assert_eq!(decay_step(0, 10, 5, 2), 10, "weight above 1 is clamped to a jump");
        assert_eq!(decay_step(0, u64::MAX, 1, 1), u64::MAX);
        let mut v = 0;
        for _ in 0..10_000 {
            v = decay_step(v, 2000, 1, 32);
        }
        assert_eq!(v, 2000);
    }

    #[test]
    fn step_response_up() {
        let mut load = Load::new();
        let mut exported_at = None;
        let mut local_at = None;
        for n in 1..=200 {
            load.update(2);
            if exported_at.is_none() && load.exported_milli() == 2000 {
                exported_at = Some(n);
            }
            if local_at.is_none() && load.local_milli() == 2000 {
                local_at = Some(n);
            }
            assert!(
                load.exported_milli() >= load.local_milli(),
                "exported rises first"
            );
        }
        let (e, l) = (
            exported_at.expect("exported converges"),
            local_at.expect("local converges"),
        );
        // 250 ms samples: exported within ~3 s, local within ~20 s.
        assert!(e <= 12, "exported took {e} samples");
        assert!(l <= 80, "local took {l} samples");
        assert!(e < l);
        let mut one = Load::new();
        one.update(2);
        assert_eq!(one.exported_milli(), 1000, "half-way after one sample");
        assert_eq!(one.local_milli(), 250);
    }

    #[test]
    fn step_response_down() {
        let mut load = Load::new();
        for _ in 0..200 {
            load.update(2);
        }
        // One second idle.
        for _ in 0..4 {
            load.update(0);
        }
        assert!(
            load.local_milli() <= 150,
            "local falls fast: {}",
            load.local_milli()
        );
        assert!(
            load.exported_milli() >= 1700,
            "exported falls slowly: {}",
            load.exported_milli()
        );
        // Three seconds idle: local is gone, exported still shows most of it.
        for _ in 0..8 {
            load.update(0);
        }
        assert_eq!(load.local_milli(), 0);
        assert!(
            (1200..1500).contains(&load.exported_milli()),
            "{}",
            load.exported_milli()
        );
        // It does get there.
        for _ in 0..400 {
            load.update(0);
        }
        assert_eq!(load.exported_milli(), 0);
    }

    #[test]
    fn a_spike_shows_outside_not_inside() {
        let mut load = Load::new();
        load.update(4);
        load.update(0);
        assert!(load.exported_milli() >= 1800);
        assert!(load.local_milli() <= 300);
    }

    #[test]
    fn normalised_load() {
        assert_eq!(normalise(2000, 1000, 2), 1000, "one task per reference core");
        assert_eq!(normalise(2000, 2000, 2), 500, "twice as fast: half the load");
        assert_eq!(normalise(2000, 500, 1), 4000);
        assert_eq!(normalise(1000, 3000, 1), 333);
        assert_eq!(
            normalise(1000, 0, 0),
            1_000_000,
            "zero speed and cores taken as 1"
        );
        assert_eq!(normalise(u64::MAX, 1000, 1), u64::MAX);
        let mut load = Load::new();
        for _ in 0..50 {
            load.update(4);
        }
        assert_eq!(load.normalised_milli(1000, 4), 1000);
        assert_eq!(load.normalised_milli(1000, 8), 500);
    }

    #[test]
    fn this_node() {
        // The readers work on the build host, whatever its figures are.
        assert!(cores() >= 1);
        let m = memory().expect("/proc/meminfo");
        assert!(m.total_kib > 0 && m.available_kib <= m.total_kib);
        runnable().expect("/proc/stat");
        assert!(!hostname().expect("hostname").is_empty());
        assert_eq!(mac_of("lo").ok(), Some([0; 6]));
        assert!(mac_of("no-such-interface").is_err());
        sample().expect("sample");
    }
}
