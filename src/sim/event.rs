//! What a simulated node reports about itself: the checker's account of the run.
//!
//! Every event comes from a note of the node's stream driver (`crate::stream::Note`),
//! or from the process (a crash ends a primary role; retention's deletions are read off
//! the disk): the checker learns who is primary in which epoch, and what the commit rule
//! counted, from what the nodes did, not from the harness.

use crate::replication::{Event, NodeId, StreamSettings};
use crate::sim::Rec;

/// What a node reports about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    BecamePrimary {
        node: NodeId,
        epoch: u64,
        settings: StreamSettings,
        sync_set: Vec<NodeId>,
    },
    BecameSecondary {
        node: NodeId,
        epoch: u64,
    },
    /// The primary role of `epoch` ended here (crash, failed log or new configuration).
    StoppedPrimary {
        node: NodeId,
        epoch: u64,
    },
    /// Answered a primary of `epoch`: from now on older epochs must be refused.
    Welcomed {
        node: NodeId,
        epoch: u64,
    },
    /// The primary of `epoch` applied a committed change of its sync set.
    MembersChanged {
        node: NodeId,
        epoch: u64,
        sync_set: Vec<NodeId>,
        degraded: bool,
    },
    /// Answered the controller's fence of `epoch` (durably): from now on older epochs
    /// must be refused.
    Fenced {
        node: NodeId,
        epoch: u64,
    },
    /// Appended records `first..=last` sent by a primary of `epoch`.
    Accepted {
        node: NodeId,
        epoch: u64,
        first: u64,
        last: u64,
    },
    Truncated {
        node: NodeId,
        after: u64,
    },
    /// Retention deleted `records`, LSN `first..`, from the log; as primary of `epoch`
    /// (`None`: as secondary).
    Retained {
        node: NodeId,
        primary_epoch: Option<u64>,
        first: u64,
        records: Vec<Rec>,
    },
    /// The log started over after (`base_lsn`, `base_epoch`), as the primary of `epoch`
    /// asked (a crash may have stopped the reset midway: the disk tells).
    Rebased {
        node: NodeId,
        epoch: u64,
        base_lsn: u64,
        base_epoch: u64,
    },
    /// The primary of `epoch` was told where `member`'s log stands (its handshake or
    /// an ack), and hands it to its core: the commit rule counts a member's records
    /// only from such a report.
    Reported {
        node: NodeId,
        epoch: u64,
        member: NodeId,
        received: u64,
        durable: u64,
    },
    /// The primary of `epoch` completed a request as committed, `first..=last` (its
    /// reply follows): told here, in the order of its other events.
    Completed {
        node: NodeId,
        epoch: u64,
        first: u64,
        last: u64,
    },
    /// An event of the primary core (sync-set changes, degrade, block).
    Core {
        node: NodeId,
        epoch: u64,
        event: Event,
    },
}
