//! `lockstep binlog export`: a front's stream written out as standard MariaDB binlog
//! files, which `mariadb-binlog`, a server's point-in-time recovery and any binlog
//! reader take as they are.
//!
//! The export reads committed records only (a lockstep read never returns more), in
//! chunks, from the stream's first retained record or from the records after a GTID
//! position, up to the commit LSN it found when it began: a snapshot, even while the
//! front keeps appending. [`Assembler`] turns the records into whole transactions by
//! the rules of [`super::record`] (abandoned pieces and other writers' records are
//! skipped and counted), and [`super::binlog_file`] writes them into files
//! `lockstep-bin.000001`, `.000002`, ... and the index `lockstep-bin.index`.
//!
//! What the output holds:
//! - Every transaction of the stream after the start, once, in stream order, with the
//!   primary's events byte for byte except each header's `log_pos` and checksum.
//! - Every file starts with the format description of the session that wrote its
//!   transactions and a GTID_LIST holding the position before its first transaction;
//!   every file but the last ends with a ROTATE naming the next. A file is ended at the
//!   first transaction boundary once it holds `file_bytes` or more (MariaDB's rule for
//!   `max_binlog_size`), and also where a session with another format description
//!   begins, since one file has one format description.
//!
//! `--from-gtid POS` selects what a MariaDB replica connecting with `POS` would
//! receive: every transaction that `POS` does not already hold, in every domain (a
//! domain `POS` does not name from its start). `POS` beyond the stream, a `POS` whose
//! GTID names another server than the stream's transaction of that sequence number
//! (another history), and a `POS` whose following transactions retention deleted
//! are errors. The start is found by a binary search over the positions the records
//! carry (they grow with the LSN), not by reading the stream from its start.
//!
//! Consistency: the files are written into `.NAME.partial-PID` beside the output
//! directory `NAME`, made durable, and that directory is renamed to `NAME` at the
//! end: the output appears whole or not at all. An export that fails removes its
//! partial directory; one that is killed leaves it, and it may be deleted.
//!
//! Memory: one read (at most a frame of records) and the transaction being assembled,
//! whatever the size of the stream. Reading: the chunks of the export itself, a few
//! dozen single reads for the searches, and, to find the format description in force
//! at a `--from-gtid` start, the records back to the start of that front session.
//!
//! Fault model: the node may go away (a read whose connection failed is tried again,
//! at most three times, on whichever node answers), retention may delete records
//! while they are read, the stream may break the front's rules, an
//! event may be damaged, the disk may fail or fill. Each is an error that names the
//! LSN, transaction or file; none leaves a partial output under the final name.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::binlog_file::{BinlogError, BinlogFile, Fde};
use super::gtid::{Gtid, GtidState, Next};
use super::reader::{Assembler, Item, ReadError};
use super::record::{Body, FrontRecord, RecordError};
use crate::client::{Client, ClientError};
use crate::log::Record;
use crate::wire::ErrorCode;

/// A file ends at the first transaction boundary once it holds this many bytes, by
/// default (MariaDB's default `max_binlog_size` is 1 GiB; smaller files copy and purge
/// more easily).
pub const FILE_BYTES_DEFAULT: u64 = 256 << 20;
/// The files' base name, and the index's name.
pub const BASE_NAME: &str = "lockstep-bin";
pub const INDEX_NAME: &str = "lockstep-bin.index";

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

/// Where the export reads committed records: a lockstep client, or a table in tests.
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

/// Whether a read failed because retention deleted the records asked for. Nodes of
/// this version answer with an internal error naming the log's range (the text of
/// `LogError::OutOfRange`); the protocol's `out-of-range` code is taken too.
fn is_deleted(e: &ClientError) -> bool {
    match e {
        ClientError::Server { code, message, .. } => {
            *code == ErrorCode::OutOfRange
                || (*code == ErrorCode::Internal && message.contains("outside the log's range"))
        }
        _ => false,
    }
}

/// What to export, and where.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// The directory to create (it must not exist, or be empty).
    pub out: PathBuf,
    /// Export the transactions after this position; `None`: from the first retained
    /// record.
    pub from: Option<GtidState>,
    /// A file ends at the first transaction boundary once it holds this many bytes.
    pub file_bytes: u64,
}

/// Why an export failed. Nothing is left under the output's name.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    Usage(String),
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
    #[error("--from-gtid {pos} is beyond the stream, which stands at {end}")]
    Beyond { pos: GtidState, end: GtidState },
    #[error(
        "--from-gtid {pos} names {named}, but the stream's transaction {} of domain {} is \
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
        "retention deleted transactions after --from-gtid {pos}: the earliest record the \
         export could start from (lsn {lsn}) follows position {before}"
    )]
    Retained {
        pos: GtidState,
        lsn: u64,
        before: GtidState,
    },
    #[error("the stream is not what a front writes: {0}")]
    Stream(#[from] ReadError),
    #[error(transparent)]
    Binlog(#[from] BinlogError),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ExportError {
    let path = path.to_path_buf();
    move |source| ExportError::Io { op, path, source }
}

/// What an export wrote.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub out: PathBuf,
    pub transactions: u64,
    /// The first and the last GTID exported, per domain.
    pub gtids: BTreeMap<u32, (String, String)>,
    /// The position before the first transaction, and after the last.
    pub start_position: String,
    pub end_position: String,
    /// The LSNs read, and the commit LSN the export stopped at.
    pub first_lsn: u64,
    pub commit_lsn: u64,
    pub files: Vec<String>,
    pub bytes: u64,
    /// Pieces of transactions that a front session abandoned.
    pub skipped_pieces: u64,
    /// Records that no front wrote.
    pub foreign_records: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let range = if self.gtids.is_empty() {
            "none".to_string()
        } else {
            let parts: Vec<String> = self
                .gtids
                .values()
                .map(|(a, b)| format!("{a}..{b}"))
                .collect();
            parts.join(", ")
        };
        write!(
            f,
            "exported {} transactions (GTIDs {range}; position {} to {}) from lsn {} to {} \
             into {} files of {} bytes in {}; skipped {} abandoned pieces and {} foreign \
             records",
            self.transactions,
            or_empty(&self.start_position),
            or_empty(&self.end_position),
            self.first_lsn,
            self.commit_lsn,
            self.files.len(),
            self.bytes,
            self.out.display(),
            self.skipped_pieces,
            self.foreign_records,
        )
    }
}

fn or_empty(position: &str) -> &str {
    if position.is_empty() {
        "(empty)"
    } else {
        position
    }
}

/// Exports the stream `source` reads as binlog files into `opts.out`. See the module
/// docs.
pub fn export(
    source: &mut impl RecordSource,
    opts: &ExportOptions,
) -> Result<Summary, ExportError> {
    assert!(opts.file_bytes > 0);
    let mut output = Output::create(&opts.out, opts.file_bytes)?;
    let mut stream = Stream::open(source)?;
    let start = find_start(&mut stream, opts.from.as_ref())?;
    output.begin(start.fde, start.list.clone());
    let mut asm = Assembler::after(start.before);
    let mut gtids: BTreeMap<u32, (Gtid, Gtid)> = BTreeMap::new();
    let mut transactions = 0u64;
    let mut lsn = start.lsn;
    while lsn <= stream.end {
        for record in stream.read(lsn, stream.end)? {
            lsn = record.lsn + 1;
            match asm.push(record.lsn, &record.payload)? {
                None => {}
                Some(Item::Format { lsn, format, .. }) => {
                    let fde = Fde::new(&format.format_event)
                        .map_err(|reason| ExportError::Format { lsn, reason })?;
                    output.format(fde);
                }
                Some(Item::Transaction(mut t)) => {
                    // A replica at `--from-gtid` holds it already: left out, but still
                    // checked to be of the same history.
                    if let Some(pos) = &opts.from
                        && pos.check(&t.gtid) == Next::Held
                    {
                        check_history(pos, t.gtid)?;
                        continue;
                    }
                    output.transaction(t.gtid, &mut t.events)?;
                    transactions += 1;
                    gtids
                        .entry(t.gtid.domain)
                        .and_modify(|(_, last)| *last = t.gtid)
                        .or_insert((t.gtid, t.gtid));
                }
            }
        }
    }
    let end_position = output.position.to_string();
    let (files, bytes) = output.finish()?;
    Ok(Summary {
        out: opts.out.clone(),
        transactions,
        gtids: gtids
            .into_iter()
            .map(|(d, (a, b))| (d, (a.to_string(), b.to_string())))
            .collect(),
        start_position: start.list.to_string(),
        end_position,
        first_lsn: start.lsn,
        commit_lsn: stream.end,
        files,
        bytes,
        skipped_pieces: asm.skipped_pieces,
        foreign_records: asm.foreign,
    })
}

/// A `--from-gtid` that names the stream's transaction of the same sequence number
/// with another server belongs to another history.
fn check_history(pos: &GtidState, stream: Gtid) -> Result<(), ExportError> {
    match pos.get(stream.domain) {
        Some(named) if named.seq == stream.seq && named.server != stream.server => {
            Err(ExportError::OtherHistory {
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
struct Stream<'a, S: RecordSource> {
    source: &'a mut S,
    first: u64,
    end: u64,
}

impl<'a, S: RecordSource> Stream<'a, S> {
    fn open(source: &'a mut S) -> Result<Stream<'a, S>, ExportError> {
        let end = source.commit_lsn().map_err(ExportError::Status)?;
        if end == 0 {
            return Err(ExportError::Empty);
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
    fn first_retained(&mut self) -> Result<u64, ExportError> {
        let end = self.end;
        let mut retained = |lsn: u64| match fetch(self.source, lsn, 1) {
            Ok((_, records)) if records.first().is_some_and(|r| r.lsn == lsn) => Ok(true),
            Ok((commit, _)) => Err(ExportError::Behind { commit, lsn }),
            Err(e) if is_deleted(&e) => Ok(false),
            Err(source) => Err(ExportError::Read { lsn, source }),
        };
        if retained(1)? {
            return Ok(1);
        }
        if !retained(end)? {
            return Err(ExportError::Deleted { lsn: end });
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
    fn read(&mut self, from: u64, to: u64) -> Result<Vec<Record>, ExportError> {
        assert!(from <= to);
        assert!(to <= self.end);
        let max = (to - from + 1).min(u64::from(READ_RECORDS_MAX)) as u32;
        let (commit, mut records) = fetch(self.source, from, max).map_err(|e| {
            if is_deleted(&e) {
                ExportError::Deleted { lsn: from }
            } else {
                ExportError::Read {
                    lsn: from,
                    source: e,
                }
            }
        })?;
        records.retain(|r| r.lsn <= to);
        if records.is_empty() {
            return Err(ExportError::Behind { commit, lsn: from });
        }
        for (i, r) in records.iter().enumerate() {
            if r.lsn != from + i as u64 {
                return Err(ExportError::Protocol {
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
    ) -> Result<Option<T>, ExportError> {
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
    fn first_front(&mut self, from: u64) -> Result<Option<(u64, FrontRecord)>, ExportError> {
        self.scan(from, self.end, |lsn, r| ControlFlow::Break((lsn, r)))
    }

    /// The last front record at or before `at` for which `want` holds, reading
    /// backwards a window at a time down to the first retained record.
    fn last_front(
        &mut self,
        at: u64,
        want: impl Fn(&FrontRecord) -> bool,
    ) -> Result<Option<(u64, FrontRecord)>, ExportError> {
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
    ) -> Result<Option<(u64, FrontRecord)>, ExportError> {
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
    fn format_at(&mut self, lsn: u64) -> Result<Fde, ExportError> {
        let first = self.first;
        let found = self.last_front(lsn, |r| matches!(r.body, Body::Format(_)))?;
        let Some((at, record)) = found else {
            return Err(ExportError::NoFormat {
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
        Fde::new(&format.format_event).map_err(|reason| ExportError::Format { lsn: at, reason })
    }
}

/// A read, tried again after a failure of the connection: reads change nothing, and
/// the client's next request connects to whichever of its nodes answers (one that is
/// behind is caught by the caller).
fn fetch(
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

fn decode(r: &Record) -> Result<Option<FrontRecord>, ExportError> {
    match FrontRecord::decode(&r.payload) {
        Ok(record) => Ok(Some(record)),
        Err(RecordError::Foreign) => Ok(None),
        Err(source) => Err(ReadError::Record { lsn: r.lsn, source }.into()),
    }
}

/// Where an export begins.
struct Start {
    /// The first record to read: a format record or the first piece of a transaction
    /// (or the commit LSN + 1 when nothing follows `--from-gtid`).
    lsn: u64,
    /// The stream's position before it.
    before: GtidState,
    /// The position the first file's GTID_LIST holds.
    list: GtidState,
    /// The format description in force there.
    fde: Fde,
}

fn find_start<S: RecordSource>(
    stream: &mut Stream<'_, S>,
    from: Option<&GtidState>,
) -> Result<Start, ExportError> {
    match from {
        None => start_at_first(stream),
        Some(pos) => start_after(stream, pos),
    }
}

/// Without `--from-gtid`: at the first retained front record, which must start a
/// session, or else the format description of its events is gone.
fn start_at_first<S: RecordSource>(stream: &mut Stream<'_, S>) -> Result<Start, ExportError> {
    let (first, end) = (stream.first, stream.end);
    let Some((lsn, record)) = stream.first_front(first)? else {
        return Err(ExportError::NoFront {
            first_lsn: first,
            commit_lsn: end,
        });
    };
    if let Body::Format(format) = &record.body {
        let fde =
            Fde::new(&format.format_event).map_err(|reason| ExportError::Format { lsn, reason })?;
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
    Err(ExportError::NoFormat {
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
) -> Result<Start, ExportError> {
    let (first, end) = (stream.first, stream.end);
    let no_front = || ExportError::NoFront {
        first_lsn: first,
        commit_lsn: end,
    };
    let (_, last) = stream
        .last_front(stream.end, |_| true)?
        .ok_or_else(no_front)?;
    let stands = last.position;
    if !within(pos, &stands) {
        return Err(ExportError::Beyond {
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
                    return Err(ExportError::Retained {
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
        return Err(ExportError::Retained {
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

/// The output directory being written. Dropped unfinished, it removes what it wrote.
struct Output {
    out: PathBuf,
    /// Where the files are written until the end.
    partial: PathBuf,
    file_bytes: u64,
    /// The format description for the transactions that follow.
    fde: Option<Fde>,
    /// After the last transaction written: the next file's GTID_LIST.
    position: GtidState,
    /// The file being written, with its format description.
    current: Option<(BinlogFile, Fde)>,
    files: Vec<String>,
    bytes: u64,
    finished: bool,
}

impl Output {
    /// Checks that `out` may be created and makes the partial directory beside it.
    fn create(out: &Path, file_bytes: u64) -> Result<Output, ExportError> {
        let name = out.file_name().ok_or_else(|| {
            ExportError::Usage(format!("--out {}: not a directory name", out.display()))
        })?;
        match fs::read_dir(out) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(ExportError::Usage(format!(
                        "--out {}: the directory is not empty; an export writes a new one",
                        out.display()
                    )));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("read directory", out)(e)),
        }
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let partial = parent.join(format!(
            ".{}.partial-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        fs::create_dir(&partial).map_err(io_error("create directory", &partial))?;
        Ok(Output {
            out: out.to_path_buf(),
            partial,
            file_bytes,
            fde: None,
            position: GtidState::new(),
            current: None,
            files: Vec::new(),
            bytes: 0,
            finished: false,
        })
    }

    /// Sets the format description and the position of the first transaction.
    fn begin(&mut self, fde: Fde, position: GtidState) {
        assert!(self.current.is_none());
        self.fde = Some(fde);
        self.position = position;
    }

    /// A front session began: its transactions are described by `fde`.
    fn format(&mut self, fde: Fde) {
        assert!(self.fde.is_some(), "begin comes first");
        self.fde = Some(fde);
    }

    fn transaction(&mut self, gtid: Gtid, events: &mut [u8]) -> Result<(), ExportError> {
        assert_eq!(
            self.position.check(&gtid),
            Next::Next,
            "{gtid} after {}",
            self.position
        );
        let fde = self.fde.as_ref().expect("begin comes first");
        let next = match &self.current {
            None => true,
            Some((file, file_fde)) => file.len() >= self.file_bytes || !file_fde.same_layout(fde),
        };
        if next {
            self.next_file()?;
        }
        let (file, _) = self.current.as_mut().expect("a file is open");
        file.append(gtid, events)?;
        self.position
            .advance(gtid)
            .expect("the stream's positions hold no more domains than a position can");
        Ok(())
    }

    /// Ends the current file, if any, with a ROTATE, and starts the next.
    fn next_file(&mut self) -> Result<(), ExportError> {
        let name = format!("{BASE_NAME}.{:06}", self.files.len() + 1);
        if let Some((file, _)) = self.current.take() {
            self.bytes += file.close(Some(&name))?;
        }
        let fde = self.fde.clone().expect("begin comes first");
        let file = BinlogFile::create(&self.partial.join(&name), &fde, &self.position)?;
        self.current = Some((file, fde));
        self.files.push(name);
        Ok(())
    }

    /// Ends the last file, writes the index, and moves the directory to its name.
    /// Returns the files and their bytes.
    fn finish(mut self) -> Result<(Vec<String>, u64), ExportError> {
        if self.current.is_none() {
            // No transaction: a file still says where the export stands.
            self.next_file()?;
        }
        let (file, _) = self.current.take().expect("a file is open");
        self.bytes += file.close(None)?;
        let index = self.partial.join(INDEX_NAME);
        let mut text = String::new();
        for name in &self.files {
            // As MariaDB writes the index of a binlog named relative to its directory.
            text += &format!("./{name}\n");
        }
        let mut f = File::create_new(&index).map_err(io_error("create", &index))?;
        f.write_all(text.as_bytes())
            .map_err(io_error("write", &index))?;
        f.sync_all().map_err(io_error("fsync", &index))?;
        sync_dir(&self.partial)?;
        // Renaming a directory onto an empty one replaces it, in one step.
        fs::rename(&self.partial, &self.out).map_err(io_error("rename into place", &self.out))?;
        self.finished = true;
        let parent = self
            .partial
            .parent()
            .expect("beside the output")
            .to_path_buf();
        sync_dir(&parent)?;
        Ok((std::mem::take(&mut self.files), self.bytes))
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if !self.finished {
            // An export that failed leaves nothing; a file still open is closed first.
            self.current = None;
            let _ = fs::remove_dir_all(&self.partial);
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), ExportError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("fsync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::binlog_file::fixture::{kept, primary, read_file};
    use crate::front::events::{CHECKSUM_BYTES, HEADER_BYTES, Header, kind};
    use crate::front::record::{Format, Piece};

    /// A stream in memory, read as a node answers: a bounded number of records per
    /// read, and an error below the first retained LSN.
    struct Table {
        records: Vec<Vec<u8>>,
        first: u64,
        per_read: u64,
        reads: u64,
        /// After this many reads, retention moves the first LSN here.
        delete: Option<(u64, u64)>,
        /// These reads (counted from 1) lose their connection.
        disconnects: Vec<u64>,
    }

    impl RecordSource for Table {
        fn commit_lsn(&mut self) -> Result<u64, ClientError> {
            Ok(self.records.len() as u64)
        }

        fn read(&mut self, from: u64, max: u32) -> Result<(u64, Vec<Record>), ClientError> {
            self.reads += 1;
            if self.disconnects.contains(&self.reads) {
                return Err(ClientError::Disconnected {
                    addr: "table".into(),
                    op: "read",
                    reason: "connection reset".into(),
                });
            }
            if let Some((after, first)) = self.delete
                && self.reads > after
            {
                self.first = first;
            }
            let commit = self.records.len() as u64;
            if from < self.first {
                // As nodes of this version answer (LogError::OutOfRange).
                return Err(ClientError::Server {
                    addr: "table".into(),
                    op: "read",
                    code: ErrorCode::Internal,
                    message: format!(
                        "lsn {from} is outside the log's range {}..={commit}",
                        self.first
                    ),
                });
            }
            let to = commit.min(from + u64::from(max).min(self.per_read) - 1);
            let records = (from..=to)
                .map(|lsn| Record {
                    lsn,
                    epoch: 1,
                    payload: self.records[lsn as usize - 1].clone(),
                })
                .collect();
            Ok((commit, records))
        }
    }

    /// Writes a stream as a front would, and remembers its transactions in order.
    struct Script {
        fde: Vec<u8>,
        bodies: Vec<Vec<u8>>,
        records: Vec<Vec<u8>>,
        position: GtidState,
        order: Vec<(Gtid, Vec<u8>)>,
    }

    impl Script {
        fn new() -> Script {
            let (fde, transactions) = primary();
            Script {
                fde,
                bodies: transactions.into_iter().map(|(_, e)| e).collect(),
                records: Vec::new(),
                position: GtidState::new(),
                order: Vec::new(),
            }
        }

        fn format(&mut self) {
            self.records.push(
                FrontRecord {
                    position: self.position.clone(),
                    body: Body::Format(Format {
                        upstream: "db:3306".into(),
                        server_id: 1,
                        server_version: "10.11.19-MariaDB-log".into(),
                        file: "binlog.000001".into(),
                        pos: 4,
                        format_event: self.fde.clone(),
                    }),
                }
                .encode(),
            );
        }

        fn foreign(&mut self) {
            self.records.push(b"an append by another writer".to_vec());
        }

        /// The next transaction of `domain` by `server`: one of the fixture's, its
        /// GTID event changed to say so.
        fn next(&self, domain: u32, server: u32) -> (Gtid, Vec<u8>) {
            let seq = self.position.get(domain).map_or(0, |g| g.seq) + 1;
            let gtid = Gtid {
                domain,
                server,
                seq,
            };
            let mut events = self.bodies[self.order.len() % self.bodies.len()].clone();
            assert_eq!(events[4], kind::GTID);
            let size = Header::parse(&events).unwrap().size as usize;
            events[5..9].copy_from_slice(&server.to_le_bytes());
            events[HEADER_BYTES..HEADER_BYTES + 8].copy_from_slice(&seq.to_le_bytes());
            events[HEADER_BYTES + 8..HEADER_BYTES + 12].copy_from_slice(&domain.to_le_bytes());
            let sum = crc32fast::hash(&events[..size - CHECKSUM_BYTES]);
            events[size - CHECKSUM_BYTES..size].copy_from_slice(&sum.to_le_bytes());
            (gtid, events)
        }

        /// `written` of the `pieces` pieces of a transaction.
        fn pieces(&mut self, gtid: Gtid, events: &[u8], pieces: usize, written: usize) {
            let mut after = self.position.clone();
            after.advance(gtid).unwrap();
            let step = events.len().div_ceil(pieces);
            for (i, chunk) in events.chunks(step).enumerate().take(written) {
                let last = (i + 1) * step >= events.len();
                self.records.push(
                    FrontRecord {
                        position: if last {
                            after.clone()
                        } else {
                            self.position.clone()
                        },
                        body: Body::Piece(Piece {
                            first: i == 0,
                            last,
                            gtid,
                            end_pos: 1000,
                            file: "binlog.000001".into(),
                            events: chunk.to_vec(),
                        }),
                    }
                    .encode(),
                );
            }
        }

        fn tx(&mut self, domain: u32, server: u32, pieces: usize) -> Gtid {
            let (gtid, events) = self.next(domain, server);
            self.pieces(gtid, &events, pieces, pieces);
            self.position.advance(gtid).unwrap();
            self.order.push((gtid, events));
            gtid
        }

        /// The first pieces of the next transaction, and then the session ends.
        fn abandoned(&mut self, domain: u32, server: u32) {
            let (gtid, events) = self.next(domain, server);
            self.pieces(gtid, &events, 4, 2);
        }

        fn table(&self) -> Table {
            Table {
                records: self.records.clone(),
                first: 1,
                per_read: 7,
                reads: 0,
                delete: None,
                disconnects: Vec::new(),
            }
        }
    }

    fn run(table: &mut Table, from: Option<&str>, file_bytes: u64) -> Result<Export, ExportError> {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("export");
        let opts = ExportOptions {
            out: out.clone(),
            from: from.map(|p| GtidState::parse(p).unwrap()),
            file_bytes,
        };
        let result = export(table, &opts);
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "export")
            .collect();
        assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
        match result {
            Ok(summary) => Ok(Export::read(&out, summary, dir)),
            Err(e) => {
                assert!(!out.exists(), "a failed export left {}", out.display());
                Err(e)
            }
        }
    }

    /// An export's files, taken apart.
    struct Export {
        summary: Summary,
        files: Vec<(String, u64, crate::front::binlog_file::fixture::FileView)>,
        _dir: tempfile::TempDir,
    }

    impl Export {
        fn read(out: &Path, summary: Summary, dir: tempfile::TempDir) -> Export {
            let index = fs::read_to_string(out.join(INDEX_NAME)).unwrap();
            let names: Vec<String> = index
                .lines()
                .map(|l| l.strip_prefix("./").unwrap().to_string())
                .collect();
            assert_eq!(names, summary.files);
            let mut on_disk: Vec<String> = fs::read_dir(out)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n != INDEX_NAME)
                .collect();
            on_disk.sort();
            assert_eq!(on_disk, names, "the index lists every file");
            let mut files = Vec::new();
            let mut bytes = 0;
            for (i, name) in names.iter().enumerate() {
                assert_eq!(*name, format!("lockstep-bin.{:06}", i + 1));
                let data = fs::read(out.join(name)).unwrap();
                bytes += data.len() as u64;
                let view = read_file(&data);
                match names.get(i + 1) {
                    Some(next) => assert_eq!(&view.rotate.as_ref().unwrap().0, next),
                    None => assert!(view.rotate.is_none(), "the last file rotates"),
                }
                files.push((name.clone(), data.len() as u64, view));
            }
            assert_eq!(bytes, summary.bytes);
            Export {
                summary,
                files,
                _dir: dir,
            }
        }

        /// Every transaction of every file, in order; each file's GTID_LIST is the
        /// position after the transactions before it.
        fn transactions(&self) -> Vec<(Gtid, Vec<u8>)> {
            let mut position = self.files[0].2.start.clone();
            let mut out = Vec::new();
            for (name, _, view) in &self.files {
                assert_eq!(view.start, position, "{name}");
                for (gtid, _, events) in &view.transactions {
                    position.advance(*gtid).unwrap();
                    out.push((*gtid, events.clone()));
                }
            }
            assert_eq!(position.to_string(), self.summary.end_position);
            out
        }
    }

    fn assert_same(got: &[(Gtid, Vec<u8>)], want: &[&(Gtid, Vec<u8>)], what: &str) {
        let gtids = |v: Vec<Gtid>| v.iter().map(Gtid::to_string).collect::<Vec<_>>();
        assert_eq!(
            gtids(got.iter().map(|t| t.0).collect()),
            gtids(want.iter().map(|t| t.0).collect()),
            "{what}"
        );
        for ((gtid, a), (_, b)) in got.iter().zip(want) {
            assert_eq!(kept(a), kept(b), "{what}: the events of {gtid}");
        }
    }

    #[test]
    fn a_file_rotates_at_the_first_transaction_boundary_past_file_bytes() {
        let mut s = Script::new();
        s.format();
        for i in 0..40 {
            s.tx(0, 1, if i % 7 == 3 { 3 } else { 1 });
        }
        let file_bytes = 3000;
        let e = run(&mut s.table(), None, file_bytes).unwrap();
        assert!(e.files.len() >= 3, "{} files", e.files.len());
        let want: Vec<_> = s.order.iter().collect();
        assert_same(&e.transactions(), &want, "all");
        for (name, len, view) in &e.files {
            let (_, last_start, _) = view.transactions.last().unwrap();
            match &view.rotate {
                Some((_, rotate_at)) => {
                    // Full once its last transaction was written, not before.
                    assert!(*rotate_at >= file_bytes, "{name} rotated at {rotate_at}");
                    assert!(*last_start < file_bytes, "{name} went on past {file_bytes}");
                }
                None => assert!(*len > 0),
            }
        }
        assert_eq!(e.summary.transactions, 40);
        assert_eq!(e.summary.start_position, "");
        assert_eq!(e.summary.end_position, "0-1-40");
        assert_eq!(e.summary.gtids[&0], ("0-1-1".into(), "0-1-40".into()));

        // Large enough for everything: one file.
        let e = run(&mut s.table(), None, 1 << 30).unwrap();
        assert_eq!(e.files.len(), 1);
        assert_same(&e.transactions(), &want, "one file");
    }

    /// Two domains interleaved, transactions of several pieces, a transaction a
    /// session abandoned and the next resent, records of another writer.
    fn mixed() -> Script {
        let mut s = Script::new();
        s.format();
        s.tx(0, 1, 1);
        s.tx(0, 1, 2);
        s.tx(1, 2, 1);
        s.foreign();
        s.tx(0, 1, 3);
        s.tx(1, 2, 2);
        s.abandoned(0, 1);
        s.format();
        s.tx(0, 1, 4);
        s.tx(1, 2, 1);
        s.foreign();
        s.tx(0, 1, 1);
        s.tx(1, 2, 3);
        s.tx(0, 1, 1);
        s.format();
        s.tx(1, 2, 1);
        s
    }

    #[test]
    fn from_gtid_exports_what_a_replica_connecting_with_it_receives() {
        let s = mixed();
        let max = |d| s.position.get(d).unwrap().seq;
        // Every position a replica could hold: each domain at any of its transactions,
        // or before its first.
        for seq0 in 0..=max(0) {
            for seq1 in 0..=max(1) {
                let mut parts = Vec::new();
                if seq0 > 0 {
                    parts.push(format!("0-1-{seq0}"));
                }
                if seq1 > 0 {
                    parts.push(format!("1-2-{seq1}"));
                }
                let pos = parts.join(",");
                let want: Vec<_> = s
                    .order
                    .iter()
                    .filter(|(g, _)| g.seq > if g.domain == 0 { seq0 } else { seq1 })
                    .collect();
                let e = run(&mut s.table(), Some(&pos), 2000)
                    .unwrap_or_else(|err| panic!("--from-gtid {pos:?}: {err}"));
                assert_eq!(e.files[0].2.start.to_string(), pos, "the first GTID_LIST");
                assert_same(&e.transactions(), &want, &format!("--from-gtid {pos:?}"));
                assert_eq!(e.summary.transactions as usize, want.len());
            }
        }
        // Without a position: everything, with the abandoned pieces and the other
        // writer's records counted.
        let e = run(&mut s.table(), None, 2000).unwrap();
        assert_same(
            &e.transactions(),
            &s.order.iter().collect::<Vec<_>>(),
            "all",
        );
        // The assembler counts the abandoned transaction once or by its pieces.
        assert!((1..=2).contains(&e.summary.skipped_pieces), "{}", e.summary);
        assert_eq!(e.summary.foreign_records, 2);
    }

    #[test]
    fn positions_the_stream_cannot_serve_are_refused() {
        let s = mixed();
        // (position, why it is refused)
        type Why = fn(&ExportError) -> bool;
        let table: [(&str, Why); 4] = [
            ("0-1-99", |e| matches!(e, ExportError::Beyond { .. })),
            ("0-1-2,7-1-1", |e| matches!(e, ExportError::Beyond { .. })),
            ("0-5-2", |e| matches!(e, ExportError::OtherHistory { .. })),
            ("1-1-5", |e| matches!(e, ExportError::OtherHistory { .. })),
        ];
        for (pos, want) in table {
            match run(&mut s.table(), Some(pos), 2000) {
                Err(e) => assert!(want(&e), "--from-gtid {pos}: {e}"),
                Ok(_) => panic!("--from-gtid {pos} was exported"),
            }
        }
    }

    #[test]
    fn retention_is_told_apart_from_what_is_still_there() {
        let s = mixed();
        // Retention keeps the stream from the second session's format record on.
        let second = s
            .records
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                matches!(
                    FrontRecord::decode(r),
                    Ok(FrontRecord {
                        body: Body::Format(_),
                        ..
                    })
                )
            })
            .nth(1)
            .map(|(i, _)| i as u64 + 1)
            .unwrap();
        let at_second = |first| {
            let mut t = s.table();
            t.first = first;
            t
        };
        // The first retained record starts a session: everything from it.
        let e = run(&mut at_second(second), None, 2000).unwrap();
        let got = e.transactions();
        assert_eq!(got[0].0.to_string(), "0-1-4");
        assert_eq!(e.summary.start_position, "0-1-3,1-2-2");
        // A position at or after the first retained one: served.
        let e = run(&mut at_second(second), Some("0-1-4,1-2-2"), 2000).unwrap();
        assert_eq!(e.transactions()[0].0.to_string(), "1-2-3");
        // Before it: transactions are gone.
        for pos in ["0-1-2,1-2-2", "0-1-3", ""] {
            match run(&mut at_second(second), Some(pos), 2000) {
                Err(ExportError::Retained { .. }) => {}
                other => panic!("--from-gtid {pos:?}: {:?}", other.map(|e| e.summary)),
            }
        }
        // The first retained record is inside a session: its format record is gone.
        match run(&mut at_second(second + 1), None, 2000) {
            Err(ExportError::NoFormat { detail }) => {
                assert!(detail.contains("--from-gtid"), "{detail}")
            }
            other => panic!("{:?}", other.map(|e| e.summary)),
        }
        match run(&mut at_second(second + 3), Some("0-1-6,1-2-3"), 2000) {
            Err(ExportError::NoFormat { .. }) => {}
            other => panic!("{:?}", other.map(|e| e.summary)),
        }
        // Retention overtakes the export while it reads.
        let mut t = s.table();
        // Reads: the search for the first retained, the first record, then the
        // export's own; the second of those fails.
        t.delete = Some((3, 20));
        assert!(matches!(
            run(&mut t, None, 2000),
            Err(ExportError::Deleted { .. })
        ));
    }

    #[test]
    fn a_failed_export_leaves_nothing_under_its_name() {
        // A damaged event.
        let mut s = Script::new();
        s.format();
        s.tx(0, 1, 1);
        let (gtid, mut events) = s.next(0, 1);
        let last = events.len() - 1;
        events[last] ^= 1;
        s.pieces(gtid, &events, 1, 1);
        match run(&mut s.table(), None, 2000) {
            Err(ExportError::Binlog(BinlogError::Event { gtid: g, .. })) => assert_eq!(g, gtid),
            other => panic!("{:?}", other.map(|e| e.summary)),
        }
        // Nothing to export; only other writers.
        let mut empty = Script::new();
        assert!(matches!(
            run(&mut empty.table(), None, 2000),
            Err(ExportError::Empty)
        ));
        empty.foreign();
        assert!(matches!(
            run(&mut empty.table(), None, 2000),
            Err(ExportError::NoFront { .. })
        ));
        // An output directory in use; an empty one is taken.
        let dir = tempfile::tempdir().unwrap();
        let mut opts = ExportOptions {
            out: dir.path().join("out"),
            from: None,
            file_bytes: 2000,
        };
        fs::create_dir(&opts.out).unwrap();
        fs::write(opts.out.join("x"), b"x").unwrap();
        assert!(matches!(
            export(&mut mixed().table(), &opts),
            Err(ExportError::Usage(_))
        ));
        opts.out = dir.path().join("empty");
        fs::create_dir(&opts.out).unwrap();
        let summary = export(&mut mixed().table(), &opts).unwrap();
        assert!(opts.out.join(INDEX_NAME).exists(), "{summary}");
    }

    #[test]
    fn a_read_whose_connection_failed_is_tried_again_a_bounded_number_of_times() {
        let s = mixed();
        let mut t = s.table();
        t.disconnects = vec![1, 4, 5];
        let e = run(&mut t, Some("0-1-2"), 2000).unwrap();
        let want: Vec<_> = s
            .order
            .iter()
            .filter(|(g, _)| g.domain != 0 || g.seq > 2)
            .collect();
        assert_same(&e.transactions(), &want, "with lost connections");
        // Three failures of one read in a row end the export.
        let mut t = s.table();
        t.disconnects = vec![4, 5, 6];
        assert!(matches!(
            run(&mut t, None, 2000),
            Err(ExportError::Read {
                source: ClientError::Disconnected { .. },
                ..
            })
        ));
    }

    #[test]
    fn a_session_with_another_format_description_starts_a_new_file() {
        let mut s = Script::new();
        s.format();
        s.tx(0, 1, 1);
        s.tx(0, 1, 2);
        // The primary restarted as another version: its format description differs.
        let version = HEADER_BYTES + 2;
        assert_eq!(&s.fde[version..version + 5], b"10.11");
        s.fde[version + 3..version + 5].copy_from_slice(b"99");
        let size = s.fde.len();
        let sum = crc32fast::hash(&s.fde[..size - CHECKSUM_BYTES]);
        s.fde[size - CHECKSUM_BYTES..].copy_from_slice(&sum.to_le_bytes());
        s.format();
        s.tx(0, 1, 1);
        // The same again: no new file.
        s.format();
        s.tx(0, 1, 1);
        let e = run(&mut s.table(), None, 1 << 30).unwrap();
        let files: Vec<(&str, Vec<String>)> = e
            .files
            .iter()
            .map(|(_, _, v)| {
                let gtids = v.transactions.iter().map(|t| t.0.to_string()).collect();
                (&v.server_version[..5], gtids)
            })
            .collect();
        assert_eq!(
            files,
            [
                ("10.11", vec!["0-1-1".to_string(), "0-1-2".to_string()]),
                ("10.99", vec!["0-1-3".to_string(), "0-1-4".to_string()]),
            ]
        );
        assert_same(
            &e.transactions(),
            &s.order.iter().collect::<Vec<_>>(),
            "all",
        );
    }

    #[test]
    fn an_export_of_nothing_says_where_the_stream_stands() {
        let s = mixed();
        let end = s.position.to_string();
        let e = run(&mut s.table(), Some(&end), 2000).unwrap();
        assert_eq!(e.files.len(), 1);
        assert!(e.transactions().is_empty());
        assert_eq!(e.files[0].2.start.to_string(), end);
        assert_eq!(e.summary.end_position, end);
    }
}
