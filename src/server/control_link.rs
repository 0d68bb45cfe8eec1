//! An incoming control connection, after its `ControlHello`: its reader decodes the
//! peer's `Control` frames and queues them for the node's control loop.
//!
//! Bound: at most [`CONTROL_LINK_QUEUED_BYTES_MAX`] of one connection's messages wait
//! to be handled. At the bound the reader stops reading, so TCP pushes back on the
//! peer; a bound that stays reached for [`QUEUED_WAIT_MAX`] closes the connection. A
//! frame that is not a `Control` message, or one that does not decode, closes it too.

use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use crate::constants::CONTROL_LINK_QUEUED_BYTES_MAX;
use crate::control::ControlMsg;
use crate::replication::NodeId;
use crate::server::control_loop::ToControl;
use crate::wire::Message;

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

/// Reads a peer's `Control` frames (after its `ControlHello`) into the control loop,
/// with at most [`CONTROL_LINK_QUEUED_BYTES_MAX`] of them waiting to be handled.
pub fn read_peer(
    from: NodeId,
    sock: TcpStream,
    mut decoder: crate::wire::FrameDecoder,
    to_control: SyncSender<ToControl>,
) {
    let budget = Arc::new(AtomicUsize::new(0));
    loop {
        loop {
            match decoder.next_frame() {
                Ok(None) => break,
                Ok(Some(f)) => match f.message {
                    Message::Control { message } => match ControlMsg::decode(message) {
                        Ok(msg) => {
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
                        Err(e) => {
                            tracing::warn!(
                                peer = from,
                                "control link from node {from}: {e}; closing"
                            );
                            let _ = sock.shutdown(Shutdown::Both);
                            return;
                        }
                    },
                    other => {
                        tracing::warn!(
                            peer = from,
                            "node {from} sent {} on a control link; closing",
                            other.kind()
                        );
                        let _ = sock.shutdown(Shutdown::Both);
                        return;
                    }
                },
                Err(e) => {
                    tracing::warn!(peer = from, "control link from node {from}: {e}; closing");
                    let _ = sock.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
        match decoder.read_from(&mut &sock) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
