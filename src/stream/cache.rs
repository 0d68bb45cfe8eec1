//! Recent records of a primary's stream, kept in memory so that sending them to members
//! needs no disk read. Older records (a member catching up from far behind) are read
//! from the log.
//!
//! Bounded by bytes and by count; payload buffers of evicted records are reused, so in
//! steady state a push allocates nothing.

use std::collections::VecDeque;

struct Cached {
    lsn: u64,
    epoch: u64,
    payload: Vec<u8>,
}

pub struct RecordCache {
    records: VecDeque<Cached>,
    spare: Vec<Vec<u8>>,
    bytes: usize,
    bytes_max: usize,
    records_max: usize,
}

impl RecordCache {
    pub fn new(bytes_max: usize, records_max: usize) -> RecordCache {
        assert!(records_max > 0);
        RecordCache {
            records: VecDeque::with_capacity(records_max),
            spare: Vec::new(),
            bytes: 0,
            bytes_max,
            records_max,
        }
    }

    /// Adds the record after the newest one (or the first of an empty cache).
    pub fn push(&mut self, lsn: u64, epoch: u64, payload: &[u8]) {
        if let Some(last) = self.records.back() {
            assert_eq!(lsn, last.lsn + 1, "records enter the cache in LSN order");
        }
        while !self.records.is_empty()
            && (self.records.len() >= self.records_max
                || self.bytes + payload.len() > self.bytes_max)
        {
            self.evict();
        }
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(payload);
        self.bytes += payload.len();
        self.records.push_back(Cached {
            lsn,
            epoch,
            payload: buf,
        });
    }

    /// (epoch, payload) of `lsn`, if it is still cached.
    pub fn get(&self, lsn: u64) -> Option<(u64, &[u8])> {
        let first = self.records.front()?.lsn;
        let c = self
            .records
            .get(usize::try_from(lsn.checked_sub(first)?).ok()?)?;
        debug_assert_eq!(c.lsn, lsn);
        Some((c.epoch, &c.payload))
    }

    pub fn first_lsn(&self) -> Option<u64> {
        self.records.front().map(|c| c.lsn)
    }

    fn evict(&mut self) {
        let c = self.records.pop_front().expect("not empty");
        self.bytes -= c.payload.len();
        if self.spare.len() < 64 {
            self.spare.push(c.payload);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_count_and_bytes() {
        let mut c = RecordCache::new(100, 3);
        for lsn in 1..=5 {
            c.push(lsn, 1, &[lsn as u8; 10]);
        }
        assert_eq!(c.first_lsn(), Some(3));
        assert_eq!(c.get(2), None);
        assert_eq!(c.get(4), Some((1, &[4u8; 10][..])));
        assert_eq!(c.get(6), None);
        c.push(6, 2, &[6; 95]);
        assert_eq!(c.first_lsn(), Some(6), "bytes bound evicts older records");
        assert_eq!(c.get(6).unwrap().0, 2);
    }
}
