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
                    Next::Held => true,
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
