//! What a front counts and shows: transactions and bytes committed, ACKs, how far the
//! ACKed position trails the primary's binlog, the time from an event's arrival to
//! its ACK, the upstream's state, and the last GTID.
//!
//! Thread safety: one `FrontMetrics` per front, shared by its threads and read by the
//! admin endpoint; counters are atomics, the rest sits behind short-held locks.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use hdrhistogram::Histogram;
use serde_json::json;

/// Upper bounds (seconds) of the ACK latency histogram's buckets.
const ACK_BUCKETS_S: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

pub struct FrontMetrics {
    pub stream: String,
    pub upstream: String,
    /// Transactions appended and committed (their last piece committed).
    pub transactions: AtomicU64,
    /// Event bytes committed.
    pub bytes: AtomicU64,
    /// Transactions the primary resent that the stream already held.
    pub held: AtomicU64,
    pub acks: AtomicU64,
    /// Sessions started (the front took the primary's binlog).
    pub sessions: AtomicU64,
    /// Sessions that ended with an error.
    pub failures: AtomicU64,
    /// 1 while a session streams the binlog.
    pub connected: AtomicI64,
    /// The primary's `Rpl_semi_sync_master_status`: 1 on, 0 off, -1 unknown.
    pub semi_sync_on: AtomicI64,
    /// Commits the primary made without a semi-sync ACK, as the front saw them grow
    /// (`Rpl_semi_sync_master_no_tx`).
    pub no_ack_commits: AtomicU64,
    /// End position of the last event received and of the last ACK, in the same file
    /// numbering: their difference is the ACK lag in bytes.
    pub received_pos: AtomicU64,
    pub acked_pos: AtomicU64,
    view: Mutex<View>,
}

struct View {
    /// The committed database primary the front replicates: node, address, term.
    db_primary: Option<(crate::replication::NodeId, String, u64)>,
    last_gtid: String,
    file: String,
    last_error: Option<String>,
    ack_latency_us: Histogram<u64>,
    /// Sum of the recorded microseconds (the histogram's `_sum`).
    ack_latency_sum_us: u64,
}

impl FrontMetrics {
    pub fn new(stream: &str, upstream: &str) -> FrontMetrics {
        FrontMetrics {
            stream: stream.to_owned(),
            upstream: upstream.to_owned(),
            transactions: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            held: AtomicU64::new(0),
            acks: AtomicU64::new(0),
            sessions: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            connected: AtomicI64::new(0),
            semi_sync_on: AtomicI64::new(-1),
            no_ack_commits: AtomicU64::new(0),
            received_pos: AtomicU64::new(0),
            acked_pos: AtomicU64::new(0),
            view: Mutex::new(View {
                db_primary: None,
                last_gtid: String::new(),
                file: String::new(),
                last_error: None,
                ack_latency_us: Histogram::new_with_bounds(1, 600_000_000, 3)
                    .expect("histogram bounds"),
                ack_latency_sum_us: 0,
            }),
        }
    }

    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().expect("front metrics lock")
    }

    /// A batch committed: `transactions` whole transactions of `bytes` event bytes, the
    /// oldest event of which arrived `oldest_us` ago, ending at `last_gtid`.
    pub fn committed(
        &self,
        transactions: u64,
        bytes: u64,
        oldest_us: u64,
        last_gtid: Option<String>,
    ) {
        self.transactions.fetch_add(transactions, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        let mut v = self.view();
        if transactions > 0 {
            v.ack_latency_us.saturating_record(oldest_us.max(1));
            v.ack_latency_sum_us = v.ack_latency_sum_us.saturating_add(oldest_us.max(1));
        }
        if let Some(g) = last_gtid {
            v.last_gtid = g;
        }
    }

    pub fn set_file(&self, file: &str) {
        self.view().file = file.to_owned();
    }

    pub fn set_db_primary(&self, primary: Option<(crate::replication::NodeId, String, u64)>) {
        self.view().db_primary = primary;
    }

    pub fn set_error(&self, error: Option<String>) {
        self.view().last_error = error;
    }

    /// The front's state as JSON (the admin endpoint's `/v1/fronts`).
    pub fn to_json(&self) -> serde_json::Value {
        let v = self.view();
        let h = &v.ack_latency_us;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "stream": self.stream,
            "upstream": self.upstream,
            "db_primary": v.db_primary.as_ref().map(|(node, addr, term)| {
                json!({"node": node, "addr": addr, "term": term})
            }),
            "connected": self.connected.load(Ordering::Relaxed) == 1,
            "semi_sync_on": match self.semi_sync_on.load(Ordering::Relaxed) {
                1 => json!(true),
                0 => json!(false),
                _ => json!(null),
            },
            "transactions": load(&self.transactions),
            "bytes": load(&self.bytes),
            "held": load(&self.held),
            "acks": load(&self.acks),
            "sessions": load(&self.sessions),
            "failures": load(&self.failures),
            "no_ack_commits": load(&self.no_ack_commits),
            "file": v.file,
            "received_pos": load(&self.received_pos),
            "acked_pos": load(&self.acked_pos),
            "ack_lag_bytes": load(&self.received_pos).saturating_sub(load(&self.acked_pos)),
            "last_gtid": v.last_gtid,
            "last_error": v.last_error,
            "receipt_to_ack_us": {
                "count": h.len(),
                "p50": h.value_at_quantile(0.5),
                "p99": h.value_at_quantile(0.99),
                "max": h.max(),
            },
        })
    }
}

/// The families of every front of a node (the admin endpoint's `/metrics`): the
/// series and meanings the front always had, now through the Prometheus library.
pub fn families(
    node: u32,
    fronts: &[std::sync::Arc<FrontMetrics>],
) -> Vec<prometheus::proto::MetricFamily> {
    use crate::server::metrics::family::{Family, cumulative};
    let mut out = Vec::new();
    if fronts.is_empty() {
        return out;
    }
    let node = node.to_string();
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
    type Series<'a> = (&'a str, bool, &'a str, &'a dyn Fn(&FrontMetrics) -> f64);
    let series: [Series<'_>; 10] = [
        (
            "front_transactions_total",
            true,
            "MariaDB transactions committed by lockstep and acknowledged.",
            &|f| load(&f.transactions),
        ),
        (
            "front_bytes_total",
            true,
            "Binlog event bytes committed.",
            &|f| load(&f.bytes),
        ),
        (
            "front_resent_transactions_total",
            true,
            "Transactions the primary resent that the stream already held.",
            &|f| load(&f.held),
        ),
        ("front_acks_total", true, "Semi-sync ACKs sent.", &|f| {
            load(&f.acks)
        }),
        (
            "front_sessions_total",
            true,
            "Binlog sessions started.",
            &|f| load(&f.sessions),
        ),
        (
            "front_session_failures_total",
            true,
            "Binlog sessions that ended with an error.",
            &|f| load(&f.failures),
        ),
        (
            "front_upstream_connected",
            false,
            "1 while the front streams the primary's binlog.",
            &|f| f.connected.load(Ordering::Relaxed) as f64,
        ),
        (
            "front_semi_sync_on",
            false,
            "The primary's Rpl_semi_sync_master_status: 1 on, 0 off (an alert), -1 unknown.",
            &|f| f.semi_sync_on.load(Ordering::Relaxed) as f64,
        ),
        (
            "front_unacked_commits_total",
            true,
            "Commits the primary made without a semi-sync ACK while the front watched (Rpl_semi_sync_master_no_tx growth).",
            &|f| load(&f.no_ack_commits),
        ),
        (
            "front_ack_lag_bytes",
            false,
            "Bytes between the primary's last event received and the last ACK.",
            &|f| load(&f.received_pos) - load(&f.acked_pos).min(load(&f.received_pos)),
        ),
    ];
    for (name, counter, help, value) in series {
        let name = format!("lockstep_{name}");
        let mut family = if counter {
            Family::counter(&name, help)
        } else {
            Family::gauge(&name, help)
        };
        for f in fronts {
            family.add(
                &[
                    ("node", &node),
                    ("stream", &f.stream),
                    ("upstream", &f.upstream),
                ],
                value(f),
            );
        }
        out.push(family.done());
    }
    let mut latency = Family::histogram(
        "lockstep_front_receipt_to_ack_seconds",
        "Time from the arrival of a batch's first event to its ACK.",
    );
    for f in fronts {
        let v = f.view();
        let h = &v.ack_latency_us;
        latency.add_histogram(
            &[
                ("node", &node),
                ("stream", &f.stream),
                ("upstream", &f.upstream),
            ],
            &cumulative(h, &ACK_BUCKETS_S),
            v.ack_latency_sum_us as f64 / 1e6,
            h.len(),
        );
    }
    out.push(latency.done());
    out
}

/// Prometheus text of every front of a node (their families alone).
pub fn prometheus(node: u32, fronts: &[std::sync::Arc<FrontMetrics>]) -> String {
    use prometheus::Encoder as _;
    let mut buf = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&families(node, fronts), &mut buf)
        .expect("text encoding of the fronts' families");
    String::from_utf8(buf).expect("the text encoder writes UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_committed_batch_shows_in_json_and_prometheus() {
        let m = std::sync::Arc::new(FrontMetrics::new("db", "127.0.0.1:3306"));
        m.committed(3, 900, 1_500, Some("0-1-42".into()));
        m.received_pos.store(5000, Ordering::Relaxed);
        m.acked_pos.store(4000, Ordering::Relaxed);
        let j = m.to_json();
        assert_eq!(j["transactions"], 3);
        assert_eq!(j["last_gtid"], "0-1-42");
        assert_eq!(j["ack_lag_bytes"], 1000);
        let text = prometheus(2, &[m]);
        let l = "node=\"2\",stream=\"db\",upstream=\"127.0.0.1:3306\"";
        assert!(
            text.contains(&format!("lockstep_front_transactions_total{{{l}}} 3")),
            "{text}"
        );
        assert!(
            text.contains(&format!("lockstep_front_ack_lag_bytes{{{l}}} 1000")),
            "{text}"
        );
        // 1.5 ms falls in the 2.5 ms bucket, not the 1 ms one.
        assert!(
            text.contains(&format!(
                "receipt_to_ack_seconds_bucket{{{l},le=\"0.001\"}} 0"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "receipt_to_ack_seconds_bucket{{{l},le=\"0.0025\"}} 1"
            )),
            "{text}"
        );
    }
}
