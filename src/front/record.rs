//! The records a front writes into its stream, and how readers take them apart.
//!
//! A stream fed by a front holds two kinds of record (little-endian throughout):
//!
//! ```text
//! common:  magic "LSdb" | version u8 = 1 | kind u8 | reserved u16 = 0
//!          position: count u16, then count × (domain u32, server u32, sequence u64)
//! piece:   flags u8 (0x01 first piece, 0x02 last piece) | GTID (domain u32, server u32,
//!          sequence u64) | end position u64 | file name (u16 length, bytes)
//!          | events (the rest): a slice of the transaction's binlog events, byte for byte
//! format:  upstream address (u16, bytes) | server id u32 | server version (u16, bytes)
//!          | binlog file (u16, bytes) | position u64 | format description (u32, bytes)
//! ```
//!
//! A transaction is one or more *pieces*: the first has flag `first`, the last flag
//! `last` (a small transaction is one piece with both). Its events, concatenated, are
//! exactly what the primary's binlog holds for it, headers and checksums included. The
//! end position and file name of the last piece are where the transaction ends in the
//! primary's binlog: the position the front ACKs.
//!
//! The *position* (GTID state) of a record is the stream's position after it: after the
//! transaction for a last piece, before it for any other piece, and the position the
//! session started from for a format record. So the last record of a stream says where
//! the stream stands, whatever its kind.
//!
//! A *format* record starts every front session: who the primary was, its binlog
//! format description (which readers need to decode the events) and where the session
//! began. A transaction whose pieces are cut off by a format record or by another
//! transaction's first piece was abandoned by a session that ended; it is resent whole
//! by the next session and readers skip the abandoned pieces.
//!
//! Records without the magic are not the front's; readers skip them.

use super::gtid::{DOMAINS_MAX, Gtid, GtidState};
use crate::constants::PAYLOAD_BYTES_MAX;

pub const MAGIC: [u8; 4] = *b"LSdb";
pub const VERSION: u8 = 1;

const KIND_PIECE: u8 = 1;
const KIND_FORMAT: u8 = 2;

const FLAG_FIRST: u8 = 0x01;
const FLAG_LAST: u8 = 0x02;

/// Longest binlog file name a record carries.
pub const FILE_NAME_BYTES_MAX: usize = 512;
/// Longest address or version text a format record carries.
pub const TEXT_BYTES_MAX: usize = 512;
/// Largest format description event a format record carries.
pub const FORMAT_EVENT_BYTES_MAX: usize = 64 << 10;

/// Largest record header: the common part with a full position, and a piece's fields.
pub const PIECE_HEADER_BYTES_MAX: usize =
    8 + 2 + 16 * DOMAINS_MAX + 1 + 16 + 8 + 2 + FILE_NAME_BYTES_MAX;

/// Most event bytes in one piece: a piece with a full header fits one lockstep record.
pub const PIECE_EVENT_BYTES_MAX: usize = 512 << 10;

/// Largest format record.
pub const FORMAT_BYTES_MAX: usize =
    8 + 2 + 16 * DOMAINS_MAX + 3 * (2 + TEXT_BYTES_MAX) + 4 + 8 + 4 + FORMAT_EVENT_BYTES_MAX;

/// Largest record a front writes: a node's log batch must hold one.
pub const RECORD_PAYLOAD_BYTES_MAX: usize =
    if FORMAT_BYTES_MAX > PIECE_HEADER_BYTES_MAX + PIECE_EVENT_BYTES_MAX {
        FORMAT_BYTES_MAX
    } else {
        PIECE_HEADER_BYTES_MAX + PIECE_EVENT_BYTES_MAX
    };

const _: () = assert!(RECORD_PAYLOAD_BYTES_MAX <= PAYLOAD_BYTES_MAX);

/// A piece of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    pub first: bool,
    pub last: bool,
    pub gtid: Gtid,
    /// End position of the piece's last event in the primary's binlog file.
    pub end_pos: u64,
    pub file: String,
    pub events: Vec<u8>,
}

/// The start of a front session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Format {
    pub upstream: String,
    pub server_id: u32,
    pub server_version: String,
    pub file: String,
    pub pos: u64,
    /// The primary's format description event, whole (header to checksum).
    pub format_event: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    Piece(Piece),
    Format(Format),
}

/// A record of a front's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontRecord {
    /// The stream's position after this record (see the module docs).
    pub position: GtidState,
    pub body: Body,
}

/// Why a record is not a front record that can be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Not written by a front (no magic): not an error for readers, who skip it.
    #[error("not a front record")]
    Foreign,
    #[error("front record version {0}; this lockstep reads version {VERSION}")]
    Version(u8),
    #[error("a bad front record: {0}")]
    Bad(String),
}

impl FrontRecord {
    /// Appends the encoding of this record to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let kind = match self.body {
            Body::Piece(_) => KIND_PIECE,
            Body::Format(_) => KIND_FORMAT,
        };
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(kind);
        out.extend_from_slice(&0u16.to_le_bytes());
        assert!(self.position.len() <= DOMAINS_MAX);
        out.extend_from_slice(&(self.position.len() as u16).to_le_bytes());
        for g in self.position.iter() {
            put_gtid(out, g);
        }
        match &self.body {
            Body::Piece(p) => {
                assert!(p.events.len() <= PIECE_EVENT_BYTES_MAX);
                let flags =
                    if p.first { FLAG_FIRST } else { 0 } | if p.last { FLAG_LAST } else { 0 };
                out.push(flags);
                put_gtid(out, &p.gtid);
                out.extend_from_slice(&p.end_pos.to_le_bytes());
                put_text(out, &p.file, FILE_NAME_BYTES_MAX);
                out.extend_from_slice(&p.events);
            }
            Body::Format(f) => {
                put_text(out, &f.upstream, TEXT_BYTES_MAX);
                out.extend_from_slice(&f.server_id.to_le_bytes());
                put_text(out, &f.server_version, TEXT_BYTES_MAX);
                put_text(out, &f.file, FILE_NAME_BYTES_MAX);
                out.extend_from_slice(&f.pos.to_le_bytes());
                assert!(f.format_event.len() <= FORMAT_EVENT_BYTES_MAX);
                out.extend_from_slice(&(f.format_event.len() as u32).to_le_bytes());
                out.extend_from_slice(&f.format_event);
            }
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Decodes a record's payload.
    pub fn decode(payload: &[u8]) -> Result<FrontRecord, RecordError> {
        if payload.get(..4) != Some(&MAGIC[..]) {
            return Err(RecordError::Foreign);
        }
        let mut r = Reader {
            buf: payload,
            at: 4,
        };
        let version = r.u8()?;
        if version != VERSION {
            return Err(RecordError::Version(version));
        }
        let kind = r.u8()?;
        if r.u16()? != 0 {
            return Err(RecordError::Bad("reserved bytes are not zero".into()));
        }
        let count = r.u16()? as usize;
        if count > DOMAINS_MAX {
            return Err(RecordError::Bad(format!("a position of {count} domains")));
        }
        let mut position = GtidState::new();
        for _ in 0..count {
            let g = r.gtid()?;
            if position.get(g.domain).is_some() {
                return Err(RecordError::Bad(format!(
                    "domain {} twice in a position",
                    g.domain
                )));
            }
            position.advance(g).map_err(RecordError::Bad)?;
        }
        let body = match kind {
            KIND_PIECE => {
                let flags = r.u8()?;
                if flags & !(FLAG_FIRST | FLAG_LAST) != 0 {
                    return Err(RecordError::Bad(format!("piece flags {flags:#04x}")));
                }
                let gtid = r.gtid()?;
                let end_pos = r.u64()?;
                let file = r.text(FILE_NAME_BYTES_MAX)?;
                let events = r.rest().to_vec();
                if events.len() > PIECE_EVENT_BYTES_MAX {
                    return Err(RecordError::Bad(format!(
                        "a piece of {} bytes",
                        events.len()
                    )));
                }
                Body::Piece(Piece {
                    first: flags & FLAG_FIRST != 0,
                    last: flags & FLAG_LAST != 0,
                    gtid,
                    end_pos,
                    file,
                    events,
                })
            }
            KIND_FORMAT => {
                let upstream = r.text(TEXT_BYTES_MAX)?;
                let server_id = r.u32()?;
                let server_version = r.text(TEXT_BYTES_MAX)?;
                let file = r.text(FILE_NAME_BYTES_MAX)?;
                let pos = r.u64()?;
                let len = r.u32()? as usize;
                if len > FORMAT_EVENT_BYTES_MAX {
                    return Err(RecordError::Bad(format!("a format event of {len} bytes")));
                }
                let format_event = r.take(len)?.to_vec();
                if !r.rest().is_empty() {
                    return Err(RecordError::Bad("bytes after a format record".into()));
                }
                Body::Format(Format {
                    upstream,
                    server_id,
                    server_version,
                    file,
                    pos,
                    format_event,
                })
            }
            other => return Err(RecordError::Bad(format!("record kind {other}"))),
        };
        Ok(FrontRecord { position, body })
    }
}

fn put_gtid(out: &mut Vec<u8>, g: &Gtid) {
    out.extend_from_slice(&g.domain.to_le_bytes());
    out.extend_from_slice(&g.server.to_le_bytes());
    out.extend_from_slice(&g.seq.to_le_bytes());
}

fn put_text(out: &mut Vec<u8>, text: &str, max: usize) {
    assert!(
        text.len() <= max,
        "text of {} bytes, at most {max}",
        text.len()
    );
    out.extend_from_slice(&(text.len() as u16).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(RecordError::Bad(format!(
                "cut short at byte {} of {}",
                self.at,
                self.buf.len()
            )));
        };
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, RecordError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn gtid(&mut self) -> Result<Gtid, RecordError> {
        Ok(Gtid {
            domain: self.u32()?,
            server: self.u32()?,
            seq: self.u64()?,
        })
    }

    fn text(&mut self, max: usize) -> Result<String, RecordError> {
        let len = self.u16()? as usize;
        if len > max {
            return Err(RecordError::Bad(format!(
                "a text of {len} bytes, at most {max}"
            )));
        }
        String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| RecordError::Bad("a text that is not UTF-8".into()))
    }

    fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.at..];
        self.at = self.buf.len();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece() -> FrontRecord {
        FrontRecord {
            position: GtidState::parse("0-1-41,3-2-7").unwrap(),
            body: Body::Piece(Piece {
                first: true,
                last: true,
                gtid: Gtid {
                    domain: 0,
                    server: 1,
                    seq: 42,
                },
                end_pos: 12_345,
                file: "binlog.000007".into(),
                events: vec![1, 2, 3, 4, 5],
            }),
        }
    }

    fn format() -> FrontRecord {
        FrontRecord {
            position: GtidState::parse("0-1-41").unwrap(),
            body: Body::Format(Format {
                upstream: "127.0.0.1:3306".into(),
                server_id: 1,
                server_version: "10.11.19-MariaDB-log".into(),
                file: "binlog.000007".into(),
                pos: 4,
                format_event: vec![9; 256],
            }),
        }
    }

    #[test]
    fn records_decode_to_what_was_encoded() {
        for r in [piece(), format()] {
            assert_eq!(FrontRecord::decode(&r.encode()).unwrap(), r);
        }
    }

    #[test]
    fn every_cut_and_every_flipped_header_byte_is_an_error_or_a_different_record() {
        for r in [piece(), format()] {
            let bytes = r.encode();
            let fixed = match r.body {
                // A piece's events are the rest of the record: a cut inside them is
                // a shorter piece, which the transaction's checks catch.
                Body::Piece(_) => bytes.len() - 5,
                Body::Format(_) => bytes.len(),
            };
            for cut in 0..fixed {
                assert!(FrontRecord::decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
            for i in 0..fixed {
                let mut b = bytes.clone();
                b[i] ^= 0x55;
                if let Ok(d) = FrontRecord::decode(&b) {
                    assert_ne!(d, r, "byte {i} flipped decoded to the same record");
                }
            }
        }
    }

    #[test]
    fn records_of_other_writers_and_versions_are_told_apart() {
        assert_eq!(FrontRecord::decode(b"payload"), Err(RecordError::Foreign));
        assert_eq!(FrontRecord::decode(b""), Err(RecordError::Foreign));
        let mut b = piece().encode();
        b[4] = 2;
        assert_eq!(FrontRecord::decode(&b), Err(RecordError::Version(2)));
    }
}
