//! An incoming control connection, after its `ControlHello` was accepted: its reader
//! decodes the peer's `Control` frames and queues them for the node's control loop.
//!
//! What the peer may send: `Control` frames only, each a controller message that
//! decodes within its bounds (a raft message of at most [`RAFT_MESSAGE_ELEMENTS_MAX`]
//! elements, counted before it is decoded; a status of at most [`STREAMS_MAX`]
//! streams; names, addresses, epochs and LSNs within their wire limits), and whose
//! statuses and fence answers name the greeting's node and process. Anything else is
//! answered with an `Error` frame, one line in the node's log, and the connection
//! closes.
//!
//! Bound: at most [`CONTROL_LINK_QUEUED_BYTES_MAX`] of one connection's messages, and
//! [`CONTROL_QUEUED_BYTES_MAX`] of all connections' (half of it for nodes that are not
//! members), wait to be handled. At the bound the reader stops reading, so TCP pushes
//! back on the peer; a bound that stays reached for [`QUEUED_WAIT_MAX`] closes the
//! connection.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use crate::constants::{
    CONTROL_LINK_QUEUED_BYTES_MAX, CONTROL_QUEUED_BYTES_MAX, EPOCH_MAX, LSN_MAX,
    NODE_ADDR_BYTES_MAX, RAFT_MESSAGE_ELEMENTS_MAX, STREAM_NAME_BYTES_MAX, STREAMS_MAX,
};
use crate::control::{ControlMsg, Request};
use crate::replication::NodeId;
use crate::server::control_loop::ToControl;
use crate::server::identity::Lease;
use crate::wire::{ErrorCode, FrameDecoder, Message, RequestId};

/// Bytes of control messages queued for the control loop: one connection's, and all
/// connections' together.
pub struct Budget {
    link: Arc<AtomicUsize>,
    node: Arc<AtomicUsize>,
    /// How much of the node's budget this connection may fill.
    node_max: usize,
}

impl Budget {
    /// A connection's budget within the node's `node` (shared by every incoming
    /// control connection); a non-member's may fill only half of the node's.
    pub fn new(node: Arc<AtomicUsize>, member: bool) -> Budget {
        Budget {
            link: Arc::new(AtomicUsize::new(0)),
            node,
            node_max: if member {
                CONTROL_QUEUED_BYTES_MAX
            } else {
                CONTROL_QUEUED_BYTES_MAX / 2
            },
        }
    }

    /// Waits until there is room for `bytes` more (a message alone always fits its
    /// connection's budget), at most [`QUEUED_WAIT_MAX`]; then takes it.
    fn take(&self, bytes: usize) -> Option<Queued> {
        let deadline = Instant::now() + QUEUED_WAIT_MAX;
        loop {
            let link = self.link.load(Ordering::Acquire);
            let fits_link = link == 0 || link + bytes <= CONTROL_LINK_QUEUED_BYTES_MAX;
            if fits_link {
                // The node's budget is shared: take it with a compare-and-swap.
                let node = self.node.load(Ordering::Acquire);
                if node + bytes <= self.node_max
                    && self
                        .node
                        .compare_exchange(node, node + bytes, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    self.link.fetch_add(bytes, Ordering::AcqRel);
                    return Some(Queued {
                        bytes,
                        link: Arc::clone(&self.link),
                        node: Arc::clone(&self.node),
                    });
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Bytes of one connection's control message queued for the control loop: taken when
/// the message is queued, given back when the loop has handled it (on drop).
pub struct Queued {
    bytes: usize,
    link: Arc<AtomicUsize>,
    node: Arc<AtomicUsize>,
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.link.fetch_sub(self.bytes, Ordering::AcqRel);
        self.node.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// How long a connection's reader waits for room in its budget before it closes the
/// connection: the control loop handles a turn's messages in milliseconds, so a budget
/// that stays full this long means a loop that no longer turns.
const QUEUED_WAIT_MAX: Duration = Duration::from_secs(10);

/// Why a peer's control message is refused: the `Error` code it is answered with and
/// the reason.
type Refused = (ErrorCode, String);

/// Decodes a control message from node `from`, process `incarnation`, within the
/// bounds of the module docs.
pub fn admit(bytes: &[u8], from: NodeId, incarnation: u64) -> Result<ControlMsg, Refused> {
    let malformed = |why: String| (ErrorCode::Malformed, why);
    if let Some(elements) = crate::control::raft_elements(bytes, EPOCH_MAX).map_err(malformed)?
        && elements > RAFT_MESSAGE_ELEMENTS_MAX
    {
        return Err((
            ErrorCode::TooLarge,
            format!(
                "a raft message of {elements} elements (entries, repeated values, unknown \
                 fields): at most {RAFT_MESSAGE_ELEMENTS_MAX}"
            ),
        ));
    }
    let msg = ControlMsg::decode(bytes).map_err(|e| malformed(e.to_string()))?;
    let name = |stream: &str| {
        if stream.len() > STREAM_NAME_BYTES_MAX {
            Err((
                ErrorCode::TooLarge,
                format!(
                    "a stream name of {} bytes: at most {STREAM_NAME_BYTES_MAX}",
                    stream.len()
                ),
            ))
        } else {
            Ok(())
        }
    };
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
    // Epochs and LSNs within the wire's bounds, as in every frame (see `crate::wire`).
    let numbers =
        |what: &str, values: &[u64]| match values.iter().find(|&&v| v > EPOCH_MAX.max(LSN_MAX)) {
            Some(v) => Err((
                ErrorCode::Malformed,
                format!(
                    "a {what} with an epoch or LSN of {v}: at most {}",
                    EPOCH_MAX.max(LSN_MAX)
                ),
            )),
            None => Ok(()),
        };
    match &msg {
        ControlMsg::Raft(_) => {}
        ControlMsg::Status(s) => {
            sender("status", s.node, s.incarnation)?;
            for st in &s.streams {
                let v = [
                    st.epoch,
                    st.last_epoch,
                    st.last_lsn,
                    st.durable_lsn,
                    st.commit_lsn,
                ];
                numbers("status", &v)?;
            }
            if s.streams.len() > STREAMS_MAX {
                return Err((
                    ErrorCode::TooLarge,
                    format!(
                        "a status of {} streams: at most {STREAMS_MAX}",
                        s.streams.len()
                    ),
                ));
            }
            for st in &s.streams {
                name(&st.stream)?;
            }
        }
        ControlMsg::Fenced {
            stream,
            epoch,
            node,
            incarnation: inc,
            last_epoch,
            last_lsn,
        } => {
            sender("fence answer", *node, *inc)?;
            name(stream)?;
            numbers("fence answer", &[*epoch, *last_epoch, *last_lsn])?;
        }
        ControlMsg::Fence { stream, epoch } | ControlMsg::Drain { stream, epoch, .. } => {
            name(stream)?;
            numbers("fence", &[*epoch])?;
        }
        ControlMsg::Drained {
            stream,
            epoch,
            last_lsn,
            ..
        } => {
            name(stream)?;
            numbers("drain answer", &[*epoch, *last_lsn])?;
        }
        ControlMsg::Request(r) => match r {
            Request::Remove {
                stream,
                epoch,
                version,
                ..
            }
            | Request::Restore {
                stream,
                epoch,
                version,
                ..
            } => {
                name(stream)?;
                numbers("request", &[*epoch, *version])?;
            }
            Request::DbPromote {
                stream,
                epoch,
                from_term,
                ..
            } => {
                name(stream)?;
                numbers("request", &[*epoch, *from_term])?;
            }
            Request::Switchover { stream, .. } => name(stream)?,
            Request::Join { addr, .. } => {
                if addr.is_empty() || addr.len() > NODE_ADDR_BYTES_MAX {
                    return Err((
                        ErrorCode::TooLarge,
                        format!(
                            "a join of an address of {} bytes: 1 to {NODE_ADDR_BYTES_MAX}",
                            addr.len()
                        ),
                    ));
                }
            }
        },
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
/// control loop, within `budget`. Ends when the peer closes, breaks a rule, or the
/// node id is given to another process (which closes this connection).
pub fn read_peer(
    lease: Lease,
    sock: TcpStream,
    mut decoder: FrameDecoder,
    to_control: SyncSender<ToControl>,
    budget: Budget,
) {
    let (from, incarnation) = (lease.node(), lease.incarnation());
    loop {
        loop {
            let frame = match decoder.next_frame() {
                Ok(None) => break,
                Ok(Some(f)) => f,
                Err(e) => {
                    let code = match e {
                        crate::wire::WireError::TooLarge { .. } => ErrorCode::TooLarge,
                        _ => ErrorCode::Malformed,
                    };
                    return refuse(&sock, from, code, &e.to_string());
                }
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
            let Some(queued) = budget.take(bytes) else {
                tracing::warn!(
                    peer = from,
                    "control link from node {from}: its messages wait for the control loop \
                     after {} s; closing",
                    QUEUED_WAIT_MAX.as_secs()
                );
                let _ = sock.shutdown(Shutdown::Both);
                return;
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
