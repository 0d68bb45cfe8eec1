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
    log_level: Option<String>,
    admin_token_file: Option<PathBuf>,
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
    front: Option<RawFront>,
    binlog_server: Option<RawBinlogServer>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBinlogServer {
    listen: SocketAddr,
    user: String,
    password_file: Option<PathBuf>,
    server_id: Option<u32>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFront {
    kind: String,
    primary: String,
    user: String,
    password_file: Option<PathBuf>,
    server_id: Option<u32>,
    heartbeat_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    retry_ms: Option<u64>,
    event_bytes_max: Option<usize>,
    /// node id → its database server's host:port (database failover).
    members: Option<std::collections::BTreeMap<String, String>>,
    failover_timeout_ms: Option<u64>,
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
    /// The database primary this stream's front replicates (`None`: no front).
    pub front: Option<crate::front::FrontSettings>,
    /// Where this node serves the stream to MariaDB replicas (`None`: it does not).
    pub binlog_server: Option<crate::front::server::ServerSettings>,
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
/// the stream must hold each transaction durably on its sync set before it commits:
/// strong mode, and no degrading to the primary alone.
fn front_settings(
    f: RawFront,
    stream: &StreamSettings,
    node: NodeId,
    base: &Path,
) -> Result<crate::front::FrontSettings, String> {
    use crate::front;
    if f.kind != "mariadb" {
        return Err(format!("kind = {:?}: the only kind is \"mariadb\"", f.kind));
    }
    if stream.mode != Mode::Strong {
        return Err(format!(
            "the stream's mode is {}: a front needs mode = \"strong\" (its ACK tells the \
             database that the sync set holds the transaction durably)",
            stream.mode
        ));
    }
    if stream.on_insufficient != OnInsufficient::Block {
        return Err(
            "on_insufficient = \"degrade\" would let the database commit on the lockstep \
             primary's copy alone; a front needs \"block\""
                .into(),
        );
    }
    if f.primary.is_empty() || f.primary.len() > front::record::TEXT_BYTES_MAX {
        return Err(format!("primary = {:?}: not a host:port", f.primary));
    }
    if f.user.is_empty() {
        return Err("user is empty".into());
    }
    let password = match f.password_file {
        Some(p) => Some(read_password(&base.join(p))?),
        None => None,
    };
    let ms = |v: Option<u64>, default: std::time::Duration, key: &str| {
        let d = v.map_or(default, std::time::Duration::from_millis);
        if d.is_zero() {
            Err(format!("{key} must be positive"))
        } else {
            Ok(d)
        }
    };
    let server_id = f
        .server_id
        .unwrap_or(front::SERVER_ID_BASE_DEFAULT)
        .checked_add(node)
        .ok_or_else(|| {
            format!(
                "server_id = {}: with the node id {node} added it exceeds {}",
                f.server_id.unwrap_or_default(),
                u32::MAX
            )
        })?;
    let event_bytes_max = f.event_bytes_max.unwrap_or(front::EVENT_BYTES_DEFAULT);
    if !(1 << 20..=1 << 30).contains(&event_bytes_max) {
        return Err(format!(
            "event_bytes_max = {event_bytes_max}: must be between 1 MiB and 1 GiB"
        ));
    }
    let db = match f.members {
        None => {
            if f.failover_timeout_ms.is_some() {
                return Err("failover_timeout_ms without members: nothing to fail over to".into());
            }
            None
        }
        Some(raw) => {
            let mut members = std::collections::BTreeMap::new();
            for (id, addr) in raw {
                let id: NodeId = id
                    .parse()
                    .map_err(|_| format!("members: {id:?} is not a node id"))?;
                if addr.is_empty() || addr.len() > front::record::TEXT_BYTES_MAX {
                    return Err(format!("members: node {id}: {addr:?} is not a host:port"));
                }
                members.insert(id, addr);
            }
            if !members.values().any(|a| *a == f.primary) {
                return Err(format!(
                    "primary = {:?} is not one of the members' database servers",
                    f.primary
                ));
            }
            Some(front::DbMembers {
                node,
                members,
                failover_timeout: ms(
                    f.failover_timeout_ms,
                    front::DB_FAILOVER_TIMEOUT_DEFAULT,
                    "failover_timeout_ms",
                )?,
                source: None,
            })
        }
    };
    Ok(front::FrontSettings {
        upstream: f.primary,
        user: f.user,
        password,
        server_id,
        heartbeat: ms(f.heartbeat_ms, front::HEARTBEAT_DEFAULT, "heartbeat_ms")?,
        connect_timeout: ms(
            f.connect_timeout_ms,
            front::CONNECT_TIMEOUT_DEFAULT,
            "connect_timeout_ms",
        )?,
        retry: ms(f.retry_ms, front::RETRY_DEFAULT, "retry_ms")?,
        event_bytes_max,
        db,
    })
}

/// Checks a stream's `binlog_server` table; `listen` is the node's client address.
fn binlog_server_settings(
    b: RawBinlogServer,
    stream: &str,
    listen: SocketAddr,
    base: &Path,
) -> Result<crate::front::server::ServerSettings, String> {
    if b.user.is_empty() || b.user.len() > 80 {
        return Err(format!("user = {:?}: 1 to 80 bytes", b.user));
    }
    if b.listen == listen {
        return Err(format!(
            "listen = {}: the node's own client address; give the binlog server a port of \
             its own",
            b.listen
        ));
    }
    let password = match b.password_file {
        Some(p) => read_password(&base.join(p))?,
        None => Vec::new(),
    };
    let server_id = b
        .server_id
        .unwrap_or(crate::front::BINLOG_SERVER_ID_DEFAULT);
    if server_id == 0 {
        return Err("server_id = 0: MariaDB's replicas refuse a primary without an id".into());
    }
    Ok(crate::front::server::ServerSettings {
        listen: b.listen,
        user: b.user,
        password,
        server_id,
        stream: stream.to_owned(),
        node: local_client_addr(listen),
        version: crate::front::server::VERSION.to_owned(),
    })
}

/// The address a process on this machine reaches a node listening on `listen` at.
pub fn local_client_addr(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        }
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        }
        ip => ip,
    };
    SocketAddr::new(ip, listen.port()).to_string()
}

/// A password file: its first line; readable by its owner only.
fn read_password(path: &Path) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("password_file {shown}: {e}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "password_file {shown}: mode {mode:o} lets group or others read the password; \
             chmod 600 it"
        ));
    }
    let text = std::fs::read(path).map_err(|e| format!("password_file {shown}: {e}"))?;
    let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
    Ok(line.strip_suffix(b"\r").unwrap_or(line).to_vec())
}

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
                    front_settings(f, &settings, raw.node_id, base)
                        .map_err(|e| format!("{at}: front: {e}"))?,
                ),
                None => None,
            };
            let binlog_server = match s.binlog_server {
                Some(b) => Some(
                    binlog_server_settings(b, &s.name, raw.listen, base)
                        .map_err(|e| format!("{at}: binlog_server: {e}"))?,
                ),
                None => None,
            };
            // The database server beside this node replicates from its binlog server.
            if let (Some(db), Some(b)) = (
                front.as_mut().and_then(|f| f.db.as_mut()),
                binlog_server.as_ref(),
            ) {
                let at = local_client_addr(b.listen);
                let (host, port) = at.rsplit_once(':').unwrap_or((&at, "0"));
                db.source = Some(crate::front::db_role::Source {
                    host: host.to_owned(),
                    port: port.parse().unwrap_or(b.listen.port()),
                    user: b.user.clone(),
                    password: String::from_utf8_lossy(&b.password).into_owned(),
                });
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
                front,
                binlog_server,
            });
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
    fn a_front_is_checked_for_what_would_lose_data() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "secret\nignored\n").unwrap();
        let chmod = |mode| {
            std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .unwrap()
        };
        chmod(0o600);
        let front = |extra: &str, keys: &str| {
            let text = format!(
                "{BASE}[[streams]]\nname = \"db\"\nprimary = 1\n{extra}\
                 front = {{ kind = \"mariadb\", primary = \"127.0.0.1:3306\", \
                 user = \"lockstep\", password_file = \"pw\"{keys} }}\n"
            );
            Config::parse(&text, dir.path())
        };
        let c = front("", ", heartbeat_ms = 250").unwrap();
        let f = c.streams[0].front.as_ref().unwrap();
        assert_eq!(f.password.as_deref(), Some(&b"secret"[..]));
        assert_eq!(f.heartbeat, std::time::Duration::from_millis(250));
        assert_eq!(f.server_id, crate::front::SERVER_ID_BASE_DEFAULT + 1);
        // (stream keys, front keys, words of the error)
        let cases = [
            ("mode = \"semi\"\n", "", "needs mode = \"strong\""),
            ("mode = \"async\"\n", "", "needs mode = \"strong\""),
            ("on_insufficient = \"degrade\"\n", "", "needs \"block\""),
            ("", ", server_id = 4294967295", "exceeds"),
            ("", ", heartbeat_ms = 0", "heartbeat_ms must be positive"),
            ("", ", event_bytes_max = 10", "event_bytes_max"),
            ("", ", colour = 1", "unknown field"),
        ];
        for (extra, keys, words) in cases {
            let err = front(extra, keys).unwrap_err();
            assert!(err.contains(words), "{extra}{keys}: {err}");
        }
        let err = Config::parse(
            &format!(
                "{BASE}[[streams]]\nname = \"db\"\nprimary = 1\nfront = {{ kind = \"postgres\", \
                 primary = \"x:1\", user = \"u\" }}\n"
            ),
            dir.path(),
        )
        .unwrap_err();
        assert!(err.contains("the only kind is"), "{err}");
        chmod(0o644);
        let err = front("", "").unwrap_err();
        assert!(err.contains("chmod 600"), "{err}");
        chmod(0o600);
        // A node whose log batch cannot hold the front's largest record.
        std::fs::write(
            dir.path().join("small.toml"),
            "[log]\nbatch_bytes = 65536\n",
        )
        .unwrap();
        let err = Config::parse(
            &format!(
                "profile = \"small.toml\"\n{BASE}[[streams]]\nname = \"db\"\nprimary = 1\n\
                 front = {{ kind = \"mariadb\", primary = \"127.0.0.1:3306\", user = \"u\" }}\n"
            ),
            dir.path(),
        )
        .unwrap_err();
        assert!(err.contains("batch_bytes = 65536"), "{err}");
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
            (
                "[[streams]]\nname = \"a\"\nprimary = 1\nsync_set = []\nlearners = [2, 3]\n",
                "needs at least one sync-set member",
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

    /// The keys of each section of `docs/config.md` (rows that start with a key).
    fn documented() -> std::collections::BTreeMap<&'static str, Vec<String>> {
        let doc = include_str!("../../docs/config.md");
        let mut out = std::collections::BTreeMap::new();
        let mut section = "";
        for line in doc.lines() {
            if let Some(h) = line.strip_prefix("## ") {
                section = match h {
                    "Top level" => "top",
                    "`[[nodes]]`" => "nodes",
                    "`[[streams]]`" => "streams",
                    h if h.starts_with("`front`") => "front",
                    "`[control]`" => "control",
                    _ => "",
                };
                continue;
            }
            if let Some(rest) = line.strip_prefix("| `")
                && let Some((key, _)) = rest.split_once('`')
                && !section.is_empty()
            {
                out.entry(section)
                    .or_insert_with(Vec::new)
                    .push(key.to_string());
            }
        }
        out
    }

    /// The keys the parser accepts in a table: its "expected one of" list for an
    /// unknown key.
    fn accepted(text: &str) -> Vec<String> {
        let err = Config::parse(text, Path::new("/base")).unwrap_err();
        let list = err
            .split("expected one of ")
            .nth(1)
            .or_else(|| err.split("expected ").nth(1))
            .unwrap_or_else(|| panic!("no list of keys in: {err}"));
        let list = list.lines().next().unwrap();
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn the_reference_lists_every_key_the_parser_accepts_and_no_other() {
        let doc = documented();
        let stream = "[[streams]]\nname = \"a\"\nprimary = 1\n";
        let cases = [
            ("top", format!("zz_unknown = 1\n{BASE}")),
            ("nodes", format!("{BASE}zz_unknown = 1\n")),
            ("streams", format!("{BASE}{stream}zz_unknown = 1\n")),
            (
                "front",
                format!(
                    "{BASE}{stream}front = {{ kind = \"mariadb\", primary = \"x:1\", \
                     user = \"u\", zz_unknown = 1 }}\n"
                ),
            ),
            ("control", format!("{BASE}[control]\nzz_unknown = 1\n")),
        ];
        for (section, text) in cases {
            let mut parser = accepted(&text);
            let mut listed = doc.get(section).cloned().unwrap_or_default();
            parser.sort();
            listed.sort();
            assert_eq!(listed, parser, "docs/config.md, section {section}");
        }
    }

    #[test]
    fn the_reference_states_the_parsers_defaults() {
        let doc = include_str!("../../docs/config.md");
        let row = |key: &str| {
            doc.lines()
                .find(|l| l.starts_with(&format!("| `{key}` |")))
                .unwrap_or_else(|| panic!("no row for {key}"))
                .to_string()
        };
        let c = parse("[[streams]]\nname = \"a\"\nprimary = 1\n[control]\n").unwrap();
        let s = &c.streams[0];
        let defaults = [
            ("request_timeout_ms", s.request_timeout_ms),
            ("ack_timeout_ms", s.settings.ack_timeout_ticks * TICK_MS),
            ("epoch", s.epoch),
            ("min_sync", s.settings.min_sync as u64),
            (
                "failover_timeout_ms",
                c.control.as_ref().unwrap().failover_timeout_ms,
            ),
        ];
        for (key, value) in defaults {
            let r = row(key);
            let cells: Vec<&str> = r.split('|').map(str::trim).collect();
            assert!(
                cells[3].starts_with(&value.to_string()),
                "{key}: the parser's default is {value}, the reference says {r}"
            );
        }
        assert!(row("mode").contains("| `strong` |"));
        assert!(row("on_insufficient").contains("| `block` |"));
        assert!(
            row("log_level").contains(&format!("| `{}` |", crate::server::logging::DEFAULT_FILTER))
        );
    }

    #[test]
    fn a_top_level_key_below_a_table_gets_a_hint() {
        let e = parse("[[streams]]\nname = \"a\"\nprimary = 1\nsecret_file = \"s\"\n").unwrap_err();
        assert!(e.contains("secret_file is a top-level key"), "{e}");
        let e = parse("[[streams]]\nname = \"a\"\nprimary = 1\ncolour = 1\n").unwrap_err();
        assert!(!e.contains("top-level"), "{e}");
    }
}
