//! The replication plane: a primary's hello, records, heartbeats and requests to cut
//! or start over, and a member's greeting, acks and refusals (layouts in [`super`]).

use super::{Message, rebase_broken, stream};
use crate::constants::{RING_SETUP_BYTES_MAX, WIRE_TEXT_BYTES_MAX};
use crate::wire::WireError;
use crate::wire::cursor::{Reader, Writer};
use crate::wire::frame::Kind;
use crate::wire::records::Records;

/// Writes the body of `m`, a message of this plane.
pub(super) fn encode(m: &Message<'_>, w: &mut Writer<'_>) -> Result<(), WireError> {
    match *m {
        Message::PeerHello {
            stream,
            node_id,
            epoch,
        } => {
            w.u32(node_id)?;
            w.u64(epoch)?;
            w.str16(stream, "stream")
        }
        Message::Replicate {
            epoch,
            prev_lsn,
            prev_epoch,
            commit_lsn,
            records,
        } => {
            w.u64(epoch)?;
            w.u64(prev_lsn)?;
            w.u64(prev_epoch)?;
            w.u64(commit_lsn)?;
            records.encode(w)
        }
        Message::Heartbeat { epoch, commit_lsn } => {
            w.u64(epoch)?;
            w.u64(commit_lsn)
        }
        Message::Truncate {
            epoch,
            after_lsn,
            after_epoch,
        } => {
            if after_epoch > epoch {
                return Err(w.malformed(format!(
                    "after_epoch {after_epoch} is newer than the primary's epoch {epoch}"
                )));
            }
            w.u64(epoch)?;
            w.u64(after_lsn)?;
            w.u64(after_epoch)
        }
        Message::Rebase {
            epoch,
            base_lsn,
            base_epoch,
        } => {
            if let Some(m) = rebase_broken(base_lsn, base_epoch, epoch) {
                return Err(w.malformed(m));
            }
            w.u64(epoch)?;
            w.u64(base_lsn)?;
            w.u64(base_epoch)
        }
        Message::PeerWelcome {
            node_id,
            epoch,
            last_lsn,
            last_epoch,
            durable_lsn,
        } => {
            w.u32(node_id)?;
            w.u64(epoch)?;
            w.u64(last_lsn)?;
            w.u64(last_epoch)?;
            w.u64(durable_lsn)
        }
        Message::Ack {
            epoch,
            received_lsn,
            durable_lsn,
        } => {
            w.u64(epoch)?;
            w.u64(received_lsn)?;
            w.u64(durable_lsn)
        }
        Message::Refuse {
            epoch,
            last_lsn,
            reason,
        } => {
            w.u64(epoch)?;
            w.u64(last_lsn)?;
            w.str16(reason, "reason")
        }
        Message::RingOffer { setup } | Message::RingAccept { setup } => {
            let len = u16::try_from(setup.len())
                .ok()
                .filter(|&n| usize::from(n) <= RING_SETUP_BYTES_MAX)
                .ok_or_else(|| w.malformed(format!("setup of {} bytes", setup.len())))?;
            w.u16(len)?;
            w.bytes(setup)
        }
        Message::RingSwitch => Ok(()),
        _ => unreachable!("{} is not of this plane", m.kind()),
    }
}

/// Reads the body of a message of kind `kind`, of this plane.
pub(super) fn decode<'a>(kind: Kind, r: &mut Reader<'a>) -> Result<Message<'a>, WireError> {
    Ok(match kind {
        Kind::PeerHello => {
            let node_id = r.u32("node_id")?;
            let epoch = r.epoch("epoch")?;
            Message::PeerHello {
                stream: stream(r)?,
                node_id,
                epoch,
            }
        }
        Kind::Replicate => {
            let epoch = r.epoch("epoch")?;
            let prev_lsn = r.lsn("prev_lsn")?;
            let prev_epoch = r.epoch("prev_epoch")?;
            let commit_lsn = r.lsn("commit_lsn")?;
            let (records, span) = Records::decode(r)?;
            let Some(s) = span else {
                return Err(r.malformed("no records; an empty Replicate is a Heartbeat"));
            };
            if prev_lsn.checked_add(1) != Some(s.first_lsn) {
                return Err(r.malformed(format!(
                    "the first record has lsn {}, expected prev_lsn + 1 = {}",
                    s.first_lsn,
                    prev_lsn.wrapping_add(1)
                )));
            }
            if s.first_epoch < prev_epoch {
                return Err(r.malformed(format!(
                    "the first record has epoch {}, older than prev_epoch {prev_epoch}",
                    s.first_epoch
                )));
            }
            if s.last_epoch > epoch {
                return Err(r.malformed(format!(
                    "record lsn {} has epoch {}, newer than the frame's epoch {epoch}",
                    s.last_lsn, s.last_epoch
                )));
            }
            Message::Replicate {
                epoch,
                prev_lsn,
                prev_epoch,
                commit_lsn,
                records,
            }
        }
        Kind::Heartbeat => Message::Heartbeat {
            epoch: r.epoch("epoch")?,
            commit_lsn: r.lsn("commit_lsn")?,
        },
        Kind::Truncate => {
            let epoch = r.epoch("epoch")?;
            let after_lsn = r.lsn("after_lsn")?;
            let after_epoch = r.epoch("after_epoch")?;
            if after_epoch > epoch {
                return Err(r.malformed(format!(
                    "after_epoch {after_epoch} is newer than the primary's epoch {epoch}"
                )));
            }
            Message::Truncate {
                epoch,
                after_lsn,
                after_epoch,
            }
        }
        Kind::Rebase => {
            let epoch = r.epoch("epoch")?;
            let base_lsn = r.lsn("base_lsn")?;
            let base_epoch = r.epoch("base_epoch")?;
            if let Some(m) = rebase_broken(base_lsn, base_epoch, epoch) {
                return Err(r.malformed(m));
            }
            Message::Rebase {
                epoch,
                base_lsn,
                base_epoch,
            }
        }
        Kind::PeerWelcome => {
            let node_id = r.u32("node_id")?;
            let epoch = r.epoch("epoch")?;
            let last_lsn = r.lsn("last_lsn")?;
            let last_epoch = r.epoch("last_epoch")?;
            let durable_lsn = r.lsn("durable_lsn")?;
            if durable_lsn > last_lsn {
                return Err(r.malformed(format!(
                    "durable_lsn {durable_lsn} is beyond last_lsn {last_lsn}"
                )));
            }
            Message::PeerWelcome {
                node_id,
                epoch,
                last_lsn,
                last_epoch,
                durable_lsn,
            }
        }
        Kind::Ack => {
            let epoch = r.epoch("epoch")?;
            let received_lsn = r.lsn("received_lsn")?;
            let durable_lsn = r.lsn("durable_lsn")?;
            if durable_lsn > received_lsn {
                return Err(r.malformed(format!(
                    "durable_lsn {durable_lsn} is beyond received_lsn {received_lsn}"
                )));
            }
            Message::Ack {
                epoch,
                received_lsn,
                durable_lsn,
            }
        }
        Kind::Refuse => Message::Refuse {
            epoch: r.epoch("epoch")?,
            last_lsn: r.lsn("last_lsn")?,
            reason: r.str16("reason", WIRE_TEXT_BYTES_MAX)?,
        },
        Kind::RingOffer | Kind::RingAccept => {
            let len = usize::from(r.u16("setup")?);
            if len > RING_SETUP_BYTES_MAX {
                return Err(r.malformed(format!(
                    "setup of {len} bytes exceeds {RING_SETUP_BYTES_MAX}"
                )));
            }
            let setup = r.bytes(len, "setup")?;
            if kind == Kind::RingOffer {
                Message::RingOffer { setup }
            } else {
                Message::RingAccept { setup }
            }
        }
        Kind::RingSwitch => Message::RingSwitch,
        _ => unreachable!("{kind} is not of this plane"),
    })
}
