use std::time::Duration;

/// Time since the kernel started (CLOCK_BOOTTIME), the clock of every `t=` in the log.
pub fn since_boot() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    Duration::new(ts.tv_sec.unsigned_abs(), ts.tv_nsec.clamp(0, 999_999_999) as u32)
}

pub fn since_boot_ms() -> u128 {
    since_boot().as_millis()
}
