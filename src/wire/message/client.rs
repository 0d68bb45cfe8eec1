//! The client plane: a client's hello, appends, reads and status requests, and the
//! node's answers (layouts in [`super`]).

use super::{Message, addr, lsn_range, stream};
use crate::constants::{STATUS_JSON_BYTES_MAX, WIRE_TEXT_BYTES_MAX};
use crate::wire::WireError;
use crate::wire::codes::{ErrorCode, Mode, Role};
use crate::wire::cursor::{Reader, Writer};
use crate::wire::frame::Kind;
use crate::wire::records::{Payloads, Records};

/// Writes the body of `m`, a message of this plane.
pub(super) fn encode(m: &Message<'_>, w: &mut Writer<'_>) -> Result<(), WireError> {
    match *m {
        Message::ClientHello { stream } => w.str16(stream, "stream"),
        Message::Append {
            mode,
            timeout_ms,
            payloads,
        } => {
            w.u8(mode.map_or(0, Mode::code))?;
            w.u32(timeout_ms)?;
            payloads.encode(w)
        }
        Message::Read {
            from_lsn,
            records_max,
            bytes_max,
        } => {
            w.u64(from_lsn)?;
            w.u32(records_max)?;
            w.u32(bytes_max)
        }
        Message::Status => Ok(()),
        Message::Welcome {
            node_id,
            role,
            epoch,
            primary,
        } => {
            w.u32(node_id)?;
            w.u8(role.code())?;
            w.u64(epoch)?;
            w.addr(primary, "primary")
        }
        Message::Appended { first_lsn, count } => {
            w.u64(first_lsn)?;
            w.u32(count)
        }
        Message::InDoubt {
            first_lsn,
            count,
            reason,
        } => {
            w.u64(first_lsn)?;
            w.u32(count)?;
            w.str16(reason, "reason")
        }
        Message::NotPrimary { epoch, primary } => {
            w.u64(epoch)?;
            w.addr(primary, "primary")
        }
        Message::Records {
            commit_lsn,
            records,
        } => {
            w.u64(commit_lsn)?;
            records.encode(w)
        }
        Message::StatusReply { json } => w.str32(json, "json"),
        Message::Error { code, message } => {
            w.u16(code.code())?;
            w.str16(message, "message")
        }
        _ => unreachable!("{} is not of this plane", m.kind()),
    }
}

/// Reads the body of a message of kind `kind`, of this plane.
pub(super) fn decode<'a>(kind: Kind, r: &mut Reader<'a>) -> Result<Message<'a>, WireError> {
    Ok(match kind {
        Kind::ClientHello => Message::ClientHello { stream: stream(r)? },
        Kind::Append => {
            let mode = match r.u8("mode")? {
                0 => None,
                code => Some(
                    Mode::from_code(code)
                        .ok_or_else(|| r.malformed(format!("unknown mode code {code}")))?,
                ),
            };
            Message::Append {
                mode,
                timeout_ms: r.u32("timeout_ms")?,
                payloads: Payloads::decode(r)?,
            }
        }
        Kind::Read => {
            let from_lsn = r.lsn("from_lsn")?;
            let records_max = r.u32("records_max")?;
            let bytes_max = r.u32("bytes_max")?;
            if from_lsn == 0 {
                return Err(r.malformed("from_lsn is 0; LSNs start at 1"));
            }
            if records_max == 0 {
                return Err(r.malformed("records_max is 0"));
            }
            Message::Read {
                from_lsn,
                records_max,
                bytes_max,
            }
        }
        Kind::Status => Message::Status,
        Kind::Welcome => {
            let node_id = r.u32("node_id")?;
            let code = r.u8("role")?;
            let role = Role::from_code(code)
                .ok_or_else(|| r.malformed(format!("unknown role code {code}")))?;
            Message::Welcome {
                node_id,
                role,
                epoch: r.epoch("epoch")?,
                primary: addr(r, "primary")?,
            }
        }
        Kind::Appended => {
            let (first_lsn, count) = lsn_range(r)?;
            Message::Appended { first_lsn, count }
        }
        Kind::InDoubt => {
            let (first_lsn, count) = lsn_range(r)?;
            Message::InDoubt {
                first_lsn,
                count,
                reason: r.str16("reason", WIRE_TEXT_BYTES_MAX)?,
            }
        }
        Kind::NotPrimary => Message::NotPrimary {
            epoch: r.epoch("epoch")?,
            primary: addr(r, "primary")?,
        },
        Kind::Records => {
            let commit_lsn = r.lsn("commit_lsn")?;
            let (records, span) = Records::decode(r)?;
            if let Some(s) = span
                && s.last_lsn > commit_lsn
            {
                return Err(r.malformed(format!(
                    "record lsn {} is beyond the commit lsn {commit_lsn}",
                    s.last_lsn
                )));
            }
            Message::Records {
                commit_lsn,
                records,
            }
        }
        Kind::StatusReply => Message::StatusReply {
            json: r.str32("json", STATUS_JSON_BYTES_MAX)?,
        },
        Kind::Error => {
            let code = r.u16("code")?;
            let code = ErrorCode::from_code(code)
                .ok_or_else(|| r.malformed(format!("unknown error code {code}")))?;
            Message::Error {
                code,
                message: r.str16("message", WIRE_TEXT_BYTES_MAX)?,
            }
        }
        _ => unreachable!("{kind} is not of this plane"),
    })
}
