//! The balancer's knobs. Defaults start from what worked for Kerrighed and MOSIX
//! (`../shared/research/anchors_mosix.md`, section 3) and say where they differ.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// A job moves for speed or load only if the CPU it gets there, per reference-speed unit,
    /// beats what it gets here by this factor, in thousandths (Kerrighed's `stab_factor` 130 %:
    /// "target load + 1.3 × one process's load must stay below local").
    pub stability_milli: u64,
    /// Load balancing starts when this node's runnable tasks exceed its cores by this much, in
    /// thousandths of a task (Kerrighed: local load above 1.5 × one process's load, i.e. half a
    /// task more than one CPU runs). A faster node is looked for regardless.
    pub overload_milli: u64,
    /// At least this long between two moves this node starts for load or speed (Kerrighed: 2 s).
    pub min_interval: Duration,
    /// A job that arrived here (or started here) is not moved for load or speed before this: a
    /// job must not bounce on one stale figure.
    pub settle: Duration,
    /// Memory is short when free memory falls under `max(mem_low_min_kib, total × permille)`;
    /// then jobs move away before the kernel's OOM killer picks one.
    pub mem_low_permille: u64,
    pub mem_low_min_kib: u64,
    /// A job writing more stdout and stderr than this (bytes a second, decayed) stays at or comes
    /// back to its home, where its output goes (MOSIX moved I/O-heavy processes home).
    pub io_limit_bps: u64,
    /// What a move costs beyond copying memory: the final dump, the restore, the streams (under
    /// emulation a few seconds; replaced by what moves measured).
    pub move_overhead: Duration,
    /// Bytes a second a move carries until one was measured.
    pub bandwidth_bps: u64,
    /// A job this node sent or placed counts on its target for this long, until the target's
    /// own published load shows it (gossip takes 0.5-1 s, the decayed load a little more): the
    /// flood control that keeps every node from choosing one idle newcomer at once.
    pub reserve_for: Duration,
    /// A move that failed is not tried again to the same node for this long.
    pub backoff: Duration,
    /// A job counts as CPU-bound when it uses at least this share of the CPU it could get here,
    /// in thousandths; a sleeping job gains nothing from a faster node.
    pub busy_milli: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            stability_milli: 1300,
            overload_milli: 500,
            min_interval: Duration::from_secs(2),
            settle: Duration::from_secs(10),
            mem_low_permille: 150,
            mem_low_min_kib: 96 * 1024,
            io_limit_bps: 8 * 1024,
            move_overhead: Duration::from_secs(3),
            bandwidth_bps: 8 << 20,
            reserve_for: Duration::from_secs(6),
            backoff: Duration::from_secs(60),
            busy_milli: 500,
        }
    }
}

impl Policy {
    /// The free memory under which a node of `total_kib` is short.
    pub fn mem_low_kib(&self, total_kib: u64) -> u64 {
        (total_kib.saturating_mul(self.mem_low_permille) / 1000).max(self.mem_low_min_kib)
    }

    /// Sets one knob from its command-line name (`clump.balance.NAME=VALUE` and `clump node
    /// set NAME VALUE`); the error says what is accepted.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let int = |lo: u64, hi: u64| -> Result<u64, String> {
            value
                .parse::<u64>()
                .ok()
                .filter(|v| (lo..=hi).contains(v))
                .ok_or_else(|| format!("{name} takes a whole number from {lo} to {hi}, not {value:?}"))
        };
        match name {
            "stability" => self.stability_milli = int(1000, 10_000)?,
            "overload" => self.overload_milli = int(0, 100_000)?,
            "interval_ms" => self.min_interval = Duration::from_millis(int(0, 3_600_000)?),
            "settle_ms" => self.settle = Duration::from_millis(int(0, 3_600_000)?),
            "mem_low_permille" => self.mem_low_permille = int(0, 900)?,
            "mem_low_mib" => self.mem_low_min_kib = int(0, 1 << 20)? * 1024,
            "io_limit" => self.io_limit_bps = int(0, 1 << 40)?,
            _ => {
                return Err(format!(
                    "no balancer knob {name:?}: stability, overload, interval_ms, settle_ms, \
                     mem_low_permille, mem_low_mib, io_limit"
                ))
            }
        }
        Ok(())
    }

    /// The knobs by name, as [`Policy::set`] takes them.
    pub fn knobs(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("stability", self.stability_milli),
            ("overload", self.overload_milli),
            ("interval_ms", self.min_interval.as_millis() as u64),
            ("settle_ms", self.settle.as_millis() as u64),
            ("mem_low_permille", self.mem_low_permille),
            ("mem_low_mib", self.mem_low_min_kib / 1024),
            ("io_limit", self.io_limit_bps),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knobs_parse_in_range_and_name_the_others() {
        let mut p = Policy::default();
        p.set("stability", "1500").unwrap();
        p.set("interval_ms", "500").unwrap();
        p.set("mem_low_mib", "200").unwrap();
        assert_eq!(p.stability_milli, 1500);
        assert_eq!(p.min_interval, Duration::from_millis(500));
        assert_eq!(p.mem_low_min_kib, 200 * 1024);
        assert!(p.set("stability", "999").unwrap_err().contains("1000 to 10000"));
        assert!(p.set("stability", "x").is_err());
        assert!(p.set("speed", "1").unwrap_err().contains("io_limit"));
        let names: Vec<_> = p.knobs().into_iter().map(|(n, _)| n).collect();
        for n in names {
            let v = p
                .knobs()
                .into_iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v)
                .unwrap();
            p.set(n, &v.to_string()).unwrap();
        }
    }

    #[test]
    fn memory_is_short_under_a_share_of_the_total_or_a_floor() {
        let p = Policy::default();
        assert_eq!(p.mem_low_kib(16 << 20), (16 << 20) * 150 / 1000);
        assert_eq!(p.mem_low_kib(256 << 10), 96 << 10);
    }
}
