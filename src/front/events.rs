//! Binlog events as a replica receives them from `COM_BINLOG_DUMP`: one event per
//! packet, each verified before anything else looks at it.
//!
//! A packet is `0x00`, then (on a semi-sync connection) `0xEF` and a flag byte whose bit
//! `0x01` asks for an ACK, then the event: a 19-byte header (timestamp, type, server id,
//! size, end position in its binlog file, flags), the body, and a CRC-32 of both. An
//! error packet ends the stream with the server's message; so does an EOF packet.
//!
//! Checks, each a clear error that ends the stream: the size in the header equals the
//! packet's; the checksum matches (through `mysql_common`'s event reader, which knows the
//! format description's quirks); the semi-sync header is where it must be; MariaDB's own
//! events (GTID, GTID list, rotate) parse completely. Nothing of a bad packet is kept.

use std::io::{self, Read};
use std::net::TcpStream;
use std::time::Duration;

use bytes::BytesMut;
use mysql_common::binlog::consts::BinlogChecksumAlg;
use mysql_common::binlog::consts::BinlogVersion;
use mysql_common::binlog::events::{BinlogEventFooter, Event, FormatDescriptionEvent, QueryEvent};
use mysql_common::proto::codec::PacketCodec;

use super::gtid::{Gtid, GtidState};

/// Bytes of an event header (binlog version 4).
pub const HEADER_BYTES: usize = 19;
/// Bytes of an event checksum.
pub const CHECKSUM_BYTES: usize = 4;

/// Event types the front looks at (MariaDB's numbering).
pub mod kind {
    pub const QUERY: u8 = 0x02;
    pub const STOP: u8 = 0x03;
    pub const ROTATE: u8 = 0x04;
    pub const INTVAR: u8 = 0x05;
    pub const APPEND_BLOCK: u8 = 0x09;
    pub const RAND: u8 = 0x0d;
    pub const USER_VAR: u8 = 0x0e;
    pub const FORMAT_DESCRIPTION: u8 = 0x0f;
    pub const XID: u8 = 0x10;
    pub const BEGIN_LOAD_QUERY: u8 = 0x11;
    pub const TABLE_MAP: u8 = 0x13;
    pub const INCIDENT: u8 = 0x1a;
    pub const HEARTBEAT: u8 = 0x1b;
    pub const XA_PREPARE: u8 = 0x26;
    pub const ANNOTATE_ROWS: u8 = 0xa0;
    pub const BINLOG_CHECKPOINT: u8 = 0xa1;
    pub const GTID: u8 = 0xa2;
    pub const GTID_LIST: u8 = 0xa3;
    pub const START_ENCRYPTION: u8 = 0xa4;
}

/// `flags2` bits of MariaDB's GTID event.
pub mod gtid_flags {
    /// The group has no terminating COMMIT: it is the one statement that follows.
    pub const STANDALONE: u8 = 0x01;
    pub const GROUP_COMMIT_ID: u8 = 0x02;
    pub const TRANSACTIONAL: u8 = 0x04;
    pub const PREPARED_XA: u8 = 0x40;
    pub const COMPLETED_XA: u8 = 0x80;
}

/// The `LOG_EVENT_ARTIFICIAL_F` header flag: an event the server made up for this
/// connection (the first ROTATE), not one of its binlog.
pub const ARTIFICIAL_FLAG: u16 = 0x0020;

/// Why a binlog stream ended.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("read the binlog from {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("read the binlog from {addr}: the server closed the connection")]
    Closed { addr: String },
    #[error("the binlog stream from {addr} ended (EOF packet)")]
    Ended { addr: String },
    #[error("the binlog dump on {addr} failed: ERROR {code}: {message}")]
    Server {
        addr: String,
        code: u16,
        message: String,
    },
    /// The stream broke the protocol or an event failed its checks.
    #[error("the binlog from {addr}: {reason}")]
    Bad { addr: String, reason: String },
    #[error("the binlog from {addr}: no event or heartbeat for {after:?}")]
    Silent { addr: String, after: Duration },
}

/// One event, verified.
#[derive(Clone, Debug)]
pub struct BinlogEvent {
    pub kind: u8,
    pub timestamp: u32,
    pub server_id: u32,
    /// End position of the event in its binlog file (0 for some artificial events).
    pub log_pos: u32,
    pub flags: u16,
    /// The primary asked for an ACK once this event is held.
    pub needs_ack: bool,
    /// The whole event as the primary's binlog holds it: header, body, checksum.
    pub bytes: Vec<u8>,
    /// Bytes of checksum at the end of `bytes` (0 or 4).
    checksum_bytes: usize,
}

impl BinlogEvent {
    /// The event's body, without header and checksum.
    pub fn body(&self) -> &[u8] {
        &self.bytes[HEADER_BYTES..self.bytes.len() - self.checksum_bytes]
    }

    pub fn is_artificial(&self) -> bool {
        self.flags & ARTIFICIAL_FLAG != 0
    }
}

/// The header fields of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub timestamp: u32,
    pub kind: u8,
    pub server_id: u32,
    pub size: u32,
    pub log_pos: u32,
    pub flags: u16,
}

impl Header {
    pub fn parse(bytes: &[u8]) -> Option<Header> {
        let b = bytes.get(..HEADER_BYTES)?;
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Some(Header {
            timestamp: u32_at(0),
            kind: b[4],
            server_id: u32_at(5),
            size: u32_at(9),
            log_pos: u32_at(13),
            flags: u16::from_le_bytes([b[17], b[18]]),
        })
    }
}

/// What verifying a stream's events needs: its last format description. The front
/// negotiates CRC32 (`@master_binlog_checksum`) and refuses primaries without it, so
/// every event carries a checksum.
#[derive(Clone, Debug)]
pub struct Checksums {
    fde: FormatDescriptionEvent<'static>,
}

impl Checksums {
    /// A stream whose events carry CRC-32 checksums (as negotiated with
    /// `@master_binlog_checksum`), until a format description says otherwise.
    pub fn crc32() -> Checksums {
        Checksums {
            fde: FormatDescriptionEvent::new(BinlogVersion::Version4).with_footer(
                BinlogEventFooter::new(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32),
            ),
        }
    }

    /// Verifies one whole event (header through checksum) and returns it parsed.
    pub fn verify(&mut self, bytes: Vec<u8>, needs_ack: bool) -> Result<BinlogEvent, String> {
        let header =
            Header::parse(&bytes).ok_or_else(|| format!("an event of {} bytes", bytes.len()))?;
        if header.size as usize != bytes.len() {
            return Err(format!(
                "an event of type {:#04x} says it is {} bytes long but {} arrived",
                header.kind,
                header.size,
                bytes.len()
            ));
        }
        let is_fde = header.kind == kind::FORMAT_DESCRIPTION;
        // The smallest body the event reader can take apart without running out.
        let min = if is_fde {
            HEADER_BYTES
                + FormatDescriptionEvent::SERVER_VER_OFFSET
                + FormatDescriptionEvent::SERVER_VER_LEN
                + 1
                + BinlogEventFooter::BINLOG_CHECKSUM_ALG_DESC_LEN
                + CHECKSUM_BYTES
        } else {
            HEADER_BYTES + CHECKSUM_BYTES
        };
        if bytes.len() < min {
            return Err(format!(
                "an event of type {:#04x} of only {} bytes",
                header.kind,
                bytes.len()
            ));
        }
        let checksum_bytes = CHECKSUM_BYTES;
        if is_fde {
            // The format description names the checksum algorithm of what follows; the
            // front negotiated CRC32 and verifies the description itself before it
            // believes a word of it (its parser would take a corrupted version text
            // for a server without checksums).
            let alg = bytes[bytes.len() - CHECKSUM_BYTES - 1];
            if alg != BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32 as u8 {
                return Err(format!(
                    "the format description names checksum algorithm {alg}; the front \
                     needs CRC32"
                ));
            }
            let mut hasher = crc32fast::Hasher::new();
            let body = &bytes[..bytes.len() - CHECKSUM_BYTES];
            // The in-use flag is set while the file is open and is not part of the
            // checksum.
            hasher.update(&body[..17]);
            hasher.update(&[body[17] & !0x01]);
            hasher.update(&body[18..]);
            let computed = hasher.finalize();
            let stored = u32::from_le_bytes(
                bytes[bytes.len() - CHECKSUM_BYTES..]
                    .try_into()
                    .expect("4 bytes"),
            );
            if computed != stored {
                return Err(format!(
                    "the checksum of the format description does not match (stored \
                     {stored:#010x}, computed {computed:#010x}): corrupted in transit"
                ));
            }
            let event = Event::read(&self.fde, &bytes[..])
                .map_err(|e| format!("a bad format description: {e}"))?;
            self.fde = event
                .read_event::<FormatDescriptionEvent<'_>>()
                .map_err(|e| format!("a bad format description: {e}"))?
                .with_footer(BinlogEventFooter::new(
                    BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32,
                ))
                .into_owned();
        } else {
            let event = Event::read(&self.fde, &bytes[..])
                .map_err(|e| format!("an event of type {:#04x}: {e}", header.kind))?;
            let stored = event.checksum().map(u32::from_le_bytes);
            let computed = event.calc_checksum(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32);
            if stored != Some(computed) {
                let stored = stored.map_or_else(|| "none".to_string(), |v| format!("{v:#010x}"));
                return Err(format!(
                    "the checksum of an event of type {:#04x} ending at {} does not match \
                     (stored {stored}, computed {computed:#010x}): corrupted in transit",
                    header.kind, header.log_pos
                ));
            }
        }
        Ok(BinlogEvent {
            kind: header.kind,
            timestamp: header.timestamp,
            server_id: header.server_id,
            log_pos: header.log_pos,
            flags: header.flags,
            needs_ack,
            bytes,
            checksum_bytes,
        })
    }
}

/// MariaDB's GTID event: the start of an event group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GtidEvent {
    pub gtid: Gtid,
    pub flags: u8,
}

impl GtidEvent {
    pub fn parse(event: &BinlogEvent) -> Result<GtidEvent, String> {
        let b = event.body();
        if b.len() < 13 {
            return Err(format!("a GTID event with a body of {} bytes", b.len()));
        }
        let seq = u64::from_le_bytes(b[0..8].try_into().expect("8 bytes"));
        let domain = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
        Ok(GtidEvent {
            gtid: Gtid {
                domain,
                server: event.server_id,
                seq,
            },
            flags: b[12],
        })
    }

    pub fn standalone(&self) -> bool {
        self.flags & gtid_flags::STANDALONE != 0
    }
}

/// MariaDB's GTID list event: the position at the start of a binlog file.
pub fn parse_gtid_list(body: &[u8]) -> Result<GtidState, String> {
    let count_raw = body
        .get(0..4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
        .ok_or("a GTID list event without its count")?;
    // The top four bits are flags.
    let count = (count_raw & 0x0fff_ffff) as usize;
    let need = 4 + count.saturating_mul(16);
    if body.len() < need {
        return Err(format!(
            "a GTID list of {count} entries in {} bytes",
            body.len()
        ));
    }
    let mut state = GtidState::new();
    for i in 0..count {
        let e = &body[4 + 16 * i..4 + 16 * (i + 1)];
        state.advance(Gtid {
            domain: u32::from_le_bytes(e[0..4].try_into().expect("4 bytes")),
            server: u32::from_le_bytes(e[4..8].try_into().expect("4 bytes")),
            seq: u64::from_le_bytes(e[8..16].try_into().expect("8 bytes")),
        })?;
    }
    Ok(state)
}

/// A ROTATE event: the next binlog file and the position in it.
pub fn parse_rotate(body: &[u8]) -> Result<(String, u64), String> {
    if body.len() < 9 {
        return Err(format!(
            "a rotate event with a body of {} bytes",
            body.len()
        ));
    }
    let pos = u64::from_le_bytes(body[0..8].try_into().expect("8 bytes"));
    let name = std::str::from_utf8(&body[8..])
        .map_err(|_| "a rotate event whose file name is not UTF-8".to_string())?;
    if name.is_empty() || name.len() > super::record::FILE_NAME_BYTES_MAX {
        return Err(format!(
            "a rotate event naming a file of {} bytes",
            name.len()
        ));
    }
    Ok((name.to_owned(), pos))
}

/// Whether a QUERY event ends its group: `COMMIT`, `ROLLBACK`, `XA COMMIT ...` or
/// `XA ROLLBACK ...` (MariaDB's own test for a group's end, `is_group_ending`).
pub fn query_ends_group(event: &BinlogEvent, checksums: &Checksums) -> Result<bool, String> {
    let parsed =
        Event::read(&checksums.fde, &event.bytes[..]).map_err(|e| format!("a query event: {e}"))?;
    let query: QueryEvent<'_> = parsed
        .read_event()
        .map_err(|e| format!("a bad query event ending at {}: {e}", event.log_pos))?;
    let text = query.query_raw().trim_ascii();
    let starts = |prefix: &[u8]| {
        text.len() >= prefix.len() && text[..prefix.len()].eq_ignore_ascii_case(prefix)
    };
    Ok(text.eq_ignore_ascii_case(b"COMMIT")
        || text.eq_ignore_ascii_case(b"ROLLBACK")
        || starts(b"XA COMMIT")
        || starts(b"XA ROLLBACK"))
}

/// The replica side of `COM_BINLOG_DUMP`: reads and verifies one event at a time.
pub struct BinlogStream {
    addr: String,
    socket: TcpStream,
    input: BytesMut,
    packet_bytes_max: usize,
    semi_sync: bool,
    pub checksums: Checksums,
}

/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 256 << 10;

/// The largest chunk of a packet: a packet of this size continues in the next chunk.
const CHUNK_BYTES_MAX: usize = 0xff_ffff;

impl BinlogStream {
    /// Takes over a connection that has just sent `COM_BINLOG_DUMP`. `silence` bounds
    /// the wait for any packet (heartbeats arrive when the primary is idle).
    pub fn new(
        socket: TcpStream,
        codec: PacketCodec,
        input: BytesMut,
        addr: String,
        semi_sync: bool,
        silence: Duration,
    ) -> Result<BinlogStream, StreamError> {
        socket
            .set_read_timeout(Some(silence))
            .map_err(|source| StreamError::Io {
                addr: addr.clone(),
                source,
            })?;
        Ok(BinlogStream {
            addr,
            socket,
            packet_bytes_max: codec.max_allowed_packet,
            input,
            semi_sync,
            checksums: Checksums::crc32(),
        })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The connection, for the ACK writer and to shut it down from another thread.
    pub fn socket(&self) -> &TcpStream {
        &self.socket
    }

    fn bad(&self, reason: impl Into<String>) -> StreamError {
        StreamError::Bad {
            addr: self.addr.clone(),
            reason: reason.into(),
        }
    }

    /// Whether the next event is already received, so that `next_event` would not wait.
    pub fn event_buffered(&self) -> bool {
        if self.input.len() < 4 {
            return false;
        }
        let len = usize::from(self.input[0])
            | usize::from(self.input[1]) << 8
            | usize::from(self.input[2]) << 16;
        // A packet of the largest chunk size continues in the next one.
        len < CHUNK_BYTES_MAX && self.input.len() >= 4 + len
    }

    /// The next event, verified.
    pub fn next_event(&mut self) -> Result<BinlogEvent, StreamError> {
        let packet = self.read_packet()?;
        match packet.first() {
            Some(0x00) => {}
            Some(0xff) => {
                let code = packet
                    .get(1..3)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]))
                    .unwrap_or(0);
                // Error packet: code, '#', five-byte SQL state, message.
                let message = packet.get(9..).unwrap_or_default();
                return Err(StreamError::Server {
                    addr: self.addr.clone(),
                    code,
                    message: String::from_utf8_lossy(message).into_owned(),
                });
            }
            Some(0xfe) if packet.len() < 9 => {
                return Err(StreamError::Ended {
                    addr: self.addr.clone(),
                });
            }
            Some(b) => return Err(self.bad(format!("a packet starting with {b:#04x}"))),
            None => return Err(self.bad("an empty packet")),
        }
        let (needs_ack, start) = if self.semi_sync {
            match packet.get(1..3) {
                Some([0xef, flag]) => (flag & 0x01 != 0, 3),
                _ => {
                    return Err(self.bad("an event without its semi-sync header (0xEF, flags)"));
                }
            }
        } else {
            (false, 1)
        };
        let mut bytes = packet;
        bytes.drain(..start);
        self.checksums
            .verify(bytes, needs_ack)
            .map_err(|reason| self.bad(reason))
    }

    /// Reads one whole packet (split packets joined). Sequence numbers are not
    /// checked: a semi-sync primary restarts them after every event that asks for an
    /// ACK (it takes the ACK as a new exchange), as MariaDB's own replica expects.
    fn read_packet(&mut self) -> Result<Vec<u8>, StreamError> {
        let mut packet = Vec::new();
        loop {
            if self.input.len() >= 4 {
                let len = usize::from(self.input[0])
                    | usize::from(self.input[1]) << 8
                    | usize::from(self.input[2]) << 16;
                if packet.len() + len > self.packet_bytes_max {
                    return Err(self.bad(format!(
                        "a packet of more than {} bytes (event_bytes_max)",
                        self.packet_bytes_max
                    )));
                }
                if self.input.len() >= 4 + len {
                    packet.extend_from_slice(&self.input[4..4 + len]);
                    let _ = self.input.split_to(4 + len);
                    // A chunk of the largest size continues in the next one.
                    if len < CHUNK_BYTES_MAX {
                        return Ok(packet);
                    }
                    continue;
                }
            }
            let start = self.input.len();
            self.input.resize(start + READ_CHUNK_BYTES, 0);
            let read = loop {
                match self.socket.read(&mut self.input[start..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            };
            match read {
                Ok(0) => {
                    self.input.truncate(start);
                    return Err(StreamError::Closed {
                        addr: self.addr.clone(),
                    });
                }
                Ok(n) => self.input.truncate(start + n),
                Err(e) => {
                    self.input.truncate(start);
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) {
                        let after = self
                            .socket
                            .read_timeout()
                            .ok()
                            .flatten()
                            .unwrap_or_default();
                        return Err(StreamError::Silent {
                            addr: self.addr.clone(),
                            after,
                        });
                    }
                    return Err(StreamError::Io {
                        addr: self.addr.clone(),
                        source: e,
                    });
                }
            }
        }
    }
}
