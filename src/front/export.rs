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
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::binlog_file::{BinlogError, BinlogFile, Fde};
use super::cursor::{CursorError, RecordSource, Stream, check_history, find_start};
use super::gtid::{Gtid, GtidState, Next};
use super::reader::{Assembler, Item, ReadError};

/// A file ends at the first transaction boundary once it holds this many bytes, by
/// default (MariaDB's default `max_binlog_size` is 1 GiB; smaller files copy and purge
/// more easily).
pub const FILE_BYTES_DEFAULT: u64 = 256 << 20;
/// The files' base name, and the index's name.
pub const BASE_NAME: &str = "lockstep-bin";
pub const INDEX_NAME: &str = "lockstep-bin.index";

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
    #[error(transparent)]
    Cursor(#[from] CursorError),
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

impl From<ReadError> for ExportError {
    fn from(e: ReadError) -> ExportError {
        ExportError::Cursor(CursorError::Stream(e))
    }
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
                        .map_err(|reason| CursorError::Format { lsn, reason })?;
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
#[path = "export_tests.rs"]
mod tests;
