use thiserror::Error;

/// What the screen library refuses: pixel formats it cannot pack and buffers it cannot lay out.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ScreenError {
    /// Only 16, 24 and 32 bits per pixel are packed.
    #[error("unsupported depth: {0} bits per pixel (16, 24 and 32 are supported)")]
    UnsupportedDepth(u32),
    /// A colour channel must be 1 to 16 bits long.
    #[error("{channel} channel is {length} bits long (1 to 16 are supported)")]
    ChannelLength { channel: &'static str, length: u32 },
    /// A colour channel reaches past the pixel.
    #[error("{channel} channel at bits {offset}..{end} does not fit in a {bpp}-bit pixel", end = offset + length)]
    ChannelOutside {
        channel: &'static str,
        offset: u32,
        length: u32,
        bpp: u32,
    },
    /// Two colour channels share bits.
    #[error("{a} and {b} channels overlap")]
    ChannelsOverlap { a: &'static str, b: &'static str },
    /// A buffer of no pixels.
    #[error("empty screen: {width}x{height}")]
    Empty { width: u32, height: u32 },
    /// The stride cannot hold a row of pixels.
    #[error("stride {stride} bytes is shorter than a row of {width} pixels ({row} bytes)")]
    StrideTooShort { stride: usize, width: u32, row: usize },
    /// The frame would not fit in memory.
    #[error("a {width}x{height} frame of stride {stride} is too large")]
    TooLarge { width: u32, height: u32, stride: usize },
}
