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

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::replication::{Mode, NodeId, OnInsufficient, StreamSettings};

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
    streams: Vec<RawStream>,
    control: Option<RawControl>,
    secret_file: Option<PathBuf>,
    #[serde(default)]
    join: Vec<String>,
    advertise: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    voters: Option<Vec<NodeId>>,
    failover_timeout_ms: Option<u64>,
}

/// The `[control]` section: the cluster runs its controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlConfig {
    pub voters: Vec<NodeId>,
    pub failover_timeout_ms: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: NodeId,
    addr: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStream {
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
}

/// A node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub id: NodeId,
    /// Address as configured (host:port); resolved when dialled.
    pub addr: String,
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
}

pub use crate::constants::TICK_MS;

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Config::parse(&text, path.parent().unwrap_or(Path::new("."))).map_err(|message| {
            ConfigError::Invalid {
                path: shown,
                message,
            }
        })
    }

    /// Parses and checks a configuration; relative paths are taken from `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Config, String> {
        let raw: Raw = toml::from_str(text).map_err(|e| e.to_string())?;
        let secret = match &raw.secret_file {
            Some(p) => {
                Some(crate::server::auth::Secret::load(&base.join(p)).map_err(|e| e.to_string())?)
            }
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
        let mut names = HashSet::new();
        let mut streams = Vec::new();
        for s in raw.streams {
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
            let request_timeout_ms = s.request_timeout_ms.unwrap_or(5000);
            if request_timeout_ms == 0 {
                return Err(format!("{at}: request_timeout_ms must be positive"));
            }
            let epoch = s.epoch.unwrap_or(1);
            if epoch == 0 {
                return Err(format!("{at}: epoch must be at least 1"));
            }
            streams.push(StreamConfig {
                name: s.name,
                primary: s.primary,
                sync_set,
                learners: s.learners,
                settings,
                request_timeout_ms,
                epoch,
                retain_segments: s.retain_segments,
            });
        }
        let control = match raw.control {
            // A joining node runs the cluster's controller, as a learner.
            None if joining => Some(ControlConfig {
                voters: Vec::new(),
                failover_timeout_ms: 150,
            }),
            Some(c) if joining => Some(ControlConfig {
                voters: Vec::new(),
                failover_timeout_ms: failover_timeout(c.failover_timeout_ms)?,
            }),
            None => None,
            Some(c) => {
                let voters = c.voters.unwrap_or_else(|| ids.clone());
                if voters.is_empty() || voters.iter().any(|v| !unique.contains(v)) {
                    return Err(format!(
                        "control: voters {voters:?} must be configured nodes"
                    ));
                }
                if !voters.contains(&raw.node_id) {
                    return Err(format!(
                        "control: node_id = {} is not among the voters {voters:?}",
                        raw.node_id
                    ));
                }
                Some(ControlConfig {
                    voters,
                    failover_timeout_ms: failover_timeout(c.failover_timeout_ms)?,
                })
            }
        };
        Ok(Config {
            control,
            secret,
            join: raw.join,
            advertise,
            joined: None,
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

    pub fn node(&self, id: NodeId) -> Option<&NodeConfig> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The shard that owns stream number `index`.
    pub fn shard_of(&self, index: usize) -> usize {
        index % self.shards
    }
}

fn failover_timeout(given: Option<u64>) -> Result<u64, String> {
    let ms = given.unwrap_or(150);
    if !(20..=60_000).contains(&ms) {
        return Err(format!(
            "control: failover_timeout_ms = {ms}: must be in 20..=60000"
        ));
    }
    Ok(ms)
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

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
node_id = 1
data_dir = "d"
listen = "127.0.0.1:7001"
shards = 2
[[nodes]]
id = 1
addr = "127.0.0.1:7001"
[[nodes]]
id = 2
addr = "127.0.0.1:7002"
[[nodes]]
id = 3
addr = "127.0.0.1:7003"
"#;

    fn parse(streams: &str) -> Result<Config, String> {
        Config::parse(&format!("{BASE}{streams}"), Path::new("/base"))
    }

    #[test]
    fn defaults() {
        let c = parse("[[streams]]\nname = \"orders\"\nprimary = 1\n").unwrap();
        assert_eq!(c.data_dir, Path::new("/base/d"));
        let s = &c.streams[0];
        assert_eq!(s.sync_set, vec![2, 3]);
        assert_eq!(s.settings.mode, Mode::Strong);
        assert_eq!(s.settings.k(2), 2);
        assert_eq!(s.settings.on_insufficient, OnInsufficient::Block);
    }

    #[test]
    fn errors_name_the_problem() {
        let cases = [
            (
                "[[streams]]\nname = \"a\"\nprimary = 9\n",
                "primary 9 is not a configured node",
            ),
            ("[[streams]]\nname = \"a/b\"\nprimary = 1\n", "names are"),
            (
                "[[streams]]\nname = \"a\"\nprimary = 1\nmode = \"sync\"\n",
                "unknown commit mode",
            ),
            (
                "[[streams]]\nname = \"a\"\nprimary = 1\nsync_acks = 3\n",
                "sync_acks = 3",
            ),
            (
                "[[streams]]\nname = \"a\"\nprimary = 1\nsync_set = [1]\n",
                "cannot be its own",
            ),
            (
                "[[streams]]\nname = \"a\"\nprimary = 1\n[[streams]]\nname = \"a\"\nprimary = 2\n",
                "defined twice",
            ),
            (
                "[[streams]]\nname = \"a\"\nprimary = 1\nsync_set = [2]\nlearners = [2]\n",
                "listed twice",
            ),
            (
                "[[streams]]\nname = \"a\"\nprimary = 1\ncolour = 1\n",
                "colour",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
        let e =
            Config::parse(&BASE.replace("node_id = 1", "node_id = 7"), Path::new("/")).unwrap_err();
        assert!(e.contains("node_id = 7"), "{e}");
    }

    #[test]
    fn a_joining_node_needs_the_secret_and_nothing_of_the_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let private = |name: &str, text: &str| {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        };
        private("secret", "0123456789abcdef0123\n");
        let joiner = "node_id = 4\ndata_dir = \"d\"\nlisten = \"127.0.0.1:7004\"\n\
                      join = [\"127.0.0.1:7001\"]\n";
        let c = Config::parse(&format!("{joiner}secret_file = \"secret\"\n"), dir.path()).unwrap();
        assert_eq!(c.join, vec!["127.0.0.1:7001".to_string()]);
        assert_eq!(c.advertise, "127.0.0.1:7004");
        assert!(c.secret.is_some() && c.nodes.is_empty() && c.streams.is_empty());
        assert_eq!(c.control.as_ref().unwrap().failover_timeout_ms, 150);
        let cases = [
            (joiner.to_string(), "only with the cluster's secret_file"),
            (
                format!("{joiner}secret_file = \"secret\"\n[[nodes]]\nid = 4\naddr = \"x:1\"\n"),
                "remove [[nodes]]",
            ),
            (
                format!("{joiner}secret_file = \"secret\"\n[control]\nvoters = [4]\n"),
                "not a voter",
            ),
            (
                format!("{joiner}secret_file = \"missing\"\n"),
                "secret_file",
            ),
        ];
        for (text, want) in cases {
            let e = Config::parse(&text, dir.path()).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
        private("short", "tiny");
        let e = Config::parse(&format!("{BASE}secret_file = \"short\"\n"), dir.path());
        // `secret_file` after [[nodes]] belongs to the last node table: refused there.
        assert!(e.is_err());
        let e = Config::parse(&format!("secret_file = \"short\"\n{BASE}"), dir.path()).unwrap_err();
        assert!(e.contains("at least 16"), "{e}");
    }
}
