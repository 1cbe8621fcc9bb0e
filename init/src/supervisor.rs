//! Keeps the node's services running: starts them, restarts a crashed one with exponential
//! backoff, stops them at shutdown. Process creation sits behind [`Spawner`] so the policy is
//! unit-tested without forking.

use std::time::Duration;

/// What to run as a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Run as a session leader with this terminal as controlling tty and stdio.
    pub tty: Option<String>,
}

/// Starts and signals processes.
pub trait Spawner {
    fn spawn(&mut self, spec: &ServiceSpec) -> std::io::Result<i32>;
    /// Asks service `spec`, running as `pid`, to exit.
    fn terminate(&mut self, spec: &ServiceSpec, pid: i32);
}

/// The first restart comes after this; each quick failure doubles it up to the cap, by default
/// [`BACKOFF_MAX`] (`clump.restart_max_ms=` sets another).
const BACKOFF_MIN: Duration = Duration::from_millis(250);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A service that ran at least this long before exiting starts again from the shortest backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Running {
        pid: i32,
        since: Duration,
    },
    /// Waiting to be (re)started at `at`.
    Waiting {
        at: Duration,
    },
    Stopped,
}

#[derive(Debug)]
struct Service {
    spec: ServiceSpec,
    state: State,
    /// Consecutive quick failures, which set the next backoff.
    failures: u32,
    restarts: u64,
    /// Asked to terminate (shutdown).
    asked_to_stop: bool,
}

/// The set of supervised services. Times are `Duration`s on one monotonic clock given by the caller.
#[derive(Debug)]
pub struct Supervisor {
    services: Vec<Service>,
    stopping: bool,
    /// The longest wait before a restart.
    backoff_max: Duration,
}

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor::new(BACKOFF_MAX)
    }
}

/// What happened to a service, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Started {
        name: String,
        pid: i32,
    },
    SpawnFailed {
        name: String,
        error: String,
        retry_in: Duration,
    },
    Exited {
        name: String,
        pid: i32,
        status: String,
        restart_in: Option<Duration>,
    },
}

impl Event {
    pub fn log(self) {
        match self {
            Event::Started { name, pid } => tracing::info!(name = %name, pid, "service started"),
            Event::SpawnFailed {
                name,
                error,
                retry_in,
            } => tracing::warn!(
                name = %name,
                error = %error,
                restart_in_ms = retry_in.as_millis() as u64,
                "service failed to start"
            ),
            Event::Exited {
                name,
                pid,
                status,
                restart_in: Some(d),
            } => tracing::info!(
                name = %name,
                pid,
                status = %status,
                restart_in_ms = d.as_millis() as u64,
                "service exited"
            ),
            Event::Exited {
                name,
                pid,
                status,
                restart_in: None,
            } => {
                tracing::info!(name = %name, pid, status = %status, "service stopped")
            }
        }
    }
}

/// The wait before the restart that follows `failures` quick failures in a row, at most `max`
/// (a cap below [`BACKOFF_MIN`] is the wait from the first failure on).
pub fn backoff(failures: u32, max: Duration) -> Duration {
    let factor = 1u32.checked_shl(failures.min(16)).unwrap_or(u32::MAX);
    BACKOFF_MIN.saturating_mul(factor).min(max)
}

impl Supervisor {
    /// No service yet; restarts wait at most `backoff_max`.
    pub fn new(backoff_max: Duration) -> Self {
        Supervisor {
            services: Vec::new(),
            stopping: false,
            backoff_max,
        }
    }

    pub fn add(&mut self, spec: ServiceSpec, now: Duration) {
        self.services.push(Service {
            spec,
            state: State::Waiting { at: now },
            failures: 0,
            restarts: 0,
            asked_to_stop: false,
        });
    }

    /// Starts every service whose time has come.
    pub fn tick(&mut self, now: Duration, spawner: &mut impl Spawner) -> Vec<Event> {
        let mut events = Vec::new();
        if self.stopping {
            return events;
        }
        let backoff_max = self.backoff_max;
        for svc in &mut self.services {
            let State::Waiting { at } = svc.state else {
                continue;
            };
            if at > now {
                continue;
            }
            match spawner.spawn(&svc.spec) {
                Ok(pid) => {
                    svc.state = State::Running { pid, since: now };
                    events.push(Event::Started {
                        name: svc.spec.name.clone(),
                        pid,
                    });
                }
                Err(e) => {
                    let retry_in = backoff(svc.failures, backoff_max);
                    svc.failures += 1;
                    svc.state = State::Waiting { at: now + retry_in };
                    events.push(Event::SpawnFailed {
                        name: svc.spec.name.clone(),
                        error: e.to_string(),
                        retry_in,
                    });
                }
            }
        }
        events
    }

    /// Records that `pid` exited. Returns the event if it was one of ours.
    pub fn exited(&mut self, pid: i32, status: &str, now: Duration) -> Option<Event> {
        let stopping = self.stopping;
        let backoff_max = self.backoff_max;
        let svc = self
            .services
            .iter_mut()
            .find(|s| matches!(s.state, State::Running { pid: p, .. } if p == pid))?;
        let State::Running { since, .. } = svc.state else {
            return None;
        };
        if stopping {
            svc.state = State::Stopped;
            return Some(Event::Exited {
                name: svc.spec.name.clone(),
                pid,
                status: status.into(),
                restart_in: None,
            });
        }
        if now.saturating_sub(since) >= HEALTHY_RUN {
            svc.failures = 0;
        }
        let restart_in = backoff(svc.failures, backoff_max);
        svc.failures += 1;
        svc.restarts += 1;
        svc.state = State::Waiting { at: now + restart_in };
        Some(Event::Exited {
            name: svc.spec.name.clone(),
            pid,
            status: status.into(),
            restart_in: Some(restart_in),
        })
    }

    /// When the next service is due to start, if any is waiting.
    pub fn next_deadline(&self) -> Option<Duration> {
        if self.stopping {
            return None;
        }
        self.services
            .iter()
            .filter_map(|s| match s.state {
                State::Waiting { at } => Some(at),
                _ => None,
            })
            .min()
    }

    /// Stops restarting and asks the most recently started service that runs and was not asked
    /// yet to terminate; returns its pid, or `None` when none is left. Shutdown goes through the
    /// services in reverse start order with it, so that a service stops before the ones it
    /// needs (clumpd says goodbye while netd still holds the address).
    pub fn stop_next(&mut self, spawner: &mut impl Spawner) -> Option<i32> {
        self.stopping = true;
        for svc in self.services.iter_mut().rev() {
            match svc.state {
                State::Running { pid, .. } if !svc.asked_to_stop => {
                    svc.asked_to_stop = true;
                    spawner.terminate(&svc.spec, pid);
                    return Some(pid);
                }
                State::Waiting { .. } => svc.state = State::Stopped,
                _ => {}
            }
        }
        None
    }

    /// The name of the service running as `pid`.
    pub fn name_of(&self, pid: i32) -> Option<&str> {
        self.services
            .iter()
            .find(|s| matches!(s.state, State::Running { pid: p, .. } if p == pid))
            .map(|s| s.spec.name.as_str())
    }

    /// Whether `pid` is one of the services and still runs.
    pub fn is_running(&self, pid: i32) -> bool {
        self.services
            .iter()
            .any(|s| matches!(s.state, State::Running { pid: p, .. } if p == pid))
    }

    pub fn running(&self) -> usize {
        self.services
            .iter()
            .filter(|s| matches!(s.state, State::Running { .. }))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Fake {
        next_pid: i32,
        fail: bool,
        terminated: Vec<i32>,
    }

    impl Spawner for Fake {
        fn spawn(&mut self, _spec: &ServiceSpec) -> std::io::Result<i32> {
            if self.fail {
                return Err(std::io::Error::from(std::io::ErrorKind::NotFound));
            }
            self.next_pid += 1;
            Ok(self.next_pid + 100)
        }
        fn terminate(&mut self, _spec: &ServiceSpec, pid: i32) {
            self.terminated.push(pid);
        }
    }

    fn spec(name: &str) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            argv: vec!["/bin/sh".into()],
            env: vec![],
            tty: None,
        }
    }

    const S: fn(u64) -> Duration = Duration::from_secs;
    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn restarts_with_growing_backoff_and_resets_after_a_healthy_run() {
        let mut sup = Supervisor::default();
        let mut sp = Fake::default();
        sup.add(spec("shell"), S(0));
        assert_eq!(
            sup.tick(S(0), &mut sp),
            [Event::Started {
                name: "shell".into(),
                pid: 101
            }]
        );
        assert_eq!(sup.exited(999, "exit 0", S(1)), None, "not ours");

        let ev = sup.exited(101, "signal 9", S(1)).unwrap();
        assert_eq!(
            ev,
            Event::Exited {
                name: "shell".into(),
                pid: 101,
                status: "signal 9".into(),
                restart_in: Some(MS(250))
            }
        );
        assert!(sup.tick(S(1), &mut sp).is_empty(), "not before the backoff");
        assert_eq!(sup.next_deadline(), Some(S(1) + MS(250)));
        assert_eq!(sup.tick(S(1) + MS(250), &mut sp).len(), 1);

        let Some(Event::Exited { restart_in, .. }) = sup.exited(102, "exit 1", S(2)) else {
            panic!()
        };
        assert_eq!(restart_in, Some(MS(500)));
        sup.tick(S(3), &mut sp);
        let Some(Event::Exited { restart_in, .. }) = sup.exited(103, "exit 1", S(100)) else {
            panic!()
        };
        assert_eq!(restart_in, Some(MS(250)), "a long run resets the backoff");
    }

    #[test]
    fn backoff_is_capped() {
        assert_eq!(backoff(0, BACKOFF_MAX), MS(250));
        assert_eq!(backoff(3, BACKOFF_MAX), S(2));
        assert_eq!(backoff(10, BACKOFF_MAX), S(30));
        assert_eq!(backoff(u32::MAX, BACKOFF_MAX), S(30));
        assert_eq!(backoff(0, MS(600)), MS(250));
        assert_eq!(backoff(1, MS(600)), MS(500));
        assert_eq!(backoff(2, MS(600)), MS(600));
        assert_eq!(backoff(u32::MAX, MS(600)), MS(600));
        assert_eq!(
            backoff(0, MS(100)),
            MS(100),
            "a cap below the first wait is the wait"
        );
    }

    #[test]
    fn a_crash_loop_waits_at_most_the_cap_set() {
        let mut sup = Supervisor::new(MS(600));
        let mut sp = Fake::default();
        sup.add(spec("clumpd"), S(0));
        let mut now = S(0);
        let mut waits = Vec::new();
        for _ in 0..6 {
            let Some(Event::Started { pid, .. }) = sup.tick(now, &mut sp).pop() else {
                panic!("not restarted at {now:?}")
            };
            now += MS(50);
            let Some(Event::Exited {
                restart_in: Some(d), ..
            }) = sup.exited(pid, "signal:SIGKILL", now)
            else {
                panic!()
            };
            waits.push(d.as_millis());
            assert!(
                sup.tick(now + d - MS(1), &mut sp).is_empty(),
                "restarted before its backoff"
            );
            now += d;
        }
        assert_eq!(waits, [250, 500, 600, 600, 600, 600]);
    }

    #[test]
    fn spawn_failure_retries_later() {
        let mut sup = Supervisor::default();
        let mut sp = Fake {
            fail: true,
            ..Default::default()
        };
        sup.add(spec("runtime"), S(0));
        let ev = sup.tick(S(0), &mut sp);
        assert!(matches!(&ev[0], Event::SpawnFailed { retry_in, .. } if *retry_in == MS(250)));
        sp.fail = false;
        assert!(sup.tick(MS(100), &mut sp).is_empty());
        assert_eq!(sup.tick(MS(300), &mut sp).len(), 1);
    }

    #[test]
    fn stopping_terminates_and_never_restarts() {
        let mut sup = Supervisor::default();
        let mut sp = Fake::default();
        sup.add(spec("a"), S(0));
        sup.add(spec("b"), S(5));
        sup.tick(S(0), &mut sp);
        assert_eq!(sup.stop_next(&mut sp), Some(101));
        assert_eq!(sup.stop_next(&mut sp), None, "asked once; b never started");
        assert_eq!(sp.terminated, [101]);
        let Some(Event::Exited { restart_in, .. }) = sup.exited(101, "signal 15", S(1)) else {
            panic!()
        };
        assert_eq!(restart_in, None);
        assert!(sup.tick(S(10), &mut sp).is_empty());
        assert_eq!(sup.running(), 0);
        assert_eq!(sup.next_deadline(), None);
    }

    #[test]
    fn shutdown_asks_services_one_by_one_in_reverse_start_order() {
        let mut sup = Supervisor::default();
        let mut sp = Fake::default();
        for name in ["netd", "clumpd", "shell"] {
            sup.add(spec(name), S(0));
        }
        sup.tick(S(0), &mut sp);
        assert_eq!(sup.stop_next(&mut sp), Some(103), "the shell first");
        assert!(sup.is_running(103), "asked, not gone yet");
        sup.exited(103, "signal:SIGHUP", S(1));
        assert!(!sup.is_running(103));
        assert_eq!(sup.stop_next(&mut sp), Some(102), "then clumpd");
        assert_eq!(sup.stop_next(&mut sp), Some(101), "netd last");
        assert_eq!(sup.stop_next(&mut sp), None);
        assert_eq!(sp.terminated, [103, 102, 101]);
        assert!(sup.tick(S(5), &mut sp).is_empty(), "nothing restarts");
    }
}
