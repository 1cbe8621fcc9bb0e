//! PID 1's log: every line goes to the serial console (stdout), tty1, /dev/kmsg and the file
//! `/run/clump/init.log` for `clump log` ([`crate::log_file`]: the only copy PID 1 keeps).
//!
//! Lines are `clump: <message> key=value ...`, the console protocol in ARCHITECTURE.md.

use crate::clock;
use crate::log_file::LogFile;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// The log file is cut when it would grow past this, so /run never fills up.
const FILE_LIMIT: u64 = 512 * 1024;
/// Lines logged before /run is mounted wait for the file here (a few stages; more are dropped).
const EARLY_LINES: usize = 64;

struct Sinks {
    tty1: Option<File>,
    kmsg: Option<File>,
    file: Option<LogFile>,
    /// Until the file is there.
    early: Vec<String>,
}

static SINKS: OnceLock<Mutex<Sinks>> = OnceLock::new();

fn sinks() -> &'static Mutex<Sinks> {
    SINKS.get_or_init(|| {
        Mutex::new(Sinks {
            tty1: None,
            kmsg: None,
            file: None,
            early: Vec::new(),
        })
    })
}

/// Installs the tracing subscriber. Call first: before it, nothing is logged.
pub fn install() {
    let _ = tracing_subscriber::registry().with(ConsoleLayer).try_init();
}

/// Opens /dev/kmsg and /dev/tty1 once devtmpfs is mounted. Missing devices are fine (no VGA).
pub fn attach_devices() {
    let kmsg = OpenOptions::new().write(true).open("/dev/kmsg").ok();
    let tty1 = OpenOptions::new().write(true).open("/dev/tty1").ok();
    if let Ok(mut s) = sinks().lock() {
        s.kmsg = kmsg;
        s.tty1 = tty1;
    }
}

/// Starts the log file at `path` (once /run is mounted), with what was logged so far.
pub fn attach_file(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut s = sinks()
        .lock()
        .map_err(|_| std::io::Error::other("log lock poisoned"))?;
    let mut file = LogFile::create(path, FILE_LIMIT)?;
    for line in std::mem::take(&mut s.early) {
        file.append(&line)?;
    }
    s.file = Some(file);
    Ok(())
}

/// The boot is over (`stage=ready` is out): its lines stay at the top of the file for good.
pub fn boot_done() {
    if let Ok(mut s) = sinks().lock() {
        if let Some(file) = s.file.as_mut() {
            file.keep_head();
        }
    }
}

/// Writes one line to every sink. Never blocks on a poisoned lock and never fails: PID 1 must not
/// stop because a console is gone.
pub fn write_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    let mut guard = match sinks().try_lock() {
        Ok(g) => g,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return,
    };
    let s = &mut *guard;
    if let Some(tty) = s.tty1.as_mut() {
        let _ = writeln!(tty, "{line}\r");
    }
    if let Some(kmsg) = s.kmsg.as_mut() {
        let _ = kmsg.write_all(format!("<6>{line}\n").as_bytes());
    }
    let ms = clock::since_boot_ms();
    let stamped = format!("[{:>5}.{:03}] {line}\n", ms / 1000, ms % 1000);
    match s.file.as_mut() {
        // A full /run loses the line from the file only; the console has it.
        Some(file) => {
            let _ = file.append(&stamped);
        }
        None if s.early.len() < EARLY_LINES => s.early.push(stamped),
        None => {}
    }
}

/// Formats tracing events as protocol lines.
struct ConsoleLayer;

impl<S: Subscriber> Layer<S> for ConsoleLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut v = LineVisitor::default();
        event.record(&mut v);
        let level = *event.metadata().level();
        let prefix = match level {
            Level::ERROR => "error: ",
            Level::WARN => "warning: ",
            _ => "",
        };
        if level > Level::INFO {
            return;
        }
        let mut line = format!("clump: {prefix}{}", v.message);
        if !v.fields.is_empty() {
            if !v.message.is_empty() {
                line.push(' ');
            }
            line.push_str(&v.fields);
        }
        write_line(&line);
    }
}

#[derive(Default)]
struct LineVisitor {
    message: String,
    fields: String,
}

impl LineVisitor {
    fn push_field(&mut self, name: &str, value: &str) {
        if !self.fields.is_empty() {
            self.fields.push(' ');
        }
        let needs_quotes = value.is_empty() || value.contains(|c: char| c.is_whitespace() || c == '"');
        if needs_quotes {
            let _ = write!(self.fields, "{name}={value:?}");
        } else {
            let _ = write!(self.fields, "{name}={value}");
        }
    }
}

impl Visit for LineVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.push_field(field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.push_field(field.name(), &text);
        }
    }
}

/// Logs `clump: stage=<name> t=<ms>`.
pub fn stage(name: &str) {
    tracing::info!(stage = name, t = clock::since_boot_ms() as u64);
}
