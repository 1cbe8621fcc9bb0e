//! Sans-I/O membership core of a Clump node (see ARCHITECTURE.md, "Cluster protocol").
//!
//! [`Cluster`] owns foca (SWIM membership), the seal (cluster-key authentication), this node's
//! [`NodeRecord`] and the records it holds about others. The daemon feeds it datagrams and time
//! and sends what it returns; the simulation in `bench/` does the same over a simulated network.

pub mod core;
pub mod id;
pub mod record;
pub mod sim;
pub mod suspicion;
pub mod wire;

pub use crate::core::{
    broadcast_of, Cluster, Config, ConflictKind, Counters, Event, Footprint, Foreign, MemberView, ViewState,
};
pub use foca::State as SwimState;
pub use id::{Member, NodeId};
pub use record::{NodeRecord, RecordTable};
