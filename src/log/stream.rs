//! [`Log`]: one stream's log. See the module docs of [`crate::log`] for the invariants.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use lockstep_sys::file::{self as sysfile, Access};
use lockstep_sys::mem::AlignedBuf;
use lockstep_sys::uring::{Completion, Ring, SubmitError, WriteSync};

use crate::constants::{
    BATCH_BYTES_DEFAULT, BATCH_BYTES_MAX, BATCH_BYTES_MIN, INDEX_STRIDE_BYTES, IO_ALIGN,
    RECORD_HEADER_BYTES, SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN,
    ZERO_CHUNK_BYTES,
};
use crate::log::record::{self, FLAG_BATCH_START};
use crate::log::segment::{self, End, Mode};
use crate::log::{Faults, LogError, Record};

/// How a log is opened.
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// Size of new segment files.
    pub segment_bytes: u64,
    /// Largest group-commit write.
    pub batch_bytes: usize,
    /// Use buffered writes + fdatasync even where O_DIRECT works.
    pub force_buffered: bool,
    /// Fault injection points (tests).
    pub faults: Option<Arc<Faults>>,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            batch_bytes: BATCH_BYTES_DEFAULT,
            force_buffered: false,
            faults: None,
        }
    }
}

impl LogOptions {
    /// Checks the sizes against the limits of the on-disk format.
    pub fn validate(&self) -> Result<(), LogError> {
        let seg = self.segment_bytes;
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&seg)
            || !seg.is_multiple_of(IO_ALIGN as u64)
        {
            return Err(LogError::Config(format!(
                "segment_bytes = {seg}: must be a multiple of {IO_ALIGN} in \
                 {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}"
            )));
        }
        let b = self.batch_bytes;
        if !(BATCH_BYTES_MIN..=BATCH_BYTES_MAX).contains(&b) || !b.is_multiple_of(IO_ALIGN) {
            return Err(LogError::Config(format!(
                "batch_bytes = {b}: must be a multiple of {IO_ALIGN} in \
                 {BATCH_BYTES_MIN}..={BATCH_BYTES_MAX}"
            )));
        }
        Ok(())
    }
}

/// An older, full segment.
struct Sealed {
    path: PathBuf,
    /// Read index, built by a full verifying scan the first time the segment is read.
    index: Option<Vec<(u64, u64)>>,
}

/// The segment being written.
struct Tail {
    first_lsn: u64,
    path: PathBuf,
    file: Arc<File>,
    len: u64,
    index: Vec<(u64, u64)>,
}

/// Records appended and not yet handed to the kernel.
struct Pending {
    buf: AlignedBuf,
    len: usize,
    first_lsn: u64,
    count: u64,
}

struct InFlight {
    last_lsn: u64,
    first_lsn: u64,
    offset: u64,
    len: usize,
}

enum Spare {
    Idle,
    Preparing(JoinHandle<Result<(), LogError>>),
}

/// What recovery found and did when the log was opened.
#[derive(Clone, Debug, Default)]
pub struct Recovery {
    /// One line per notable event: a cut torn tail, cleared leftovers, a removed unused
    /// segment, a fallback to buffered I/O.
    pub notes: Vec<String>,
}

/// One stream's log. See [`crate::log`].
pub struct Log {
    dir: PathBuf,
    opts: LogOptions,
    access: Access,
    sync: WriteSync,
    tag: u64,
    sealed: BTreeMap<u64, Sealed>,
    tail: Tail,
    /// Offset in the tail where the pending batch will be written.
    write_off: u64,
    next_lsn: u64,
    durable_lsn: u64,
    last_epoch: Option<u64>,
    pending: Pending,
    free_buf: Option<AlignedBuf>,
    in_flight: Option<InFlight>,
    spare: Spare,
    failed: Option<String>,
    recovery: Recovery,
    /// The record before the first retained one (LSN, epoch), as `BASE` says. It
    /// counts only while the log starts right after it: a retention cut short by a
    /// crash leaves the records themselves, which then answer for their epochs.
    base: Option<(u64, u64)>,
    // Held for the life of the Log: one writer per log directory.
    _lock: File,
}

impl Log {
    /// Opens (creating if empty) the log in `dir` and recovers it. `tag` is the
    /// `user_data` of every io_uring operation of this log, so the owner can route
    /// completions to it.
    pub fn open(dir: &Path, opts: LogOptions, tag: u64) -> Result<Log, LogError> {
        opts.validate()?;
        std::fs::create_dir_all(dir).map_err(|e| LogError::io("create directory", dir, e))?;
        let lock_path = dir.join(segment::LOCK_NAME);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| LogError::io("open lock file", &lock_path, e))?;
        lock_exclusive(&lock, dir, &lock_path)?;
        let mut recovery = Recovery::default();
        let (access, sync) = choose_io(dir, &opts, &mut recovery)?;
        let spare_path = dir.join(segment::SPARE_NAME);
        match std::fs::remove_file(&spare_path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(LogError::io("remove stale spare segment", spare_path, e));
            }
            _ => {}
        }
        let base = load_base(dir)?;
        let mut segs = segment::list(dir).map_err(|e| LogError::io("list segments", dir, e))?;
        if let Some((base_lsn, _)) = base {
            // A retention that a crash cut short: `BASE` is stored before any segment
            // is deleted, and every segment starting at or below it was being deleted
            // (retention cuts at a segment's end). Finishing the deletion keeps `BASE`
            // in force: a log starting elsewhere cannot tell the epoch before its first
            // record, and a primary failed the stream at every greeting of a member
            // ending below that record. (A reset stores `BASE` after its deletions.)
            let stale = segs
                .iter()
                .take_while(|(first, _)| *first <= base_lsn)
                .count();
            for (_, path) in segs.drain(..stale) {
                std::fs::remove_file(&path)
                    .map_err(|e| LogError::io("delete segment", &path, e))?;
                recovery.notes.push(format!(
                    "deleted {} below BASE {base_lsn}: a retention cut short",
                    path.display()
                ));
            }
            if stale > 0 {
                sysfile::sync_dir(dir).map_err(|e| LogError::io("sync directory", dir, e))?;
            }
        }
        if segs.is_empty() {
            // A new log, or one whose reset (`Log::reset`) stopped between deleting the
            // old segments and installing the first new one.
            let first = base.map_or(1, |(lsn, _)| lsn + 1);
            let path = dir.join(segment::file_name(first));
            prepare_segment(
                &spare_path,
                opts.segment_bytes,
                access,
                opts.faults.as_deref(),
            )?;
            install(&spare_path, &path, dir)?;
            segs.push((first, path));
        }
        // Find the tail: the newest segment holding a record, or the only one. An empty
        // newest segment is an unused rollover (the crash came before its first write
        // completed). A rollover happens only when no write is in flight, so the segment
        // before it was complete: it is judged as sealed, where all damage is corruption.
        let mut mode = Mode::Tail;
        let (scan, mut data) = loop {
            let (first, path) = segs.last().expect("at least one segment");
            let data = std::fs::read(path).map_err(|e| LogError::io("read segment", path, e))?;
            let scan = segment::scan(&data, *first, None, mode, |_| {});
            if mode == Mode::Tail
                && scan.records == 0
                && segs.len() > 1
                && !matches!(scan.end, End::Corrupt(_))
            {
                std::fs::remove_file(path)
                    .map_err(|e| LogError::io("remove unused segment", path, e))?;
                sysfile::sync_dir(dir).map_err(|e| LogError::io("sync directory", dir, e))?;
                recovery
                    .notes
                    .push(format!("removed unused segment {}", path.display()));
                segs.pop();
                mode = Mode::Sealed;
                continue;
            }
            break (scan, data);
        };
        let (tail_first, tail_path) = segs.pop().expect("tail");
        if let End::Corrupt(d) = &scan.end {
            return Err(LogError::Corrupt {
                path: tail_path,
                offset: d.offset,
                reason: d.reason.clone(),
            });
        }
        let file = sysfile::open_rw(&tail_path, access, false)
            .map_err(|e| LogError::io("open segment", &tail_path, e))?;
        // Clear what a torn or unfinished last write left behind, so that nothing stale
        // can ever be mistaken for a continuation of the log.
        let clear = match &scan.end {
            End::Torn(d) => {
                recovery.notes.push(format!(
                    "cut torn tail of {} at offset {}: {} (the write was never acknowledged)",
                    tail_path.display(),
                    d.offset,
                    d.reason
                ));
                Some(d.offset.next_multiple_of(IO_ALIGN as u64) + BATCH_BYTES_MAX as u64)
            }
            End::Clean => scan.dirty_after_end.map(|at| {
                recovery.notes.push(format!(
                    "cleared leftovers of an unfinished write in {} at offset {at}",
                    tail_path.display()
                ));
                scan.next_batch + BATCH_BYTES_MAX as u64
            }),
            End::Corrupt(_) => unreachable!("returned above"),
        };
        if data.len() % IO_ALIGN != 0 {
            // A segment cut short mid-block (a truncated file): direct I/O needs whole
            // blocks, so the file is extended with zeros to the next block.
            let len = data.len().next_multiple_of(IO_ALIGN);
            file.set_len(len as u64)
                .and_then(|()| file.sync_all())
                .map_err(|e| LogError::io("extend segment", &tail_path, e))?;
            recovery.notes.push(format!(
                "extended {} from {} to {len} bytes (whole blocks)",
                tail_path.display(),
                data.len()
            ));
            data.resize(len, 0);
        }
        if let Some(to) = clear {
            let to = to.min(data.len() as u64);
            zero_range(&file, &data, scan.valid_end, to)
                .map_err(|e| LogError::io("clear torn tail", &tail_path, e))?;
        }
        let sealed = segs
            .into_iter()
            .map(|(lsn, path)| (lsn, Sealed { path, index: None }))
            .collect();
        let batch = opts.batch_bytes;
        let mut log = Log {
            dir: dir.to_path_buf(),
            access,
            sync,
            tag,
            sealed,
            tail: Tail {
                first_lsn: tail_first,
                path: tail_path,
                file: Arc::new(file),
                len: data.len() as u64,
                index: scan.index,
            },
            write_off: scan.next_batch,
            next_lsn: scan.last_lsn + 1,
            durable_lsn: scan.last_lsn,
            last_epoch: scan.last_epoch,
            pending: Pending {
                buf: AlignedBuf::new(batch),
                len: 0,
                first_lsn: scan.last_lsn + 1,
                count: 0,
            },
            free_buf: Some(AlignedBuf::new(batch)),
            in_flight: None,
            spare: Spare::Idle,
            failed: None,
            recovery,
            base,
            opts,
            _lock: lock,
        };
        log.start_spare();
        Ok(log)
    }

    /// What recovery found when the log was opened.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `user_data` of this log's io_uring operations.
    pub fn tag(&self) -> u64 {
        self.tag
    }

    /// Whether writes bypass the page cache (O_DIRECT).
    pub fn direct_io(&self) -> bool {
        self.access == Access::Direct
    }

    /// Lowest LSN still in the log (the next LSN if the log is empty).
    pub fn first_lsn(&self) -> u64 {
        self.sealed
            .keys()
            .next()
            .copied()
            .unwrap_or(self.tail.first_lsn)
    }

    /// LSN the next append gets.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Highest LSN on stable storage.
    pub fn durable_lsn(&self) -> u64 {
        self.durable_lsn
    }

    /// Epoch of the last appended record (of the base record when the log holds none
    /// after it).
    pub fn last_epoch(&self) -> Option<u64> {
        self.last_epoch.or_else(|| {
            self.base()
                .filter(|&(lsn, _)| lsn + 1 == self.next_lsn)
                .map(|(_, epoch)| epoch)
        })
    }

    /// The record just before the first one the log holds (LSN, epoch), when
    /// retention deleted it or the log was started after it; `None` for a log that
    /// starts at LSN 1.
    pub fn base(&self) -> Option<(u64, u64)> {
        self.base.filter(|&(lsn, _)| lsn + 1 == self.first_lsn())
    }

    /// Why the log stopped accepting appends, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Whether a write is in flight.
    pub fn writing(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Whether records wait for the next write.
    pub fn has_pending(&self) -> bool {
        self.pending.count > 0
    }

    /// Largest payload an append accepts.
    pub fn payload_bytes_max(&self) -> usize {
        self.opts.batch_bytes - RECORD_HEADER_BYTES
    }

    /// Makes room for a group of records of `record_bytes` in all (headers included,
    /// see [`record::record_bytes`]) that must go into one batch. `Ok(true)`: every
    /// record of the group can now be appended without [`LogError::Full`] (starting a
    /// new segment if the group does not fit in this one). `Ok(false)`: not now, try
    /// again after the write in flight completes. Errors are those of a rollover (a
    /// full disk: nothing was appended).
    pub fn make_room(&mut self, record_bytes: usize) -> Result<bool, LogError> {
        if let Some(reason) = &self.failed {
            return Err(LogError::Failed {
                dir: self.dir.clone(),
                reason: reason.clone(),
            });
        }
        let batch_len = self.pending.len + record_bytes;
        if batch_len > self.opts.batch_bytes {
            return Ok(false);
        }
        if self.write_off + batch_len.next_multiple_of(IO_ALIGN) as u64 <= self.tail.len {
            return Ok(true);
        }
        // The group crosses the end of the segment: it starts the next one, once nothing
        // is pending or in flight in this one.
        if self.pending.count > 0 || self.in_flight.is_some() {
            return Ok(false);
        }
        self.roll_over()?;
        Ok(true)
    }

    /// Epoch of the durable record `lsn` (or of the base record).
    pub fn epoch_at(&mut self, lsn: u64) -> Result<u64, LogError> {
        if let Some((base, epoch)) = self.base()
            && lsn == base
        {
            return Ok(epoch);
        }
        Ok(self.read(lsn, 1, 0)?[0].epoch)
    }

    /// The last durable LSN whose record was written in an epoch up to `epoch` (0 when
    /// there is none). Epochs never decrease along the log, so this is a binary search.
    pub fn last_lsn_up_to_epoch(&mut self, epoch: u64) -> Result<u64, LogError> {
        let (mut lo, mut hi) = (self.first_lsn(), self.durable_lsn);
        if hi < lo || self.epoch_at(lo)? > epoch {
            // Nothing held here is of an epoch up to `epoch`. Below the first record
            // only the base record's epoch is known; of what came before it, nothing.
            return Ok(match self.base() {
                Some((base, e)) if e <= epoch => base,
                Some(_) => 0,
                None => lo.saturating_sub(1),
            });
        }
        // Invariant: epoch_at(lo) <= epoch; the answer is in lo..=hi.
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if self.epoch_at(mid)? <= epoch {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Ok(lo)
    }

    /// Registers the batch buffers with `ring` so writes use registered buffers.
    pub fn register_buffers(&mut self, ring: &mut Ring) -> Result<(), LogError> {
        let dir = &self.dir;
        ring.register(&mut self.pending.buf)
            .map_err(|e| LogError::io("register buffer", dir, e))?;
        if let Some(b) = self.free_buf.as_mut() {
            ring.register(b)
                .map_err(|e| LogError::io("register buffer", dir, e))?;
        }
        Ok(())
    }

    /// Appends a record and returns its LSN. The record is durable once
    /// [`Log::durable_lsn`] reaches that LSN; until then it is only in memory.
    ///
    /// Errors leave the log unchanged: no LSN is assigned to a refused record.
    pub fn append(&mut self, epoch: u64, payload: &[u8]) -> Result<u64, LogError> {
        if let Some(reason) = &self.failed {
            return Err(LogError::Failed {
                dir: self.dir.clone(),
                reason: reason.clone(),
            });
        }
        if payload.len() > self.payload_bytes_max() {
            return Err(LogError::TooLarge {
                len: payload.len(),
                max: self.payload_bytes_max(),
            });
        }
        if let Some(last) = self.last_epoch.filter(|&last| epoch < last) {
            return Err(LogError::EpochRegression { epoch, last });
        }
        let rec_bytes = record::record_bytes(payload.len());
        let batch_len = self.pending.len + rec_bytes;
        if batch_len > self.opts.batch_bytes {
            return Err(LogError::Full);
        }
        if self.write_off + batch_len.next_multiple_of(IO_ALIGN) as u64 > self.tail.len {
            // The batch would cross the end of the segment. A batch never spans segments:
            // the pending one is sealed for this segment, and the record starts a new
            // segment once nothing is pending or in flight.
            if self.pending.count > 0 || self.in_flight.is_some() {
                return Err(LogError::Full);
            }
            self.roll_over()?;
        }
        let lsn = self.next_lsn;
        let flags = if self.pending.count == 0 {
            FLAG_BATCH_START
        } else {
            0
        };
        let at = self.pending.len;
        record::encode(
            &mut self.pending.buf[at..at + rec_bytes],
            flags,
            epoch,
            lsn,
            payload,
        );
        if self.pending.count == 0 {
            self.pending.first_lsn = lsn;
        }
        self.pending.len = batch_len;
        self.pending.count += 1;
        self.next_lsn += 1;
        self.last_epoch = Some(epoch);
        Ok(lsn)
    }

    /// Hands the pending batch to the kernel if no write is in flight. Returns whether a
    /// write was submitted (the caller then calls `ring.submit*`).
    pub fn flush(&mut self, ring: &mut Ring) -> Result<bool, LogError> {
        if let Some(reason) = &self.failed {
            return Err(LogError::Failed {
                dir: self.dir.clone(),
                reason: reason.clone(),
            });
        }
        if self.in_flight.is_some() || self.pending.count == 0 {
            return Ok(false);
        }
        let len = self.pending.len.next_multiple_of(IO_ALIGN);
        // Buffers are reused: the padding must be zero on disk.
        self.pending.buf[self.pending.len..len].fill(0);
        let next = self
            .free_buf
            .take()
            .expect("a free buffer when nothing is in flight");
        let buf = std::mem::replace(&mut self.pending.buf, next);
        match ring.write(
            &self.tail.file,
            buf,
            self.write_off,
            len,
            self.sync,
            self.tag,
        ) {
            Ok(()) => {}
            Err(e) => {
                let reason = e.to_string();
                let busy = matches!(e, SubmitError::Busy(_));
                let buf = e.into_buf().expect("write returns its buffer");
                self.free_buf = Some(std::mem::replace(&mut self.pending.buf, buf));
                if busy {
                    return Ok(false);
                }
                return Err(LogError::Io {
                    op: "submit write",
                    path: self.tail.path.clone(),
                    source: io::Error::other(reason),
                });
            }
        }
        self.in_flight = Some(InFlight {
            first_lsn: self.pending.first_lsn,
            last_lsn: self.next_lsn - 1,
            offset: self.write_off,
            len,
        });
        self.write_off += len as u64;
        self.pending.len = 0;
        self.pending.count = 0;
        self.pending.first_lsn = self.next_lsn;
        Ok(true)
    }

    /// Takes the completion of this log's write (one whose `user_data` is [`Log::tag`]).
    /// Returns the new durable LSN. A failed or short write stops the log for good.
    pub fn complete(&mut self, c: Completion) -> Result<u64, LogError> {
        assert_eq!(c.user_data, self.tag);
        let w = self
            .in_flight
            .take()
            .expect("a completion without a write in flight");
        assert!(self.free_buf.is_none());
        self.free_buf = Some(c.buf.expect("write completions return their buffer"));
        let injected = self
            .opts
            .faults
            .as_ref()
            .is_some_and(|f| f.take_write_eio());
        let result = if injected {
            Err(io::Error::from_raw_os_error(libc::EIO))
        } else {
            c.result
        };
        match result {
            Ok(n) if n == w.len => {
                assert!(w.last_lsn > self.durable_lsn);
                self.durable_lsn = w.last_lsn;
                let stride_due = self
                    .tail
                    .index
                    .last()
                    .is_none_or(|&(_, off)| w.offset >= off + INDEX_STRIDE_BYTES);
                if stride_due {
                    self.tail.index.push((w.first_lsn, w.offset));
                }
                Ok(self.durable_lsn)
            }
            other => {
                let why = match other {
                    Ok(n) => format!("short write: {n} of {} bytes", w.len),
                    Err(e) => e.to_string(),
                };
                let reason = format!(
                    "durable write of lsn {}..={} to {} at offset {} failed: {why}; \
                     not retried, reopen the log to recover",
                    w.first_lsn,
                    w.last_lsn,
                    self.tail.path.display(),
                    w.offset
                );
                self.failed = Some(reason.clone());
                Err(LogError::Failed {
                    dir: self.dir.clone(),
                    reason,
                })
            }
        }
    }

    /// Writes everything appended and waits until it is durable, using `ring` alone (no
    /// other user may have operations in flight on it). Returns the durable LSN.
    pub fn sync(&mut self, ring: &mut Ring) -> Result<u64, LogError> {
        let mut done = Vec::with_capacity(1);
        // Bounded: each turn completes the write in flight; at most two turns are needed
        // (the write in flight, then the pending batch).
        for _ in 0..3 {
            if self.in_flight.is_none() && !self.flush(ring)? {
                return Ok(self.durable_lsn);
            }
            ring.submit_and_wait(1)
                .map_err(|e| LogError::io("io_uring wait", &self.tail.path, e))?;
            ring.reap(&mut done);
            for c in done.drain(..) {
                self.complete(c)?;
            }
        }
        assert!(self.in_flight.is_none() && self.pending.count == 0);
        Ok(self.durable_lsn)
    }

    /// Reads durable records from `from` on: at most `max_records`, and at most
    /// `max_bytes` of payload unless the first record alone is larger (at least one
    /// record is returned when one exists). Every checksum is verified.
    pub fn read(
        &mut self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, LogError> {
        let first = self.first_lsn();
        if from < first || from > self.durable_lsn + 1 {
            return Err(LogError::OutOfRange {
                lsn: from,
                first,
                last: self.durable_lsn,
            });
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut full = false;
        let mut lsn = from;
        while lsn <= self.durable_lsn && out.len() < max_records && !full {
            let (path, start_lsn, start_off, seg_end_lsn) = self.locate(lsn)?;
            let last_wanted = seg_end_lsn.min(self.durable_lsn);
            let file = File::open(&path).map_err(|e| LogError::io("open segment", &path, e))?;
            let file_len = file
                .metadata()
                .map_err(|e| LogError::io("stat segment", &path, e))?
                .len();
            let (mut off, mut expect) = (start_off, start_lsn);
            'chunks: loop {
                let chunk_len =
                    (2 * BATCH_BYTES_MAX as u64 + INDEX_STRIDE_BYTES).min(file_len - off);
                let mut chunk = vec![0u8; chunk_len as usize];
                file.read_exact_at(&mut chunk, off)
                    .map_err(|e| LogError::io("read segment", &path, e))?;
                let mut last_batch = None;
                let scan = segment::scan(&chunk, expect, None, Mode::Sealed, |r| {
                    if r.header.batch_start() {
                        last_batch = Some((r.header.lsn, r.offset));
                    }
                    let h = &r.header;
                    let from = out.last().map_or(lsn, |r: &Record| r.lsn + 1);
                    if h.lsn >= from && h.lsn <= last_wanted && out.len() < max_records && !full {
                        if !out.is_empty() && bytes + r.payload.len() > max_bytes {
                            full = true;
                            return;
                        }
                        bytes += r.payload.len();
                        out.push(Record {
                            lsn: h.lsn,
                            epoch: h.epoch,
                            payload: r.payload.to_vec(),
                        });
                    }
                });
                let reached = out.last().map_or(lsn - 1, |r| r.lsn);
                let done = reached >= last_wanted || out.len() >= max_records || full;
                if done {
                    break 'chunks;
                }
                let at_file_end = off + chunk_len >= file_len;
                if let End::Corrupt(d) = &scan.end {
                    let truncated_by_chunk = !at_file_end
                        && d.offset + (BATCH_BYTES_MAX + RECORD_HEADER_BYTES) as u64 > chunk_len;
                    if !truncated_by_chunk {
                        return Err(LogError::Corrupt {
                            path,
                            offset: off + d.offset,
                            reason: d.reason.clone(),
                        });
                    }
                }
                if at_file_end {
                    return Err(LogError::Corrupt {
                        path,
                        offset: off + scan.valid_end,
                        reason: format!(
                            "segment ends at lsn {} but lsn {} was expected in it",
                            scan.last_lsn,
                            reached + 1
                        ),
                    });
                }
                // Continue from the last batch start seen: chunks always begin on one.
                match last_batch {
                    Some((l, o)) if o > 0 => {
                        expect = l;
                        off += o;
                    }
                    _ => {
                        return Err(LogError::Corrupt {
                            path,
                            offset: off,
                            reason: "no complete batch in a read window".into(),
                        });
                    }
                }
            }
            lsn = out.last().map_or(lsn, |r| r.lsn + 1);
        }
        Ok(out)
    }

    /// Deletes whole segments all of whose records are below `lsn` (retention). The
    /// segment being written is never deleted. Returns the new first LSN.
    pub fn delete_before(&mut self, lsn: u64) -> Result<u64, LogError> {
        let firsts: Vec<u64> = self.sealed.keys().copied().collect();
        let mut deleted = false;
        for (i, first) in firsts.iter().enumerate() {
            let next_first = firsts.get(i + 1).copied().unwrap_or(self.tail.first_lsn);
            if next_first > lsn {
                break;
            }
            let s = self.sealed.remove(first).expect("listed above");
            std::fs::remove_file(&s.path)
                .map_err(|e| LogError::io("delete segment", &s.path, e))?;
            deleted = true;
        }
        if deleted {
            sysfile::sync_dir(&self.dir)
                .map_err(|e| LogError::io("sync directory", &self.dir, e))?;
        }
        Ok(self.first_lsn())
    }

    /// Retention: deletes the oldest sealed segments whose records all lie below
    /// `keep_from`, keeping at least the newest `keep_segments` sealed segments (and
    /// always the one being written). The epoch of the last deleted record is stored
    /// first (`BASE`), so the log can still tell where it starts and a member can be
    /// started right after it (`reset`). Returns the new first LSN.
    pub fn retain(&mut self, keep_from: u64, keep_segments: usize) -> Result<u64, LogError> {
        let firsts: Vec<u64> = self.sealed.keys().copied().collect();
        let deletable = firsts.len().saturating_sub(keep_segments);
        let mut cut = None;
        for (i, first) in firsts.iter().enumerate().take(deletable) {
            let next_first = firsts.get(i + 1).copied().unwrap_or(self.tail.first_lsn);
            if next_first > keep_from || next_first - 1 > self.durable_lsn {
                break;
            }
            cut = Some((*first, next_first - 1));
        }
        let Some((_, last_deleted)) = cut else {
            return Ok(self.first_lsn());
        };
        let epoch = self.epoch_at(last_deleted)?;
        store_base(&self.dir, (last_deleted, epoch))?;
        self.base = Some((last_deleted, epoch));
        self.delete_before(last_deleted + 1)
    }

    /// Starts the log over after (`base_lsn`, `base_epoch`): every record is deleted and
    /// the next append gets `base_lsn + 1`. A member whose primary no longer holds the
    /// records after the member's log end (retention deleted them) is reset to where the
    /// primary's log starts, and receives the records from there. Needs no write in
    /// flight and nothing pending.
    ///
    /// Crash safety: the segments are deleted newest first, each deletion durable before
    /// the next; then `BASE` is stored; then the new first segment is installed. A log
    /// opened at any point in between is the old log, shorter (its `BASE` unchanged), an
    /// empty log right after the old `BASE`, or the new one, empty: always a log that
    /// starts right after its `BASE`. After an error here the log stops (reopen it).
    pub fn reset(&mut self, base_lsn: u64, base_epoch: u64) -> Result<(), LogError> {
        if self.in_flight.is_some() || self.pending.count > 0 {
            return Err(LogError::Busy);
        }
        let spare_path = self.ready_spare()?;
        let stop = self.opts.faults.as_ref().and_then(|f| f.take_reset_stop());
        let mut old: Vec<PathBuf> = self.sealed.values().map(|s| s.path.clone()).collect();
        old.push(self.tail.path.clone());
        let stopped = |deletions: usize| match stop {
            Some(n) if n == deletions => Err(LogError::io(
                "reset",
                &self.dir,
                io::Error::other("stopped by an injected fault"),
            )),
            _ => Ok(()),
        };
        let started_over = (|| {
            for (i, path) in old.iter().rev().enumerate() {
                stopped(i)?;
                std::fs::remove_file(path).map_err(|e| LogError::io("delete segment", path, e))?;
                sysfile::sync_dir(&self.dir)
                    .map_err(|e| LogError::io("sync directory", &self.dir, e))?;
            }
            stopped(old.len())?;
            store_base(&self.dir, (base_lsn, base_epoch))?;
            self.install_spare(&spare_path, base_lsn + 1)
        })();
        let tail = match started_over {
            Ok(tail) => tail,
            Err(e) => {
                // The segments this log knows may be gone: nothing more may be appended.
                self.failed = Some(format!(
                    "starting the log over after lsn {base_lsn} failed: {e}"
                ));
                return Err(e);
            }
        };
        self.base = Some((base_lsn, base_epoch));
        self.sealed.clear();
        self.tail = tail;
        self.write_off = 0;
        self.next_lsn = base_lsn + 1;
        self.durable_lsn = base_lsn;
        self.pending.first_lsn = base_lsn + 1;
        self.last_epoch = None;
        self.start_spare();
        Ok(())
    }

    /// Removes every record after `lsn` (a returning node cutting its unacknowledged
    /// tail). Needs no write in flight and nothing pending ([`Log::sync`] first).
    ///
    /// Crash safety: newer segments are deleted newest first, then the rest of the
    /// segment holding `lsn` is zeroed; at every point the log on disk is a valid prefix
    /// at least `lsn` long.
    pub fn truncate_after(&mut self, lsn: u64) -> Result<(), LogError> {
        if self.in_flight.is_some() || self.pending.count > 0 {
            return Err(LogError::Busy);
        }
        let first = self.first_lsn();
        if lsn + 1 < first {
            return Err(LogError::OutOfRange {
                lsn,
                first,
                last: self.durable_lsn,
            });
        }
        if lsn >= self.durable_lsn {
            return Ok(());
        }
        // Newest first: delete every segment that starts after `lsn`, keeping the one
        // whose first LSN is lsn + 1 if no older segment remains (an empty log there).
        while self.tail.first_lsn > lsn
            && !(self.tail.first_lsn == lsn + 1 && self.sealed.is_empty())
        {
            let (first, s) = self.sealed.pop_last().expect("an older segment holds lsn");
            std::fs::remove_file(&self.tail.path)
                .map_err(|e| LogError::io("delete segment", &self.tail.path, e))?;
            sysfile::sync_dir(&self.dir)
                .map_err(|e| LogError::io("sync directory", &self.dir, e))?;
            let file = sysfile::open_rw(&s.path, self.access, false)
                .map_err(|e| LogError::io("open segment", &s.path, e))?;
            let len = file
                .metadata()
                .map_err(|e| LogError::io("stat segment", &s.path, e))?
                .len();
            self.tail = Tail {
                first_lsn: first,
                path: s.path,
                file: Arc::new(file),
                len,
                index: Vec::new(),
            };
        }
        let data = std::fs::read(&self.tail.path)
            .map_err(|e| LogError::io("read segment", &self.tail.path, e))?;
        let mut cut = None;
        let mut epoch = None;
        let scan = segment::scan(&data, self.tail.first_lsn, None, Mode::Tail, |r| {
            if r.header.lsn == lsn {
                cut = Some(r.offset + (RECORD_HEADER_BYTES + r.payload.len()) as u64);
                epoch = Some(r.header.epoch);
            }
        });
        if let End::Corrupt(d) = scan.end {
            return Err(LogError::Corrupt {
                path: self.tail.path.clone(),
                offset: d.offset,
                reason: d.reason,
            });
        }
        let cut = cut.unwrap_or(0);
        assert!(cut > 0 || lsn + 1 == self.tail.first_lsn);
        zero_range(&self.tail.file, &data, cut, scan.next_batch.max(cut))
            .map_err(|e| LogError::io("truncate segment", &self.tail.path, e))?;
        self.tail.index.retain(|&(l, _)| l <= lsn);
        self.write_off = cut.next_multiple_of(IO_ALIGN as u64);
        self.next_lsn = lsn + 1;
        self.durable_lsn = lsn;
        self.pending.first_lsn = lsn + 1;
        self.last_epoch = if cut > 0 {
            epoch
        } else {
            self.last_epoch_before_tail()?
        };
        Ok(())
    }

    fn last_epoch_before_tail(&mut self) -> Result<Option<u64>, LogError> {
        let last = self.tail.first_lsn - 1;
        if let Some((base, epoch)) = self.base()
            && last == base
        {
            return Ok(Some(epoch));
        }
        if last == 0 || last < self.first_lsn() {
            return Ok(None);
        }
        Ok(self.read(last, 1, 1)?.first().map(|r| r.epoch))
    }

    /// Segment holding `lsn`: (path, index LSN, index offset, last LSN the segment can
    /// hold).
    fn locate(&mut self, lsn: u64) -> Result<(PathBuf, u64, u64, u64), LogError> {
        if lsn >= self.tail.first_lsn {
            let (l, o) = index_floor(&self.tail.index, lsn).unwrap_or((self.tail.first_lsn, 0));
            return Ok((self.tail.path.clone(), l, o, u64::MAX));
        }
        let (&first, _) = self
            .sealed
            .range(..=lsn)
            .next_back()
            .expect("lsn >= first_lsn");
        let end = self
            .sealed
            .range(first + 1..)
            .next()
            .map_or(self.tail.first_lsn, |(&f, _)| f)
            - 1;
        let s = self.sealed.get_mut(&first).expect("found above");
        if s.index.is_none() {
            let data =
                std::fs::read(&s.path).map_err(|e| LogError::io("read segment", &s.path, e))?;
            let scan = segment::scan(&data, first, None, Mode::Sealed, |_| {});
            if let End::Corrupt(d) = scan.end {
                return Err(LogError::Corrupt {
                    path: s.path.clone(),
                    offset: d.offset,
                    reason: d.reason,
                });
            }
            if scan.last_lsn != end {
                return Err(LogError::Corrupt {
                    path: s.path.clone(),
                    offset: scan.valid_end,
                    reason: format!(
                        "segment ends at lsn {} but the next segment starts at {}",
                        scan.last_lsn,
                        end + 1
                    ),
                });
            }
            s.index = Some(scan.index);
        }
        let index = s.index.as_ref().expect("built above");
        let (l, o) = index_floor(index, lsn).unwrap_or((first, 0));
        Ok((s.path.clone(), l, o, end))
    }

    fn start_spare(&mut self) {
        if !matches!(self.spare, Spare::Idle) {
            return;
        }
        let path = self.dir.join(segment::SPARE_NAME);
        let (len, access, faults) = (
            self.opts.segment_bytes,
            self.access,
            self.opts.faults.clone(),
        );
        // A thread inherits its parent's CPU affinity: keep the preparation off the
        // shard's core, where it would delay appends.
        let parent_cores = lockstep_sys::cpu::current_thread_cores();
        let spawned = std::thread::Builder::new()
            .name("lockstep-segment-prep".into())
            .spawn(move || {
                lockstep_sys::cpu::keep_off(&parent_cores);
                prepare_segment(&path, len, access, faults.as_deref())
            });
        // If no thread can be started now, the segment is prepared in line at rollover.
        if let Ok(h) = spawned {
            self.spare = Spare::Preparing(h);
        }
    }

    /// The spare segment, prepared (waiting for its preparation, or preparing it here
    /// if none was started); returns its path.
    fn ready_spare(&mut self) -> Result<PathBuf, LogError> {
        let spare_path = self.dir.join(segment::SPARE_NAME);
        match std::mem::replace(&mut self.spare, Spare::Idle) {
            Spare::Preparing(h) => h.join().expect("segment preparation panicked")?,
            Spare::Idle => prepare_segment(
                &spare_path,
                self.opts.segment_bytes,
                self.access,
                self.opts.faults.as_deref(),
            )?,
        }
        Ok(spare_path)
    }

    /// Installs the prepared spare as the segment starting at `first_lsn`: the new tail.
    fn install_spare(&self, spare_path: &Path, first_lsn: u64) -> Result<Tail, LogError> {
        let path = self.dir.join(segment::file_name(first_lsn));
        install(spare_path, &path, &self.dir)?;
        let file = sysfile::open_rw(&path, self.access, false)
            .map_err(|e| LogError::io("open segment", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| LogError::io("stat segment", &path, e))?
            .len();
        Ok(Tail {
            first_lsn,
            path,
            file: Arc::new(file),
            len,
            index: Vec::new(),
        })
    }

    fn roll_over(&mut self) -> Result<(), LogError> {
        assert!(self.in_flight.is_none());
        assert_eq!(self.pending.count, 0);
        let spare_path = self.ready_spare()?;
        if self
            .opts
            .faults
            .as_ref()
            .is_some_and(|f| f.take_rollover_enospc())
        {
            let _ = std::fs::remove_file(&spare_path);
            let source = io::Error::from_raw_os_error(libc::ENOSPC);
            return Err(LogError::NoSpace {
                path: self.dir.clone(),
                source,
            });
        }
        let tail = self.install_spare(&spare_path, self.next_lsn)?;
        let old = std::mem::replace(&mut self.tail, tail);
        self.sealed.insert(
            old.first_lsn,
            Sealed {
                path: old.path,
                index: Some(old.index),
            },
        );
        self.write_off = 0;
        self.start_spare();
        Ok(())
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if let Spare::Preparing(h) = std::mem::replace(&mut self.spare, Spare::Idle) {
            let _ = h.join();
        }
    }
}

const BASE_MAGIC: &[u8] = b"LSBASE1\n";

/// Reads `BASE`: (LSN, epoch) of the record before the first retained one.
fn load_base(dir: &Path) -> Result<Option<(u64, u64)>, LogError> {
    let path = dir.join(segment::BASE_NAME);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::io("read", path, e)),
    };
    let m = BASE_MAGIC.len();
    let corrupt = |reason: &str| LogError::Corrupt {
        path: path.clone(),
        offset: 0,
        reason: reason.to_string(),
    };
    if bytes.len() != m + 20 || !bytes.starts_with(BASE_MAGIC) {
        return Err(corrupt("not a base file"));
    }
    let crc = u32::from_le_bytes(bytes[m + 16..].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[..m + 16]) != crc {
        return Err(corrupt("the base file fails its checksum"));
    }
    let lsn = u64::from_le_bytes(bytes[m..m + 8].try_into().expect("8 bytes"));
    let epoch = u64::from_le_bytes(bytes[m + 8..m + 16].try_into().expect("8 bytes"));
    Ok(Some((lsn, epoch)))
}

/// Replaces `BASE` atomically (write, fsync, rename, fsync the directory).
fn store_base(dir: &Path, (lsn, epoch): (u64, u64)) -> Result<(), LogError> {
    let mut bytes = BASE_MAGIC.to_vec();
    bytes.extend_from_slice(&lsn.to_le_bytes());
    bytes.extend_from_slice(&epoch.to_le_bytes());
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join("BASE.tmp");
    let path = dir.join(segment::BASE_NAME);
    let write = || -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        io::Write::write_all(&mut f, &bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        sysfile::sync_dir(dir)
    };
    write().map_err(|e| LogError::io("store", dir.join(segment::BASE_NAME), e))
}

/// Takes the log's lock. A process that forks (to start another program) shares the
/// lock with its child until the child's exec closes it; that window is short, so a busy
/// lock is retried for up to a second before the log is declared in use.
fn lock_exclusive(lock: &File, dir: &Path, lock_path: &Path) -> Result<(), LogError> {
    for _ in 0..LOCK_TRIES {
        match lock.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) => {
                std::thread::sleep(std::time::Duration::from_millis(LOCK_RETRY_MS));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(LogError::io("lock", lock_path, e)),
        }
    }
    Err(LogError::Locked {
        dir: dir.to_path_buf(),
    })
}

const LOCK_TRIES: u32 = 50;
const LOCK_RETRY_MS: u64 = 20;

fn index_floor(index: &[(u64, u64)], lsn: u64) -> Option<(u64, u64)> {
    let i = index.partition_point(|&(l, _)| l <= lsn);
    i.checked_sub(1).map(|i| index[i])
}

fn choose_io(
    dir: &Path,
    opts: &LogOptions,
    recovery: &mut Recovery,
) -> Result<(Access, WriteSync), LogError> {
    if opts.force_buffered {
        return Ok((Access::Buffered, WriteSync::LinkedFdatasync));
    }
    let p = lockstep_sys::probe::storage(dir).map_err(|e| LogError::io("probe storage", dir, e))?;
    Ok(match (p.direct, p.rwf_dsync) {
        (Ok(()), Ok(())) => (Access::Direct, WriteSync::Dsync),
        (Ok(()), Err(why)) => {
            recovery.notes.push(format!(
                "RWF_DSYNC not honoured under {} ({why}): using write + linked fdatasync",
                dir.display()
            ));
            (Access::Direct, WriteSync::LinkedFdatasync)
        }
        (Err(why), _) => {
            recovery.notes.push(format!(
                "{why} under {}: using buffered writes + fdatasync",
                dir.display()
            ));
            (Access::Buffered, WriteSync::LinkedFdatasync)
        }
    })
}

/// Creates `path` as a fully allocated, zeroed, durable file of `len` bytes.
fn prepare_segment(
    path: &Path,
    len: u64,
    access: Access,
    faults: Option<&Faults>,
) -> Result<(), LogError> {
    let dir = path.parent().expect("segment path has a directory");
    let result = (|| -> io::Result<()> {
        if faults.is_some_and(Faults::take_prepare_enospc) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let file = sysfile::open_rw(path, access, true)?;
        file.set_len(0)?;
        sysfile::fallocate(&file, 0, len)?;
        // Writing zeros turns the allocated extents into written ones, so steady-state
        // appends overwrite in place (measurably faster than first writes into
        // unwritten extents, which also commit extent conversions to the journal).
        let zeros = AlignedBuf::new(ZERO_CHUNK_BYTES);
        let mut off = 0;
        while off < len {
            let n = (len - off).min(ZERO_CHUNK_BYTES as u64) as usize;
            file.write_all_at(&zeros[..n], off)?;
            off += n as u64;
        }
        file.sync_all()
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(path);
        LogError::io("prepare segment", dir, e)
    })
}

/// Renames a prepared file into place and makes the name durable.
fn install(from: &Path, to: &Path, dir: &Path) -> Result<(), LogError> {
    std::fs::rename(from, to).map_err(|e| LogError::io("install segment", to, e))?;
    sysfile::sync_dir(dir).map_err(|e| LogError::io("sync directory", dir, e))
}

/// Zeroes `[from, to)` of `file`, whose current contents are `data`, with aligned writes
/// (the bytes before `from` in its block are kept), then makes it durable.
fn zero_range(file: &File, data: &[u8], from: u64, to: u64) -> io::Result<()> {
    let start = from / IO_ALIGN as u64 * IO_ALIGN as u64;
    let end = to.next_multiple_of(IO_ALIGN as u64).min(data.len() as u64);
    if start >= end {
        return Ok(());
    }
    let mut buf = AlignedBuf::new(ZERO_CHUNK_BYTES);
    let mut off = start;
    while off < end {
        let n = (end - off).min(ZERO_CHUNK_BYTES as u64) as usize;
        buf[..n].fill(0);
        if off == start {
            let keep = (from - start) as usize;
            buf[..keep].copy_from_slice(&data[start as usize..from as usize]);
        }
        file.write_all_at(&buf[..n], off)?;
        off += n as u64;
    }
    file.sync_data()
}
