//! A node's simulated stream log: a durable prefix and a pending part written but not
//! yet on stable storage, the node's EPOCH file, and retention's `BASE` file.
//!
//! Fault model:
//! - A write (one group commit: everything pending when it starts) completes after a
//!   latency; a latency spike makes it slow.
//! - A crash loses what is not durable, except a random prefix of it that a torn write
//!   left on disk. Recovery keeps only whole, valid records, so a torn write shows up as
//!   a few pending records that survived, never as a damaged one.
//! - A write may fail (EIO from a dsync write or fsync): production does not retry, the
//!   node stops and recovers from its log, so the caller crashes the node (torn).
//! - A full disk (ENOSPC) refuses new records until it is freed; nothing is appended.
//! - Retention and reset change the log as `log::stream::Log` does, in the same order of
//!   steps, and a crash may stop either between two steps. Retention stores `BASE`
//!   first, then deletes whole segments oldest first (a crash in between leaves `BASE`
//!   ahead of the records still there, and recovery finishes the deletion). A reset
//!   deletes the segments newest first, then stores `BASE`, then installs an empty
//!   segment at the new start (a crash in between leaves a shorter log after the old
//!   `BASE`). As in production, `BASE` counts only while the log starts right after it
//!   ([`Disk::base`]).
//!
//! The log is split into segments of `segment_records` records (production's are of a
//! size in bytes; only their boundaries matter here): retention deletes whole segments,
//! never the one being written.
//!
//! The stream driver uses the disk as it uses production's log, through
//! [`LogStore`]: the same contract, the same errors. A cleanup cut short by an injected
//! crash ([`Disk::cleanup_crash`]) returns an error after the steps it took, as a log
//! whose process died there would have left the files; the simulator then crashes the
//! node.
//!
//! Invariant: `first - 1 <= durable <= last`, and the EPOCH and BASE files are durable
//! as soon as stored (production writes, fsyncs and renames them).

use std::path::PathBuf;

use crate::log::{LogError, LogResult, Record};
use crate::sim::Rec;
use crate::sim::checker::LowWater;
use crate::stream::LogStore;

/// Records per segment unless the run says otherwise: large enough that retention never
/// deletes anything in a run of the default length.
pub const SEGMENT_RECORDS_DEFAULT: u64 = 1 << 20;

/// Retention of a run, as a stream's `retain_segments` sets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Records per log segment.
    pub segment_records: u64,
    /// Sealed segments kept beyond the floor (`retain_segments`).
    pub keep_segments: usize,
}

/// The write in flight.
#[derive(Clone, Copy, Debug)]
struct Flush {
    /// LSN durable once it completes.
    upto: u64,
    /// Tick it completes.
    at: u64,
}

/// What a completed write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// The log is durable up to this LSN.
    Durable(u64),
    /// The write failed: the node must stop.
    Failed,
}

/// How far a cleanup (retention or reset) gets before the process dies: `None` runs it
/// to its end, `Some(n)` stops it after `n` segment deletions (before them, retention
/// stored `BASE`; after them, a reset would have stored it).
pub type Interrupt = Option<usize>;

#[derive(Debug)]
pub struct Disk {
    /// LSN of the first record held (`log[0]`).
    first: u64,
    log: Vec<Rec>,
    /// Highest durable LSN.
    durable: u64,
    flush: Option<Flush>,
    /// First LSN of every segment, oldest first; the last one is being written.
    segments: Vec<u64>,
    /// Records a segment holds before the next one starts.
    pub segment_records: u64,
    /// The `BASE` file: the record before the first retained one (LSN, epoch), as
    /// retention or a reset stored it last.
    base_file: Option<(u64, u64)>,
    /// The last epoch this node took as primary (its EPOCH file).
    pub epoch_file: u64,
    /// The next write fails.
    pub fail_next_write: bool,
    /// New records are refused with ENOSPC until this tick.
    pub full_until: u64,
    /// Writes started before this tick are slow.
    pub slow_until: u64,
    /// Tells the checker how far the log was cut since it last looked.
    pub low_water: LowWater,
    /// The simulated clock, for `full_until`.
    pub now: u64,
    /// The next cleanup of the log (retention or reset) stops after this many segment
    /// deletions: the process dies there.
    pub cleanup_crash: Interrupt,
    /// A cleanup was cut short: the process is dead (the simulator crashes it).
    pub interrupted: bool,
    /// Records retention deleted since the last [`Disk::take_deleted`]: (first LSN,
    /// records).
    deleted: Vec<(u64, Vec<Rec>)>,
}

impl Default for Disk {
    fn default() -> Self {
        Disk {
            first: 1,
            log: Vec::new(),
            durable: 0,
            flush: None,
            segments: vec![1],
            segment_records: SEGMENT_RECORDS_DEFAULT,
            base_file: None,
            epoch_file: 0,
            fail_next_write: false,
            full_until: 0,
            slow_until: 0,
            low_water: LowWater::default(),
            now: 0,
            cleanup_crash: None,
            interrupted: false,
            deleted: Vec::new(),
        }
    }
}

impl Disk {
    /// The records held, from [`Disk::first_lsn`] on.
    pub fn records(&self) -> &[Rec] {
        &self.log
    }

    /// Record `lsn`, if the log holds it.
    pub fn record(&self, lsn: u64) -> Option<&Rec> {
        lsn.checked_sub(self.first)
            .and_then(|i| self.log.get(i as usize))
    }

    /// Lowest LSN held (the next LSN if the log holds none).
    pub fn first_lsn(&self) -> u64 {
        self.first
    }

    pub fn last_lsn(&self) -> u64 {
        self.first - 1 + self.log.len() as u64
    }

    pub fn durable_lsn(&self) -> u64 {
        self.durable
    }

    /// The record before the first one held (LSN, epoch), when retention deleted it or
    /// the log was started after it, as `Log::base`: `BASE` counts only while the log
    /// starts right after it.
    pub fn base(&self) -> Option<(u64, u64)> {
        self.base_file.filter(|&(lsn, _)| lsn + 1 == self.first)
    }

    /// Epoch of the last record (of the base record when the log holds none after it;
    /// 0 when nothing tells).
    pub fn last_epoch(&self) -> u64 {
        match self.log.last() {
            Some(r) => r.epoch,
            None => self.base().map_or(0, |(_, e)| e),
        }
    }

    /// The epoch of record `lsn` (0 for lsn 0), or of the base record; `None` when the
    /// log no longer holds it.
    pub fn epoch_at(&self, lsn: u64) -> Option<u64> {
        if lsn == 0 {
            return Some(0);
        }
        if let Some((base, e)) = self.base()
            && base == lsn
        {
            return Some(e);
        }
        self.record(lsn).map(|r| r.epoch)
    }

    /// Nothing pending and nothing in flight: the whole log is durable.
    pub fn settled(&self) -> bool {
        self.flush.is_none() && self.durable == self.last_lsn()
    }

    pub fn full(&self) -> bool {
        self.now < self.full_until
    }

    /// Appends a record to the pending part; the caller checked for room.
    pub fn push(&mut self, rec: Rec) -> u64 {
        self.log.push(rec);
        let lsn = self.last_lsn();
        let tail = *self.segments.last().expect("a segment is being written");
        if lsn >= tail + self.segment_records {
            self.segments.push(lsn);
        }
        lsn
    }

    /// Starts a write of everything pending, unless one is in flight (group commit).
    /// Returns whether a write started.
    pub fn start_flush(&mut self, now: u64, latency: u64) -> bool {
        let start = self.flush.is_none() && self.last_lsn() > self.durable;
        if start {
            self.flush = Some(Flush {
                upto: self.last_lsn(),
                at: now + latency.max(1),
            });
        }
        start
    }

    /// The write in flight, if it completes at `now`.
    pub fn complete(&mut self, now: u64) -> Option<Completion> {
        let f = self.flush.filter(|f| f.at <= now)?;
        self.flush = None;
        if self.fail_next_write {
            self.fail_next_write = false;
            return Some(Completion::Failed);
        }
        self.durable = f.upto;
        Some(Completion::Durable(f.upto))
    }

    /// A crash: the pending part is lost except its first `torn_keep` records, which
    /// recovery finds whole. Returns how many records were lost.
    pub fn crash(&mut self, torn_keep: usize) -> usize {
        self.flush = None;
        self.fail_next_write = false;
        let pending = self.pending();
        let keep = torn_keep.min(pending);
        self.cut_after(self.durable + keep as u64);
        self.durable = self.last_lsn();
        pending - keep
    }

    /// Records not yet durable.
    pub fn pending(&self) -> usize {
        (self.last_lsn() - self.durable) as usize
    }

    /// Drops the records after `lsn` and the segments that start after it (recovery
    /// removes an unused newest segment), keeping the one the log starts in.
    fn cut_after(&mut self, lsn: u64) {
        self.log.truncate((lsn + 1 - self.first) as usize);
        let last = self.last_lsn();
        let first = self.first;
        self.segments.retain(|&s| s == first || s <= last);
        self.low_water.cut(self.last_lsn() as usize);
    }

    /// Cuts every record after `lsn` (a returning member cutting its tail). Needs the
    /// whole log durable, as `Log::truncate_after` needs nothing pending, and `lsn` not
    /// below the log's start (`lsn + 1 >= first`).
    pub fn truncate_after(&mut self, lsn: u64) {
        assert!(self.settled(), "truncation with writes pending");
        assert!(lsn + 1 >= self.first, "truncation below the log's start");
        if lsn < self.last_lsn() {
            self.cut_after(lsn);
            self.durable = self.last_lsn();
        }
    }

    /// Retention as `Log::retain`: deletes the oldest segments whose records all lie
    /// below `keep_from` and are durable, keeping the newest `keep_segments` sealed ones
    /// and the one being written. `BASE` is stored first. Returns the records it set out
    /// to delete (LSN `first..`; `stop` may leave some of them, which recovery deletes),
    /// or `None` when nothing could be.
    pub fn retain_until(
        &mut self,
        keep_from: u64,
        keep_segments: usize,
        stop: Interrupt,
    ) -> Option<Vec<Rec>> {
        assert!(self.settled(), "retention with writes pending");
        let sealed = self.segments.len() - 1;
        let deletable = sealed.saturating_sub(keep_segments);
        let mut cut = None;
        for i in 0..deletable {
            let next_first = self.segments[i + 1];
            if next_first > keep_from || next_first - 1 > self.durable {
                break;
            }
            cut = Some((i, next_first - 1));
        }
        let (last_segment, last_deleted) = cut?;
        let epoch = self.record(last_deleted).expect("a durable record").epoch;
        self.base_file = Some((last_deleted, epoch));
        let segments = stop.map_or(last_segment + 1, |n| n.min(last_segment + 1));
        let end = if segments == 0 {
            self.first
        } else {
            self.segments.get(segments).copied().expect("sealed")
        };
        let deleted = self.log[..(last_deleted + 1 - self.first) as usize].to_vec();
        self.log.drain(..(end - self.first) as usize);
        self.segments.drain(..segments);
        self.first = end;
        Some(deleted)
    }

    /// Starts the log over after (`base_lsn`, `base_epoch`), as `Log::reset`: the
    /// segments are deleted newest first, then `BASE` is stored, then an empty segment
    /// is installed at `base_lsn + 1`. With `stop`, the process dies after that many
    /// deletions (`BASE` not yet stored): the oldest segments left are a shorter log
    /// after the old `BASE`, and a log left without segments is started right after the
    /// old `BASE` by recovery, as `Log::open` does.
    pub fn reset_to(&mut self, base_lsn: u64, base_epoch: u64, stop: Interrupt) {
        assert!(self.settled(), "reset with writes pending");
        let n = self.segments.len();
        match stop {
            // Nothing deleted yet, nothing stored: the log is as it was.
            Some(0) => {}
            Some(deleted) if deleted < n => {
                // The oldest segments are still there: the log is a prefix of the old one.
                let keep_to = self.segments[n - deleted] - 1;
                self.segments.truncate(n - deleted);
                let keep_to = keep_to.max(self.first - 1);
                self.log.truncate((keep_to + 1 - self.first) as usize);
            }
            Some(_) => {
                // Every segment deleted, `BASE` not stored: the old `BASE` says where the
                // log starts.
                self.log.clear();
                self.first = self.base_file.map_or(1, |(lsn, _)| lsn + 1);
                self.segments = vec![self.first];
            }
            None => {
                self.base_file = Some((base_lsn, base_epoch));
                self.log.clear();
                self.first = base_lsn + 1;
                self.segments = vec![self.first];
            }
        }
        self.durable = self.last_lsn();
        self.low_water.cut(self.last_lsn().min(base_lsn) as usize);
    }

    /// Recovery at start-up, as `Log::open`: a retention that a crash cut short left
    /// segments at or below `BASE` (stored first); they are deleted now, and a log left
    /// without segments starts right after `BASE`.
    pub fn recover(&mut self) {
        let Some((base, _)) = self.base_file else {
            return;
        };
        if self.first > base {
            return;
        }
        self.segments.retain(|&s| s > base);
        let first = self.segments.first().copied().unwrap_or(base + 1);
        self.log
            .drain(..((first - self.first) as usize).min(self.log.len()));
        self.first = first;
        if self.segments.is_empty() {
            self.segments.push(first);
        }
        self.durable = self.last_lsn();
        self.low_water.cut(self.last_lsn().min(base) as usize);
    }

    /// Records retention deleted since the last call: (first LSN, records).
    pub fn take_deleted(&mut self) -> Vec<(u64, Vec<Rec>)> {
        std::mem::take(&mut self.deleted)
    }

    /// The last durable LSN of an epoch up to `epoch`, as `Log::last_lsn_up_to_epoch`.
    fn last_durable_up_to_epoch(&self, epoch: u64) -> u64 {
        let durable = &self.log[..(self.durable + 1 - self.first) as usize];
        let held = durable.partition_point(|r| r.epoch <= epoch) as u64;
        if held > 0 {
            return self.first - 1 + held;
        }
        match self.base() {
            Some((base, e)) if e <= epoch => base,
            Some(_) => 0,
            None => self.first - 1,
        }
    }

    fn out_of_range(&self, lsn: u64) -> LogError {
        LogError::OutOfRange {
            lsn,
            first: self.first,
            last: self.durable,
        }
    }

    /// The error a cleanup cut short leaves: the process died there.
    fn cut_short(&mut self, what: &str) -> LogError {
        self.interrupted = true;
        LogError::Failed {
            dir: PathBuf::from("sim"),
            reason: format!("the process died while {what}"),
        }
    }
}

/// The disk as the stream driver's log: production's `Log` contract (see
/// [`LogStore`]), with the simulated faults.
impl LogStore for Disk {
    fn first_lsn(&self) -> u64 {
        self.first
    }

    fn next_lsn(&self) -> u64 {
        self.last_lsn() + 1
    }

    fn durable_lsn(&self) -> u64 {
        self.durable
    }

    fn last_epoch(&self) -> Option<u64> {
        match self.log.last() {
            Some(r) => Some(r.epoch),
            None => self.base().map(|(_, e)| e),
        }
    }

    fn base(&self) -> Option<(u64, u64)> {
        Disk::base(self)
    }

    fn writing(&self) -> bool {
        self.flush.is_some()
    }

    fn has_pending(&self) -> bool {
        self.last_lsn() > self.flush.map_or(self.durable, |f| f.upto)
    }

    fn payload_bytes_max(&self) -> usize {
        crate::constants::PAYLOAD_BYTES_MAX
    }

    /// A full disk refuses (ENOSPC); otherwise there is always room.
    fn make_room(&mut self, _record_bytes: usize) -> LogResult<bool> {
        if self.full() {
            return Err(LogError::NoSpace {
                path: PathBuf::from("sim"),
                source: std::io::Error::from_raw_os_error(libc::ENOSPC),
            });
        }
        Ok(true)
    }

    fn append(&mut self, epoch: u64, payload: &[u8]) -> LogResult<u64> {
        if let Some(last) = LogStore::last_epoch(self).filter(|&last| epoch < last) {
            return Err(LogError::EpochRegression { epoch, last });
        }
        Ok(self.push(Rec {
            epoch,
            payload: payload.to_vec(),
        }))
    }

    fn read(&mut self, from: u64, records_max: usize, bytes_max: usize) -> LogResult<Vec<Record>> {
        if from < self.first || from > self.durable + 1 {
            return Err(self.out_of_range(from));
        }
        let mut out: Vec<Record> = Vec::new();
        let mut bytes = 0;
        for lsn in from..=self.durable {
            let r = self.record(lsn).expect("held");
            if out.len() == records_max || (!out.is_empty() && bytes + r.payload.len() > bytes_max)
            {
                break;
            }
            bytes += r.payload.len();
            out.push(Record {
                lsn,
                epoch: r.epoch,
                payload: r.payload.clone(),
            });
        }
        Ok(out)
    }

    fn epoch_at(&mut self, lsn: u64) -> LogResult<u64> {
        if lsn > self.durable && self.base().is_none_or(|(b, _)| b != lsn) {
            return Err(self.out_of_range(lsn));
        }
        Disk::epoch_at(self, lsn).ok_or_else(|| self.out_of_range(lsn))
    }

    fn last_lsn_up_to_epoch(&mut self, epoch: u64) -> LogResult<u64> {
        Ok(self.last_durable_up_to_epoch(epoch))
    }

    /// Retention; an armed [`Disk::cleanup_crash`] stops it midway.
    fn retain(&mut self, keep_from: u64, keep_segments: usize) -> LogResult<u64> {
        if !self.settled() {
            return Err(LogError::Busy);
        }
        let first = self.first;
        let stop = self.cleanup_crash;
        if let Some(records) = self.retain_until(keep_from, keep_segments, stop) {
            self.deleted.push((first, records));
            if stop.is_some() {
                self.cleanup_crash = None;
                return Err(self.cut_short("deleting segments"));
            }
        }
        Ok(self.first)
    }

    /// A reset; an armed [`Disk::cleanup_crash`] stops it midway.
    fn reset(&mut self, base_lsn: u64, base_epoch: u64) -> LogResult<()> {
        if !self.settled() {
            return Err(LogError::Busy);
        }
        let stop = self.cleanup_crash.take();
        self.reset_to(base_lsn, base_epoch, stop);
        if stop.is_some() {
            return Err(self.cut_short("starting the log over"));
        }
        Ok(())
    }

    fn truncate_after(&mut self, lsn: u64) -> LogResult<()> {
        if !self.settled() {
            return Err(LogError::Busy);
        }
        if lsn + 1 < self.first {
            return Err(self.out_of_range(lsn));
        }
        Disk::truncate_after(self, lsn);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(epoch: u64) -> Rec {
        Rec {
            epoch,
            payload: vec![epoch as u8],
        }
    }

    #[test]
    fn crash_keeps_the_durable_part_and_a_torn_prefix() {
        let mut d = Disk::default();
        for _ in 0..3 {
            d.push(rec(1));
        }
        d.start_flush(0, 2);
        assert_eq!(d.complete(1), None);
        assert_eq!(d.complete(2), Some(Completion::Durable(3)));
        for _ in 0..4 {
            d.push(rec(1));
        }
        d.start_flush(2, 5);
        assert_eq!(d.crash(1), 3, "three pending records lost");
        assert_eq!(d.last_lsn(), 4);
        assert_eq!(d.durable_lsn(), 4);
        assert!(d.settled());
    }

    #[test]
    fn a_failed_write_makes_nothing_durable() {
        let mut d = Disk::default();
        d.push(rec(1));
        d.fail_next_write = true;
        d.start_flush(0, 1);
        assert_eq!(d.complete(1), Some(Completion::Failed));
        assert_eq!(d.durable_lsn(), 0);
    }

    #[test]
    fn epochs_search_the_durable_part() {
        let mut d = Disk::default();
        for e in [1, 1, 2, 2, 3] {
            d.push(rec(e));
        }
        d.start_flush(0, 1);
        d.complete(1);
        d.push(rec(3));
        let up_to = |d: &mut Disk, e| LogStore::last_lsn_up_to_epoch(d, e).unwrap();
        assert_eq!(up_to(&mut d, 1), 2);
        assert_eq!(up_to(&mut d, 2), 4);
        assert_eq!(up_to(&mut d, 9), 5, "pending records are not searched");
        assert_eq!(LogStore::epoch_at(&mut d, 5).unwrap(), 3);
        assert!(
            LogStore::epoch_at(&mut d, 6).is_err(),
            "pending records are not read"
        );
    }

    fn settled_log(epochs: &[u64], segment_records: u64) -> Disk {
        let mut d = Disk {
            segment_records,
            ..Disk::default()
        };
        for &e in epochs {
            d.push(rec(e));
        }
        d.start_flush(0, 1);
        d.complete(1);
        d
    }

    #[test]
    fn retention_deletes_whole_durable_segments_below_the_floor() {
        // Segments 1..=3, 4..=6, 7..=9, 10.
        let mut d = settled_log(&[1, 1, 1, 2, 2, 2, 3, 3, 3, 3], 3);
        assert_eq!(d.retain_until(3, 0, None), None, "3 is still needed");
        let gone = d.retain_until(100, 2, None).expect("a cut");
        assert_eq!(gone.len(), 3, "two sealed segments are kept");
        assert_eq!(d.first_lsn(), 4);
        assert_eq!(d.base(), Some((3, 1)));
        assert_eq!(d.epoch_at(3), Some(1));
        assert_eq!(d.epoch_at(2), None);
        assert_eq!(d.record(4), Some(&rec(2)));
        let up_to = |d: &mut Disk, e| LogStore::last_lsn_up_to_epoch(d, e).unwrap();
        assert_eq!(up_to(&mut d, 1), 3, "the base record is of epoch 1");
        assert_eq!(up_to(&mut d, 0), 0);
        let gone = d.retain_until(100, 0, None).expect("a cut");
        assert_eq!(gone.len(), 6, "never the segment being written");
        assert_eq!(d.first_lsn(), 10);
        assert_eq!(d.base(), Some((9, 3)));
    }

    #[test]
    fn a_crash_inside_retention_leaves_base_ahead_of_the_log() {
        let mut d = settled_log(&[1, 1, 1, 2, 2, 2, 3], 3);
        let gone = d.retain_until(7, 0, Some(1)).expect("a cut");
        assert_eq!(gone.len(), 6, "set out to delete two segments");
        assert_eq!(d.first_lsn(), 4, "one deleted");
        assert_eq!(d.base(), None, "BASE says 6: it does not count");
        assert_eq!(d.epoch_at(3), None);
        assert_eq!(d.last_epoch(), 3);
        d.recover();
        assert_eq!(d.first_lsn(), 7, "recovery finishes the deletion");
        assert_eq!(d.base(), Some((6, 2)));
        let mut d = settled_log(&[1, 1, 1, 2], 3);
        assert_eq!(d.retain_until(4, 0, Some(0)).map(|g| g.len()), Some(3));
        assert_eq!(d.first_lsn(), 1, "BASE stored, then the crash");
        assert_eq!((d.first_lsn(), d.base()), (1, None));
    }

    #[test]
    fn reset_starts_the_log_after_the_base_or_leaves_an_old_prefix() {
        let mut d = settled_log(&[1, 1, 1, 2, 2], 3);
        d.reset_to(20, 4, None);
        assert_eq!((d.first_lsn(), d.last_lsn(), d.durable_lsn()), (21, 20, 20));
        assert_eq!(d.base(), Some((20, 4)));
        assert_eq!(d.last_epoch(), 4);
        assert_eq!(d.push(rec(4)), 21);
        let mut d = settled_log(&[1, 1, 1, 2, 2], 3);
        d.reset_to(20, 4, Some(1));
        assert_eq!(
            (d.first_lsn(), d.last_lsn()),
            (1, 3),
            "the newest segment went first"
        );
        assert_eq!(d.base(), None, "BASE is stored after the deletions");
        assert!(d.settled());
        d.recover();
        assert_eq!(
            (d.first_lsn(), d.last_lsn()),
            (1, 3),
            "a shorter log is kept"
        );
        // Every segment deleted, BASE not yet stored: the log starts after the old BASE.
        let mut d = settled_log(&[1, 1, 1, 2, 2, 2, 2], 3);
        assert!(d.retain_until(u64::MAX, 0, None).is_some());
        assert_eq!(d.base(), Some((6, 2)));
        d.reset_to(20, 4, Some(1));
        d.recover();
        assert_eq!((d.first_lsn(), d.last_lsn()), (7, 6));
        assert_eq!(d.base(), Some((6, 2)));
        assert_eq!(d.last_epoch(), 2);
    }

    #[test]
    fn a_crash_keeps_the_segment_the_log_starts_in() {
        let mut d = settled_log(&[1, 1, 1, 1], 2);
        d.retain_until(3, 0, None);
        assert_eq!(d.first_lsn(), 3);
        d.truncate_after(2);
        assert_eq!((d.first_lsn(), d.last_lsn()), (3, 2));
        assert_eq!(d.base(), Some((2, 1)));
        assert_eq!(d.push(rec(2)), 3);
        assert_eq!(d.crash(0), 1);
        assert_eq!(d.last_epoch(), 1);
    }
}
