//! What the driver hands its host: work only the host can do ([`Output::StoreEpoch`],
//! answers and requests for the controller), and [`Note`]s of what happened.
//!
//! Notes are the driver's log lines and its account of itself. The node logs the ones
//! that [`Note::logged`] marks; the simulator's checker reads every one (who took the
//! primary role in which epoch, which acks the commit rule counted, which records a
//! member accepted), so that it judges the driver by what the driver says it did.

use std::fmt;

use crate::control::Request;
use crate::replication::{Event, NodeId};
use crate::transport::LinkId;
use crate::transport::rdma::setup::Chosen;

/// Work for the host, and notes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Store `epoch` durably beside the log (the EPOCH file), then call
    /// [`StreamDriver::on_epoch_stored`](super::StreamDriver::on_epoch_stored) (or
    /// [`on_epoch_store_failed`](super::StreamDriver::on_epoch_store_failed)). At most
    /// one store is asked for at a time, so stores never overtake each other.
    StoreEpoch(u64),
    /// Answer the controller's fence of `epoch` (asked by `reply_to`): this node's
    /// durable log ends with (`last_epoch`, `last_lsn`), and it refuses older epochs.
    Fenced {
        reply_to: NodeId,
        epoch: u64,
        last_epoch: u64,
        last_lsn: u64,
    },
    /// A request for the controller (a member's removal or restore).
    Request(Request),
    Note(Note),
}

/// Something the driver did or decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// The driver started in a role (the process started).
    Started {
        primary: bool,
        epoch: u64,
        last_lsn: u64,
        sync_set: Vec<NodeId>,
    },
    /// A committed configuration made this node the primary of `epoch`.
    Promoted {
        epoch: u64,
        from_lsn: u64,
        sync_set: Vec<NodeId>,
    },
    /// The primary role of `epoch` ended here; waiting requests end in doubt.
    StoppedPrimary { epoch: u64 },
    /// A fence of `epoch` deposed the primary of `old`.
    FencedOut { epoch: u64, old: u64 },
    /// A member in `epoch` showed that the controller is replacing the primary of
    /// `old`: it stepped down.
    SteppedDown { epoch: u64, old: u64 },
    /// A committed configuration names `primary` for `epoch`: this primary follows.
    Follows { primary: NodeId, epoch: u64 },
    /// The epoch of a fence is stored: this node refuses older epochs from now on.
    Fenced { epoch: u64 },
    /// The epoch could not be stored, so the fence or the promotion is not made.
    EpochNotStored { epoch: u64, why: String },
    /// The fence of `epoch` is not answered: where the log ends cannot be read.
    FenceUnanswered { epoch: u64, why: String },
    /// The primary of `epoch` applied a committed change of its members.
    MembersChanged {
        epoch: u64,
        sync_set: Vec<NodeId>,
        degraded: bool,
    },
    /// Answered the greeting of the primary of `epoch`: older epochs are refused now.
    Welcomed { epoch: u64 },
    /// Appended `first..=last` sent by the primary of `epoch`.
    Accepted { epoch: u64, first: u64, last: u64 },
    /// The primary of `epoch` counted `member`'s log as far as (`received`, `durable`)
    /// for the commit rule (its greeting or an ack).
    Reported {
        epoch: u64,
        member: NodeId,
        received: u64,
        durable: u64,
    },
    /// The primary of `epoch` completed a request as committed.
    Completed { epoch: u64, first: u64, last: u64 },
    /// An event of the primary core of `epoch`.
    Sync { epoch: u64, event: Event },
    /// `member` refused records: its log ends at `last_lsn`.
    MemberRefused {
        member: NodeId,
        reason: String,
        last_lsn: u64,
    },
    /// `member` holds `from..=last_lsn`, which this primary does not: it is asked to
    /// truncate after `after_lsn`.
    MemberTruncates {
        member: NodeId,
        last_lsn: u64,
        after_lsn: u64,
    },
    /// `member` ends before this primary's first retained record: it is asked to start
    /// over after `base_lsn`.
    MemberRebases {
        member: NodeId,
        last_lsn: u64,
        base_lsn: u64,
    },
    /// The log is cut after `after` as the primary asked.
    Truncated { after: u64 },
    /// A truncation asked in `epoch` would cut records of `last_epoch`: the log is
    /// kept up to `last`.
    StaleTruncation {
        epoch: u64,
        last_epoch: u64,
        last: u64,
    },
    /// The log starts over after (`base_lsn`, `base_epoch`), as the primary of `epoch`
    /// asked (noted before the reset, which a crash may cut short).
    Rebasing {
        epoch: u64,
        base_lsn: u64,
        base_epoch: u64,
    },
    /// The log started over after `base`: `from..=base` is not held by the primary.
    StartedOver { from: u64, base: u64 },
    /// Retention deleted `from..to`.
    Retained { from: u64, to: u64 },
    /// A switchover to `to` began: no more appends here.
    SwitchingOver { to: NodeId },
    /// A switchover to `to` did not complete in time: this primary serves again.
    SwitchoverAbandoned { to: NodeId },
    /// The log failed: the stream stops.
    Failed { why: String },
    /// This member declined its primary's ring: the link stays on TCP.
    RingDeclined { why: String },
    /// This member read `RingSwitch` on `link`: its primary's frames come through the
    /// ring from now on.
    RingSwitched { link: LinkId },
    /// The link to `member` runs on its ring (this primary sends `RingSwitch`).
    RingRuns { member: NodeId, transport: Chosen },
    /// `member`'s answer set up no ring (it declined, or connecting failed): the link
    /// stays on TCP.
    RingNotTaken { member: NodeId, why: String },
    /// This primary could not offer `member` a ring: the link stays on TCP.
    NoRing { member: NodeId, why: String },
    /// The ring of the link to `member` (or, without one, from the primary) failed:
    /// the link closes and is greeted again on TCP.
    RingFailed { member: Option<NodeId>, why: String },
}

impl Note {
    /// Whether the node writes this note to its log (the others are for the
    /// simulator's checker and trace).
    pub fn logged(&self) -> bool {
        match self {
            Note::Sync { event, .. } => !matches!(event, Event::RestoreWanted { .. }),
            Note::Promoted { .. }
            | Note::FencedOut { .. }
            | Note::SteppedDown { .. }
            | Note::Follows { .. }
            | Note::EpochNotStored { .. }
            | Note::FenceUnanswered { .. }
            | Note::MemberRefused { .. }
            | Note::MemberTruncates { .. }
            | Note::MemberRebases { .. }
            | Note::Truncated { .. }
            | Note::StaleTruncation { .. }
            | Note::StartedOver { .. }
            | Note::Retained { .. }
            | Note::SwitchingOver { .. }
            | Note::SwitchoverAbandoned { .. }
            | Note::Failed { .. }
            | Note::RingDeclined { .. }
            | Note::RingRuns { .. }
            | Note::RingNotTaken { .. }
            | Note::NoRing { .. }
            | Note::RingFailed { .. } => true,
            Note::Started { .. }
            | Note::StoppedPrimary { .. }
            | Note::Fenced { .. }
            | Note::MembersChanged { .. }
            | Note::Welcomed { .. }
            | Note::Accepted { .. }
            | Note::Reported { .. }
            | Note::Completed { .. }
            | Note::Rebasing { .. }
            | Note::RingSwitched { .. } => false,
        }
    }

    /// Whether the node logs this note as a warning: a link that could run on a ring
    /// runs on TCP.
    pub fn warns(&self) -> bool {
        matches!(
            self,
            Note::RingDeclined { .. }
                | Note::RingNotTaken { .. }
                | Note::NoRing { .. }
                | Note::RingFailed { .. }
        )
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::Started {
                primary,
                epoch,
                last_lsn,
                ..
            } => {
                let role = if *primary { "primary" } else { "secondary" };
                write!(f, "up as {role} of epoch {epoch} at lsn {last_lsn}")
            }
            Note::Promoted {
                epoch, from_lsn, ..
            } => write!(f, "primary of epoch {epoch} from lsn {from_lsn}"),
            Note::StoppedPrimary { epoch } => write!(f, "the primary role of epoch {epoch} ends"),
            Note::FencedOut { epoch, old } => write!(
                f,
                "fenced by epoch {epoch}: no longer the primary of epoch {old}"
            ),
            Note::SteppedDown { epoch, old } => write!(
                f,
                "a member is in epoch {epoch}: stepped down as the primary of epoch {old}"
            ),
            Note::Follows { primary, epoch } => write!(
                f,
                "node {primary} is the primary of epoch {epoch}: this node follows"
            ),
            Note::Fenced { epoch } => write!(f, "fenced: refuses epochs older than {epoch}"),
            Note::EpochNotStored { epoch, why } => {
                write!(f, "cannot store epoch {epoch}: {why}; no promise made")
            }
            Note::FenceUnanswered { epoch, why } => {
                write!(f, "cannot answer the fence of epoch {epoch}: {why}")
            }
            Note::MembersChanged {
                epoch,
                sync_set,
                degraded,
            } => write!(
                f,
                "members of epoch {epoch}: sync set {sync_set:?}, degraded {degraded}"
            ),
            Note::Welcomed { epoch } => write!(f, "answered the primary of epoch {epoch}"),
            Note::Accepted { epoch, first, last } => {
                write!(f, "accepted {first}..={last} of epoch {epoch}")
            }
            Note::Reported {
                member,
                received,
                durable,
                ..
            } => write!(
                f,
                "member {member} counted: received {received}, durable {durable}"
            ),
            Note::Completed { first, last, .. } => write!(f, "committed {first}..={last}"),
            Note::Sync {
                event: Event::RemovalWanted { member, .. },
                ..
            } => write!(
                f,
                "member {member} is stalled: asking the controller to move it to the learners"
            ),
            Note::Sync { event, .. } => write!(f, "sync event: {event:?}"),
            Note::MemberRefused {
                member,
                reason,
                last_lsn,
            } => write!(
                f,
                "member {member} refused records: {reason} (its log ends at {last_lsn})"
            ),
            Note::MemberTruncates {
                member,
                last_lsn,
                after_lsn,
            } => write!(
                f,
                "member {member} holds lsn {}..={last_lsn} that this primary does not: asking it to truncate after {after_lsn}",
                after_lsn + 1
            ),
            Note::MemberRebases {
                member,
                last_lsn,
                base_lsn,
            } => write!(
                f,
                "member {member} ends at lsn {last_lsn}, before this primary's first retained record {}: it starts over after {base_lsn}",
                base_lsn + 1
            ),
            Note::Truncated { after } => {
                write!(
                    f,
                    "truncated the log after lsn {after} as the primary asked"
                )
            }
            Note::StaleTruncation {
                epoch,
                last_epoch,
                last,
            } => write!(
                f,
                "a truncation asked in epoch {epoch} would cut records of epoch {last_epoch}: stale, the log is kept up to lsn {last}"
            ),
            Note::Rebasing {
                epoch,
                base_lsn,
                base_epoch,
            } => write!(
                f,
                "starting the log over after ({base_lsn}, epoch {base_epoch}) as the primary of epoch {epoch} asks"
            ),
            Note::StartedOver { from, base } => write!(
                f,
                "the primary no longer holds lsn {from}..={base}: the log starts over after lsn {base}"
            ),
            Note::Retained { from, to } => write!(f, "retention deleted lsn {from}..{to}"),
            Note::SwitchingOver { to } => {
                write!(f, "switching over to node {to}: no more appends here")
            }
            Note::SwitchoverAbandoned { to } => write!(
                f,
                "the switchover to node {to} did not complete: serving again"
            ),
            Note::Failed { why } => f.write_str(why),
            Note::RingDeclined { why } => write!(
                f,
                "rdma: declined the primary's ring ({why}); the link stays on tcp"
            ),
            Note::RingSwitched { link } => write!(f, "ring on link {link}"),
            Note::RingRuns { member, transport } => {
                write!(f, "link to member {member} runs on {}", transport.as_str())
            }
            Note::RingNotTaken { member, why } => {
                write!(f, "rdma: link to member {member} stays on tcp: {why}")
            }
            Note::NoRing { member, why } => write!(
                f,
                "rdma: no ring for member {member}: {why}; the link stays on tcp"
            ),
            Note::RingFailed { member, why } => {
                match member {
                    Some(m) => write!(f, "rdma link to member {m} failed")?,
                    None => write!(f, "rdma link to the primary failed")?,
                }
                write!(f, ": {why}; falling back to tcp")
            }
        }
    }
}
