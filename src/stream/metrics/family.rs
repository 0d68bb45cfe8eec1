//! Metric families built from published snapshots at each scrape (the shards and the
//! control loop publish; nothing on the data path touches the registry).

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};

/// One family under construction.
pub struct Family(MetricFamily);

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(k, v)| {
            let mut l = LabelPair::default();
            l.set_name((*k).to_string());
            l.set_value((*v).to_string());
            l
        })
        .collect()
}

impl Family {
    pub fn new(name: &str, help: &str, kind: MetricType) -> Family {
        let mut f = MetricFamily::default();
        f.set_name(name.to_string());
        f.set_help(help.to_string());
        f.set_field_type(kind);
        Family(f)
    }

    pub fn counter(name: &str, help: &str) -> Family {
        Family::new(name, help, MetricType::COUNTER)
    }

    pub fn gauge(name: &str, help: &str) -> Family {
        Family::new(name, help, MetricType::GAUGE)
    }

    pub fn histogram(name: &str, help: &str) -> Family {
        Family::new(name, help, MetricType::HISTOGRAM)
    }

    /// Adds a sample of a counter or gauge family.
    pub fn add(&mut self, pairs: &[(&str, &str)], value: f64) -> &mut Family {
        let mut m = Metric::default();
        m.set_label(labels(pairs));
        match self.0.get_field_type() {
            MetricType::COUNTER => {
                let mut c = Counter::default();
                c.set_value(value);
                m.set_counter(c);
            }
            _ => {
                let mut g = Gauge::default();
                g.set_value(value);
                m.set_gauge(g);
            }
        }
        self.0.mut_metric().push(m);
        self
    }

    /// Adds a histogram: cumulative counts at each upper bound (seconds), the sum
    /// (seconds) and the count.
    pub fn add_histogram(
        &mut self,
        pairs: &[(&str, &str)],
        buckets: &[(f64, u64)],
        sum: f64,
        count: u64,
    ) -> &mut Family {
        let mut h = Histogram::default();
        h.set_bucket(
            buckets
                .iter()
                .map(|&(le, n)| {
                    let mut b = Bucket::default();
                    b.set_upper_bound(le);
                    b.set_cumulative_count(n);
                    b
                })
                .collect(),
        );
        h.set_sample_sum(sum);
        h.set_sample_count(count);
        let mut m = Metric::default();
        m.set_label(labels(pairs));
        m.set_histogram(h);
        self.0.mut_metric().push(m);
        self
    }

    pub fn done(self) -> MetricFamily {
        self.0
    }
}

/// Cumulative counts of an hdrhistogram of microseconds at each bound (seconds).
pub fn cumulative(h: &hdrhistogram::Histogram<u64>, bounds_s: &[f64]) -> Vec<(f64, u64)> {
    bounds_s
        .iter()
        .map(|&le| {
            let upto = (le * 1e6) as u64;
            (le, h.count_between(0, upto))
        })
        .collect()
}
