//! Reads a front's stream back: records in LSN order in, whole transactions out.
//!
//! The assembler follows the rules of [`super::record`]: a transaction is its pieces
//! from the first to the last, consecutive in the stream; pieces cut off by a format
//! record or by another first piece were abandoned by a session that ended and are
//! skipped (and counted); records of other writers are skipped (and counted).
//!
//! It checks what a reader can: every piece of a transaction names the same GTID;
//! the events of a whole transaction are a chain of whole events (each header's size
//! leads exactly to the next, the last ends the transaction); transactions are
//! contiguous per domain, as the position each record carries says. A violation is an
//! error naming the LSN: the stream is not what a front writes.

use super::events::{HEADER_BYTES, Header};
use super::gtid::{Gtid, GtidState, Next};
use super::record::{Body, Format, FrontRecord, Piece, RecordError};

/// A whole transaction, as the primary's binlog held it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    pub gtid: Gtid,
    /// Its events, header to checksum each, as the primary wrote them.
    pub events: Vec<u8>,
    /// Where it ended in the primary's binlog.
    pub file: String,
    pub end_pos: u64,
    /// The LSNs of its first and last piece.
    pub first_lsn: u64,
    pub last_lsn: u64,
    /// The stream's position after it.
    pub position: GtidState,
}

/// What the assembler gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Transaction(Transaction),
    /// A session started: the primary's format description and position.
    Format {
        lsn: u64,
        format: Format,
        position: GtidState,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("record {lsn}: {source}")]
    Record {
        lsn: u64,
        #[source]
        source: RecordError,
    },
    #[error("record {lsn}: {reason}")]
    Bad { lsn: u64, reason: String },
}

struct Open {
    gtid: Gtid,
    first_lsn: u64,
    events: Vec<u8>,
    pieces: u64,
}

/// Turns records into transactions. See the module docs.
#[derive(Default)]
pub struct Assembler {
    open: Option<Open>,
    /// The stream's position after the last record taken, once one was.
    position: Option<GtidState>,
    /// Pieces of transactions that a session abandoned, and pieces whose transaction
    /// began before the first record read.
    pub skipped_pieces: u64,
    /// Records not written by a front.
    pub foreign: u64,
}

impl Assembler {
    pub fn new() -> Assembler {
        Assembler::default()
    }

    /// The stream's position after the records taken so far.
    pub fn position(&self) -> Option<&GtidState> {
        self.position.as_ref()
    }

    /// Takes the record at `lsn`; returns what it completes.
    pub fn push(&mut self, lsn: u64, payload: &[u8]) -> Result<Option<Item>, ReadError> {
        let record = match FrontRecord::decode(payload) {
            Ok(r) => r,
            Err(RecordError::Foreign) => {
                self.foreign += 1;
                return Ok(None);
            }
            Err(source) => return Err(ReadError::Record { lsn, source }),
        };
        let bad = |reason: String| ReadError::Bad { lsn, reason };
        let FrontRecord { position, body } = record;
        let item = match body {
            Body::Format(format) => {
                self.abandon();
                Some(Item::Format {
                    lsn,
                    format,
                    position: position.clone(),
                })
            }
            Body::Piece(piece) => self.piece(lsn, piece, &position).map_err(bad)?,
        };
        self.position = Some(position);
        Ok(item)
    }

    fn abandon(&mut self) {
        if let Some(open) = self.open.take() {
            self.skipped_pieces += open.pieces;
        }
    }

    fn piece(
        &mut self,
        lsn: u64,
        piece: Piece,
        position: &GtidState,
    ) -> Result<Option<Item>, String> {
        if piece.first {
            self.abandon();
            self.open = Some(Open {
                gtid: piece.gtid,
                first_lsn: lsn,
                events: Vec::new(),
                pieces: 0,
            });
        }
        let Some(open) = self.open.as_mut() else {
            // The transaction began before the first record read.
            self.skipped_pieces += 1;
            return Ok(None);
        };
        if open.gtid != piece.gtid {
            return Err(format!(
                "a piece of transaction {} inside transaction {}",
                piece.gtid, open.gtid
            ));
        }
        open.events.extend_from_slice(&piece.events);
        open.pieces += 1;
        if !piece.last {
            if let Some(before) = &self.position
                && before != position
            {
                return Err(format!(
                    "a piece of {} moves the position from {before} to {position}",
                    piece.gtid
                ));
            }
            return Ok(None);
        }
        let open = self.open.take().expect("an open transaction");
        check_events(&open.events).map_err(|e| format!("transaction {}: {e}", open.gtid))?;
        if let Some(before) = &self.position {
            if before.check(&open.gtid) != Next::Next {
                return Err(format!(
                    "transaction {} does not follow position {before}",
                    open.gtid
                ));
            }
            let mut after = before.clone();
            after.advance(open.gtid)?;
            if after != *position {
                return Err(format!(
                    "transaction {} says the position after it is {position}, not {after}",
                    open.gtid
                ));
            }
        } else if !position.reaches(&open.gtid) {
            return Err(format!(
                "transaction {} says the position after it is {position}",
                open.gtid
            ));
        }
        Ok(Some(Item::Transaction(Transaction {
            gtid: open.gtid,
            events: open.events,
            file: piece.file,
            end_pos: piece.end_pos,
            first_lsn: open.first_lsn,
            last_lsn: lsn,
            position: position.clone(),
        })))
    }
}

/// Whether `events` is a chain of whole events; returns their count.
pub fn check_events(events: &[u8]) -> Result<usize, String> {
    let mut at = 0;
    let mut count = 0;
    while at < events.len() {
        let header = Header::parse(&events[at..])
            .ok_or_else(|| format!("an event header cut at byte {at} of {}", events.len()))?;
        let size = header.size as usize;
        if size < HEADER_BYTES || at + size > events.len() {
            return Err(format!(
                "an event of {size} bytes at byte {at} of {}",
                events.len()
            ));
        }
        at += size;
        count += 1;
    }
    if count == 0 {
        return Err("no events".into());
    }
    Ok(count)
}

/// The events of a transaction, one slice each.
pub fn split_events(events: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let header = Header::parse(events.get(at..)?)?;
        let size = header.size as usize;
        let event = events.get(at..at + size)?;
        at += size;
        Some(event)
    })
}

impl Assembler {
    /// An assembler for a reader that starts at a record whose predecessor left the
    /// stream at `position`: the first transaction is checked against it, as every
    /// later one is against its predecessor. (`Assembler::new` knows no position until
    /// its first record, so it cannot check the first transaction's place.)
    pub fn after(position: GtidState) -> Assembler {
        Assembler {
            position: Some(position),
            ..Assembler::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake event of `len` bytes (header only matters here).
    fn event(kind: u8, len: usize) -> Vec<u8> {
        let mut e = vec![0u8; len];
        e[4] = kind;
        e[9..13].copy_from_slice(&(len as u32).to_le_bytes());
        e
    }

    fn gtid(seq: u64) -> Gtid {
        Gtid {
            domain: 0,
            server: 1,
            seq,
        }
    }

    fn piece(seq: u64, first: bool, last: bool, events: Vec<u8>) -> Vec<u8> {
        let position = if last {
            GtidState::from_iter([gtid(seq)])
        } else {
            GtidState::from_iter([gtid(seq - 1)])
        };
        FrontRecord {
            position,
            body: Body::Piece(Piece {
                first,
                last,
                gtid: gtid(seq),
                end_pos: 1000 + seq,
                file: "binlog.000001".into(),
                events,
            }),
        }
        .encode()
    }

    fn format(seq: u64) -> Vec<u8> {
        FrontRecord {
            position: GtidState::from_iter([gtid(seq)]),
            body: Body::Format(Format {
                upstream: "db:3306".into(),
                server_id: 1,
                server_version: "10.11".into(),
                file: "binlog.000001".into(),
                pos: 4,
                format_event: event(0x0f, 40),
            }),
        }
        .encode()
    }

    #[test]
    fn pieces_assemble_and_abandoned_pieces_are_skipped() {
        let whole = [event(0xa2, 40), event(0x10, 31)].concat();
        let (a, b) = whole.split_at(50);
        // (payload, transaction completed: its GTID sequence)
        let script: Vec<(Vec<u8>, Option<u64>)> = vec![
            (format(4), None),
            (piece(5, true, true, whole.clone()), Some(5)),
            // A session ended inside transaction 6 ...
            (piece(6, true, false, a.to_vec()), None),
            (format(5), None),
            // ... and the next resent it whole.
            (piece(6, true, false, a.to_vec()), None),
            (piece(6, false, true, b.to_vec()), Some(6)),
            (b"not a front record".to_vec(), None),
            (piece(7, true, true, whole.clone()), Some(7)),
        ];
        let mut asm = Assembler::new();
        for (i, (payload, want)) in script.into_iter().enumerate() {
            let got = asm.push(i as u64 + 1, &payload).unwrap();
            match (got, want) {
                (Some(Item::Transaction(t)), Some(seq)) => {
                    assert_eq!(t.gtid.seq, seq);
                    assert_eq!(t.events, whole);
                }
                (Some(Item::Format { .. }), None) | (None, None) => {}
                (got, want) => panic!("record {}: got {got:?}, want {want:?}", i + 1),
            }
        }
        assert_eq!(asm.skipped_pieces, 1);
        assert_eq!(asm.foreign, 1);
    }

    #[test]
    fn a_stream_that_breaks_the_rules_is_an_error() {
        let whole = [event(0xa2, 40), event(0x10, 31)].concat();
        // (records, why it is wrong)
        let cases: Vec<(Vec<Vec<u8>>, &str)> = vec![
            (
                vec![
                    piece(5, true, true, whole.clone()),
                    piece(7, true, true, whole.clone()),
                ],
                "a gap",
            ),
            (
                vec![
                    piece(5, true, true, whole.clone()),
                    piece(5, true, true, whole.clone()),
                ],
                "a duplicate",
            ),
            (
                vec![
                    piece(5, true, false, whole.clone()),
                    piece(6, false, true, whole.clone()),
                ],
                "a piece of another transaction",
            ),
            (
                vec![piece(5, true, true, whole[..60].to_vec())],
                "cut events",
            ),
        ];
        for (records, why) in cases {
            let mut asm = Assembler::new();
            let mut failed = false;
            for (i, r) in records.iter().enumerate() {
                if asm.push(i as u64 + 1, r).is_err() {
                    failed = true;
                }
            }
            assert!(failed, "{why} was read without an error");
        }
    }
}
