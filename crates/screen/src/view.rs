//! What the screen shows, gathered by the service from the local API and the node itself.

use clump_api::{Event, NodeMap, Stats};

/// Everything one frame shows.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// The cluster's name (the header's title).
    pub cluster: String,
    /// The node map; `None` until `clumpd` answers.
    pub map: Option<NodeMap>,
    pub stats: Option<Stats>,
    /// Recent events, newest last; the footer shows the last that fit.
    pub events: Vec<Event>,
    /// This node's address, e.g. "10.0.0.12/24", or what stands for it ("no address").
    pub address: String,
    /// This node's lease state, e.g. "bound", "renewing", "none".
    pub lease: String,
    /// How long this node has been up.
    pub uptime_ms: u64,
    /// Jobs running in the cluster; `None`: summed from the node map.
    pub jobs: Option<u32>,
    /// Migrations in the last minute; `None`: not known.
    pub migrations_per_min: Option<u32>,
    /// Now (unix ms): event times are shown as HH:MM:SS UTC.
    pub now_ms: u64,
    /// A line people must read, shown highlighted ("Press Esc again within 5 s to power off this node").
    pub notice: Option<String>,
    pub phase: Phase,
}

/// Whether the runtime is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Before the runtime is up: how far the boot got.
    Boot(Vec<BootStage>),
    /// The cluster screen: header, node tiles, events.
    Cluster,
}

/// One step of bringing the node up ("hardware", "NIC", "lease", "probe" ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootStage {
    pub name: String,
    pub status: StageStatus,
    /// What it found or is waiting for, e.g. "eth0 52:54:00:12:34:56" or "10.0.0.12/24 from 10.0.0.1".
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StageStatus {
    Pending,
    Running,
    Done,
    Failed,
}

impl StageStatus {
    /// The word on the stage's badge.
    pub fn word(self) -> &'static str {
        match self {
            StageStatus::Pending => "PENDING",
            StageStatus::Running => "RUNNING",
            StageStatus::Done => "DONE",
            StageStatus::Failed => "FAILED",
        }
    }
}
