//! The balancer's arithmetic: the CPU a job gets on a node, the time a move saves, the time it
//! costs.

use std::time::Duration;

/// The CPU a CPU-bound job gets on a node of `cores` at `speed` (1000 = the reference machine)
/// among `tasks_milli` runnable tasks (thousandths, the job counted), in speed units: a full
/// core while tasks do not outnumber cores, an equal slice of them after.
pub fn cpu_share(speed: u32, cores: u32, tasks_milli: u64) -> u64 {
    let speed = u64::from(speed.max(1));
    let cores_milli = u64::from(cores.max(1)) * 1000;
    let tasks = tasks_milli.max(1000);
    if tasks <= cores_milli {
        speed
    } else {
        speed * cores_milli / tasks
    }
}

/// What moving saves a job that would run `remaining` longer at `here` (speed units, from
/// [`cpu_share`]) and gets `there` after the move: `remaining × (1 − here/there)`; nothing when
/// there is not faster.
pub fn saving(remaining: Duration, here: u64, there: u64) -> Duration {
    if there <= here {
        return Duration::ZERO;
    }
    let frac = (there - here) as f64 / there as f64;
    remaining.mul_f64(frac)
}

/// What moving `mem_kib` of memory costs at `bandwidth_bps`, plus the fixed `overhead`.
pub fn cost(mem_kib: u64, bandwidth_bps: u64, overhead: Duration) -> Duration {
    let bytes = mem_kib.saturating_mul(1024);
    overhead + Duration::from_secs_f64(bytes as f64 / bandwidth_bps.max(1) as f64)
}

/// How much longer a job is expected to run: as long as it has run so far (process lifetimes
/// are heavy-tailed: Harchol-Balter and Downey found a process that has run T seconds runs
/// about T more, the rule the MOSIX papers use to pick whom to move).
pub fn remaining(age: Duration) -> Duration {
    age
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_gets_a_core_until_tasks_outnumber_cores() {
        assert_eq!(cpu_share(1000, 2, 2000), 1000);
        assert_eq!(cpu_share(1000, 2, 500), 1000);
        assert_eq!(cpu_share(1000, 1, 4000), 250);
        assert_eq!(cpu_share(2000, 2, 4000), 1000);
        assert_eq!(cpu_share(0, 0, 0), 1);
    }

    #[test]
    fn saving_grows_with_the_gap_and_the_time_left() {
        let t = Duration::from_secs(60);
        assert_eq!(saving(t, 500, 1000), Duration::from_secs(30));
        assert_eq!(saving(t, 1000, 1000), Duration::ZERO);
        assert_eq!(saving(t, 1000, 500), Duration::ZERO);
        assert_eq!(
            cost(8 * 1024, 8 << 20, Duration::from_secs(1)),
            Duration::from_secs(2)
        );
    }
}
