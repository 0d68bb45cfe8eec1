//! Cutting a log: retention (whole sealed segments below what every member still
//! needs, `BASE` stored first), a reset that starts the log over after a base record
//! (newest segment first, each deletion durable, `BASE` stored last), and the
//! truncation of an unacknowledged tail. At every point a crash leaves a log that
//! recovery opens: the old log shorter, or the new one.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use lockstep_sys::file as sysfile;
use lockstep_sys::mem::AlignedBuf;

use super::recovery::store_base;
use super::writer::Tail;
use crate::constants::{IO_ALIGN, RECORD_HEADER_BYTES, ZERO_CHUNK_BYTES};
use crate::log::segment::{self, End, Mode};
use crate::log::{Log, LogError};

impl Log {
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
}

/// Zeroes `[from, to)` of `file`, whose current contents are `data`, with aligned writes
/// (the bytes before `from` in its block are kept), then makes it durable.
pub(super) fn zero_range(file: &File, data: &[u8], from: u64, to: u64) -> io::Result<()> {
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
