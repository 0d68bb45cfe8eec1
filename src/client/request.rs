//! Requests in flight and the answers the node gives them.

use std::time::Instant;

use super::{Appended, ClientError};
use crate::log::Record;
use crate::wire::{ErrorCode, Message, RequestId};

#[derive(Clone, Copy, Debug)]
pub(super) enum Op {
    Append { count: u32 },
    Read,
    Status,
}

impl Op {
    pub(super) fn name(self) -> &'static str {
        match self {
            Op::Append { .. } => "append",
            Op::Read => "read",
            Op::Status => "status",
        }
    }
}

/// A request not yet answered, with its encoded frame for a resend.
pub(super) struct Pending {
    pub(super) op: Op,
    pub(super) frame: Vec<u8>,
    pub(super) redirects: u32,
    /// When the request was submitted: redirects are followed until its timeout.
    pub(super) submitted: Instant,
}

pub(super) struct InFlight {
    pub(super) pending: Pending,
    pub(super) deadline: Instant,
}

/// A successful outcome.
pub(super) enum Reply {
    Appended(Appended),
    Records {
        commit_lsn: u64,
        records: Vec<Record>,
    },
    Status(serde_json::Value),
}

/// A reply turned into owned data, so the request table can change while the
/// decoder's buffer is reused.
pub(super) enum Answer {
    Reply(Reply),
    InDoubt {
        first_lsn: u64,
        count: u32,
        reason: String,
    },
    NotPrimary {
        epoch: u64,
        primary: Option<String>,
    },
    Refused {
        code: ErrorCode,
        message: String,
    },
    BadStatus(String),
}

impl Answer {
    pub(super) fn from_message(m: Message<'_>) -> Result<Answer, String> {
        Ok(match m {
            Message::Appended { first_lsn, count } => {
                Answer::Reply(Reply::Appended(Appended { first_lsn, count }))
            }
            Message::InDoubt {
                first_lsn,
                count,
                reason,
            } => Answer::InDoubt {
                first_lsn,
                count,
                reason: reason.to_owned(),
            },
            Message::NotPrimary { epoch, primary } => Answer::NotPrimary {
                epoch,
                primary: primary.map(str::to_owned),
            },
            Message::Records {
                commit_lsn,
                records,
            } => Answer::Reply(Reply::Records {
                commit_lsn,
                records: records.iter().map(Record::from).collect(),
            }),
            Message::StatusReply { json } => match serde_json::from_str(json) {
                Ok(v) => Answer::Reply(Reply::Status(v)),
                Err(e) => Answer::BadStatus(format!("the status reply is not JSON: {e}")),
            },
            Message::Error { code, message } => Answer::Refused {
                code,
                message: message.to_owned(),
            },
            other => return Err(format!("a {} message on a client connection", other.kind())),
        })
    }
}

pub(super) fn appended(id: RequestId, reply: Reply) -> Result<Appended, ClientError> {
    match reply {
        Reply::Appended(a) => Ok(a),
        _ => Err(ClientError::UnknownRequest { id }),
    }
}
