//! PID 1's log: every line goes to the serial console (stdout), tty1, /dev/kmsg and a ring buffer
//! kept in memory and mirrored to `/run/clump/init.log` for `clump log`.
//!
//! Lines are `clump: <message> key=value ...`, the console protocol in ARCHITECTURE.md.

use crate::clock;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

const RING_LINES: usize = 2000;
/// The mirror file is rewritten from the ring when it grows past this, so /run never fills up.
const FILE_LIMIT: u64 = 512 * 1024;

struct Sinks {
    tty1: Option<File>,
    kmsg: Option<File>,
    file: Option<(PathBuf, File)>,
    file_bytes: u64,
    ring: VecDeque<String>,
}

static SINKS: OnceLock<Mutex<Sinks>> = OnceLock::new();

fn sinks() -> &'static Mutex<Sinks> {
    SINKS.get_or_init(|| {
        Mutex::new(Sinks {
            tty1: None,
            kmsg: None,
            file: None,
            file_bytes: 0,
            ring: VecDeque::new(),
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

/// Starts mirroring the ring to `path` (once /run is mounted), writing what was logged so far.
pub fn attach_file(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut s = sinks()
        .lock()
        .map_err(|_| std::io::Error::other("log lock poisoned"))?;
    let file = rewrite(path, &s.ring)?;
    s.file_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    s.file = Some((path.to_path_buf(), file));
    Ok(())
}

fn rewrite(path: &Path, ring: &VecDeque<String>) -> std::io::Result<File> {
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)?;
    for line in ring {
        writeln!(file, "{line}")?;
    }
    Ok(file)
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
    let stamped = format!("[{:>5}.{:03}] {line}", ms / 1000, ms % 1000);
    if s.ring.len() == RING_LINES {
        s.ring.pop_front();
    }
    s.ring.push_back(stamped.clone());
    if let Some((path, file)) = s.file.as_mut() {
        if s.file_bytes > FILE_LIMIT {
            if let Ok(fresh) = rewrite(path, &s.ring) {
                *file = fresh;
                s.file_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
            }
        } else if writeln!(file, "{stamped}").is_ok() {
            s.file_bytes += stamped.len() as u64 + 1;
        }
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
