//! An incoming control connection, after its `ControlHello` was accepted: its reader
//! decodes the peer's `Control` frames and queues them for the node's control loop.
//!
//! What the peer may send: `Control` frames only, each a controller message that
//! decodes, and whose statuses and fence answers name the greeting's node and process
//! (see [`crate::server::identity`]). Anything else is answered with an `Error` frame,
//! one line in the node's log, and the connection closes.
//!
//! Bound: at most [`CONTROL_LINK_QUEUED_BYTES_MAX`] of one connection's messages wait
//! to be handled. At the bound the reader stops reading, so TCP pushes back on the
//! peer; a bound that stays reached for [`QUEUED_WAIT_MAX`] closes the connection.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use crate::constants::CONTROL_LINK_QUEUED_BYTES_MAX;
use crate::control::ControlMsg;
use crate::replication::NodeId;
use crate::server::control_loop::ToControl;
use crate::server::identity::Lease;
use crate::wire::{ErrorCode, FrameDecoder, Message, RequestId};

/// Bytes of one connection's control messages queued for the control loop: taken when
/// a message is queued, given back when the loop has handled it (on drop).
pub struct Queued {
    bytes: usize,
    budget: Arc<AtomicUsize>,
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.budget.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// How long a connection's reader waits for room in its budget before it closes the
/// connection: the control loop handles a turn's messages in milliseconds, so a budget
/// that stays full this long means a loop that no longer turns.
const QUEUED_WAIT_MAX: Duration = Duration::from_secs(10);

/// Waits until `budget` has room for `bytes` more (a message alone always fits), at
/// most [`QUEUED_WAIT_MAX`]; `false` when the time is up.
fn wait_for_room(budget: &AtomicUsize, bytes: usize) -> bool {
    let deadline = Instant::now() + QUEUED_WAIT_MAX;
    loop {
        let queued = budget.load(Ordering::Acquire);
        if queued == 0 || queued + bytes <= CONTROL_LINK_QUEUED_BYTES_MAX {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Why a peer's control message is refused: the `Error` code it is answered with and
/// the reason.
type Refused = (ErrorCode, String);

/// Decodes a control message from node `from`, process `incarnation`: its statuses
/// and fence answers must be that process's own.
pub fn admit(bytes: &[u8], from: NodeId, incarnation: u64) -> Result<ControlMsg, Refused> {
    let msg = ControlMsg::decode(bytes).map_err(|e| (ErrorCode::Malformed, e.to_string()))?;
    let sender = |what: &str, node: NodeId, inc: u64| {
        if (node, inc) == (from, incarnation) {
            Ok(())
        } else {
            Err((
                ErrorCode::Unexpected,
                format!(
                    "a {what} of node {node} (incarnation {inc}) on the connection of node \
                     {from} (incarnation {incarnation})"
                ),
            ))
        }
    };
    match &msg {
        ControlMsg::Status(s) => sender("status", s.node, s.incarnation)?,
        ControlMsg::Fenced {
            node,
            incarnation: inc,
            ..
        } => sender("fence answer", *node, *inc)?,
        _ => {}
    }
    Ok(msg)
}

/// Answers the peer with an `Error` frame, logs one line, and closes.
fn refuse(sock: &TcpStream, from: NodeId, code: ErrorCode, why: &str) {
    tracing::warn!(
        peer = from,
        "control link from node {from}: {why}; answered {} and closed",
        code.as_str()
    );
    let mut out = Vec::new();
    if (Message::Error { code, message: why })
        .encode_into(RequestId(0), &mut out)
        .is_ok()
    {
        let _ = (&*sock).write_all(&out);
    }
    let _ = sock.shutdown(Shutdown::Both);
}

/// Reads a peer's `Control` frames (after its accepted `ControlHello`) into the
/// control loop, with at most [`CONTROL_LINK_QUEUED_BYTES_MAX`] of them waiting to be
/// handled. Ends when the peer closes, breaks a rule, or the node id is given to
/// another process (which closes this connection).
pub fn read_peer(
    lease: Lease,
    sock: TcpStream,
    mut decoder: FrameDecoder,
    to_control: SyncSender<ToControl>,
) {
    let (from, incarnation) = (lease.node(), lease.incarnation());
    let budget = Arc::new(AtomicUsize::new(0));
    loop {
        loop {
            let frame = match decoder.next_frame() {
                Ok(None) => break,
                Ok(Some(f)) => f,
                Err(e) => return refuse(&sock, from, ErrorCode::Malformed, &e.to_string()),
            };
            let Message::Control { message } = frame.message else {
                let why = format!("{} on a control link", frame.message.kind());
                return refuse(&sock, from, ErrorCode::Unexpected, &why);
            };
            lease.heard();
            let msg = match admit(message, from, incarnation) {
                Ok(m) => m,
                Err((code, why)) => return refuse(&sock, from, code, &why),
            };
            let bytes = message.len();
            if !wait_for_room(&budget, bytes) {
                tracing::warn!(
                    peer = from,
                    "control link from node {from}: {} bytes of its messages \
                     wait for the control loop after {} s; closing",
                    budget.load(Ordering::Acquire),
                    QUEUED_WAIT_MAX.as_secs()
                );
                let _ = sock.shutdown(Shutdown::Both);
                return;
            }
            budget.fetch_add(bytes, Ordering::AcqRel);
            let queued = Queued {
                bytes,
                budget: Arc::clone(&budget),
            };
            let peer = ToControl::Peer { from, msg, queued };
            if to_control.send(peer).is_err() {
                return;
            }
        }
        match decoder.read_from(&mut &sock) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
