//! Segment files and the scan that recovery, verification and reads share.
//!
//! A segment is a fixed-size, pre-allocated, pre-zeroed file named by the LSN of its first
//! record (`00000000000000000001.log`). Inside it, batches start on block boundaries; a
//! batch is records back to back, the first flagged as batch start, then zero padding to
//! the next block. Everything after the last batch is zero.
//!
//! Fault model: the log has at most one write in flight, so after a crash only the last
//! batch of the newest segment can be torn (any subset of its blocks on disk). The scan
//! therefore classifies a damaged record:
//! - **torn tail** when no complete later batch exists: the write was never acknowledged
//!   and recovery cuts it;
//! - **corruption** when a valid batch start with a higher LSN lies after it (so the
//!   damaged batch had completed before that one was written), or when the segment is not
//!   the newest. Corruption is reported with file and offset, never skipped.

use std::path::{Path, PathBuf};

use crate::constants::{BATCH_BYTES_MAX, INDEX_STRIDE_BYTES, IO_ALIGN, RECORD_HEADER_BYTES};
use crate::log::record::{self, Header, Slot};

pub const SUFFIX: &str = ".log";
pub const SPARE_NAME: &str = "spare.tmp";
pub const LOCK_NAME: &str = "LOCK";
/// The (LSN, epoch) of the record just before the first retained one, once retention
/// deleted it or the log was started after it (see `Log::retain`, `Log::reset`).
pub const BASE_NAME: &str = "BASE";

/// File name of the segment whose first record is `first_lsn`.
pub fn file_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}{SUFFIX}")
}

/// The first LSN encoded in a segment file name, if `name` is one.
pub fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&lsn| lsn > 0)
}

/// Segment files of `dir`, sorted by first LSN.
pub fn list(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if let Some(lsn) = e.file_name().to_str().and_then(parse_name) {
            v.push((lsn, e.path()));
        }
    }
    v.sort_unstable_by_key(|(lsn, _)| *lsn);
    Ok(v)
}

/// A record seen by a scan.
pub struct Seen<'a> {
    pub offset: u64,
    pub header: Header,
    pub payload: &'a [u8],
}

/// Where and why a scan stopped early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    pub offset: u64,
    pub reason: String,
}

/// How a scan ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Zeroes after the last batch, or the end of the file.
    Clean,
    /// A damaged record with no complete batch after it: an unacknowledged torn write.
    Torn(Damage),
    /// A damaged record that cannot be a torn write.
    Corrupt(Damage),
}

/// Result of scanning one segment image.
#[derive(Clone, Debug)]
pub struct Scan {
    pub first_lsn: u64,
    pub records: u64,
    /// LSN of the last valid record, `first_lsn - 1` if none.
    pub last_lsn: u64,
    pub last_epoch: Option<u64>,
    /// Offset just past the last valid record.
    pub valid_end: u64,
    /// Block-aligned offset where the next batch goes.
    pub next_batch: u64,
    /// Offset of the first block after `next_batch` that is not all zero, if any; set
    /// only for a clean end (leftovers of a write whose first block never landed).
    pub dirty_after_end: Option<u64>,
    /// Sparse read index: (lsn, offset) of a batch start at least every
    /// `INDEX_STRIDE_BYTES`.
    pub index: Vec<(u64, u64)>,
    pub end: End,
}

/// How strictly to judge damage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The newest segment: damage may be a torn tail.
    Tail,
    /// Any older segment: all damage is corruption.
    Sealed,
}

/// Scans `data`, the whole image of a segment whose first record must be `first_lsn`,
/// calling `each` for every valid record in order. `prev_epoch` is the epoch of the
/// record before `first_lsn` (epochs never decrease along the log).
pub fn scan(
    data: &[u8],
    first_lsn: u64,
    prev_epoch: Option<u64>,
    mode: Mode,
    mut each: impl FnMut(&Seen<'_>),
) -> Scan {
    let len = data.len();
    let mut s = Scan {
        first_lsn,
        records: 0,
        last_lsn: first_lsn - 1,
        last_epoch: prev_epoch,
        valid_end: 0,
        next_batch: 0,
        dirty_after_end: None,
        index: Vec::new(),
        end: End::Clean,
    };
    let mut off = 0usize;
    let mut in_batch = false;
    let mut next_index_at = 0u64;
    let damage = loop {
        let aligned = off.is_multiple_of(IO_ALIGN);
        if !aligned && off < len && data[off] == 0 {
            // Padding to the next block (a record never starts with a zero byte: every
            // byte of the magic is non-zero). It may be shorter than a header.
            let boundary = off.next_multiple_of(IO_ALIGN).min(len);
            if data[off..boundary].iter().any(|&b| b != 0) {
                break Some((off, "non-zero bytes in batch padding".into()));
            }
            off = boundary;
            in_batch = false;
            continue;
        }
        if off + RECORD_HEADER_BYTES > len {
            if data[off..].iter().any(|&b| b != 0) {
                break Some((
                    off,
                    "partial record header at the end of the segment".into(),
                ));
            }
            break None;
        }
        let h = match record::decode_header(&data[off..]) {
            Slot::Zero => break None,
            Slot::Damaged(why) => break Some((off, why.to_string())),
            Slot::Header(h) => h,
        };
        let end = off + RECORD_HEADER_BYTES + h.len as usize;
        if end > len {
            break Some((off, "record runs past the end of the segment".into()));
        }
        if !in_batch && !h.batch_start() {
            break Some((off, "batch does not begin with a batch-start record".into()));
        }
        if h.batch_start() && !aligned {
            break Some((off, "batch start not on a block boundary".into()));
        }
        if !record::checksum_ok(&data[off..end], &h) {
            break Some((off, "checksum mismatch".into()));
        }
        if h.lsn != s.last_lsn + 1 {
            break Some((
                off,
                format!("lsn {} where {} was expected", h.lsn, s.last_lsn + 1),
            ));
        }
        if s.last_epoch.is_some_and(|e| h.epoch < e) {
            break Some((
                off,
                format!(
                    "epoch {} after epoch {}",
                    h.epoch,
                    s.last_epoch.unwrap_or(0)
                ),
            ));
        }
        if h.batch_start() && off as u64 >= next_index_at {
            s.index.push((h.lsn, off as u64));
            next_index_at = off as u64 + INDEX_STRIDE_BYTES;
        }
        each(&Seen {
            offset: off as u64,
            header: h,
            payload: &data[off + RECORD_HEADER_BYTES..end],
        });
        s.records += 1;
        s.last_lsn = h.lsn;
        s.last_epoch = Some(h.epoch);
        s.valid_end = end as u64;
        in_batch = true;
        off = end;
    };
    s.next_batch = s.valid_end.next_multiple_of(IO_ALIGN as u64);
    match damage {
        None if later_batch_exists(data, s.next_batch as usize, s.last_lsn) => {
            // A zero block where the log goes on: lost data, not the end of the log.
            let d = Damage {
                offset: s.next_batch,
                reason: "zeroed block before later batches".into(),
            };
            s.end = End::Corrupt(d);
        }
        None => {
            s.dirty_after_end = first_dirty_block(data, s.next_batch as usize);
        }
        Some((at, reason)) => {
            let d = Damage {
                offset: at as u64,
                reason,
            };
            s.end = if mode == Mode::Sealed || later_batch_exists(data, at, s.last_lsn) {
                End::Corrupt(d)
            } else {
                End::Torn(d)
            };
        }
    }
    s
}

/// Whether a complete, valid batch-start record with an LSN above `last_lsn` lies in a
/// block after the one holding `damaged_at`. Such a batch was written after the damaged
/// place had been written completely (one write in flight at a time), so the damage is
/// not a torn write.
fn later_batch_exists(data: &[u8], damaged_at: usize, last_lsn: u64) -> bool {
    let mut q = (damaged_at / IO_ALIGN + 1) * IO_ALIGN;
    while q + RECORD_HEADER_BYTES <= data.len() {
        if let Slot::Header(h) = record::decode_header(&data[q..]) {
            let end = q + RECORD_HEADER_BYTES + h.len as usize;
            if h.batch_start()
                && h.lsn > last_lsn
                && end <= data.len()
                && record::checksum_ok(&data[q..end], &h)
            {
                return true;
            }
        }
        q += IO_ALIGN;
    }
    false
}

/// First non-zero block in the window a torn write could have touched after `from`.
fn first_dirty_block(data: &[u8], from: usize) -> Option<u64> {
    let to = (from + BATCH_BYTES_MAX).min(data.len());
    (from..to)
        .step_by(IO_ALIGN)
        .find(|&b| data[b..(b + IO_ALIGN).min(to)].iter().any(|&x| x != 0))
        .map(|b| b as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::record::{encode, mark_batch_start, record_bytes};

    /// Lays out batches of payload sizes as the writer does.
    fn image(batches: &[&[usize]], seg: usize) -> (Vec<u8>, Vec<u64>) {
        let mut data = vec![0u8; seg];
        let mut starts = Vec::new();
        let (mut off, mut lsn) = (0usize, 1u64);
        for b in batches {
            for (i, &n) in b.iter().enumerate() {
                let r = &mut data[off..off + record_bytes(n)];
                encode(r, 0, 1, lsn, &vec![lsn as u8; n]);
                if i == 0 {
                    mark_batch_start(r);
                    starts.push(off as u64);
                }
                off += record_bytes(n);
                lsn += 1;
            }
            off = off.next_multiple_of(IO_ALIGN);
        }
        (data, starts)
    }

    fn scan_all(data: &[u8], mode: Mode) -> Scan {
        scan(data, 1, None, mode, |_| {})
    }

    #[test]
    fn clean_log_with_aligned_and_unaligned_batches() {
        let exact = IO_ALIGN - RECORD_HEADER_BYTES;
        let (data, _) = image(&[&[100, 200], &[exact], &[exact, 5], &[7]], 64 * IO_ALIGN);
        let s = scan_all(&data, Mode::Tail);
        assert_eq!(s.end, End::Clean);
        assert_eq!((s.records, s.last_lsn), (6, 6));
        assert_eq!(s.next_batch, 5 * IO_ALIGN as u64);
        assert_eq!(s.dirty_after_end, None);
    }

    #[test]
    fn torn_last_batch_versus_corrupt_middle() {
        let (data, starts) = image(&[&[100, 200], &[5000, 10], &[30]], 64 * IO_ALIGN);
        // Damage in the last batch: torn.
        let mut d = data.clone();
        d[starts[2] as usize + 40] ^= 1;
        let s = scan_all(&d, Mode::Tail);
        assert!(
            matches!(s.end, End::Torn(ref x) if x.offset == starts[2]),
            "{:?}",
            s.end
        );
        assert_eq!(s.last_lsn, 4);
        // Damage in a middle batch: a later batch exists, so it is corruption.
        let mut d = data.clone();
        d[starts[1] as usize + 4500] ^= 1;
        let s = scan_all(&d, Mode::Tail);
        assert!(
            matches!(s.end, End::Corrupt(ref x) if x.offset == starts[1]),
            "{:?}",
            s.end
        );
        // The same damage in the last batch of an older segment is corruption too.
        let mut d = data.clone();
        d[starts[2] as usize + 40] ^= 1;
        assert!(matches!(scan_all(&d, Mode::Sealed).end, End::Corrupt(_)));
    }

    #[test]
    fn zeroed_block_mid_log_is_corruption_at_tail_is_torn() {
        let (data, starts) = image(&[&[100], &[9000], &[30]], 64 * IO_ALIGN);
        let mut d = data.clone();
        let b = starts[1] as usize + IO_ALIGN;
        d[b..b + IO_ALIGN].fill(0);
        assert!(matches!(scan_all(&d, Mode::Tail).end, End::Corrupt(_)));
        // Zeroed first block of the last batch, later blocks present: torn, and the
        // leftovers are reported so recovery can clear them.
        let (data, starts) = image(&[&[100], &[9000]], 64 * IO_ALIGN);
        let mut d = data.clone();
        let b = starts[1] as usize;
        d[b..b + IO_ALIGN].fill(0);
        let s = scan_all(&d, Mode::Tail);
        assert_eq!(s.end, End::Clean);
        assert_eq!(s.last_lsn, 1);
        assert_eq!(s.dirty_after_end, Some(starts[1] + IO_ALIGN as u64));
    }

    #[test]
    fn zeroed_batch_start_block_before_later_batches_is_corruption() {
        let (data, starts) = image(&[&[100], &[9000], &[30]], 64 * IO_ALIGN);
        let mut d = data.clone();
        let b = starts[1] as usize;
        d[b..b + IO_ALIGN].fill(0);
        let s = scan_all(&d, Mode::Tail);
        assert!(
            matches!(s.end, End::Corrupt(ref x) if x.offset == starts[1]),
            "{:?}",
            s.end
        );
    }

    #[test]
    fn padding_shorter_than_a_header_and_partial_headers() {
        // A batch ending 19 bytes before a block boundary.
        let n = IO_ALIGN - 19 - 2 * RECORD_HEADER_BYTES - 100;
        let (data, starts) = image(&[&[100, n], &[10]], 16 * IO_ALIGN);
        assert_eq!(starts[1], IO_ALIGN as u64);
        let s = scan_all(&data, Mode::Tail);
        assert_eq!((s.end.clone(), s.last_lsn), (End::Clean, 3));
        // Garbage in the padding is damage, not padding.
        let mut d = data.clone();
        d[IO_ALIGN - 5] = 1;
        assert!(
            matches!(scan_all(&d, Mode::Sealed).end, End::Corrupt(ref x) if x.offset == IO_ALIGN as u64 - 19)
        );
        // A file cut inside a header: a partial header, torn.
        let cut = &data[..starts[1] as usize + 20];
        assert!(matches!(scan_all(cut, Mode::Tail).end, End::Torn(ref x) if x.offset == starts[1]));
    }

    #[test]
    fn names() {
        assert_eq!(file_name(7), "00000000000000000007.log");
        assert_eq!(parse_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_name("0000000000000000007.log"), None);
        assert_eq!(parse_name("00000000000000000000.log"), None);
        assert_eq!(parse_name("spare.tmp"), None);
    }
}
