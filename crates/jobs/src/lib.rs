//! Clump jobs on one node (issue 6, first slice): the mechanism that migration builds on.
//!
//! - [`spawn`]: a job's reaper started as PID 1 of new PID, IPC and time namespaces, in a new
//!   session without a controlling tty, as the submitting user, in its own cgroup, with stdio
//!   on pipes the runtime holds.
//! - [`reaper`]: that PID 1 (the runtime's binary run again with a hidden argument).
//! - [`table`] and [`buffer`]: the job table and the bounded, ordered output (sans-I/O).
//! - [`runtime`]: the thread that relays the pipes and reaps, and the calls the local API makes.
//! - [`checkpoint`] and `migration`: a job frozen and dumped with CRIU, restored elsewhere, and
//!   at home, a job that runs on another node (its output arrives, signals and input go there).

pub mod buffer;
pub mod cgroup;
pub mod checkpoint;
mod migration;
pub mod pin;
pub mod precopy;
pub mod reaper;
pub mod runtime;
pub mod signals;
pub mod spawn;
pub mod stat;
pub mod table;
pub mod workdir;

pub use migration::{Control, Frozen, Moving, Route};
pub use runtime::{Attachment, Config, JobError, Next, Runtime};
