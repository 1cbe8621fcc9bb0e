//! Colours and type sizes: dark background, bright text, one strong colour per node state.

use clump_api::NodeState;
use embedded_graphics::mono_font::ascii::{FONT_10X20, FONT_6X10, FONT_8X13_BOLD};
use embedded_graphics::mono_font::MonoFont;
use embedded_graphics::pixelcolor::Rgb888;

pub const BACKGROUND: Rgb888 = Rgb888::new(0x0e, 0x11, 0x16);
/// Header and footer bands.
pub const BAND: Rgb888 = Rgb888::new(0x18, 0x1d, 0x25);
pub const TILE: Rgb888 = Rgb888::new(0x1f, 0x26, 0x30);
pub const TILE_BORDER: Rgb888 = Rgb888::new(0x46, 0x52, 0x60);
pub const TEXT: Rgb888 = Rgb888::new(0xf2, 0xf4, 0xf7);
pub const TEXT_DIM: Rgb888 = Rgb888::new(0xa8, 0xb3, 0xbf);
/// Text of a node that is gone (dead, left): still legible, clearly not current.
pub const TEXT_GONE: Rgb888 = Rgb888::new(0x78, 0x82, 0x8c);
/// Words on a state badge or stage marker: every badge colour is light enough for black.
pub const BADGE_TEXT: Rgb888 = Rgb888::new(0x00, 0x00, 0x00);
pub const BAR_TRACK: Rgb888 = Rgb888::new(0x38, 0x42, 0x4e);
pub const BAR_FILL: Rgb888 = Rgb888::new(0x5c, 0xa8, 0xff);
/// The load bar of a node loaded past one reference core per core.
pub const BAR_OVER: Rgb888 = Rgb888::new(0xff, 0x5c, 0x5c);
pub const WARNING: Rgb888 = Rgb888::new(0xff, 0xb3, 0x47);
/// Background of the notice line (a warning people must act on).
pub const NOTICE: Rgb888 = Rgb888::new(0x8a, 0x1c, 0x1c);

/// The badge colour of a node state. Each state has its own; its word is always drawn on it.
pub fn state_color(state: NodeState) -> Rgb888 {
    match state {
        // Blue, the colour of this node's thick border too.
        NodeState::This => Rgb888::new(0x33, 0xcc, 0xff),
        NodeState::Alive => Rgb888::new(0x3d, 0xd6, 0x5c),
        NodeState::Suspect => Rgb888::new(0xff, 0xd0, 0x1f),
        NodeState::Leaving => Rgb888::new(0xc0, 0x8c, 0xff),
        NodeState::Dead => Rgb888::new(0xff, 0x45, 0x3a),
        NodeState::Left => Rgb888::new(0x9a, 0xa0, 0xa6),
        NodeState::Unknown => Rgb888::new(0xe0, 0xe0, 0xe0),
    }
}

/// The word on a node's badge ("this" for this node, as `clump nodes` says).
pub fn state_word(state: NodeState) -> &'static str {
    match state {
        NodeState::This => "THIS",
        NodeState::Alive => "ALIVE",
        NodeState::Suspect => "SUSPECT",
        NodeState::Leaving => "LEAVING",
        NodeState::Dead => "DEAD",
        NodeState::Left => "LEFT",
        NodeState::Unknown => "UNKNOWN",
    }
}

/// The longest badge word, which every badge has room for.
pub const BADGE_CHARS: u32 = 7;

/// Type sizes, all mono: a glyph box of fixed width, so text is measured by counting characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextSize {
    /// 6x10.
    Small,
    /// 8x13 bold.
    Medium,
    /// 10x20.
    Large,
    /// 10x20 drawn at twice the size (20x40).
    Huge,
    /// 10x20 drawn at three times the size (30x60).
    Giant,
}

impl TextSize {
    pub(crate) fn font(self) -> &'static MonoFont<'static> {
        match self {
            TextSize::Small => &FONT_6X10,
            TextSize::Medium => &FONT_8X13_BOLD,
            TextSize::Large | TextSize::Huge | TextSize::Giant => &FONT_10X20,
        }
    }

    /// How many screen pixels one font pixel takes, across and down.
    pub(crate) fn scale(self) -> u32 {
        match self {
            TextSize::Huge => 2,
            TextSize::Giant => 3,
            _ => 1,
        }
    }

    /// The advance from one character to the next, in pixels.
    pub fn char_width(self) -> u32 {
        let f = self.font();
        (f.character_size.width + f.character_spacing) * self.scale()
    }

    /// The height of a line of text, in pixels.
    pub fn line_height(self) -> u32 {
        self.font().character_size.height * self.scale()
    }

    /// How many characters fit in `width` pixels.
    pub fn chars_in(self, width: u32) -> usize {
        usize::try_from(width / self.char_width()).unwrap_or(usize::MAX)
    }

    /// The width of `chars` characters.
    pub fn width_of(self, chars: usize) -> u32 {
        u32::try_from(chars)
            .unwrap_or(u32::MAX)
            .saturating_mul(self.char_width())
    }
}
