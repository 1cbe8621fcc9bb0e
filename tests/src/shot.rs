//! Screendumps read the way a person reads the status screen: which colour is where the layout of
//! `clump-screen` puts a tile's state badge or a boot stage's status.

use anyhow::{bail, ensure, Context, Result};
use clump_api::NodeState;
use clump_screen::{boot_layout, layout, stage_color, state_color, StageStatus};
use embedded_graphics::pixelcolor::{Rgb888, RgbColor as _};
use std::path::Path;

/// One screendump as packed RGB.
#[derive(PartialEq, Eq)]
pub struct Shot {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Shot {
    pub fn read(path: &Path) -> Result<Shot> {
        let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut reader = png::Decoder::new(std::io::BufReader::new(file))
            .read_info()
            .with_context(|| format!("reading {}", path.display()))?;
        let mut buf = vec![0; reader.output_buffer_size().context("PNG too large")?];
        let info = reader.next_frame(&mut buf)?;
        let channels = match info.color_type {
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            other => bail!("{}: colour type {other:?}", path.display()),
        };
        ensure!(
            info.bit_depth == png::BitDepth::Eight,
            "{}: not 8 bits a channel",
            path.display()
        );
        let rgb = buf[..info.buffer_size()]
            .chunks(channels)
            .flat_map(|px| [px[0], px[1], px[2]])
            .collect();
        Ok(Shot {
            width: info.width,
            height: info.height,
            rgb,
        })
    }

    pub fn pixel(&self, x: u32, y: u32) -> Option<(u8, u8, u8)> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let at = (y as usize * self.width as usize + x as usize) * 3;
        Some((self.rgb[at], self.rgb[at + 1], self.rgb[at + 2]))
    }

    /// Checks that the screen shows exactly these nodes, in tiles ordered by node number, each
    /// badge in the colour of an accepted state.
    pub fn tiles(&self, expect: &[(u32, &[NodeState])]) -> Result<()> {
        let l = layout(self.width, self.height, expect.len());
        ensure!(
            l.tiles.len() == expect.len(),
            "the layout at {}x{} has {} tiles for {} nodes",
            self.width,
            self.height,
            l.tiles.len(),
            expect.len()
        );
        let mut order: Vec<u32> = expect.iter().map(|(n, _)| *n).collect();
        order.sort_unstable();
        for (number, states) in expect {
            let index = order
                .iter()
                .position(|n| n == number)
                .context("a node without a tile")?;
            let p = l.tiles[index].badge_probe();
            let seen = self
                .pixel(u32::try_from(p.x)?, u32::try_from(p.y)?)
                .with_context(|| format!("badge probe {p:?} is off the screen"))?;
            let matches = |s: &NodeState| close(seen, state_color(*s));
            if !states.iter().any(matches) {
                bail!("node {number}'s badge at {p:?} is {seen:?}, not the colour of {states:?}");
            }
        }
        Ok(())
    }
}

fn close(a: (u8, u8, u8), c: Rgb888) -> bool {
    a.0.abs_diff(c.r()) <= 8 && a.1.abs_diff(c.g()) <= 8 && a.2.abs_diff(c.b()) <= 8
}

impl Shot {
    /// The status screen is drawn: either the boot stages with the first one (hardware) done, or
    /// the cluster with this node's tile, for a node alone.
    pub fn shows_the_screen(&self) -> Result<()> {
        let boot = boot_layout(self.width, self.height, 4);
        let hardware = boot.stages.first().context("no boot stage in the layout")?;
        let p = hardware.status.top_left + embedded_graphics::geometry::Point::new(1, 1);
        let seen = self
            .pixel(u32::try_from(p.x)?, u32::try_from(p.y)?)
            .context("the boot stage is off the screen")?;
        if close(seen, stage_color(StageStatus::Done)) {
            return Ok(());
        }
        self.tiles(&[(0, &[NodeState::This])])
            .with_context(|| format!("nor the boot stages (hardware's badge at {p:?} is {seen:?})"))
    }
}
