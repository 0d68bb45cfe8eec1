//! A `[[streams]]` entry: the stream's roles, commit rule, retention, and its front or
//! binlog server.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

use super::front::{RawBinlogServer, RawFront, binlog_server_settings, front_settings};
use super::{TICK_MS, valid_stream_name};
use crate::replication::{Mode, NodeId, OnInsufficient, StreamSettings};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStream {
    name: String,
    primary: NodeId,
    sync_set: Option<Vec<NodeId>>,
    #[serde(default)]
    learners: Vec<NodeId>,
    mode: Option<String>,
    sync_acks: Option<usize>,
    min_sync: Option<usize>,
    on_insufficient: Option<String>,
    ack_timeout_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    epoch: Option<u64>,
    retain_segments: Option<usize>,
    front: Option<RawFront>,
    binlog_server: Option<RawBinlogServer>,
}

/// One stream's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamConfig {
    pub name: String,
    pub primary: NodeId,
    pub sync_set: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    pub settings: StreamSettings,
    pub request_timeout_ms: u64,
    pub epoch: u64,
    /// Retention: sealed segments kept beyond what every member still needs (`None`:
    /// the log keeps everything).
    pub retain_segments: Option<usize>,
    /// The database primary this stream's front replicates (`None`: no front).
    pub front: Option<crate::front::FrontSettings>,
    /// Where this node serves the stream to MariaDB replicas (`None`: it does not).
    pub binlog_server: Option<crate::front::server::ServerSettings>,
}

/// Checks one `[[streams]]` entry against the configured nodes; `names` collects the
/// names seen so far (a name defined twice is refused).
pub(super) fn parse(
    s: RawStream,
    names: &mut HashSet<String>,
    ids: &[NodeId],
    unique: &HashSet<NodeId>,
    node_id: NodeId,
    listen: SocketAddr,
    base: &Path,
) -> Result<StreamConfig, String> {
    let at = format!("stream {:?}", s.name);
    valid_stream_name(&s.name).map_err(|e| format!("{at}: {e}"))?;
    if !names.insert(s.name.clone()) {
        return Err(format!("{at}: defined twice"));
    }
    if !unique.contains(&s.primary) {
        return Err(format!(
            "{at}: primary {} is not a configured node",
            s.primary
        ));
    }
    let sync_set = s.sync_set.unwrap_or_else(|| {
        ids.iter()
            .copied()
            .filter(|&id| id != s.primary && !s.learners.contains(&id))
            .collect()
    });
    for &id in sync_set.iter().chain(&s.learners) {
        if !unique.contains(&id) {
            return Err(format!("{at}: node {id} is not a configured node"));
        }
        if id == s.primary {
            return Err(format!(
                "{at}: the primary {id} cannot be its own sync-set member or learner"
            ));
        }
    }
    let all: HashSet<NodeId> = sync_set.iter().chain(&s.learners).copied().collect();
    if all.len() != sync_set.len() + s.learners.len() {
        return Err(format!("{at}: a node is listed twice in sync_set/learners"));
    }
    let mode = match s.mode.as_deref() {
        Some(m) => m.parse::<Mode>().map_err(|e| format!("{at}: mode: {e}"))?,
        None => Mode::Strong,
    };
    let on_insufficient = match s.on_insufficient.as_deref() {
        Some(m) => m
            .parse::<OnInsufficient>()
            .map_err(|e| format!("{at}: on_insufficient: {e}"))?,
        None => OnInsufficient::Block,
    };
    let d = StreamSettings::default();
    let settings = StreamSettings {
        mode,
        sync_acks: s.sync_acks,
        min_sync: s.min_sync.unwrap_or(d.min_sync.min(sync_set.len())),
        on_insufficient,
        ack_timeout_ticks: s.ack_timeout_ms.unwrap_or(300) / TICK_MS,
        window_records: d.window_records,
    };
    settings
        .validate(sync_set.len())
        .map_err(|e| format!("{at}: {e}"))?;
    // The commit rule waits for sync-set members; with none, a strong or semi
    // append would wait until its timeout, every time.
    if sync_set.is_empty() && mode != Mode::Async {
        return Err(format!(
            "{at}: mode = \"{mode}\" needs at least one sync-set member (none here: \
                 a single node, or every other node a learner); set mode = \"async\" \
                 or add nodes"
        ));
    }
    let request_timeout_ms = s.request_timeout_ms.unwrap_or(5000);
    if request_timeout_ms == 0 {
        return Err(format!("{at}: request_timeout_ms must be positive"));
    }
    let epoch = s.epoch.unwrap_or(1);
    if epoch == 0 {
        return Err(format!("{at}: epoch must be at least 1"));
    }
    let mut front = match s.front {
        Some(f) => Some(
            front_settings(f, &settings, node_id, base).map_err(|e| format!("{at}: front: {e}"))?,
        ),
        None => None,
    };
    let binlog_server = match s.binlog_server {
        Some(b) => Some(
            binlog_server_settings(b, &s.name, listen, base)
                .map_err(|e| format!("{at}: binlog_server: {e}"))?,
        ),
        None => None,
    };
    // The database server beside this node replicates from its binlog server.
    if let (Some(db), Some(b)) = (
        front.as_mut().and_then(|f| f.db.as_mut()),
        binlog_server.as_ref(),
    ) {
        let at = super::local_client_addr(b.listen);
        let (host, port) = at.rsplit_once(':').unwrap_or((&at, "0"));
        db.source = Some(crate::front::db_role::Source {
            host: host.to_owned(),
            port: port.parse().unwrap_or(b.listen.port()),
            user: b.user.clone(),
            password: String::from_utf8_lossy(&b.password).into_owned(),
        });
    }
    Ok(StreamConfig {
        name: s.name,
        primary: s.primary,
        sync_set,
        learners: s.learners,
        settings,
        request_timeout_ms,
        epoch,
        retain_segments: s.retain_segments,
        front,
        binlog_server,
    })
}
