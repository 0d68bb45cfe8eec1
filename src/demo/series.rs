//! One measured series of the demo: appends to one stream through one [`Client`]
//! connection, with a fixed number of appends outstanding at every moment.
//!
//! With one outstanding append the series is a single client that waits for each commit
//! before sending the next: its latency is the commit latency of an idle system. With
//! more, the appends are pipelined on the one connection (`submit_append`, then `wait`
//! for the oldest and `poll` for whatever else has been answered), which is how a
//! database's many committing sessions share one replication channel; the node's group
//! commit then puts many records into each durable write.
//!
//! Each latency runs from the submission of an append to the collection of its reply.
//! Only appends answered inside the measured window count, for latency and for the
//! rate; the warm-up before it (connections, caches, the device queue and the CPU
//! frequency settle) and the drain after it are not recorded. Any failed append stops
//! the series: in a demo on loopback it is a fault worth seeing, never noise.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{Latency, Window, latency_histogram, record_latency};
use crate::client::{Appended, Client, ClientError, ClientOptions};
use crate::wire::RequestId;

/// How long the node may take to commit one append before it is in doubt. Generous: a
/// demo on one machine should never see it, and if it does, that is the finding.
const APPEND_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the series reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// The outcome of one series.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct SeriesResult {
    #[serde(flatten)]
    pub latency: Latency,
    /// Appends answered in the measured window, per second.
    pub commits_per_s: f64,
    /// Highest LSN acknowledged to the series, warm-up and drain included.
    pub last_lsn: u64,
}

/// Appends `payload_bytes`-byte records to `stream` with `outstanding` appends in flight,
/// for `window`. `progress` is called now and then with the time since the start.
pub fn run(
    addrs: &[String],
    stream: &str,
    outstanding: usize,
    payload_bytes: usize,
    window: Window,
    progress: &mut dyn FnMut(Duration),
) -> Result<SeriesResult, ClientError> {
    assert!(outstanding >= 1);
    let options = ClientOptions {
        timeout: APPEND_TIMEOUT,
        outstanding_max: outstanding,
        ..ClientOptions::default()
    };
    let mut client = Client::connect(addrs, stream, options)?;
    let mut payload = pattern(payload_bytes);
    let mut sent_at: BTreeMap<RequestId, Instant> = BTreeMap::new();
    let start = Instant::now();
    let measured = start + window.warm_up..start + window.total();
    let mut tally = Tally {
        hist: latency_histogram(),
        measured: measured.clone(),
        last_lsn: 0,
    };
    let mut next_progress = start;
    let mut seq = 0u64;
    loop {
        if Instant::now() < measured.end {
            while sent_at.len() < outstanding {
                stamp(&mut payload, seq);
                seq += 1;
                let id = client.submit_append(&[&payload], None)?;
                sent_at.insert(id, Instant::now());
            }
            client.flush()?;
        }
        // Replies come about in order: wait for the oldest, then take whatever else
        // has been answered without waiting.
        let Some((oldest, sent)) = sent_at.pop_first() else {
            break;
        };
        let mut now = tally.add(sent, client.wait(oldest))?;
        while let Some((id, outcome)) = client.poll() {
            let sent = sent_at.remove(&id).expect("a reply to a submitted append");
            now = tally.add(sent, outcome)?;
        }
        if now >= next_progress {
            progress(now - start);
            next_progress = now + PROGRESS_EVERY;
        }
    }
    Ok(SeriesResult {
        latency: Latency::of(&tally.hist),
        commits_per_s: tally.hist.len() as f64 / window.measure.as_secs_f64(),
        last_lsn: tally.last_lsn,
    })
}

/// What the answered appends of a series add up to.
struct Tally {
    hist: Histogram<u64>,
    measured: Range<Instant>,
    last_lsn: u64,
}

impl Tally {
    /// Counts the outcome of an append sent at `sent`; returns when it was collected.
    fn add(
        &mut self,
        sent: Instant,
        outcome: Result<Appended, ClientError>,
    ) -> Result<Instant, ClientError> {
        let appended = outcome?;
        let now = Instant::now();
        if self.measured.contains(&now) {
            record_latency(&mut self.hist, now - sent);
        }
        self.last_lsn = self.last_lsn.max(appended.last_lsn());
        Ok(now)
    }
}

/// A payload of recognisable bytes (not zeros, which a device or a compressor may treat
/// specially).
fn pattern(bytes: usize) -> Vec<u8> {
    (0..bytes).map(|i| (i % 251) as u8 + 1).collect()
}

/// Writes the sequence number of the append into the payload's first bytes, so that no
/// two records of a series are alike and a misplaced record shows in the comparison of
/// the logs.
fn stamp(payload: &mut [u8], seq: u64) {
    let n = payload.len().min(8);
    payload[..n].copy_from_slice(&seq.to_le_bytes()[..n]);
}
