//! A node's simulated stream log: a durable prefix and a pending part written but not
//! yet on stable storage, plus the node's EPOCH file.
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
//!
//! Invariant: `durable <= log.len()`, and the EPOCH file is durable as soon as stored
//! (production writes, fsyncs and renames it before any record of the epoch).

use crate::replication::shared_prefix::Epochs;
use crate::sim::Rec;
use crate::sim::checker::LowWater;

/// The write in flight.
#[derive(Clone, Copy, Debug)]
struct Flush {
    /// Records durable once it completes.
    upto: usize,
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

#[derive(Debug, Default)]
pub struct Disk {
    log: Vec<Rec>,
    durable: usize,
    flush: Option<Flush>,
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
}

impl Disk {
    pub fn records(&self) -> &[Rec] {
        &self.log
    }

    pub fn last_lsn(&self) -> u64 {
        self.log.len() as u64
    }

    pub fn durable_lsn(&self) -> u64 {
        self.durable as u64
    }

    pub fn last_epoch(&self) -> u64 {
        self.log.last().map_or(0, |r| r.epoch)
    }

    /// The last LSN written in an epoch no newer than `epoch`.
    pub fn last_up_to_epoch(&self, epoch: u64) -> u64 {
        self.log.partition_point(|r| r.epoch <= epoch) as u64
    }

    /// The epoch of record `lsn` (0 for lsn 0).
    pub fn epoch_at(&self, lsn: u64) -> u64 {
        if lsn == 0 {
            0
        } else {
            self.log[lsn as usize - 1].epoch
        }
    }

    /// Nothing pending and nothing in flight: the whole log is durable.
    pub fn settled(&self) -> bool {
        self.flush.is_none() && self.durable == self.log.len()
    }

    pub fn writing(&self) -> bool {
        self.flush.is_some()
    }

    pub fn full(&self, now: u64) -> bool {
        now < self.full_until
    }

    /// Appends a record to the pending part; the caller checked for room.
    pub fn append(&mut self, rec: Rec) -> u64 {
        self.log.push(rec);
        self.log.len() as u64
    }

    /// Starts a write of everything pending, unless one is in flight (group commit).
    pub fn start_flush(&mut self, now: u64, latency: u64) {
        if self.flush.is_none() && self.log.len() > self.durable {
            self.flush = Some(Flush {
                upto: self.log.len(),
                at: now + latency.max(1),
            });
        }
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
        Some(Completion::Durable(f.upto as u64))
    }

    /// A crash: the pending part is lost except its first `torn_keep` records, which
    /// recovery finds whole. Returns how many records were lost.
    pub fn crash(&mut self, torn_keep: usize) -> usize {
        self.flush = None;
        self.fail_next_write = false;
        let pending = self.log.len() - self.durable;
        let keep = torn_keep.min(pending);
        self.log.truncate(self.durable + keep);
        self.durable = self.log.len();
        self.low_water.cut(self.log.len());
        pending - keep
    }

    /// Records not yet durable.
    pub fn pending(&self) -> usize {
        self.log.len() - self.durable
    }

    /// Cuts every record after `lsn` (a returning member cutting its tail). Needs the
    /// whole log durable, as `Log::truncate_after` needs nothing pending.
    pub fn truncate_after(&mut self, lsn: u64) {
        assert!(self.settled(), "truncation with writes pending");
        if (lsn as usize) < self.log.len() {
            self.log.truncate(lsn as usize);
            self.durable = self.log.len();
            self.low_water.cut(self.log.len());
        }
    }

    /// The durable log as the primary's driver sees it for the shared-prefix rule.
    pub fn epochs(&self) -> DiskEpochs<'_> {
        DiskEpochs(self)
    }
}

/// The primary's log for [`crate::replication::shared_prefix`]: every record it holds
/// can be told (production finds recent records in its send cache and older durable ones
/// in the log), and the search by epoch covers the durable part only, as
/// `Log::last_lsn_up_to_epoch` does.
pub struct DiskEpochs<'a>(&'a Disk);

impl Epochs for DiskEpochs<'_> {
    type Error = std::convert::Infallible;

    fn epoch_at(&mut self, lsn: u64) -> Result<Option<u64>, Self::Error> {
        Ok(self.0.log.get(lsn as usize - 1).map(|r| r.epoch))
    }

    fn last_up_to_epoch(&mut self, epoch: u64) -> Result<u64, Self::Error> {
        let durable = &self.0.log[..self.0.durable];
        Ok(durable.partition_point(|r| r.epoch <= epoch) as u64)
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
            d.append(rec(1));
        }
        d.start_flush(0, 2);
        assert_eq!(d.complete(1), None);
        assert_eq!(d.complete(2), Some(Completion::Durable(3)));
        for _ in 0..4 {
            d.append(rec(1));
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
        d.append(rec(1));
        d.fail_next_write = true;
        d.start_flush(0, 1);
        assert_eq!(d.complete(1), Some(Completion::Failed));
        assert_eq!(d.durable_lsn(), 0);
    }

    #[test]
    fn epochs_search_the_durable_part() {
        let mut d = Disk::default();
        for e in [1, 1, 2, 2, 3] {
            d.append(rec(e));
        }
        d.start_flush(0, 1);
        d.complete(1);
        d.append(rec(3));
        let mut e = d.epochs();
        assert_eq!(e.last_up_to_epoch(1), Ok(2));
        assert_eq!(e.last_up_to_epoch(2), Ok(4));
        assert_eq!(
            e.last_up_to_epoch(9),
            Ok(5),
            "pending records are not searched"
        );
        assert_eq!(e.epoch_at(6), Ok(Some(3)));
        assert_eq!(e.epoch_at(7), Ok(None));
    }
}
