//! The writer of [`Log`]: what a log is, group commit (records appended while a write
//! is in flight go into the next one), making room for a group within one batch and
//! one segment, and the completion of each durable write.
//!
//! Invariants: at most one write is in flight; `durable_lsn` grows only when the write
//! that holds it completed in full; a failed or short write stops the log for good (no
//! retry: reopening it recovers).

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lockstep_sys::file::Access;
use lockstep_sys::mem::AlignedBuf;
use lockstep_sys::uring::{Completion, Ring, SubmitError, WriteSync};

use super::recovery::Recovery;
use super::spare::Spare;
use crate::constants::{
    BATCH_BYTES_DEFAULT, BATCH_BYTES_MAX, BATCH_BYTES_MIN, INDEX_STRIDE_BYTES, IO_ALIGN,
    RECORD_HEADER_BYTES, SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN,
};
use crate::log::record::{self, FLAG_BATCH_START};
use crate::log::{Faults, LogError};

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
pub(super) struct Sealed {
    pub(super) path: PathBuf,
    /// Read index, built by a full verifying scan the first time the segment is read.
    pub(super) index: Option<Vec<(u64, u64)>>,
}

/// The segment being written.
pub(super) struct Tail {
    pub(super) first_lsn: u64,
    pub(super) path: PathBuf,
    pub(super) file: Arc<File>,
    pub(super) len: u64,
    pub(super) index: Vec<(u64, u64)>,
}

/// Records appended and not yet handed to the kernel.
pub(super) struct Pending {
    pub(super) buf: AlignedBuf,
    pub(super) len: usize,
    pub(super) first_lsn: u64,
    pub(super) count: u64,
}

pub(super) struct InFlight {
    pub(super) last_lsn: u64,
    pub(super) first_lsn: u64,
    pub(super) offset: u64,
    pub(super) len: usize,
}

/// One stream's log. See [`crate::log`].
pub struct Log {
    pub(super) dir: PathBuf,
    pub(super) opts: LogOptions,
    pub(super) access: Access,
    pub(super) sync: WriteSync,
    pub(super) tag: u64,
    pub(super) sealed: BTreeMap<u64, Sealed>,
    pub(super) tail: Tail,
    /// Offset in the tail where the pending batch will be written.
    pub(super) write_off: u64,
    pub(super) next_lsn: u64,
    pub(super) durable_lsn: u64,
    pub(super) last_epoch: Option<u64>,
    pub(super) pending: Pending,
    pub(super) free_buf: Option<AlignedBuf>,
    pub(super) in_flight: Option<InFlight>,
    pub(super) spare: Spare,
    pub(super) failed: Option<String>,
    pub(super) recovery: Recovery,
    /// The record before the first retained one (LSN, epoch), as `BASE` says. It
    /// counts only while the log starts right after it: a retention cut short by a
    /// crash leaves the records themselves, which then answer for their epochs.
    pub(super) base: Option<(u64, u64)>,
    // Held for the life of the Log: one writer per log directory.
    pub(super) _lock: File,
}

impl Log {
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
}
