//! No text leaves its box: every line drawn is recorded with the box the layout gave it, and the
//! glyphs' bounding box (from the font's metrics) must lie inside that box, the box inside its
//! tile (or band), across screen sizes and node counts. Drawn on a target that keeps no pixels.

mod common;

use clump_screen::layout::contains;
use clump_screen::{display_order, layout, render_recorded, state_word, Phase};
use embedded_graphics::draw_target::DrawTarget;
use embedded_graphics::geometry::{OriginDimensions, Size};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::Pixel;
use std::convert::Infallible;

/// A screen of a size that drops every pixel.
struct Nowhere(Size);

impl OriginDimensions for Nowhere {
    fn size(&self) -> Size {
        self.0
    }
}

impl DrawTarget for Nowhere {
    type Color = Rgb888;
    type Error = Infallible;

    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb888>>>(&mut self, _: I) -> Result<(), Infallible> {
        Ok(())
    }
}

const SCREENS: [(u32, u32); 7] = [
    (640, 480),
    (800, 600),
    (1024, 768),
    (1280, 800),
    (1366, 768),
    (1920, 1080),
    (3840, 2160),
];

#[test]
fn every_line_stays_in_its_box_and_its_box_in_its_tile() {
    for (w, h) in SCREENS {
        for n in (0..=70).chain([100, 200, 300]) {
            let view = common::cluster_view(n);
            let records = render_recorded(&view, &mut Nowhere(Size::new(w, h))).expect("render");
            assert!(!records.is_empty());
            for r in &records {
                assert!(
                    contains(&r.target, &r.drawn),
                    "{w}x{h}, {n} nodes: {:?} drawn at {:?}, outside its box {:?}",
                    r.text,
                    r.drawn,
                    r.target
                );
                assert!(
                    contains(&r.container, &r.target),
                    "{w}x{h}, {n} nodes: box {:?} of {:?} outside {:?}",
                    r.target,
                    r.text,
                    r.container
                );
            }
            let l = layout(w, h, n as usize);
            for (i, tile) in l.tiles.iter().enumerate() {
                let inside: Vec<_> = records.iter().filter(|r| r.container == tile.outer).collect();
                assert!(
                    inside.iter().all(|r| contains(&tile.outer, &r.drawn)),
                    "{w}x{h}, {n} nodes: tile {i} text outside the tile"
                );
            }
        }
    }
}

#[test]
fn every_tile_says_its_state_in_words_inside_its_badge() {
    for (w, h) in SCREENS {
        for n in [1, 4, 16, 64, 200] {
            let view = common::cluster_view(n);
            let records = render_recorded(&view, &mut Nowhere(Size::new(w, h))).expect("render");
            let l = layout(w, h, n as usize);
            let map = view.map.as_ref().expect("map");
            let order = display_order(map, l.tiles.len());
            for (i, (tile, node)) in l.tiles.iter().zip(&order).enumerate() {
                let word = state_word(node.state);
                assert!(
                    records.iter().any(|r| r.text == word
                        && r.target == tile.badge_text
                        && contains(&tile.badge, &r.drawn)),
                    "{w}x{h}, {n} nodes: tile {i} does not say {word}"
                );
            }
        }
    }
}

#[test]
fn this_node_always_has_a_tile() {
    for (w, h) in SCREENS {
        for n in [3, 200, 300] {
            let view = common::cluster_view(n);
            let l = layout(w, h, n as usize);
            let order = display_order(view.map.as_ref().expect("map"), l.tiles.len());
            assert!(
                order[..l.tiles.len()]
                    .iter()
                    .any(|e| e.state == clump_api::NodeState::This),
                "{w}x{h}, {n} nodes"
            );
        }
    }
}

#[test]
fn boot_lines_stay_in_their_boxes() {
    for (w, h) in SCREENS {
        let view = common::boot_view();
        let Phase::Boot(stages) = &view.phase else {
            unreachable!()
        };
        let records = render_recorded(&view, &mut Nowhere(Size::new(w, h))).expect("render");
        for r in &records {
            assert!(contains(&r.target, &r.drawn), "{w}x{h}: {:?}", r.text);
            assert!(contains(&r.container, &r.target), "{w}x{h}: {:?}", r.text);
        }
        for s in stages {
            assert!(
                records.iter().any(|r| r.text == s.name),
                "{w}x{h}: stage {} not shown",
                s.name
            );
            assert!(
                records.iter().any(|r| r.text == s.status.word()),
                "{w}x{h}: {:?} not in words",
                s.status
            );
        }
    }
}
