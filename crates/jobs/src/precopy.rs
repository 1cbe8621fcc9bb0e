//! When to stop pre-copy rounds and freeze: p.haul's rules (`phaul/iters.py`, from
//! `../shared/research/migration_gossip.md`), with its growth rule made stricter: the last round
//! wrote at most 64 pages (what is left is small enough to copy frozen), or it wrote more than
//! 3/4 of the round before (p.haul: more than 110 %; the job dirties memory nearly as fast as
//! the link carries it, so more rounds cost a full round each and save little: in the lab a job
//! changing 1-2 MiB a second over a 6 MiB/s link ran all 8 rounds under p.haul's rule, sending
//! 1.7 times its memory), or 8 rounds ran.

/// A round that writes this little leaves nothing worth another round.
pub const SMALL_BYTES: u64 = 64 * 4096;
/// The most rounds before the final dump.
pub const MAX_ROUNDS: usize = 8;
/// Below this resident size a job is copied frozen at once: a round would cost more than it saves.
pub const MIN_PRECOPY_KIB: u64 = 16 * 1024;

/// Whether a job of `mem_kib` resident memory is worth pre-copying.
pub fn worth_it(mem_kib: u64) -> bool {
    mem_kib >= MIN_PRECOPY_KIB
}

/// Soft-dirty flag of a `/proc/PID/pagemap` entry: written since CRIU's last round cleared it.
const SOFT_DIRTY: u64 = 1 << 55;
/// Present in RAM, or swapped out.
const PRESENT: u64 = 1 << 63;
const SWAPPED: u64 = 1 << 62;

/// The writable mappings in a `/proc/PID/maps` text, as page ranges.
pub fn writable_ranges(maps: &str) -> Vec<(u64, u64)> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?;
            if perms.as_bytes().get(1) != Some(&b'w') {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let start = u64::from_str_radix(start, 16).ok()?;
            let end = u64::from_str_radix(end, 16).ok()?;
            (end > start).then_some((start / 4096, end / 4096))
        })
        .collect()
}

/// How many of `entries` (pagemap words) are pages written since the last round.
pub fn count_dirty(entries: &[u64]) -> u64 {
    entries
        .iter()
        .filter(|e| **e & SOFT_DIRTY != 0 && **e & (PRESENT | SWAPPED) != 0)
        .count() as u64
}

/// The bytes the processes `pids` wrote since the last pre-copy round: what the next round will
/// carry at least. Read from the kernel's soft-dirty bits, the ones CRIU reads.
pub fn dirty_bytes(pids: &[i32]) -> u64 {
    use std::io::{Read, Seek, SeekFrom};
    let mut pages = 0;
    let mut buf = vec![0u8; 8 * 4096];
    for pid in pids {
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            continue;
        };
        let Ok(mut pagemap) = std::fs::File::open(format!("/proc/{pid}/pagemap")) else {
            continue;
        };
        for (start, end) in writable_ranges(&maps) {
            let mut page = start;
            while page < end {
                let n = usize::try_from(end - page).unwrap_or(usize::MAX).min(4096);
                if pagemap.seek(SeekFrom::Start(page * 8)).is_err()
                    || pagemap.read_exact(&mut buf[..n * 8]).is_err()
                {
                    break;
                }
                let entries: Vec<u64> = buf[..n * 8]
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect();
                pages += count_dirty(&entries);
                page += n as u64;
            }
        }
    }
    pages * 4096
}

/// The bytes each round wrote, oldest first.
#[derive(Debug, Default, Clone)]
pub struct Rounds {
    written: Vec<u64>,
}

impl Rounds {
    pub fn new() -> Rounds {
        Rounds::default()
    }

    /// Records a round that wrote `bytes`; true when another round is worth it.
    pub fn another(&mut self, bytes: u64) -> bool {
        let previous = self.written.last().copied();
        self.written.push(bytes);
        if bytes <= SMALL_BYTES || self.written.len() >= MAX_ROUNDS {
            return false;
        }
        match previous {
            // Integer form of bytes <= previous * 3/4.
            Some(p) => bytes.saturating_mul(4) <= p.saturating_mul(3),
            None => true,
        }
    }

    pub fn count(&self) -> usize {
        self.written.len()
    }

    pub fn written(&self) -> &[u64] {
        &self.written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_shrinking_dirty_set_goes_on_until_it_is_small() {
        let mut r = Rounds::new();
        assert!(r.another(256 * MIB));
        assert!(r.another(30 * MIB));
        assert!(r.another(4 * MIB));
        assert!(!r.another(200 * 1024), "64 pages or fewer left: freeze now");
        assert_eq!(r.count(), 4);
    }

    #[test]
    fn a_dirty_set_that_hardly_shrinks_stops_the_rounds() {
        let mut r = Rounds::new();
        assert!(r.another(256 * MIB));
        assert!(r.another(40 * MIB));
        assert!(r.another(30 * MIB), "shrinking to 3/4 goes on");
        assert!(!r.another(23 * MIB), "shrinking less stops");
        let mut r = Rounds::new();
        assert!(r.another(256 * MIB));
        assert!(!r.another(300 * MIB), "growth stops");
    }

    #[test]
    fn eight_rounds_at_most() {
        let mut r = Rounds::new();
        let mut rounds = 1;
        let mut bytes = 1 << 40;
        while r.another(bytes) {
            rounds += 1;
            bytes /= 2;
        }
        assert_eq!(rounds, MAX_ROUNDS);
    }

    #[test]
    fn only_writable_mappings_count_and_only_written_pages_in_them() {
        let maps = "00400000-00452000 r-xp 00000000 08:02 173521 /usr/bin/x\n\
                    7f0000000000-7f0000004000 rw-p 00000000 00:00 0\n\
                    7ffd000-7ffe000 rw-p 00000000 00:00 0 [stack]\n\
                    garbage line\n";
        assert_eq!(
            writable_ranges(maps),
            vec![(0x7f0000000, 0x7f0000004), (0x7ffd, 0x7ffe)]
        );
        let entries = [SOFT_DIRTY | PRESENT, PRESENT, SOFT_DIRTY, SOFT_DIRTY | SWAPPED, 0];
        assert_eq!(count_dirty(&entries), 2, "soft-dirty and there (in RAM or swap)");
    }

    #[test]
    fn an_idle_job_needs_one_round() {
        let mut r = Rounds::new();
        assert!(!r.another(0));
        assert!(!worth_it(MIN_PRECOPY_KIB - 1));
        assert!(worth_it(MIN_PRECOPY_KIB));
    }
}
