//! The runtime daemon's parts; `main.rs` starts them and `daemon.rs` is the event loop.

pub mod api_server;
pub mod balance;
pub mod client_slots;
pub mod cluster_ps;
pub mod config;
pub mod control;
pub mod daemon;
pub mod lease;
pub mod nodemap;
pub mod peer;
pub mod sample;
pub mod speed;
pub mod stream_gate;
pub mod sweep;
