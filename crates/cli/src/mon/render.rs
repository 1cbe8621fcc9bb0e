//! One frame of `clump mon`: a summary line, the views, a column header, a row per node, a status
//! line and the keys. Plain ASCII throughout (`#` bars, `<-` arrows), so a vt100 on a serial line
//! shows what xterm shows; colour only repeats what the words say.

use super::app::{App, View};
use super::model::{self, is_current, state_word};
use clump_api::{table, MapState, NodeEntry, NodeState};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

/// Rows that are not nodes: summary, views, column header above; status and keys below.
const CHROME_ROWS: usize = 5;
/// Below this many cells for the bar, the hostname column goes.
const MIN_BAR_WITH_HOST: usize = 12;
const STATE_WIDTH: usize = 7;

/// Draws `app` into the frame; returns how many node rows fit (for paging).
pub fn draw(frame: &mut Frame, app: &App, now_ms: u64) -> usize {
    let area = frame.area();
    let (lines, page) = lines(app, usize::from(area.width), usize::from(area.height), now_ms);
    frame.render_widget(Paragraph::new(lines), area);
    page
}

/// The frame as lines, exactly `height` of them, none wider than `width` (the renderer clips
/// nothing then), and the number of node rows among them.
pub fn lines(app: &App, width: usize, height: usize, now_ms: u64) -> (Vec<Line<'static>>, usize) {
    let paint = Paint { color: app.color };
    let page = height.saturating_sub(CHROME_ROWS);
    let mut out = Vec::with_capacity(height);
    out.push(summary_line(app, &paint, width));
    out.push(views_line(app, &paint, width, page));
    let rows: Vec<&NodeEntry> = app.map.as_ref().map(model::sorted).unwrap_or_default();
    let columns = Columns::new(app.view, &rows, width);
    out.push(columns.header(&paint));
    let first = app.scroll.min(rows.len().saturating_sub(page));
    for n in rows.iter().skip(first).take(page) {
        out.push(columns.row(n, &paint, now_ms));
    }
    if rows.is_empty() && page > 0 {
        let text = match (&app.map, &app.error) {
            (None, Some(_)) => "no node map: clumpd does not answer (see below)",
            (None, None) => "waiting for clumpd...",
            (Some(_), _) => "no nodes known yet",
        };
        out.push(Line::from(fit(&format!("  {text}"), width)));
    }
    while out.len() < height.saturating_sub(2) {
        out.push(Line::default());
    }
    if height >= 2 {
        out.push(status_line(app, &paint, width, now_ms));
    }
    if height >= 1 {
        out.push(keys_line(width));
    }
    out.truncate(height);
    (out, page)
}

/// Styles, or none of them under `--no-color` / `NO_COLOR` (bold and reverse stay: they are not
/// colour, and a vt100 has them).
struct Paint {
    color: bool,
}

impl Paint {
    fn fg(&self, c: Color) -> Style {
        if self.color {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }

    fn state(&self, s: NodeState) -> Style {
        match s {
            NodeState::This => self.fg(Color::Cyan).add_modifier(Modifier::BOLD),
            NodeState::Alive => self.fg(Color::Green),
            NodeState::Suspect => self.fg(Color::Yellow).add_modifier(Modifier::BOLD),
            NodeState::Leaving => self.fg(Color::Magenta),
            NodeState::Dead => self.fg(Color::Red).add_modifier(Modifier::BOLD),
            NodeState::Left | NodeState::Unknown => self.fg(Color::DarkGray),
        }
    }

    /// Green, yellow, red as `value` nears and passes `full`.
    fn level(&self, value: u64, full: u64) -> Style {
        let full = u128::from(full.max(1));
        let v = u128::from(value) * 100 / full;
        self.fg(match v {
            0..75 => Color::Green,
            75..100 => Color::Yellow,
            _ => Color::Red,
        })
    }
}

fn summary_line(app: &App, paint: &Paint, width: usize) -> Line<'static> {
    let Some(map) = &app.map else {
        return Line::from(fit("clump mon: no node map yet", width));
    };
    let s = model::summary(map);
    let state = match map.state {
        MapState::Joining => "joining",
        MapState::Joined => "joined",
        MapState::Alone => "alone",
        MapState::NoKey => "no-key (no cluster key)",
        MapState::NoLease => "no-lease (no network lease yet)",
        MapState::Unknown => "unknown",
    };
    let load = s.load.map_or_else(|| "-".to_owned(), model::milli);
    let text = format!(
        "cluster {state}: {}/{} nodes alive, {} cores, cluster load {load}",
        s.alive, s.total, s.cores
    );
    Line::from(Span::styled(
        fit(&text, width),
        paint.fg(Color::White).add_modifier(Modifier::BOLD),
    ))
}

fn views_line(app: &App, paint: &Paint, width: usize, page: usize) -> Line<'static> {
    let mut spans = Vec::new();
    let mut used = 0;
    for v in View::ALL {
        let text = if v == app.view {
            format!("[{} {}]", v.key(), v.name())
        } else {
            format!(" {} {} ", v.key(), v.name())
        };
        used += text.len() + 1;
        let style = if v == app.view {
            paint
                .fg(Color::Cyan)
                .add_modifier(Modifier::REVERSED | Modifier::BOLD)
        } else {
            Style::new()
        };
        spans.push(Span::styled(text, style));
        spans.push(Span::raw(" "));
    }
    let total = app.nodes();
    let position = if total > page && page > 0 {
        let first = app.scroll.min(total - page) + 1;
        format!("nodes {first}-{} of {total}", first + page - 1)
    } else {
        format!("{total} {}", if total == 1 { "node" } else { "nodes" })
    };
    if used + position.len() < width {
        spans.push(Span::raw(" ".repeat(width - used - position.len())));
        spans.push(Span::raw(position));
    }
    clip(spans, width)
}

/// How wide each column is for this view and these rows, at this terminal width.
struct Columns {
    view: View,
    num: usize,
    /// 0: no hostname column.
    host: usize,
    bar: usize,
    value: usize,
    /// What a full bar stands for.
    scale: u64,
    width: usize,
}

impl Columns {
    fn new(view: View, rows: &[&NodeEntry], width: usize) -> Columns {
        let scale = match view {
            View::Load => model::load_scale(rows),
            // Each node's bar is its own total: per mille of it.
            View::Memory => 1000,
            View::Speed => model::max_of(rows, capacity),
            View::Jobs => model::max_of(rows, |n| n.jobs.map(u64::from)),
        };
        let num = rows
            .iter()
            .map(|n| n.number.map_or(1, |v| v.to_string().len()))
            .fold(3, usize::max);
        let value = rows
            .iter()
            .map(|n| value_text(view, n).len())
            .fold(value_header(view).len(), usize::max);
        let host = rows
            .iter()
            .map(|n| n.hostname.as_deref().map_or(1, |h| h.chars().count()))
            .fold(8, usize::max)
            .min(16);
        // NUM STATE [BAR] VALUE, one blank between columns.
        let fixed = num + 1 + STATE_WIDTH + 1 + 2 + 1 + value;
        let (host, bar) = if width >= fixed + host + 1 + MIN_BAR_WITH_HOST {
            (host, width - fixed - host - 1)
        } else {
            (0, width.saturating_sub(fixed))
        };
        Columns {
            view,
            num,
            host,
            bar,
            value,
            scale,
            width,
        }
    }

    fn header(&self, paint: &Paint) -> Line<'static> {
        let what = match self.view {
            View::Load => format!(
                "LOAD, 1.00 = all cores busy at speed 1000; bar to {}",
                model::milli(self.scale)
            ),
            View::Memory => "MEMORY used of total".to_owned(),
            View::Speed => format!("SPEED x CORES, full bar {}", self.scale),
            View::Jobs => format!("JOBS running, full bar {}", self.scale),
        };
        let mut text = format!("{:>w$} ", "NUM", w = self.num);
        if self.host > 0 {
            text.push_str(&fit("HOSTNAME", self.host));
            text.push(' ');
        }
        text.push_str(&fit("STATE", STATE_WIDTH));
        text.push(' ');
        text.push_str(&fit(&what, self.bar + 2));
        text.push(' ');
        text.push_str(&format!("{:>w$}", value_header(self.view), w = self.value));
        Line::from(Span::styled(
            fit(&text, self.width),
            paint.fg(Color::Blue).add_modifier(Modifier::BOLD),
        ))
    }

    fn row(&self, n: &NodeEntry, paint: &Paint, now_ms: u64) -> Line<'static> {
        let number = n.number.map_or_else(|| "-".to_owned(), |v| v.to_string());
        let mut spans = vec![Span::raw(format!("{number:>w$} ", w = self.num))];
        if self.host > 0 {
            let host = n.hostname.as_deref().unwrap_or("-");
            spans.push(Span::raw(fit(host, self.host) + " "));
        }
        spans.push(Span::styled(
            fit(state_word(n.state), STATE_WIDTH),
            paint.state(n.state),
        ));
        spans.push(Span::raw(" "));
        if is_current(n) {
            let (value, full) = self.bar_value(n);
            let cells = value.map_or(0, |v| model::filled(v, self.scale, self.bar));
            spans.push(Span::raw("["));
            spans.push(Span::styled(
                "#".repeat(cells),
                paint.level(value.unwrap_or(0), full),
            ));
            spans.push(Span::raw(" ".repeat(self.bar - cells) + "]"));
            spans.push(Span::raw(format!(
                " {:>w$}",
                value_text(self.view, n),
                w = self.value
            )));
        } else {
            // A dead or departed node's figures are old: say when it was heard of instead.
            let seen = if n.last_seen_ms == 0 {
                "never seen".to_owned()
            } else {
                format!(
                    "last seen {} ago",
                    table::duration(now_ms.saturating_sub(n.last_seen_ms))
                )
            };
            spans.push(Span::styled(
                fit(&format!(" {seen}"), self.bar + 2),
                paint.fg(Color::DarkGray),
            ));
            spans.push(Span::raw(format!(" {:>w$}", "-", w = self.value)));
        }
        clip(spans, self.width)
    }

    /// The bar's figure, and the figure at which it turns red.
    fn bar_value(&self, n: &NodeEntry) -> (Option<u64>, u64) {
        match self.view {
            View::Load => (n.load.map(u64::from), model::FULL_LOAD),
            View::Memory => {
                // Memory bars are per node: the scale is each node's own total.
                let (used, total) = (model::mem_used_kib(n), n.mem_total_kib.unwrap_or(0));
                let value = used.map(|u| scale_to(u, total, self.scale));
                (value, self.scale * 9 / 10)
            }
            View::Speed => (capacity(n), u64::MAX),
            View::Jobs => (n.jobs.map(u64::from), u64::MAX),
        }
    }
}

/// `part` of `whole` out of `scale`, rounded up: memory bars, where each node has its own whole.
fn scale_to(part: u64, whole: u64, scale: u64) -> u64 {
    if whole == 0 {
        return 0;
    }
    let v = (u128::from(part.min(whole)) * u128::from(scale)).div_ceil(u128::from(whole));
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// Speed times cores: what the node can do, in reference-core units ×1000.
fn capacity(n: &NodeEntry) -> Option<u64> {
    Some(u64::from(n.speed?) * u64::from(n.cores?))
}

fn value_header(view: View) -> &'static str {
    match view {
        View::Load => "LOAD",
        View::Memory => "USED/TOTAL",
        View::Speed => "SPEED x CORES",
        View::Jobs => "JOBS  IN/OUT",
    }
}

fn value_text(view: View, n: &NodeEntry) -> String {
    let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    match view {
        View::Load => n
            .load
            .map_or_else(|| "-".to_owned(), |l| model::milli(u64::from(l))),
        View::Memory => model::memory(n.mem_total_kib, model::mem_used_kib(n)),
        View::Speed => format!(
            "{} x {}",
            opt(n.speed.map(u64::from)),
            opt(n.cores.map(u64::from))
        ),
        View::Jobs => format!(
            "{}  {}/{}",
            opt(n.jobs.map(u64::from)),
            opt(n.migrations_in),
            opt(n.migrations_out)
        ),
    }
}

fn status_line(app: &App, paint: &Paint, width: usize, now_ms: u64) -> Line<'static> {
    if let Some(e) = &app.error {
        let every = table::duration(app.interval_ms.max(1000));
        // clumpd's errors name clumpd ("clumpd is not running (no ...)"), so they stand alone.
        let mut text = format!("{e}; retrying every {every}");
        if app.map.is_some() {
            let age = table::duration(now_ms.saturating_sub(app.map_ms));
            text.push_str(&format!(" (map from {age} ago)"));
        }
        let style = if paint.color {
            Style::new()
                .fg(Color::White)
                .bg(Color::Red)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::REVERSED)
        };
        return Line::from(Span::styled(fit(&text, width), style));
    }
    match &app.last_event {
        Some(e) => Line::from(fit(&format!("last event: {e}"), width)),
        None => Line::default(),
    }
}

fn keys_line(width: usize) -> Line<'static> {
    const LONG: &str = "keys: l m s j, Tab <- ->: view   Up Down PgUp PgDn: scroll   q Esc: quit";
    const SHORT: &str = "l m s j Tab: view  PgUp PgDn: scroll  q: quit";
    let text = if LONG.len() <= width { LONG } else { SHORT };
    Line::from(Span::styled(
        fit(text, width),
        Style::new().add_modifier(Modifier::REVERSED),
    ))
}

/// `s` cut or padded with blanks to exactly `width` characters.
fn fit(s: &str, width: usize) -> String {
    let mut out: String = s.chars().take(width).collect();
    let n = out.chars().count();
    out.extend(std::iter::repeat_n(' ', width - n));
    out
}

/// Spans cut to `width` characters in all.
fn clip(spans: Vec<Span<'static>>, width: usize) -> Line<'static> {
    let mut left = width;
    let mut out = Vec::with_capacity(spans.len());
    for s in spans {
        if left == 0 {
            break;
        }
        let n = s.content.chars().count();
        if n <= left {
            left -= n;
            out.push(s);
        } else {
            let cut: String = s.content.chars().take(left).collect();
            out.push(Span::styled(cut, s.style));
            left = 0;
        }
    }
    Line::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mon::app::{Key, Update};
    use crate::mon::model::tests::{map, node};
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    const NOW: u64 = 1_000_000;

    fn cluster() -> clump_api::NodeMap {
        let mut dead = node(5, NodeState::Dead, 0, 4, 1000);
        dead.last_seen_ms = NOW - 180_000;
        let mut small = node(2, NodeState::Alive, 250, 2, 2000);
        small.mem_total_kib = Some(1000 * 1024);
        small.mem_free_kib = Some(200 * 1024);
        map(vec![
            node(1, NodeState::This, 870, 4, 12000),
            small,
            node(3, NodeState::Suspect, 1500, 4, 1000),
            node(4, NodeState::Leaving, 0, 4, 1000),
            dead,
            node(6, NodeState::Left, 0, 4, 1000),
        ])
    }

    fn screen(app: &mut App, w: u16, h: u16) -> Vec<String> {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        let mut page = 0;
        t.draw(|f| page = draw(f, app, NOW)).unwrap();
        app.set_page(page);
        let buf = t.backend().buffer();
        (0..h)
            .map(|y| (0..w).map(|x| buf[(x, y)].symbol()).collect::<String>())
            .collect()
    }

    fn app(view: View) -> App {
        let mut app = App::new(view, true, 1000);
        app.update(Update::Map(cluster()), NOW);
        app
    }

    #[test]
    fn the_load_view_at_80x24() {
        let s = screen(&mut app(View::Load), 80, 24);
        let want = [
            "cluster joined: 2/6 nodes alive, 6 cores, cluster load 0.82                     ",
            "[l load]  m memory   s speed   j jobs                                    6 nodes",
            "NUM HOSTNAME STATE   LOAD, 1.00 = all cores busy at speed 1000; bar to 1.50 LOAD",
            "  1 node-1   this    [##############################                      ] 0.87",
            "  2 node-2   alive   [#########                                           ] 0.25",
            "  3 node-3   suspect [####################################################] 1.50",
            "  4 node-4   leaving [                                                    ] 0.00",
            "  5 node-5   dead     last seen 3m 0s ago                                      -",
            "  6 node-6   left     last seen 0s ago                                         -",
        ];
        assert_eq!(s[..9], want);
        assert!(s[9..22].iter().all(|l| l.trim().is_empty()), "{s:#?}");
        assert_eq!(s[22].trim(), "");
        assert_eq!(
            s[23].trim_end(),
            "keys: l m s j, Tab <- ->: view   Up Down PgUp PgDn: scroll   q Esc: quit"
        );
    }

    #[test]
    fn every_view_has_its_header_and_figures() {
        let s = screen(&mut app(View::Memory), 80, 24);
        assert!(s[1].starts_with(" l load  [m memory]  s speed"), "{}", s[1]);
        assert!(
            s[2].contains("MEMORY used of total") && s[2].ends_with("USED/TOTAL"),
            "{}",
            s[2]
        );
        assert!(s[3].ends_with("] 4.0/16.0 GiB"), "{}", s[3]);
        assert!(s[4].ends_with("] 800/1000 MiB"), "{}", s[4]);
        // 4 of 16 GiB used: a quarter of the bar.
        let bar = s[3].split(['[', ']']).nth(1).unwrap();
        assert_eq!(bar.matches('#').count(), bar.len().div_ceil(4), "{bar:?}");

        let s = screen(&mut app(View::Speed), 80, 24);
        assert!(s[2].contains("SPEED x CORES, full bar 48000"), "{}", s[2]);
        assert!(s[3].ends_with("]     12000 x 4"), "{}", s[3]);
        assert!(s[3].contains("[####"), "the biggest node fills its bar: {}", s[3]);

        let s = screen(&mut app(View::Jobs), 80, 24);
        assert!(
            s[2].contains("JOBS running") && s[2].ends_with("JOBS  IN/OUT"),
            "{}",
            s[2]
        );
        assert!(s[3].ends_with("]       1  1/1"), "{}", s[3]);
    }

    #[test]
    fn a_wide_terminal_gives_longer_bars_and_a_small_one_drops_the_hostname() {
        let s = screen(&mut app(View::Load), 200, 60);
        assert_eq!(s.len(), 60);
        assert!(s.iter().all(|l| l.chars().count() == 200));
        let bar = s[5].split(['[', ']']).nth(1).unwrap();
        assert_eq!(bar.len(), 200 - 3 - 1 - 8 - 1 - 7 - 1 - 2 - 1 - 4);
        assert_eq!(bar, "#".repeat(bar.len()), "the busiest node fills the bar");
        assert!(s[58].trim().is_empty() && s[59].starts_with("keys:"));

        let s = screen(&mut app(View::Load), 36, 12);
        assert!(s[3].starts_with("  1 this    [#"), "{}", s[3]);
        assert!(s[11].starts_with("l m s j Tab: view"), "{}", s[11]);
        for tiny in [(10, 3), (1, 1), (0, 0), (80, 2)] {
            screen(&mut app(View::Jobs), tiny.0, tiny.1);
        }
    }

    #[test]
    fn many_nodes_scroll_by_page() {
        let nodes = (1..=60)
            .map(|i| node(i, NodeState::Alive, 500, 2, 1000))
            .collect();
        let mut app = App::new(View::Load, false, 1000);
        app.update(Update::Map(map(nodes)), NOW);
        let s = screen(&mut app, 80, 24);
        assert!(s[1].ends_with("nodes 1-19 of 60"), "{}", s[1]);
        assert!(s[3].starts_with("  1 node-1 "));
        assert!(s[21].starts_with(" 19 node-19"));
        app.handle_key(Key::PageDown);
        let s = screen(&mut app, 80, 24);
        assert!(s[1].ends_with("nodes 19-37 of 60"), "{}", s[1]);
        assert!(s[3].starts_with(" 19 node-19"), "{}", s[3]);
        app.handle_key(Key::End);
        let s = screen(&mut app, 80, 24);
        assert!(s[1].ends_with("nodes 42-60 of 60"), "{}", s[1]);
        assert!(s[21].starts_with(" 60 node-60"), "{}", s[21]);
    }

    #[test]
    fn without_clumpd_it_says_so_and_keeps_what_it_had() {
        let mut app = App::new(View::Load, true, 1000);
        app.update(
            Update::Failed("clumpd is not running (no /run/clump/clumpd.sock)".into()),
            NOW,
        );
        let s = screen(&mut app, 80, 24);
        assert!(s[0].starts_with("clump mon: no node map yet"));
        assert!(s[3].contains("clumpd does not answer"), "{}", s[3]);
        assert_eq!(
            s[22].trim_end(),
            "clumpd is not running (no /run/clump/clumpd.sock); retrying every 1s"
        );
        app.update(Update::Map(cluster()), NOW - 7000);
        app.update(Update::Failed("clumpd did not answer within 5s".into()), NOW);
        let s = screen(&mut app, 120, 24);
        assert!(s[3].contains("node-1"), "the last map stays on screen");
        assert!(
            s[22].contains("within 5s; retrying every 1s (map from 7s ago)"),
            "{}",
            s[22]
        );
        app.update(Update::Map(cluster()), NOW);
        app.update(Update::Event("node 7 (10.0.0.7) joined".into()), NOW);
        let s = screen(&mut app, 80, 24);
        assert_eq!(s[22].trim_end(), "last event: node 7 (10.0.0.7) joined");
    }

    #[test]
    fn without_colour_only_bold_and_reverse_remain() {
        let mut a = app(View::Load);
        a.color = false;
        let mut t = Terminal::new(TestBackend::new(80, 24)).unwrap();
        t.draw(|f| {
            draw(f, &a, NOW);
        })
        .unwrap();
        for cell in t.backend().buffer().content() {
            assert_eq!(cell.fg, Color::Reset, "{cell:?}");
            assert_eq!(cell.bg, Color::Reset, "{cell:?}");
        }
        let mut t = Terminal::new(TestBackend::new(80, 24)).unwrap();
        t.draw(|f| {
            draw(f, &app(View::Load), NOW);
        })
        .unwrap();
        assert!(t.backend().buffer().content().iter().any(|c| c.fg == Color::Red));
    }

    #[test]
    fn memory_bars_are_each_nodes_own_share() {
        assert_eq!(scale_to(0, 100, 1), 0);
        assert_eq!(scale_to(50, 100, 1000), 500);
        assert_eq!(scale_to(1, 1_000_000, 1000), 1, "a little stays above zero");
        assert_eq!(scale_to(200, 100, 1000), 1000);
        assert_eq!(scale_to(5, 0, 1000), 0);
    }
}
