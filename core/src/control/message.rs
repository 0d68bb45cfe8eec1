//! Messages between the nodes' control loops.
//!
//! Control traffic is small and rare next to the log: raft messages, a status every few
//! ticks, fences during a failover. Raft messages keep raft-rs's protobuf encoding; the
//! others are JSON, readable in a packet capture. The first byte says which.

use protobuf::Message as _;
use serde::{Deserialize, Serialize};

use crate::control::ControlError;
use crate::replication::NodeId;

/// What a node reports of one of its streams.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamStatus {
    pub stream: String,
    /// The newest epoch this node promised (answered a fence for, or serves in).
    pub epoch: u64,
    /// This node serves the stream as primary of `epoch`.
    pub primary: bool,
    /// Epoch of the last record of its log, and that record's LSN.
    pub last_epoch: u64,
    pub last_lsn: u64,
    pub durable_lsn: u64,
    pub commit_lsn: u64,
}

/// A node's periodic report to the controller's voters: how the controller knows who is
/// alive and where every log ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: NodeId,
    /// Identifies the process: a node that restarted reports a new incarnation.
    pub incarnation: u64,
    pub streams: Vec<StreamStatus>,
}

/// A change a node asks the controller's leader for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The primary of `epoch` wants a stalled member moved to the learners.
    Remove {
        stream: String,
        epoch: u64,
        version: u64,
        member: NodeId,
    },
    /// The primary of `epoch` wants a caught-up learner back in the sync set.
    Restore {
        stream: String,
        epoch: u64,
        version: u64,
        member: NodeId,
    },
    /// An operator wants `to` to become the primary of `stream` without losing
    /// anything (a switchover).
    Switchover { stream: String, to: NodeId },
    /// A node that proved it knows the cluster secret asks to join, reachable at
    /// `addr`.
    Join { node: NodeId, addr: String },
    /// A node that fenced the database primary of `from_term` and found the server
    /// beside `to` holding the stream's position (read from its lockstep primary of
    /// `epoch`) asks for it to be the database primary.
    DbPromote {
        stream: String,
        epoch: u64,
        from_term: u64,
        to: NodeId,
    },
}

/// A control message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ControlMsg {
    /// Encoded apart, in raft-rs's own encoding.
    #[serde(skip)]
    Raft(raft::eraftpb::Message),
    Status(NodeStatus),
    /// From the controller's leader: stop accepting records of epochs older than
    /// `epoch` (and stop serving as an older epoch's primary), then answer.
    Fence {
        stream: String,
        epoch: u64,
    },
    /// A node's answer to a fence: where its log ends.
    Fenced {
        stream: String,
        epoch: u64,
        node: NodeId,
        incarnation: u64,
        last_epoch: u64,
        last_lsn: u64,
    },
    Request(Request),
    /// From the primary being switched over, to the controller's leader: it admits no
    /// more appends, and `to` holds its whole log, up to (`last_epoch`, `last_lsn`).
    Drained {
        stream: String,
        epoch: u64,
        to: NodeId,
        last_lsn: u64,
    },
    /// From the controller's leader to the primary of `epoch`: stop admitting appends
    /// and say `Drained` once `to` holds everything.
    Drain {
        stream: String,
        epoch: u64,
        to: NodeId,
    },
}

pub(crate) const TAG_RAFT: u8 = 1;
const TAG_JSON: u8 = 2;

impl ControlMsg {
    pub fn encode(&self) -> Vec<u8> {
        if let ControlMsg::Raft(m) = self {
            let mut out = vec![TAG_RAFT];
            out.extend(m.write_to_bytes().expect("raft messages encode"));
            return out;
        }
        let mut out = vec![TAG_JSON];
        serde_json::to_writer(&mut out, self).expect("control messages encode");
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<ControlMsg, ControlError> {
        let bad = |reason: &dyn std::fmt::Display| ControlError::decode("control message", reason);
        match bytes.split_first() {
            Some((&TAG_RAFT, rest)) => raft::eraftpb::Message::parse_from_bytes(rest)
                .map(ControlMsg::Raft)
                .map_err(|e| ControlError::decode("raft message", e)),
            Some((&TAG_JSON, rest)) => serde_json::from_slice(rest).map_err(|e| bad(&e)),
            Some((tag, _)) => Err(bad(&format!("unknown tag {tag}"))),
            None => Err(bad(&"empty")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_junk_is_refused() {
        let mut raft = raft::eraftpb::Message::default();
        raft.set_to(2);
        raft.set_term(7);
        let msgs = [
            ControlMsg::Raft(raft),
            ControlMsg::Fence {
                stream: "s".into(),
                epoch: 4,
            },
            ControlMsg::Status(NodeStatus {
                node: 3,
                incarnation: 99,
                streams: vec![StreamStatus {
                    stream: "s".into(),
                    epoch: 4,
                    primary: false,
                    last_epoch: 3,
                    last_lsn: 10,
                    durable_lsn: 10,
                    commit_lsn: 9,
                }],
            }),
            ControlMsg::Request(Request::Switchover {
                stream: "s".into(),
                to: 2,
            }),
        ];
        for m in msgs {
            assert_eq!(ControlMsg::decode(&m.encode()).unwrap(), m);
        }
        assert!(
            ControlMsg::decode(&[])
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        assert!(
            ControlMsg::decode(&[9, 1])
                .unwrap_err()
                .to_string()
                .contains("tag 9")
        );
        assert!(
            ControlMsg::decode(&[2, b'{'])
                .unwrap_err()
                .to_string()
                .contains("bad control")
        );
    }
}
