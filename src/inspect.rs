//! Read-only inspection of a stream's log directory: [`verify`] and [`dump`], the logic
//! behind `lockstep log verify` and `lockstep log dump`.
//!
//! Guarantees:
//! - **Read-only.** The tools open segment files for reading and never write, rename,
//!   create or delete anything. Unlike [`crate::log::Log::open`], which recovers (cuts a
//!   torn tail, clears leftovers, removes an unused rollover segment and a stale spare),
//!   they only *report* what recovery would do. They can therefore run on a stopped
//!   node, a copy or a snapshot. On a log that is being written they see a snapshot in
//!   which the write in flight may show up as a torn tail.
//! - **Same judgement as the log.** Every segment goes through [`segment::scan`], the
//!   scan that recovery and reads use, so a record the tools accept is one the log
//!   accepts. Segments other than the newest are scanned as sealed (any damage is
//!   corruption), the newest as the tail (damage in its last batch is a torn write).
//!   A segment followed by an unused (empty) rollover segment is sealed too: the log
//!   rolls over only when no write is in flight, so its last write had completed.
//! - **Stricter than recovery.** [`verify`] checks what opening a log does not: every
//!   record of every segment, LSN contiguity from one segment file to the next, and
//!   epochs that never decrease across the whole log.
//!
//! Outcomes, and the exit statuses of the command-line tools:
//! - [`EXIT_SOUND`] (0): the log is sound. A torn tail is the normal result of a crash
//!   during a write that was never acknowledged, so it is reported as a note, not an
//!   error.
//! - [`EXIT_CORRUPT`] (1): corruption: damage that no crash of a correctly working log
//!   produces. Each problem names the file, the offset and the reason.
//! - [`EXIT_ERROR`] (2): the question could not be answered: bad usage, a missing or
//!   unreadable directory, a directory without segment files, an LSN outside the log.
//!
//! Memory: one segment file is read whole at a time (as recovery does for the tail).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::constants::IO_ALIGN;
use crate::log::segment::{self, End, Mode, Scan, Seen};

/// Exit status: the log is sound (possibly with a torn tail, which is reported).
pub const EXIT_SOUND: u8 = 0;
/// Exit status: the log is corrupt.
pub const EXIT_CORRUPT: u8 = 1;
/// Exit status: usage or I/O error; nothing could be concluded about the log.
pub const EXIT_ERROR: u8 = 2;

/// Payload bytes a [`DumpRecord::line`] shows unless asked for all of them.
pub const PREVIEW_BYTES: usize = 64;

/// Errors of the inspection tools.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{} holds no segment files (*{}): not a log directory",
        dir.display(),
        segment::SUFFIX
    )]
    NotALog { dir: PathBuf },
    #[error("lsn {lsn} is before the first retained lsn {first} of the log")]
    BeforeFirst { lsn: u64, first: u64 },
    #[error("{}", after_last(*lsn, *first, *last))]
    AfterLast { lsn: u64, first: u64, last: u64 },
    #[error("corrupt log: {0}")]
    Corrupt(Finding),
    #[error("writing output: {0}")]
    Output(#[source] io::Error),
}

fn after_last(lsn: u64, first: u64, last: u64) -> String {
    if last < first {
        format!(
            "lsn {lsn} is beyond the end of the log: it holds no records (the next lsn is {first})"
        )
    } else {
        format!("lsn {lsn} is beyond the last lsn {last} of the log (range {first}..={last})")
    }
}

impl InspectError {
    /// The exit status a command-line tool reports for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            InspectError::Corrupt(_) => EXIT_CORRUPT,
            _ => EXIT_ERROR,
        }
    }
}

fn io_error(op: &'static str, path: &Path, source: io::Error) -> InspectError {
    InspectError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// What a [`Finding`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// Note: the last batch of the newest segment is damaged and no complete batch
    /// follows it: a write that was never acknowledged. Recovery cuts it.
    TornTail,
    /// Note: non-zero blocks after the end of the log, left by an unfinished write whose
    /// first block never reached the disk. Recovery clears them.
    Leftovers,
    /// Note: the newest segment holds no record yet (the crash came between the rollover
    /// and the first write into it). Recovery removes it.
    UnusedSegment,
    /// Note: a segment file whose length is not a whole number of blocks (cut short).
    /// Recovery extends the newest segment with zeros.
    ShortFile,
    /// Note: a `spare.tmp` file, a segment being pre-allocated. Ignored.
    StaleSpare,
    /// Note: a file that is not a segment. Ignored.
    ForeignFile,
    /// Corruption: a record that fails a check where a torn write is impossible.
    DamagedRecord,
    /// Corruption: LSNs missing between one segment and the next.
    Gap,
    /// Corruption: the next segment starts at or below the last LSN of the previous one.
    Overlap,
}

impl FindingKind {
    /// Whether a finding of this kind makes the log corrupt (otherwise it is a note).
    pub fn is_corruption(self) -> bool {
        matches!(
            self,
            FindingKind::DamagedRecord | FindingKind::Gap | FindingKind::Overlap
        )
    }
}

/// One thing worth telling the operator, located in a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub file: PathBuf,
    /// Byte offset in `file`, where the finding has one.
    pub offset: Option<u64>,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(offset) = self.offset {
            write!(f, " at offset {offset}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// One segment file as [`verify`] saw it.
#[derive(Clone, Debug, Serialize)]
pub struct SegmentReport {
    pub file: PathBuf,
    /// The LSN in the file name: the first record the segment must hold.
    pub first_lsn: u64,
    /// The last valid record, `first_lsn - 1` if none.
    pub last_lsn: u64,
    pub records: u64,
    pub payload_bytes: u64,
    pub file_bytes: u64,
    /// Offset just past the last valid record.
    pub used_bytes: u64,
    /// Scanned as the newest segment (damage in its last batch is a torn write).
    pub tail: bool,
}

/// A run of records written in one epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EpochSpan {
    pub epoch: u64,
    pub first_lsn: u64,
    pub last_lsn: u64,
    pub records: u64,
}

/// The result of [`verify`].
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub dir: PathBuf,
    /// No problems: the log is usable as it is (recovery handles the notes).
    pub sound: bool,
    /// First LSN of the oldest segment (the first retained LSN).
    pub first_lsn: u64,
    /// Last valid record, `first_lsn - 1` if there is none.
    pub last_lsn: u64,
    pub records: u64,
    pub payload_bytes: u64,
    /// Epochs in log order, each with its first LSN and record count.
    pub epochs: Vec<EpochSpan>,
    pub segments: Vec<SegmentReport>,
    /// Findings that leave the log sound: torn tail, leftovers, unused segment, ignored
    /// files.
    pub notes: Vec<Finding>,
    /// Corruption, with file and offset. Empty if and only if `sound`.
    pub problems: Vec<Finding>,
}

/// Checks every record of every segment in `dir` and the relations between segments,
/// without modifying anything. Corruption is part of the report (`problems`); an
/// `Err` means the log could not be examined at all.
pub fn verify(dir: &Path) -> Result<VerifyReport, InspectError> {
    let segs = list_segments(dir)?;
    let first_lsn = segs[0].0;
    let mut report = VerifyReport {
        dir: dir.to_path_buf(),
        sound: false,
        first_lsn,
        last_lsn: first_lsn - 1,
        records: 0,
        payload_bytes: 0,
        epochs: Vec::new(),
        segments: Vec::with_capacity(segs.len()),
        notes: other_files(dir)?,
        problems: Vec::new(),
    };
    let mut findings = Vec::new();
    let mut prev: Option<(&Path, Scanned)> = None;
    for (i, (first, path)) in segs.iter().enumerate() {
        let tail = i + 1 == segs.len();
        if let Some((prev_path, p)) = &prev {
            findings.extend(continuity(prev_path, p, *first, path));
        }
        let mut payload_bytes = 0u64;
        let epochs = &mut report.epochs;
        // A damaged previous segment still bounds the epochs of this one from below:
        // its valid prefix comes earlier in the log.
        let prev_epoch = prev.as_ref().and_then(|(_, p)| p.scan.last_epoch);
        let s = scan_file(path, *first, prev_epoch, tail, |r| {
            payload_bytes += r.payload.len() as u64;
            let (epoch, lsn) = (r.header.epoch, r.header.lsn);
            match epochs.last_mut() {
                Some(e) if e.epoch == epoch => {
                    e.last_lsn = lsn;
                    e.records += 1;
                }
                _ => epochs.push(EpochSpan {
                    epoch,
                    first_lsn: lsn,
                    last_lsn: lsn,
                    records: 1,
                }),
            }
        })?;
        if tail && segs.len() > 1 && s.scan.records == 0 && !matches!(s.scan.end, End::Corrupt(_)) {
            findings.push(Finding {
                kind: FindingKind::UnusedSegment,
                file: path.clone(),
                offset: None,
                message: "unused rollover segment (no record written into it yet); \
                          recovery will remove it"
                    .into(),
            });
        }
        findings.extend(segment_findings(path, &s, tail));
        report.records += s.scan.records;
        report.payload_bytes += payload_bytes;
        if s.scan.records > 0 {
            report.last_lsn = s.scan.last_lsn;
        }
        report.segments.push(SegmentReport {
            file: path.clone(),
            first_lsn: *first,
            last_lsn: s.scan.last_lsn,
            records: s.scan.records,
            payload_bytes,
            file_bytes: s.file_bytes,
            used_bytes: s.scan.valid_end,
            tail,
        });
        prev = Some((path.as_path(), s));
    }
    let (problems, notes): (Vec<_>, Vec<_>) =
        findings.into_iter().partition(|f| f.kind.is_corruption());
    report.notes.extend(notes);
    report.problems = problems;
    report.sound = report.problems.is_empty();
    Ok(report)
}

impl fmt::Display for VerifyReport {
    /// The human-readable report. Problems are only counted here (tools print them on
    /// stderr); the alternate form (`{:#}`) adds one line per segment.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |p: &Path| {
            p.file_name()
                .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
        };
        writeln!(f, "log directory  {}", self.dir.display())?;
        match (self.segments.first(), self.segments.last()) {
            (Some(a), Some(b)) if self.segments.len() > 1 => writeln!(
                f,
                "segments       {} ({} .. {})",
                self.segments.len(),
                name(&a.file),
                name(&b.file)
            )?,
            (Some(a), _) => writeln!(f, "segments       1 ({})", name(&a.file))?,
            _ => writeln!(f, "segments       0")?,
        }
        if f.alternate() {
            for s in &self.segments {
                let lsns = if s.records == 0 {
                    "no records".to_string()
                } else {
                    format!("lsn {}..={}", s.first_lsn, s.last_lsn)
                };
                writeln!(
                    f,
                    "  {}  {lsns}, {} records, {} payload bytes, {} of {} bytes used{}",
                    name(&s.file),
                    s.records,
                    s.payload_bytes,
                    s.used_bytes,
                    s.file_bytes,
                    if s.tail { " (tail)" } else { "" }
                )?;
            }
        }
        if self.records == 0 {
            writeln!(
                f,
                "lsn range      none (the next lsn is {})",
                self.first_lsn
            )?;
        } else {
            writeln!(f, "first lsn      {}", self.first_lsn)?;
            writeln!(f, "last lsn       {}", self.last_lsn)?;
        }
        writeln!(f, "records        {}", self.records)?;
        writeln!(f, "payload bytes  {}", self.payload_bytes)?;
        writeln!(f, "epochs         {}", self.epochs.len())?;
        for e in &self.epochs {
            writeln!(
                f,
                "  epoch {:<6}  from lsn {}, {} records",
                e.epoch, e.first_lsn, e.records
            )?;
        }
        writeln!(f, "notes          {}", self.notes.len())?;
        for n in &self.notes {
            writeln!(f, "  {n}")?;
        }
        if self.sound {
            write!(f, "result         sound")
        } else {
            write!(
                f,
                "result         CORRUPT: {} problem{} (listed on stderr); the counts above \
                 cover the records that could be read",
                self.problems.len(),
                if self.problems.len() == 1 { "" } else { "s" }
            )
        }
    }
}

/// A record shown by [`dump`].
#[derive(Clone, Copy, Debug)]
pub struct DumpRecord<'a> {
    pub lsn: u64,
    pub epoch: u64,
    pub crc32c: u32,
    pub payload: &'a [u8],
    pub file: &'a Path,
    /// Offset of the record header in `file`.
    pub offset: u64,
}

/// The JSON form of a [`DumpRecord`]: one object per record.
#[derive(Serialize)]
struct DumpJson<'a> {
    lsn: u64,
    epoch: u64,
    len: usize,
    crc32c: u32,
    file: &'a Path,
    offset: u64,
    payload_hex: String,
}

impl DumpRecord<'_> {
    /// One human-readable line: lsn, epoch, payload length, checksum and the payload,
    /// as quoted text when it is printable ASCII and as hex otherwise; cut after
    /// [`PREVIEW_BYTES`] with an ellipsis unless `full`.
    pub fn line(&self, full: bool) -> String {
        format!(
            "lsn={} epoch={} len={} crc32c={:08x} {}",
            self.lsn,
            self.epoch,
            self.payload.len(),
            self.crc32c,
            preview(self.payload, if full { usize::MAX } else { PREVIEW_BYTES })
        )
    }

    /// One line of JSON with the whole payload in hex.
    pub fn json(&self) -> String {
        serde_json::to_string(&DumpJson {
            lsn: self.lsn,
            epoch: self.epoch,
            len: self.payload.len(),
            crc32c: self.crc32c,
            file: self.file,
            offset: self.offset,
            payload_hex: hex(self.payload),
        })
        .expect("a dump record serializes")
    }
}

/// What [`dump`] found besides the records.
#[derive(Clone, Debug, Default)]
pub struct DumpSummary {
    /// Records handed to the callback.
    pub records: u64,
    /// Notes about the segments read (a torn tail ends the dump early, for example).
    pub notes: Vec<Finding>,
}

/// Calls `each` for the records from `from` (default: the first retained LSN) on, at
/// most `count` of them, in LSN order, without modifying anything.
///
/// The segment holding `from` is found by file name and scanned from its start; the
/// following segments are scanned as far as needed. Every record read is checked as by
/// [`verify`], and damage in a segment read is returned as [`InspectError::Corrupt`]
/// after the valid records before it were handed out. An error from `each` stops the
/// dump and is returned as [`InspectError::Output`].
pub fn dump(
    dir: &Path,
    from: Option<u64>,
    count: u64,
    mut each: impl FnMut(&DumpRecord<'_>) -> io::Result<()>,
) -> Result<DumpSummary, InspectError> {
    let segs = list_segments(dir)?;
    let first = segs[0].0;
    let from = from.unwrap_or(first);
    if from < first {
        return Err(InspectError::BeforeFirst { lsn: from, first });
    }
    let start = segs.partition_point(|(f, _)| *f <= from) - 1;
    let mut summary = DumpSummary::default();
    let mut prev: Option<(&Path, Scanned)> = None;
    for (i, (seg_first, path)) in segs.iter().enumerate().skip(start) {
        let tail = i + 1 == segs.len();
        if let Some((prev_path, p)) = &prev
            && let Some(f) = continuity(prev_path, p, *seg_first, path)
        {
            return Err(InspectError::Corrupt(f));
        }
        let prev_epoch = prev.as_ref().and_then(|(_, p)| p.scan.last_epoch);
        let mut failed = None;
        let s = scan_file(path, *seg_first, prev_epoch, tail, |r: &Seen<'_>| {
            if r.header.lsn < from || summary.records >= count || failed.is_some() {
                return;
            }
            let rec = DumpRecord {
                lsn: r.header.lsn,
                epoch: r.header.epoch,
                crc32c: r.header.crc,
                payload: r.payload,
                file: path,
                offset: r.offset,
            };
            match each(&rec) {
                Ok(()) => summary.records += 1,
                Err(e) => failed = Some(e),
            }
        })?;
        if let Some(e) = failed {
            return Err(InspectError::Output(e));
        }
        for f in segment_findings(path, &s, tail) {
            if f.kind.is_corruption() {
                return Err(InspectError::Corrupt(f));
            }
            summary.notes.push(f);
        }
        if tail && from > s.scan.last_lsn {
            return Err(InspectError::AfterLast {
                lsn: from,
                first,
                last: s.scan.last_lsn,
            });
        }
        if summary.records >= count {
            break;
        }
        prev = Some((path.as_path(), s));
    }
    Ok(summary)
}

/// The payload as quoted, escaped text if it is printable ASCII (tabs and line breaks
/// allowed), else as hex; at most `max` bytes of it, followed by an ellipsis if cut.
pub fn preview(payload: &[u8], max: usize) -> String {
    let shown = &payload[..payload.len().min(max)];
    let more = if shown.len() < payload.len() {
        "…"
    } else {
        ""
    };
    let text = payload
        .iter()
        .all(|&b| (b' '..=b'~').contains(&b) || matches!(b, b'\t' | b'\n' | b'\r'));
    if !text {
        return format!("{}{more}", hex(shown));
    }
    let mut s = String::with_capacity(shown.len() + 8);
    s.push('"');
    for &b in shown {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'\t' => s.push_str("\\t"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            _ => s.push(char::from(b)),
        }
    }
    s.push('"');
    s.push_str(more);
    s
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Segment files of `dir` by first LSN; at least one.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, InspectError> {
    let segs = segment::list(dir).map_err(|e| io_error("list segments in", dir, e))?;
    if segs.is_empty() {
        return Err(InspectError::NotALog {
            dir: dir.to_path_buf(),
        });
    }
    Ok(segs)
}

/// Notes for the entries of `dir` that are not segment files, by name.
fn other_files(dir: &Path) -> Result<Vec<Finding>, InspectError> {
    let mut notes = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| io_error("read directory", dir, e))?;
    for e in entries {
        let e = e.map_err(|e| io_error("read directory", dir, e))?;
        let name = e.file_name();
        // The lock file of the writer is part of every log directory. It is not
        // inspected: even a shared lock held for a moment could make a starting
        // writer fail.
        if name.to_str().and_then(segment::parse_name).is_some() || name == segment::LOCK_NAME {
            continue;
        }
        let (kind, message) = if name == segment::SPARE_NAME {
            (
                FindingKind::StaleSpare,
                "spare segment being prepared (pre-zeroed, not part of the log); ignored",
            )
        } else {
            (FindingKind::ForeignFile, "not a segment file; ignored")
        };
        notes.push(Finding {
            kind,
            file: e.path(),
            offset: None,
            message: message.into(),
        });
    }
    notes.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(notes)
}

/// One segment file after its scan.
struct Scanned {
    scan: Scan,
    file_bytes: u64,
}

/// Reads the segment at `path` and scans it (as the tail if `tail`), calling `each` for
/// every valid record.
fn scan_file(
    path: &Path,
    first_lsn: u64,
    prev_epoch: Option<u64>,
    tail: bool,
    each: impl FnMut(&Seen<'_>),
) -> Result<Scanned, InspectError> {
    let data = std::fs::read(path).map_err(|e| io_error("read segment", path, e))?;
    let mode = if tail { Mode::Tail } else { Mode::Sealed };
    let scan = segment::scan(&data, first_lsn, prev_epoch, mode, each);
    Ok(Scanned {
        scan,
        file_bytes: data.len() as u64,
    })
}

/// What the scan of one segment says beyond its records.
fn segment_findings(path: &Path, s: &Scanned, tail: bool) -> Vec<Finding> {
    let finding = |kind, offset, message| Finding {
        kind,
        file: path.to_path_buf(),
        offset: Some(offset),
        message,
    };
    let mut out = Vec::new();
    match &s.scan.end {
        End::Clean => {}
        End::Torn(d) => out.push(finding(
            FindingKind::TornTail,
            d.offset,
            format!(
                "torn tail: {}; an unacknowledged write that recovery will cut \
                 (the log ends at lsn {})",
                d.reason, s.scan.last_lsn
            ),
        )),
        End::Corrupt(d) => out.push(finding(
            FindingKind::DamagedRecord,
            d.offset,
            d.reason.clone(),
        )),
    }
    if !s.file_bytes.is_multiple_of(IO_ALIGN as u64) {
        let message = format!(
            "the file is cut short: {} bytes, not a whole number of {IO_ALIGN}-byte blocks{}",
            s.file_bytes,
            if tail {
                "; recovery will extend it with zeros"
            } else {
                ""
            }
        );
        out.push(finding(FindingKind::ShortFile, s.file_bytes, message));
    }
    if let Some(at) = s.scan.dirty_after_end {
        let message = if tail {
            "leftovers of an unfinished write after the end of the log; recovery will \
             clear them"
        } else {
            "non-zero bytes after the last batch of a sealed segment; reads ignore them"
        };
        out.push(finding(FindingKind::Leftovers, at, message.into()));
    }
    out
}

/// Checks that the segment at `next_path`, named `next_first`, continues the one before
/// it. After damage in the previous segment only an overlap can be told.
fn continuity(
    prev_path: &Path,
    prev: &Scanned,
    next_first: u64,
    next_path: &Path,
) -> Option<Finding> {
    let expected = prev.scan.last_lsn + 1;
    let damaged = matches!(prev.scan.end, End::Corrupt(_));
    let next = next_path
        .file_name()
        .map_or_else(|| next_path.into(), PathBuf::from);
    let (kind, message) = if next_first > expected && !damaged {
        (
            FindingKind::Gap,
            format!(
                "gap: lsns {expected}..={} are missing: this segment ends at lsn {} and \
                 the next segment {} starts at lsn {next_first}",
                next_first - 1,
                prev.scan.last_lsn,
                next.display()
            ),
        )
    } else if next_first < expected {
        (
            FindingKind::Overlap,
            format!(
                "overlap: this segment ends at lsn {} but the next segment {} starts at \
                 lsn {next_first}",
                prev.scan.last_lsn,
                next.display()
            ),
        )
    } else {
        return None;
    };
    Some(Finding {
        kind,
        file: prev_path.to_path_buf(),
        offset: Some(prev.scan.valid_end),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_text_hex_and_truncation() {
        assert_eq!(preview(b"", 64), "\"\"");
        assert_eq!(preview(b"say \"hi\"\n", 64), r#""say \"hi\"\n""#);
        assert_eq!(preview(b"abcdef", 3), "\"abc\"…");
        assert_eq!(preview(&[0, 1, 0xab], 64), "0001ab");
        assert_eq!(preview(&[0, 1, 0xab], 2), "0001…");
        // Binary anywhere makes the whole payload hex, even if the shown part is text.
        assert_eq!(preview(b"ab\0", 2), "6162…");
    }
}
