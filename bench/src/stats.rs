//! Latency histograms and the summary of one measured series.
//!
//! Every latency is recorded in nanoseconds in an HDR histogram (3 significant digits, so
//! p99.9 of a few thousand samples is exact to 0.1 %) and summarised as p50, p99, p99.9
//! and a rate. Across rounds the median of each summary value is taken: on a shared,
//! noisy machine one disturbed round moves a median far less than a mean.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency a histogram holds exactly; longer ones are recorded as this.
const LATENCY_NS_MAX: u64 = 60_000_000_000;

/// A latency histogram in nanoseconds, allocated once and reset between series.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("valid histogram bounds")
}

/// Records `d` in `h`, in nanoseconds.
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1));
}

/// Summary of one series in one round.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Sample {
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    /// Completed operations (records, or writes for a floor) per second.
    pub per_s: f64,
    /// Latencies recorded.
    pub count: u64,
}

impl Sample {
    /// Summarises `h`, with `done` operations completed in `elapsed`.
    pub fn new(h: &Histogram<u64>, done: u64, elapsed: Duration) -> Sample {
        assert!(!h.is_empty(), "a series recorded no latency");
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Sample {
            p50_us: us(0.5),
            p99_us: us(0.99),
            p999_us: us(0.999),
            per_s: done as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE),
            count: h.len(),
        }
    }
}

/// Median of `values` (the mean of the two middle ones for an even count).
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().collect();
    assert!(!v.is_empty(), "median of nothing");
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

/// How long one series runs: a warm-up that is not recorded (caches, the device queue and
/// the CPU frequency settle there), then the measured time.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub warm_up: Duration,
    pub measure: Duration,
}

/// The measuring window of a series of operations done one at a time: the warm-up is
/// discarded, measurement starts at the first completion after it, and the series stops
/// at the first completion after `measure` has passed (once something was recorded).
pub struct Measure {
    warm_end: std::time::Instant,
    stop: std::time::Instant,
    since: Option<std::time::Instant>,
    last: std::time::Instant,
}

impl Measure {
    pub fn start(window: Window) -> Measure {
        let now = std::time::Instant::now();
        let warm_end = now + window.warm_up;
        Measure {
            warm_end,
            stop: warm_end + window.measure,
            since: None,
            last: now,
        }
    }

    /// An operation completed at `now`: whether its latency counts.
    pub fn completed(&mut self, now: std::time::Instant) -> bool {
        self.last = now;
        match self.since {
            Some(_) => true,
            None => {
                if now >= self.warm_end {
                    self.since = Some(now);
                }
                false
            }
        }
    }

    /// Whether the series is over, with `recorded` latencies so far.
    pub fn done(&self, recorded: u64) -> bool {
        self.last >= self.stop && recorded > 0
    }

    /// Time from the start of measurement to the last completion.
    pub fn elapsed(&self) -> Duration {
        self.last - self.since.expect("measurement started before stopping")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_and_even() {
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn sample_quantiles_and_rate() {
        let mut h = latency_histogram();
        for us in 1..=1000u64 {
            record(&mut h, Duration::from_micros(us));
        }
        let s = Sample::new(&h, 1000, Duration::from_millis(500));
        assert!((s.p50_us - 500.0).abs() < 1.0, "p50 {}", s.p50_us);
        assert!((s.p99_us - 990.0).abs() < 1.5, "p99 {}", s.p99_us);
        assert!((s.per_s - 2000.0).abs() < 1e-9);
        assert_eq!(s.count, 1000);
    }

    #[test]
    fn measure_discards_the_warm_up_and_stops_after_the_window() {
        let w = Window {
            warm_up: Duration::ZERO,
            measure: Duration::ZERO,
        };
        let mut m = Measure::start(w);
        let t = std::time::Instant::now();
        // The first completion only starts the measurement.
        assert!(!m.completed(t));
        assert!(!m.done(0), "nothing recorded yet");
        assert!(m.completed(t + Duration::from_millis(3)));
        assert!(m.done(1));
        assert_eq!(m.elapsed(), Duration::from_millis(3));
    }
}
