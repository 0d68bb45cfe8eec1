//! The messages of the protocol and their body layouts.
//!
//! All integers are little-endian. `str16` is a u16 byte length and UTF-8 bytes; `str32`
//! the same with a u32 length; `addr` is a `str16` node address ("host:port"), where
//! length 0 means "not known". `payloads` and `records` are laid out as in
//! [`crate::wire::records`].
//!
//! ```text
//! code kind         body
//! 0x01 ClientHello  stream str16
//! 0x02 Append       mode u8 (0 = the stream's, 1 strong, 2 semi, 3 async),
//!                   timeout_ms u32 (0 = the node's default), payloads (at least one)
//! 0x03 Read         from_lsn u64 (>= 1), records_max u32 (>= 1), bytes_max u32
//! 0x04 Status       (empty)
//! 0x10 Welcome      node_id u32, role u8 (1 primary, 2 secondary, 3 learner), epoch u64,
//!                   primary addr
//! 0x11 Appended     first_lsn u64 (>= 1), count u32 (>= 1)
//! 0x12 InDoubt      first_lsn u64 (>= 1), count u32 (>= 1), reason str16
//! 0x13 NotPrimary   epoch u64, primary addr
//! 0x14 Records      commit_lsn u64, records (every lsn <= commit_lsn)
//! 0x15 StatusReply  json str32
//! 0x16 Error        code u16 (see ErrorCode), message str16
//! 0x20 PeerHello    node_id u32, epoch u64, stream str16
//! 0x21 Replicate    epoch u64, prev_lsn u64, prev_epoch u64, commit_lsn u64,
//!                   records (at least one; the first lsn is prev_lsn + 1; epochs from
//!                   prev_epoch up to epoch)
//! 0x22 Heartbeat    epoch u64, commit_lsn u64
//! 0x23 Truncate     epoch u64, after_lsn u64, after_epoch u64 (<= epoch)
//! 0x24 Rebase       epoch u64, base_lsn u64 (>= 1), base_epoch u64 (<= epoch)
//! 0x25 RingOffer    setup u16 length + bytes (at most RING_SETUP_BYTES_MAX; see
//!                   `transport::rdma::setup`)
//! 0x26 RingSwitch   (empty)
//! 0x30 PeerWelcome  node_id u32, epoch u64, last_lsn u64, last_epoch u64,
//!                   durable_lsn u64 (<= last_lsn)
//! 0x31 Ack          epoch u64, received_lsn u64, durable_lsn u64 (<= received_lsn)
//! 0x32 Refuse       epoch u64, last_lsn u64, reason str16
//! 0x33 RingAccept   setup u16 length + bytes (as RingOffer)
//! 0x40 ControlHello node_id u32, incarnation u64, addr (where the greeting node serves)
//! 0x41 Control      len u32, a controller message of len bytes (see
//!                   `control::ControlMsg`; at most CONTROL_MESSAGE_BYTES_MAX)
//! 0x42 AuthHello    node_id u32, nonce [32]
//! 0x43 AuthChallenge nonce [32], proof [32]
//! 0x44 AuthProof    proof [32]
//! 0x45 JoinRequest  node_id u32, addr (not empty)
//! 0x46 Joined       len u32, the cluster configuration (JSON) of len bytes (at most
//!                   CONTROL_MESSAGE_BYTES_MAX)
//! 0x47 ControlWelcome node_id u32, incarnation u64
//! ```
//!
//! Stream names follow [`check_stream_name`]; texts are at most `WIRE_TEXT_BYTES_MAX`
//! bytes, addresses `NODE_ADDR_BYTES_MAX`, the status JSON `STATUS_JSON_BYTES_MAX`;
//! every LSN is at most `LSN_MAX` and every epoch at most `EPOCH_MAX` (2^62), so that a
//! receiver's `lsn + 1` or `epoch + 1` never wraps.
//!
//! One set of rules: [`Message::encode_into`] runs [`Message::decode`] over the body it
//! wrote, so a node never sends what a node would refuse, and every message has exactly
//! one encoding (a decoded message re-encodes to the same bytes).

mod client;
mod node;
mod peer;

use super::WireError;
use super::codes::{ErrorCode, Mode, Role};
use super::cursor::{Reader, Writer};
use super::frame::{self, Kind, RequestId};
use super::records::{Payloads, Records};
use super::stream_name::check_stream_name;
use crate::constants::{
    AUTH_BYTES, FRAME_HEADER_BYTES, NODE_ADDR_BYTES_MAX, STREAM_NAME_BYTES_MAX,
};

/// One message. Decoded messages borrow their strings and payloads from the frame.
///
/// Every message after a hello concerns the stream the hello named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// Client → node, first on a client connection: binds it to `stream`.
    ClientHello { stream: &'a str },
    /// Client → node: append `payloads` in order, as consecutive LSNs. `mode` may ask
    /// for a commit rule weaker than the stream's; `timeout_ms` bounds how long the node
    /// waits for the commit before it answers `InDoubt`.
    Append {
        mode: Option<Mode>,
        timeout_ms: u32,
        payloads: Payloads<'a>,
    },
    /// Client → node: committed records from `from_lsn`, at most `records_max` of them
    /// and about `bytes_max` of payload (at least one record when one is committed).
    Read {
        from_lsn: u64,
        records_max: u32,
        bytes_max: u32,
    },
    /// Client → node: the node's view of the stream, as JSON.
    Status,
    /// Node → client, the reply to `ClientHello`.
    Welcome {
        node_id: u32,
        role: Role,
        epoch: u64,
        primary: Option<&'a str>,
    },
    /// Node → client: the append holds LSNs `first_lsn..first_lsn + count` and is
    /// committed by the commit rule of its mode.
    Appended { first_lsn: u64, count: u32 },
    /// Node → client: the append got LSNs `first_lsn..first_lsn + count` but its fate is
    /// unknown (the commit timed out or the node is stopping). Ask by LSN; never resend.
    InDoubt {
        first_lsn: u64,
        count: u32,
        reason: &'a str,
    },
    /// Node → client: this node is not the stream's primary; nothing was done. `primary`
    /// is where the node believes the primary is in `epoch`.
    NotPrimary {
        epoch: u64,
        primary: Option<&'a str>,
    },
    /// Node → client, the reply to `Read`: committed records and the commit LSN.
    Records {
        commit_lsn: u64,
        records: Records<'a>,
    },
    /// Node → client, the reply to `Status`.
    StatusReply { json: &'a str },
    /// Node → client: the request (or, with id 0, the connection) was refused. For an
    /// `Append` this promises that nothing was appended; a node that cannot promise
    /// that answers `InDoubt`.
    Error { code: ErrorCode, message: &'a str },
    /// Primary → secondary, first on a peer connection: binds it to `stream`.
    PeerHello {
        stream: &'a str,
        node_id: u32,
        epoch: u64,
    },
    /// Primary → secondary: records following `(prev_lsn, prev_epoch)`, and the
    /// primary's commit LSN.
    Replicate {
        epoch: u64,
        prev_lsn: u64,
        prev_epoch: u64,
        commit_lsn: u64,
        records: Records<'a>,
    },
    /// Primary → secondary: liveness and the commit LSN when there is nothing to send.
    Heartbeat { epoch: u64, commit_lsn: u64 },
    /// Primary → secondary: cut every record after `after_lsn` (a tail this primary
    /// does not have: never committed), then greet again with `PeerWelcome`.
    Truncate {
        epoch: u64,
        after_lsn: u64,
        after_epoch: u64,
    },
    /// Primary → secondary: the records after the member's log end are no longer
    /// held here (retention deleted them): start the log over after `base_lsn`, whose
    /// record is of `base_epoch`, and receive everything from there.
    Rebase {
        epoch: u64,
        base_lsn: u64,
        base_epoch: u64,
    },
    /// Secondary → primary, the reply to `PeerHello`: where the secondary's log ends,
    /// so the primary knows where to resume.
    PeerWelcome {
        node_id: u32,
        epoch: u64,
        last_lsn: u64,
        last_epoch: u64,
        durable_lsn: u64,
    },
    /// Secondary → primary: cumulative positions received and durable.
    Ack {
        epoch: u64,
        received_lsn: u64,
        durable_lsn: u64,
    },
    /// Secondary → primary: the records or the hello were refused (an older epoch, a
    /// gap); `last_lsn` is where the secondary's log ends.
    Refuse {
        epoch: u64,
        last_lsn: u64,
        reason: &'a str,
    },
    /// Primary → secondary: an RDMA ring is offered for this link (the primary's queue
    /// pair and the member's ack slot; see `transport::rdma::setup`).
    RingOffer { setup: &'a [u8] },
    /// Primary → secondary: every later frame of this link comes through the ring.
    RingSwitch,
    /// Secondary → primary: the answer to `RingOffer` (the member's queue pair and
    /// ring, or why not).
    RingAccept { setup: &'a [u8] },
    /// Node → node, first on a control connection: the controller of `node_id`,
    /// process `incarnation`, which serves at `addr` (its advertised address).
    ControlHello {
        node_id: u32,
        incarnation: u64,
        addr: Option<&'a str>,
    },
    /// Node → node: one controller message (opaque here; `control::ControlMsg`).
    Control { message: &'a [u8] },
    /// Dialing node → node, before its hello when the cluster has a secret: who it
    /// is and a fresh nonce (see `server::auth`).
    AuthHello {
        node_id: u32,
        nonce: &'a [u8; AUTH_BYTES],
    },
    /// Node → dialing node: the node's own nonce and its proof that it knows the
    /// secret.
    AuthChallenge {
        nonce: &'a [u8; AUTH_BYTES],
        proof: &'a [u8; AUTH_BYTES],
    },
    /// Dialing node → node: the dialer's proof that it knows the secret.
    AuthProof { proof: &'a [u8; AUTH_BYTES] },
    /// New node → member, after the handshake: add `node_id`, reachable at `addr`, to
    /// the cluster.
    JoinRequest { node_id: u32, addr: &'a str },
    /// Member → new node: the join is committed; the cluster's configuration.
    Joined { config: &'a [u8] },
    /// Node → node, the answer to `ControlHello` that accepts it: the answering node
    /// `node_id`, process `incarnation`. A hello that is refused is answered with
    /// `Error` instead (`id-in-use` when another live process holds the node id).
    ControlWelcome { node_id: u32, incarnation: u64 },
}

impl<'a> Message<'a> {
    pub fn kind(&self) -> Kind {
        match self {
            Message::ClientHello { .. } => Kind::ClientHello,
            Message::Append { .. } => Kind::Append,
            Message::Read { .. } => Kind::Read,
            Message::Status => Kind::Status,
            Message::Welcome { .. } => Kind::Welcome,
            Message::Appended { .. } => Kind::Appended,
            Message::InDoubt { .. } => Kind::InDoubt,
            Message::NotPrimary { .. } => Kind::NotPrimary,
            Message::Records { .. } => Kind::Records,
            Message::StatusReply { .. } => Kind::StatusReply,
            Message::Error { .. } => Kind::Error,
            Message::PeerHello { .. } => Kind::PeerHello,
            Message::Replicate { .. } => Kind::Replicate,
            Message::Heartbeat { .. } => Kind::Heartbeat,
            Message::Truncate { .. } => Kind::Truncate,
            Message::Rebase { .. } => Kind::Rebase,
            Message::PeerWelcome { .. } => Kind::PeerWelcome,
            Message::Ack { .. } => Kind::Ack,
            Message::Refuse { .. } => Kind::Refuse,
            Message::RingOffer { .. } => Kind::RingOffer,
            Message::RingSwitch => Kind::RingSwitch,
            Message::RingAccept { .. } => Kind::RingAccept,
            Message::ControlHello { .. } => Kind::ControlHello,
            Message::Control { .. } => Kind::Control,
            Message::AuthHello { .. } => Kind::AuthHello,
            Message::AuthChallenge { .. } => Kind::AuthChallenge,
            Message::AuthProof { .. } => Kind::AuthProof,
            Message::JoinRequest { .. } => Kind::JoinRequest,
            Message::Joined { .. } => Kind::Joined,
            Message::ControlWelcome { .. } => Kind::ControlWelcome,
        }
    }

    /// Appends this message as one frame with request id `id` to `out`. It allocates
    /// only when `out` lacks the capacity. On error (a limit or a rule of the message is
    /// broken) nothing is appended.
    pub fn encode_into(&self, id: RequestId, out: &mut Vec<u8>) -> Result<(), WireError> {
        let start = out.len();
        let result = self.encode_frame(id, out, start);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn encode_frame(
        &self,
        id: RequestId,
        out: &mut Vec<u8>,
        start: usize,
    ) -> Result<(), WireError> {
        let kind = self.kind();
        out.resize(start + FRAME_HEADER_BYTES, 0);
        self.encode_body(&mut Writer::new(kind, out))?;
        Message::decode(kind, &out[start + FRAME_HEADER_BYTES..])?;
        frame::seal(&mut out[start..], kind, id);
        Ok(())
    }

    fn encode_body(&self, w: &mut Writer<'_>) -> Result<(), WireError> {
        match Plane::of(self.kind()) {
            Plane::Client => client::encode(self, w),
            Plane::Peer => peer::encode(self, w),
            Plane::Node => node::encode(self, w),
        }
    }

    /// Decodes and checks the body of a frame of kind `kind` (the checksum is the
    /// caller's: [`crate::wire::FrameDecoder`] checks it). Every length is checked
    /// against the body and its limit, trailing bytes are refused, and the rules in the
    /// module docs hold for every message this returns.
    pub fn decode(kind: Kind, body: &'a [u8]) -> Result<Message<'a>, WireError> {
        let max = kind.body_bytes_max();
        if body.len() > max {
            return Err(WireError::TooLarge {
                kind,
                len: body.len(),
                max,
            });
        }
        let mut r = Reader::new(kind, body);
        let message = match Plane::of(kind) {
            Plane::Client => client::decode(kind, &mut r)?,
            Plane::Peer => peer::decode(kind, &mut r)?,
            Plane::Node => node::decode(kind, &mut r)?,
        };
        r.finish()?;
        Ok(message)
    }
}

/// The planes of the protocol, each encoded and decoded in a file of its own.
enum Plane {
    /// Client and node (kinds 0x0_ and 0x1_).
    Client,
    /// Primary and member (0x2_ and 0x3_).
    Peer,
    /// Node and node: controllers, the secret's handshake, joins (0x4_).
    Node,
}

impl Plane {
    fn of(kind: Kind) -> Plane {
        match kind.code() >> 4 {
            0 | 1 => Plane::Client,
            2 | 3 => Plane::Peer,
            _ => Plane::Node,
        }
    }
}

fn stream<'a>(r: &mut Reader<'a>) -> Result<&'a str, WireError> {
    let name = r.str16("stream", STREAM_NAME_BYTES_MAX)?;
    check_stream_name(name).map_err(|e| r.malformed(e.to_string()))?;
    Ok(name)
}

fn auth_bytes<'a>(r: &mut Reader<'a>, field: &str) -> Result<&'a [u8; AUTH_BYTES], WireError> {
    Ok(r.bytes(AUTH_BYTES, field)?
        .try_into()
        .expect("bytes returns the length asked for"))
}

/// Why a `Rebase` breaks its rules, if it does.
fn rebase_broken(base_lsn: u64, base_epoch: u64, epoch: u64) -> Option<String> {
    if base_lsn == 0 {
        return Some("base_lsn is 0: a log starting at lsn 1 needs no rebase".into());
    }
    if base_epoch > epoch {
        return Some(format!(
            "base_epoch {base_epoch} is newer than the primary's epoch {epoch}"
        ));
    }
    None
}

/// A node address; length 0 stands for "not known".
fn addr<'a>(r: &mut Reader<'a>, field: &str) -> Result<Option<&'a str>, WireError> {
    let a = r.str16(field, NODE_ADDR_BYTES_MAX)?;
    Ok((!a.is_empty()).then_some(a))
}

/// `first_lsn u64, count u32`: a non-empty range of LSNs that does not wrap.
fn lsn_range(r: &mut Reader<'_>) -> Result<(u64, u32), WireError> {
    let first_lsn = r.lsn("first_lsn")?;
    let count = r.u32("count")?;
    if first_lsn == 0 {
        return Err(r.malformed("first_lsn is 0; LSNs start at 1"));
    }
    if count == 0 {
        return Err(r.malformed("count is 0"));
    }
    if first_lsn.checked_add(u64::from(count) - 1).is_none() {
        return Err(r.malformed(format!(
            "{count} records from lsn {first_lsn} run past the largest lsn"
        )));
    }
    Ok((first_lsn, count))
}
