//! A MariaDB binlog file as an export writes it, and the events it makes for it.
//!
//! ```text
//! file:   magic "\xfebin" | FORMAT_DESCRIPTION | GTID_LIST | transactions' events ... | [ROTATE]
//! event:  timestamp u32 | type u8 | server id u32 | size u32 | log_pos u32 | flags u16
//!         | body | CRC-32 of everything before it
//! ```
//!
//! Every event carries a CRC-32: the front accepts only primaries whose format
//! description names CRC32 (see [`super::events`]), and so does [`Fde::new`].
//!
//! Every event's `log_pos` is the offset in its file where the event ends; a reader
//! (`mariadb-binlog`, a server reading its own binlog) navigates by it. The primary's
//! events carry the offsets of the primary's files, so each is rewritten for the file
//! it lands in, and its checksum, which covers the header, is computed again.
//!
//! Invariants of a file written here:
//! - It starts with the magic, the primary's format description (its `log_pos` set
//!   for this file, the in-use flag and the creation time cleared, its checksum
//!   recomputed) and a GTID_LIST event holding the position at the start of the file.
//! - Then whole transactions, each event's `log_pos` its end offset here and its
//!   checksum valid; optionally a ROTATE event naming the next file, last.
//! - A stored event's checksum is verified before the event is rewritten: an event
//!   damaged since the primary wrote it is an error, never signed afresh.
//! - No event ends beyond 4 GiB, as `log_pos` is 32 bits: a transaction that would is
//!   an error, never a wrapped offset.
//!
//! Fault model: every I/O error is returned with the operation and the file; a file
//! that fails is left as it is for the caller (the export) to remove with its
//! directory. A file is durable (`fsync`) once [`BinlogFile::close`] returns.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use mysql_common::binlog::events::RotateEvent;
use mysql_common::proto::MySerialize;

use super::events::{CHECKSUM_BYTES, Checksums, HEADER_BYTES, Header, kind};
use super::gtid::{Gtid, GtidState};

/// The first four bytes of every binlog file.
pub const MAGIC: [u8; 4] = [0xfe, b'b', b'i', b'n'];

/// Offsets in an event header.
const LOG_POS_OFFSET: usize = 13;
const FLAGS_OFFSET: usize = 17;

/// `LOG_EVENT_BINLOG_IN_USE_F`: set in the format description of a file the server is
/// still writing; a reader that finds it in a closed file concludes the server crashed.
const IN_USE_FLAG: u16 = 0x0001;

/// Where the format description's creation time sits: after the binlog version (u16)
/// and the server version (50 bytes) of its body.
const FDE_CREATED_OFFSET: usize = HEADER_BYTES + 2 + 50;
/// The smallest format description: header, version, server version, creation time,
/// header length, checksum algorithm and checksum.
const FDE_BYTES_MIN: usize = FDE_CREATED_OFFSET + 4 + 1 + 1 + CHECKSUM_BYTES;

/// Bytes buffered before a write to the file.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// Why a binlog file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum BinlogError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An event of a transaction failed its checks.
    #[error("transaction {gtid}: {reason}")]
    Event { gtid: Gtid, reason: String },
    #[error(
        "transaction {gtid} would end at byte {end} of {}, beyond the 4 GiB a binlog \
         event's 32-bit log_pos can name",
        path.display()
    )]
    TooLarge { gtid: Gtid, end: u64, path: PathBuf },
}

/// The primary's format description, checked, and what it says about its events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fde {
    /// The event as the primary sent it, header to checksum.
    event: Vec<u8>,
}

impl Fde {
    /// Checks the primary's format description: its checksum, its parse by
    /// `mysql_common`, and that it names CRC32 for the events it describes.
    pub fn new(event: &[u8]) -> Result<Fde, String> {
        let header = Header::parse(event)
            .ok_or_else(|| format!("a format description of {} bytes", event.len()))?;
        if header.kind != kind::FORMAT_DESCRIPTION {
            return Err(format!(
                "an event of type {:#04x} where a format description belongs",
                header.kind
            ));
        }
        if event.len() < FDE_BYTES_MIN {
            return Err(format!(
                "a format description of {} bytes, at least {FDE_BYTES_MIN}",
                event.len()
            ));
        }
        Checksums::crc32().verify(event.to_vec(), false)?;
        Ok(Fde {
            event: event.to_vec(),
        })
    }

    /// The server that wrote it.
    pub fn server_id(&self) -> u32 {
        Header::parse(&self.event).expect("checked").server_id
    }

    /// When it was written.
    pub fn timestamp(&self) -> u32 {
        Header::parse(&self.event).expect("checked").timestamp
    }

    /// Whether events described by `other` are laid out as those described by this one:
    /// everything but the header, the creation time and the checksum is the same
    /// (those differ between the binlog files of one server).
    pub fn same_layout(&self, other: &Fde) -> bool {
        let layout = |e: &[u8]| -> (Vec<u8>, Vec<u8>) {
            let end = e.len() - CHECKSUM_BYTES;
            (
                e[HEADER_BYTES..FDE_CREATED_OFFSET].to_vec(),
                e[FDE_CREATED_OFFSET + 4..end].to_vec(),
            )
        };
        layout(&self.event) == layout(&other.event)
    }

    /// The event that heads a file written here: it ends at `MAGIC.len() + size`, the
    /// in-use flag is cleared (the file is closed when anyone reads it) and so is the
    /// creation time. MariaDB sets the creation time only in the first binlog after a
    /// server start, to tell readers that temporary tables and open transactions of
    /// the sessions before are gone; an export starts no server. The checksum is
    /// computed again.
    pub fn for_file(&self) -> Vec<u8> {
        let mut e = self.event.clone();
        let flags = u16::from_le_bytes([e[FLAGS_OFFSET], e[FLAGS_OFFSET + 1]]) & !IN_USE_FLAG;
        e[FLAGS_OFFSET..FLAGS_OFFSET + 2].copy_from_slice(&flags.to_le_bytes());
        e[FDE_CREATED_OFFSET..FDE_CREATED_OFFSET + 4].fill(0);
        let end = u32::try_from(MAGIC.len() + e.len()).expect("a format description is small");
        seal(&mut e, end);
        e
    }
}

/// Sets the event's `log_pos` to `end` and computes its checksum.
fn seal(event: &mut [u8], end: u32) {
    assert!(event.len() >= HEADER_BYTES + CHECKSUM_BYTES);
    assert_eq!(
        Header::parse(event).expect("a header").size as usize,
        event.len()
    );
    event[LOG_POS_OFFSET..LOG_POS_OFFSET + 4].copy_from_slice(&end.to_le_bytes());
    let body = event.len() - CHECKSUM_BYTES;
    let sum = crc32fast::hash(&event[..body]);
    event[body..].copy_from_slice(&sum.to_le_bytes());
}

/// Checks one of the primary's events and rewrites it to end at `end` in a new file.
/// Its stored checksum must match before it is replaced.
pub fn rewrite(event: &mut [u8], end: u32) -> Result<(), String> {
    let header =
        Header::parse(event).ok_or_else(|| format!("an event of {} bytes", event.len()))?;
    if header.size as usize != event.len() {
        return Err(format!(
            "an event of type {:#04x} says it is {} bytes long but is {}",
            header.kind,
            header.size,
            event.len()
        ));
    }
    if event.len() < HEADER_BYTES + CHECKSUM_BYTES {
        return Err(format!(
            "an event of type {:#04x} of {} bytes has no room for its checksum",
            header.kind,
            event.len()
        ));
    }
    let body = event.len() - CHECKSUM_BYTES;
    let stored = u32::from_le_bytes(event[body..].try_into().expect("4 bytes"));
    let computed = crc32fast::hash(&event[..body]);
    if stored != computed {
        return Err(format!(
            "the checksum of an event of type {:#04x} that ended at {} in the primary's \
             binlog does not match (stored {stored:#010x}, computed {computed:#010x})",
            header.kind, header.log_pos
        ));
    }
    seal(event, end);
    Ok(())
}

/// Why a transaction's events cannot be placed in a file.
#[derive(Debug, PartialEq, Eq)]
pub enum PlaceError {
    /// An event failed its checks.
    Event(String),
    /// An event would end beyond 4 GiB: its end offset.
    TooLarge(u64),
}

/// Where a transaction's events landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placed {
    /// The offset after its last event.
    pub end: u64,
    /// The latest timestamp of its events.
    pub timestamp: u32,
}

/// Rewrites the events of one transaction in place for a file where they start at
/// offset `start` (see [`rewrite`]). All are checked before the caller writes any, so
/// a transaction that fails leaves its file as it was.
pub fn place(events: &mut [u8], start: u64) -> Result<Placed, PlaceError> {
    let mut at = 0;
    let mut timestamp = 0;
    while at < events.len() {
        let header = Header::parse(&events[at..]).ok_or_else(|| {
            PlaceError::Event(format!(
                "an event header cut at byte {at} of {}",
                events.len()
            ))
        })?;
        let size = header.size as usize;
        if size < HEADER_BYTES || at + size > events.len() {
            return Err(PlaceError::Event(format!(
                "an event of {size} bytes at byte {at} of {}",
                events.len()
            )));
        }
        let end = start + (at + size) as u64;
        let end = u32::try_from(end).map_err(|_| PlaceError::TooLarge(end))?;
        rewrite(&mut events[at..at + size], end).map_err(PlaceError::Event)?;
        timestamp = timestamp.max(header.timestamp);
        at += size;
    }
    Ok(Placed {
        end: start + events.len() as u64,
        timestamp,
    })
}

/// What generated events carry in their header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub timestamp: u32,
    pub server_id: u32,
}

/// An event of type `kind` with `body` that starts at offset `at` of its file.
fn event(kind: u8, stamp: Stamp, body: &[u8], at: u64) -> Vec<u8> {
    let size = HEADER_BYTES + body.len() + CHECKSUM_BYTES;
    let end = u32::try_from(at + size as u64).expect("generated events sit near a file's start");
    let mut e = Vec::with_capacity(size);
    e.extend_from_slice(&stamp.timestamp.to_le_bytes());
    e.push(kind);
    e.extend_from_slice(&stamp.server_id.to_le_bytes());
    e.extend_from_slice(&(size as u32).to_le_bytes());
    e.extend_from_slice(&end.to_le_bytes());
    e.extend_from_slice(&0u16.to_le_bytes());
    e.extend_from_slice(body);
    e.resize(size, 0);
    seal(&mut e, end);
    e
}

/// An event made up for one reader (`LOG_EVENT_ARTIFICIAL_F`), not part of any file:
/// its `log_pos` is whatever the reader is told (0 for the first ROTATE of a dump, the
/// current position for a heartbeat).
pub fn artificial_event(kind: u8, stamp: Stamp, body: &[u8], log_pos: u32) -> Vec<u8> {
    let size = HEADER_BYTES + body.len() + CHECKSUM_BYTES;
    let mut e = Vec::with_capacity(size);
    e.extend_from_slice(&stamp.timestamp.to_le_bytes());
    e.push(kind);
    e.extend_from_slice(&stamp.server_id.to_le_bytes());
    e.extend_from_slice(&(size as u32).to_le_bytes());
    e.extend_from_slice(&log_pos.to_le_bytes());
    e.extend_from_slice(&super::events::ARTIFICIAL_FLAG.to_le_bytes());
    e.extend_from_slice(body);
    e.resize(size, 0);
    seal(&mut e, log_pos);
    e
}

/// The body of a ROTATE event: the reader goes on with `next` at `pos`.
pub fn rotate_body(next: &str, pos: u64) -> Vec<u8> {
    let mut body = Vec::new();
    RotateEvent::new(pos, next.as_bytes()).serialize(&mut body);
    body
}

/// MariaDB's GTID_LIST event (type 0xA3) holding `position`, starting at offset `at`:
/// count u32 (its top four bits are flags, none set here), then per domain
/// (domain u32, server u32, sequence u64).
pub fn gtid_list_event(position: &GtidState, stamp: Stamp, at: u64) -> Vec<u8> {
    let mut body = Vec::with_capacity(4 + 16 * position.len());
    body.extend_from_slice(&(position.len() as u32).to_le_bytes());
    for g in position.iter() {
        body.extend_from_slice(&g.domain.to_le_bytes());
        body.extend_from_slice(&g.server.to_le_bytes());
        body.extend_from_slice(&g.seq.to_le_bytes());
    }
    event(kind::GTID_LIST, stamp, &body, at)
}

/// A ROTATE event (type 0x04) starting at offset `at`: the reader goes on with `next`
/// from position 4, just after its magic.
pub fn rotate_event(next: &str, stamp: Stamp, at: u64) -> Vec<u8> {
    event(
        kind::ROTATE,
        stamp,
        &rotate_body(next, MAGIC.len() as u64),
        at,
    )
}

/// One binlog file being written. See the module docs.
pub struct BinlogFile {
    path: PathBuf,
    out: BufWriter<File>,
    len: u64,
    stamp: Stamp,
}

impl BinlogFile {
    /// Creates `path` (which must not exist) and writes its magic, `fde` and a GTID_LIST
    /// holding `start`, the position before its first transaction.
    pub fn create(path: &Path, fde: &Fde, start: &GtidState) -> Result<BinlogFile, BinlogError> {
        let io = |op, source| BinlogError::Io {
            op,
            path: path.to_path_buf(),
            source,
        };
        let file = File::create_new(path).map_err(|e| io("create", e))?;
        let mut f = BinlogFile {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(WRITE_BUFFER_BYTES, file),
            len: 0,
            stamp: Stamp {
                timestamp: fde.timestamp(),
                server_id: fde.server_id(),
            },
        };
        f.write(&MAGIC)?;
        f.write(&fde.for_file())?;
        let list = gtid_list_event(start, f.stamp, f.len);
        f.write(&list)?;
        Ok(f)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends the events of transaction `gtid`, rewriting each in place for its offset
    /// here (see [`rewrite`]). All are checked before any is written, so a transaction
    /// that fails leaves the file as it was.
    pub fn append(&mut self, gtid: Gtid, events: &mut [u8]) -> Result<(), BinlogError> {
        let placed = place(events, self.len).map_err(|e| match e {
            PlaceError::Event(reason) => BinlogError::Event { gtid, reason },
            PlaceError::TooLarge(end) => BinlogError::TooLarge {
                gtid,
                end,
                path: self.path.clone(),
            },
        })?;
        // A rotation is stamped no earlier than the events before it.
        self.stamp.timestamp = self.stamp.timestamp.max(placed.timestamp);
        self.write(events)
    }

    /// Ends the file, with a ROTATE event naming `next` if one follows, and makes it
    /// durable. Returns its length.
    pub fn close(mut self, next: Option<&str>) -> Result<u64, BinlogError> {
        if let Some(next) = next {
            let rotate = rotate_event(next, self.stamp, self.len);
            self.write(&rotate)?;
        }
        let path = self.path.clone();
        let io = |op, source| BinlogError::Io {
            op,
            path: path.clone(),
            source,
        };
        let file = self
            .out
            .into_inner()
            .map_err(|e| io("write", e.into_error()))?;
        file.sync_all().map_err(|e| io("fsync", e))?;
        Ok(self.len)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), BinlogError> {
        self.out
            .write_all(bytes)
            .map_err(|source| BinlogError::Io {
                op: "write",
                path: self.path.clone(),
                source,
            })?;
        self.len += bytes.len() as u64;
        Ok(())
    }
}

/// A real MariaDB binlog and a reader of the files written here, for the tests of this
/// module and of the export.
#[cfg(test)]
pub(crate) mod fixture {
    use std::io::BufReader;

    use mysql_common::binlog::BinlogFile as Reader;
    use mysql_common::binlog::consts::{BinlogChecksumAlg, BinlogVersion};
    use mysql_common::binlog::events::{FormatDescriptionEvent, RotateEvent};

    use super::*;
    use crate::front::events::parse_gtid_list;
    use crate::front::record::Body;
    use crate::front::transactions::{Grouped, Grouper};

    /// A binlog file of MariaDB 10.11.19 (see `transactions.rs`): ten transactions of
    /// domain 0, server 1 (DDL, multi-statement, a blob, NULLs, MyISAM, XA).
    pub const BINLOG: &[u8] = include_bytes!("../../tests/data/mariadb-10.11-binlog.bin");

    /// The file's format description and its transactions' events, as the front
    /// groups them.
    pub fn primary() -> (Vec<u8>, Vec<(Gtid, Vec<u8>)>) {
        assert_eq!(&BINLOG[..4], &MAGIC);
        let mut checksums = Checksums::crc32();
        let mut grouper = Grouper::new(GtidState::new());
        let mut out = Vec::new();
        let mut at = 4;
        while at < BINLOG.len() {
            let size = Header::parse(&BINLOG[at..]).unwrap().size as usize;
            let event = checksums
                .verify(BINLOG[at..at + size].to_vec(), false)
                .unwrap();
            grouper.feed(event, &checksums, &mut out).unwrap();
            at += size;
        }
        let mut fde = None;
        let mut transactions = Vec::new();
        for g in out {
            match g {
                Grouped::Format(e) => fde = Some(e),
                Grouped::Piece { record, .. } => {
                    let Body::Piece(p) = record.body else {
                        panic!("a piece")
                    };
                    assert!(p.first && p.last, "the fixture's transactions are small");
                    transactions.push((p.gtid, p.events));
                }
                _ => {}
            }
        }
        (fde.expect("a format description"), transactions)
    }

    /// A file written here, taken apart.
    #[derive(Debug)]
    pub struct FileView {
        /// The GTID_LIST after the format description.
        pub start: GtidState,
        pub server_version: String,
        /// The transactions: GTID, offset of their first event, their events.
        pub transactions: Vec<(Gtid, u64, Vec<u8>)>,
        /// The next file, if a ROTATE ends this one, and where the ROTATE starts.
        pub rotate: Option<(String, u64)>,
    }

    /// Reads a file with `mysql_common`'s binlog reader and checks every event: its
    /// `log_pos` is its end offset, its checksum matches (by `mysql_common` and by the
    /// front's own check), the format description is first and closed, the GTID_LIST
    /// second, a ROTATE if any last.
    pub fn read_file(bytes: &[u8]) -> FileView {
        let reader = Reader::new(BinlogVersion::Version4, BufReader::new(bytes)).unwrap();
        let mut at = MAGIC.len() as u64;
        let mut checksums = Checksums::crc32();
        let mut view = FileView {
            start: GtidState::new(),
            server_version: String::new(),
            transactions: Vec::new(),
            rotate: None,
        };
        for (i, event) in reader.enumerate() {
            let event = event.unwrap();
            let header = event.header();
            let size = u64::from(header.event_size());
            let raw = &bytes[at as usize..(at + size) as usize];
            assert_eq!(
                u64::from(header.log_pos()),
                at + size,
                "event {i}: log_pos is not its end"
            );
            let alg = BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32;
            assert_eq!(
                event.checksum().map(u32::from_le_bytes),
                Some(event.calc_checksum(alg)),
                "event {i}: checksum"
            );
            checksums.verify(raw.to_vec(), false).unwrap();
            assert!(view.rotate.is_none(), "an event after the ROTATE");
            let kind = header.event_type_raw();
            match (i, kind) {
                (0, kind::FORMAT_DESCRIPTION) => {
                    assert_eq!(header.flags_raw() & IN_USE_FLAG, 0, "in-use flag");
                    let fde: FormatDescriptionEvent<'_> = event.read_event().unwrap();
                    view.server_version = fde.server_version().into_owned();
                    assert_eq!(fde.create_timestamp(), 0);
                }
                (0, k) => panic!("the file starts with an event of type {k:#04x}"),
                (1, kind::GTID_LIST) => {
                    view.start = parse_gtid_list(event.data()).unwrap();
                }
                (1, k) => panic!("the second event is of type {k:#04x}"),
                (_, kind::ROTATE) => {
                    let r: RotateEvent<'_> = event.read_event().unwrap();
                    assert_eq!(r.position(), 4);
                    view.rotate = Some((r.name().into_owned(), at));
                }
                (_, kind::GTID) => {
                    let d = event.data();
                    let gtid = Gtid {
                        domain: u32::from_le_bytes(d[8..12].try_into().unwrap()),
                        server: header.server_id(),
                        seq: u64::from_le_bytes(d[0..8].try_into().unwrap()),
                    };
                    view.transactions.push((gtid, at, raw.to_vec()));
                }
                (_, k) => {
                    let (_, _, events) = view
                        .transactions
                        .last_mut()
                        .unwrap_or_else(|| panic!("an event of type {k:#04x} outside a group"));
                    events.extend_from_slice(raw);
                }
            }
            at += size;
        }
        assert_eq!(at, bytes.len() as u64, "the file ends inside an event");
        view
    }

    /// Events with `log_pos` and checksum zeroed: what a rewrite keeps.
    pub fn kept(events: &[u8]) -> Vec<u8> {
        let mut out = events.to_vec();
        let mut at = 0;
        while at < out.len() {
            let size = Header::parse(&out[at..]).unwrap().size as usize;
            out[at + LOG_POS_OFFSET..at + LOG_POS_OFFSET + 4].fill(0);
            out[at + size - CHECKSUM_BYTES..at + size].fill(0);
            at += size;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use mysql_common::binlog::consts::{BinlogChecksumAlg, BinlogVersion};
    use mysql_common::binlog::events::{BinlogEventFooter, Event, FormatDescriptionEvent};

    use super::fixture::{kept, primary, read_file};
    use super::*;
    use crate::front::events::{parse_gtid_list, parse_rotate};

    fn stamp() -> Stamp {
        Stamp {
            timestamp: 1_700_000_000,
            server_id: 7,
        }
    }

    #[test]
    fn a_rewritten_event_ends_where_it_is_put_and_its_checksum_holds() {
        let (_, transactions) = primary();
        for (gtid, events) in &transactions {
            let mut at = 0;
            while at < events.len() {
                let size = Header::parse(&events[at..]).unwrap().size as usize;
                let original = &events[at..at + size];
                let mut e = original.to_vec();
                rewrite(&mut e, 123_456_789).unwrap();
                let h = Header::parse(&e).unwrap();
                assert_eq!(h.log_pos, 123_456_789, "{gtid}");
                assert_ne!(
                    Header::parse(original).unwrap().log_pos,
                    123_456_789,
                    "the test must move the event"
                );
                // Only log_pos and the checksum changed, and the checksum is valid.
                assert_eq!(kept(&e), kept(original), "{gtid}");
                Checksums::crc32().verify(e, false).unwrap();
                at += size;
            }
        }
    }

    #[test]
    fn a_damaged_event_is_refused_not_signed_afresh() {
        let (_, transactions) = primary();
        let (_, events) = &transactions[2];
        let size = Header::parse(events).unwrap().size as usize;
        for at in [0, 4, HEADER_BYTES, size / 2, size - 1] {
            let mut e = events[..size].to_vec();
            e[at] ^= 0x04;
            let before = e.clone();
            let result = rewrite(&mut e, 1000);
            assert!(result.is_err(), "a flipped bit at byte {at} was rewritten");
            assert_eq!(e, before, "a refused event is left as it was");
        }
        // A size that disagrees with the bytes.
        let mut e = events[..size].to_vec();
        e.push(0);
        assert!(rewrite(&mut e, 1000).is_err());
    }

    #[test]
    fn the_format_description_heads_a_closed_file() {
        let (fde, _) = primary();
        // As a server writes it into the file it still writes: in use, with a
        // creation time.
        let mut open = fde.clone();
        open[FLAGS_OFFSET] |= IN_USE_FLAG as u8;
        open[FDE_CREATED_OFFSET..FDE_CREATED_OFFSET + 4].copy_from_slice(&7u32.to_le_bytes());
        let body = open.len() - CHECKSUM_BYTES;
        // Its checksum leaves the in-use flag out.
        let mut sealed = open.clone();
        sealed[FLAGS_OFFSET] &= !(IN_USE_FLAG as u8);
        let sum = crc32fast::hash(&sealed[..body]);
        open[body..].copy_from_slice(&sum.to_le_bytes());
        let parsed = Fde::new(&open).unwrap();
        assert!(parsed.same_layout(&Fde::new(&fde).unwrap()));

        let e = parsed.for_file();
        let h = Header::parse(&e).unwrap();
        assert_eq!(h.log_pos as usize, MAGIC.len() + e.len());
        assert_eq!(h.flags & IN_USE_FLAG, 0);
        assert_eq!(&e[FDE_CREATED_OFFSET..FDE_CREATED_OFFSET + 4], &[0; 4]);
        Checksums::crc32().verify(e.clone(), false).unwrap();
        let event = Event::read(
            &FormatDescriptionEvent::new(BinlogVersion::Version4),
            &e[..],
        )
        .unwrap();
        let read: FormatDescriptionEvent<'_> = event.read_event().unwrap();
        assert!(read.server_version().starts_with("10.11"), "{read:?}");
        assert_eq!(read.create_timestamp(), 0);

        // Not a format description, a damaged one, one without CRC32: refused.
        let (_, transactions) = primary();
        assert!(Fde::new(&transactions[0].1).is_err());
        let mut bad = fde.clone();
        bad[HEADER_BYTES + 5] ^= 1;
        assert!(Fde::new(&bad).is_err());
        assert!(Fde::new(&fde[..40]).is_err());
    }

    #[test]
    fn generated_events_parse_and_carry_valid_checksums() {
        let position = GtidState::parse("0-1-41,3-2-7,9-9-1").unwrap();
        let e = gtid_list_event(&position, stamp(), 256);
        let h = Header::parse(&e).unwrap();
        assert_eq!(h.kind, 0xa3);
        assert_eq!(h.log_pos as usize, 256 + e.len());
        assert_eq!(e.len(), HEADER_BYTES + 4 + 16 * 3 + CHECKSUM_BYTES);
        let event = Checksums::crc32().verify(e.clone(), false).unwrap();
        assert_eq!(parse_gtid_list(event.body()).unwrap(), position);
        let empty = gtid_list_event(&GtidState::new(), stamp(), 256);
        let event = Checksums::crc32().verify(empty, false).unwrap();
        assert!(parse_gtid_list(event.body()).unwrap().is_empty());

        let e = rotate_event("lockstep-bin.000002", stamp(), 1000);
        let h = Header::parse(&e).unwrap();
        assert_eq!((h.kind, h.server_id), (kind::ROTATE, 7));
        assert_eq!(h.log_pos as usize, 1000 + e.len());
        let event = Checksums::crc32().verify(e.clone(), false).unwrap();
        assert_eq!(
            parse_rotate(event.body()).unwrap(),
            ("lockstep-bin.000002".to_string(), 4)
        );
        let crc = FormatDescriptionEvent::new(BinlogVersion::Version4).with_footer(
            BinlogEventFooter::new(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32),
        );
        let read = Event::read(&crc, &e[..]).unwrap();
        let r: RotateEvent<'_> = read.read_event().unwrap();
        assert_eq!(
            (r.name().as_ref(), r.position()),
            ("lockstep-bin.000002", 4)
        );
    }

    #[test]
    fn a_file_is_a_chain_of_events_ending_at_their_offsets() {
        let (fde, transactions) = primary();
        let fde = Fde::new(&fde).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lockstep-bin.000001");
        let start = GtidState::parse("0-1-0").unwrap();
        let mut f = BinlogFile::create(&path, &fde, &start).unwrap();
        assert!(
            BinlogFile::create(&path, &fde, &start).is_err(),
            "an existing file"
        );
        for (gtid, events) in &transactions {
            let mut e = events.clone();
            let before = f.len();
            f.append(*gtid, &mut e).unwrap();
            assert_eq!(f.len(), before + events.len() as u64);
        }
        // A damaged transaction leaves the file as it was.
        let (gtid, events) = &transactions[3];
        let mut bad = events.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let before = f.len();
        assert!(matches!(
            f.append(*gtid, &mut bad),
            Err(BinlogError::Event { .. })
        ));
        assert_eq!(f.len(), before);
        let len = f.close(Some("lockstep-bin.000002")).unwrap();

        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, len);
        let view = read_file(&bytes);
        assert_eq!(view.start, start);
        assert_eq!(view.rotate.as_ref().unwrap().0, "lockstep-bin.000002");
        assert_eq!(view.transactions.len(), transactions.len());
        for ((gtid, _, got), (want_gtid, want)) in view.transactions.iter().zip(&transactions) {
            assert_eq!(gtid, want_gtid);
            assert_eq!(kept(got), kept(want), "{gtid}");
        }
    }
}
