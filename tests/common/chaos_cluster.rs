//! Clusters of `lockstepd` processes under their controller with a fault-injecting
//! [`Proxy`] between every ordered pair of nodes, for the fault runs of `tests/chaos.rs`.
//!
//! Node i reaches node j only through the proxy P(i→j): node i's configuration lists
//! the proxies' addresses as the other nodes' `addr`, while every node listens on its
//! own address (which clients use directly). Faults of the links between nodes are
//! therefore set per direction of each pair, and a node's faults are those of every
//! proxy it sends through or receives through.
//!
//! Clean-up: dropping a [`ChaosCluster`] kills (SIGKILL, which also ends a stopped
//! process) and reaps every node, then stops the proxies. A test that panics gets the
//! tail of every node's stderr, and keeps the data with `LOCKSTEP_KEEP_DATA=1`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use lockstep::client::{Client, ClientOptions};
use lockstep::proxy::{FaultControl, Proxy};

/// The stream of every cluster here.
pub const STREAM: &str = "s";
/// How long a node may take to answer its first client after a (re)start.
const READY_WITHIN: Duration = Duration::from_secs(20);
/// How long a node may take to stop after SIGTERM.
const STOP_WITHIN: Duration = Duration::from_secs(15);

/// One `lockstepd` process.
struct Node {
    child: Option<Child>,
    stopped: bool,
    stderr: PathBuf,
    starts: u32,
}

pub struct ChaosCluster {
    pub dir: Option<tempfile::TempDir>,
    pub nodes: usize,
    /// Listen address of node n at index n - 1.
    pub addrs: Vec<String>,
    configs: Vec<PathBuf>,
    /// P(i→j) by (i, j), 1-based.
    proxies: BTreeMap<(usize, usize), Proxy>,
    procs: Vec<Node>,
    lockstepd: PathBuf,
}

/// Short client timeouts, so that a dead or stopped node costs little time.
pub fn chaos_client_options() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(2),
        reply_grace: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(500),
        outstanding_max: 64,
        redirects_max: 4,
    }
}

impl ChaosCluster {
    /// Writes the configuration of a cluster of `nodes` nodes (node 1 the first primary
    /// of stream "s", every other node in its sync set, the controller on every node),
    /// starts the proxies and every node, and waits until each answers a client.
    ///
    /// Every link between nodes proves the cluster secret; with `retain` the stream
    /// deletes old segments (`retain_segments`), so members that were away are started
    /// over after the primary's first retained record.
    pub fn start(
        lockstepd: PathBuf,
        nodes: usize,
        segment_bytes: u64,
        retain: Option<usize>,
    ) -> ChaosCluster {
        ChaosCluster::start_with(lockstepd, nodes, segment_bytes, retain, &|_| String::new())
    }

    /// As [`ChaosCluster::start`], with `stream_toml(n)` (more keys of the stream's
    /// table) in node n's configuration.
    pub fn start_with(
        lockstepd: PathBuf,
        nodes: usize,
        segment_bytes: u64,
        retain: Option<usize>,
        stream_toml: &dyn Fn(usize) -> String,
    ) -> ChaosCluster {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "chaos-cluster-secret-0123456789\n").expect("write secret");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600))
                .expect("chmod secret");
        }
        std::fs::write(
            dir.path().join("profile.toml"),
            format!(
                "description = \"chaos runs: small segments\"\n[log]\nsegment_bytes = {segment_bytes}\n"
            ),
        )
        .expect("write profile");
        let ports = super::procs::free_ports(nodes);
        let listen: Vec<SocketAddr> = ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}").parse().expect("loopback address"))
            .collect();
        let mut proxies = BTreeMap::new();
        for i in 1..=nodes {
            for j in 1..=nodes {
                if i != j {
                    let p = Proxy::start("127.0.0.1:0".parse().unwrap(), listen[j - 1])
                        .unwrap_or_else(|e| panic!("start proxy {i}->{j}: {e}"));
                    proxies.insert((i, j), p);
                }
            }
        }
        let configs = (1..=nodes)
            .map(|i| {
                let mut toml = lockstep::kit::NodeToml {
                    node: i,
                    listen: listen[i - 1].to_string(),
                    ..Default::default()
                };
                toml.keys = "profile = \"profile.toml\"\nsecret_file = \"secret\"\n".into();
                // Every other node is dialled through the proxy of the pair.
                toml.nodes = (1..=nodes)
                    .map(|j| {
                        let addr = if i == j {
                            listen[j - 1]
                        } else {
                            proxies[&(i, j)].addr()
                        };
                        (j, addr.to_string())
                    })
                    .collect();
                let retain = retain.map_or(String::new(), |n| format!("retain_segments = {n}\n"));
                toml.sections = format!(
                    "[[streams]]\nname = \"{STREAM}\"\nprimary = 1\nmode = \"strong\"\n\
                     ack_timeout_ms = 300\n{retain}{}[control]\n",
                    stream_toml(i)
                );
                let text = toml.text();
                let path = dir.path().join(format!("node{i}.toml"));
                std::fs::write(&path, text).expect("write config");
                path
            })
            .collect();
        let procs = (1..=nodes)
            .map(|n| Node {
                child: None,
                stopped: false,
                stderr: dir.path().join(format!("node{n}.stderr")),
                starts: 0,
            })
            .collect();
        let mut c = ChaosCluster {
            dir: Some(dir),
            nodes,
            addrs: listen.iter().map(ToString::to_string).collect(),
            configs,
            proxies,
            procs,
            lockstepd,
        };
        for n in 1..=nodes {
            c.spawn(n);
        }
        for n in 1..=nodes {
            c.wait_ready(n);
        }
        c
    }

    pub fn path(&self) -> PathBuf {
        self.dir.as_ref().expect("data kept").path().to_path_buf()
    }

    /// The log directory of stream "s" on node `n`.
    pub fn stream_dir(&self, n: usize) -> PathBuf {
        self.path()
            .join(format!("node{n}"))
            .join("streams")
            .join(STREAM)
    }

    /// The proxy node `from` reaches node `to` through.
    pub fn link(&self, from: usize, to: usize) -> FaultControl {
        self.proxies[&(from, to)].control()
    }

    /// Every proxy that carries bytes from or to node `n`: (P(n→j), P(j→n)) for each j.
    pub fn links_of(&self, n: usize) -> Vec<FaultControl> {
        (1..=self.nodes)
            .filter(|&j| j != n)
            .flat_map(|j| [self.link(n, j), self.link(j, n)])
            .collect()
    }

    /// Lifts every proxy fault (held bytes are delivered).
    pub fn heal_all(&self) {
        for p in self.proxies.values() {
            p.control().heal();
        }
    }

    fn spawn(&mut self, n: usize) {
        let node = &mut self.procs[n - 1];
        assert!(node.child.is_none(), "node {n} is already running");
        node.starts += 1;
        node.child = Some(super::procs::spawn_lockstepd(
            &self.lockstepd,
            &self.configs[n - 1],
            &node.stderr,
            n,
            node.starts,
        ));
        node.stopped = false;
    }

    /// Waits until node `n` welcomes a client.
    pub fn wait_ready(&mut self, n: usize) {
        let mut opts = chaos_client_options();
        opts.connect_timeout = Duration::from_secs(1);
        let child = self.procs[n - 1].child.as_mut().expect("node running");
        super::procs::wait_welcomes(child, n, &self.addrs[n - 1], &opts, READY_WITHIN);
    }

    /// Panics if node `n` exited by itself (a crash or a failed start).
    pub fn assert_alive(&mut self, n: usize) {
        super::procs::assert_running(self.procs[n - 1].child.as_mut().expect("node running"), n);
    }

    pub fn is_stopped(&self, n: usize) -> bool {
        self.procs[n - 1].stopped
    }

    fn signal(&self, n: usize, signal: &str) {
        let pid = self.procs[n - 1].child.as_ref().expect("node running").id();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} node {n}: {status}");
    }

    /// SIGSTOP: node `n` freezes with its sockets open.
    pub fn sigstop(&mut self, n: usize) {
        self.assert_alive(n);
        self.signal(n, "STOP");
        self.procs[n - 1].stopped = true;
    }

    pub fn sigcont(&mut self, n: usize) {
        self.signal(n, "CONT");
        self.procs[n - 1].stopped = false;
    }

    /// SIGKILL wherever node `n` is, and reap it.
    pub fn kill9(&mut self, n: usize) {
        self.assert_alive(n);
        let mut child = self.procs[n - 1].child.take().expect("node running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        self.procs[n - 1].stopped = false;
    }

    /// Starts node `n` again after [`ChaosCluster::kill9`] and waits for it to answer.
    pub fn restart(&mut self, n: usize) {
        self.spawn(n);
        self.wait_ready(n);
    }

    /// The status of stream "s" as node `n` sees it (its role, epoch, and as primary
    /// its members); `None` if the node does not answer within a second.
    pub fn status(&self, n: usize) -> Option<serde_json::Value> {
        if self.procs[n - 1].child.is_none() || self.procs[n - 1].stopped {
            return None;
        }
        let mut opts = chaos_client_options();
        opts.timeout = Duration::from_millis(500);
        let mut c = Client::connect(&[&self.addrs[n - 1]], STREAM, opts).ok()?;
        c.status().ok()
    }

    /// The node whose status says it is the primary, if one says so now.
    pub fn primary(&self) -> Option<usize> {
        (1..=self.nodes).find(|&n| self.status(n).is_some_and(|s| s["role"] == "primary"))
    }

    /// Stops every node with SIGTERM and waits for each to exit cleanly; panics if one
    /// fails to, or if a node's stderr shows a panic.
    pub fn stop_all(&mut self) {
        for n in 1..=self.nodes {
            if self.procs[n - 1].stopped {
                self.sigcont(n);
            }
            if self.procs[n - 1].child.is_some() {
                self.assert_alive(n);
                self.signal(n, "TERM");
            }
        }
        for n in 1..=self.nodes {
            let Some(child) = self.procs[n - 1].child.take() else {
                continue;
            };
            let status = super::procs::reap_stopped(child, n, STOP_WITHIN);
            assert!(status.success(), "node {n} stopped with {status}");
        }
        for n in 1..=self.nodes {
            let stderr = self.stderr(n);
            if let Some(at) = stderr.find("panicked at") {
                panic!(
                    "node {n} panicked: {}",
                    stderr[at..].lines().take(3).collect::<Vec<_>>().join(" | ")
                );
            }
        }
    }

    /// What node `n` wrote to stderr, over all its starts.
    pub fn stderr(&self, n: usize) -> String {
        std::fs::read_to_string(&self.procs[n - 1].stderr).unwrap_or_default()
    }

    /// (epoch, node, from lsn) of every promotion the nodes announced on stderr: a
    /// shard's log line `... lockstep::server::shard: primary of epoch E from lsn L
    /// shard=.. stream=STREAM`.
    pub fn promotions(&self) -> Vec<(u64, usize, u64)> {
        let marker = "lockstep::server::shard: primary of epoch ";
        let field = format!("stream={STREAM}");
        let mut out = Vec::new();
        for n in 1..=self.nodes {
            for line in self.stderr(n).lines() {
                let Some((_, rest)) = line.split_once(marker) else {
                    continue;
                };
                if !rest.split_whitespace().any(|w| w == field) {
                    continue;
                }
                let mut words = rest.split_whitespace();
                let epoch = words.next().and_then(|w| w.parse().ok());
                let lsn = words.nth(2).and_then(|w| w.parse().ok());
                match (epoch, lsn) {
                    (Some(e), Some(l)) => out.push((e, n, l)),
                    _ => panic!("node {n}: unexpected promotion line {line:?}"),
                }
            }
        }
        out.sort_unstable();
        out
    }
}

impl Drop for ChaosCluster {
    fn drop(&mut self) {
        for node in &mut self.procs {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            for n in 1..=self.nodes {
                let text = self.stderr(n);
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(40)..];
                eprintln!(
                    "---- node {n} stderr (last {} of {} lines) ----\n{}",
                    tail.len(),
                    lines.len(),
                    tail.join("\n")
                );
            }
            if std::env::var_os("LOCKSTEP_KEEP_DATA").is_some()
                && let Some(dir) = self.dir.take()
            {
                eprintln!("---- data kept in {} ----", dir.keep().display());
            }
        }
        // The proxies drop after the nodes, so no node sees its links cut first.
        self.proxies.clear();
    }
}
