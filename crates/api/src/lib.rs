//! The node map and local API types (see ARCHITECTURE.md, "Files" and "Local API"), shared by
//! `clumpd`, the `clump` command and the screen: `nodes.json` ([`NodeMap`]), the `mosix.map`
//! format ([`mosix_map`]), the messages and line framing of `/run/clump/clumpd.sock`
//! ([`Request`], [`Reply`], [`read_line`], [`write_line`]), a blocking [`Client`], and the text
//! people read ([`table`]).

pub mod client;
pub mod error;
pub mod jobs;
pub mod map;
pub mod mosix_map;
pub mod protocol;
pub mod table;

pub use client::{socket_path, Client, JobStream, StreamWriter, Watch, SOCKET, SOCKET_ENV, TIMEOUT};
pub use error::ApiError;
pub use jobs::{
    ExitStatus, JobInfo, JobState, Migrated, Output, Place, Started, Stream, StreamInput, StreamOutput,
};
pub use map::{Conflict, Dropped, Foreign, MapState, NodeEntry, NodeMap, NodeState, MAP_VERSION, NODES_FILE};
pub use protocol::{
    read_line, read_line_max, write_line, Event, EventKind, NodeChange, NodeControl, Reply, Request, Speed,
    Stats, StreamsRefused, Versioned, API_VERSION, MAX_LINE, MAX_REPLY_LINE,
};
