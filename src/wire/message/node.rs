//! The plane between nodes' controllers: the control hello, its answer and messages, the
//! handshake that proves knowledge of the cluster secret, and joins (layouts in
//! [`super`]).

use super::{Message, addr, auth_bytes};
use crate::constants::CONTROL_MESSAGE_BYTES_MAX;
use crate::wire::WireError;
use crate::wire::cursor::{Reader, Writer};
use crate::wire::frame::Kind;

/// Writes the body of `m`, a message of this plane.
pub(super) fn encode(m: &Message<'_>, w: &mut Writer<'_>) -> Result<(), WireError> {
    match *m {
        Message::ControlHello {
            node_id,
            incarnation,
            addr,
        } => {
            w.u32(node_id)?;
            w.u64(incarnation)?;
            w.str16(addr.unwrap_or(""), "addr")
        }
        Message::ControlWelcome {
            node_id,
            incarnation,
        } => {
            w.u32(node_id)?;
            w.u64(incarnation)
        }
        Message::Control { message } => {
            if message.is_empty() || message.len() > CONTROL_MESSAGE_BYTES_MAX {
                return Err(w.malformed(format!(
                    "a control message of {} bytes: must be 1..={CONTROL_MESSAGE_BYTES_MAX}",
                    message.len()
                )));
            }
            w.len32(message.len(), "message")?;
            w.bytes(message)
        }
        Message::AuthHello { node_id, nonce } => {
            w.u32(node_id)?;
            w.bytes(nonce)
        }
        Message::AuthChallenge { nonce, proof } => {
            w.bytes(nonce)?;
            w.bytes(proof)
        }
        Message::AuthProof { proof } => w.bytes(proof),
        Message::JoinRequest { node_id, addr } => {
            w.u32(node_id)?;
            w.str16(addr, "addr")
        }
        Message::Joined { config } => {
            if config.is_empty() || config.len() > CONTROL_MESSAGE_BYTES_MAX {
                return Err(w.malformed(format!(
                    "a configuration of {} bytes: must be 1..={CONTROL_MESSAGE_BYTES_MAX}",
                    config.len()
                )));
            }
            w.len32(config.len(), "config")?;
            w.bytes(config)
        }
        _ => unreachable!("{} is not of this plane", m.kind()),
    }
}

/// Reads the body of a message of kind `kind`, of this plane.
pub(super) fn decode<'a>(kind: Kind, r: &mut Reader<'a>) -> Result<Message<'a>, WireError> {
    Ok(match kind {
        Kind::ControlHello => Message::ControlHello {
            node_id: r.u32("node_id")?,
            incarnation: r.u64("incarnation")?,
            addr: addr(r, "addr")?,
        },
        Kind::ControlWelcome => Message::ControlWelcome {
            node_id: r.u32("node_id")?,
            incarnation: r.u64("incarnation")?,
        },
        Kind::Control => {
            let len = r.u32("len")? as usize;
            if len == 0 || len > CONTROL_MESSAGE_BYTES_MAX {
                return Err(r.malformed(format!(
                    "a control message of {len} bytes: must be 1..={CONTROL_MESSAGE_BYTES_MAX}"
                )));
            }
            Message::Control {
                message: r.bytes(len, "message")?,
            }
        }
        Kind::AuthHello => Message::AuthHello {
            node_id: r.u32("node_id")?,
            nonce: auth_bytes(r, "nonce")?,
        },
        Kind::AuthChallenge => Message::AuthChallenge {
            nonce: auth_bytes(r, "nonce")?,
            proof: auth_bytes(r, "proof")?,
        },
        Kind::AuthProof => Message::AuthProof {
            proof: auth_bytes(r, "proof")?,
        },
        Kind::JoinRequest => {
            let node_id = r.u32("node_id")?;
            let Some(addr) = addr(r, "addr")? else {
                return Err(r.malformed("a join without the new node's address"));
            };
            Message::JoinRequest { node_id, addr }
        }
        Kind::Joined => {
            let len = r.u32("len")? as usize;
            if len == 0 || len > CONTROL_MESSAGE_BYTES_MAX {
                return Err(r.malformed(format!(
                    "a configuration of {len} bytes: must be 1..={CONTROL_MESSAGE_BYTES_MAX}"
                )));
            }
            Message::Joined {
                config: r.bytes(len, "config")?,
            }
        }
        _ => unreachable!("{kind} is not of this plane"),
    })
}
