//! The node's Prometheus collector: every family built from the published snapshots,
//! the registry and its text exposition.

use super::{MemberMetrics, PHASES, StreamMetrics, StreamShape, family, readiness};
use crate::replication::NodeId;

/// Upper bounds (seconds) of the commit latency histograms' buckets: from tens of
/// microseconds (a loopback commit's phases) to seconds (a stalled member, a timeout).
pub const LATENCY_BUCKETS_S: [f64; 22] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_2, 0.000_3, 0.000_4, 0.000_5, 0.000_75, 0.001, 0.0015,
    0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The roles a stream's `lockstep_role` one-hot gauge shows.
const ROLES: [&str; 2] = ["primary", "secondary"];

/// A node's metrics: every family built from the published snapshots.
pub struct NodeCollector {
    pub node: NodeId,
    pub shared: std::sync::Arc<crate::server::Shared>,
    pub shapes: Vec<StreamShape>,
    /// A peer not heard from for this long counts as down (`lockstep_peer_up`).
    pub peer_down_after_ms: u64,
    descs: Vec<prometheus::core::Desc>,
}

/// Every family's name and help, for the registry's checks.
const FAMILIES: &[(&str, &str)] = &[
    (
        "lockstep_build_info",
        "Version of this lockstepd binary (value 1).",
    ),
    ("lockstep_commits_total", "Commits acknowledged to clients."),
    ("lockstep_commit_bytes_total", "Payload bytes committed."),
    ("lockstep_in_doubt_total", "Requests answered in doubt."),
    (
        "lockstep_sync_events_total",
        "Recorded changes of the effective sync set or mode.",
    ),
    (
        "lockstep_degraded",
        "1 while the stream commits on the primary alone.",
    ),
    (
        "lockstep_role",
        "1 for the role this node has in the stream (one-hot by role).",
    ),
    ("lockstep_epoch", "The stream's epoch on this node."),
    (
        "lockstep_stream_failed",
        "1 when the stream stopped on this node (its log failed).",
    ),
    ("lockstep_last_lsn", "Highest LSN in this node's log."),
    (
        "lockstep_commit_lsn",
        "Highest committed LSN known to this node.",
    ),
    ("lockstep_durable_lsn", "Highest LSN durable on this node."),
    (
        "lockstep_sync_set_size",
        "Members counted by the commit rule now (primary only).",
    ),
    (
        "lockstep_sync_set_configured",
        "Members of the configured (full) sync set.",
    ),
    (
        "lockstep_min_sync",
        "The stream's min_sync: fewer members in sync block or degrade it.",
    ),
    (
        "lockstep_member_connected",
        "1 while the primary has a link to the member.",
    ),
    (
        "lockstep_member_in_sync",
        "1 while the member is counted by the commit rule.",
    ),
    (
        "lockstep_member_durable_lsn",
        "Durable LSN of each member, as acknowledged to the primary.",
    ),
    (
        "lockstep_member_lag_records",
        "Records the member's durable log is behind the primary's last record.",
    ),
    (
        "lockstep_commit_latency_seconds",
        "Commit latency by phase, on the primary (since the process started).",
    ),
    (
        "lockstep_log_disk_bytes",
        "Bytes of the stream's log files on this node.",
    ),
    (
        "lockstep_data_fs_size_bytes",
        "Size of the filesystem that holds the data directory.",
    ),
    (
        "lockstep_data_fs_avail_bytes",
        "Bytes available to lockstepd on the data directory's filesystem.",
    ),
    (
        "lockstep_ready",
        "1 while this node serves its streams (what /ready answers).",
    ),
    (
        "lockstep_controller_leader",
        "Node id of the controller leader this node knows (0: none).",
    ),
    (
        "lockstep_controller_term",
        "Raft term of the controller on this node.",
    ),
    (
        "lockstep_controller_is_leader",
        "1 while this node leads the controller.",
    ),
    (
        "lockstep_peer_up",
        "1 while this node's controller hears from the peer.",
    ),
    (
        "lockstep_peer_heard_seconds",
        "Seconds since this node's controller last heard from the peer.",
    ),
];

impl NodeCollector {
    pub fn new(
        node: NodeId,
        shared: std::sync::Arc<crate::server::Shared>,
        shapes: Vec<StreamShape>,
        peer_down_after_ms: u64,
    ) -> NodeCollector {
        let descs = FAMILIES
            .iter()
            .map(|(name, help)| {
                prometheus::core::Desc::new(
                    (*name).to_string(),
                    (*help).to_string(),
                    Vec::new(),
                    std::collections::HashMap::new(),
                )
                .expect("valid metric name")
            })
            .collect();
        NodeCollector {
            node,
            shared,
            shapes,
            peer_down_after_ms,
            descs,
        }
    }

    fn help(name: &str) -> &'static str {
        FAMILIES
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, h)| h)
    }

    fn counter(name: &str) -> family::Family {
        family::Family::counter(name, Self::help(name))
    }

    fn gauge(name: &str) -> family::Family {
        family::Family::gauge(name, Self::help(name))
    }

    /// Every family of this node, from the snapshots published now.
    pub fn families(&self) -> Vec<prometheus::proto::MetricFamily> {
        let node = self.node.to_string();
        let n = node.as_str();
        let streams: Vec<StreamMetrics> = self
            .shared
            .metrics
            .iter()
            .flat_map(|m| m.lock().expect("metrics lock").clone())
            .collect();
        let mut out = Vec::new();
        let mut build = Self::gauge("lockstep_build_info");
        build.add(&[("node", n), ("version", env!("CARGO_PKG_VERSION"))], 1.0);
        out.push(build.done());
        type Counted = fn(&StreamMetrics) -> f64;
        let counters: [(&str, Counted); 4] = [
            ("lockstep_commits_total", |s| s.commits as f64),
            ("lockstep_commit_bytes_total", |s| s.commit_bytes as f64),
            ("lockstep_in_doubt_total", |s| s.in_doubt as f64),
            ("lockstep_sync_events_total", |s| s.events as f64),
        ];
        for (name, value) in counters {
            let mut f = Self::counter(name);
            for s in &streams {
                f.add(&[("node", n), ("stream", &s.stream)], value(s));
            }
            out.push(f.done());
        }
        let gauges: [(&str, Counted); 7] = [
            ("lockstep_degraded", |s| f64::from(u8::from(s.degraded))),
            ("lockstep_epoch", |s| s.epoch as f64),
            ("lockstep_stream_failed", |s| {
                f64::from(u8::from(s.failure.is_some()))
            }),
            ("lockstep_last_lsn", |s| s.last_lsn as f64),
            ("lockstep_commit_lsn", |s| s.commit_lsn as f64),
            ("lockstep_durable_lsn", |s| s.durable_lsn as f64),
            ("lockstep_sync_set_size", |s| {
                s.members.iter().filter(|m| m.in_sync).count() as f64
            }),
        ];
        for (name, value) in gauges {
            let mut f = Self::gauge(name);
            for s in &streams {
                f.add(&[("node", n), ("stream", &s.stream)], value(s));
            }
            out.push(f.done());
        }
        let mut role = Self::gauge("lockstep_role");
        for s in &streams {
            for r in ROLES {
                role.add(
                    &[("node", n), ("stream", &s.stream), ("role", r)],
                    f64::from(u8::from(s.role == r)),
                );
            }
        }
        out.push(role.done());
        let mut configured = Self::gauge("lockstep_sync_set_configured");
        let mut min_sync = Self::gauge("lockstep_min_sync");
        let mut disk = Self::gauge("lockstep_log_disk_bytes");
        for shape in &self.shapes {
            let l = [("node", n), ("stream", shape.name.as_str())];
            configured.add(&l, shape.sync_set as f64);
            min_sync.add(&l, shape.min_sync as f64);
            disk.add(&l, dir_bytes(&shape.dir) as f64);
        }
        out.extend([configured.done(), min_sync.done(), disk.done()]);
        if let Some(dir) = self.shapes.first().and_then(|s| s.dir.parent())
            && let Ok(space) = lockstep_sys::file::fs_space(dir)
        {
            let mut size = Self::gauge("lockstep_data_fs_size_bytes");
            size.add(&[("node", n)], space.total_bytes as f64);
            let mut avail = Self::gauge("lockstep_data_fs_avail_bytes");
            avail.add(&[("node", n)], space.avail_bytes as f64);
            out.extend([size.done(), avail.done()]);
        }
        type OfMember = fn(&StreamMetrics, &MemberMetrics) -> f64;
        let member_series: [(&str, OfMember); 4] = [
            ("lockstep_member_connected", |_, m| {
                f64::from(u8::from(m.connected))
            }),
            ("lockstep_member_in_sync", |_, m| {
                f64::from(u8::from(m.in_sync))
            }),
            ("lockstep_member_durable_lsn", |_, m| m.durable_lsn as f64),
            ("lockstep_member_lag_records", |s, m| {
                s.last_lsn.saturating_sub(m.durable_lsn) as f64
            }),
        ];
        for (name, value) in member_series {
            let mut f = Self::gauge(name);
            for s in streams.iter().filter(|s| s.role == "primary") {
                for m in &s.members {
                    let member = m.id.to_string();
                    f.add(
                        &[("node", n), ("stream", &s.stream), ("member", &member)],
                        value(s, m),
                    );
                }
            }
            out.push(f.done());
        }
        let mut latency = family::Family::histogram(
            "lockstep_commit_latency_seconds",
            Self::help("lockstep_commit_latency_seconds"),
        );
        for s in streams.iter().filter(|s| s.role == "primary") {
            for (i, p) in PHASES.iter().enumerate() {
                let h = &s.latency_us[i];
                latency.add_histogram(
                    &[("node", n), ("stream", &s.stream), ("phase", p.as_str())],
                    &family::cumulative(h, &LATENCY_BUCKETS_S),
                    s.latency_sum_us[i] as f64 / 1e6,
                    h.len(),
                );
            }
        }
        out.push(latency.done());
        let mut ready = Self::gauge("lockstep_ready");
        ready.add(
            &[("node", n)],
            f64::from(u8::from(readiness(&streams, &self.shapes).ready)),
        );
        out.push(ready.done());
        let view = self.shared.members.lock().expect("members lock").clone();
        if let Some(view) = view {
            let leader = view["leader"].as_u64().unwrap_or(0);
            let mut f = Self::gauge("lockstep_controller_leader");
            f.add(&[("node", n)], leader as f64);
            out.push(f.done());
            let mut f = Self::gauge("lockstep_controller_term");
            f.add(&[("node", n)], view["term"].as_u64().unwrap_or(0) as f64);
            out.push(f.done());
            let mut f = Self::gauge("lockstep_controller_is_leader");
            f.add(
                &[("node", n)],
                f64::from(u8::from(leader == u64::from(self.node))),
            );
            out.push(f.done());
            let mut up = Self::gauge("lockstep_peer_up");
            let mut heard = Self::gauge("lockstep_peer_heard_seconds");
            for peer in view["nodes"].as_array().into_iter().flatten() {
                let Some(id) = peer["node"].as_u64() else {
                    continue;
                };
                if id == u64::from(self.node) {
                    continue;
                }
                let p = id.to_string();
                let l = [("node", n), ("peer", p.as_str())];
                let ago = peer["heard_ms_ago"].as_u64();
                up.add(
                    &l,
                    f64::from(u8::from(ago.is_some_and(|ms| ms < self.peer_down_after_ms))),
                );
                if let Some(ms) = ago {
                    heard.add(&l, ms as f64 / 1e3);
                }
            }
            out.extend([up.done(), heard.done()]);
        }
        out
    }
}

impl prometheus::core::Collector for NodeCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let mut out = self.families();
        out.extend(crate::front::metrics::families(
            self.node,
            &self.shared.fronts,
        ));
        out
    }
}

/// Bytes of the files directly in `dir` (a stream's segments), 0 if unreadable.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// A node's registry: its own families, the front's, and the process's (`process_*`).
pub fn registry(collector: NodeCollector) -> prometheus::Registry {
    let r = prometheus::Registry::new();
    r.register(Box::new(collector))
        .expect("the node's families register once");
    #[cfg(target_os = "linux")]
    r.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))
    .expect("the process families register once");
    r
}

/// The Prometheus text exposition (format 0.0.4) of a registry.
pub fn render(registry: &prometheus::Registry) -> String {
    use prometheus::Encoder as _;
    let mut buf = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&registry.gather(), &mut buf)
        .expect("text encoding of gathered families");
    String::from_utf8(buf).expect("the text encoder writes UTF-8")
}

/// Prometheus text of stream snapshots alone (tests and tools).
pub fn prometheus_text(node: NodeId, streams: &[StreamMetrics]) -> String {
    let shared = std::sync::Arc::new(crate::server::Shared::for_metrics(vec![streams.to_vec()]));
    let shapes = Vec::new();
    render(&registry(NodeCollector::new(node, shared, shapes, 1000)))
}
