//! Pixel formats as the kernel's `FBIOGET_VSCREENINFO` describes them, and packing colours into them.
//!
//! A pixel is `bits_per_pixel / 8` bytes holding one little-endian integer (fbdev stores pixels in the
//! CPU's order, and every machine Clump boots on is little-endian); each channel is a bitfield of
//! that integer. Preset names follow the DRM fourcc convention, which names channels from the most
//! significant bits down: XRGB8888 has red at bit 16 and is stored B, G, R, X in memory.

use crate::error::ScreenError;
use embedded_graphics::pixelcolor::{Rgb888, RgbColor};

/// One colour channel: `length` bits starting at bit `offset` of the pixel value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Channel {
    pub offset: u32,
    pub length: u32,
}

impl Channel {
    fn max(self) -> u32 {
        (1u32 << self.length) - 1
    }

    /// Scales an 8-bit intensity to the channel's width, rounded to nearest.
    fn pack(self, v: u8) -> u32 {
        ((u32::from(v) * self.max() + 127) / 255) << self.offset
    }

    fn unpack(self, pixel: u32) -> u8 {
        let v = (pixel >> self.offset) & self.max();
        let max = self.max();
        // At most 255 by construction; the fallback never happens.
        u8::try_from((v * 255 + max / 2) / max).unwrap_or(u8::MAX)
    }

    fn mask(self) -> u32 {
        self.max() << self.offset
    }
}

/// How a framebuffer stores a pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PixelFormat {
    bits_per_pixel: u32,
    red: Channel,
    green: Channel,
    blue: Channel,
}

impl PixelFormat {
    /// The format from the kernel's figures: `bits_per_pixel` and each channel's `(offset, length)`.
    /// Transparency bits, if any, are left zero.
    pub fn from_bitfields(
        bits_per_pixel: u32,
        red: (u32, u32),
        green: (u32, u32),
        blue: (u32, u32),
    ) -> Result<PixelFormat, ScreenError> {
        if !matches!(bits_per_pixel, 16 | 24 | 32) {
            return Err(ScreenError::UnsupportedDepth(bits_per_pixel));
        }
        let channels = [("red", red), ("green", green), ("blue", blue)];
        for (channel, (offset, length)) in channels {
            if !(1..=16).contains(&length) {
                return Err(ScreenError::ChannelLength { channel, length });
            }
            if offset.checked_add(length).is_none_or(|end| end > bits_per_pixel) {
                return Err(ScreenError::ChannelOutside {
                    channel,
                    offset,
                    length,
                    bpp: bits_per_pixel,
                });
            }
        }
        let ch = |(offset, length)| Channel { offset, length };
        let (r, g, b) = (ch(red), ch(green), ch(blue));
        for (a, ca, bname, cb) in [
            ("red", r, "green", g),
            ("red", r, "blue", b),
            ("green", g, "blue", b),
        ] {
            if ca.mask() & cb.mask() != 0 {
                return Err(ScreenError::ChannelsOverlap { a, b: bname });
            }
        }
        Ok(PixelFormat {
            bits_per_pixel,
            red: r,
            green: g,
            blue: b,
        })
    }

    const fn preset(bits_per_pixel: u32, red: u32, green: u32, blue: u32, lengths: [u32; 3]) -> Self {
        PixelFormat {
            bits_per_pixel,
            red: Channel {
                offset: red,
                length: lengths[0],
            },
            green: Channel {
                offset: green,
                length: lengths[1],
            },
            blue: Channel {
                offset: blue,
                length: lengths[2],
            },
        }
    }

    /// 32 bpp, red at 16, green at 8, blue at 0 (memory: B G R X): bochs-drm, efifb, most fbdevs.
    pub const fn xrgb8888() -> Self {
        Self::preset(32, 16, 8, 0, [8, 8, 8])
    }

    /// 32 bpp, red at 0, green at 8, blue at 16 (memory: R G B X).
    pub const fn xbgr8888() -> Self {
        Self::preset(32, 0, 8, 16, [8, 8, 8])
    }

    /// 24 bpp, red at 16, green at 8, blue at 0 (memory: B G R): vesafb's usual 24-bit mode.
    pub const fn rgb888() -> Self {
        Self::preset(24, 16, 8, 0, [8, 8, 8])
    }

    /// 24 bpp, red at 0, green at 8, blue at 16 (memory: R G B).
    pub const fn bgr888() -> Self {
        Self::preset(24, 0, 8, 16, [8, 8, 8])
    }

    /// 16 bpp, red 5 bits at 11, green 6 at 5, blue 5 at 0.
    pub const fn rgb565() -> Self {
        Self::preset(16, 11, 5, 0, [5, 6, 5])
    }

    /// 16 bpp, blue 5 bits at 11, green 6 at 5, red 5 at 0.
    pub const fn bgr565() -> Self {
        Self::preset(16, 0, 5, 11, [5, 6, 5])
    }

    pub fn bits_per_pixel(&self) -> u32 {
        self.bits_per_pixel
    }

    pub fn bytes_per_pixel(&self) -> usize {
        match self.bits_per_pixel {
            16 => 2,
            24 => 3,
            _ => 4,
        }
    }

    pub fn red(&self) -> Channel {
        self.red
    }

    pub fn green(&self) -> Channel {
        self.green
    }

    pub fn blue(&self) -> Channel {
        self.blue
    }

    /// The pixel value of a colour.
    pub fn pack(&self, c: Rgb888) -> u32 {
        self.red.pack(c.r()) | self.green.pack(c.g()) | self.blue.pack(c.b())
    }

    /// The colour of a pixel value (channels narrower than 8 bits scaled back up).
    pub fn unpack(&self, pixel: u32) -> Rgb888 {
        Rgb888::new(
            self.red.unpack(pixel),
            self.green.unpack(pixel),
            self.blue.unpack(pixel),
        )
    }

    /// The bytes of a colour as the framebuffer stores them; the first `bytes_per_pixel` count.
    pub fn encode(&self, c: Rgb888) -> [u8; 4] {
        self.pack(c).to_le_bytes()
    }

    /// The colour stored in `bytes` (at least `bytes_per_pixel` long; missing bytes read as 0).
    pub fn decode(&self, bytes: &[u8]) -> Rgb888 {
        let mut le = [0u8; 4];
        let n = self.bytes_per_pixel().min(bytes.len());
        le[..n].copy_from_slice(&bytes[..n]);
        self.unpack(u32::from_le_bytes(le))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xrgb8888_is_stored_blue_green_red_x() {
        let f = PixelFormat::xrgb8888();
        assert_eq!(f.encode(Rgb888::new(0x11, 0x22, 0x33)), [0x33, 0x22, 0x11, 0]);
        assert_eq!(f.bytes_per_pixel(), 4);
    }

    #[test]
    fn xbgr8888_is_stored_red_green_blue_x() {
        let f = PixelFormat::xbgr8888();
        assert_eq!(f.encode(Rgb888::new(0x11, 0x22, 0x33)), [0x11, 0x22, 0x33, 0]);
    }

    #[test]
    fn bgr888_is_three_bytes_red_first() {
        let f = PixelFormat::bgr888();
        assert_eq!(f.bytes_per_pixel(), 3);
        assert_eq!(&f.encode(Rgb888::new(0x11, 0x22, 0x33))[..3], &[0x11, 0x22, 0x33]);
        assert_eq!(
            &PixelFormat::rgb888().encode(Rgb888::new(0x11, 0x22, 0x33))[..3],
            &[0x33, 0x22, 0x11]
        );
    }

    #[test]
    fn rgb565_packs_and_rounds() {
        let f = PixelFormat::rgb565();
        assert_eq!(f.pack(Rgb888::WHITE), 0xffff);
        assert_eq!(f.pack(Rgb888::RED), 0xf800);
        assert_eq!(f.pack(Rgb888::GREEN), 0x07e0);
        assert_eq!(f.pack(Rgb888::BLUE), 0x001f);
        assert_eq!(f.encode(Rgb888::RED)[..2], [0x00, 0xf8]);
        // 0x80 is 16.06 of 31 and 32.1 of 63: rounded, not truncated.
        assert_eq!(f.pack(Rgb888::new(0x80, 0x80, 0x80)), (16 << 11) | (32 << 5) | 16);
        assert_eq!(f.unpack(0xffff), Rgb888::WHITE);
        assert_eq!(f.unpack(0), Rgb888::BLACK);
    }

    #[test]
    fn bgr565_swaps_red_and_blue_of_rgb565() {
        let f = PixelFormat::bgr565();
        assert_eq!(f.bytes_per_pixel(), 2);
        assert_eq!(f.pack(Rgb888::RED), 0x001f);
        assert_eq!(f.pack(Rgb888::GREEN), 0x07e0);
        assert_eq!(f.pack(Rgb888::BLUE), 0xf800);
        assert_eq!(f.encode(Rgb888::BLUE)[..2], [0x00, 0xf8]);
        for v in 0..=255u8 {
            let c = Rgb888::new(v, 255 - v, v / 3);
            let swapped = Rgb888::new(c.b(), c.g(), c.r());
            assert_eq!(f.pack(c), PixelFormat::rgb565().pack(swapped));
            assert_eq!(
                f.decode(&f.encode(c)),
                PixelFormat::rgb565().decode(&PixelFormat::rgb565().encode(c)),
                "the same rounding as rgb565"
            );
        }
    }

    #[test]
    fn eight_bit_formats_round_trip_every_value() {
        for f in [
            PixelFormat::xrgb8888(),
            PixelFormat::xbgr8888(),
            PixelFormat::rgb888(),
            PixelFormat::bgr888(),
        ] {
            for v in 0..=255u8 {
                let c = Rgb888::new(v, 255 - v, v / 2);
                assert_eq!(f.decode(&f.encode(c)), c);
            }
        }
    }

    #[test]
    fn from_bitfields_matches_presets_and_accepts_ten_bit_channels() {
        assert_eq!(
            PixelFormat::from_bitfields(32, (16, 8), (8, 8), (0, 8)),
            Ok(PixelFormat::xrgb8888())
        );
        assert_eq!(
            PixelFormat::from_bitfields(16, (11, 5), (5, 6), (0, 5)),
            Ok(PixelFormat::rgb565())
        );
        assert_eq!(
            PixelFormat::from_bitfields(16, (0, 5), (5, 6), (11, 5)),
            Ok(PixelFormat::bgr565())
        );
        assert_eq!(
            PixelFormat::from_bitfields(24, (16, 8), (8, 8), (0, 8)),
            Ok(PixelFormat::rgb888())
        );
        assert_eq!(
            PixelFormat::from_bitfields(24, (0, 8), (8, 8), (16, 8)),
            Ok(PixelFormat::bgr888())
        );
        assert_eq!(
            PixelFormat::from_bitfields(32, (0, 8), (8, 8), (16, 8)),
            Ok(PixelFormat::xbgr8888())
        );
        let f = PixelFormat::from_bitfields(32, (20, 10), (10, 10), (0, 10)).expect("2101010");
        assert_eq!(f.pack(Rgb888::WHITE), 0x3fff_ffff);
    }

    #[test]
    fn from_bitfields_rejects_what_it_cannot_pack() {
        assert_eq!(
            PixelFormat::from_bitfields(8, (5, 3), (2, 3), (0, 2)),
            Err(ScreenError::UnsupportedDepth(8))
        );
        assert!(matches!(
            PixelFormat::from_bitfields(32, (16, 0), (8, 8), (0, 8)),
            Err(ScreenError::ChannelLength { channel: "red", .. })
        ));
        assert!(matches!(
            PixelFormat::from_bitfields(24, (20, 8), (8, 8), (0, 8)),
            Err(ScreenError::ChannelOutside { channel: "red", .. })
        ));
        assert!(matches!(
            PixelFormat::from_bitfields(32, (u32::MAX, 8), (8, 8), (0, 8)),
            Err(ScreenError::ChannelOutside { .. })
        ));
        assert_eq!(
            PixelFormat::from_bitfields(32, (8, 8), (8, 8), (0, 8)),
            Err(ScreenError::ChannelsOverlap { a: "red", b: "green" })
        );
    }
}
