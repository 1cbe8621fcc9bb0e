//! The framebuffer with its back buffer: a frame is drawn off screen, then only the lines that
//! changed are copied into the device's memory, so nothing flickers.

use crate::fbdev::Framebuffer;
use anyhow::{Context, Result};
use clump_screen::{BackBuffer, PixelFormat, View};
use std::path::Path;

#[derive(Debug)]
pub struct Display {
    fb: Framebuffer,
    back: BackBuffer,
}

impl Display {
    pub fn open(path: &Path) -> Result<Display> {
        let fb = Framebuffer::open(path)?;
        let i = fb.info().clone();
        let format = PixelFormat::from_bitfields(i.bits_per_pixel, i.red, i.green, i.blue)
            .with_context(|| format!("{}: pixel format", path.display()))?;
        let back = BackBuffer::new(i.width, i.height, i.stride as usize, format)
            .with_context(|| format!("{}: back buffer", path.display()))?;
        Ok(Display { fb, back })
    }

    pub fn describe(&self) -> String {
        let i = self.fb.info();
        format!(
            "fb {} {}x{} {} bpp, {} bytes a line",
            i.id, i.width, i.height, i.bits_per_pixel, i.stride
        )
    }

    pub fn still_same(&self) -> bool {
        self.fb.still_same()
    }

    /// Renders `view` and copies what changed (everything when `full`: the console drew over it).
    pub fn draw(&mut self, view: &View, full: bool) {
        if let Err(e) = clump_screen::render(view, &mut self.back) {
            tracing::warn!("cannot draw: {e:?}");
            return;
        }
        let front = self.fb.frame();
        if full {
            self.back.flush_all(front);
        } else {
            self.back.flush_changed(front);
        }
    }
}
