//! [`LogStore`]: what the stream driver needs of a stream's log.
//!
//! Two implementations: [`Log`], the node's segmented io_uring log, and the simulator's
//! disk (`sim::disk::Disk`), which keeps records in memory and injects the faults of a
//! real disk. Writing is the host's business (the node submits the pending batch to its
//! io_uring, the simulator completes it after a simulated latency); the driver appends,
//! reads, cuts and learns of durability through
//! [`StreamDriver::on_durable`](super::StreamDriver::on_durable).
//!
//! Contract, as `Log` keeps it (see [`crate::log`]):
//! - LSNs are dense from [`first_lsn`](LogStore::first_lsn) to `next_lsn - 1`; epochs
//!   never decrease along the log.
//! - `durable_lsn` only grows, except through `truncate_after` and `reset`.
//! - `read`, `epoch_at` and `last_lsn_up_to_epoch` see the durable part only.
//! - `truncate_after` and `reset` need the log settled (no write in flight, nothing
//!   pending): [`LogError::Busy`] otherwise.
//! - An error of `retain`, `reset` or `truncate_after` may leave the log cut short;
//!   the driver then stops the stream (a restart recovers the log).

use crate::log::{Log, LogResult, Record};

/// A stream's log, as the driver uses it.
pub trait LogStore {
    /// Lowest LSN held (the next LSN when the log holds none).
    fn first_lsn(&self) -> u64;
    /// LSN the next append gets.
    fn next_lsn(&self) -> u64;
    /// Highest LSN on stable storage.
    fn durable_lsn(&self) -> u64;
    /// Epoch of the last record (of the base record when the log holds none after it).
    fn last_epoch(&self) -> Option<u64>;
    /// The record just before the first one held (LSN, epoch), when retention deleted
    /// it or the log was started over after it.
    fn base(&self) -> Option<(u64, u64)>;
    /// A write is in flight.
    fn writing(&self) -> bool;
    /// Records wait for the next write.
    fn has_pending(&self) -> bool;
    /// Largest payload one append accepts.
    fn payload_bytes_max(&self) -> usize;
    /// Room for a group of records of `record_bytes` (headers included) in one batch:
    /// `Ok(false)` is "not now, after the write in flight".
    fn make_room(&mut self, record_bytes: usize) -> LogResult<bool>;
    /// Appends a record; returns its LSN (durable later).
    fn append(&mut self, epoch: u64, payload: &[u8]) -> LogResult<u64>;
    /// Durable records from `from`: at most `records_max`, and `bytes_max` of payload
    /// unless the first alone is larger.
    fn read(&mut self, from: u64, records_max: usize, bytes_max: usize) -> LogResult<Vec<Record>>;
    /// Epoch of the durable record `lsn`, or of the base record.
    fn epoch_at(&mut self, lsn: u64) -> LogResult<u64>;
    /// The last durable LSN of an epoch up to `epoch` (0 when there is none).
    fn last_lsn_up_to_epoch(&mut self, epoch: u64) -> LogResult<u64>;
    /// Retention: deletes whole sealed segments below `keep_from`, keeping the newest
    /// `keep_segments`. Returns the new first LSN.
    fn retain(&mut self, keep_from: u64, keep_segments: usize) -> LogResult<u64>;
    /// Starts the log over after (`base_lsn`, `base_epoch`).
    fn reset(&mut self, base_lsn: u64, base_epoch: u64) -> LogResult<()>;
    /// Removes every record after `lsn`.
    fn truncate_after(&mut self, lsn: u64) -> LogResult<()>;

    /// Nothing in flight and nothing pending: the whole log is durable.
    fn settled(&self) -> bool {
        !self.writing() && !self.has_pending()
    }
}

impl LogStore for Log {
    fn first_lsn(&self) -> u64 {
        Log::first_lsn(self)
    }
    fn next_lsn(&self) -> u64 {
        Log::next_lsn(self)
    }
    fn durable_lsn(&self) -> u64 {
        Log::durable_lsn(self)
    }
    fn last_epoch(&self) -> Option<u64> {
        Log::last_epoch(self)
    }
    fn base(&self) -> Option<(u64, u64)> {
        Log::base(self)
    }
    fn writing(&self) -> bool {
        Log::writing(self)
    }
    fn has_pending(&self) -> bool {
        Log::has_pending(self)
    }
    fn payload_bytes_max(&self) -> usize {
        Log::payload_bytes_max(self)
    }
    fn make_room(&mut self, record_bytes: usize) -> LogResult<bool> {
        Log::make_room(self, record_bytes)
    }
    fn append(&mut self, epoch: u64, payload: &[u8]) -> LogResult<u64> {
        Log::append(self, epoch, payload)
    }
    fn read(&mut self, from: u64, records_max: usize, bytes_max: usize) -> LogResult<Vec<Record>> {
        Log::read(self, from, records_max, bytes_max)
    }
    fn epoch_at(&mut self, lsn: u64) -> LogResult<u64> {
        Log::epoch_at(self, lsn)
    }
    fn last_lsn_up_to_epoch(&mut self, epoch: u64) -> LogResult<u64> {
        Log::last_lsn_up_to_epoch(self, epoch)
    }
    fn retain(&mut self, keep_from: u64, keep_segments: usize) -> LogResult<u64> {
        Log::retain(self, keep_from, keep_segments)
    }
    fn reset(&mut self, base_lsn: u64, base_epoch: u64) -> LogResult<()> {
        Log::reset(self, base_lsn, base_epoch)
    }
    fn truncate_after(&mut self, lsn: u64) -> LogResult<()> {
        Log::truncate_after(self, lsn)
    }
}
