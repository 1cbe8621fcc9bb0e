//! Drawing a [`View`] on any embedded-graphics target, following [`layout`] and [`boot_layout`].

use crate::format::{self, opt, UNKNOWN};
use crate::layout::{boot_layout, layout, Layout, TileLayout, BORDER};
use crate::text::{self, to_i32, Align, TextRecord};
use crate::theme::{self, state_color, state_word, TextSize};
use crate::view::{BootStage, Phase, StageStatus, View};
use clump_api::{MapState, NodeEntry, NodeMap, NodeState};
use embedded_graphics::draw_target::DrawTarget;
use embedded_graphics::geometry::{Point, Size};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::primitives::{Primitive, PrimitiveStyle, Rectangle};
use embedded_graphics::Drawable;

/// Draws the whole frame.
pub fn render<D: DrawTarget<Color = Rgb888>>(view: &View, target: &mut D) -> Result<(), D::Error> {
    Painter {
        target,
        records: None,
    }
    .frame(view)
}

/// Draws the whole frame and returns every line of text drawn, with the box it was given, so a
/// test can check that no text leaves its box.
pub fn render_recorded<D: DrawTarget<Color = Rgb888>>(
    view: &View,
    target: &mut D,
) -> Result<Vec<TextRecord>, D::Error> {
    let mut records = Vec::new();
    Painter {
        target,
        records: Some(&mut records),
    }
    .frame(view)?;
    Ok(records)
}

/// The nodes in the order the tiles show them: by number, then address, then id (as `clump
/// nodes` lists them); when only `shown` get a tile and this node is not among them, it takes the
/// last tile, so a node always sees itself.
pub fn display_order(map: &NodeMap, shown: usize) -> Vec<&NodeEntry> {
    let mut nodes: Vec<&NodeEntry> = map.nodes.iter().collect();
    nodes.sort_by_key(|n| (n.number.is_none(), n.number, n.address, n.id.as_str()));
    if shown > 0 && shown < nodes.len() {
        if let Some(i) = nodes.iter().position(|n| n.state == NodeState::This) {
            if i >= shown {
                let this = nodes.remove(i);
                nodes.insert(shown - 1, this);
            }
        }
    }
    nodes
}

struct Painter<'a, D> {
    target: &'a mut D,
    records: Option<&'a mut Vec<TextRecord>>,
}

impl<D: DrawTarget<Color = Rgb888>> Painter<'_, D> {
    fn frame(&mut self, view: &View) -> Result<(), D::Error> {
        self.target.clear(theme::BACKGROUND)?;
        match &view.phase {
            Phase::Boot(stages) => self.boot(view, stages),
            Phase::Cluster => self.cluster(view),
        }
    }

    fn fill(&mut self, r: Rectangle, color: Rgb888) -> Result<(), D::Error> {
        r.into_styled(PrimitiveStyle::with_fill(color)).draw(self.target)
    }

    fn text(
        &mut self,
        s: &str,
        r: Rectangle,
        container: Rectangle,
        size: TextSize,
        color: Rgb888,
        align: Align,
    ) -> Result<(), D::Error> {
        let drawn = text::draw(self.target, s, r, size, color, align)?;
        if let (Some(records), Some((text, drawn))) = (self.records.as_deref_mut(), drawn) {
            records.push(TextRecord {
                text,
                target: r,
                container,
                drawn,
            });
        }
        Ok(())
    }

    fn size(&self) -> Size {
        self.target.bounding_box().size
    }

    fn cluster(&mut self, view: &View) -> Result<(), D::Error> {
        let Size { width, height } = self.size();
        let n = view.map.as_ref().map_or(0, |m| m.nodes.len());
        let l = layout(width, height, n);
        self.header(view, &l)?;
        self.grid(view, &l)?;
        self.footer(view, &l)
    }

    fn header(&mut self, view: &View, l: &Layout) -> Result<(), D::Error> {
        let h = &l.header;
        self.fill(h.area, theme::BAND)?;
        let title = if view.cluster.is_empty() {
            "Clump"
        } else {
            &view.cluster
        };
        self.text(title, h.title, h.area, h.title_size, theme::TEXT, Align::Left)?;
        let info = format!(
            "{}  lease {}  up {}",
            view.address,
            view.lease,
            clump_api::table::duration(view.uptime_ms)
        );
        self.text(&info, h.info, h.area, h.info_size, theme::TEXT_DIM, Align::Right)?;

        let fields = header_fields(view);
        // Fields flow into the lines; what does not fit on the last line is cut there.
        let mut lines: Vec<String> = vec![String::new(); h.lines.len()];
        let n_lines = lines.len();
        let mut at = 0;
        for f in fields {
            let Some(line) = lines.get_mut(at) else { break };
            let room = h.lines.get(at).map_or(0, |r| h.line_size.chars_in(r.size.width));
            let need = if line.is_empty() {
                f.len()
            } else {
                line.len() + 3 + f.len()
            };
            if need > room && !line.is_empty() && at + 1 < n_lines {
                at += 1;
                lines[at].push_str(&f);
                continue;
            }
            if !line.is_empty() {
                line.push_str("   ");
            }
            line.push_str(&f);
        }
        for (s, r) in lines.iter().zip(&h.lines) {
            self.text(s, *r, h.area, h.line_size, theme::TEXT, Align::Left)?;
        }
        Ok(())
    }

    fn grid(&mut self, view: &View, l: &Layout) -> Result<(), D::Error> {
        let Some(map) = &view.map else {
            let r = centre_line(&l.grid, TextSize::Large);
            return self.text(
                "Waiting for the node map from clumpd",
                r,
                l.grid,
                TextSize::Large,
                theme::TEXT_DIM,
                Align::Center,
            );
        };
        if map.nodes.is_empty() {
            let r = centre_line(&l.grid, TextSize::Large);
            return self.text(
                "No nodes known yet",
                r,
                l.grid,
                TextSize::Large,
                theme::TEXT_DIM,
                Align::Center,
            );
        }
        let order = display_order(map, l.tiles.len());
        for (tile, node) in l.tiles.iter().zip(&order) {
            self.tile(tile, node)?;
        }
        if let Some(r) = l.summary {
            let rest = &order[l.tiles.len().min(order.len())..];
            let count = |f: fn(NodeState) -> bool| rest.iter().filter(|n| f(n.state)).count();
            let mut s = format!(
                "+{} more: {} alive, {} suspect, {} dead",
                rest.len(),
                count(|s| matches!(s, NodeState::This | NodeState::Alive)),
                count(|s| s == NodeState::Suspect),
                count(|s| s == NodeState::Dead),
            );
            for (word, n) in [
                ("leaving", count(|s| s == NodeState::Leaving)),
                ("left", count(|s| s == NodeState::Left)),
                ("unknown", count(|s| s == NodeState::Unknown)),
            ] {
                if n > 0 {
                    s.push_str(&format!(", {n} {word}"));
                }
            }
            self.fill(r, theme::BAND)?;
            let inner = r.offset(-2);
            self.text(&s, inner, r, l.summary_size, theme::TEXT, Align::Left)?;
        }
        Ok(())
    }

    fn tile(&mut self, t: &TileLayout, n: &NodeEntry) -> Result<(), D::Error> {
        let this = n.state == NodeState::This;
        self.fill(t.outer, theme::TILE)?;
        let (border, width) = if this {
            (state_color(NodeState::This), BORDER)
        } else {
            (theme::TILE_BORDER, 1)
        };
        t.outer
            .into_styled(PrimitiveStyle::with_stroke(border, width))
            .draw(self.target)?;
        let gone = matches!(n.state, NodeState::Dead | NodeState::Left);
        let (bright, dim) = if gone {
            (theme::TEXT_GONE, theme::TEXT_GONE)
        } else {
            (theme::TEXT, theme::TEXT_DIM)
        };
        let size = t.size;
        let full = t.kind == crate::layout::TileKind::Full;
        let c = t.outer;

        let number = opt(n.number);
        let address = opt(n.address);
        self.text(
            &format!("{number}  {address}"),
            t.title,
            c,
            size,
            bright,
            Align::Left,
        )?;

        self.fill(t.badge, state_color(n.state))?;
        self.text(
            state_word(n.state),
            t.badge_text,
            c,
            size,
            theme::BADGE_TEXT,
            Align::Center,
        )?;

        self.fill(t.load_bar, theme::BAR_TRACK)?;
        // A dead or departed node's last figures are history, not load: no bar, no number.
        let shown_load = if gone { None } else { n.load };
        if let Some(load) = shown_load {
            let frac = u64::from(load.min(1000));
            let w = u32::try_from(u64::from(t.load_bar.size.width) * frac / 1000).unwrap_or(0);
            let fill = if load > 1000 {
                theme::BAR_OVER
            } else {
                theme::BAR_FILL
            };
            self.fill(
                Rectangle::new(t.load_bar.top_left, Size::new(w, t.load_bar.size.height)),
                fill,
            )?;
        }
        let load = shown_load.map_or_else(|| UNKNOWN.to_owned(), format::load);
        self.text(&load, t.load_text, c, size, bright, Align::Right)?;

        let mut host = n.hostname.clone().unwrap_or_else(|| UNKNOWN.to_owned());
        if let Some(conflict) = n.conflicts.first() {
            host = format!("! {host} ({})", conflict.describe());
        }
        let host_color = if n.conflicts.is_empty() {
            dim
        } else {
            theme::WARNING
        };
        self.text(&host, t.hostname, c, size, host_color, Align::Left)?;

        let (cores, speed) = (opt(n.cores), opt(n.speed));
        let cpu = if full {
            format!("{cores} cores  speed {speed}")
        } else {
            format!("{cores}c {speed}")
        };
        self.text(&cpu, t.cpu, c, size, dim, Align::Left)?;

        let mem = format::memory(n.mem_total_kib, n.mem_free_kib);
        let mem = if full { format!("mem {mem}") } else { mem };
        self.text(&mem, t.memory, c, size, dim, Align::Left)?;

        let (jobs, min, mout) = (opt(n.jobs), opt(n.migrations_in), opt(n.migrations_out));
        if gone && n.last_seen_ms > 0 {
            let seen = format!("seen {}", format::clock(n.last_seen_ms));
            return self.text(&seen, t.jobs, c, size, dim, Align::Left);
        }
        match t.migrations {
            Some(r) => {
                self.text(&format!("jobs {jobs}"), t.jobs, c, size, dim, Align::Left)?;
                self.text(&format!("migr in {min} out {mout}"), r, c, size, dim, Align::Left)
            }
            None => self.text(
                &format!("j{jobs} {min}/{mout}"),
                t.jobs,
                c,
                size,
                dim,
                Align::Left,
            ),
        }
    }

    fn footer(&mut self, view: &View, l: &Layout) -> Result<(), D::Error> {
        let f = &l.footer;
        self.fill(f.area, theme::BAND)?;
        let mut lines = f.lines.iter();
        if let Some(notice) = &view.notice {
            if let Some(r) = lines.next() {
                let band = Rectangle::new(
                    Point::new(f.area.top_left.x, r.top_left.y - 2),
                    Size::new(f.area.size.width, r.size.height + 4),
                );
                self.fill(band, theme::NOTICE)?;
                self.text(notice, *r, f.area, f.size, theme::TEXT, Align::Left)?;
            }
        }
        let rest: Vec<&Rectangle> = lines.collect();
        let events = &view.events[view.events.len().saturating_sub(rest.len())..];
        for (r, e) in rest.iter().zip(events) {
            let s = format!("{}  {}", format::clock(e.time_ms), e.text);
            self.text(&s, **r, f.area, f.size, theme::TEXT_DIM, Align::Left)?;
        }
        Ok(())
    }

    fn boot(&mut self, view: &View, stages: &[BootStage]) -> Result<(), D::Error> {
        let Size { width, height } = self.size();
        let b = boot_layout(width, height, stages.len());
        let screen = Rectangle::new(Point::zero(), Size::new(width, height));
        self.text("Clump", b.title, screen, b.title_size, theme::TEXT, Align::Left)?;
        let sub = if view.cluster.is_empty() {
            "starting this node".to_owned()
        } else {
            format!("starting this node of {}", view.cluster)
        };
        self.text(
            &sub,
            b.subtitle,
            screen,
            b.subtitle_size,
            theme::TEXT_DIM,
            Align::Left,
        )?;
        for (row, stage) in b.stages.iter().zip(stages) {
            self.fill(row.status, stage_color(stage.status))?;
            self.text(
                stage.status.word(),
                row.status_text,
                row.row,
                b.stage_size,
                theme::BADGE_TEXT,
                Align::Center,
            )?;
            let color = if stage.status == StageStatus::Pending {
                theme::TEXT_GONE
            } else {
                theme::TEXT
            };
            self.text(&stage.name, row.name, row.row, b.stage_size, color, Align::Left)?;
            self.text(
                &stage.detail,
                row.detail,
                row.row,
                b.detail_size,
                theme::TEXT_DIM,
                Align::Left,
            )?;
        }
        if let Some(notice) = &view.notice {
            self.fill(b.notice.offset(4), theme::NOTICE)?;
            self.text(notice, b.notice, screen, b.notice_size, theme::TEXT, Align::Left)?;
        }
        Ok(())
    }
}

/// The colour of a boot stage's badge.
pub fn stage_color(status: StageStatus) -> Rgb888 {
    match status {
        StageStatus::Pending => Rgb888::new(0x6c, 0x75, 0x7d),
        StageStatus::Running => state_color(NodeState::Suspect),
        StageStatus::Done => state_color(NodeState::Alive),
        StageStatus::Failed => state_color(NodeState::Dead),
    }
}

/// One line of `size` type across the middle of `area`.
fn centre_line(area: &Rectangle, size: TextSize) -> Rectangle {
    let h = size.line_height().min(area.size.height);
    let y = area.top_left.y + to_i32((area.size.height - h) / 2);
    Rectangle::new(Point::new(area.top_left.x, y), Size::new(area.size.width, h))
}

/// The header's figures, most important first (what does not fit is cut from the end).
fn header_fields(view: &View) -> Vec<String> {
    let Some(map) = &view.map else {
        return vec!["waiting for clumpd".to_owned()];
    };
    let alive: Vec<&NodeEntry> = map.alive().collect();
    let cores: u64 = alive.iter().filter_map(|n| n.cores).map(u64::from).sum();
    let total: u64 = alive.iter().filter_map(|n| n.mem_total_kib).sum();
    let free: u64 = alive.iter().filter_map(|n| n.mem_free_kib).sum();
    let load = map
        .cluster_load()
        .map_or_else(|| UNKNOWN.to_owned(), format::load);
    let jobs = view
        .jobs
        .map(u64::from)
        .unwrap_or_else(|| map.nodes.iter().filter_map(|n| n.jobs).map(u64::from).sum());
    let state = match map.state {
        MapState::Joining => "joining",
        MapState::Joined => "joined",
        MapState::Alone => "alone",
        MapState::NoKey => "no cluster key",
        MapState::NoLease => "no lease",
        MapState::Unknown => "state unknown",
    };
    let mut fields = vec![
        format!("nodes {}/{} alive", alive.len(), map.nodes.len()),
        format!("{cores} cores"),
        format!("mem {} free of {}", format::kib(free), format::kib(total)),
        format!("load {load}"),
        format!("jobs {jobs}"),
        format!("migrations {}/min", opt(view.migrations_per_min)),
        state.to_owned(),
    ];
    if let Some(k) = &map.key_fingerprint {
        fields.push(format!("key {k}"));
    }
    if let Some(s) = &view.stats {
        if s.conflicts > 0 {
            fields.push(plural(s.conflicts, "conflict", "conflicts"));
        }
        if s.foreign > 0 {
            fields.push(format!("{} refused", plural(s.foreign, "address", "addresses")));
        }
    }
    fields
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
