//! Groups a primary's binlog events into transactions, and transactions into the
//! pieces the front appends.
//!
//! MariaDB writes every transaction as an *event group* that starts with a GTID event.
//! A group ends, as MariaDB's own replica decides (`is_group_ending`), with an XID
//! event, an XA PREPARE event, or a QUERY event of `COMMIT`, `ROLLBACK`, `XA COMMIT`
//! or `XA ROLLBACK`; a *standalone* group (a DDL statement: GTID flag `STANDALONE`)
//! ends with the first event that is not part of a statement's context (user
//! variables, INTVAR, RAND, annotations, table maps). Outside a group the stream
//! carries only file and format events (ROTATE, FORMAT_DESCRIPTION, GTID_LIST,
//! BINLOG_CHECKPOINT, START_ENCRYPTION, STOP) and heartbeats.
//!
//! The grouper keeps the stream's position (the last GTID of every domain) and checks
//! each group's GTID against it: the next one is appended; one the stream already
//! holds (a primary resending after a reconnect) is skipped, and still ACKed once the
//! stream's copy is committed; a gap ends the front with an error, because the stream
//! would miss transactions.
//!
//! Anything else is an error that ends the session: an event outside a group, a file
//! or format event inside one, a second GTID before the end of a group, an INCIDENT
//! (the primary lost events). Nothing of a group cut short is acknowledged.

use super::events::{BinlogEvent, Checksums, GtidEvent, kind, parse_rotate, query_ends_group};
use super::gtid::{Gtid, GtidState, Next};
use super::record::{Body, FrontRecord, PIECE_EVENT_BYTES_MAX, Piece};

/// What one event gives.
#[derive(Debug)]
pub enum Grouped {
    /// A piece to append (the last piece of a transaction ends it).
    Piece {
        record: FrontRecord,
        /// This piece ends its transaction.
        last: bool,
        /// The primary asked for an ACK of an event of this piece.
        needs_ack: bool,
    },
    /// A whole transaction the stream already holds; ACK it once the stream's copy is
    /// committed.
    Held {
        gtid: Gtid,
        file: String,
        end_pos: u64,
    },
    /// The primary moved to another binlog file.
    Rotated { file: String, pos: u64 },
    /// A format description: how the events that follow are laid out.
    Format(Vec<u8>),
    /// A heartbeat, or a file event with nothing to do.
    Nothing,
}

struct Open {
    gtid: Gtid,
    standalone: bool,
    /// The stream already holds this transaction.
    held: bool,
    /// Pieces of it already given out.
    pieces: usize,
    events: Vec<u8>,
    needs_ack: bool,
}

/// Groups the events of one session. See the module docs.
pub struct Grouper {
    position: GtidState,
    file: String,
    open: Option<Open>,
}

impl Grouper {
    /// A grouper that continues from `position` (the stream's last record's).
    pub fn new(position: GtidState) -> Grouper {
        Grouper {
            position,
            file: String::new(),
            open: None,
        }
    }

    /// The stream's position once everything grouped so far is appended.
    pub fn position(&self) -> &GtidState {
        &self.position
    }

    /// The primary's current binlog file.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Whether a transaction is open (some of its events arrived, not its end).
    pub fn in_transaction(&self) -> bool {
        self.open.is_some()
    }

    /// Takes one event. Pieces are pushed to `out` in order.
    pub fn feed(
        &mut self,
        event: BinlogEvent,
        checksums: &Checksums,
        out: &mut Vec<Grouped>,
    ) -> Result<(), String> {
        let inside = self.open.as_ref().map(|o| o.gtid);
        match event.kind {
            kind::GTID => {
                if let Some(g) = inside {
                    return Err(format!(
                        "a GTID event ending at {} before the end of transaction {g}",
                        event.log_pos
                    ));
                }
                let ge = GtidEvent::parse(&event)?;
                let held = match self.position.check(&ge.gtid) {
                    Next::Next => false,
                    // Skipped and ACKed only as a resend by the server that wrote the
                    // stream's copy: a transaction of another server at a position the
                    // stream holds is another history, and ACKing it would acknowledge
                    // a commit lockstep does not have.
                    Next::Held => match self.position.get(ge.gtid.domain) {
                        Some(last) if last.server == ge.gtid.server => true,
                        last => {
                            return Err(format!(
                                "transaction {} is at or below the stream's position {} \
                                 in domain {} but another server wrote it: the primary's \
                                 binlog is another history than the stream's",
                                ge.gtid,
                                last.map_or_else(|| "nothing".to_string(), |g| g.to_string()),
                                ge.gtid.domain
                            ));
                        }
                    },
                    Next::Gap { expected } => {
                        return Err(format!(
                            "transaction {} follows {} in domain {}: the transactions \
                             with sequence numbers {expected} to {} are missing (the \
                             stream's GTIDs must be contiguous per domain)",
                            ge.gtid,
                            self.position
                                .get(ge.gtid.domain)
                                .map_or_else(|| "nothing".to_string(), |g| g.to_string()),
                            ge.gtid.domain,
                            ge.gtid.seq - 1
                        ));
                    }
                };
                self.open = Some(Open {
                    gtid: ge.gtid,
                    standalone: ge.standalone(),
                    held,
                    pieces: 0,
                    events: Vec::new(),
                    needs_ack: false,
                });
                self.add(event, false, out)
            }
            kind::ROTATE
            | kind::FORMAT_DESCRIPTION
            | kind::GTID_LIST
            | kind::BINLOG_CHECKPOINT
            | kind::START_ENCRYPTION
            | kind::STOP
            | kind::HEARTBEAT => {
                if let Some(g) = inside {
                    return Err(format!(
                        "an event of type {:#04x} inside transaction {g}",
                        event.kind
                    ));
                }
                out.push(match event.kind {
                    kind::ROTATE => {
                        let (file, pos) = parse_rotate(event.body())?;
                        self.file.clone_from(&file);
                        Grouped::Rotated { file, pos }
                    }
                    kind::FORMAT_DESCRIPTION => Grouped::Format(event.bytes),
                    _ => Grouped::Nothing,
                });
                Ok(())
            }
            kind::INCIDENT => Err(format!(
                "the primary logged an INCIDENT event at {}: its binlog lost events, so \
                 the stream cannot follow it",
                event.log_pos
            )),
            _ => {
                let Some(open) = &self.open else {
                    return Err(format!(
                        "an event of type {:#04x} ending at {} outside a transaction \
                         (no GTID event before it)",
                        event.kind, event.log_pos
                    ));
                };
                let ends = if open.standalone {
                    !matches!(
                        event.kind,
                        kind::INTVAR
                            | kind::RAND
                            | kind::USER_VAR
                            | kind::ANNOTATE_ROWS
                            | kind::TABLE_MAP
                            | kind::BEGIN_LOAD_QUERY
                            | kind::APPEND_BLOCK
                    )
                } else {
                    match event.kind {
                        kind::XID | kind::XA_PREPARE => true,
                        kind::QUERY => query_ends_group(&event, checksums)?,
                        _ => false,
                    }
                };
                self.add(event, ends, out)
            }
        }
    }

    /// Adds an event to the open transaction; gives out full pieces, and the last one
    /// when `ends`.
    fn add(
        &mut self,
        event: BinlogEvent,
        ends: bool,
        out: &mut Vec<Grouped>,
    ) -> Result<(), String> {
        let open = self.open.as_mut().expect("an open transaction");
        let end_pos = u64::from(event.log_pos);
        open.needs_ack |= event.needs_ack;
        if open.held {
            if ends {
                let gtid = open.gtid;
                self.open = None;
                out.push(Grouped::Held {
                    gtid,
                    file: self.file.clone(),
                    end_pos,
                });
            }
            return Ok(());
        }
        open.events.extend_from_slice(&event.bytes);
        // Full pieces go out as they fill, so a large transaction is never held whole.
        while open.events.len() > PIECE_EVENT_BYTES_MAX
            || (!ends && open.events.len() == PIECE_EVENT_BYTES_MAX)
        {
            let rest = open.events.split_off(PIECE_EVENT_BYTES_MAX);
            let events = std::mem::replace(&mut open.events, rest);
            let record = FrontRecord {
                position: self.position.clone(),
                body: Body::Piece(Piece {
                    first: open.pieces == 0,
                    last: false,
                    gtid: open.gtid,
                    end_pos,
                    file: self.file.clone(),
                    events,
                }),
            };
            open.pieces += 1;
            out.push(Grouped::Piece {
                record,
                last: false,
                needs_ack: false,
            });
        }
        if ends {
            // The position holds at most DOMAINS_MAX domains: a transaction of one
            // more cannot be recorded, and the session ends with nothing of it ACKed.
            self.position.advance(open.gtid)?;
            let open = self.open.take().expect("an open transaction");
            out.push(Grouped::Piece {
                record: FrontRecord {
                    position: self.position.clone(),
                    body: Body::Piece(Piece {
                        first: open.pieces == 0,
                        last: true,
                        gtid: open.gtid,
                        end_pos,
                        file: self.file.clone(),
                        events: open.events,
                    }),
                },
                last: true,
                needs_ack: open.needs_ack,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::events::{HEADER_BYTES, Header};

    /// A binlog file of MariaDB 10.11.19 (CRC32 checksums): DDL, single- and
    /// multi-statement InnoDB transactions (insert, update, delete, a 3000-byte blob,
    /// NULLs), a MyISAM insert (terminated by a COMMIT query), an XA transaction
    /// (XA PREPARE, then XA COMMIT as its own group), a rolled-back transaction (absent
    /// from the binlog), and the closing ROTATE.
    const BINLOG: &[u8] = include_bytes!("../../tests/data/mariadb-10.11-binlog.bin");

    fn events(file: &[u8]) -> Vec<Vec<u8>> {
        assert_eq!(&file[..4], b"\xfebin");
        let mut out = Vec::new();
        let mut at = 4;
        while at < file.len() {
            let size = Header::parse(&file[at..]).unwrap().size as usize;
            out.push(file[at..at + size].to_vec());
            at += size;
        }
        out
    }

    fn group(file: &[u8]) -> Result<(Vec<Grouped>, Grouper), String> {
        let mut checksums = Checksums::crc32();
        let mut grouper = Grouper::new(GtidState::new());
        let mut out = Vec::new();
        for bytes in events(file) {
            let event = checksums.verify(bytes, false)?;
            grouper.feed(event, &checksums, &mut out)?;
        }
        Ok((out, grouper))
    }

    #[test]
    fn a_real_binlog_groups_into_its_transactions() {
        let (out, grouper) = group(BINLOG).unwrap();
        // (sequence number, events in the group, end position), as mariadb-binlog
        // shows the file.
        let want: [(u64, usize, u64); 10] = [
            (1, 2, 518),
            (2, 5, 741),
            (3, 11, 7282),
            (4, 2, 7436),
            (5, 5, 7678),
            (6, 2, 7825),
            // XA START is part of the GTID event; XA PREPARE ends the group.
            (7, 6, 8157),
            (8, 2, 8290),
            (9, 5, 8524),
            (10, 2, 8681),
        ];
        let pieces: Vec<&Piece> = out
            .iter()
            .filter_map(|g| match g {
                Grouped::Piece { record, .. } => match &record.body {
                    Body::Piece(p) => Some(p),
                    Body::Format(_) => None,
                },
                _ => None,
            })
            .collect();
        assert_eq!(pieces.len(), want.len());
        for (p, (seq, count, end)) in pieces.iter().zip(want) {
            assert_eq!(
                p.gtid,
                Gtid {
                    domain: 0,
                    server: 1,
                    seq
                },
                "{p:?}"
            );
            assert!(p.first && p.last);
            assert_eq!(p.end_pos, end, "transaction {seq}");
            assert_eq!(p.file, "");
            let n = crate::front::reader::check_events(&p.events).unwrap();
            assert_eq!(n, count, "transaction {seq}");
            // Each group starts with its GTID event.
            assert_eq!(p.events[4], crate::front::events::kind::GTID);
        }
        assert_eq!(grouper.position().to_string(), "0-1-10");
        assert!(!grouper.in_transaction());
        // The file's format description, then the rotate at its end.
        assert!(matches!(out.first(), Some(Grouped::Format(_))));
        assert!(
            matches!(out.last(), Some(Grouped::Rotated { file, pos: 4 }) if file == "binlog.000002")
        );
    }

    #[test]
    fn a_flipped_bit_anywhere_in_an_event_fails_its_checksum() {
        let all = events(BINLOG);
        let mut checksums = Checksums::crc32();
        for (i, e) in all.iter().enumerate() {
            // Every byte of the first few events, and a few bytes of every event.
            let offsets: Vec<usize> = if i < 3 {
                (0..e.len()).collect()
            } else {
                vec![0, HEADER_BYTES, e.len() / 2, e.len() - 1]
            };
            for at in offsets {
                let mut bad = e.clone();
                bad[at] ^= 0x10;
                assert!(
                    checksums.clone().verify(bad, false).is_err(),
                    "event {i}: a flipped bit at byte {at} passed"
                );
            }
            checksums.verify(e.clone(), false).unwrap();
        }
    }

    #[test]
    fn a_transaction_larger_than_a_piece_is_cut_into_pieces() {
        // The multi-statement transaction, padded with copies of its update's rows
        // events until it exceeds a piece.
        let all = events(BINLOG);
        let mut checksums = Checksums::crc32();
        let mut grouper = Grouper::new(GtidState::parse("0-1-2").unwrap());
        let mut out = Vec::new();
        for e in &all[..3] {
            let ev = checksums.verify(e.clone(), false).unwrap();
            grouper.feed(ev, &checksums, &mut out).unwrap();
        }
        out.clear();
        // Events 10..=20 are transaction 3 (GTID .. XID); 11..=13 an annotate,
        // table map and write of 3 KB.
        let (head, tail) = (&all[10..20], &all[20]);
        let filler: Vec<&Vec<u8>> = all[11..14].iter().collect();
        let mut fed = 0;
        for e in head {
            fed += e.len();
            let ev = checksums.verify(e.clone(), false).unwrap();
            grouper.feed(ev, &checksums, &mut out).unwrap();
        }
        while fed < 3 * PIECE_EVENT_BYTES_MAX {
            for e in &filler {
                fed += e.len();
                let ev = checksums.verify((*e).clone(), true).unwrap();
                grouper.feed(ev, &checksums, &mut out).unwrap();
            }
        }
        let ev = checksums.verify(tail.clone(), false).unwrap();
        fed += tail.len();
        grouper.feed(ev, &checksums, &mut out).unwrap();
        let pieces: Vec<(&Piece, &GtidState)> = out
            .iter()
            .filter_map(|g| match g {
                Grouped::Piece { record, .. } => match &record.body {
                    Body::Piece(p) => Some((p, &record.position)),
                    Body::Format(_) => None,
                },
                _ => None,
            })
            .collect();
        assert_eq!(pieces.len(), 4);
        let joined: Vec<u8> = pieces.iter().flat_map(|(p, _)| p.events.clone()).collect();
        assert_eq!(joined.len(), fed);
        crate::front::reader::check_events(&joined).unwrap();
        for (i, (p, position)) in pieces.iter().enumerate() {
            assert_eq!(p.first, i == 0);
            assert_eq!(p.last, i == 3);
            assert!(p.events.len() <= PIECE_EVENT_BYTES_MAX);
            // Pieces before the last carry the position before the transaction.
            let want = if p.last { "0-1-3" } else { "0-1-2" };
            assert_eq!(position.to_string(), want);
        }
        assert!(matches!(
            out.last(),
            Some(Grouped::Piece {
                needs_ack: true,
                ..
            })
        ));
    }

    #[test]
    fn a_broken_stream_is_an_error_naming_what_is_wrong() {
        let all = events(BINLOG);
        let feed = |list: &[&Vec<u8>], position: &str| -> Result<(), String> {
            let mut checksums = Checksums::crc32();
            let mut grouper = Grouper::new(GtidState::parse(position).unwrap());
            let mut out = Vec::new();
            for e in list {
                let ev = checksums.verify((*e).clone(), false)?;
                grouper.feed(ev, &checksums, &mut out)?;
            }
            Ok(())
        };
        let fde = &all[0];
        // (events, stream position, a word of the error)
        let cases: Vec<(Vec<&Vec<u8>>, &str, &str)> = vec![
            // A row event with no GTID before it.
            (
                vec![fde, &all[7], &all[8]],
                "0-1-1",
                "outside a transaction",
            ),
            // A GTID inside a transaction.
            (
                vec![fde, &all[5], &all[6], &all[5]],
                "0-1-1",
                "before the end",
            ),
            // Transaction 2 after an empty stream: 0-1-1 is missing.
            (vec![fde, &all[5]], "", "missing"),
            // A rotate inside a transaction.
            (
                vec![fde, &all[5], &all[6], &all[45]],
                "0-1-1",
                "inside transaction",
            ),
        ];
        for (list, position, word) in cases {
            match feed(&list, position) {
                Err(e) => assert!(e.contains(word), "{word}: {e}"),
                Ok(()) => panic!("{word}: no error"),
            }
        }
        // A transaction the stream holds is skipped whole, and reported for its ACK.
        let mut checksums = Checksums::crc32();
        let mut grouper = Grouper::new(GtidState::parse("0-1-2").unwrap());
        let mut out = Vec::new();
        for e in &all[..10] {
            let ev = checksums.verify(e.clone(), false).unwrap();
            grouper.feed(ev, &checksums, &mut out).unwrap();
        }
        assert!(
            out.iter()
                .any(|g| matches!(g, Grouped::Held { gtid, end_pos: 741, .. } if gtid.seq == 2))
        );
        assert!(!out.iter().any(|g| matches!(g, Grouped::Piece { .. })));
        // The same sequence number from another server is another history: an error,
        // never a skip with its ACK.
        let mut checksums = Checksums::crc32();
        let mut grouper = Grouper::new(GtidState::parse("0-7-2").unwrap());
        let mut out = Vec::new();
        let mut failed = None;
        for e in &all[..10] {
            let ev = checksums.verify(e.clone(), false).unwrap();
            if let Err(e) = grouper.feed(ev, &checksums, &mut out) {
                failed = Some(e);
                break;
            }
        }
        let failed = failed.expect("a transaction of another server at a held position");
        assert!(failed.contains("another history"), "{failed}");
        assert!(!out.iter().any(|g| matches!(g, Grouped::Held { .. })));
    }
}
