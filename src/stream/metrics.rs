//! Per-stream metrics: commit latency split by phase (hdrhistogram), counters, member
//! positions. A shard owns its streams' metrics and publishes a copy now and then; the
//! admin endpoint and `status` read the published copy, never the shard's live state.
//!
//! The Prometheus side lives beside: [`family`] builds metric families, `collector` the
//! node's collector and registry, `readiness` the `/ready` verdict.

mod collector;
pub mod family;
mod readiness;

pub use collector::{LATENCY_BUCKETS_S, NodeCollector, prometheus_text, registry, render};
pub use readiness::{Readiness, StreamShape, readiness};

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
    /// What the link to the member runs on (`tcp`, `rdma`, `rdma-emu`); the host sets it.
    pub transport: &'static str,
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
    /// A secondary's link from its primary: what it runs on (the host sets it).
    pub transport: &'static str,
    pub latency_us: [Histogram<u64>; 4],
    /// Sum of each phase's recorded microseconds (a histogram's `_sum`).
    pub latency_sum_us: [u64; 4],
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
            transport: "tcp",
            latency_us: [h(), h(), h(), h()],
            latency_sum_us: [0; 4],
            failure: None,
        }
    }

    pub fn record(&mut self, phase: Phase, micros: u64) {
        let i = PHASES
            .iter()
            .position(|&p| p == phase)
            .expect("known phase");
        self.latency_us[i].saturating_record(micros.max(1));
        self.latency_sum_us[i] = self.latency_sum_us[i].saturating_add(micros.max(1));
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
        let members: &[MemberMetrics] = if self.role == "primary" {
            &self.members
        } else {
            &[]
        };
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
            "transport": self.transport,
            "sync_set_size": members.iter().filter(|m| m.in_sync).count(),
            // Only the primary knows its members' positions; a node that was primary
            // before keeps an old table, which is not shown.
            "members_known": self.role == "primary",
            "members": members.iter().map(|m| json!({
                "id": m.id,
                "in_sync": m.in_sync,
                "connected": m.connected,
                "received_lsn": m.received_lsn,
                "durable_lsn": m.durable_lsn,
                "transport": m.transport,
                "lag": self.last_lsn.saturating_sub(m.durable_lsn),
            })).collect::<Vec<_>>(),
            "latency": lat,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn primary_with_member() -> StreamMetrics {
        let mut m = StreamMetrics::new("orders", "primary", "strong");
        m.commits = 3;
        m.last_lsn = 10;
        m.members.push(MemberMetrics {
            id: 2,
            in_sync: true,
            connected: true,
            received_lsn: 9,
            durable_lsn: 8,
            transport: "tcp",
        });
        m
    }

    #[test]
    fn prometheus_text_has_every_series_with_its_type() {
        let mut m = primary_with_member();
        m.record(Phase::Total, 250);
        m.record(Phase::Total, 2_000);
        let text = prometheus_text(1, &[m.clone()]);
        for want in [
            "# TYPE lockstep_commits_total counter",
            "lockstep_commits_total{node=\"1\",stream=\"orders\"} 3",
            "# TYPE lockstep_member_lag_records gauge",
            "lockstep_member_lag_records{node=\"1\",stream=\"orders\",member=\"2\"} 2",
            "lockstep_role{node=\"1\",stream=\"orders\",role=\"primary\"} 1",
            "lockstep_role{node=\"1\",stream=\"orders\",role=\"secondary\"} 0",
            "# TYPE lockstep_commit_latency_seconds histogram",
            // 250 µs is above the 200 µs bound and within the 300 µs one.
            "lockstep_commit_latency_seconds_bucket{node=\"1\",stream=\"orders\",phase=\"total\",le=\"0.0002\"} 0",
            "lockstep_commit_latency_seconds_bucket{node=\"1\",stream=\"orders\",phase=\"total\",le=\"0.0003\"} 1",
            "lockstep_commit_latency_seconds_bucket{node=\"1\",stream=\"orders\",phase=\"total\",le=\"+Inf\"} 2",
            "lockstep_commit_latency_seconds_sum{node=\"1\",stream=\"orders\",phase=\"total\"} 0.00225",
            "lockstep_commit_latency_seconds_count{node=\"1\",stream=\"orders\",phase=\"total\"} 2",
            "lockstep_build_info{node=\"1\",version=",
            "# TYPE process_resident_memory_bytes gauge",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        assert!(!text.contains("summary"), "{text}");
        assert_eq!(m.to_json()["members"][0]["lag"], 2);
        assert_eq!(m.to_json()["latency"]["total"]["count"], 2);
    }

    #[test]
    fn readiness_from_a_table() {
        let shape = StreamShape {
            name: "orders".into(),
            sync_set: 1,
            min_sync: 1,
            dir: "/nonexistent".into(),
        };
        let full = primary_with_member();
        let mut stalled = full.clone();
        stalled.members[0].in_sync = false;
        let mut gone = full.clone();
        gone.members[0].connected = false;
        let mut degraded = full.clone();
        degraded.degraded = true;
        let mut failed = full.clone();
        failed.failure = Some("EIO".into());
        let mut member = StreamMetrics::new("orders", "secondary", "strong");
        member.commit_lsn = 10;
        member.durable_lsn = 10;
        let mut behind = member.clone();
        behind.durable_lsn = 7;
        // (stream, ready, words of the reason)
        let cases = [
            (full, true, ""),
            (stalled, false, "0 of 1 sync members"),
            (gone, false, "0 of 1 sync members"),
            (degraded, false, "degraded"),
            (failed, false, "failed: EIO"),
            (member, true, ""),
            (behind, false, "catching up"),
        ];
        for (s, ready, words) in cases {
            let r = readiness(std::slice::from_ref(&s), std::slice::from_ref(&shape));
            assert_eq!(r.ready, ready, "{s:?}: {r:?}");
            assert!(r.reasons.join(" ").contains(words), "{r:?}");
        }
        let r = readiness(&[], std::slice::from_ref(&shape));
        assert!(!r.ready && r.reasons[0].contains("not started"), "{r:?}");
    }

    #[test]
    fn a_secondary_shows_no_member_table() {
        let mut m = primary_with_member();
        m.role = "secondary";
        let j = m.to_json();
        assert_eq!(j["members"], serde_json::json!([]));
        assert_eq!(j["members_known"], false);
    }
}
