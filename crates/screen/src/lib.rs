//! The status screen renderer (issue 5): what a node's screen shows, drawn with embedded-graphics
//! into a back buffer in the framebuffer's own pixel format, and copied to the framebuffer a
//! changed row at a time. No I/O: `clump-screend` opens `/dev/fb0`, asks `clumpd` and calls this.
//!
//! - [`pixel`]: [`PixelFormat`] from the kernel's bitfields, packing colours.
//! - [`backbuffer`]: [`BackBuffer`], an embedded-graphics target with [`BackBuffer::flush_changed`].
//! - [`layout`]: where the header, each node's tile and badge, and the footer go ([`layout()`]).
//! - [`render`]: a [`View`] drawn on any target ([`render()`]).

pub mod backbuffer;
pub mod error;
mod format;
pub mod layout;
pub mod pixel;
pub mod render;
pub mod text;
pub mod theme;
pub mod view;

pub use backbuffer::{BackBuffer, FlushStats};
pub use error::ScreenError;
pub use layout::{boot_layout, layout, BootLayout, Layout, LayoutError, StageLayout, TileKind, TileLayout};
pub use pixel::{Channel, PixelFormat};
pub use render::{display_order, render, render_recorded, stage_color};
pub use text::TextRecord;
pub use theme::{state_color, state_word, TextSize};
pub use view::{BootStage, Phase, StageStatus, View};
