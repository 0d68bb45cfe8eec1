//! Histograms as `.hgrm` files: the percentile distribution text that HdrHistogram's
//! `outputPercentileDistribution` prints (and HdrHistogram's plotter and
//! HistogramLogAnalyzer read), so a run can be compared with other tools' outputs.
//!
//! Format: a header line, then one line per step of the percentile iteration (5 ticks
//! per half distance) with the value, the percentile as a fraction, the count up to
//! that value and 1/(1-percentile); the 100 % line has no last column. A footer gives
//! mean, standard deviation, max, total count and the histogram's bucket layout.
//! Values are scaled by `scale` (the histograms here hold ns; 1000 gives µs).

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// Percentile ticks per half distance to 100 %, as HdrHistogram's tools default to.
pub const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// The percentile distribution of `h`, values divided by `scale`.
pub fn percentile_distribution(h: &Histogram<u64>, scale: f64) -> String {
    assert!(scale > 0.0);
    let digits = usize::from(h.sigfig());
    let mut out = String::new();
    let _ = write!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    for v in h.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let value = v.value_iterated_to() as f64 / scale;
        if q < 1.0 {
            let _ = writeln!(
                out,
                "{value:12.digits$} {q:2.12} {total:10} {:14.2}",
                1.0 / (1.0 - q)
            );
        } else {
            let _ = writeln!(out, "{value:12.digits$} {q:2.12} {total:10}");
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:12.digits$}, StdDeviation   = {:12.digits$}]",
        h.mean() / scale,
        h.stdev() / scale
    );
    let _ = writeln!(
        out,
        "#[Max     = {:12.digits$}, Total count    = {:12}]",
        h.max() as f64 / scale,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_buckets(h.sigfig())
    );
    out
}

/// Sub-buckets per bucket for `sigfig` significant digits: the smallest power of two
/// that resolves 2 × 10^sigfig values, as HdrHistogram lays a histogram out.
fn sub_buckets(sigfig: u8) -> u64 {
    (2 * 10u64.pow(u32::from(sigfig))).next_power_of_two()
}

/// Points of the percentile curve of `h`: (1/(1-percentile), value ÷ scale), the x of
/// the last point (100 %) capped at `x_max`.
pub fn percentile_curve(h: &Histogram<u64>, scale: f64, x_max: f64) -> Vec<(f64, f64)> {
    h.iter_quantiles(TICKS_PER_HALF_DISTANCE)
        .map(|v| {
            let q = v.quantile_iterated_to();
            let x = if q < 1.0 { 1.0 / (1.0 - q) } else { x_max };
            (x.min(x_max), v.value_iterated_to() as f64 / scale)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats;
    use std::time::Duration;

    #[test]
    fn the_distribution_reads_back_as_hdrhistogram_prints_it() {
        let mut h = stats::latency_histogram();
        for us in 1..=10_000u64 {
            stats::record(&mut h, Duration::from_micros(us));
        }
        let text = percentile_distribution(&h, 1000.0);
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
        );
        assert_eq!(lines.next(), Some(""));
        let rows: Vec<Vec<f64>> = lines
            .clone()
            .take_while(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect())
            .collect();
        // Values and counts grow; the median is near 5 ms; the last line is 100 %.
        assert!(
            rows.windows(2)
                .all(|w| w[0][0] <= w[1][0] && w[0][2] <= w[1][2])
        );
        let median = rows.iter().find(|r| r[1] >= 0.5).unwrap();
        assert!((median[0] - 5000.0).abs() < 10.0, "{median:?}");
        let last = rows.last().unwrap();
        assert_eq!(last.len(), 3);
        assert_eq!(last[1], 1.0);
        assert_eq!(last[2], 10_000.0);
        assert!(rows[..rows.len() - 1].iter().all(|r| r.len() == 4));
        let footer: Vec<&str> = text.lines().filter(|l| l.starts_with("#[")).collect();
        assert_eq!(footer.len(), 3);
        assert!(
            footer[1].contains("Total count    =        10000"),
            "{}",
            footer[1]
        );
        assert!(
            footer[2].contains("SubBuckets     =         2048"),
            "{}",
            footer[2]
        );
    }
}
