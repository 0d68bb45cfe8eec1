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
}
