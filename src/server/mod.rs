//! The lockstep node: shard threads, the acceptor, the admin endpoint.
//!
//! [`Server::start`] opens (and recovers) the log of every stream of the configuration,
//! gives each stream to one shard (a pinned thread with its own io_uring), and starts
//! listening. A stream whose primary is this node takes a new epoch first (see
//! [`epoch_file`]). [`Server::shutdown`] stops every thread; nothing in flight is lost
//! that was acknowledged, because nothing is acknowledged before it is durable.
//!
//! Resources: one thread per shard, one acceptor thread, one admin thread, and short
//! threads for handshakes and dials. Each stream holds its log's two batch buffers and
//! a bounded in-memory cache of recent records.

pub mod acceptor;
pub mod admin;
pub mod auth;
pub mod config;
pub mod control_link;
pub mod control_loop;
pub mod coordinator;
pub mod dialer;
pub mod dir_lock;
pub mod epoch_file;
pub mod identity;
pub mod join;
pub mod lifecycle;
pub mod logging;
pub mod shard;

pub use crate::stream::metrics;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Instant;

use lockstep_sys::uring::Ring;

use crate::log::Log;
use crate::stream::{Options, StreamDriver, StreamSpec, start_epoch};
use crate::transport::rdma::device::DeviceProvider;
use crate::transport::rdma::setup::Chosen;
use config::Config;
use metrics::StreamMetrics;
use shard::{Handoff, ShardParts};

/// Connections waiting for a shard to take them.
const HANDOFF_QUEUE: usize = 1024;

/// State the shards publish for the other threads.
pub struct Shared {
    pub shutdown: AtomicBool,
    pub metrics: Vec<Mutex<Vec<StreamMetrics>>>,
    /// The controller's view of the cluster (configuration, members' statuses), as
    /// the control loop last published it; `None` without a controller.
    pub members: Mutex<Option<serde_json::Value>>,
    /// The cluster secret every connection between nodes proves.
    pub secret: Option<auth::Secret>,
    /// The metrics of this node's database fronts.
    pub fronts: Vec<Arc<crate::front::metrics::FrontMetrics>>,
    /// The committed roles (database roles among them) for fronts and agents.
    pub coordinator: Arc<coordinator::NodeCoordinator>,
    /// Every stream's front settings (`None`: no front), by stream name.
    pub front_settings: Vec<(String, crate::front::FrontSettings)>,
    /// Which process serves each node id, as this node sees it (with a controller).
    pub identities: Option<Arc<identity::Identities>>,
    /// Why the node must stop, once something found it must (another live process
    /// serves its node id); the daemon stops then.
    pub fatal: Mutex<Option<String>>,
}

impl Shared {
    /// Every stream's metrics, as last published by the shards.
    pub fn streams(&self) -> Vec<StreamMetrics> {
        self.metrics
            .iter()
            .flat_map(|m| m.lock().expect("metrics lock").clone())
            .collect()
    }

    /// Shared state holding only these published metrics (for rendering them).
    pub fn for_metrics(shards: Vec<Vec<StreamMetrics>>) -> Shared {
        Shared {
            shutdown: AtomicBool::new(false),
            metrics: shards.into_iter().map(Mutex::new).collect(),
            members: Mutex::new(None),
            secret: None,
            fronts: Vec::new(),
            coordinator: Arc::default(),
            front_settings: Vec::new(),
            identities: None,
            fatal: Mutex::new(None),
        }
    }

    /// Records why the node must stop (the first reason counts). The daemon polls
    /// [`Server::fatal`] and stops with that one line.
    pub fn stop_fatally(&self, why: String) {
        let mut fatal = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        if fatal.is_none() {
            *fatal = Some(why);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("stream {stream}: {source}")]
    Log {
        stream: String,
        #[source]
        source: crate::log::LogError,
    },
    #[error("{what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("controller: {0}")]
    Control(#[from] crate::control::ControlError),
    #[error("{}: {source}", path.display())]
    ControlState {
        path: std::path::PathBuf,
        #[source]
        source: crate::control::ControlError,
    },
    #[error("read {}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("start {what}: {source}")]
    Thread {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    DirLock(#[from] dir_lock::DirLockError),
    #[error("{0}")]
    Setup(String),
}

/// A running node.
pub struct Server {
    shared: Arc<Shared>,
    /// Stopped before the shards, so that they see no error of the shutdown.
    fronts: Vec<crate::front::Front>,
    rejoin_agents: Vec<crate::front::rejoin::RejoinAgent>,
    binlog_servers: Vec<crate::front::server::BinlogServer>,
    threads: Vec<JoinHandle<()>>,
    listen: SocketAddr,
    admin: Option<SocketAddr>,
    /// The admin plane's state (its token changes on reload).
    admin_state: Arc<admin::Admin>,
    node_id: crate::replication::NodeId,
    /// The data directory's lock, held for the node's life (dropped last).
    _dir_lock: dir_lock::DirLock,
}

impl Server {
    pub fn start(mut cfg: Config) -> Result<Server, ServerError> {
        // Before anything else touches the data directory: one process serves it.
        let dir_lock = dir_lock::DirLock::take(&cfg.data_dir, cfg.node_id)?;
        // Identifies this process to the controller: a node that restarts is a new
        // incarnation and never resumes a primary role by itself.
        let incarnation = cfg.control.as_ref().map(|_| new_incarnation());
        if let Some(inc) = incarnation {
            lifecycle::refuse_if_running(&cfg, inc).map_err(ServerError::Setup)?;
        }
        let listener = TcpListener::bind(cfg.listen).map_err(|source| ServerError::Bind {
            what: "listen on",
            addr: cfg.listen,
            source,
        })?;
        let listen = listener
            .local_addr()
            .map_err(|e| ServerError::Setup(e.to_string()))?;
        let admin_listener = match cfg.admin {
            Some(a) => Some(TcpListener::bind(a).map_err(|source| ServerError::Bind {
                what: "admin on",
                addr: a,
                source,
            })?),
            None => None,
        };
        let admin = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
        // A new node joins before it opens anything: the cluster names its streams.
        join::join_cluster(&mut cfg)?;
        let coordinator = Arc::new(coordinator::NodeCoordinator::default());
        let mut fronts = Vec::new();
        let mut rejoin_agents = Vec::new();
        for s in cfg.streams.iter() {
            if let Some(front) = &s.front {
                let node = config::local_client_addr(listen);
                let shared_view: Option<Arc<dyn crate::front::coordinator::Coordinator>> =
                    cfg.control.as_ref().map(|_| {
                        Arc::clone(&coordinator) as Arc<dyn crate::front::coordinator::Coordinator>
                    });
                let f = crate::front::Front::start(
                    &s.name,
                    &node,
                    front.clone(),
                    std::time::Duration::from_millis(s.request_timeout_ms),
                    cfg.profile.log_options().batch_bytes,
                    shared_view.clone(),
                )
                .map_err(|e| ServerError::Setup(format!("start the front of {}: {e}", s.name)))?;
                fronts.push(f);
                if let Some(view) = shared_view
                    && let Some(agent) = crate::front::rejoin::RejoinAgent::start(
                        &s.name, front, view,
                    )
                    .map_err(|e| {
                        ServerError::Setup(format!("start the rejoin agent of {}: {e}", s.name))
                    })?
                {
                    rejoin_agents.push(agent);
                }
            }
        }
        let mut binlog_servers = Vec::new();
        for s in cfg.streams.iter() {
            if let Some(b) = &s.binlog_server {
                let server =
                    crate::front::server::BinlogServer::start(b.clone()).map_err(|source| {
                        ServerError::Bind {
                            what: "serve the binlog on",
                            addr: b.listen,
                            source,
                        }
                    })?;
                binlog_servers.push(server);
            }
        }
        let identities = incarnation.map(|inc| {
            let members = cfg.genesis().members;
            Arc::new(identity::Identities::new(
                cfg.node_id,
                inc,
                cfg.advertise.clone(),
                members,
            ))
        });
        let shared = Arc::new(Shared {
            shutdown: AtomicBool::new(false),
            metrics: (0..cfg.shards).map(|_| Mutex::new(Vec::new())).collect(),
            members: Mutex::new(None),
            secret: cfg.secret.clone(),
            fronts: fronts.iter().map(|f| Arc::clone(f.metrics())).collect(),
            coordinator: Arc::clone(&coordinator),
            front_settings: cfg
                .streams
                .iter()
                .filter_map(|s| Some((s.name.clone(), s.front.clone()?)))
                .collect(),
            identities: identities.clone(),
            fatal: Mutex::new(None),
        });
        let started = Instant::now();
        let mut per_shard: Vec<Vec<StreamDriver<Log>>> =
            (0..cfg.shards).map(|_| Vec::new()).collect();
        let mut routes = Vec::new();
        for (index, s) in cfg.streams.iter().enumerate() {
            let shard = cfg.shard_of(index);
            let local = per_shard[shard].len();
            let driver = open_stream(&cfg, s, local, incarnation)?;
            routes.push((s.name.clone(), shard, local));
            per_shard[shard].push(driver);
        }
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..cfg.shards {
            let (tx, rx) = mpsc::sync_channel::<Handoff>(HANDOFF_QUEUE);
            senders.push(tx);
            receivers.push(rx);
        }
        let mut threads = Vec::new();
        let control = match (&cfg.control, incarnation) {
            (Some(cc), Some(inc)) => {
                let (tx, rx) = mpsc::sync_channel(control_loop::CONTROL_QUEUE);
                let persisted = control_loop::load_state(&cfg.data_dir)?;
                let settings = crate::control::ControllerSettings {
                    failover_timeout_ms: cc.failover_timeout_ms,
                    append_bytes_max: crate::constants::CONTROL_APPEND_BYTES_MAX,
                    uncommitted_bytes_max: crate::constants::CONTROL_UNCOMMITTED_BYTES_MAX,
                    ..Default::default()
                };
                let stream_routes = routes
                    .iter()
                    .map(|(name, shard, local)| control_loop::StreamRoute {
                        name: name.clone(),
                        shard: senders[*shard].clone(),
                        local: *local,
                    })
                    .collect();
                let l = control_loop::ControlLoop::new(
                    cfg.node_id,
                    inc,
                    cfg.advertise.clone(),
                    cfg.genesis(),
                    persisted,
                    settings,
                    rx,
                    stream_routes,
                    &cfg.data_dir,
                    Arc::clone(&shared),
                    cfg.secret.clone(),
                )?;
                coordinator.connect(tx.clone());
                threads.push(
                    std::thread::Builder::new()
                        .name("lockstep-control".into())
                        .spawn(move || l.run())
                        .map_err(|e| ServerError::Setup(e.to_string()))?,
                );
                Some(tx)
            }
            _ => None,
        };
        let transport = choose_transport(cfg.profile.transport)?;
        for (i, (streams, rx)) in per_shard.into_iter().zip(receivers).enumerate() {
            let ring = Ring::new(cfg.profile.ring_options())
                .map_err(|e| ServerError::Setup(format!("io_uring for shard {i}: {e}")))?;
            let parts = ShardParts {
                index: i,
                ring,
                streams,
                inbox: rx,
                to_self: senders[i].clone(),
                shared: Arc::clone(&shared),
                node_id: cfg.node_id,
                control: control.clone(),
                started,
                transport,
            };
            // Named by node and shard (15 bytes at most, the kernel's limit), so a
            // process running several nodes tells their threads apart
            // (`lockstep-bench repl` measures each node's CPU time by them).
            let name = format!("lockstep-n{}-s{i}", cfg.node_id);
            let started = match transport {
                // Each shard opens the device for itself: its own context, protection
                // domain and queue pairs, shared with no other thread.
                Chosen::Rdma => {
                    let choice = lockstep_sys::verbs::DeviceChoice::from_env();
                    let provider = DeviceProvider::open(&choice).map_err(|e| {
                        ServerError::Setup(format!("rdma device for shard {i}: {e}"))
                    })?;
                    shard::spawn(parts, provider, name)
                }
                Chosen::Tcp | Chosen::RdmaEmu => {
                    shard::spawn(parts, shard::emulated_provider(), name)
                }
            };
            let t = started.map_err(|e| ServerError::Setup(format!("start shard {i}: {e}")))?;
            threads.push(t);
        }
        let shapes = cfg
            .streams
            .iter()
            .map(|s| metrics::StreamShape {
                name: s.name.clone(),
                sync_set: s.sync_set.len(),
                min_sync: s.settings.min_sync,
                dir: cfg.data_dir.join("streams").join(&s.name),
            })
            .collect::<Vec<_>>();
        // A peer silent for three failover timeouts is down (the controller replaces a
        // primary after one).
        let peer_down_after_ms = cfg
            .control
            .as_ref()
            .map_or(1000, |c| 3 * c.failover_timeout_ms);
        let registry = metrics::registry(metrics::NodeCollector::new(
            cfg.node_id,
            Arc::clone(&shared),
            shapes.clone(),
            peer_down_after_ms,
        ));
        let admin_state = Arc::new(admin::Admin {
            node: cfg.node_id,
            shared: Arc::clone(&shared),
            control: control.clone(),
            registry,
            shapes,
            token: std::sync::RwLock::new(cfg.admin_token()),
        });
        let (inbox, admin_thread) = admin::start(admin_listener, Arc::clone(&admin_state))
            .map_err(|e| ServerError::Setup(format!("start the admin endpoint: {e}")))?;
        threads.push(admin_thread);
        // Streams are addressed by their index within their shard.
        let routes = Arc::new(acceptor::Routes {
            streams: routes
                .iter()
                .map(|(n, shard, _)| (n.clone(), *shard))
                .collect(),
            local: routes.iter().map(|(_, _, local)| *local).collect(),
            shards: senders,
            control,
            secret: cfg.secret.clone(),
            admin: Some(inbox),
            identities,
            control_budget: Arc::default(),
            handshakes: Arc::default(),
            joins: Default::default(),
        });
        let (sh, r) = (Arc::clone(&shared), Arc::clone(&routes));
        threads.push(
            std::thread::Builder::new()
                .name("lockstep-accept".into())
                .spawn(move || acceptor::run(listener, r, sh))
                .map_err(|e| ServerError::Setup(e.to_string()))?,
        );
        Ok(Server {
            shared,
            fronts,
            rejoin_agents,
            binlog_servers,
            threads,
            listen,
            admin,
            admin_state,
            node_id: cfg.node_id,
            _dir_lock: dir_lock,
        })
    }

    /// The address clients and peers connect to.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// Metrics of every stream, as last published by the shards.
    pub fn metrics(&self) -> Vec<StreamMetrics> {
        self.shared.streams()
    }

    pub fn node_id(&self) -> crate::replication::NodeId {
        self.node_id
    }

    /// Why the node must stop, if something found it must: another live process
    /// serves its node id (see [`identity`]). The daemon checks it while it waits for
    /// signals.
    pub fn fatal(&self) -> Option<String> {
        self.shared
            .fatal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the node serves every stream now (what `/ready` answers).
    pub fn readiness(&self) -> metrics::Readiness {
        metrics::readiness(&self.shared.streams(), &self.admin_state.shapes)
    }

    /// The admin plane's state.
    pub fn admin_state(&self) -> &Arc<admin::Admin> {
        &self.admin_state
    }

    /// Stops every thread and waits for them.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        for a in &mut self.rejoin_agents {
            a.stop();
        }
        for f in &mut self.fronts {
            f.stop();
        }
        for b in &mut self.binlog_servers {
            b.stop();
        }
        self.shared.shutdown.store(true, Ordering::SeqCst);
        // Wake the blocking accept loop (the admin thread looks at the flag itself).
        let _ = TcpStream::connect(self.listen);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop();
        }
    }
}

fn open_stream(
    cfg: &Config,
    s: &config::StreamConfig,
    local: usize,
    incarnation: Option<u64>,
) -> Result<StreamDriver<Log>, ServerError> {
    let dir = cfg.data_dir.join("streams").join(&s.name);
    let log_err = |source| ServerError::Log {
        stream: s.name.clone(),
        source,
    };
    let log = Log::open(&dir, cfg.profile.log_options(), local as u64).map_err(log_err)?;
    for n in &log.recovery().notes {
        tracing::info!(stream = %s.name, "recovery: {n}");
    }
    let last_epoch = log.last_epoch().unwrap_or(0);
    let io = |e: std::io::Error| {
        ServerError::Setup(format!(
            "stream {}: epoch file in {}: {e}",
            s.name,
            dir.display()
        ))
    };
    let stored = epoch_file::load(&dir).map_err(io)?;
    // A new incarnation of a primary without a controller takes a new epoch, durable
    // before any record (before the shard runs, so it may wait for the fsync).
    let new_primary = s.primary == cfg.node_id && cfg.control.is_none();
    let epoch = start_epoch(new_primary, s.epoch, last_epoch, stored);
    let stored = if new_primary {
        epoch_file::store(&dir, epoch).map_err(io)?;
        epoch
    } else {
        stored
    };
    let members = s
        .sync_set
        .iter()
        .chain(&s.learners)
        .map(|&id| (id, cfg.node(id).expect("validated").addr.clone()))
        .collect();
    let primary_addr = cfg.node(s.primary).map(|n| n.addr.clone());
    let spec = StreamSpec {
        name: s.name.clone(),
        primary: s.primary,
        members: StreamSpec::members_of(&s.sync_set, &s.learners),
        settings: s.settings.clone(),
        request_timeout_ms: s.request_timeout_ms,
        retain_segments: s.retain_segments,
    };
    Ok(StreamDriver::new(
        spec,
        cfg.node_id,
        log,
        epoch,
        stored,
        incarnation,
        members,
        primary_addr,
        Options::default(),
    ))
}

/// A number that differs between any two processes of a node: the time of the start
/// and the process id.
fn new_incarnation() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (nanos ^ (u64::from(std::process::id()) << 40)).max(1)
}

/// The transport of this node's peer links, from the profile's selection and the
/// device probe, said in one line.
fn choose_transport(
    selection: crate::transport::rdma::setup::Selection,
) -> Result<crate::transport::rdma::setup::Chosen, ServerError> {
    use crate::transport::rdma::setup::{Selection, choose};
    let probe = match selection {
        Selection::Tcp | Selection::RdmaEmu => Err(String::new()),
        Selection::Auto | Selection::Rdma => {
            lockstep_sys::verbs::probe(&lockstep_sys::verbs::DeviceChoice::from_env())
        }
    };
    let (chosen, line) = choose(selection, probe).map_err(ServerError::Setup)?;
    tracing::info!("{line}");
    Ok(chosen)
}
