//! What `clump mon` shows and how keys change it: no terminal here, so every key is unit-tested.

use clump_api::NodeMap;

/// One way of looking at the nodes; the key in brackets selects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum View {
    /// Load per node, speed-normalised [l].
    Load,
    /// Memory used of total [m].
    Memory,
    /// CPU speed and cores [s].
    Speed,
    /// Jobs running, migrations in and out [j].
    Jobs,
}

impl View {
    /// In the order Tab goes through them.
    pub const ALL: [View; 4] = [View::Load, View::Memory, View::Speed, View::Jobs];

    /// The view's name, as on the screen and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            View::Load => "load",
            View::Memory => "memory",
            View::Speed => "speed",
            View::Jobs => "jobs",
        }
    }

    /// The key that selects it.
    pub fn key(self) -> char {
        match self {
            View::Load => 'l',
            View::Memory => 'm',
            View::Speed => 's',
            View::Jobs => 'j',
        }
    }

    fn index(self) -> usize {
        View::ALL.iter().position(|v| *v == self).unwrap_or(0)
    }

    pub fn next(self) -> View {
        View::ALL[(self.index() + 1) % View::ALL.len()]
    }

    pub fn prev(self) -> View {
        View::ALL[(self.index() + View::ALL.len() - 1) % View::ALL.len()]
    }
}

/// A key as `mon` understands it; the edge translates the terminal's events into these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Tab,
    BackTab,
    Left,
    Right,
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
    Esc,
    CtrlC,
    /// Ctrl-L: draw everything anew (kernel messages on a serial console scribble over it).
    CtrlL,
    Other,
}

/// What the refresh threads report.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// A fresh node map.
    Map(NodeMap),
    /// The node map could not be had: clumpd's error, for the screen.
    Failed(String),
    /// Something happened in the cluster (an event's sentence).
    Event(String),
}

/// Everything the screen is drawn from.
#[derive(Debug, Clone)]
pub struct App {
    pub view: View,
    /// The first node row shown.
    pub scroll: usize,
    /// How many node rows fit on the screen (the renderer says after each frame).
    pub page: usize,
    /// The last node map received, kept while clumpd does not answer.
    pub map: Option<NodeMap>,
    /// When `map` came (unix ms).
    pub map_ms: u64,
    /// Why the last refresh failed; `None` once one succeeds.
    pub error: Option<String>,
    pub last_event: Option<String>,
    pub color: bool,
    /// How often the map is fetched, for the "retrying every" line.
    pub interval_ms: u64,
    /// The whole screen must be drawn anew, not just what changed.
    pub redraw: bool,
    pub quit: bool,
}

impl App {
    pub fn new(view: View, color: bool, interval_ms: u64) -> App {
        App {
            view,
            scroll: 0,
            page: 1,
            map: None,
            map_ms: 0,
            error: None,
            last_event: None,
            color,
            interval_ms,
            redraw: false,
            quit: false,
        }
    }

    pub fn nodes(&self) -> usize {
        self.map.as_ref().map_or(0, |m| m.nodes.len())
    }

    /// The furthest the rows may scroll: the last page shows the last node.
    pub fn max_scroll(&self) -> usize {
        self.nodes().saturating_sub(self.page.max(1))
    }

    pub fn handle_key(&mut self, key: Key) {
        let page = self.page.max(1);
        match key {
            Key::Char('q' | 'Q') | Key::Esc | Key::CtrlC => self.quit = true,
            Key::Char(c) => {
                if let Some(v) = View::ALL.iter().find(|v| v.key() == c.to_ascii_lowercase()) {
                    self.view = *v;
                }
            }
            Key::Tab | Key::Right => self.view = self.view.next(),
            Key::BackTab | Key::Left => self.view = self.view.prev(),
            Key::Up => self.scroll = self.scroll.saturating_sub(1),
            Key::Down => self.scroll += 1,
            // One row of the old page stays in sight, so the eye finds its place.
            Key::PageUp => self.scroll = self.scroll.saturating_sub(page.saturating_sub(1).max(1)),
            Key::PageDown => self.scroll += page.saturating_sub(1).max(1),
            Key::Home => self.scroll = 0,
            Key::End => self.scroll = usize::MAX,
            Key::CtrlL => self.redraw = true,
            Key::Other => {}
        }
        self.scroll = self.scroll.min(self.max_scroll());
    }

    /// Takes in what a refresh thread reports; `now_ms` dates a new map.
    pub fn update(&mut self, update: Update, now_ms: u64) {
        match update {
            Update::Map(map) => {
                self.map = Some(map);
                self.map_ms = now_ms;
                self.error = None;
            }
            Update::Failed(e) => self.error = Some(e),
            Update::Event(text) => self.last_event = Some(text),
        }
        self.scroll = self.scroll.min(self.max_scroll());
    }

    /// The renderer tells how many rows fit; a bigger window may show rows scrolled away.
    pub fn set_page(&mut self, rows: usize) {
        self.page = rows.max(1);
        self.scroll = self.scroll.min(self.max_scroll());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clump_api::{MapState, NodeEntry, NodeState};

    fn map(n: usize) -> NodeMap {
        NodeMap {
            version: 1,
            state: MapState::Joined,
            this: None,
            key_fingerprint: None,
            port: 7171,
            updated_ms: 0,
            nodes: (0..n)
                .map(|i| NodeEntry::unknown(format!("{i:032x}"), NodeState::Alive))
                .collect(),
            foreign: vec![],
            dropped: Default::default(),
        }
    }

    #[test]
    fn letters_select_views_and_tab_and_arrows_cycle() {
        let mut app = App::new(View::Load, true, 1000);
        for (key, want) in [
            (Key::Char('m'), View::Memory),
            (Key::Char('s'), View::Speed),
            (Key::Char('j'), View::Jobs),
            (Key::Char('L'), View::Load),
            (Key::Tab, View::Memory),
            (Key::Right, View::Speed),
            (Key::Tab, View::Jobs),
            (Key::Tab, View::Load),
            (Key::BackTab, View::Jobs),
            (Key::Left, View::Speed),
            (Key::Char('x'), View::Speed),
            (Key::Other, View::Speed),
        ] {
            app.handle_key(key);
            assert_eq!(app.view, want, "after {key:?}");
            assert!(!app.quit);
        }
        for v in View::ALL {
            assert_eq!(v.next().prev(), v);
        }
    }

    #[test]
    fn ctrl_l_asks_for_a_full_redraw() {
        let mut app = App::new(View::Jobs, true, 1000);
        app.handle_key(Key::CtrlL);
        assert!(app.redraw && !app.quit);
        assert_eq!(app.view, View::Jobs);
    }

    #[test]
    fn q_esc_and_ctrl_c_quit() {
        for key in [Key::Char('q'), Key::Char('Q'), Key::Esc, Key::CtrlC] {
            let mut app = App::new(View::Load, true, 1000);
            app.handle_key(key);
            assert!(app.quit, "{key:?}");
        }
    }

    #[test]
    fn scrolling_stays_within_the_nodes() {
        let mut app = App::new(View::Load, true, 1000);
        app.handle_key(Key::Down);
        assert_eq!(app.scroll, 0, "nothing to scroll without a map");
        app.update(Update::Map(map(50)), 1);
        app.set_page(20);
        app.handle_key(Key::Down);
        assert_eq!(app.scroll, 1);
        app.handle_key(Key::PageDown);
        assert_eq!(app.scroll, 20);
        app.handle_key(Key::PageDown);
        assert_eq!(app.scroll, 30, "the last page ends with the last node");
        app.handle_key(Key::Down);
        assert_eq!(app.scroll, 30);
        app.handle_key(Key::PageUp);
        assert_eq!(app.scroll, 11);
        app.handle_key(Key::Up);
        assert_eq!(app.scroll, 10);
        app.handle_key(Key::End);
        assert_eq!(app.scroll, 30);
        app.handle_key(Key::Home);
        assert_eq!(app.scroll, 0);
        app.handle_key(Key::Up);
        assert_eq!(app.scroll, 0);
        // The window grows, or the cluster shrinks: rows scrolled away come back.
        app.handle_key(Key::End);
        app.set_page(45);
        assert_eq!(app.scroll, 5);
        app.update(Update::Map(map(10)), 2);
        assert_eq!(app.scroll, 0);
        // A one-row page still moves.
        app.update(Update::Map(map(10)), 3);
        app.set_page(1);
        app.handle_key(Key::PageDown);
        assert_eq!(app.scroll, 1);
    }

    #[test]
    fn a_failure_keeps_the_last_map_until_a_new_one_comes() {
        let mut app = App::new(View::Load, true, 1000);
        app.update(Update::Map(map(2)), 10);
        app.update(Update::Failed("clumpd is not running".into()), 20);
        assert_eq!(app.nodes(), 2);
        assert_eq!(app.map_ms, 10);
        assert_eq!(app.error.as_deref(), Some("clumpd is not running"));
        app.update(Update::Event("node 11 joined".into()), 25);
        assert_eq!(app.last_event.as_deref(), Some("node 11 joined"));
        app.update(Update::Map(map(3)), 30);
        assert_eq!(app.error, None);
        assert_eq!((app.nodes(), app.map_ms), (3, 30));
    }
}
