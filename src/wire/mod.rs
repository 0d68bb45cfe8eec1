//! The framed binary protocol that nodes speak with clients and with each other.
//!
//! A connection starts with a hello that binds it to one stream (`ClientHello` from a
//! client, `PeerHello` from a primary to a secondary); every later message on it
//! concerns that stream. Requests carry a request id chosen by the requester and the
//! reply carries the same id, so replies may come in any order.
//!
//! A frame is a 24-byte header and a body:
//!
//! ```text
//! offset size field
//!  0     4    magic       "LSW1" (4c 53 57 31; every byte non-zero)
//!  4     1    version     1
//!  5     1    kind        message type (see `message`)
//!  6     2    flags       0; no flag is defined and any set bit is refused
//!  8     8    request id  chosen by the requester, echoed by the reply; 0 = unsolicited
//! 16     4    body length bytes after the header, at most the limit of the kind
//! 20     4    crc32c      of bytes 0..20 and the body
//! 24     ...  body        laid out per kind (see `message`)
//! ```
//!
//! All integers are little-endian.
//!
//! Guarantees:
//! - Decoding never panics, never reads outside the frame and never allocates for
//!   attacker-chosen lengths: every length is checked against the bytes present and the
//!   limits in [`crate::constants`] first. Body errors name the field.
//! - A frame is returned only if its checksum holds and its body follows the rules of
//!   its kind (see [`message`]): no trailing bytes, valid UTF-8 strings within their
//!   limits, contiguous records with epochs that never decrease.
//! - Decoded messages borrow their payloads from the receive buffer (no copy);
//!   encoding appends to a caller's buffer (no allocation when it has the capacity).
//! - The encoder applies the decoder's rules to what it writes, so anything encoded
//!   is accepted by a receiver, and each message has exactly one encoding.
//!
//! Fault model: the bytes may be anything (a buggy or hostile peer, a wrong port, a
//! corrupted link). A frame that fails a check ends the connection; the framing of what
//! follows cannot be trusted.

mod codes;
mod cursor;
mod decoder;
mod frame;
pub mod message;
pub mod records;
mod stream_name;

pub use codes::{ErrorCode, Mode, ParseNameError, Role};
pub use decoder::FrameDecoder;
pub use frame::{Frame, Kind, MAGIC, RequestId, VERSION};
pub use message::Message;
pub use records::{PayloadIter, Payloads, RecordIter, RecordRef, Records};
pub use stream_name::{StreamNameError, check_stream_name};

/// Why bytes were refused as a frame. Every variant ends the connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("not a lockstep frame: magic byte {offset} is {found:#04x}, expected {expected:#04x}")]
    BadMagic {
        offset: usize,
        found: u8,
        expected: u8,
    },
    #[error("frame version {found} is not supported; this node speaks version {supported}")]
    BadVersion { found: u8, supported: u8 },
    #[error("unknown message kind {found:#04x}")]
    UnknownKind { found: u8 },
    #[error("unknown frame flags {found:#06x}")]
    UnknownFlags { found: u16 },
    #[error("{kind} frame body of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { kind: Kind, len: usize, max: usize },
    #[error(
        "{kind} frame checksum mismatch: the header says {expected:#010x}, \
         the frame sums to {actual:#010x}"
    )]
    BadChecksum {
        kind: Kind,
        expected: u32,
        actual: u32,
    },
    #[error("malformed {kind} message: {reason}")]
    Malformed { kind: Kind, reason: String },
    #[error("the connection ended inside a frame ({buffered} bytes of it received)")]
    Truncated { buffered: usize },
}

#[cfg(test)]
mod tests;
