//! The node configuration file of `lockstepd --config FILE` (TOML).
//!
//! ```toml
//! node_id = 1
//! data_dir = "/var/lib/lockstep"
//! listen = "127.0.0.1:7001"      # clients and peers
//! admin = "127.0.0.1:9001"       # Prometheus metrics (optional)
//! shards = 2                     # pinned shard threads (default: one per core)
//! profile = "hw-profiles/vm.toml" # optional
//!
//! [[nodes]]
//! id = 1
//! addr = "127.0.0.1:7001"
//! # ... one entry per node, this one included
//!
//! [[streams]]
//! name = "orders"
//! primary = 1
//! sync_set = [2, 3]        # default: every other node
//! learners = []            # receive the log, do not gate commits
//! mode = "strong"          # strong | semi | async
//! sync_acks = 2            # default: every sync-set member
//! min_sync = 1
//! on_insufficient = "block"  # block | degrade
//! ack_timeout_ms = 300
//! request_timeout_ms = 5000
//! epoch = 1
//! retain_segments = 8        # delete older segments once every member holds them
//!                            # (default: keep the whole log)
//! ```
//!
//! With a `[control]` section the cluster runs its controller (an embedded raft group
//! of the voters): the streams' `primary`, `sync_set`, `learners` and `epoch` above are
//! then only the starting configuration, and failover, removal and restore of members
//! happen by themselves:
//!
//! ```toml
//! [control]
//! voters = [1, 2, 3]          # default: every node
//! failover_timeout_ms = 150   # a primary silent this long is replaced
//! ```
//!
//! A stream may replicate a MariaDB primary (see `front`): its front runs on the
//! stream's lockstep primary as a semi-synchronous replica of the database and ACKs a
//! transaction only once the stream committed it. The stream must be `strong` with
//! `on_insufficient = "block"`:
//!
//! ```toml
//! [[streams]]
//! name = "shop"
//! primary = 1
//! front = { kind = "mariadb", primary = "10.0.0.9:3306", user = "lockstep",
//!           password_file = "front.password" }   # mode 600; first line is the password
//! # optional keys of the front: server_id = 4000000000 (node N's front registers with
//! # the database as server_id + N: keep that range clear of the database's servers),
//! # heartbeat_ms = 500, connect_timeout_ms = 2000, retry_ms = 50,
//! # event_bytes_max = 1073741824
//! ```
//!
//! A cluster secret makes every connection between nodes prove that both ends know
//! it (see `server::auth`); it is needed to let new nodes join:
//!
//! ```toml
//! secret_file = "cluster.secret"  # at least 16 bytes, e.g. head -c 32 /dev/urandom | base64;
//!                                 # mode 600 (readable by its owner only)
//! ```
//!
//! A new node joins a running cluster that has a controller with only its own part of
//! the file, the secret and a seed list: it proves it knows the secret to one of the
//! seeds, is added to the cluster as a learner of every stream (and of the
//! controller), catches up, and enters the sync sets once it holds everything
//! committed. Its nodes and streams come from the cluster:
//!
//! ```toml
//! node_id = 4
//! data_dir = "/var/lib/lockstep"
//! listen = "0.0.0.0:7004"
//! advertise = "10.0.0.4:7004"   # the address the others dial (default: listen)
//! secret_file = "cluster.secret"
//! join = ["10.0.0.1:7001", "10.0.0.2:7002"]
//! ```
//!
//! Every node of a cluster reads the same `nodes` and `streams`. Errors name the key
//! that is wrong. Unknown keys are refused.
//!
//! One file per section: [`stream`] (`[[streams]]`), [`front`] (a stream's `front` and
//! `binlog_server` tables), [`control`] (`[control]`); this file holds the top level and
//! the whole [`Config`].

mod control;
mod front;
mod stream;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::constants::STREAMS_MAX;
use crate::replication::NodeId;

pub use control::ControlConfig;
pub use front::local_client_addr;
pub use stream::StreamConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read config {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    node_id: NodeId,
    data_dir: PathBuf,
    listen: SocketAddr,
    admin: Option<SocketAddr>,
    shards: Option<usize>,
    profile: Option<PathBuf>,
    #[serde(default)]
    nodes: Vec<RawNode>,
    #[serde(default)]
    streams: Vec<stream::RawStream>,
    control: Option<control::RawControl>,
    secret_file: Option<PathBuf>,
    #[serde(default)]
    join: Vec<String>,
    advertise: Option<String>,
    log_level: Option<String>,
    admin_token_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: NodeId,
    addr: String,
}

/// A node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub id: NodeId,
    /// Address as configured (host:port); resolved when dialled.
    pub addr: String,
}

/// A validated node configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub shards: usize,
    pub profile: crate::profile::HardwareProfile,
    pub nodes: Vec<NodeConfig>,
    pub streams: Vec<StreamConfig>,
    pub control: Option<ControlConfig>,
    /// The cluster secret (`secret_file`), if the cluster has one.
    pub secret: Option<crate::server::auth::Secret>,
    /// Seeds of a cluster this node joins (`join`); empty for a configured member.
    pub join: Vec<String>,
    /// The address the other nodes dial (`advertise`, default `listen`).
    pub advertise: String,
    /// The configuration of the cluster this node joined, once it has.
    pub joined: Option<crate::control::ClusterConfig>,
    /// The log filter (`log_level`, `RUST_LOG` syntax); `RUST_LOG` overrides it.
    pub log_level: Option<String>,
    /// The admin endpoints' bearer token from `admin_token_file` (else the one derived
    /// from the cluster secret).
    pub admin_token: Option<String>,
    /// The file this configuration was read from (for SIGHUP).
    pub path: Option<PathBuf>,
}

/// Checks a stream's `front` table. A front's ACK lets the database answer COMMIT, so
pub use crate::constants::TICK_MS;

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let mut cfg =
            Config::parse(&text, path.parent().unwrap_or(Path::new("."))).map_err(|message| {
                ConfigError::Invalid {
                    path: shown,
                    message,
                }
            })?;
        cfg.path = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// Parses and checks a configuration; relative paths are taken from `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Config, String> {
        let raw: Raw = toml::from_str(text).map_err(|e| top_level_hint(&e.to_string()))?;
        let secret = match &raw.secret_file {
            Some(p) => {
                Some(crate::server::auth::Secret::load(&base.join(p)).map_err(|e| e.to_string())?)
            }
            None => None,
        };
        if let Some(level) = &raw.log_level {
            crate::server::logging::parse_filter(level)?;
        }
        let admin_token = match &raw.admin_token_file {
            Some(p) => Some(crate::server::auth::load_admin_token(&base.join(p))?),
            None => None,
        };
        let advertise = raw
            .advertise
            .clone()
            .unwrap_or_else(|| raw.listen.to_string());
        if advertise.is_empty() || advertise.len() > crate::constants::NODE_ADDR_BYTES_MAX {
            return Err(format!("advertise = {advertise:?}: not a node address"));
        }
        let joining = !raw.join.is_empty();
        if joining {
            if secret.is_none() {
                return Err("join: a node joins only with the cluster's secret_file".into());
            }
            if !raw.nodes.is_empty() || !raw.streams.is_empty() {
                return Err(
                    "join: a joining node takes its nodes and streams from the cluster; \
                     remove [[nodes]] and [[streams]]"
                        .into(),
                );
            }
            if raw.control.as_ref().is_some_and(|c| c.voters.is_some()) {
                return Err("join: a joining node is not a voter; remove control.voters".into());
            }
        }
        let ids: Vec<NodeId> = raw.nodes.iter().map(|n| n.id).collect();
        let unique: HashSet<NodeId> = ids.iter().copied().collect();
        if unique.len() != ids.len() {
            return Err("nodes: a node id appears twice".into());
        }
        if !joining && !unique.contains(&raw.node_id) {
            return Err(format!(
                "node_id = {} is not among the [[nodes]]",
                raw.node_id
            ));
        }
        let cores = lockstep_sys::cpu::available_cores().len().max(1);
        let shards = raw.shards.unwrap_or(cores);
        if shards == 0 || shards > 1024 {
            return Err(format!("shards = {shards}: must be in 1..=1024"));
        }
        let profile = match &raw.profile {
            Some(p) => {
                crate::profile::HardwareProfile::load(&base.join(p)).map_err(|e| e.to_string())?
            }
            None => crate::profile::HardwareProfile::default(),
        };
        if raw.streams.len() > STREAMS_MAX {
            return Err(format!(
                "{} [[streams]]: a node hosts at most {STREAMS_MAX} (its status to the \
                 controller names every one)",
                raw.streams.len()
            ));
        }
        let mut names = HashSet::new();
        let mut streams = Vec::new();
        for s in raw.streams {
            streams.push(stream::parse(
                s,
                &mut names,
                &ids,
                &unique,
                raw.node_id,
                raw.listen,
                base,
            )?);
        }
        let batch_bytes = profile.log_options().batch_bytes;
        let front_record =
            crate::log::record::record_bytes(crate::front::record::RECORD_PAYLOAD_BYTES_MAX);
        if let Some(s) = streams.iter().find(|s| s.front.is_some())
            && batch_bytes < front_record
        {
            return Err(format!(
                "stream {:?}: front: the profile's log batch_bytes = {batch_bytes} is smaller \
                 than the largest record a front writes ({front_record} bytes)",
                s.name
            ));
        }
        let control = control::parse(raw.control, joining, &ids, &unique, raw.node_id)?;
        Ok(Config {
            control,
            secret,
            join: raw.join,
            advertise,
            joined: None,
            log_level: raw.log_level,
            admin_token,
            path: None,
            node_id: raw.node_id,
            data_dir: base.join(raw.data_dir),
            listen: raw.listen,
            admin: raw.admin,
            shards,
            profile,
            nodes: raw
                .nodes
                .into_iter()
                .map(|n| NodeConfig {
                    id: n.id,
                    addr: n.addr,
                })
                .collect(),
            streams,
        })
    }

    /// The configuration the controller starts from: the streams as this file
    /// describes them, their primaries not yet bound to a process.
    pub fn genesis(&self) -> crate::control::ClusterConfig {
        if let Some(joined) = &self.joined {
            return joined.clone();
        }
        let control = self.control.as_ref().expect("a [control] section");
        crate::control::ClusterConfig::genesis(
            self.nodes.iter().map(|n| (n.id, n.addr.clone())).collect(),
            control.voters.clone(),
            self.streams
                .iter()
                .map(|s| {
                    let roles = crate::control::StreamRoles {
                        epoch: s.epoch,
                        primary: s.primary,
                        incarnation: 0,
                        sync_set: s.sync_set.clone(),
                        learners: s.learners.clone(),
                        degraded: false,
                        policy: crate::control::Policy {
                            retain_segments: s.retain_segments,
                            ..crate::control::Policy::of(&s.settings, s.request_timeout_ms)
                        },
                        version: 0,
                        floor: (0, 0),
                        db: s.front.as_ref().and_then(|f| f.genesis_roles()),
                    };
                    (s.name.clone(), roles)
                })
                .collect(),
        )
    }

    /// Takes the nodes, streams and voters of the cluster this node joined.
    pub fn adopt(&mut self, cluster: crate::control::ClusterConfig) -> Result<(), String> {
        if cluster.members.get(&self.node_id) != Some(&self.advertise) {
            return Err(format!(
                "the cluster's configuration does not list node {} at {}",
                self.node_id, self.advertise
            ));
        }
        self.nodes = cluster
            .members
            .iter()
            .map(|(&id, addr)| NodeConfig {
                id,
                addr: addr.clone(),
            })
            .collect();
        if cluster.streams.len() > STREAMS_MAX {
            return Err(format!(
                "the cluster has {} streams: a node hosts at most {STREAMS_MAX}",
                cluster.streams.len()
            ));
        }
        self.streams = Vec::new();
        for (name, roles) in &cluster.streams {
            valid_stream_name(name).map_err(|e| format!("the cluster's stream {name:?}: {e}"))?;
            let settings = roles.policy.settings();
            self.streams.push(StreamConfig {
                name: name.clone(),
                primary: roles.primary,
                sync_set: roles.sync_set.clone(),
                learners: roles.learners.clone(),
                settings,
                request_timeout_ms: roles.policy.request_timeout_ms,
                epoch: roles.epoch,
                retain_segments: roles.policy.retain_segments,
                // The database's address and credentials are not part of the
                // cluster's configuration: a joined node runs no front and serves no
                // replicas.
                front: None,
                binlog_server: None,
            });
        }
        let control = self.control.get_or_insert(ControlConfig {
            voters: Vec::new(),
            failover_timeout_ms: 150,
        });
        control.voters = cluster.voters.clone();
        self.joined = Some(cluster);
        Ok(())
    }

    /// The admin endpoints' bearer token: `admin_token_file`'s, else derived from the
    /// cluster secret, else none (mutating endpoints are refused).
    pub fn admin_token(&self) -> Option<String> {
        self.admin_token
            .clone()
            .or_else(|| self.secret.as_ref().map(|s| s.admin_token()))
    }

    pub fn node(&self, id: NodeId) -> Option<&NodeConfig> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The shard that owns stream number `index`.
    pub fn shard_of(&self, index: usize) -> usize {
        index % self.shards
    }
}

/// Keys of the file's top level (before any `[table]`).
pub const TOP_LEVEL_KEYS: [&str; 13] = [
    "node_id",
    "data_dir",
    "listen",
    "admin",
    "shards",
    "profile",
    "secret_file",
    "join",
    "advertise",
    "log_level",
    "admin_token_file",
    "nodes",
    "streams",
];

/// TOML puts a key written after a `[table]` header into that table: a top-level key
/// appended at the end of a file lands in the last `[[streams]]` or `[[nodes]]` entry.
/// Says so, instead of only "unknown field".
fn top_level_hint(message: &str) -> String {
    let key = message
        .split("unknown field `")
        .nth(1)
        .and_then(|rest| rest.split('`').next());
    match key {
        Some(k) if TOP_LEVEL_KEYS.contains(&k) => format!(
            "{}\n{k} is a top-level key: write it above the first [table] header (TOML \
             reads a key written below a header as part of that table)",
            message.trim_end()
        ),
        _ => message.to_string(),
    }
}

/// Stream names become directory names: a small, safe alphabet.
pub fn valid_stream_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err("names are 1-128 characters of [A-Za-z0-9_.-], not starting with '.'".into())
    }
}
