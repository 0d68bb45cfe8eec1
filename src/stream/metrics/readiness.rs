//! `/ready`: whether a node serves its streams, judged from their published metrics
//! and what their configuration says.

use super::StreamMetrics;

/// What a stream's configuration says that its metrics do not: the bar of `/ready`
/// and of the alert rules.
#[derive(Clone, Debug)]
pub struct StreamShape {
    pub name: String,
    /// Sync-set members configured for the stream (the full sync set).
    pub sync_set: usize,
    pub min_sync: usize,
    /// The stream's log directory (its disk usage is a metric).
    pub dir: std::path::PathBuf,
}

/// Whether a node serves its streams, and why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    /// One line per stream that is not served, empty when ready.
    pub reasons: Vec<String>,
}

/// `/ready`: every stream is served. A primary serves with no failure, not degraded,
/// and its full sync set (every configured sync member connected and counted by the
/// commit rule); a member serves once it holds everything it knows to be committed.
pub fn readiness(streams: &[StreamMetrics], shapes: &[StreamShape]) -> Readiness {
    let mut reasons = Vec::new();
    for shape in shapes {
        let Some(s) = streams.iter().find(|s| s.stream == shape.name) else {
            reasons.push(format!("stream {}: not started yet", shape.name));
            continue;
        };
        if let Some(f) = &s.failure {
            reasons.push(format!("stream {}: failed: {f}", s.stream));
            continue;
        }
        if s.role == "primary" {
            let counted = s
                .members
                .iter()
                .filter(|m| m.in_sync && m.connected)
                .count();
            if s.degraded {
                reasons.push(format!("stream {}: degraded (committing alone)", s.stream));
            } else if counted < shape.sync_set {
                reasons.push(format!(
                    "stream {}: {counted} of {} sync members connected and in sync",
                    s.stream, shape.sync_set
                ));
            }
        } else if s.durable_lsn < s.commit_lsn {
            reasons.push(format!(
                "stream {}: catching up (durable lsn {} of commit lsn {})",
                s.stream, s.durable_lsn, s.commit_lsn
            ));
        }
    }
    Readiness {
        ready: reasons.is_empty(),
        reasons,
    }
}
