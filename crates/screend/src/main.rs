//! `clump-screend`: the status screen on the node's monitor, a service supervised by PID 1.
//!
//! It draws the cluster on `/dev/fb0` (or, without a framebuffer, text on tty1) from clumpd's
//! local API, redraws every second and at once on a membership change, shows the boot stages
//! until the runtime answers, and reads the node's own keyboard (Esc: power off; F2: the shell).

mod boot_stages;
mod display;
mod fbdev;
mod feed;
mod keys;
mod rate;
mod text;
mod vt;

use anyhow::Result;
use boot_stages::BootFacts;
use clap::Parser;
use clump_api::{Event, MapState};
use clump_screen::{Phase, View};
use display::Display;
use feed::{Feed, Input, Snapshot};
use keys::{Action, Controls};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Parser, Debug)]
#[command(
    name = "clump-screend",
    version,
    about = "The Clump status screen on the node's monitor"
)]
struct Args {
    /// The framebuffer to draw on.
    #[arg(long, default_value = "/dev/fb0")]
    fb: PathBuf,
    /// The virtual terminal the screen lives on (its keyboard, graphics mode).
    #[arg(long, default_value_t = 1)]
    vt: u16,
    /// The terminal of the root shell, put in front by F2.
    #[arg(long, default_value_t = 2)]
    shell_vt: u16,
    /// clumpd's local API.
    #[arg(long, default_value = clump_api::SOCKET)]
    socket: PathBuf,
    /// PID 1's log, for the boot stages.
    #[arg(long, default_value = "/run/clump/init.log")]
    init_log: PathBuf,
    /// The network service's lease file, for the boot stages.
    #[arg(long, default_value = "/run/clump/lease.json")]
    lease: PathBuf,
    /// Milliseconds between redraws when nothing happens.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
}

/// Events the footer keeps.
const EVENTS_KEPT: usize = 32;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .without_time()
        .init();
    let args = Args::parse();
    let vt_number = args.vt;
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // A screen left in graphics mode would hide the console for good.
        vt::restore_text_mode(vt_number);
        default_hook(info);
    }));
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    let (tx, rx) = mpsc::channel();
    let quit = tx.clone();
    ctrlc::set_handler(move || {
        let _ = quit.send(Input::Quit);
    })?;
    feed::spawn_watch(args.socket.clone(), tx.clone())?;

    let mut vt = match vt::Vt::open(args.vt) {
        Ok(vt) => {
            if let Err(e) = vt.raw_keyboard() {
                tracing::warn!(error = %e, "no keyboard on tty{}", args.vt);
            }
            if let Err(e) = feed::spawn_keyboard(PathBuf::from(format!("/dev/tty{}", args.vt)), tx.clone()) {
                tracing::warn!(error = %e, "no keyboard on tty{}", args.vt);
            }
            Some(vt)
        }
        Err(e) => {
            tracing::warn!(error = %e, "no tty{}: nothing to show the screen on but a framebuffer", args.vt);
            None
        }
    };
    let mut screen = Screen {
        display: None,
        display_error: None,
        graphics_error: None,
        facts: BootFacts::default(),
        snapshot: None,
        events: VecDeque::new(),
        migrations: rate::PerMinute::default(),
        controls: Controls::default(),
        notice: None,
        cluster_name: cluster_name(),
        started: Instant::now(),
        text: text::TextScreen::default(),
    };
    let mut feed = Feed::new(&args.socket);
    let interval = Duration::from_millis(args.interval_ms.max(100));
    let mut next_tick = Instant::now();
    loop {
        let now = Instant::now();
        let mut refresh = false;
        match rx.recv_timeout(next_tick.saturating_duration_since(now)) {
            Ok(Input::Quit) => break,
            Ok(Input::Event(e)) => {
                feed.seen(e.seq);
                screen.push_event(e);
                refresh = true;
            }
            Ok(Input::Keys(bytes)) => {
                for key in keys::decode(&bytes) {
                    match screen.controls.key(key, screen.started.elapsed()) {
                        Some(Action::Notice(n)) => screen.notice = n,
                        Some(Action::ShowShell) => {
                            if let Some(vt) = vt.as_mut() {
                                if let Err(e) = vt.switch_to(args.shell_vt) {
                                    tracing::warn!(error = %e, "cannot switch to tty{}", args.shell_vt);
                                }
                            }
                        }
                        Some(Action::PowerOff) => {
                            screen.notice = Some(
                                "Powering off: sending guest jobs away (up to 60 s), then leaving the cluster."
                                    .into(),
                            );
                            screen.draw(vt.as_mut(), args);
                            power_off();
                        }
                        None => {}
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => refresh = true,
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if screen.controls.expire(screen.started.elapsed()) {
            screen.notice = None;
        }
        if refresh {
            screen.refresh(&mut feed, args);
            next_tick = Instant::now() + interval;
        }
        screen.draw(vt.as_mut(), args);
    }
    tracing::info!("screen stopped");
    Ok(())
}

/// Everything a frame is made from.
struct Screen {
    display: Option<Display>,
    /// Why there is no framebuffer, said once per reason.
    display_error: Option<String>,
    /// Why tty1 is not in graphics mode, said once per reason.
    graphics_error: Option<rustix::io::Errno>,
    facts: BootFacts,
    snapshot: Option<Snapshot>,
    events: VecDeque<Event>,
    migrations: rate::PerMinute,
    controls: Controls,
    notice: Option<String>,
    cluster_name: String,
    started: Instant,
    text: text::TextScreen,
}

impl Screen {
    fn push_event(&mut self, e: Event) {
        if self
            .events
            .iter()
            .any(|old| old.seq == e.seq && old.time_ms == e.time_ms)
        {
            return;
        }
        self.events.push_back(e);
        while self.events.len() > EVENTS_KEPT {
            self.events.pop_front();
        }
    }

    /// Asks the runtime and reads the boot files; reopens the framebuffer if it changed.
    fn refresh(&mut self, feed: &mut Feed, args: &Args) {
        self.snapshot = feed.snapshot();
        let stats = self.snapshot.as_ref().and_then(|s| s.stats.as_ref());
        for e in feed.events_since_last(stats) {
            self.push_event(e);
        }
        if let Some(map) = self.snapshot.as_ref().and_then(|s| s.map.as_ref()) {
            let total: u64 = map.nodes.iter().filter_map(|n| n.migrations_out).sum();
            self.migrations.record(Instant::now(), total);
        }
        self.facts.cluster = self
            .snapshot
            .as_ref()
            .and_then(|s| s.map.as_ref())
            .map(|m| m.state);
        if let Ok(text) = std::fs::read_to_string(&args.init_log) {
            self.facts.read_init_log(&text);
        }
        match std::fs::read_to_string(&args.lease) {
            Ok(json) => self.facts.read_lease(&json),
            Err(_) => self.facts.lease = None,
        }
        if self.display.as_ref().is_some_and(|d| !d.still_same()) {
            tracing::info!("the framebuffer changed (a new driver took it over): opening it again");
            self.display = None;
        }
        if self.display.is_none() {
            match Display::open(&args.fb) {
                Ok(d) => {
                    tracing::info!("drawing on {}", d.describe());
                    self.display = Some(d);
                    self.display_error = None;
                }
                Err(e) => {
                    let why = format!("{e:#}");
                    if self.display_error.as_deref() != Some(why.as_str()) {
                        tracing::warn!("no framebuffer, text on the terminal instead: {why}");
                        self.display_error = Some(why);
                    }
                }
            }
        }
    }

    fn view(&self) -> View {
        let map = self.snapshot.as_ref().and_then(|s| s.map.clone());
        let stats = self.snapshot.as_ref().and_then(|s| s.stats.clone());
        let in_cluster = map
            .as_ref()
            .is_some_and(|m| matches!(m.state, MapState::Joining | MapState::Joined | MapState::Alone));
        let notice = self.notice.clone().or_else(|| {
            (self.facts.cluster == Some(MapState::NoKey))
                .then(|| "No cluster key: this node joins nothing.".to_string())
        });
        let jobs = map.as_ref().map(|m| {
            m.nodes
                .iter()
                .filter(|n| n.state.is_member())
                .filter_map(|n| n.jobs)
                .sum()
        });
        let (address, lease) = match &self.facts.lease {
            Some((addr, via)) => (addr.clone(), via.clone()),
            None if self.facts.no_nic => ("no address".to_string(), "no network card".to_string()),
            None => ("no address yet".to_string(), "none".to_string()),
        };
        View {
            cluster: self.cluster_name.clone(),
            phase: if in_cluster {
                Phase::Cluster
            } else {
                Phase::Boot(self.facts.stages())
            },
            map,
            stats,
            events: self.events.iter().cloned().collect(),
            address,
            lease,
            uptime_ms: uptime_ms(),
            jobs,
            migrations_per_min: self.migrations.per_minute(Instant::now()),
            now_ms: unix_ms(),
            notice,
        }
    }

    fn draw(&mut self, vt: Option<&mut vt::Vt>, args: &Args) {
        let view = self.view();
        match (self.display.as_mut(), vt) {
            (Some(display), vt) => {
                // Every terminal shares the framebuffer: draw only while ours is in front.
                let front = vt.as_ref().is_none_or(|vt| vt.in_front());
                if !front {
                    return;
                }
                let mut full = false;
                if let Some(vt) = vt {
                    if !vt.is_graphics() {
                        // Tried again each frame, said once: the serial console is not flooded.
                        match vt.set_graphics(true) {
                            Ok(()) => self.graphics_error = None,
                            Err(e) => {
                                if self.graphics_error != Some(e) {
                                    tracing::warn!(error = %e, "cannot put tty{} in graphics mode", args.vt);
                                    self.graphics_error = Some(e);
                                }
                            }
                        }
                        full = true;
                    }
                }
                display.draw(&view, full);
            }
            (None, Some(vt)) => {
                if vt.in_front() {
                    self.text.draw(vt, &view);
                }
            }
            (None, None) => {}
        }
    }
}

/// Asks PID 1 for the orderly power-off (SIGUSR2, as busybox's `poweroff` does).
fn power_off() {
    tracing::info!("power off asked at the node's keyboard");
    if let Err(e) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(1), nix::sys::signal::Signal::SIGUSR2) {
        tracing::error!(error = %e, "cannot ask PID 1 to power off");
    }
}

/// `clump.name=` from the kernel command line, else "clump".
fn cluster_name() -> String {
    std::fs::read_to_string("/proc/cmdline")
        .ok()
        .and_then(|c| {
            c.split_whitespace()
                .find_map(|w| w.strip_prefix("clump.name=").map(str::to_string))
        })
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "clump".to_string())
}

fn uptime_ms() -> u64 {
    std::fs::read_to_string(Path::new("/proc/uptime"))
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|f| f.parse::<f64>().ok()))
        .map_or(0, |s| (s * 1000.0) as u64)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
