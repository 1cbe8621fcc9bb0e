//! Clump's load balancer without I/O: each node runs one over the gossip state it already holds
//! (MOSIX's "window to the world") and decides only about the jobs that run on it. `clumpd`
//! feeds it the figures every second and carries out the move it names.
//!
//! - [`policy`]: the knobs and their defaults (Kerrighed's and MOSIX's figures, named).
//! - [`rate`]: what share of a CPU a job gets on a node, and what a move costs.
//! - [`balancer`]: the decisions, in order: drain, I/O home, memory, then speed and load.
//! - [`window`]: the after-hours window (`clump.window=20:00-07:00`).

pub mod balancer;
pub mod policy;
pub mod rate;
pub mod window;

pub use balancer::{Balancer, Decision, Here, Job, Move, Node, Why};
pub use policy::Policy;
pub use window::{Window, WindowState};
