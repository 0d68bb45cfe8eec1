//! Finding a place in a front's stream and reading on from it: what `lockstep binlog
//! export` and the binlog server share.
//!
//! A [`Stream`] reads committed records only (a lockstep read never returns more), in
//! chunks, between the stream's first retained record (found by a binary search, since
//! retention deletes a prefix) and a commit LSN, which a reader that follows the stream
//! moves forward. [`find_start`] finds where the transactions after a GTID position
//! begin, as a MariaDB replica connecting with that position would receive them (every
//! transaction the position does not already hold, in every domain; a domain it does
//! not name from its start), with the format description in force there: a binary
//! search over the positions the records carry (they grow with the LSN), not a read of
//! the stream from its start. A position beyond the stream, one that names another
//! server for the stream's transaction of the same sequence number (another history),
//! and one whose following transactions retention deleted are errors.
//!
//! Fault model: the node may go away (a read whose connection failed is tried again,
//! at most three times, on whichever node answers), retention may delete records while
//! they are read, and the stream may break the front's rules. Each is an error naming
//! the LSN.

use std::ops::ControlFlow;

use super::binlog_file::Fde;
use super::gtid::{Gtid, GtidState};
use super::reader::ReadError;
use super::record::{Body, FrontRecord, RecordError};
use crate::client::{Client, ClientError};
use crate::log::Record;
use crate::wire::ErrorCode;

/// Records asked for by one read; the node also stops at a frame's bytes.
const READ_RECORDS_MAX: u32 = 1024;
/// Attempts of one read whose connection failed.
const READ_ATTEMPTS_MAX: u32 = 3;
/// Most records read per step of a search backwards; the steps double up to it from
/// one record, so a search that ends near its start reads little.
const SCAN_BACK_RECORDS_MAX: u64 = 256;
/// Records looked through for a session start to suggest, when the first retained
/// record is not one.
const HINT_SCAN_RECORDS_MAX: u64 = 1 << 16;

/// Where committed records come from: a lockstep client, or a table in tests.
pub trait RecordSource {
    /// The stream's commit LSN on the node read from.
    fn commit_lsn(&mut self) -> Result<u64, ClientError>;
    /// Up to `records_max` committed records from `from_lsn` on, consecutive, and the
    /// commit LSN.
    fn read(&mut self, from_lsn: u64, records_max: u32) -> Result<(u64, Vec<Record>), ClientError>;
}

impl RecordSource for Client {
    fn commit_lsn(&mut self) -> Result<u64, ClientError> {
        let status = self.status()?;
        status["commit_lsn"]
            .as_u64()
            .ok_or_else(|| ClientError::Protocol {
                addr: self.node().map_or_else(String::new, |n| n.addr.clone()),
                op: "status",
                reason: format!("a status reply without a commit_lsn: {status}"),
            })
    }

    fn read(&mut self, from_lsn: u64, records_max: u32) -> Result<(u64, Vec<Record>), ClientError> {
        Client::read(self, from_lsn, records_max)
    }
}

/// Whether a read failed because retention deleted the records asked for: the node
/// answers `out-of-range`.
pub fn is_deleted(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Server {
            code: ErrorCode::OutOfRange,
            ..
        }
    )
}

/// Why the stream cannot be read from where it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    #[error("ask the node for the stream's commit lsn: {0}")]
    Status(#[source] ClientError),
    #[error("read the stream from lsn {lsn}: {source}")]
    Read {
        lsn: u64,
        #[source]
        source: ClientError,
    },
    #[error("read the stream from lsn {lsn}: {reason}")]
    Protocol { lsn: u64, reason: String },
    #[error(
        "the node's commit lsn {commit} is below lsn {lsn}, which was committed when the \
         export began (the client moved to a node that is behind?); run the export again"
    )]
    Behind { commit: u64, lsn: u64 },
    #[error(
        "retention deleted lsn {lsn} while the export read the stream; export less at a \
         time (--from-gtid) or keep more segments (retain_segments)"
    )]
    Deleted { lsn: u64 },
    #[error("the stream holds no committed records: there is nothing to export")]
    Empty,
    #[error(
        "the stream's committed records from lsn {first_lsn} to {commit_lsn} hold no record \
         of a database front"
    )]
    NoFront { first_lsn: u64, commit_lsn: u64 },
    #[error("no format record is reachable: {detail}")]
    NoFormat { detail: String },
    #[error("the format record at lsn {lsn}: {reason}")]
    Format { lsn: u64, reason: String },
    #[error("position {pos} is beyond the stream, which stands at {end}")]
    Beyond { pos: GtidState, end: GtidState },
    #[error(
        "position {pos} names {named}, but the stream's transaction {} of domain {} is \
         {stream}: the position belongs to another history",
        .stream.seq,
        .stream.domain
    )]
    OtherHistory {
        pos: GtidState,
        named: Gtid,
        stream: Gtid,
    },
    #[error(
        "retention deleted transactions after position {pos}: the earliest record the \
         export could start from (lsn {lsn}) follows position {before}"
    )]
    Retained {
        pos: GtidState,
        lsn: u64,
        before: GtidState,
    },
    #[error("the stream is not what a front writes: {0}")]
    Stream(#[from] ReadError),
}

/// A `--from-gtid` that names the stream's transaction of the same sequence number
/// with another server belongs to another history.
pub fn check_history(pos: &GtidState, stream: Gtid) -> Result<(), CursorError> {
    match pos.get(stream.domain) {
        Some(named) if named.seq == stream.seq && named.server != stream.server => {
            Err(CursorError::OtherHistory {
                pos: pos.clone(),
                named: *named,
                stream,
            })
        }
        _ => Ok(()),
    }
}

/// Whether position `a` is at or before `b` in every domain of `a` (a domain `b` does
/// not name stands at 0 there).
fn within(a: &GtidState, b: &GtidState) -> bool {
    a.iter()
        .all(|g| b.get(g.domain).is_some_and(|p| p.seq >= g.seq))
}

/// The stream's position before the record `r`, which starts a session or a
/// transaction. For a one-piece transaction the server of the GTID before it in its
/// domain is not recorded: the transaction's own stands in for it, and no check
/// looks at it (the assembler and `within` compare sequence numbers).
fn position_before(r: &FrontRecord) -> GtidState {
    match &r.body {
        Body::Format(_) => r.position.clone(),
        Body::Piece(p) => {
            assert!(p.first, "a transaction starts at its first piece");
            if !p.last {
                return r.position.clone();
            }
            r.position
                .iter()
                .filter_map(|g| {
                    if g.domain != p.gtid.domain {
                        Some(*g)
                    } else {
                        (g.seq > 1).then_some(Gtid {
                            seq: g.seq - 1,
                            ..p.gtid
                        })
                    }
                })
                .collect()
        }
    }
}

/// The committed records of a stream, from its first retained LSN to the commit LSN
/// when the export began.
pub struct Stream<'a, S: RecordSource> {
    source: &'a mut S,
    pub first: u64,
    pub end: u64,
}

impl<'a, S: RecordSource> Stream<'a, S> {
    pub fn open(source: &'a mut S) -> Result<Stream<'a, S>, CursorError> {
        let end = source.commit_lsn().map_err(CursorError::Status)?;
        if end == 0 {
            return Err(CursorError::Empty);
        }
        let mut stream = Stream {
            source,
            first: 1,
            end,
        };
        stream.first = stream.first_retained()?;
        Ok(stream)
    }

    /// Retention deletes a prefix of the log, so the first retained LSN is the least
    /// one a read answers: found by a binary search.
    fn first_retained(&mut self) -> Result<u64, CursorError> {
        let end = self.end;
        let mut retained = |lsn: u64| match fetch(self.source, lsn, 1) {
            Ok((_, records)) if records.first().is_some_and(|r| r.lsn == lsn) => Ok(true),
            Ok((commit, _)) => Err(CursorError::Behind { commit, lsn }),
            Err(e) if is_deleted(&e) => Ok(false),
            Err(source) => Err(CursorError::Read { lsn, source }),
        };
        if retained(1)? {
            return Ok(1);
        }
        if !retained(end)? {
            return Err(CursorError::Deleted { lsn: end });
        }
        let (mut lo, mut hi) = (2, end);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if retained(mid)? {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok(lo)
    }

    /// Records from `from` on, at most to `to`: at least one, consecutive.
    pub fn read(&mut self, from: u64, to: u64) -> Result<Vec<Record>, CursorError> {
        assert!(from <= to);
        assert!(to <= self.end);
        let max = (to - from + 1).min(u64::from(READ_RECORDS_MAX)) as u32;
        let (commit, mut records) = fetch(self.source, from, max).map_err(|e| {
            if is_deleted(&e) {
                CursorError::Deleted { lsn: from }
            } else {
                CursorError::Read {
                    lsn: from,
                    source: e,
                }
            }
        })?;
        records.retain(|r| r.lsn <= to);
        if records.is_empty() {
            return Err(CursorError::Behind { commit, lsn: from });
        }
        for (i, r) in records.iter().enumerate() {
            if r.lsn != from + i as u64 {
                return Err(CursorError::Protocol {
                    lsn: from,
                    reason: format!("record {i} of a read has lsn {}", r.lsn),
                });
            }
        }
        Ok(records)
    }

    /// Calls `f` with the front records from `from` to `to` in order until it breaks.
    fn scan<T>(
        &mut self,
        from: u64,
        to: u64,
        mut f: impl FnMut(u64, FrontRecord) -> ControlFlow<T>,
    ) -> Result<Option<T>, CursorError> {
        let mut lsn = from;
        while lsn <= to {
            for r in self.read(lsn, to)? {
                lsn = r.lsn + 1;
                let Some(record) = decode(&r)? else {
                    continue;
                };
                if let ControlFlow::Break(t) = f(r.lsn, record) {
                    return Ok(Some(t));
                }
            }
        }
        Ok(None)
    }

    /// The first front record at or after `from`.
    fn first_front(&mut self, from: u64) -> Result<Option<(u64, FrontRecord)>, CursorError> {
        self.scan(from, self.end, |lsn, r| ControlFlow::Break((lsn, r)))
    }

    /// The last front record at or before `at` for which `want` holds, reading
    /// backwards a window at a time down to the first retained record.
    fn last_front(
        &mut self,
        at: u64,
        want: impl Fn(&FrontRecord) -> bool,
    ) -> Result<Option<(u64, FrontRecord)>, CursorError> {
        let mut hi = at.min(self.end);
        let mut window = 1;
        while hi >= self.first {
            let lo = hi.saturating_sub(window - 1).max(self.first);
            window = (window * 2).min(SCAN_BACK_RECORDS_MAX);
            let mut found = None;
            self.scan(lo, hi, |lsn, r| {
                if want(&r) {
                    found = Some((lsn, r));
                }
                ControlFlow::<()>::Continue(())
            })?;
            if found.is_some() {
                return Ok(found);
            }
            hi = lo - 1;
        }
        Ok(None)
    }

    /// The first front record whose position passes `beyond`, by a binary search:
    /// positions grow with the LSN, so once one passes, every later one does.
    fn search(
        &mut self,
        beyond: impl Fn(&GtidState) -> bool,
    ) -> Result<Option<(u64, FrontRecord)>, CursorError> {
        // probe(l) is the first front record at or after l; "no record" counts as
        // passing, so that the answer for l = end + 1 is known without a read.
        let (mut lo, mut hi) = (self.first, self.end + 1);
        let mut found = None;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.first_front(mid)? {
                // Everything from mid to lsn is this record or not a front's.
                Some((lsn, r)) if !beyond(&r.position) => lo = lsn + 1,
                probe => {
                    found = probe;
                    hi = mid;
                }
            }
        }
        Ok(found)
    }

    /// The format description in force at `lsn`: that of the last format record at or
    /// before it.
    fn format_at(&mut self, lsn: u64) -> Result<Fde, CursorError> {
        let first = self.first;
        let found = self.last_front(lsn, |r| matches!(r.body, Body::Format(_)))?;
        let Some((at, record)) = found else {
            return Err(CursorError::NoFormat {
                detail: format!(
                    "no format record is retained at or before lsn {lsn} (the first retained \
                     lsn is {first}): the front session that wrote lsn {lsn} began in records \
                     that retention deleted, so its events cannot be described"
                ),
            });
        };
        let Body::Format(format) = record.body else {
            unreachable!("the search wants a format record");
        };
        Fde::new(&format.format_event).map_err(|reason| CursorError::Format { lsn: at, reason })
    }
}

/// A read, tried again after a failure of the connection: reads change nothing, and
/// the client's next request connects to whichever of its nodes answers (one that is
/// behind is caught by the caller).
pub fn fetch(
    source: &mut impl RecordSource,
    from: u64,
    max: u32,
) -> Result<(u64, Vec<Record>), ClientError> {
    let mut attempt = 1;
    loop {
        match source.read(from, max) {
            Err(
                ClientError::Io { .. }
                | ClientError::Disconnected { .. }
                | ClientError::Timeout { .. }
                | ClientError::Unreachable { .. },
            ) if attempt < READ_ATTEMPTS_MAX => attempt += 1,
            result => return result,
        }
    }
}

fn decode(r: &Record) -> Result<Option<FrontRecord>, CursorError> {
    match FrontRecord::decode(&r.payload) {
        Ok(record) => Ok(Some(record)),
        Err(RecordError::Foreign) => Ok(None),
        Err(source) => Err(ReadError::Record { lsn: r.lsn, source }.into()),
    }
}

/// Where reading begins.
pub struct Start {
    /// The first record to read: a format record or the first piece of a transaction
    /// (or the commit LSN + 1 when nothing follows `--from-gtid`).
    pub lsn: u64,
    /// The stream's position before it.
    pub before: GtidState,
    /// The position the first binlog file's GTID_LIST holds.
    pub list: GtidState,
    /// The format description in force there.
    pub fde: Fde,
}

pub fn find_start<S: RecordSource>(
    stream: &mut Stream<'_, S>,
    from: Option<&GtidState>,
) -> Result<Start, CursorError> {
    match from {
        None => start_at_first(stream),
        Some(pos) => start_after(stream, pos),
    }
}

/// Without `--from-gtid`: at the first retained front record, which must start a
/// session, or else the format description of its events is gone.
fn start_at_first<S: RecordSource>(stream: &mut Stream<'_, S>) -> Result<Start, CursorError> {
    let (first, end) = (stream.first, stream.end);
    let Some((lsn, record)) = stream.first_front(first)? else {
        return Err(CursorError::NoFront {
            first_lsn: first,
            commit_lsn: end,
        });
    };
    if let Body::Format(format) = &record.body {
        let fde =
            Fde::new(&format.format_event).map_err(|reason| CursorError::Format { lsn, reason })?;
        return Ok(Start {
            lsn,
            before: record.position.clone(),
            list: record.position,
            fde,
        });
    }
    let to = end.min(lsn.saturating_add(HINT_SCAN_RECORDS_MAX));
    let next = stream.scan(lsn, to, |at, r| match r.body {
        Body::Format(_) => ControlFlow::Break((at, r.position)),
        Body::Piece(_) => ControlFlow::Continue(()),
    })?;
    let hint = match next {
        Some((at, position)) => format!(
            "; the first session still retained starts at lsn {at}: export from there with \
             --from-gtid '{position}'"
        ),
        None => String::new(),
    };
    Err(CursorError::NoFormat {
        detail: format!(
            "the first retained front record (lsn {lsn}) is not the start of a front \
             session: the session's format record was deleted by retention, so its events \
             cannot be described{hint}"
        ),
    })
}

/// With `--from-gtid POS`: at the transaction whose record first moves the stream
/// past `pos`, or after the stream's end if none does.
fn start_after<S: RecordSource>(
    stream: &mut Stream<'_, S>,
    pos: &GtidState,
) -> Result<Start, CursorError> {
    let (first, end) = (stream.first, stream.end);
    let no_front = || CursorError::NoFront {
        first_lsn: first,
        commit_lsn: end,
    };
    let (_, last) = stream
        .last_front(stream.end, |_| true)?
        .ok_or_else(no_front)?;
    let stands = last.position;
    if !within(pos, &stands) {
        return Err(CursorError::Beyond {
            pos: pos.clone(),
            end: stands,
        });
    }
    for g in stands.iter() {
        check_history(pos, *g)?;
    }
    let Some((lsn, record)) = stream.search(|p| !within(p, pos))? else {
        // Nothing follows: one file that says where the stream stands.
        return Ok(Start {
            lsn: stream.end + 1,
            before: stands,
            list: pos.clone(),
            fde: stream.format_at(stream.end)?,
        });
    };
    // A transaction of several pieces starts at its first.
    let (start_lsn, start) = match &record.body {
        Body::Piece(p) if !p.first => {
            let gtid = p.gtid;
            let first_piece = stream.last_front(
                lsn - 1,
                |r| matches!(&r.body, Body::Piece(q) if q.first && q.gtid == gtid),
            )?;
            match first_piece {
                Some(found) => found,
                None => {
                    return Err(CursorError::Retained {
                        pos: pos.clone(),
                        lsn,
                        before: record.position.clone(),
                    });
                }
            }
        }
        _ => (lsn, record),
    };
    // The position before the start is the one after the front record before it
    // (a transaction's last piece, a session's start, or an abandoned piece, which
    // leaves the position as it was). Without one, the start's own record tells,
    // except which server wrote the GTID before a one-piece transaction.
    let previous = if start_lsn > first {
        stream.last_front(start_lsn - 1, |_| true)?
    } else {
        None
    };
    let (before, unknown) = match previous {
        Some((_, r)) => (r.position, None),
        None => match &start.body {
            Body::Piece(p) if p.last => (position_before(&start), Some(p.gtid.domain)),
            _ => (position_before(&start), None),
        },
    };
    if !within(&before, pos) {
        return Err(CursorError::Retained {
            pos: pos.clone(),
            lsn: start_lsn,
            before,
        });
    }
    // The transactions `pos` names that precede the start end at `before`; the ones
    // after it are checked as they are read.
    for g in before.iter().filter(|g| Some(g.domain) != unknown) {
        check_history(pos, *g)?;
    }
    Ok(Start {
        lsn: start_lsn,
        before,
        list: pos.clone(),
        fde: stream.format_at(start_lsn)?,
    })
}
