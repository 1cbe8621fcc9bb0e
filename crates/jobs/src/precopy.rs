//! When to stop pre-copy rounds and freeze: p.haul's rules (`phaul/iters.py`), from
//! `../shared/research/migration_gossip.md`: the last round wrote at most 64 pages (what is left
//! is small enough to copy frozen), or it wrote more than 10 % over the round before (the job
//! dirties memory faster than the link carries it: more rounds do not help), or 8 rounds ran.

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
            // More than 10 % growth: integer form of bytes > previous * 1.1.
            Some(p) => bytes.saturating_mul(10) <= p.saturating_mul(11),
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
    fn a_growing_dirty_set_stops_the_rounds() {
        let mut r = Rounds::new();
        assert!(r.another(256 * MIB));
        assert!(r.another(40 * MIB));
        assert!(r.another(44 * MIB), "10 % growth is tolerated");
        assert!(!r.another(49 * MIB), "more than 10 % growth stops");
    }

    #[test]
    fn eight_rounds_at_most() {
        let mut r = Rounds::new();
        let mut rounds = 1;
        while r.another(10 * MIB) {
            rounds += 1;
        }
        assert_eq!(rounds, MAX_ROUNDS);
    }

    #[test]
    fn an_idle_job_needs_one_round() {
        let mut r = Rounds::new();
        assert!(!r.another(0));
        assert!(!worth_it(MIN_PRECOPY_KIB - 1));
        assert!(worth_it(MIN_PRECOPY_KIB));
    }
}
