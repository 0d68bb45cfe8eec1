//! Reading a log: durable records from an LSN, every checksum verified; the epoch of
//! a record (or of the base record); the last record of an epoch, by binary search
//! (epochs never decrease along the log). Sealed segments get their read index from
//! a full verifying scan the first time they are read; the segment being written keeps
//! its index as it is written.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use crate::constants::{BATCH_BYTES_MAX, INDEX_STRIDE_BYTES, RECORD_HEADER_BYTES};
use crate::log::segment::{self, End, Mode};
use crate::log::{Log, LogError, Record};

impl Log {
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

    /// Segment holding `lsn`: (path, index LSN, index offset, last LSN the segment can
    /// hold).
    pub(super) fn locate(&mut self, lsn: u64) -> Result<(PathBuf, u64, u64, u64), LogError> {
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
}

fn index_floor(index: &[(u64, u64)], lsn: u64) -> Option<(u64, u64)> {
    let i = index.partition_point(|&(l, _)| l <= lsn);
    i.checked_sub(1).map(|i| index[i])
}
