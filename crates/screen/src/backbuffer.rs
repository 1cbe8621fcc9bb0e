//! The frame drawn in memory and copied to the framebuffer: whole, or only what changed.
//!
//! Reads from framebuffer memory are slow (uncached, or behind DRM's deferred I/O), so the buffer
//! keeps its own copy of what it last wrote to the front and compares against that, never against
//! the front itself.

use crate::error::ScreenError;
use crate::pixel::PixelFormat;
use embedded_graphics::draw_target::DrawTarget;
use embedded_graphics::geometry::{Dimensions, OriginDimensions, Size};
use embedded_graphics::pixelcolor::{Rgb888, RgbColor};
use embedded_graphics::primitives::{PointsIter, Rectangle};
use embedded_graphics::Pixel;
use std::convert::Infallible;

/// What a flush copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushStats {
    /// Rows of which some bytes were copied.
    pub rows: u32,
    /// Bytes copied to the front.
    pub bytes: usize,
    /// The front was shorter than `stride * height`: the rows past its end were not copied.
    pub clipped: bool,
}

/// A frame in the framebuffer's own format and stride, drawn with embedded-graphics.
#[derive(Debug, Clone)]
pub struct BackBuffer {
    width: u32,
    height: u32,
    stride: usize,
    format: PixelFormat,
    pixels: Vec<u8>,
    /// What the front holds as far as this buffer knows: the bytes it last copied there.
    shadow: Vec<u8>,
    /// The front's content is not known (never flushed, or invalidated): copy everything.
    front_unknown: bool,
}

impl BackBuffer {
    /// A black frame of `width` x `height` pixels, rows `stride` bytes apart (the framebuffer's
    /// `line_length`, which may be longer than a row of pixels).
    pub fn new(
        width: u32,
        height: u32,
        stride: usize,
        format: PixelFormat,
    ) -> Result<BackBuffer, ScreenError> {
        if width == 0 || height == 0 {
            return Err(ScreenError::Empty { width, height });
        }
        let too_large = ScreenError::TooLarge {
            width,
            height,
            stride,
        };
        let row = usize::try_from(width)
            .ok()
            .and_then(|w| w.checked_mul(format.bytes_per_pixel()))
            .ok_or_else(|| too_large.clone())?;
        if stride < row {
            return Err(ScreenError::StrideTooShort { stride, width, row });
        }
        let len = usize::try_from(height)
            .ok()
            .and_then(|h| h.checked_mul(stride))
            .filter(|&len| isize::try_from(len).is_ok())
            .ok_or(too_large)?;
        Ok(BackBuffer {
            width,
            height,
            stride,
            format,
            pixels: vec![0; len],
            shadow: vec![0; len],
            front_unknown: true,
        })
    }

    /// A frame whose rows are packed with no padding.
    pub fn packed(width: u32, height: u32, format: PixelFormat) -> Result<BackBuffer, ScreenError> {
        let stride = usize::try_from(width)
            .ok()
            .and_then(|w| w.checked_mul(format.bytes_per_pixel()))
            .ok_or(ScreenError::TooLarge {
                width,
                height,
                stride: 0,
            })?;
        BackBuffer::new(width, height, stride, format)
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    pub fn stride(&self) -> usize {
        self.stride
    }

    pub fn format(&self) -> PixelFormat {
        self.format
    }

    /// The frame's bytes, `stride * height` of them, as the framebuffer stores them.
    pub fn bytes(&self) -> &[u8] {
        &self.pixels
    }

    /// The length a front must have to take the whole frame.
    pub fn frame_len(&self) -> usize {
        self.pixels.len()
    }

    /// The colour at a pixel, or `None` outside the frame.
    pub fn pixel(&self, x: u32, y: u32) -> Option<Rgb888> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = self.index(x, y);
        Some(
            self.format
                .decode(&self.pixels[i..i + self.format.bytes_per_pixel()]),
        )
    }

    /// The frame as 8-bit R, G, B triplets, row after row without padding (for PNG files).
    pub fn to_rgb(&self) -> Vec<u8> {
        let bpp = self.format.bytes_per_pixel();
        let row = self.row_len();
        let mut out = Vec::with_capacity(self.pixels.len() / bpp * 3);
        for line in self.pixels.chunks_exact(self.stride) {
            for px in line[..row].chunks_exact(bpp) {
                let c = self.format.decode(px);
                out.extend_from_slice(&[c.r(), c.g(), c.b()]);
            }
        }
        out
    }

    /// Forget what the front holds (it was re-mapped, or something else drew on it): the next
    /// [`flush_changed`](Self::flush_changed) copies the whole frame.
    pub fn invalidate(&mut self) {
        self.front_unknown = true;
    }

    /// Copies to `front` (the mapped framebuffer, same stride and format) the span of each row
    /// that differs from what was last copied there. A front shorter than the frame takes the rows
    /// that fit; the rest are copied by a later flush to a front that has room for them.
    pub fn flush_changed(&mut self, front: &mut [u8]) -> FlushStats {
        if self.front_unknown {
            return self.flush_all(front);
        }
        let bpp = self.format.bytes_per_pixel();
        let row_len = self.row_len();
        let mut stats = FlushStats::default();
        for y in 0..self.height as usize {
            let start = y * self.stride;
            let back = &self.pixels[start..start + row_len];
            let shadow = &mut self.shadow[start..start + row_len];
            if back == shadow {
                continue;
            }
            // The first and last differing pixels bound the span; both exist since the rows differ.
            let first = back
                .iter()
                .zip(shadow.iter())
                .position(|(a, b)| a != b)
                .unwrap_or(0)
                / bpp
                * bpp;
            let last = back
                .iter()
                .zip(shadow.iter())
                .rposition(|(a, b)| a != b)
                .unwrap_or(row_len - 1);
            let end = (last / bpp + 1) * bpp;
            let (from, to) = (start + first, start + end);
            if to > front.len() {
                stats.clipped = true;
                let fit = front.len().saturating_sub(from) / bpp * bpp;
                if fit == 0 {
                    continue;
                }
                front[from..from + fit].copy_from_slice(&back[first..first + fit]);
                shadow[first..first + fit].copy_from_slice(&back[first..first + fit]);
                stats.rows += 1;
                stats.bytes += fit;
                continue;
            }
            front[from..to].copy_from_slice(&back[first..end]);
            shadow[first..end].copy_from_slice(&back[first..end]);
            stats.rows += 1;
            stats.bytes += end - first;
        }
        stats
    }

    /// Copies the whole frame to `front` (as much of it as fits).
    pub fn flush_all(&mut self, front: &mut [u8]) -> FlushStats {
        let n = front.len().min(self.pixels.len());
        front[..n].copy_from_slice(&self.pixels[..n]);
        self.shadow[..n].copy_from_slice(&self.pixels[..n]);
        let clipped = n < self.pixels.len();
        // Rows that did not fit are unknown to the shadow; only a full copy makes it trustworthy.
        self.front_unknown = clipped;
        FlushStats {
            rows: u32::try_from(n.div_ceil(self.stride)).unwrap_or(u32::MAX),
            bytes: n,
            clipped,
        }
    }

    fn row_len(&self) -> usize {
        self.width as usize * self.format.bytes_per_pixel()
    }

    fn index(&self, x: u32, y: u32) -> usize {
        y as usize * self.stride + x as usize * self.format.bytes_per_pixel()
    }

    /// The part of `area` inside the frame, as (x0, y0, x1, y1) with x1, y1 exclusive.
    fn clip(&self, area: &Rectangle) -> Option<(u32, u32, u32, u32)> {
        let r = area.intersection(&self.bounding_box());
        let br = r.bottom_right()?;
        let x0 = u32::try_from(r.top_left.x).ok()?;
        let y0 = u32::try_from(r.top_left.y).ok()?;
        Some((
            x0,
            y0,
            u32::try_from(br.x).ok()? + 1,
            u32::try_from(br.y).ok()? + 1,
        ))
    }
}

/// Writes one pixel's bytes at the start of `dst`, with a copy of fixed size for each depth.
fn put(dst: &mut [u8], bytes: [u8; 4], bpp: usize) {
    match bpp {
        4 => dst[..4].copy_from_slice(&bytes),
        3 => dst[..3].copy_from_slice(&bytes[..3]),
        _ => dst[..2].copy_from_slice(&bytes[..2]),
    }
}

/// Fills `span` (a whole number of pixels) with copies of `px`, doubling what is filled each time:
/// a few large copies instead of one small one per pixel.
fn fill_span(span: &mut [u8], px: &[u8]) {
    if span.len() < px.len() {
        return;
    }
    span[..px.len()].copy_from_slice(px);
    let mut filled = px.len();
    while filled < span.len() {
        let n = filled.min(span.len() - filled);
        span.copy_within(..n, filled);
        filled += n;
    }
}

/// Packs colours, remembering the last: text and images come as runs of one or two colours,
/// and packing costs three divisions.
struct Packer {
    format: PixelFormat,
    last: Option<(Rgb888, [u8; 4])>,
}

impl Packer {
    fn new(format: PixelFormat) -> Packer {
        Packer { format, last: None }
    }

    fn encode(&mut self, c: Rgb888) -> [u8; 4] {
        match self.last {
            Some((l, bytes)) if l == c => bytes,
            _ => {
                let bytes = self.format.encode(c);
                self.last = Some((c, bytes));
                bytes
            }
        }
    }
}

impl OriginDimensions for BackBuffer {
    fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }
}

impl DrawTarget for BackBuffer {
    type Color = Rgb888;
    type Error = Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        let bpp = self.format.bytes_per_pixel();
        let mut packer = Packer::new(self.format);
        for Pixel(p, c) in pixels {
            let (Ok(x), Ok(y)) = (u32::try_from(p.x), u32::try_from(p.y)) else {
                continue;
            };
            if x < self.width && y < self.height {
                let i = self.index(x, y);
                put(&mut self.pixels[i..], packer.encode(c), bpp);
            }
        }
        Ok(())
    }

    fn fill_contiguous<I>(&mut self, area: &Rectangle, colors: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Self::Color>,
    {
        let Some((x0, y0, x1, y1)) = self.clip(area) else {
            return Ok(());
        };
        let bpp = self.format.bytes_per_pixel();
        // Colours come row by row over the whole area; those clipped away are skipped.
        let (xs, ys) = (x0..x1, y0..y1);
        let mut packer = Packer::new(self.format);
        for (p, c) in area.points().zip(colors) {
            let (Ok(x), Ok(y)) = (u32::try_from(p.x), u32::try_from(p.y)) else {
                continue;
            };
            if xs.contains(&x) && ys.contains(&y) {
                let i = self.index(x, y);
                put(&mut self.pixels[i..], packer.encode(c), bpp);
            }
        }
        Ok(())
    }

    fn fill_solid(&mut self, area: &Rectangle, color: Self::Color) -> Result<(), Self::Error> {
        let Some((x0, y0, x1, y1)) = self.clip(area) else {
            return Ok(());
        };
        let bpp = self.format.bytes_per_pixel();
        let px = self.format.encode(color);
        let px = &px[..bpp];
        for y in y0..y1 {
            let (a, b) = (self.index(x0, y), self.index(x1, y));
            fill_span(&mut self.pixels[a..b], px);
        }
        Ok(())
    }

    fn clear(&mut self, color: Self::Color) -> Result<(), Self::Error> {
        self.fill_solid(&self.bounding_box(), color)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_graphics::geometry::Point;
    use embedded_graphics::pixelcolor::RgbColor;

    fn square(x: i32, y: i32, w: u32, h: u32) -> Rectangle {
        Rectangle::new(Point::new(x, y), Size::new(w, h))
    }

    #[test]
    fn rejects_short_strides_and_empty_frames() {
        let f = PixelFormat::xrgb8888();
        assert!(matches!(
            BackBuffer::new(640, 480, 2559, f),
            Err(ScreenError::StrideTooShort { row: 2560, .. })
        ));
        assert!(matches!(
            BackBuffer::new(0, 480, 2560, f),
            Err(ScreenError::Empty { .. })
        ));
        assert!(matches!(
            BackBuffer::new(u32::MAX, u32::MAX, usize::MAX, f),
            Err(ScreenError::TooLarge { .. })
        ));
    }

    #[test]
    fn fill_solid_packs_by_format_and_leaves_stride_padding_alone() {
        for f in [
            PixelFormat::xrgb8888(),
            PixelFormat::xbgr8888(),
            PixelFormat::rgb888(),
            PixelFormat::bgr888(),
            PixelFormat::rgb565(),
            PixelFormat::bgr565(),
        ] {
            let bpp = f.bytes_per_pixel();
            let stride = 7 * bpp + 5;
            let mut b = BackBuffer::new(7, 3, stride, f).expect("buffer");
            b.fill_solid(&square(-2, 1, 5, 10), Rgb888::RED).expect("fill");
            for y in 0..3 {
                for x in 0..7 {
                    let want = if y >= 1 && x < 3 {
                        Rgb888::RED
                    } else {
                        Rgb888::BLACK
                    };
                    assert_eq!(b.pixel(x, y), Some(want), "{f:?} at {x},{y}");
                }
                let pad = &b.bytes()[y as usize * stride + 7 * bpp..(y as usize + 1) * stride];
                assert!(pad.iter().all(|&v| v == 0), "{f:?}: padding of row {y} written");
            }
            let i = stride;
            assert_eq!(&b.bytes()[i..i + bpp], &f.encode(Rgb888::RED)[..bpp]);
        }
    }

    #[test]
    fn draw_iter_and_fill_contiguous_clip_to_the_frame() {
        let mut b = BackBuffer::packed(4, 4, PixelFormat::rgb565()).expect("buffer");
        b.draw_iter([
            Pixel(Point::new(-1, 0), Rgb888::WHITE),
            Pixel(Point::new(3, 3), Rgb888::WHITE),
            Pixel(Point::new(4, 0), Rgb888::WHITE),
        ])
        .expect("draw");
        assert_eq!(b.pixel(3, 3), Some(Rgb888::WHITE));
        assert_eq!(b.bytes().iter().filter(|&&v| v != 0).count(), 2);
        // A 3x2 area hanging off the left edge: its colours are consumed row by row.
        let colors = [
            Rgb888::RED,
            Rgb888::GREEN,
            Rgb888::BLUE,
            Rgb888::WHITE,
            Rgb888::RED,
            Rgb888::GREEN,
        ];
        b.fill_contiguous(&square(-1, 0, 3, 2), colors).expect("fill");
        assert_eq!(b.pixel(0, 0), Some(Rgb888::GREEN));
        assert_eq!(b.pixel(1, 0), Some(Rgb888::BLUE));
        assert_eq!(b.pixel(0, 1), Some(Rgb888::RED));
        assert_eq!(b.pixel(1, 1), Some(Rgb888::GREEN));
    }

    /// A front that counts nothing itself: the test compares it with the back after each flush.
    fn front_for(b: &BackBuffer) -> Vec<u8> {
        vec![0xee; b.frame_len()]
    }

    #[test]
    fn flush_changed_copies_only_the_changed_span_of_changed_rows() {
        // 24 bpp and a stride with 7 bytes of padding: spans must stay pixel-aligned.
        let f = PixelFormat::bgr888();
        let (w, h, stride) = (33u32, 20u32, 33 * 3 + 7);
        let mut b = BackBuffer::new(w, h, stride, f).expect("buffer");
        let mut front = front_for(&b);
        let first = b.flush_changed(&mut front);
        assert_eq!(first.bytes, b.frame_len(), "the first flush copies everything");
        assert_eq!(front, b.bytes());

        assert_eq!(
            b.flush_changed(&mut front),
            FlushStats::default(),
            "nothing changed"
        );

        b.fill_solid(&square(5, 3, 4, 2), Rgb888::new(1, 2, 3))
            .expect("fill");
        b.draw_iter([Pixel(Point::new(32, 19), Rgb888::new(0, 0, 1))])
            .expect("draw");
        // Poison the front outside the change: a flush that copies more than the span shows it.
        for y in 0..h as usize {
            for x in 0..stride {
                let in_span = (y == 3 || y == 4) && (15..27).contains(&x) || y == 19 && (96..99).contains(&x);
                if !in_span {
                    front[y * stride + x] = 0xaa;
                }
            }
        }
        let s = b.flush_changed(&mut front);
        assert_eq!(
            s,
            FlushStats {
                rows: 3,
                bytes: 2 * 12 + 3,
                clipped: false
            }
        );
        for y in 0..h as usize {
            for x in 0..stride {
                let i = y * stride + x;
                let in_span = (y == 3 || y == 4) && (15..27).contains(&x) || y == 19 && (96..99).contains(&x);
                if in_span {
                    assert_eq!(front[i], b.bytes()[i], "changed byte {x},{y} copied");
                } else {
                    assert_eq!(front[i], 0xaa, "byte {x},{y} outside the change touched");
                }
            }
        }
        // A pixel whose first byte is unchanged but whose last changed is still copied whole.
        b.draw_iter([Pixel(Point::new(6, 3), Rgb888::new(1, 2, 9))])
            .expect("draw");
        let s = b.flush_changed(&mut front);
        assert_eq!((s.rows, s.bytes), (1, 3));
        assert_eq!(
            &front[3 * stride + 18..3 * stride + 21],
            &b.bytes()[3 * stride + 18..3 * stride + 21]
        );
    }

    #[test]
    fn flush_to_a_short_front_clips_and_catches_up_later() {
        let mut b = BackBuffer::packed(10, 10, PixelFormat::xrgb8888()).expect("buffer");
        b.clear(Rgb888::WHITE).expect("clear");
        let mut short = vec![0u8; 40 * 4 + 10];
        let s = b.flush_changed(&mut short);
        assert!(s.clipped);
        assert_eq!(s.bytes, short.len());
        assert_eq!(&short[..], &b.bytes()[..short.len()]);
        let mut front = vec![0u8; b.frame_len()];
        b.flush_changed(&mut front);
        assert_eq!(
            front,
            b.bytes(),
            "after a clipped flush the next one copies everything"
        );
        b.fill_solid(&square(0, 9, 10, 1), Rgb888::RED).expect("fill");
        let mut short = front.clone();
        short.truncate(9 * 40 + 8);
        let s = b.flush_changed(&mut short);
        assert_eq!((s.rows, s.bytes, s.clipped), (1, 8, true));
        let s = b.flush_changed(&mut front);
        assert_eq!((s.rows, s.bytes), (1, 32), "the rest of the clipped row follows");
        assert_eq!(front[9 * 40 + 8..], b.bytes()[9 * 40 + 8..]);
        assert_eq!(b.flush_changed(&mut []).rows, 0);
    }

    #[test]
    fn invalidate_makes_the_next_flush_copy_everything() {
        let mut b = BackBuffer::packed(8, 8, PixelFormat::rgb565()).expect("buffer");
        let mut front = vec![0u8; b.frame_len()];
        b.flush_changed(&mut front);
        let mut other = vec![0x55u8; b.frame_len()];
        b.invalidate();
        let s = b.flush_changed(&mut other);
        assert_eq!(s.bytes, b.frame_len());
        assert_eq!(other, b.bytes());
    }
}
