//! Per-stream metrics: commit latency split by phase (hdrhistogram), counters, member
//! positions. A shard owns its streams' metrics and publishes a copy now and then; the
//! admin endpoint and `status` read the published copy, never the shard's live state.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::json;

use crate::replication::NodeId;

/// Phases of a commit, each a histogram of microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// From the request's arrival to its local write being issued.
    Queued,
    /// From arrival to the primary's own durable write.
    LocalDurable,
    /// From the local durable write to the commit (the slowest needed remote ack).
    RemoteAck,
    /// From arrival to the reply being queued to the client.
    Total,
}

pub const PHASES: [Phase; 4] = [
    Phase::Queued,
    Phase::LocalDurable,
    Phase::RemoteAck,
    Phase::Total,
];

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Queued => "queued",
            Phase::LocalDurable => "local_durable",
            Phase::RemoteAck => "remote_ack",
            Phase::Total => "total",
        }
    }
}

/// One member as the primary sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberMetrics {
    pub id: NodeId,
    pub in_sync: bool,
    pub connected: bool,
    pub received_lsn: u64,
    pub durable_lsn: u64,
}

#[derive(Clone, Debug)]
pub struct StreamMetrics {
    pub stream: String,
    pub role: &'static str,
    pub mode: &'static str,
    pub epoch: u64,
    pub last_lsn: u64,
    pub durable_lsn: u64,
    pub commit_lsn: u64,
    pub commits: u64,
    pub commit_bytes: u64,
    pub in_doubt: u64,
    pub events: u64,
    pub degraded: bool,
    pub members: Vec<MemberMetrics>,
    pub latency_us: [Histogram<u64>; 4],
    pub failure: Option<String>,
}

/// The range of the latency histograms: 1 µs to a minute, 3 significant digits.
const LATENCY_US_MAX: u64 = 60_000_000;

impl StreamMetrics {
    pub fn new(stream: &str, role: &'static str, mode: &'static str) -> StreamMetrics {
        StreamMetrics::with_latency_max(stream, role, mode, LATENCY_US_MAX)
    }

    /// Metrics without latency histograms worth the name (each holds one value): for a
    /// clock without microseconds, the simulator's, whose drivers start by the
    /// thousand.
    pub fn untimed(stream: &str, role: &'static str, mode: &'static str) -> StreamMetrics {
        StreamMetrics::with_latency_max(stream, role, mode, 2)
    }

    fn with_latency_max(
        stream: &str,
        role: &'static str,
        mode: &'static str,
        max_us: u64,
    ) -> StreamMetrics {
        let h = || Histogram::new_with_bounds(1, max_us, 3).expect("histogram bounds");
        StreamMetrics {
            stream: stream.to_string(),
            role,
            mode,
            epoch: 0,
            last_lsn: 0,
            durable_lsn: 0,
            commit_lsn: 0,
            commits: 0,
            commit_bytes: 0,
            in_doubt: 0,
            events: 0,
            degraded: false,
            members: Vec::new(),
            latency_us: [h(), h(), h(), h()],
            failure: None,
        }
    }

    pub fn record(&mut self, phase: Phase, micros: u64) {
        let h = &mut self.latency_us[PHASES
            .iter()
            .position(|&p| p == phase)
            .expect("known phase")];
        h.saturating_record(micros.max(1));
    }

    /// The status of the stream as JSON (for `lockstep status`).
    pub fn to_json(&self) -> serde_json::Value {
        let lat: serde_json::Map<String, serde_json::Value> = PHASES
            .iter()
            .zip(&self.latency_us)
            .map(|(p, h)| {
                (
                    p.as_str().to_string(),
                    json!({
                        "count": h.len(),
                        "p50_us": h.value_at_quantile(0.5),
                        "p99_us": h.value_at_quantile(0.99),
                        "p999_us": h.value_at_quantile(0.999),
                        "max_us": h.max(),
                    }),
                )
            })
            .collect();
        json!({
            "stream": self.stream,
            "role": self.role,
            "mode": self.mode,
            "epoch": self.epoch,
            "last_lsn": self.last_lsn,
            "durable_lsn": self.durable_lsn,
            "commit_lsn": self.commit_lsn,
            "commits": self.commits,
            "commit_bytes": self.commit_bytes,
            "in_doubt": self.in_doubt,
            "events": self.events,
            "degraded": self.degraded,
            "failure": self.failure,
            "sync_set_size": self.members.iter().filter(|m| m.in_sync).count(),
            "members": self.members.iter().map(|m| json!({
                "id": m.id,
                "in_sync": m.in_sync,
                "connected": m.connected,
                "received_lsn": m.received_lsn,
                "durable_lsn": m.durable_lsn,
                "lag": self.last_lsn.saturating_sub(m.durable_lsn),
            })).collect::<Vec<_>>(),
            "latency": lat,
        })
    }
}

/// Prometheus text exposition of every stream.
pub fn prometheus(node: NodeId, streams: &[StreamMetrics]) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, rows: &mut dyn Iterator<Item = (String, f64)>| {
        let _ = writeln!(out, "# HELP lockstep_{name} {help}");
        let _ = writeln!(out, "# TYPE lockstep_{name} gauge");
        for (labels, v) in rows {
            let _ = writeln!(out, "lockstep_{name}{{node=\"{node}\",{labels}}} {v}");
        }
    };
    let st = |s: &StreamMetrics| format!("stream=\"{}\"", s.stream);
    gauge(
        "commits_total",
        "Commits acknowledged to clients.",
        &mut streams.iter().map(|s| (st(s), s.commits as f64)),
    );
    gauge(
        "commit_bytes_total",
        "Payload bytes committed.",
        &mut streams.iter().map(|s| (st(s), s.commit_bytes as f64)),
    );
    gauge(
        "in_doubt_total",
        "Requests answered in doubt.",
        &mut streams.iter().map(|s| (st(s), s.in_doubt as f64)),
    );
    gauge(
        "sync_events_total",
        "Recorded changes of the effective sync set or mode.",
        &mut streams.iter().map(|s| (st(s), s.events as f64)),
    );
    gauge(
        "degraded",
        "1 while the stream commits on the primary alone.",
        &mut streams
            .iter()
            .map(|s| (st(s), f64::from(u8::from(s.degraded)))),
    );
    gauge(
        "commit_lsn",
        "Highest committed LSN.",
        &mut streams.iter().map(|s| (st(s), s.commit_lsn as f64)),
    );
    gauge(
        "durable_lsn",
        "Highest LSN durable on this node.",
        &mut streams.iter().map(|s| (st(s), s.durable_lsn as f64)),
    );
    gauge(
        "sync_set_size",
        "Members in the effective sync set.",
        &mut streams
            .iter()
            .map(|s| (st(s), s.members.iter().filter(|m| m.in_sync).count() as f64)),
    );
    gauge(
        "member_durable_lsn",
        "Durable LSN of each member, as acknowledged to the primary.",
        &mut streams.iter().flat_map(|s| {
            s.members.iter().map(move |m| {
                (
                    format!("{},member=\"{}\"", st(s), m.id),
                    m.durable_lsn as f64,
                )
            })
        }),
    );
    gauge(
        "member_lag_records",
        "Records the member's durable log is behind the primary's last record.",
        &mut streams.iter().flat_map(|s| {
            s.members.iter().map(move |m| {
                (
                    format!("{},member=\"{}\"", st(s), m.id),
                    s.last_lsn.saturating_sub(m.durable_lsn) as f64,
                )
            })
        }),
    );
    let _ = writeln!(
        out,
        "# HELP lockstep_commit_latency_seconds Commit latency by phase."
    );
    let _ = writeln!(out, "# TYPE lockstep_commit_latency_seconds summary");
    for s in streams {
        for (p, h) in PHASES.iter().zip(&s.latency_us) {
            for q in [0.5, 0.99, 0.999] {
                let _ = writeln!(
                    out,
                    "lockstep_commit_latency_seconds{{node=\"{node}\",stream=\"{}\",phase=\"{}\",quantile=\"{q}\"}} {}",
                    s.stream,
                    p.as_str(),
                    h.value_at_quantile(q) as f64 / 1e6
                );
            }
            let _ = writeln!(
                out,
                "lockstep_commit_latency_seconds_count{{node=\"{node}\",stream=\"{}\",phase=\"{}\"}} {}",
                s.stream,
                p.as_str(),
                h.len()
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_every_series() {
        let mut m = StreamMetrics::new("orders", "primary", "strong");
        m.commits = 3;
        m.last_lsn = 10;
        m.members.push(MemberMetrics {
            id: 2,
            in_sync: true,
            connected: true,
            received_lsn: 9,
            durable_lsn: 8,
        });
        m.record(Phase::Total, 250);
        let text = prometheus(1, &[m.clone()]);
        assert!(
            text.contains("lockstep_commits_total{node=\"1\",stream=\"orders\"} 3"),
            "{text}"
        );
        assert!(
            text.contains(
                "lockstep_member_lag_records{node=\"1\",stream=\"orders\",member=\"2\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("phase=\"total\",quantile=\"0.5\"} 0.00025"),
            "{text}"
        );
        assert_eq!(m.to_json()["members"][0]["lag"], 2);
        assert_eq!(m.to_json()["latency"]["total"]["count"], 1);
    }
}
