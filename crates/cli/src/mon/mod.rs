//! `clump mon`: every node of the cluster on one live screen, as MOSIX's `mon` showed them.
//!
//! [`app`] holds the state and the keys, [`model`] the figures, [`render`] draws a frame, and
//! [`fetch`] asks clumpd; this file is the edge: the terminal, signals and the loop.

pub mod app;
mod fetch;
pub mod model;
pub mod render;

use anyhow::{Context, Result};
use app::{App, Key, Update, View};
use clump_api::Client;
use ratatui::backend::{CrosstermBackend, TestBackend};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::layout::Rect;
use ratatui::{Terminal, TerminalOptions, Viewport};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How `clump mon` was asked to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub view: View,
    pub interval: Duration,
    pub color: bool,
    /// Print one frame as text and exit.
    pub once: bool,
}

/// Whether colour may be used: not with `--no-color`, nor when `NO_COLOR` is set to anything
/// (no-color.org), nor on a terminal that says it has none.
pub fn color_allowed(no_color_flag: bool, no_color_env: Option<&str>, term: Option<&str>) -> bool {
    !no_color_flag && no_color_env.is_none_or(str::is_empty) && term != Some("dumb")
}

/// Parses `--interval`: seconds, fractions allowed, from 0.2 to 3600.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("not a number of seconds: {s}"))?;
    if !(0.2..=3600.0).contains(&secs) {
        return Err("the interval is 0.2 to 3600 seconds".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn interval_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub fn run(socket: &Path, opts: &Options) -> Result<()> {
    if opts.once {
        return once(socket, opts);
    }
    live(socket, opts)
}

/// `--once`: the screen as plain text, every node on it, for scripts and logs.
fn once(socket: &Path, opts: &Options) -> Result<()> {
    let map = Client::connect(socket)?.nodes()?;
    let mut app = App::new(opts.view, false, interval_ms(opts.interval));
    app.update(Update::Map(map), now_ms());
    let width = terminal::size()
        .ok()
        .filter(|(w, _)| *w > 0 && std::io::stdout().is_terminal())
        .map_or(80, |(w, _)| w);
    let height = u16::try_from(app.nodes() + 5).unwrap_or(u16::MAX);
    let mut t = Terminal::new(TestBackend::new(width, height)).context("cannot lay the frame out")?;
    let now = now_ms();
    t.draw(|f| {
        render::draw(f, &app, now);
    })
    .context("cannot draw the frame")?;
    let buf = t.backend().buffer();
    let mut text = String::new();
    for y in 0..height {
        let line: String = (0..width).map(|x| buf[(x, y)].symbol()).collect();
        text.push_str(line.trim_end());
        text.push('\n');
    }
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Puts the terminal back as it was: cooked mode, the normal screen, a cursor. Safe to call twice.
fn restore_terminal() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(std::io::stdout(), cursor::Show, terminal::LeaveAlternateScreen);
}

/// Holds the terminal in raw mode on the alternate screen; dropping it (on return or while a
/// panic unwinds) gives it back.
struct RawScreen;

impl RawScreen {
    fn enter() -> Result<RawScreen> {
        // Restore also when a panic aborts instead of unwinding, and before the message prints.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            hook(info);
        }));
        terminal::enable_raw_mode().context("cannot put the terminal in raw mode (not a terminal?)")?;
        let screen = RawScreen;
        execute!(std::io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)
            .context("cannot switch to the alternate screen")?;
        Ok(screen)
    }
}

impl Drop for RawScreen {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// The viewport for a terminal of `size`: all of it, or where the terminal cannot tell its size
/// (a serial console reports 0x0) `COLUMNS` x `LINES` if set, else 80x24.
fn viewport(size: Option<(u16, u16)>, columns: Option<&str>, lines: Option<&str>) -> Viewport {
    match size {
        Some((w, h)) if w > 0 && h > 0 => Viewport::Fullscreen,
        _ => {
            let get = |v: Option<&str>, default| {
                v.and_then(|v| v.parse().ok())
                    .filter(|v| *v > 0)
                    .unwrap_or(default)
            };
            Viewport::Fixed(Rect::new(0, 0, get(columns, 80), get(lines, 24)))
        }
    }
}

fn live(socket: &Path, opts: &Options) -> Result<()> {
    // SIGTERM, SIGHUP (the SSH session went away) and SIGINT end the loop so the terminal is
    // restored; in raw mode Ctrl-C arrives as a key instead.
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)).context("cannot handle signals")?;

    let (tx, rx) = mpsc::channel();
    fetch::spawn(socket.to_path_buf(), opts.interval, tx);

    let screen = RawScreen::enter()?;
    let mut term = Terminal::with_options(
        CrosstermBackend::new(std::io::stdout()),
        TerminalOptions {
            viewport: viewport(
                terminal::size().ok(),
                std::env::var("COLUMNS").ok().as_deref(),
                std::env::var("LINES").ok().as_deref(),
            ),
        },
    )
    .context("cannot set up the terminal")?;
    let mut app = App::new(opts.view, opts.color, interval_ms(opts.interval));
    // Redrawn at least every second, so "last seen" and "map from" ages move.
    let mut drawn = Instant::now();
    let mut dirty = true;
    while !app.quit && !stop.load(Ordering::SeqCst) {
        for update in rx.try_iter() {
            app.update(update, now_ms());
            dirty = true;
        }
        if app.redraw {
            term.clear().context("cannot clear the terminal")?;
            app.redraw = false;
            dirty = true;
        }
        if dirty || drawn.elapsed() >= Duration::from_secs(1) {
            let now = now_ms();
            let mut page = app.page;
            term.draw(|f| page = render::draw(f, &app, now))
                .context("cannot draw on the terminal")?;
            app.set_page(page);
            drawn = Instant::now();
            dirty = false;
        }
        if event::poll(Duration::from_millis(100)).context("cannot read the terminal")? {
            match event::read().context("cannot read the terminal")? {
                Event::Key(k) if k.kind != KeyEventKind::Release => {
                    app.handle_key(key(k));
                    dirty = true;
                }
                // The next draw sees the new size and clears the screen first.
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
    }
    drop(term);
    drop(screen);
    Ok(())
}

fn key(k: KeyEvent) -> Key {
    match k.code {
        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Key::CtrlC,
        KeyCode::Char('l') if k.modifiers.contains(KeyModifiers::CONTROL) => Key::CtrlL,
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Tab => Key::Tab,
        KeyCode::BackTab => Key::BackTab,
        KeyCode::Left => Key::Left,
        KeyCode::Right => Key::Right,
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::PageUp => Key::PageUp,
        KeyCode::PageDown => Key::PageDown,
        KeyCode::Home => Key::Home,
        KeyCode::End => Key::End,
        KeyCode::Esc => Key::Esc,
        _ => Key::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_unless_refused() {
        assert!(color_allowed(false, None, Some("xterm-256color")));
        assert!(color_allowed(false, None, None));
        assert!(
            color_allowed(false, Some(""), Some("linux")),
            "an empty NO_COLOR does not count"
        );
        assert!(!color_allowed(true, None, Some("linux")));
        assert!(!color_allowed(false, Some("1"), Some("vt100")));
        assert!(!color_allowed(false, None, Some("dumb")));
    }

    #[test]
    fn a_terminal_without_a_size_gets_80x24_or_what_the_environment_says() {
        assert_eq!(viewport(Some((100, 30)), Some("40"), None), Viewport::Fullscreen);
        let fixed = |w, h| Viewport::Fixed(Rect::new(0, 0, w, h));
        assert_eq!(viewport(Some((0, 0)), None, None), fixed(80, 24));
        assert_eq!(viewport(None, None, None), fixed(80, 24));
        assert_eq!(viewport(Some((0, 0)), Some("132"), Some("43")), fixed(132, 43));
        assert_eq!(viewport(Some((0, 0)), Some("0"), Some("wide")), fixed(80, 24));
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("1"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_interval("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("3600"), Ok(Duration::from_secs(3600)));
        for bad in ["0", "0.1", "-1", "3601", "fast", "NaN", "inf"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn terminal_keys() {
        let k = |code, modifiers| key(KeyEvent::new(code, modifiers));
        assert_eq!(k(KeyCode::Char('c'), KeyModifiers::CONTROL), Key::CtrlC);
        assert_eq!(k(KeyCode::Char('c'), KeyModifiers::NONE), Key::Char('c'));
        assert_eq!(k(KeyCode::Char('l'), KeyModifiers::CONTROL), Key::CtrlL);
        assert_eq!(k(KeyCode::Char('l'), KeyModifiers::NONE), Key::Char('l'));
        assert_eq!(k(KeyCode::Char('M'), KeyModifiers::SHIFT), Key::Char('M'));
        assert_eq!(k(KeyCode::BackTab, KeyModifiers::SHIFT), Key::BackTab);
        assert_eq!(k(KeyCode::PageDown, KeyModifiers::NONE), Key::PageDown);
        assert_eq!(k(KeyCode::Esc, KeyModifiers::NONE), Key::Esc);
        assert_eq!(k(KeyCode::F(1), KeyModifiers::NONE), Key::Other);
    }
}
