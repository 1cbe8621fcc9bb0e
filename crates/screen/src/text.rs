//! Text that stays in its box: shortened with ".." to the characters that fit, then drawn through a
//! clipping target, so not one pixel lands outside even if the measuring were wrong.

use crate::theme::TextSize;
use embedded_graphics::draw_target::{DrawTarget, DrawTargetExt};
use embedded_graphics::geometry::{Dimensions, Point, Size};
use embedded_graphics::mono_font::MonoTextStyle;
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::primitives::Rectangle;
use embedded_graphics::text::{Baseline, Text};
use embedded_graphics::{Drawable, Pixel};
use std::borrow::Cow;

/// Where a line sits across its box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Center,
    Right,
}

/// `s` cut to at most `max` characters, the last two of a cut string replaced by "..": the fonts
/// are ASCII, so there is no one-character ellipsis. Control characters become spaces.
pub fn fit(s: &str, max: usize) -> Cow<'_, str> {
    let clean = s.chars().all(|c| !c.is_control());
    let count = s.chars().count();
    if clean && count <= max {
        return Cow::Borrowed(s);
    }
    let chars = s.chars().map(|c| if c.is_control() { ' ' } else { c });
    if count <= max {
        return Cow::Owned(chars.collect());
    }
    let mut out: String = match max {
        0 => String::new(),
        1 | 2 => chars.take(max).collect(),
        _ => chars.take(max - 2).collect(),
    };
    if max > 2 {
        out.push_str("..");
    }
    Cow::Owned(out)
}

/// One line of text as drawn: what it says, the box it was given, and where its glyphs went
/// (measured by embedded-graphics from the font, before clipping).
#[derive(Debug, Clone, PartialEq)]
pub struct TextRecord {
    pub text: String,
    /// The box the text was given.
    pub target: Rectangle,
    /// The region that box belongs to: a tile, the header, the footer ...
    pub container: Rectangle,
    /// The glyphs' bounding box.
    pub drawn: Rectangle,
}

/// Draws `s` on one line in `rect`, vertically centred, shortened to fit. Returns the record of
/// what was drawn; nothing is drawn into a box lower than the font.
pub(crate) fn draw<D>(
    target: &mut D,
    s: &str,
    rect: Rectangle,
    size: TextSize,
    color: Rgb888,
    align: Align,
) -> Result<Option<(String, Rectangle)>, D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    if rect.size.height < size.line_height() {
        return Ok(None);
    }
    let line = fit(s, size.chars_in(rect.size.width));
    if line.is_empty() {
        return Ok(None);
    }
    let width = size.width_of(line.chars().count());
    let slack = rect.size.width.saturating_sub(width);
    let dx = match align {
        Align::Left => 0,
        Align::Center => slack / 2,
        Align::Right => slack,
    };
    let dy = (rect.size.height - size.line_height()) / 2;
    let at = rect.top_left + Point::new(to_i32(dx), to_i32(dy));
    let style = MonoTextStyle::new(size.font(), color);
    let scale = size.scale();
    let mut clipped = target.clipped(&rect);
    let drawn = if scale == 1 {
        let text = Text::with_baseline(&line, at, style, Baseline::Top);
        text.draw(&mut clipped)?;
        text.bounding_box()
    } else {
        let text = Text::with_baseline(&line, Point::zero(), style, Baseline::Top);
        text.draw(&mut Scaled {
            inner: &mut clipped,
            origin: at,
            scale,
        })?;
        let b = text.bounding_box();
        Rectangle::new(
            at + b.top_left * to_i32(scale),
            Size::new(b.size.width * scale, b.size.height * scale),
        )
    };
    Ok(Some((line.into_owned(), drawn)))
}

pub(crate) fn to_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// A target on which each pixel is a `scale` x `scale` square of the inner one, from `origin`:
/// big type from the built-in fonts.
struct Scaled<'a, D> {
    inner: &'a mut D,
    origin: Point,
    scale: u32,
}

impl<D: DrawTarget> Dimensions for Scaled<'_, D> {
    fn bounding_box(&self) -> Rectangle {
        let b = self.inner.bounding_box();
        let s = to_i32(self.scale);
        Rectangle::new(
            Point::new(
                (b.top_left.x - self.origin.x) / s,
                (b.top_left.y - self.origin.y) / s,
            ),
            Size::new(
                b.size.width.div_ceil(self.scale),
                b.size.height.div_ceil(self.scale),
            ),
        )
    }
}

impl<D: DrawTarget> DrawTarget for Scaled<'_, D> {
    type Color = D::Color;
    type Error = D::Error;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        let square = Size::new(self.scale, self.scale);
        for Pixel(p, c) in pixels {
            let at = self.origin + p * to_i32(self.scale);
            self.inner.fill_solid(&Rectangle::new(at, square), c)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_keeps_what_fits_and_marks_cuts() {
        assert_eq!(fit("node-12", 7), "node-12");
        assert_eq!(fit("node-12", 6), "node..");
        assert_eq!(fit("node-12", 2), "no");
        assert_eq!(fit("node-12", 0), "");
        assert_eq!(fit("a\tb", 3), "a b");
        assert_eq!(fit("héllo wörld", 7), "héllo..");
    }
}
