//! The client's errors: each names the operation and, where one was involved, the
//! node's address.

use std::io;
use std::time::Duration;

use crate::wire::{ErrorCode, RequestId, StreamNameError, WireError};

/// Errors of the client. Each names the operation and, where one was involved, the
/// node's address.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{op} on {addr}: {source}")]
    Io {
        addr: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{op} on {addr}: the node sent a bad frame: {source}")]
    Wire {
        addr: String,
        op: &'static str,
        #[source]
        source: WireError,
    },
    #[error("{op} on {addr}: the node broke the protocol: {reason}")]
    Protocol {
        addr: String,
        op: &'static str,
        reason: String,
    },
    /// The append may or may not be committed. Never resend it blindly: read by LSN.
    #[error(
        "append of {count} records on {addr} is in doubt{}: {reason}; its fate is unknown \
         (look it up by LSN; resending could append it twice)",
        lsns_text(.first_lsn, .count)
    )]
    InDoubt {
        addr: String,
        /// The first LSN, when the node said which; `None` when no reply came.
        first_lsn: Option<u64>,
        count: u32,
        reason: String,
    },
    #[error("{op} on {addr}: no reply within {after:?}")]
    Timeout {
        addr: String,
        op: &'static str,
        after: Duration,
    },
    #[error("{op} on {addr}: the connection was lost before the reply: {reason}")]
    Disconnected {
        addr: String,
        op: &'static str,
        reason: String,
    },
    #[error("{op} on {addr}: refused ({code}): {message}")]
    Server {
        addr: String,
        op: &'static str,
        code: ErrorCode,
        message: String,
    },
    /// Nothing was done: every node that saw the request refused it as not primary.
    #[error(
        "{op}: not accepted after {redirects} redirects; {addr} is not the primary in \
         epoch {epoch} and {}",
        primary_text(primary)
    )]
    Redirects {
        op: &'static str,
        addr: String,
        redirects: u32,
        epoch: u64,
        primary: Option<String>,
    },
    /// Nothing was done: the node was not the primary and no other node could be
    /// reached to take the request.
    #[error("{op}: refused as not primary, and no other node took it: {reason}")]
    RedirectFailed { op: &'static str, reason: String },
    #[error("no node of {tried:?} took the connection; the last said: {last}")]
    Unreachable {
        tried: Vec<String>,
        #[source]
        last: Box<ClientError>,
    },
    #[error("{op}: the request breaks a protocol limit: {source}")]
    Invalid {
        op: &'static str,
        #[source]
        source: WireError,
    },
    #[error(transparent)]
    StreamName(#[from] StreamNameError),
    #[error("no node address given")]
    NoAddress,
    #[error(
        "{outstanding} replies wait to be collected (the limit); \
         collect them with wait or poll before submitting more"
    )]
    Busy { outstanding: usize },
    #[error("request {id} is not outstanding on this client")]
    UnknownRequest { id: RequestId },
}

fn primary_text(primary: &Option<String>) -> String {
    match primary {
        Some(p) => format!("names the primary at {p}"),
        None => "knows no primary (a failover may be under way)".to_string(),
    }
}

fn lsns_text(first_lsn: &Option<u64>, count: &u32) -> String {
    match first_lsn {
        Some(first) => format!(" (lsns {first}..={})", first + u64::from(*count) - 1),
        None => String::new(),
    }
}
