//! A cluster of lockstep nodes inside this process, on loopback: what `lockstep demo`
//! runs its workload against, and what the command-line tests run the tools against.
//!
//! Each node is a [`Server`] started from a configuration generated as TOML text, the
//! same text `lockstepd --config` reads (the files are written beside the data, so a
//! kept directory can be served again by `lockstepd`). Node 1 is the primary of every
//! stream; the other nodes form its sync set with the defaults (k = every member).
//!
//! Placement: node N starts from a thread restricted to the N-th core of this thread's
//! CPU set (in turn), so each node's shard runs on its own core where there are enough.
//!
//! Ports: a node's address must be in every node's configuration before any node
//! starts, so free loopback ports are found by binding and releasing them. Another
//! process may take one in between; the start then fails to bind and is tried again with
//! new ports, a bounded number of times.
//!
//! Clean-up: [`LocalCluster::shutdown`] stops every node and returns a
//! [`StoppedCluster`], which may open the logs (each log admits one process or owner at
//! a time, so that is only possible once the nodes are gone). Dropping a
//! `LocalCluster` stops the nodes too. Files are left to the owner of the directory.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::kit;
use crate::log::{Log, Record};
use crate::replication::{Mode, NodeId};
use crate::server::config::Config;
use crate::server::metrics::StreamMetrics;
use crate::server::{Server, ServerError};

/// Attempts at starting the cluster when a port was taken between probing and binding.
const START_ATTEMPTS: usize = 5;

/// Records compared at a time when checking logs against each other.
const COMPARE_CHUNK_RECORDS: usize = 4096;

/// How often the published metrics are looked at while waiting for the cluster.
const WAIT_POLL: Duration = Duration::from_millis(10);

/// One stream of a [`LocalCluster`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSpec {
    pub name: String,
    pub mode: Mode,
    /// More keys of the stream's table, as TOML lines (a `front`, say).
    pub toml: String,
}

impl StreamSpec {
    pub fn new(name: &str, mode: Mode) -> StreamSpec {
        StreamSpec {
            name: name.to_owned(),
            mode,
            toml: String::new(),
        }
    }

    /// The stream with `toml` (lines of more keys) in its table.
    pub fn with_toml(mut self, toml: &str) -> StreamSpec {
        self.toml = toml.to_owned();
        self
    }
}

/// Errors of a local cluster; each names the node or the stream.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("configuration of node {node}: {message}")]
    Config { node: NodeId, message: String },
    #[error("start a thread for node {node}: {source}")]
    Thread {
        node: NodeId,
        #[source]
        source: io::Error,
    },
    #[error("place node {node} on core {core}: {reason}")]
    Place {
        node: NodeId,
        core: usize,
        reason: String,
    },
    #[error("start node {node}: {source}")]
    Start {
        node: NodeId,
        #[source]
        source: ServerError,
    },
    #[error("stream {stream} on node {node}: {message}")]
    Stream {
        stream: String,
        node: NodeId,
        message: String,
    },
}

/// Running nodes, node 1 first.
pub struct LocalCluster {
    /// `None` for a node stopped with [`LocalCluster::stop_node`].
    servers: Vec<Option<Server>>,
    configs: Vec<Config>,
    addrs: Vec<String>,
}

impl LocalCluster {
    /// Starts `nodes` nodes with their data under `dir` (node N in `dir/nodeN`), serving
    /// `streams`. `segment_bytes` overrides the log's segment size (small segments make
    /// a short-lived cluster start fast: every log pre-zeroes its segments).
    pub fn start(
        dir: &Path,
        nodes: usize,
        streams: &[StreamSpec],
        segment_bytes: Option<u64>,
    ) -> Result<LocalCluster, ClusterError> {
        assert!(nodes >= 1);
        assert!(!streams.is_empty());
        let profile = match segment_bytes {
            Some(bytes) => {
                let path = dir.join("profile.toml");
                let text = format!(
                    "description = \"lockstep demo: small segments\"\n[log]\nsegment_bytes = {bytes}\n"
                );
                write_file(&path, &text)?;
                Some(path)
            }
            None => None,
        };
        let mut attempt = 1;
        loop {
            match try_start(dir, nodes, streams, profile.as_deref()) {
                Err(ClusterError::Start {
                    source: ServerError::Bind { ref source, .. },
                    ..
                }) if source.kind() == io::ErrorKind::AddrInUse && attempt < START_ATTEMPTS => {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Client addresses of the nodes ("127.0.0.1:port"), node 1 (the primary) first.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// The primary's metrics of `stream`, as its shard last published them; `None` if
    /// the primary was stopped.
    pub fn primary_metrics(&self, stream: &str) -> Option<StreamMetrics> {
        let primary = self.servers[0].as_ref()?;
        primary.metrics().into_iter().find(|m| m.stream == stream)
    }

    /// What every running node says about `stream`, for an error message: its role,
    /// LSNs and the failure that stopped it, if any.
    pub fn describe(&self, stream: &str) -> String {
        let mut parts = Vec::new();
        for (i, server) in self.servers.iter().enumerate() {
            let node = i + 1;
            let Some(server) = server else {
                parts.push(format!("node {node} stopped"));
                continue;
            };
            let Some(m) = server.metrics().into_iter().find(|m| m.stream == stream) else {
                parts.push(format!("node {node} publishes nothing about it"));
                continue;
            };
            let mut part = format!(
                "node {node} {} (durable lsn {}, commit lsn {})",
                m.role, m.durable_lsn, m.commit_lsn
            );
            if let Some(f) = &m.failure {
                let _ = write!(part, " FAILED: {f}");
            }
            parts.push(part);
        }
        parts.join("; ")
    }

    /// Stops node `node` (1-based): the other nodes see its connections close and it no
    /// longer answers. Its data stays.
    pub fn stop_node(&mut self, node: NodeId) {
        if let Some(s) = self.servers[node as usize - 1].take() {
            s.shutdown();
        }
    }

    /// Waits until the primary of every stream reports each member connected and in the
    /// sync set, so that measurements do not include the first dials.
    pub fn wait_connected(&self, timeout: Duration) -> Result<(), ClusterError> {
        let members = self.servers.len() - 1;
        for cfg in &self.configs[0].streams {
            let what = "every member connected and in sync";
            self.wait_for(&cfg.name, timeout, what, |m| {
                m.members.len() == members && m.members.iter().all(|x| x.connected && x.in_sync)
            })?;
        }
        Ok(())
    }

    /// Waits until the primary of `stream` has committed `lsn` and every member reports
    /// it durable; returns the primary's commit LSN. Asynchronous and semi-synchronous
    /// streams commit before the members' disks have the records: this lets the members
    /// catch up before their logs are compared.
    pub fn wait_replicated(
        &self,
        stream: &str,
        lsn: u64,
        timeout: Duration,
    ) -> Result<u64, ClusterError> {
        let members = self.servers.len() - 1;
        let what = format!("lsn {lsn} committed and durable on every member");
        let m = self.wait_for(stream, timeout, &what, |m| {
            m.commit_lsn >= lsn
                && m.members.len() == members
                && m.members.iter().all(|x| x.durable_lsn >= lsn)
        })?;
        Ok(m.commit_lsn)
    }

    /// Polls the primary's published metrics of `stream` until `done` holds for them.
    fn wait_for(
        &self,
        stream: &str,
        timeout: Duration,
        what: &str,
        done: impl Fn(&StreamMetrics) -> bool,
    ) -> Result<StreamMetrics, ClusterError> {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.primary_metrics(stream);
            match m {
                Some(m) if done(&m) => return Ok(m),
                _ => {}
            }
            if Instant::now() >= deadline {
                let seen = match &m {
                    Some(m) => members_text(m),
                    None => "no metrics published".to_owned(),
                };
                return Err(ClusterError::Stream {
                    stream: stream.to_owned(),
                    node: 1,
                    message: format!("not {what} after {timeout:?}; the primary sees: {seen}"),
                });
            }
            std::thread::sleep(WAIT_POLL);
        }
    }

    /// Stops every node and waits for its threads.
    pub fn shutdown(self) -> StoppedCluster {
        for s in self.servers.into_iter().flatten() {
            s.shutdown();
        }
        StoppedCluster {
            configs: self.configs,
        }
    }
}

fn members_text(m: &StreamMetrics) -> String {
    let mut s = format!("commit lsn {}; members:", m.commit_lsn);
    for x in &m.members {
        let _ = write!(
            s,
            " node {} (connected {}, in sync {}, durable lsn {})",
            x.id, x.connected, x.in_sync, x.durable_lsn
        );
    }
    s
}

/// The files of a cluster whose nodes have stopped.
pub struct StoppedCluster {
    configs: Vec<Config>,
}

impl StoppedCluster {
    /// Checks that records `1..=last_lsn` of `stream` are identical (LSN, epoch and
    /// payload) on every node, reading every log from disk with its checksums verified.
    /// This is invariant 2 of DESIGN.md: committed prefixes are byte-identical.
    pub fn check_identical_prefix(&self, stream: &str, last_lsn: u64) -> Result<(), ClusterError> {
        let fail = |node: NodeId, message: String| ClusterError::Stream {
            stream: stream.to_owned(),
            node,
            message,
        };
        let mut logs = Vec::with_capacity(self.configs.len());
        for cfg in &self.configs {
            let dir = stream_dir(cfg, stream);
            let log = Log::open(&dir, cfg.profile.log_options(), 0)
                .map_err(|e| fail(cfg.node_id, format!("open the log: {e}")))?;
            if log.durable_lsn() < last_lsn {
                return Err(fail(
                    cfg.node_id,
                    format!(
                        "the log ends at lsn {}, before the commit lsn {last_lsn}",
                        log.durable_lsn()
                    ),
                ));
            }
            logs.push((cfg.node_id, log));
        }
        let mut from = 1;
        while from <= last_lsn {
            let n = COMPARE_CHUNK_RECORDS.min((last_lsn - from + 1) as usize);
            let mut reference: Option<(NodeId, Vec<Record>)> = None;
            for (node, log) in &mut logs {
                let records = log
                    .read(from, n, usize::MAX)
                    .map_err(|e| fail(*node, format!("read from lsn {from}: {e}")))?;
                if records.len() != n {
                    return Err(fail(
                        *node,
                        format!("{} records from lsn {from}, {n} expected", records.len()),
                    ));
                }
                match &reference {
                    None => reference = Some((*node, records)),
                    Some((first, want)) => {
                        if let Some((a, b)) = want.iter().zip(&records).find(|(a, b)| a != b) {
                            return Err(fail(
                                *node,
                                format!(
                                    "lsn {} differs from node {first}: epoch {} and {} payload \
                                     bytes here, epoch {} and {} bytes there{}",
                                    a.lsn,
                                    b.epoch,
                                    b.payload.len(),
                                    a.epoch,
                                    a.payload.len(),
                                    if a.payload == b.payload {
                                        " (same payload)"
                                    } else {
                                        ""
                                    }
                                ),
                            ));
                        }
                    }
                }
            }
            from += n as u64;
        }
        Ok(())
    }
}

impl StoppedCluster {
    /// Calls `f` with the LSN and payload of records `1..=last_lsn` of `stream` on node
    /// `node`, in order, from its log on disk (checksums verified).
    pub fn for_each_record(
        &self,
        stream: &str,
        node: NodeId,
        last_lsn: u64,
        mut f: impl FnMut(u64, &[u8]) -> Result<(), String>,
    ) -> Result<(), ClusterError> {
        let fail = |message: String| ClusterError::Stream {
            stream: stream.to_owned(),
            node,
            message,
        };
        let cfg = (self.configs.iter())
            .find(|c| c.node_id == node)
            .ok_or_else(|| fail("no such node".into()))?;
        let mut log = Log::open(&stream_dir(cfg, stream), cfg.profile.log_options(), 0)
            .map_err(|e| fail(format!("open the log: {e}")))?;
        let mut from = 1;
        while from <= last_lsn {
            let n = COMPARE_CHUNK_RECORDS.min((last_lsn - from + 1) as usize);
            let records = log
                .read(from, n, usize::MAX)
                .map_err(|e| fail(format!("read from lsn {from}: {e}")))?;
            if records.is_empty() {
                return Err(fail(format!("no record at lsn {from}")));
            }
            for r in &records {
                f(r.lsn, &r.payload).map_err(|e| fail(format!("lsn {}: {e}", r.lsn)))?;
            }
            from += records.len() as u64;
        }
        Ok(())
    }
}

fn stream_dir(cfg: &Config, stream: &str) -> PathBuf {
    cfg.data_dir.join("streams").join(stream)
}

fn try_start(
    dir: &Path,
    nodes: usize,
    streams: &[StreamSpec],
    profile: Option<&Path>,
) -> Result<LocalCluster, ClusterError> {
    let ports = kit::free_ports(nodes).map_err(|source| ClusterError::Io {
        op: "find free ports on",
        path: PathBuf::from("127.0.0.1"),
        source,
    })?;
    let addrs: Vec<String> = ports.iter().copied().map(kit::loopback).collect();
    let mut sections = String::new();
    for s in streams {
        let _ = write!(
            sections,
            "[[streams]]\nname = \"{}\"\nprimary = 1\nmode = \"{}\"\n{}\n",
            s.name, s.mode, s.toml
        );
    }
    let mut configs = Vec::with_capacity(nodes);
    for i in 0..nodes {
        let node = i as NodeId + 1;
        // One shard per node: the nodes share this machine's cores.
        let mut toml = kit::NodeToml::new(i + 1, &addrs);
        if let Some(p) = profile {
            let name = p
                .file_name()
                .expect("a profile file name")
                .to_string_lossy();
            toml.keys = format!("profile = \"{name}\"\n");
        }
        toml.sections = sections.clone();
        let text = toml.text();
        write_file(&dir.join(format!("node{node}.toml")), &text)?;
        let cfg =
            Config::parse(&text, dir).map_err(|message| ClusterError::Config { node, message })?;
        configs.push(cfg);
    }
    let cores = lockstep_sys::cpu::available_cores();
    let mut servers = Vec::with_capacity(nodes);
    for cfg in &configs {
        let node = cfg.node_id;
        let core = cores.get((node as usize - 1) % cores.len().max(1)).copied();
        servers.push(Some(start_on(cfg.clone(), core)?));
    }
    Ok(LocalCluster {
        servers,
        configs,
        addrs,
    })
}

/// Starts a node from a thread that may run on `core` only. A shard pins itself to a
/// core of the CPU set of the thread that started its server, so nodes started from one
/// thread would all put their shards on the same first core; started this way, the
/// nodes take the cores in turn, as separate machines would have their own.
fn start_on(cfg: Config, core: Option<usize>) -> Result<Server, ClusterError> {
    let node = cfg.node_id;
    let start = move || {
        if let Some(core) = core {
            lockstep_sys::cpu::pin_current_thread(core).map_err(|e| ClusterError::Place {
                node,
                core,
                reason: e.to_string(),
            })?;
        }
        Server::start(cfg).map_err(|source| ClusterError::Start { node, source })
    };
    std::thread::Builder::new()
        .name(format!("lockstep-start-node-{node}"))
        .spawn(start)
        .map_err(|source| ClusterError::Thread { node, source })?
        .join()
        .expect("starting a node does not panic")
}

fn write_file(path: &Path, text: &str) -> Result<(), ClusterError> {
    std::fs::write(path, text).map_err(|source| ClusterError::Io {
        op: "write",
        path: path.to_path_buf(),
        source,
    })
}
