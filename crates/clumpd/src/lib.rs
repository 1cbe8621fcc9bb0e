//! The runtime daemon's parts; `main.rs` is the event loop that ties them together.

pub mod sample;
pub mod speed;
pub mod sweep;
