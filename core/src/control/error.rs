//! The errors of the control layer: bytes that do not decode, a controller that cannot
//! start, and the refusal of a committed command whose precondition no longer holds.

use crate::types::NodeId;

/// Why the controller could not read something or start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// Bytes that are not a `what` (a controller command, a cluster configuration, a
    /// control message, the controller's persisted state).
    #[error("bad {what}: {reason}")]
    Decode { what: &'static str, reason: String },
    /// The node is neither a voter of the controller nor a member of the cluster.
    #[error("node {node} is neither a voter of the controller ({voters:?}) nor a member")]
    NotInCluster { node: NodeId, voters: Vec<NodeId> },
    /// raft-rs refused the controller's `what` (its settings, its persisted state).
    #[error("controller {what}: {reason}")]
    Raft { what: &'static str, reason: String },
}

impl ControlError {
    pub(crate) fn decode(what: &'static str, reason: impl ToString) -> ControlError {
        ControlError::Decode {
            what,
            reason: reason.to_string(),
        }
    }
}

/// Why a committed command changed nothing: its precondition no longer holds (the
/// configuration moved on since it was decided). Every node refuses it alike.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("unknown stream {0:?}")]
    UnknownStream(String),
    #[error("stale promotion of {stream}: decided in epoch {from_epoch}, now {now}")]
    StalePromotion {
        stream: String,
        from_epoch: u64,
        now: u64,
    },
    /// A removal or restore decided on roles that changed since.
    #[error(
        "{what} {stream} asked in epoch {epoch} version {version}, now {now_epoch} version {now_version}"
    )]
    Stale {
        what: &'static str,
        stream: String,
        epoch: u64,
        version: u64,
        now_epoch: u64,
        now_version: u64,
    },
    #[error("node {member} is not in the sync set of {stream}")]
    NotInSyncSet { member: NodeId, stream: String },
    #[error(
        "removing node {member} would leave {left} sync members of {stream}, below min_sync {min_sync} (on_insufficient = block)"
    )]
    BelowMinSync {
        member: NodeId,
        left: usize,
        stream: String,
        min_sync: usize,
    },
    #[error("node {member} is not a learner of {stream}")]
    NotALearner { member: NodeId, stream: String },
    #[error("node {node} is already a member at {known}, not {addr}")]
    AlreadyMember {
        node: NodeId,
        known: String,
        addr: String,
    },
    #[error("stream {0:?} has no database roles (no front with members)")]
    NoDatabase(String),
    #[error("stale promotion of the database of {stream}: decided in term {from_term}, now {now}")]
    StaleDbPromotion {
        stream: String,
        from_term: u64,
        now: u64,
    },
    #[error("node {node} has no database server of {stream}")]
    NotADbMember { node: NodeId, stream: String },
}
