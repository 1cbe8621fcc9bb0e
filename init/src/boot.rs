//! The boot sequence as named stages, then PID 1's event loop. Each stage logs its failures and
//! the node carries on as far as it can.

use crate::cmdline::{self, Config};
use crate::hardware::{Change, Hardware};
use crate::process::{reap_all, ProcessSpawner};
use crate::ready::Readiness;
use crate::shutdown::{shutdown, Action};
use crate::signals::{Request, Signals};
use crate::supervisor::{Event, Supervisor};
use crate::{clock, hide_key, log, mounts, network, services};
use rustix::event::{poll, PollFd, PollFlags};
use std::path::PathBuf;
use std::time::Duration;

pub const LOG_FILE: &str = "/run/clump/init.log";

/// Runs the stages, then the event loop, until a shutdown.
/// What CRIU needs before its first dump or restore: 3.17 creates an nftables table on every run
/// and gives up when it cannot, and it inspects sockets through the `*_diag` netlink families.
/// crc32c first: nf_tables needs libcrc32c, whose init asks the crypto API for it.
const CHECKPOINT_MODULES: &[&str] = &[
    "crc32c_generic",
    "nf_tables",
    "unix_diag",
    "inet_diag",
    "tcp_diag",
    "udp_diag",
    "netlink_diag",
    "af_packet_diag",
];

/// Transparent huge pages only for programs that ask (madvise): pre-copy tracks writes per page
/// table entry, so a job on 2 MiB pages sends 2 MiB again for every byte it changes. Jobs turn
/// them off for themselves as well; this covers a job restored by a CRIU that does not carry
/// that flag, and programs started by hand.
const THP: &str = "/sys/kernel/mm/transparent_hugepage/enabled";

fn huge_pages_on_request() {
    match std::fs::write(THP, "madvise") {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(error = %e, "cannot set {THP} to madvise"),
    }
}

pub fn run(signals: Signals) -> ! {
    log::stage("start");
    let failed_mounts = mounts::mount_all();
    let failed_dirs = mounts::make_dirs(std::path::Path::new("/"));
    log::attach_devices();
    if let Err(e) = log::attach_file(std::path::Path::new(LOG_FILE)) {
        tracing::warn!(error = %e, "no log file: `clump log` will be empty");
    }
    if let Err(e) = rustix::system::reboot(rustix::system::RebootCommand::CadOff) {
        tracing::warn!(error = %e, "cannot route ctrl-alt-del to PID 1");
    }
    log::stage("mounts");
    hide_key::hide();
    huge_pages_on_request();
    if failed_mounts > 0 {
        tracing::warn!(failed = failed_mounts, "some filesystems are missing");
    }
    if failed_dirs > 0 {
        tracing::warn!(failed = failed_dirs, "some service directories are missing");
    }

    if let Err(e) = rustix::system::sethostname(b"clump") {
        tracing::warn!(error = %e, "cannot set hostname");
    }
    log::stage("console");

    let cfg = read_config();
    log::stage("cmdline");

    let kernel = rustix::system::uname().release().to_string_lossy().into_owned();
    let mut hw = Hardware::open(&PathBuf::from("/lib/modules").join(&kernel), &cfg.blacklist);
    let modules: Vec<String> = CHECKPOINT_MODULES
        .iter()
        .map(|m| (*m).to_owned())
        .chain(cfg.modules.iter().cloned())
        .collect();
    hw.coldplug(&modules);
    log::stage("coldplug");

    // The screen starts before the NICs so the monitor shows the stages from here on; the drivers
    // that give it a framebuffer were loaded by coldplug.
    let mut supervisor = Supervisor::new(cfg.restart_max);
    let mut spawner = ProcessSpawner;
    if let Some(spec) = services::screen(&cfg, |p| std::path::Path::new(p).exists()) {
        supervisor.add(spec, clock::since_boot());
        log_events(supervisor.tick(clock::since_boot(), &mut spawner));
    }

    let chosen = network::bring_up(cfg.carrier_wait, cfg.iface.as_deref(), cfg.boot_mac.as_deref());
    log::stage("nics");

    let now = clock::since_boot();
    let network = services::network(chosen.as_ref().map(|c| c.nic.name.as_str()), &cfg, |p| {
        std::path::Path::new(p).exists()
    });
    let netd = network.iter().any(|s| s.name == "netd");
    if chosen.is_some() && !netd {
        tracing::warn!("this image has no network service: no address");
    }
    if chosen.is_some() && !network.iter().any(|s| s.name == "clumpd") {
        tracing::warn!("this image has no runtime daemon (clumpd): the node joins no cluster");
    }
    for spec in network {
        supervisor.add(spec, now);
    }
    for spec in services::shells(&cfg) {
        supervisor.add(spec, now);
    }
    log_events(supervisor.tick(now, &mut spawner));
    log::stage("services");

    let known: Vec<String> = clump_net::list_ethernet(std::path::Path::new("/sys/class/net"))
        .into_iter()
        .map(|n| n.name)
        .collect();
    let ready = Readiness::new(chosen, clock::since_boot(), netd.then_some(cfg.addr_wait));
    Node {
        signals,
        hw,
        supervisor,
        spawner,
        known_nics: known,
        ready,
    }
    .run()
}

fn read_config() -> Config {
    let text = match std::fs::read_to_string("/proc/cmdline") {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the kernel command line; using defaults");
            String::new()
        }
    };
    let (cfg, warnings) = cmdline::parse(&text);
    for w in warnings {
        tracing::warn!("{w}");
    }
    cfg
}

/// What PID 1's event loop works on after boot.
struct Node {
    signals: Signals,
    hw: Hardware,
    supervisor: Supervisor,
    spawner: ProcessSpawner,
    known_nics: Vec<String>,
    ready: Readiness,
}

impl Node {
    fn run(mut self) -> ! {
        loop {
            let now = clock::since_boot();
            let wait = [
                self.supervisor.next_deadline(),
                self.ready.deadline().map(|_| now + POLL_READY),
            ]
            .into_iter()
            .flatten()
            .min()
            .map_or(Duration::from_secs(1), |at| at.saturating_sub(now))
            .min(Duration::from_secs(1));
            let (sig_ready, uevent_ready, power_ready) = wait_for_input(&self.signals, &self.hw, wait);

            let mut request = None;
            if sig_ready {
                request = self.signals.read().into_iter().rfind(|r| *r != Request::Reap);
            }
            // Reap on every turn, not only on SIGCHLD: signals coalesce.
            let now = clock::since_boot();
            for r in reap_all() {
                if let Some(ev) = self.supervisor.exited(r.pid, &r.status, now) {
                    ev.log();
                }
            }
            if uevent_ready {
                self.hotplug();
            }
            if power_ready && self.hw.power_pressed() {
                request = Some(Request::PowerOff("power-button"));
            }
            match request {
                Some(Request::PowerOff(why)) => shutdown(Action::PowerOff, why, &mut self.supervisor),
                Some(Request::Reboot(why)) => shutdown(Action::Reboot, why, &mut self.supervisor),
                _ => {}
            }
            log_events(self.supervisor.tick(clock::since_boot(), &mut self.spawner));
            self.ready.poll(clock::since_boot());
        }
    }

    fn hotplug(&mut self) {
        for change in self.hw.handle_uevents() {
            // The uevents of coldplug arrive here too; only a new interface is news.
            if let Change::NetAdded(iface) = change {
                if !self.known_nics.contains(&iface) {
                    tracing::info!(iface = %iface, "interface appeared");
                    self.known_nics.push(iface);
                }
            }
        }
    }
}

/// How often the lease file is looked at while `ready` waits for it.
const POLL_READY: Duration = Duration::from_millis(200);

/// Waits up to `wait` for the signalfd, the uevent socket or a power button.
fn wait_for_input(signals: &Signals, hw: &Hardware, wait: Duration) -> (bool, bool, bool) {
    let mut fds = vec![PollFd::from_borrowed_fd(signals.fd(), PollFlags::IN)];
    let uevent = hw.uevent_fd().map(|fd| {
        fds.push(PollFd::from_borrowed_fd(fd, PollFlags::IN));
        fds.len() - 1
    });
    let first_button = fds.len();
    fds.extend(
        hw.power_button_fds()
            .map(|fd| PollFd::from_borrowed_fd(fd, PollFlags::IN)),
    );
    let timeout = rustix::time::Timespec {
        tv_sec: wait.as_secs() as i64,
        tv_nsec: i64::from(wait.subsec_nanos()),
    };
    if poll(&mut fds, Some(&timeout)).is_err() {
        return (true, false, false);
    }
    let ready = |i: usize| !fds[i].revents().is_empty();
    (
        ready(0),
        uevent.is_some_and(ready),
        (first_button..fds.len()).any(ready),
    )
}

fn log_events(events: Vec<Event>) {
    for ev in events {
        ev.log();
    }
}
