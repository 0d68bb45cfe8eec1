//! The frame header: what it holds, how it is checked and how a frame is sealed.
//!
//! The header layout is in the module docs of [`crate::wire`]. The header is checked
//! field by field as its bytes arrive ([`check_header`]), so a stream of garbage or an
//! oversized length is refused before the decoder waits for, or buffers, the body.

use std::fmt;

use super::WireError;
use super::message::Message;
use crate::constants::{
    AUTH_BYTES, CONTROL_MESSAGE_BYTES_MAX, FRAME_BODY_BYTES_MAX, FRAME_HEADER_BYTES,
    FRAME_PAYLOAD_BYTES_MAX, FRAME_RECORD_OVERHEAD_BYTES, FRAME_RECORDS_MAX, NODE_ADDR_BYTES_MAX,
    RING_SETUP_BYTES_MAX, STATUS_JSON_BYTES_MAX, STREAM_NAME_BYTES_MAX, WIRE_TEXT_BYTES_MAX,
};

/// "LSW1". Every byte is non-zero, so a run of zeros (a common kind of garbage) is
/// refused at its first byte.
pub const MAGIC: [u8; 4] = *b"LSW1";
const _: () = assert!(MAGIC[0] != 0 && MAGIC[1] != 0 && MAGIC[2] != 0 && MAGIC[3] != 0);

/// The protocol version this code speaks. A node refuses any other.
pub const VERSION: u8 = 1;

/// Bytes of the header covered by the checksum: everything before the checksum field.
const CRC_OFFSET: usize = 20;
const _: () = assert!(CRC_OFFSET + 4 == FRAME_HEADER_BYTES);

/// The correlation id of a request: chosen by the requester, unique among its
/// outstanding requests on one connection, and carried by the reply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

impl RequestId {
    /// The id of messages that answer no request (heartbeats, unsolicited errors).
    pub const UNSOLICITED: RequestId = RequestId(0);
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// The message type of a frame. Codes are grouped by direction: 0x0_ client to node,
/// 0x1_ node to client, 0x2_ primary to secondary, 0x3_ secondary to primary,
/// 0x4_ between the nodes' controllers (and the handshake that proves a node knows the
/// cluster secret).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    ClientHello = 0x01,
    Append = 0x02,
    Read = 0x03,
    Status = 0x04,
    Welcome = 0x10,
    Appended = 0x11,
    InDoubt = 0x12,
    NotPrimary = 0x13,
    Records = 0x14,
    StatusReply = 0x15,
    Error = 0x16,
    PeerHello = 0x20,
    Replicate = 0x21,
    Heartbeat = 0x22,
    Truncate = 0x23,
    Rebase = 0x24,
    RingOffer = 0x25,
    RingSwitch = 0x26,
    PeerWelcome = 0x30,
    Ack = 0x31,
    Refuse = 0x32,
    RingAccept = 0x33,
    ControlHello = 0x40,
    Control = 0x41,
    AuthHello = 0x42,
    AuthChallenge = 0x43,
    AuthProof = 0x44,
    JoinRequest = 0x45,
    Joined = 0x46,
    ControlWelcome = 0x47,
}

impl Kind {
    pub const ALL: [Kind; 30] = [
        Kind::ClientHello,
        Kind::Append,
        Kind::Read,
        Kind::Status,
        Kind::Welcome,
        Kind::Appended,
        Kind::InDoubt,
        Kind::NotPrimary,
        Kind::Records,
        Kind::StatusReply,
        Kind::Error,
        Kind::PeerHello,
        Kind::Replicate,
        Kind::Heartbeat,
        Kind::Truncate,
        Kind::Rebase,
        Kind::RingOffer,
        Kind::RingSwitch,
        Kind::PeerWelcome,
        Kind::Ack,
        Kind::Refuse,
        Kind::RingAccept,
        Kind::ControlHello,
        Kind::Control,
        Kind::AuthHello,
        Kind::AuthChallenge,
        Kind::AuthProof,
        Kind::JoinRequest,
        Kind::Joined,
        Kind::ControlWelcome,
    ];

    pub const fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.code() == code)
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::ClientHello => "ClientHello",
            Kind::Append => "Append",
            Kind::Read => "Read",
            Kind::Status => "Status",
            Kind::Welcome => "Welcome",
            Kind::Appended => "Appended",
            Kind::InDoubt => "InDoubt",
            Kind::NotPrimary => "NotPrimary",
            Kind::Records => "Records",
            Kind::StatusReply => "StatusReply",
            Kind::Error => "Error",
            Kind::PeerHello => "PeerHello",
            Kind::Replicate => "Replicate",
            Kind::Heartbeat => "Heartbeat",
            Kind::Truncate => "Truncate",
            Kind::Rebase => "Rebase",
            Kind::PeerWelcome => "PeerWelcome",
            Kind::Ack => "Ack",
            Kind::Refuse => "Refuse",
            Kind::RingOffer => "RingOffer",
            Kind::RingSwitch => "RingSwitch",
            Kind::RingAccept => "RingAccept",
            Kind::ControlHello => "ControlHello",
            Kind::Control => "Control",
            Kind::AuthHello => "AuthHello",
            Kind::AuthChallenge => "AuthChallenge",
            Kind::AuthProof => "AuthProof",
            Kind::JoinRequest => "JoinRequest",
            Kind::Joined => "Joined",
            Kind::ControlWelcome => "ControlWelcome",
        }
    }

    /// The largest body a frame of this kind can have. The decoder refuses a larger
    /// length as soon as it has the header, so a peer cannot make a node buffer more
    /// than the largest valid message of the kind it announces. These sums follow the
    /// body layouts in [`crate::wire::message`]; a test encodes a maximal message of
    /// every kind and checks that it reaches its limit exactly.
    pub const fn body_bytes_max(self) -> usize {
        const STR16: usize = 2;
        const BATCH: usize = FRAME_PAYLOAD_BYTES_MAX + FRAME_RECORDS_MAX * 4;
        const RECORDS: usize =
            FRAME_PAYLOAD_BYTES_MAX + FRAME_RECORDS_MAX * FRAME_RECORD_OVERHEAD_BYTES;
        match self {
            Kind::ClientHello => STR16 + STREAM_NAME_BYTES_MAX,
            Kind::Append => 1 + 4 + 4 + BATCH,
            Kind::Read => 8 + 4 + 4,
            Kind::Status => 0,
            Kind::Welcome => 4 + 1 + 8 + STR16 + NODE_ADDR_BYTES_MAX,
            Kind::Appended => 8 + 4,
            Kind::InDoubt => 8 + 4 + STR16 + WIRE_TEXT_BYTES_MAX,
            Kind::NotPrimary => 8 + STR16 + NODE_ADDR_BYTES_MAX,
            Kind::Records => 8 + 4 + RECORDS,
            Kind::StatusReply => 4 + STATUS_JSON_BYTES_MAX,
            Kind::Error => 2 + STR16 + WIRE_TEXT_BYTES_MAX,
            Kind::PeerHello => 4 + 8 + STR16 + STREAM_NAME_BYTES_MAX,
            Kind::Replicate => 8 * 4 + 4 + RECORDS,
            Kind::Heartbeat => 8 + 8,
            Kind::Truncate => 8 * 3,
            Kind::Rebase => 8 * 3,
            Kind::PeerWelcome => 4 + 8 * 4,
            Kind::Ack => 8 * 3,
            Kind::Refuse => 8 + 8 + STR16 + WIRE_TEXT_BYTES_MAX,
            Kind::RingOffer | Kind::RingAccept => STR16 + RING_SETUP_BYTES_MAX,
            Kind::RingSwitch => 0,
            Kind::ControlHello => 4 + 8 + STR16 + NODE_ADDR_BYTES_MAX,
            Kind::Control => 4 + CONTROL_MESSAGE_BYTES_MAX,
            Kind::AuthHello => 4 + AUTH_BYTES,
            Kind::AuthChallenge => AUTH_BYTES * 2,
            Kind::AuthProof => AUTH_BYTES,
            Kind::JoinRequest => 4 + STR16 + NODE_ADDR_BYTES_MAX,
            Kind::Joined => 4 + CONTROL_MESSAGE_BYTES_MAX,
            Kind::ControlWelcome => 4 + 8,
        }
    }
}

const _: () = {
    let mut i = 0;
    while i < Kind::ALL.len() {
        assert!(Kind::ALL[i].body_bytes_max() <= FRAME_BODY_BYTES_MAX);
        i += 1;
    }
};

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One decoded frame: its request id and its message, which borrows the payloads and
/// strings from the decoder's buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub id: RequestId,
    pub message: Message<'a>,
}

impl<'a> Frame<'a> {
    /// Decodes `bytes`, exactly one whole frame, with every check the
    /// [`FrameDecoder`](super::FrameDecoder) makes.
    pub fn parse(bytes: &'a [u8]) -> Result<Frame<'a>, WireError> {
        let Some(header) = check_header(bytes)? else {
            return Err(WireError::Truncated {
                buffered: bytes.len(),
            });
        };
        let len = header.frame_len();
        if bytes.len() < len {
            return Err(WireError::Truncated {
                buffered: bytes.len(),
            });
        }
        if bytes.len() > len {
            return Err(WireError::Malformed {
                kind: header.kind,
                reason: format!("{} bytes after the frame", bytes.len() - len),
            });
        }
        check_checksum(bytes, &header)?;
        let message = Message::decode(header.kind, &bytes[FRAME_HEADER_BYTES..])?;
        Ok(Frame {
            id: header.id,
            message,
        })
    }
}

/// A header whose fields passed every check that needs no body.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Header {
    pub(crate) kind: Kind,
    pub(crate) id: RequestId,
    pub(crate) body_len: usize,
    pub(crate) crc: u32,
}

impl Header {
    /// Bytes of the whole frame.
    pub(crate) fn frame_len(&self) -> usize {
        FRAME_HEADER_BYTES + self.body_len
    }
}

/// Checks the header at the start of `bytes` as far as `bytes` goes: each field is
/// checked as soon as its bytes are there. Returns the header once all of it is there,
/// `None` while it is incomplete and still valid so far.
pub(crate) fn check_header(bytes: &[u8]) -> Result<Option<Header>, WireError> {
    for (offset, (&found, &expected)) in bytes.iter().zip(MAGIC.iter()).enumerate() {
        if found != expected {
            return Err(WireError::BadMagic {
                offset,
                found,
                expected,
            });
        }
    }
    if let Some(&found) = bytes.get(4)
        && found != VERSION
    {
        return Err(WireError::BadVersion {
            found,
            supported: VERSION,
        });
    }
    let Some(&code) = bytes.get(5) else {
        return Ok(None);
    };
    let kind = Kind::from_code(code).ok_or(WireError::UnknownKind { found: code })?;
    if let Some(flags) = bytes.get(6..8) {
        let found = u16::from_le_bytes(flags.try_into().expect("2 bytes"));
        if found != 0 {
            return Err(WireError::UnknownFlags { found });
        }
    }
    let Some(len) = bytes.get(16..20) else {
        return Ok(None);
    };
    let body_len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
    let max = kind.body_bytes_max();
    if body_len > max {
        return Err(WireError::TooLarge {
            kind,
            len: body_len,
            max,
        });
    }
    let Some(header) = bytes.get(..FRAME_HEADER_BYTES) else {
        return Ok(None);
    };
    let le64 = |r: std::ops::Range<usize>| u64::from_le_bytes(header[r].try_into().expect("8"));
    let le32 = |r: std::ops::Range<usize>| u32::from_le_bytes(header[r].try_into().expect("4"));
    Ok(Some(Header {
        kind,
        id: RequestId(le64(8..16)),
        body_len,
        crc: le32(20..24),
    }))
}

/// Checks the checksum of a complete frame (header and body) whose header is `h`.
pub(crate) fn check_checksum(frame: &[u8], h: &Header) -> Result<(), WireError> {
    assert_eq!(frame.len(), h.frame_len());
    let actual = checksum(frame);
    if actual != h.crc {
        return Err(WireError::BadChecksum {
            kind: h.kind,
            expected: h.crc,
            actual,
        });
    }
    Ok(())
}

/// Fills in the header of `frame`, a header-sized gap followed by the body.
pub(crate) fn seal(frame: &mut [u8], kind: Kind, id: RequestId) {
    let body_len = frame.len() - FRAME_HEADER_BYTES;
    assert!(body_len <= kind.body_bytes_max());
    frame[0..4].copy_from_slice(&MAGIC);
    frame[4] = VERSION;
    frame[5] = kind.code();
    frame[6..8].copy_from_slice(&0u16.to_le_bytes());
    frame[8..16].copy_from_slice(&id.0.to_le_bytes());
    frame[16..20].copy_from_slice(&(body_len as u32).to_le_bytes());
    let crc = checksum(frame);
    frame[CRC_OFFSET..FRAME_HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
}

/// crc32c of a frame's header before the checksum field, then of its body.
fn checksum(frame: &[u8]) -> u32 {
    let head = crc32c::crc32c(&frame[..CRC_OFFSET]);
    crc32c::crc32c_append(head, &frame[FRAME_HEADER_BYTES..])
}
