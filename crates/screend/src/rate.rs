//! Migrations per minute from the cluster's running total (every node's `migrations_out`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

/// Samples of a counter over the last minute.
#[derive(Debug, Default)]
pub struct PerMinute {
    samples: VecDeque<(Instant, u64)>,
}

impl PerMinute {
    pub fn record(&mut self, at: Instant, total: u64) {
        // A node leaving takes its count with it: start again rather than show a negative rate.
        if self.samples.back().is_some_and(|&(_, last)| total < last) {
            self.samples.clear();
        }
        self.samples.push_back((at, total));
        while self
            .samples
            .front()
            .is_some_and(|&(t, _)| at.saturating_duration_since(t) > WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// The increase over the last minute; `None` before two samples.
    pub fn per_minute(&self, _now: Instant) -> Option<u32> {
        let (&(_, first), &(_, last)) = (self.samples.front()?, self.samples.back()?);
        if self.samples.len() < 2 {
            return None;
        }
        Some(u32::try_from(last - first).unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_increase_of_the_last_minute() {
        let t0 = Instant::now();
        let mut r = PerMinute::default();
        r.record(t0, 10);
        assert_eq!(r.per_minute(t0), None);
        r.record(t0 + Duration::from_secs(30), 13);
        assert_eq!(r.per_minute(t0), Some(3));
        r.record(t0 + Duration::from_secs(90), 14);
        assert_eq!(r.per_minute(t0), Some(1), "the sample at 0 s fell out");
        r.record(t0 + Duration::from_secs(91), 2);
        assert_eq!(r.per_minute(t0), None, "a drop starts again");
    }
}
