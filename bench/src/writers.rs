//! Closed-loop writers on one log: what group commit gives a shard with N clients.
//!
//! The writers are logical clients inside one thread, parked as state rather than as
//! threads, the way a lockstep shard holds its requests. Each keeps exactly one append
//! outstanding. A turn of the loop appends for every ready writer, flushes (one durable
//! write of the whole batch, if none is in flight), waits for a completion and hands it
//! to the log; every writer whose LSN is now durable records its latency (append to
//! durable) and is ready again. Whatever is appended while a write is in flight goes into
//! the next one, so with N writers a write carries up to N records: this measures how
//! far group commit multiplies throughput and what it costs one writer in latency.
//!
//! Nothing is allocated per append: payloads, the queue of waiting writers, the
//! completion vector and the histogram are allocated once.

use std::collections::VecDeque;
use std::time::Instant;

use hdrhistogram::Histogram;
use lockstep::constants::IO_ALIGN;
use lockstep::log::record::record_bytes;
use lockstep::log::{Log, LogError};
use lockstep_sys::uring::{Completion, Ring};
use serde::Serialize;

use crate::Error;
use crate::stats::{self, Sample, Window};

/// Epoch of every record the benchmark writes.
const EPOCH: u64 = 1;

/// One log series: how many writers, how large each record's payload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Series {
    pub writers: usize,
    pub payload_bytes: usize,
}

impl Series {
    pub fn label(&self) -> String {
        format!("{} × {}", self.writers, bytes_label(self.payload_bytes))
    }
}

/// `256 B`, `4 KiB`, `64 MiB`, `1 GiB`.
pub fn bytes_label(n: usize) -> String {
    const KIB: usize = 1 << 10;
    const MIB: usize = 1 << 20;
    const GIB: usize = 1 << 30;
    if n >= GIB && n.is_multiple_of(GIB) {
        format!("{} GiB", n / GIB)
    } else if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} B")
    }
}

/// The payload byte at `i`: a fixed pattern, so a reader can check what it got back.
pub fn payload_byte(i: usize) -> u8 {
    (i % 251) as u8
}

/// One log series in one round.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct LogSample {
    pub latency: Sample,
    /// Writes issued while measuring.
    pub writes: u64,
    /// Mean records per write (the group-commit batch).
    pub records_per_write: f64,
    /// Mean bytes per write, padding included.
    pub write_bytes_mean: f64,
    /// Appends refused with [`LogError::Full`] and retried after the write in flight.
    pub full_retries: u64,
}

/// The writers' reusable state.
pub struct Writers {
    payload: Vec<u8>,
    /// (LSN, append time) of every writer waiting for durability, in LSN order.
    waiting: VecDeque<(u64, Instant)>,
    completions: Vec<Completion>,
    hist: Histogram<u64>,
    records_written: u64,
}

impl Writers {
    pub fn new(writers_max: usize, payload_bytes_max: usize) -> Writers {
        Writers {
            payload: (0..payload_bytes_max).map(payload_byte).collect(),
            waiting: VecDeque::with_capacity(writers_max),
            completions: Vec::with_capacity(4),
            hist: stats::latency_histogram(),
            records_written: 0,
        }
    }

    /// Records appended so far by every series (all of them durable between series).
    pub fn records_written(&self) -> u64 {
        self.records_written
    }

    /// Runs `series` on `log` for `window`, then makes everything appended durable.
    /// `ring` must have nothing else in flight.
    pub fn run(
        &mut self,
        log: &mut Log,
        ring: &mut Ring,
        series: Series,
        window: Window,
    ) -> Result<LogSample, Error> {
        assert!(series.writers > 0);
        assert!(series.writers <= self.waiting.capacity());
        assert!(series.payload_bytes <= self.payload.len());
        assert_eq!(ring.in_flight(), 0);
        assert!(!log.writing());
        assert!(!log.has_pending());
        self.hist.reset();
        self.waiting.clear();
        let payload = &self.payload[..series.payload_bytes];
        let rec_bytes = record_bytes(series.payload_bytes);
        let start = Instant::now();
        let warm_end = start + window.warm_up;
        let stop = warm_end + window.measure;
        // Measurement starts at the first completion after the warm-up. At that moment
        // every waiting writer has just been released (a turn appends only after the
        // completions are handled), so every record counted afterwards was appended
        // afterwards too.
        let mut measuring_since: Option<Instant> = None;
        let mut ready = series.writers;
        let (mut records, mut writes, mut write_bytes, mut full_retries) = (0u64, 0u64, 0u64, 0u64);
        let mut batch_records = 0usize;
        let last_done = loop {
            while ready > 0 {
                match log.append(EPOCH, payload) {
                    Ok(lsn) => {
                        self.waiting.push_back((lsn, Instant::now()));
                        self.records_written += 1;
                        batch_records += 1;
                        ready -= 1;
                    }
                    // The batch is full (or would cross the segment end): the ready
                    // writers try again after the write in flight.
                    Err(LogError::Full) => {
                        full_retries += u64::from(measuring_since.is_some());
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if log.flush(ring)? {
                if measuring_since.is_some() {
                    writes += 1;
                    write_bytes += (batch_records * rec_bytes).next_multiple_of(IO_ALIGN) as u64;
                }
                batch_records = 0;
            }
            if !log.writing() {
                // Waiting now would block forever.
                return Err(format!(
                    "the log in {} has no write in flight with {} writers waiting",
                    log.dir().display(),
                    self.waiting.len()
                )
                .into());
            }
            ring.submit_and_wait(1)
                .map_err(|e| format!("io_uring wait: {e}"))?;
            ring.reap(&mut self.completions);
            let mut durable = log.durable_lsn();
            for c in self.completions.drain(..) {
                assert_eq!(c.user_data, log.tag(), "only the log has writes in flight");
                durable = log.complete(c)?;
            }
            let now = Instant::now();
            while let Some(&(lsn, appended)) = self.waiting.front()
                && lsn <= durable
            {
                self.waiting.pop_front();
                ready += 1;
                if measuring_since.is_some() {
                    records += 1;
                    stats::record(&mut self.hist, now - appended);
                }
            }
            if measuring_since.is_none() && now >= warm_end {
                measuring_since = Some(now);
            }
            if now >= stop && !self.hist.is_empty() {
                break now;
            }
        };
        // Records appended but refused a place in the last write: make them durable too,
        // so every series starts from an idle log and every record counted is on disk.
        let durable = log.sync(ring)?;
        assert!(self.waiting.back().is_none_or(|&(lsn, _)| lsn <= durable));
        self.waiting.clear();
        let since = measuring_since.expect("measurement started before stopping");
        let writes_nonzero = writes.max(1) as f64;
        Ok(LogSample {
            latency: Sample::new(&self.hist, records, last_done - since),
            writes,
            records_per_write: records as f64 / writes_nonzero,
            write_bytes_mean: write_bytes as f64 / writes_nonzero,
            full_retries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        let s = Series {
            writers: 64,
            payload_bytes: 4096,
        };
        assert_eq!(s.label(), "64 × 4 KiB");
        assert_eq!(bytes_label(256), "256 B");
        assert_eq!(bytes_label(20 << 10), "20 KiB");
        assert_eq!(bytes_label(64 << 20), "64 MiB");
    }
}
