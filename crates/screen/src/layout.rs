//! Where everything goes, as pure arithmetic on the screen size and the number of nodes, so a test
//! can find a node's badge in a screendump without drawing anything.
//!
//! The screen is a header band (cluster name and figures), a grid of node tiles, and a footer band
//! (a notice and the last events). Tiles come in the biggest style of which all nodes fit: full
//! tiles in large, medium then small type, then compact tiles; when not even compact tiles fit,
//! as many as fit and a summary row for the rest.

use crate::text::to_i32;
use crate::theme::{TextSize, BADGE_CHARS};
use embedded_graphics::geometry::{Point, Size};
use embedded_graphics::primitives::Rectangle;
use thiserror::Error;

/// What a tile shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TileKind {
    /// Every figure on a line of its own, with words.
    Full,
    /// The same figures, abbreviated, CPU and jobs sharing a line.
    Compact,
}

/// One node's tile. Every text box is one line of `size` type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileLayout {
    pub outer: Rectangle,
    pub kind: TileKind,
    pub size: TextSize,
    /// Node number and address.
    pub title: Rectangle,
    /// The filled rectangle coloured by state.
    pub badge: Rectangle,
    /// The state word, inside the badge.
    pub badge_text: Rectangle,
    /// The load bar's track (the bar fills it from the left).
    pub load_bar: Rectangle,
    /// The load as a number, right of the bar.
    pub load_text: Rectangle,
    pub hostname: Rectangle,
    /// Cores and speed.
    pub cpu: Rectangle,
    /// Memory used and total.
    pub memory: Rectangle,
    /// Jobs (and in compact tiles migrations in/out too).
    pub jobs: Rectangle,
    /// Migrations in and out, in full tiles.
    pub migrations: Option<Rectangle>,
}

/// Width of the ring inside a tile's edge kept free of text, where this node's thick border goes.
pub const BORDER: u32 = 3;

impl TileLayout {
    /// The text boxes, named.
    pub fn text_boxes(&self) -> Vec<(&'static str, Rectangle)> {
        let mut boxes = vec![
            ("title", self.title),
            ("badge", self.badge_text),
            ("load", self.load_text),
            ("hostname", self.hostname),
            ("cpu", self.cpu),
            ("memory", self.memory),
            ("jobs", self.jobs),
        ];
        boxes.extend(self.migrations.map(|r| ("migrations", r)));
        boxes
    }

    /// A point inside the badge that no letter of the state word covers: sample the state colour here.
    pub fn badge_probe(&self) -> Point {
        self.badge.top_left + Point::new(1, 1)
    }
}

/// The header band.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderLayout {
    pub area: Rectangle,
    /// The cluster name.
    pub title: Rectangle,
    pub title_size: TextSize,
    /// This node's address, lease and uptime, right of the title.
    pub info: Rectangle,
    pub info_size: TextSize,
    /// Lines of cluster figures.
    pub lines: Vec<Rectangle>,
    pub line_size: TextSize,
}

/// The footer band: the notice, if any, on its first line, then events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FooterLayout {
    pub area: Rectangle,
    pub lines: Vec<Rectangle>,
    pub size: TextSize,
}

/// The whole screen in the cluster phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub width: u32,
    pub height: u32,
    pub header: HeaderLayout,
    /// The area the tiles (and the summary row) are laid out in.
    pub grid: Rectangle,
    /// Tiles in display order (see [`crate::display_order`]); fewer than the nodes when `hidden > 0`.
    pub tiles: Vec<TileLayout>,
    /// The kind of every tile.
    pub kind: TileKind,
    /// Nodes without a tile, counted in the summary row.
    pub hidden: usize,
    /// "+N more: ..." when nodes are hidden.
    pub summary: Option<Rectangle>,
    pub summary_size: TextSize,
    pub footer: FooterLayout,
}

/// How big a screen is, for choosing type sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Small,
    Medium,
    Big,
}

fn class(width: u32, height: u32) -> Class {
    if width >= 1600 && height >= 900 {
        Class::Big
    } else if width >= 1000 && height >= 700 {
        Class::Medium
    } else {
        Class::Small
    }
}

fn rect(x: u32, y: u32, w: u32, h: u32) -> Rectangle {
    Rectangle::new(Point::new(to_i32(x), to_i32(y)), Size::new(w, h))
}

fn left(r: &Rectangle) -> u32 {
    u32::try_from(r.top_left.x).unwrap_or(0)
}

fn top(r: &Rectangle) -> u32 {
    u32::try_from(r.top_left.y).unwrap_or(0)
}

/// The cluster-phase layout of a `width` x `height` screen showing `n_nodes` nodes.
pub fn layout(width: u32, height: u32, n_nodes: usize) -> Layout {
    let class = class(width, height);
    let margin = if class == Class::Small { 6 } else { 8 };
    let inner_w = width.saturating_sub(2 * margin);

    let (title_size, info_size, line_size) = match class {
        Class::Small => (TextSize::Large, TextSize::Medium, TextSize::Medium),
        Class::Medium | Class::Big => (TextSize::Huge, TextSize::Large, TextSize::Large),
    };
    let (footer_size, mut footer_lines) = match class {
        Class::Small => (TextSize::Medium, 3),
        Class::Medium => (TextSize::Medium, 4),
        Class::Big => (TextSize::Large, 5),
    };
    let mut header_lines = 2;
    let line_gap = 2;
    let header_h = |lines: u32| {
        margin + title_size.line_height() + 4 + lines * (line_size.line_height() + line_gap) + margin / 2
    };
    let footer_h = |lines: u32| {
        if lines == 0 {
            0
        } else {
            margin / 2 + lines * (footer_size.line_height() + line_gap) + margin / 2
        }
    };
    // On a screen too low for everything, the footer gives way first, then the header's figures.
    let min_grid = 80;
    while footer_lines > 0 && header_h(header_lines) + footer_h(footer_lines) + min_grid > height {
        footer_lines -= 1;
    }
    while header_lines > 0 && header_h(header_lines) + min_grid > height {
        header_lines -= 1;
    }
    let hh = header_h(header_lines).min(height);
    let fh = footer_h(footer_lines).min(height - hh);

    let title_w = inner_w * 2 / 5;
    let title_h = title_size.line_height();
    let title = rect(margin, margin, title_w, title_h);
    let info_x = margin + title_w + margin;
    let info = rect(info_x, margin, (margin + inner_w).saturating_sub(info_x), title_h);
    let lines = (0..header_lines)
        .map(|i| {
            let y = margin + title_h + 4 + i * (line_size.line_height() + line_gap);
            rect(margin, y, inner_w, line_size.line_height())
        })
        .collect();
    let header = HeaderLayout {
        area: rect(0, 0, width, hh),
        title,
        title_size,
        info,
        info_size,
        lines,
        line_size,
    };

    let footer_top = height - fh;
    let footer = FooterLayout {
        area: rect(0, footer_top, width, fh),
        lines: (0..footer_lines)
            .map(|i| {
                let y = footer_top + margin / 2 + i * (footer_size.line_height() + line_gap);
                rect(margin, y, inner_w, footer_size.line_height())
            })
            .collect(),
        size: footer_size,
    };

    let gap = margin / 2 + 2;
    let grid_y = hh + gap;
    let grid_h = footer_top.saturating_sub(gap).saturating_sub(grid_y);
    let grid = rect(margin, grid_y, inner_w, grid_h);
    let (tiles, kind, hidden, summary) = grid_tiles(&grid, n_nodes);
    Layout {
        width,
        height,
        header,
        grid,
        tiles,
        kind,
        hidden,
        summary,
        summary_size: SUMMARY_SIZE,
        footer,
    }
}

const SUMMARY_SIZE: TextSize = TextSize::Medium;

/// The tile styles, biggest first.
const STYLES: [(TileKind, TextSize); 5] = [
    (TileKind::Full, TextSize::Huge),
    (TileKind::Full, TextSize::Large),
    (TileKind::Full, TextSize::Medium),
    (TileKind::Full, TextSize::Small),
    (TileKind::Compact, TextSize::Small),
];

/// The measures of a tile style.
#[derive(Debug, Clone, Copy)]
struct Style {
    kind: TileKind,
    size: TextSize,
    /// From the tile's edge to its text.
    inset: u32,
    /// Between lines.
    leading: u32,
    badge_pad: u32,
    badge_h: u32,
    /// Between the badge, the bar and the load figure.
    gap: u32,
    min_w: u32,
    min_h: u32,
    /// Between tiles.
    spacing: u32,
}

impl Style {
    fn new(kind: TileKind, size: TextSize) -> Style {
        let ch = size.line_height();
        let (pad, leading, badge_extra, badge_pad, gap, min_chars, spacing) = match kind {
            TileKind::Full => (4, 3, 4, 3, 6, 20, 8),
            TileKind::Compact => (1, 1, 2, 2, 3, 18, 4),
        };
        let inset = BORDER + pad;
        let badge_h = ch + badge_extra;
        let text_rows = match kind {
            TileKind::Full => 6,
            TileKind::Compact => 4,
        };
        let min_h = 2 * inset + text_rows * (ch + leading) + badge_h;
        let min_w = 2 * inset + size.width_of(min_chars);
        Style {
            kind,
            size,
            inset,
            leading,
            badge_pad,
            badge_h,
            gap,
            min_w,
            min_h,
            spacing,
        }
    }

    /// Columns and rows of minimum-size tiles that fit in `w` x `h`.
    fn capacity(&self, w: u32, h: u32) -> (u32, u32) {
        (
            (w + self.spacing) / (self.min_w + self.spacing),
            (h + self.spacing) / (self.min_h + self.spacing),
        )
    }

    /// Text boxes of a tile at `outer`, lines spread over any height beyond the minimum.
    fn tile(&self, outer: Rectangle) -> TileLayout {
        let size = self.size;
        let ch = size.line_height();
        let x = left(&outer) + self.inset;
        let w = outer.size.width - 2 * self.inset;
        let rows = match self.kind {
            TileKind::Full => 7,
            TileKind::Compact => 5,
        };
        let spread = (outer.size.height - self.min_h) / rows;
        let mut y = top(&outer) + self.inset;
        let mut line = || {
            let r = rect(x, y, w, ch);
            y += ch + self.leading + spread;
            r
        };
        let title = line();
        // The badge row: badge, load bar, load figure.
        let badge_w = size.width_of(BADGE_CHARS as usize) + 2 * self.badge_pad;
        let badge = rect(x, y, badge_w, self.badge_h);
        let badge_text = rect(
            x + self.badge_pad,
            y + (self.badge_h - ch) / 2,
            badge_w - 2 * self.badge_pad,
            ch,
        );
        let load_w = size.width_of(4);
        let load_text = rect(x + w - load_w, y + (self.badge_h - ch) / 2, load_w, ch);
        let bar_x = x + badge_w + self.gap;
        let bar_h = ch.saturating_sub(2).max(2);
        let load_bar = rect(
            bar_x,
            y + (self.badge_h - bar_h) / 2,
            (x + w - load_w).saturating_sub(self.gap + bar_x),
            bar_h,
        );
        y += self.badge_h + self.leading + spread;
        let mut line = || {
            let r = rect(x, y, w, ch);
            y += ch + self.leading + spread;
            r
        };
        let hostname = line();
        let (cpu, memory, jobs, migrations) = match self.kind {
            TileKind::Full => {
                let cpu = line();
                let memory = line();
                let jobs = line();
                (cpu, memory, jobs, Some(line()))
            }
            TileKind::Compact => {
                let shared = line();
                let memory = line();
                // CPU gets the left half (whole characters), jobs the rest after a space.
                let cw = size.char_width();
                let cpu_w = w / 2 / cw * cw;
                let cpu = rect(x, top(&shared), cpu_w, ch);
                let jobs = rect(x + cpu_w + cw, top(&shared), w.saturating_sub(cpu_w + cw), ch);
                (cpu, memory, jobs, None)
            }
        };
        TileLayout {
            outer,
            kind: self.kind,
            size,
            title,
            badge,
            badge_text,
            load_bar,
            load_text,
            hostname,
            cpu,
            memory,
            jobs,
            migrations,
        }
    }
}

/// Tiles of `cols` x `rows` (enough for `n`) in `w` x `h` from (`x`, `y`), centred across, each at
/// most half as wide again and a quarter as high again as the minimum.
fn place(style: &Style, area: (u32, u32, u32, u32), cols: u32, rows: u32, n: usize) -> Vec<TileLayout> {
    let (x, y, w, h) = area;
    let s = style.spacing;
    let tile_w = ((w - s * (cols - 1)) / cols).min(style.min_w * 3 / 2);
    let tile_h = ((h - s * (rows - 1)) / rows).min(style.min_h * 5 / 4);
    let total_w = cols * tile_w + (cols - 1) * s;
    let x0 = x + (w - total_w) / 2;
    (0..n)
        .map(|i| {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            let (col, row) = (i % cols, i / cols);
            style.tile(rect(
                x0 + col * (tile_w + s),
                y + row * (tile_h + s),
                tile_w,
                tile_h,
            ))
        })
        .collect()
}

fn grid_tiles(grid: &Rectangle, n: usize) -> (Vec<TileLayout>, TileKind, usize, Option<Rectangle>) {
    let (gx, gy, gw, gh) = (left(grid), top(grid), grid.size.width, grid.size.height);
    if n == 0 {
        return (Vec::new(), TileKind::Full, 0, None);
    }
    for (kind, size) in STYLES {
        let style = Style::new(kind, size);
        let (cols_max, rows_max) = style.capacity(gw, gh);
        if cols_max == 0 || rows_max == 0 {
            continue;
        }
        if (cols_max as usize).saturating_mul(rows_max as usize) >= n {
            let n32 = u32::try_from(n).unwrap_or(u32::MAX);
            // As square a grid as the width allows: fewest rows, then as few columns as fill them.
            let rows = n32.div_ceil(cols_max);
            let cols = n32.div_ceil(rows);
            return (place(&style, (gx, gy, gw, gh), cols, rows, n), kind, 0, None);
        }
    }
    // Not all fit even compact: fill the grid, keep a row for the rest.
    let style = Style::new(TileKind::Compact, TextSize::Small);
    let summary_h = SUMMARY_SIZE.line_height() + 4;
    let tiles_h = gh.saturating_sub(summary_h + style.spacing);
    let (cols, rows) = style.capacity(gw, tiles_h);
    let shown = (cols as usize * rows as usize).min(n);
    let tiles = if shown == 0 {
        Vec::new()
    } else {
        place(&style, (gx, gy, gw, tiles_h), cols, rows, shown)
    };
    let summary_y = tiles
        .last()
        .map_or(gy, |t| top(&t.outer) + t.outer.size.height + style.spacing);
    let summary = (gh >= summary_h).then(|| rect(gx, summary_y, gw, summary_h));
    (tiles, TileKind::Compact, n - shown, summary)
}

/// A layout that breaks a rule.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LayoutError {
    #[error("{what} {rect:?} is not inside {container} {outer:?}")]
    Outside {
        what: String,
        rect: Rectangle,
        container: String,
        outer: Rectangle,
    },
    #[error("{a} {ra:?} overlaps {b} {rb:?}")]
    Overlap {
        a: String,
        ra: Rectangle,
        b: String,
        rb: Rectangle,
    },
    #[error("{what} {rect:?} is lower than its type ({height} pixels)")]
    TooLow {
        what: String,
        rect: Rectangle,
        height: u32,
    },
    #[error("{shown} tiles and {hidden} hidden do not add up to {n} nodes")]
    Count { shown: usize, hidden: usize, n: usize },
}

/// Whether `inner` lies entirely within `outer` (an empty `inner` lies anywhere).
pub fn contains(outer: &Rectangle, inner: &Rectangle) -> bool {
    if inner.is_zero_sized() {
        return true;
    }
    match (inner.bottom_right(), outer.bottom_right()) {
        (Some(ib), Some(ob)) => {
            outer.top_left.x <= inner.top_left.x
                && outer.top_left.y <= inner.top_left.y
                && ib.x <= ob.x
                && ib.y <= ob.y
        }
        _ => false,
    }
}

/// Whether two rectangles share a pixel.
pub fn overlaps(a: &Rectangle, b: &Rectangle) -> bool {
    !a.intersection(b).is_zero_sized()
}

fn inside(
    what: impl Into<String>,
    r: &Rectangle,
    container: &str,
    outer: &Rectangle,
) -> Result<(), LayoutError> {
    if contains(outer, r) {
        Ok(())
    } else {
        Err(LayoutError::Outside {
            what: what.into(),
            rect: *r,
            container: container.to_owned(),
            outer: *outer,
        })
    }
}

fn apart(
    a: impl Into<String>,
    ra: &Rectangle,
    b: impl Into<String>,
    rb: &Rectangle,
) -> Result<(), LayoutError> {
    if overlaps(ra, rb) {
        Err(LayoutError::Overlap {
            a: a.into(),
            ra: *ra,
            b: b.into(),
            rb: *rb,
        })
    } else {
        Ok(())
    }
}

fn tall_enough(what: impl Into<String>, r: &Rectangle, size: TextSize) -> Result<(), LayoutError> {
    if r.size.height >= size.line_height() {
        Ok(())
    } else {
        Err(LayoutError::TooLow {
            what: what.into(),
            rect: *r,
            height: size.line_height(),
        })
    }
}

impl Layout {
    /// Checks the rules: every region on the screen, header, grid and footer apart, every tile in
    /// the grid and apart from the others and the summary row, every text box (and the badge and
    /// bar) inside its tile clear of the border ring, apart from the others, and as high as its type.
    pub fn validate(&self, n_nodes: usize) -> Result<(), LayoutError> {
        let screen = rect(0, 0, self.width, self.height);
        if self.tiles.len() + self.hidden != n_nodes {
            return Err(LayoutError::Count {
                shown: self.tiles.len(),
                hidden: self.hidden,
                n: n_nodes,
            });
        }
        inside("header", &self.header.area, "screen", &screen)?;
        inside("footer", &self.footer.area, "screen", &screen)?;
        inside("grid", &self.grid, "screen", &screen)?;
        apart("header", &self.header.area, "footer", &self.footer.area)?;
        apart("header", &self.header.area, "grid", &self.grid)?;
        apart("grid", &self.grid, "footer", &self.footer.area)?;
        let h = &self.header;
        inside("header title", &h.title, "header", &h.area)?;
        tall_enough("header title", &h.title, h.title_size)?;
        inside("header info", &h.info, "header", &h.area)?;
        tall_enough("header info", &h.info, h.info_size)?;
        apart("header title", &h.title, "header info", &h.info)?;
        for (i, l) in h.lines.iter().enumerate() {
            inside(format!("header line {i}"), l, "header", &h.area)?;
            tall_enough(format!("header line {i}"), l, h.line_size)?;
            apart(format!("header line {i}"), l, "header title", &h.title)?;
            apart(format!("header line {i}"), l, "header info", &h.info)?;
            for (j, m) in h.lines.iter().enumerate().skip(i + 1) {
                apart(format!("header line {i}"), l, format!("header line {j}"), m)?;
            }
        }
        for (i, l) in self.footer.lines.iter().enumerate() {
            inside(format!("footer line {i}"), l, "footer", &self.footer.area)?;
            tall_enough(format!("footer line {i}"), l, self.footer.size)?;
            for (j, m) in self.footer.lines.iter().enumerate().skip(i + 1) {
                apart(format!("footer line {i}"), l, format!("footer line {j}"), m)?;
            }
        }
        if let Some(s) = &self.summary {
            inside("summary", s, "grid", &self.grid)?;
            tall_enough("summary", s, self.summary_size)?;
        }
        for (i, t) in self.tiles.iter().enumerate() {
            let name = format!("tile {i}");
            inside(name.as_str(), &t.outer, "grid", &self.grid)?;
            if let Some(s) = &self.summary {
                apart(name.as_str(), &t.outer, "summary", s)?;
            }
            // Sorted by position, so only the next tiles in the row and the next row can touch.
            for (j, u) in self.tiles.iter().enumerate().skip(i + 1) {
                apart(name.as_str(), &t.outer, format!("tile {j}"), &u.outer)?;
            }
            let content = t.outer.offset(-to_i32(BORDER));
            let boxes = t.text_boxes();
            for (what, r) in &boxes {
                let what = format!("tile {i} {what}");
                inside(what.as_str(), r, "its tile's content", &content)?;
                tall_enough(what, r, t.size)?;
            }
            inside(
                format!("tile {i} badge"),
                &t.badge,
                "its tile's content",
                &content,
            )?;
            inside(
                format!("tile {i} badge text"),
                &t.badge_text,
                "its badge",
                &t.badge,
            )?;
            inside(
                format!("tile {i} load bar"),
                &t.load_bar,
                "its tile's content",
                &content,
            )?;
            let mut shapes: Vec<(String, Rectangle)> = boxes
                .iter()
                .filter(|(what, _)| *what != "badge")
                .map(|(what, r)| ((*what).to_owned(), *r))
                .collect();
            shapes.push(("badge".to_owned(), t.badge));
            shapes.push(("load bar".to_owned(), t.load_bar));
            for (k, (a, ra)) in shapes.iter().enumerate() {
                for (b, rb) in &shapes[k + 1..] {
                    apart(format!("tile {i} {a}"), ra, format!("tile {i} {b}"), rb)?;
                }
            }
        }
        Ok(())
    }

    /// The region a point falls in, for naming where two images differ: "tile 3", "header" ...
    pub fn region_at(&self, p: Point) -> String {
        if let Some(i) = self.tiles.iter().position(|t| t.outer.contains(p)) {
            return format!("tile {i}");
        }
        if self.summary.is_some_and(|s| s.contains(p)) {
            return "summary".to_owned();
        }
        if self.header.area.contains(p) {
            return "header".to_owned();
        }
        if self.footer.area.contains(p) {
            return "footer".to_owned();
        }
        if self.grid.contains(p) {
            return "grid (between tiles)".to_owned();
        }
        "margin".to_owned()
    }
}

/// One boot stage's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageLayout {
    pub row: Rectangle,
    /// The status badge ("DONE", "RUNNING" ...), filled by status colour.
    pub status: Rectangle,
    pub status_text: Rectangle,
    pub name: Rectangle,
    pub detail: Rectangle,
}

/// The screen before the runtime is up: a title and one row per boot stage, big.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootLayout {
    pub width: u32,
    pub height: u32,
    pub title: Rectangle,
    pub title_size: TextSize,
    /// Under the title: the cluster name, or what this node is doing.
    pub subtitle: Rectangle,
    pub subtitle_size: TextSize,
    /// As many stage rows as fit.
    pub stages: Vec<StageLayout>,
    pub stage_size: TextSize,
    pub detail_size: TextSize,
    /// The bottom line.
    pub notice: Rectangle,
    pub notice_size: TextSize,
}

/// Characters of a stage's name that always fit ("Network card" and its like).
const STAGE_NAME_CHARS: usize = 12;

/// The boot-phase layout of a `width` x `height` screen with `n_stages` stages. The type is the
/// biggest in which every stage fits; if none does, the first stages that fit get rows.
pub fn boot_layout(width: u32, height: u32, n_stages: usize) -> BootLayout {
    let class = class(width, height);
    let margin = match class {
        Class::Small => 10,
        Class::Medium => 24,
        Class::Big => 40,
    };
    let (title_size, subtitle_size, notice_size) = match class {
        Class::Small => (TextSize::Huge, TextSize::Large, TextSize::Medium),
        Class::Medium => (TextSize::Giant, TextSize::Large, TextSize::Large),
        Class::Big => (TextSize::Giant, TextSize::Huge, TextSize::Large),
    };
    let inner_w = width.saturating_sub(2 * margin);
    let title = rect(margin, margin, inner_w, title_size.line_height());
    let sub_y = margin + title_size.line_height() + 8;
    let subtitle = rect(margin, sub_y, inner_w, subtitle_size.line_height());
    let rows_top = sub_y + subtitle_size.line_height() + margin;
    let notice_h = notice_size.line_height();
    let notice_y = height.saturating_sub(margin + notice_h);
    let notice = rect(margin, notice_y, inner_w, notice_h);
    let rows_h = notice_y.saturating_sub(rows_top + margin / 2);

    let sizes: &[TextSize] = match class {
        Class::Small => &[TextSize::Large, TextSize::Medium, TextSize::Small],
        Class::Medium | Class::Big => &[TextSize::Huge, TextSize::Large, TextSize::Medium, TextSize::Small],
    };
    let row_step = |s: TextSize| s.line_height() + s.line_height() / 2;
    let n32 = u32::try_from(n_stages).unwrap_or(u32::MAX);
    let stage_size = sizes
        .iter()
        .copied()
        .find(|&s| n32.saturating_mul(row_step(s)) <= rows_h)
        .unwrap_or(TextSize::Small);
    let detail_size = match stage_size {
        TextSize::Huge | TextSize::Giant => TextSize::Large,
        s => s,
    };
    let step = row_step(stage_size);
    let fit = usize::try_from(rows_h / step).unwrap_or(usize::MAX).min(n_stages);
    let ch = stage_size.line_height();
    let pad = stage_size.char_width() / 2;
    let gap = stage_size.char_width();
    let status_w = stage_size.width_of(BADGE_CHARS as usize) + 2 * pad;
    let name_w = stage_size.width_of(STAGE_NAME_CHARS);
    let stages = (0..fit)
        .map(|i| {
            let y = rows_top + u32::try_from(i).unwrap_or(0) * step;
            let row_h = ch + 4;
            let status = rect(margin, y, status_w, row_h);
            let status_text = rect(margin + pad, y + 2, status_w - 2 * pad, ch);
            let name_x = margin + status_w + gap;
            let name = rect(name_x, y + 2, name_w, ch);
            let detail_x = name_x + name_w + gap;
            let detail = rect(
                detail_x,
                y + 2 + (ch - detail_size.line_height()) / 2,
                (margin + inner_w).saturating_sub(detail_x),
                detail_size.line_height(),
            );
            StageLayout {
                row: rect(margin, y, inner_w, row_h),
                status,
                status_text,
                name,
                detail,
            }
        })
        .collect();
    BootLayout {
        width,
        height,
        title,
        title_size,
        subtitle,
        subtitle_size,
        stages,
        stage_size,
        detail_size,
        notice,
        notice_size,
    }
}

impl BootLayout {
    /// Checks every box is on the screen, stage rows clear of each other, the title and the notice.
    pub fn validate(&self) -> Result<(), LayoutError> {
        let screen = rect(0, 0, self.width, self.height);
        inside("title", &self.title, "screen", &screen)?;
        inside("subtitle", &self.subtitle, "screen", &screen)?;
        inside("notice", &self.notice, "screen", &screen)?;
        apart("title", &self.title, "subtitle", &self.subtitle)?;
        for (i, s) in self.stages.iter().enumerate() {
            let name = format!("stage {i}");
            inside(name.as_str(), &s.row, "screen", &screen)?;
            apart(name.as_str(), &s.row, "subtitle", &self.subtitle)?;
            apart(name.as_str(), &s.row, "notice", &self.notice)?;
            for (what, r, size) in [
                ("status", s.status_text, self.stage_size),
                ("name", s.name, self.stage_size),
                ("detail", s.detail, self.detail_size),
            ] {
                inside(format!("{name} {what}"), &r, "its row", &s.row)?;
                tall_enough(format!("{name} {what}"), &r, size)?;
            }
            inside(
                format!("{name} status text"),
                &s.status_text,
                "its badge",
                &s.status,
            )?;
            apart(
                format!("{name} status"),
                &s.status,
                format!("{name} name"),
                &s.name,
            )?;
            apart(
                format!("{name} name"),
                &s.name,
                format!("{name} detail"),
                &s.detail,
            )?;
            for (j, t) in self.stages.iter().enumerate().skip(i + 1) {
                apart(name.as_str(), &s.row, format!("stage {j}"), &t.row)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCREENS: [(u32, u32); 8] = [
        (640, 480),
        (800, 600),
        (1024, 768),
        (1280, 800),
        (1366, 768),
        (1920, 1080),
        (2560, 1440),
        (3840, 2160),
    ];

    #[test]
    fn every_layout_from_0_to_300_nodes_is_valid() {
        for (w, h) in SCREENS {
            for n in (0..=300).chain([1000, 10_000]) {
                let l = layout(w, h, n);
                l.validate(n)
                    .unwrap_or_else(|e| panic!("{w}x{h} with {n} nodes: {e}"));
            }
        }
    }

    #[test]
    fn tiny_and_odd_screens_do_not_panic_and_stay_valid() {
        for (w, h) in [
            (1, 1),
            (0, 0),
            (100, 50),
            (320, 200),
            (641, 479),
            (4000, 100),
            (100, 4000),
        ] {
            for n in [0, 1, 5, 64, 200] {
                let l = layout(w, h, n);
                // Where not even the header fits, text boxes may be off screen: those are skipped.
                if w >= 320 && h >= 200 {
                    l.validate(n)
                        .unwrap_or_else(|e| panic!("{w}x{h} with {n} nodes: {e}"));
                }
            }
            let _ = boot_layout(w, h, 6);
        }
    }

    #[test]
    fn up_to_64_nodes_get_a_tile_each_on_1024x768_full_where_they_fit() {
        let mut saw_full_medium = false;
        for n in 1..=64 {
            let l = layout(1024, 768, n);
            assert_eq!(l.tiles.len(), n, "{n} nodes");
            assert_eq!(l.hidden, 0);
            let size = (l.kind, l.tiles[0].size);
            if n <= 2 {
                assert_eq!(size, (TileKind::Full, TextSize::Huge), "{n}");
            } else if n <= 12 {
                assert_eq!(size, (TileKind::Full, TextSize::Large), "{n}");
            }
            saw_full_medium |= l.kind == TileKind::Full && l.tiles[0].size == TextSize::Medium;
        }
        assert!(saw_full_medium);
        assert_eq!(layout(1024, 768, 64).kind, TileKind::Compact);
    }

    #[test]
    fn beyond_what_fits_a_summary_row_counts_the_rest() {
        let l = layout(1024, 768, 200);
        assert!(l.hidden > 0 && !l.tiles.is_empty());
        assert_eq!(l.tiles.len() + l.hidden, 200);
        assert!(l.summary.is_some());
        assert!(layout(1024, 768, 64).summary.is_none());
    }

    #[test]
    fn region_at_names_where_a_point_falls_for_golden_diffs() {
        let centre = |r: &Rectangle| r.center();
        let l = layout(1024, 768, 64);
        assert_eq!(l.region_at(centre(&l.tiles[0].outer)), "tile 0");
        assert_eq!(l.region_at(centre(&l.tiles[63].badge)), "tile 63");
        assert_eq!(l.region_at(centre(&l.header.title)), "header");
        assert_eq!(l.region_at(centre(&l.footer.area)), "footer");
        assert_eq!(l.region_at(Point::new(0, centre(&l.grid).y)), "margin");
        let (a, b) = (&l.tiles[0].outer, &l.tiles[1].outer);
        let between = Point::new(
            (a.top_left.x + to_i32(a.size.width) + b.top_left.x) / 2,
            a.center().y,
        );
        assert_eq!(l.region_at(between), "grid (between tiles)");
        let l = layout(1024, 768, 200);
        let summary = l.summary.expect("a summary row for 200 nodes");
        assert_eq!(l.region_at(centre(&summary)), "summary");
    }

    #[test]
    fn boot_layouts_are_valid() {
        for (w, h) in SCREENS {
            for n in 0..=12 {
                let b = boot_layout(w, h, n);
                b.validate()
                    .unwrap_or_else(|e| panic!("{w}x{h} with {n} stages: {e}"));
                assert_eq!(b.stages.len(), n, "{w}x{h}: all {n} stages fit");
            }
        }
    }
}
