//! A lockstep cluster on loopback inside the benchmark's process: one
//! [`Server`] per node, each with one shard, node 1 the primary of every stream.
//!
//! Placement: a shard pins itself to a core chosen from the CPU set of the thread that
//! started its server (its first core, for shard 0). Started from this process's main
//! thread, every node's shard would land on the same first core. The cluster therefore
//! starts each node from a helper thread whose CPU set it chose (see [`Placement`]), and
//! the node's threads (shard, acceptor, dialers) inherit that set.
//!
//! Ports are picked by binding port 0 and releasing it; another process can take one in
//! between, so a failed bind is retried with new ports a bounded number of times.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lockstep::profile::HardwareProfile;
use lockstep::server::config::Config;
use lockstep::server::{Server, ServerError};
use lockstep::wire::Mode;

use crate::Error;

/// Attempts at starting the cluster when a port was taken in between.
const START_ATTEMPTS: usize = 4;

/// Where the nodes' threads run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Placement {
    /// The primary on `primary`, every secondary on `secondaries`.
    Cores { primary: usize, secondaries: usize },
    /// As `Server::start` places them when started from the benchmark's own thread:
    /// every node's shard on the first core of the process's CPU set.
    ServerDefault,
}

impl Placement {
    pub fn label(&self) -> String {
        match self {
            Placement::Cores {
                primary,
                secondaries,
            } => format!("primary on core {primary}, secondaries on core {secondaries}"),
            Placement::ServerDefault => "every node's shard on the first core (Server::start's \
                                         own pinning)"
                .into(),
        }
    }

    fn core_of(&self, node: usize) -> Option<usize> {
        match *self {
            Placement::Cores { primary, .. } if node == 1 => Some(primary),
            Placement::Cores { secondaries, .. } => Some(secondaries),
            Placement::ServerDefault => None,
        }
    }
}

/// A running cluster.
pub struct Cluster {
    servers: Vec<Server>,
    addrs: Vec<String>,
    streams: Vec<String>,
}

/// What a cluster has beyond its streams' modes.
#[derive(Clone, Debug, Default)]
pub struct Extras {
    /// The value of every stream's `front` key (a TOML inline table): the stream's
    /// primary replicates that database (see `lockstep::front`).
    pub front: Option<String>,
    /// Node 1 serves its admin endpoint (metrics, `/fronts`) on a loopback port.
    pub admin: bool,
}

impl Cluster {
    /// Starts `nodes` nodes under `dir` (node N keeps its data in `dir/nodeN`) with one
    /// stream per entry of `streams`, named by its mode, primary on node 1, sync set
    /// every other node. `profile` is a hardware profile file for every node.
    pub fn start(
        dir: &Path,
        nodes: usize,
        streams: &[Mode],
        profile: Option<&Path>,
        placement: Placement,
    ) -> Result<Cluster, Error> {
        Cluster::start_with(dir, nodes, streams, profile, placement, &Extras::default())
    }

    /// As [`Cluster::start`], with `extras`.
    pub fn start_with(
        dir: &Path,
        nodes: usize,
        streams: &[Mode],
        profile: Option<&Path>,
        placement: Placement,
        extras: &Extras,
    ) -> Result<Cluster, Error> {
        assert!(nodes >= 2);
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let ports = lockstep::kit::free_ports(nodes)?;
            let configs: Vec<Config> = (1..=nodes)
                .map(|n| {
                    let text = config_text(n, &ports, streams, profile, extras);
                    std::fs::write(dir.join(format!("node{n}.toml")), &text)
                        .map_err(|e| format!("write node{n}.toml in {}: {e}", dir.display()))?;
                    Config::parse(&text, dir)
                        .map_err(|e| format!("node {n} configuration: {e}").into())
                })
                .collect::<Result<_, Error>>()?;
            let mut servers = Vec::with_capacity(nodes);
            let mut bind_failed = None;
            for (i, cfg) in configs.into_iter().enumerate() {
                match start_on(cfg, placement.core_of(i + 1)) {
                    Ok(s) => servers.push(s),
                    Err(Started::BindFailed(why)) => {
                        bind_failed = Some(why);
                        break;
                    }
                    Err(Started::Failed(why)) => {
                        return Err(format!("start node {}: {why}", i + 1).into());
                    }
                }
            }
            match bind_failed {
                None => {
                    return Ok(Cluster {
                        servers,
                        addrs: ports.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
                        streams: streams.iter().map(|m| m.as_str().to_string()).collect(),
                    });
                }
                Some(why) => {
                    for s in servers {
                        s.shutdown();
                    }
                    // The data directories are reused: the new servers recover them.
                    last = why;
                }
            }
        }
        Err(format!("start the cluster: ports kept being taken; the last error: {last}").into())
    }

    /// Every node's client address, the primary's first.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// Node 1's admin endpoint, if [`Extras::admin`] asked for one.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.servers[0].admin_addr()
    }

    /// Waits until every stream's primary has every member connected and in sync.
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let metrics = self.servers[0].metrics();
            let ready = self.streams.iter().all(|name| {
                metrics.iter().any(|m| {
                    m.stream == *name
                        && m.role == "primary"
                        && m.members.len() + 1 == self.servers.len()
                        && m.members.iter().all(|x| x.connected && x.in_sync)
                })
            });
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let mut state = String::new();
                for m in &metrics {
                    let _ = write!(state, "\n  stream {} ({}): members", m.stream, m.role);
                    for x in &m.members {
                        let _ = write!(
                            state,
                            " {}{}{}",
                            x.id,
                            if x.connected { "" } else { " (not connected)" },
                            if x.in_sync { "" } else { " (not in sync)" },
                        );
                    }
                }
                return Err(format!(
                    "the cluster was not ready within {timeout:?}; the primary reports:{state}"
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until no log of this process is preparing a spare segment (a thread named
    /// `lockstep-segment-prep` zeroing the next segment file). Every log prepares one
    /// when it opens and after each rollover: a start-up of three nodes × three streams
    /// writes hundreds of MiB of zeros in the background, which would land on the first
    /// floors. There is no accessor for this; the thread names in /proc are the only
    /// sign. Returns how long it waited.
    pub fn wait_segments_prepared(&self, timeout: Duration) -> Result<Duration, Error> {
        let started = Instant::now();
        loop {
            let busy = preparing_threads()?;
            if busy == 0 {
                return Ok(started.elapsed());
            }
            if started.elapsed() >= timeout {
                return Err(
                    format!("{busy} segment preparations still running after {timeout:?}").into(),
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A stream that failed or changed its sync set on any node is a real error of the
    /// run, not a slow result.
    pub fn check(&self) -> Result<(), Error> {
        for (i, s) in self.servers.iter().enumerate() {
            for m in s.metrics() {
                if let Some(why) = &m.failure {
                    return Err(format!("node {} stream {} failed: {why}", i + 1, m.stream).into());
                }
                if m.degraded || m.in_doubt > 0 {
                    return Err(format!(
                        "node {} stream {}: degraded {}, {} commits in doubt",
                        i + 1,
                        m.stream,
                        m.degraded,
                        m.in_doubt
                    )
                    .into());
                }
            }
        }
        Ok(())
    }

    /// Commit-phase histograms of the primary's streams, as last published.
    pub fn primary_metrics(&self) -> Vec<lockstep::server::metrics::StreamMetrics> {
        self.servers[0].metrics()
    }

    pub fn shutdown(self) {
        for s in self.servers {
            s.shutdown();
        }
    }
}

/// Threads of this process that prepare a log segment (their names are cut to the
/// kernel's 15 characters).
fn preparing_threads() -> Result<usize, Error> {
    const NAME: &str = "lockstep-segment-prep";
    let tasks =
        std::fs::read_dir("/proc/self/task").map_err(|e| format!("list /proc/self/task: {e}"))?;
    let mut n = 0;
    for t in tasks {
        let Ok(t) = t else { continue };
        // A thread may end between the listing and the read.
        if let Ok(comm) = std::fs::read_to_string(t.path().join("comm")) {
            let comm = comm.trim_end();
            n += usize::from(!comm.is_empty() && NAME.starts_with(comm));
        }
    }
    Ok(n)
}

enum Started {
    BindFailed(String),
    Failed(String),
}

/// Starts one node from a thread pinned to `core` (see the module docs).
fn start_on(cfg: Config, core: Option<usize>) -> Result<Server, Started> {
    let start = move || {
        if let Some(core) = core {
            lockstep_sys::cpu::pin_current_thread(core)
                .map_err(|e| Started::Failed(format!("place the node: {e}")))?;
        }
        Server::start(cfg).map_err(|e| match e {
            ServerError::Bind { .. } => Started::BindFailed(e.to_string()),
            e => Started::Failed(e.to_string()),
        })
    };
    std::thread::Builder::new()
        .name("bench-start-node".into())
        .spawn(start)
        .map_err(|e| Started::Failed(format!("start a thread: {e}")))?
        .join()
        .map_err(|_| Started::Failed("the starting thread panicked".into()))?
}

/// The configuration file of node `n` (1-based).
fn config_text(
    n: usize,
    ports: &[u16],
    streams: &[Mode],
    profile: Option<&Path>,
    extras: &Extras,
) -> String {
    let addrs: Vec<String> = ports.iter().copied().map(lockstep::kit::loopback).collect();
    let mut toml = lockstep::kit::NodeToml::new(n, &addrs);
    if extras.admin && n == 1 {
        // Port 0: the node binds a free one and reports it (Server::admin_addr).
        toml.admin = Some("127.0.0.1:0".into());
    }
    if let Some(p) = profile {
        toml.keys = format!("profile = {}\n", toml_string(p));
    }
    for m in streams {
        // Sync set and k are the defaults: every other node, every one of them.
        let _ = writeln!(
            toml.sections,
            "[[streams]]\nname = \"{0}\"\nprimary = 1\nmode = \"{0}\"\n",
            m.as_str()
        );
        if let Some(front) = &extras.front {
            let _ = writeln!(toml.sections, "front = {front}");
        }
    }
    toml.text()
}

fn toml_string(p: &Path) -> String {
    let s = p.display().to_string();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Segment size of a quick run's logs: every node prepares one per stream at start,
/// and the default size would make start-up the longest part of a quick run.
pub const QUICK_SEGMENT_BYTES: u64 = 4 << 20;

/// The hardware profile of the nodes: `--profile` if given, else for a quick run one
/// with small segments written into `dir`, else the default. Returns its path (for
/// the nodes' configurations) and its contents.
pub fn node_profile(
    given: Option<&Path>,
    quick: bool,
    dir: &Path,
    command: &str,
) -> Result<(Option<PathBuf>, HardwareProfile), Error> {
    let path = match (given, quick) {
        (Some(p), _) => Some(absolute(p)?),
        (None, true) => {
            let p = dir.join("quick-profile.toml");
            std::fs::write(
                &p,
                format!(
                    "description = \"lockstep-bench {command} --quick\"\n\n[log]\n\
                     segment_bytes = {QUICK_SEGMENT_BYTES}\n"
                ),
            )
            .map_err(|e| format!("write {}: {e}", p.display()))?;
            Some(p)
        }
        (None, false) => None,
    };
    let profile = match &path {
        Some(p) => HardwareProfile::load(p)?,
        None => HardwareProfile::default(),
    };
    Ok((path, profile))
}

/// Absolute form of `p`, so a configuration in another directory finds it.
pub fn absolute(p: &Path) -> Result<PathBuf, Error> {
    std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_parse() {
        let ports = [7001, 7002, 7003];
        let modes = [Mode::Strong, Mode::Semi, Mode::Async];
        for n in 1..=3 {
            let cfg = Config::parse(
                &config_text(
                    n,
                    &ports,
                    &modes,
                    Some(Path::new("/p/vm.toml")),
                    &Extras::default(),
                ),
                Path::new("/base"),
            );
            // The profile does not exist here: parsing stops there, after the rest.
            let e = cfg.unwrap_err();
            assert!(e.contains("vm.toml"), "{e}");
            let cfg = Config::parse(
                &config_text(n, &ports, &modes, None, &Extras::default()),
                Path::new("/b"),
            )
            .expect("parses");
            assert_eq!(cfg.node_id, n as u32);
            assert_eq!(cfg.shards, 1);
            assert_eq!(cfg.streams.len(), 3);
            for (s, m) in cfg.streams.iter().zip(modes) {
                assert_eq!(s.name, m.as_str());
                assert_eq!(s.settings.mode, m);
                assert_eq!(s.primary, 1);
                assert_eq!(s.sync_set.len(), 2);
                assert_eq!(s.settings.k(2), 2);
            }
        }
    }

    #[test]
    fn a_front_and_an_admin_endpoint_are_configured() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("front.password");
        std::fs::write(&password, "secret\n").unwrap();
        std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
        let extras = Extras {
            front: Some(format!(
                "{{ kind = \"mariadb\", primary = \"127.0.0.1:3306\", user = \"lockstep\", \
                 password_file = {} }}",
                toml_string(&password)
            )),
            admin: true,
        };
        let ports = [7001, 7002, 7003];
        for n in 1..=3 {
            let text = config_text(n, &ports, &[Mode::Strong], None, &extras);
            let cfg = Config::parse(&text, dir.path()).expect("parses");
            // Only node 1 serves an admin endpoint, on a port of its choosing.
            assert_eq!(cfg.admin.is_some(), n == 1, "node {n}");
            let front = cfg.streams[0].front.as_ref().expect("a front");
            assert_eq!(front.upstream, "127.0.0.1:3306");
            assert_eq!(front.password.as_deref(), Some(&b"secret"[..]));
        }
    }
}
