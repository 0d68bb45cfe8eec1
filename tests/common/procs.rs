//! Three-node clusters on loopback for the replication fault tests: configuration
//! files, data directories, nodes run as `lockstepd` child processes (killed with
//! SIGKILL, stopped with SIGSTOP, restarted) or as servers in this process, a client
//! workload that records every acknowledged commit, and read-only views of the nodes'
//! logs once the nodes are gone.
//!
//! Clean-up: [`Procs`] kills (SIGKILL) and reaps every child it started when it is
//! dropped, a test that panics included, and then prints the tail of every node's
//! stderr so that the failure shows what the nodes said (and keeps the data
//! directories if `LOCKSTEP_KEEP_DATA` is set). Every wait here is bounded.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lockstep::client::{Client, ClientError, ClientOptions};
use lockstep::inspect::{self, VerifyReport};
use lockstep::server::Server;
use lockstep::server::config::Config;
use lockstep::wire::RequestId;

/// The stream every cluster here serves; node 1 is its primary.
pub const STREAM: &str = "s";
/// Nodes of every cluster here.
pub const NODES: usize = 3;
/// Small segments, so that workloads of a few megabytes roll over to new segment files
/// (and starting a node does not zero 64 MiB per stream).
pub const SEGMENT_BYTES: u64 = 4 << 20;

/// The peer transport the cluster runs (`LOCKSTEP_TEST_TRANSPORT`: `tcp`, `rdma-emu`);
/// unset, the profile leaves the node's default. With it set, members count as in sync
/// only once their links run on it.
pub fn transport() -> Option<String> {
    std::env::var("LOCKSTEP_TEST_TRANSPORT")
        .ok()
        .filter(|t| !t.is_empty())
}

/// The segment size of the clusters: [`SEGMENT_BYTES`], or `LOCKSTEP_TEST_SEGMENT_BYTES`
/// (to look at a run with fewer roll-overs).
pub fn segment_bytes() -> u64 {
    std::env::var("LOCKSTEP_TEST_SEGMENT_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SEGMENT_BYTES)
}

/// How long a node may take to answer its first client after a (re)start.
pub const READY_WITHIN: Duration = Duration::from_secs(10);
/// How long a node may take to stop after SIGTERM before it is killed.
const STOP_WITHIN: Duration = Duration::from_secs(10);
/// How long nodes in this process may take to shut down (normally milliseconds).
const STOP_IN_PROCESS_WITHIN: Duration = Duration::from_secs(3);

/// Tests that run clusters take this lock so that no two clusters compete for the
/// machine's cores (timeouts in the tests are sized for one cluster at a time).
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A seeded xorshift generator: the seed is printed by the tests so a run replays.
pub struct Rng(u64);

impl Rng {
    /// The seed from the environment variable `var`, or else from the clock.
    pub fn from_env(var: &str) -> (Rng, u64) {
        let seed = std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("clock after 1970")
                    .as_nanos() as u64
            });
        (Rng::new(seed), seed)
    }

    pub fn new(seed: u64) -> Rng {
        // Scrambled so that nearby seeds give unrelated streams; never zero.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }
}

/// The files of a cluster: one configuration per node, a shared hardware profile, and
/// each node's data directory `node{n}` next to them.
pub struct Layout {
    pub dir: tempfile::TempDir,
    /// Configuration file of node n at index n - 1.
    pub configs: Vec<PathBuf>,
    /// Listen address of node n at index n - 1.
    pub addrs: Vec<String>,
}

impl Layout {
    /// Writes the configuration of a 3-node cluster whose node 1 is the primary of
    /// stream "s"; `stream_toml` holds further keys of the stream.
    pub fn new(stream_toml: &str) -> Layout {
        Layout::new_per_node(&|_| stream_toml.to_owned())
    }

    /// As [`Layout::new`], with the stream's further keys made for each node `n`.
    pub fn new_per_node(stream_toml: &dyn Fn(usize) -> String) -> Layout {
        Layout::new_with(&|_| String::new(), stream_toml)
    }

    /// As [`Layout::new_per_node`], with more top-level keys of node `n` (`admin`).
    pub fn new_with(
        keys: &dyn Fn(usize) -> String,
        stream_toml: &dyn Fn(usize) -> String,
    ) -> Layout {
        Layout::new_on(transport().as_deref(), keys, stream_toml)
    }

    /// As [`Layout::new_with`], the peer links on `transport` (`None`: the node's
    /// default) whatever `LOCKSTEP_TEST_TRANSPORT` says.
    pub fn new_on(
        transport: Option<&str>,
        keys: &dyn Fn(usize) -> String,
        stream_toml: &dyn Fn(usize) -> String,
    ) -> Layout {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
        std::fs::write(
            dir.path().join("profile.toml"),
            format!(
                "description = \"replication fault tests: small segments\"\n{}\
                 [log]\nsegment_bytes = {}\n",
                transport.map_or(String::new(), |t| format!("transport = \"{t}\"\n")),
                segment_bytes()
            ),
        )
        .expect("write profile");
        let ports = free_ports(NODES);
        let addrs: Vec<String> = ports.iter().copied().map(lockstep::kit::loopback).collect();
        let configs = (1..=NODES)
            .map(|n| {
                let mut toml = lockstep::kit::NodeToml::new(n, &addrs);
                toml.keys = format!("profile = \"profile.toml\"\n{}", keys(n));
                toml.sections = format!(
                    "[[streams]]\nname = \"{STREAM}\"\nprimary = 1\n{}\n",
                    stream_toml(n)
                );
                let text = toml.text();
                let path = dir.path().join(format!("node{n}.toml"));
                std::fs::write(&path, text).expect("write config");
                path
            })
            .collect();
        Layout {
            dir,
            configs,
            addrs,
        }
    }

    pub fn addr(&self, n: usize) -> &str {
        &self.addrs[n - 1]
    }

    pub fn config(&self, n: usize) -> Config {
        Config::load(&self.configs[n - 1]).expect("load config")
    }

    /// The log directory of stream "s" on node `n`.
    pub fn stream_dir(&self, n: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("node{n}"))
            .join("streams")
            .join(STREAM)
    }

    /// Starts every node in this process (for tests that kill nothing).
    pub fn start_in_process(&self) -> Nodes {
        let mut nodes = Nodes::default();
        for n in 1..=NODES {
            nodes.start(self, n);
        }
        nodes
    }
}

/// Nodes run in this process, by node number. Stopping is bounded: a node whose
/// threads do not stop within [`STOP_IN_PROCESS_WITHIN`] is left behind (its threads leak until
/// the test process exits) rather than hanging the test. That happens when a shard
/// thread panicked: its io_uring waits in `Drop` for polls that never complete.
#[derive(Default)]
pub struct Nodes {
    servers: Vec<Option<Server>>,
}

impl Nodes {
    /// Starts node `n` of `layout` (which must not be running here).
    pub fn start(&mut self, layout: &Layout, n: usize) {
        if self.servers.len() < n {
            self.servers.resize_with(n, || None);
        }
        assert!(self.servers[n - 1].is_none(), "node {n} is already running");
        let server =
            Server::start(layout.config(n)).unwrap_or_else(|e| panic!("start node {n}: {e}"));
        self.servers[n - 1] = Some(server);
    }

    /// Shuts node `n` down cleanly; panics if that does not finish within a bound.
    pub fn stop(&mut self, n: usize) {
        let server = self.servers[n - 1].take().expect("node running");
        assert!(
            stop_bounded(vec![server]),
            "node {n} did not stop within {STOP_IN_PROCESS_WITHIN:?}"
        );
    }

    /// Shuts every node down cleanly; panics if that does not finish within a bound.
    pub fn stop_all(&mut self) {
        let servers: Vec<Server> = self.servers.iter_mut().filter_map(Option::take).collect();
        assert!(
            stop_bounded(servers),
            "in-process nodes did not stop within {STOP_IN_PROCESS_WITHIN:?}"
        );
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        let servers: Vec<Server> = self.servers.iter_mut().filter_map(Option::take).collect();
        if !stop_bounded(servers) {
            eprintln!(
                "in-process nodes did not stop within {STOP_IN_PROCESS_WITHIN:?} (a shard thread is stuck); \
                 leaving them behind"
            );
        }
    }
}

/// Shuts `servers` down on a helper thread; false if that takes longer than
/// [`STOP_IN_PROCESS_WITHIN`] (the helper and the servers' threads are then left behind).
fn stop_bounded(servers: Vec<Server>) -> bool {
    if servers.is_empty() {
        return true;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("stop-nodes".into())
        .spawn(move || {
            for s in servers {
                s.shutdown();
            }
            let _ = tx.send(());
        });
    spawned.is_ok() && rx.recv_timeout(STOP_IN_PROCESS_WITHIN).is_ok()
}

/// Free loopback ports (see `lockstep::kit`: another process could take one in
/// between, which then fails the test loudly rather than silently).
pub fn free_ports(n: usize) -> Vec<u16> {
    lockstep::kit::free_ports(n).expect("free loopback ports")
}

/// Starts `lockstepd` (the binary `bin`) as node `n` with `config`, its stderr
/// appended to `stderr` after a line that numbers this start.
pub fn spawn_lockstepd(bin: &Path, config: &Path, stderr: &Path, n: usize, start: u32) -> Child {
    spawn_lockstepd_with(bin, config, stderr, n, start, &[])
}

/// As [`spawn_lockstepd`], with more environment variables (fault injection points).
pub fn spawn_lockstepd_with(
    bin: &Path,
    config: &Path,
    stderr: &Path,
    n: usize,
    start: u32,
    env: &[(String, String)],
) -> Child {
    let mut err = OpenOptions::new()
        .create(true)
        .append(true)
        .open(stderr)
        .expect("open stderr file");
    writeln!(err, "=== test: start #{start} of node {n} ===").expect("write stderr");
    Command::new(bin)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn lockstepd for node {n}: {e}"))
}

/// Panics if `child`, the process of node `n`, exited by itself (a crash or a failed
/// start).
pub fn assert_running(child: &mut Child, n: usize) {
    if let Some(status) = child.try_wait().expect("try_wait") {
        panic!("node {n} exited by itself with {status}");
    }
}

/// Waits until node `n` (process `child`) at `addr` welcomes a client, for at most
/// `within`; panics if the process exits meanwhile.
pub fn wait_welcomes(
    child: &mut Child,
    n: usize,
    addr: &str,
    opts: &ClientOptions,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        assert_running(child, n);
        match Client::connect(&[addr], STREAM, opts.clone()) {
            Ok(_) => return,
            Err(e) if Instant::now() >= deadline => {
                panic!("node {n} not ready within {within:?}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Waits up to `within` for `child`, node `n` sent SIGTERM, to exit; kills it and
/// panics if it does not.
pub fn reap_stopped(mut child: Child, n: usize, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("node {n} did not stop within {within:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Client options for tests: short timeouts, so that a dead node costs little time.
pub fn client_options(timeout: Duration) -> ClientOptions {
    ClientOptions {
        timeout,
        reply_grace: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(500),
        ..Default::default()
    }
}

/// Connects a client to `addr`, retrying until `within` has passed.
pub fn connect(addr: &str, opts: &ClientOptions, within: Duration) -> Result<Client, ClientError> {
    let deadline = Instant::now() + within;
    loop {
        match Client::connect(&[addr], STREAM, opts.clone()) {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// One `lockstepd` process.
struct Node {
    child: Option<Child>,
    stderr: PathBuf,
    starts: u32,
    /// More environment of its process (fault injection points).
    env: Vec<(String, String)>,
}

/// A cluster of `lockstepd` child processes. See the module docs.
pub struct Procs {
    pub layout: Layout,
    nodes: Vec<Node>,
}

impl Procs {
    /// Starts the three nodes of a new cluster and waits until each answers a client.
    pub fn start(stream_toml: &str) -> Procs {
        Procs::start_layout(Layout::new(stream_toml))
    }

    /// Starts a cluster whose stream's further keys are made for each node `n`.
    pub fn start_per_node(stream_toml: &dyn Fn(usize) -> String) -> Procs {
        Procs::start_layout(Layout::new_per_node(stream_toml))
    }

    /// Starts a cluster with more top-level keys and stream keys for each node `n`.
    pub fn start_with(
        keys: &dyn Fn(usize) -> String,
        stream_toml: &dyn Fn(usize) -> String,
    ) -> Procs {
        Procs::start_layout(Layout::new_with(keys, stream_toml))
    }

    /// Starts a cluster whose peer links run on `transport` (whatever
    /// `LOCKSTEP_TEST_TRANSPORT` says), node `n`'s process with `env[n - 1]` more.
    pub fn start_on(transport: &str, stream_toml: &str, env: &[Vec<(String, String)>]) -> Procs {
        let layout = Layout::new_on(Some(transport), &|_| String::new(), &|_| {
            stream_toml.to_owned()
        });
        Procs::start_layout_with(layout, env)
    }

    /// Starts the three nodes of `layout` (with files added beside them, such as a
    /// secret) and waits until each answers a client.
    pub fn start_layout(layout: Layout) -> Procs {
        Procs::start_layout_with(layout, &[])
    }

    /// As [`Procs::start_layout`], node `n`'s process with `env[n - 1]` more.
    fn start_layout_with(layout: Layout, env: &[Vec<(String, String)>]) -> Procs {
        let nodes = (1..=NODES)
            .map(|n| Node {
                child: None,
                stderr: layout.dir.path().join(format!("node{n}.stderr")),
                starts: 0,
                env: Vec::new(),
            })
            .collect();
        let mut p = Procs { layout, nodes };
        for (node, env) in p.nodes.iter_mut().zip(env) {
            node.env = env.clone();
        }
        for n in 1..=NODES {
            p.spawn(n);
        }
        for n in 1..=NODES {
            p.wait_ready(n);
        }
        p
    }

    pub fn addr(&self, n: usize) -> &str {
        self.layout.addr(n)
    }

    pub fn stream_dir(&self, n: usize) -> PathBuf {
        self.layout.stream_dir(n)
    }

    /// Starts node `n` (which must not be running); its stderr goes to `node{n}.stderr`,
    /// after a line that numbers the start.
    pub fn spawn(&mut self, n: usize) {
        let node = &mut self.nodes[n - 1];
        assert!(node.child.is_none(), "node {n} is already running");
        node.starts += 1;
        node.child = Some(spawn_lockstepd_with(
            Path::new(env!("CARGO_BIN_EXE_lockstepd")),
            &self.layout.configs[n - 1],
            &node.stderr,
            n,
            node.starts,
            &node.env,
        ));
    }

    /// Waits until node `n` welcomes a client (bounded by [`READY_WITHIN`]).
    pub fn wait_ready(&mut self, n: usize) {
        let addr = self.addr(n).to_string();
        let child = self.nodes[n - 1].child.as_mut().expect("node running");
        let opts = client_options(Duration::from_secs(1));
        wait_welcomes(child, n, &addr, &opts, READY_WITHIN);
    }

    /// Panics if node `n` exited by itself (a crash or a failed start).
    pub fn assert_alive(&mut self, n: usize) {
        assert_running(self.nodes[n - 1].child.as_mut().expect("node running"), n);
    }

    pub fn pid(&self, n: usize) -> u32 {
        self.nodes[n - 1].child.as_ref().expect("node running").id()
    }

    pub fn is_running(&self, n: usize) -> bool {
        self.nodes[n - 1].child.is_some()
    }

    /// Sends `signal` ("STOP", "CONT", "TERM", ...) to node `n` with kill(1).
    pub fn signal(&self, n: usize, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid(n).to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} node {n}: {status}");
    }

    /// SIGKILL: node `n` dies wherever it is, and is reaped. It must have been running.
    pub fn kill9(&mut self, n: usize) {
        self.assert_alive(n);
        let mut child = self.nodes[n - 1].child.take().expect("node running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }

    /// Starts node `n` again (after [`Procs::kill9`]) and waits for it to answer.
    pub fn restart(&mut self, n: usize) {
        self.spawn(n);
        self.wait_ready(n);
    }

    /// Stops every running node with SIGTERM (a clean shutdown) and returns how each
    /// exited; a node that does not stop within a bound is killed, and that fails the
    /// test.
    pub fn stop_all(&mut self) -> Vec<ExitStatus> {
        let mut out = Vec::new();
        for n in 1..=NODES {
            if self.nodes[n - 1].child.is_none() {
                continue;
            }
            self.assert_alive(n);
            self.signal(n, "TERM");
        }
        for n in 1..=NODES {
            let Some(child) = self.nodes[n - 1].child.take() else {
                continue;
            };
            let status = reap_stopped(child, n, STOP_WITHIN);
            assert!(status.success(), "node {n} stopped with {status}");
            // A panicking shard thread of a (debug-built) node does not end the process.
            let stderr = self.stderr(n);
            if let Some(at) = stderr.find("panicked at") {
                panic!(
                    "node {n} panicked: {}",
                    stderr[at..].lines().take(3).collect::<Vec<_>>().join(" | ")
                );
            }
            out.push(status);
        }
        out
    }

    /// What node `n` wrote to stderr, over all its starts.
    pub fn stderr(&self, n: usize) -> String {
        std::fs::read_to_string(&self.nodes[n - 1].stderr).unwrap_or_default()
    }

    /// Under an RDMA transport (`LOCKSTEP_TEST_TRANSPORT`), the primary (node 1) said
    /// that links to both members ran on it, so a run that fell back to TCP throughout
    /// does not pass for one on the ring.
    pub fn assert_links_ran_on_the_transport(&self) {
        let Some(t) = transport().filter(|t| t != "tcp") else {
            return;
        };
        let text = self.stderr(1);
        for member in 2..=NODES {
            let line = format!("link to member {member} runs on {t}");
            assert!(text.contains(&line), "node 1 never said {line:?}:\n{text}");
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                // SIGKILL also ends a stopped process.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            for n in 1..=NODES {
                let text = self.stderr(n);
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(60)..];
                eprintln!(
                    "---- node {n} stderr (last {} of {} lines, {}) ----\n{}",
                    tail.len(),
                    lines.len(),
                    self.nodes[n - 1].stderr.display(),
                    tail.join("\n")
                );
            }
            if std::env::var_os("LOCKSTEP_KEEP_DATA").is_some() {
                let kept = std::mem::replace(
                    &mut self.layout.dir,
                    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir"),
                );
                eprintln!("---- data kept in {} ----", kept.keep().display());
            } else {
                eprintln!("---- set LOCKSTEP_KEEP_DATA=1 to keep the nodes' data ----");
            }
        }
    }
}

/// The payload of the append number `counter` of a workload: the counter first (so a
/// record names the append it came from), then filler of a length that varies with it.
pub fn payload_of(counter: u64) -> Vec<u8> {
    let len = (counter.wrapping_mul(7919) % 1500) as usize;
    let mut p = counter.to_le_bytes().to_vec();
    p.extend((0..len).map(|i| (counter as usize).wrapping_mul(31).wrapping_add(i) as u8));
    p
}

/// The counter a workload payload was made from, if it is one.
pub fn counter_of(payload: &[u8]) -> Option<u64> {
    let c = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    (payload_of(c) == payload).then_some(c)
}

/// What a [`Workload`] saw.
#[derive(Debug, Default)]
pub struct WorkloadReport {
    /// (lsn, counter) of every acknowledged append.
    pub acked: Vec<(u64, u64)>,
    pub in_doubt: u64,
    /// Appends or connects that failed otherwise (node unreachable, refused).
    pub failed: u64,
    /// A few of the failure messages, for the test output.
    pub failures: Vec<String>,
    pub submitted: u64,
}

/// A client thread that appends `payload_of(0, 1, 2, ...)` one record per request
/// with up to `outstanding` requests in flight, reconnecting when its node goes away,
/// until stopped. It never resends an append.
pub struct Workload {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    handle: Option<JoinHandle<WorkloadReport>>,
}

impl Workload {
    /// The thread gives up by itself after `limit`, so a hung test still ends.
    pub fn start(addr: &str, outstanding: usize, opts: ClientOptions, limit: Duration) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let (s, a, addr) = (Arc::clone(&stop), Arc::clone(&acked), addr.to_string());
        let handle = std::thread::Builder::new()
            .name("workload".into())
            .spawn(move || run_workload(&addr, outstanding, opts, limit, &s, &a))
            .expect("spawn workload");
        Workload {
            stop,
            acked,
            handle: Some(handle),
        }
    }

    /// Appends acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    /// Waits until `more` further appends are acknowledged; false if that takes longer
    /// than `within`.
    pub fn wait_for_more(&self, more: u64, within: Duration) -> bool {
        let target = self.acked() + more;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.acked() >= target {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// Stops the thread once its outstanding requests are answered.
    pub fn stop(mut self) -> WorkloadReport {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .take()
            .expect("running")
            .join()
            .expect("the workload thread panicked")
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn fail(r: &mut WorkloadReport, e: &dyn std::fmt::Display) {
    r.failed += 1;
    if r.failures.len() < 10 {
        r.failures.push(e.to_string());
    }
}

fn run_workload(
    addr: &str,
    outstanding: usize,
    opts: ClientOptions,
    limit: Duration,
    stop: &AtomicBool,
    acked_count: &AtomicU64,
) -> WorkloadReport {
    let deadline = Instant::now() + limit;
    let mut r = WorkloadReport::default();
    let mut client: Option<Client> = None;
    let mut pending: VecDeque<(RequestId, u64)> = VecDeque::new();
    let mut counter = 0u64;
    // Bounded by the deadline; each turn either submits, collects one outcome or sleeps.
    while Instant::now() < deadline {
        let stopping = stop.load(Ordering::SeqCst);
        if stopping && pending.is_empty() {
            break;
        }
        let Some(c) = client.as_mut() else {
            match Client::connect(&[addr], STREAM, opts.clone()) {
                Ok(c) => client = Some(c),
                Err(e) => {
                    fail(&mut r, &e);
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            continue;
        };
        let mut submit_failed = false;
        while !stopping && pending.len() < outstanding {
            match c.submit_append(&[&payload_of(counter)], None) {
                Ok(id) => {
                    pending.push_back((id, counter));
                    r.submitted += 1;
                    counter += 1;
                }
                Err(e) => {
                    // Nothing was sent (no node took the connection): the counter is
                    // not used, so it may be used again.
                    fail(&mut r, &e);
                    submit_failed = true;
                    break;
                }
            }
        }
        if let Some((id, ctr)) = pending.pop_front() {
            match c.wait(id) {
                Ok(a) => {
                    assert_eq!(a.count, 1);
                    r.acked.push((a.first_lsn, ctr));
                    acked_count.fetch_add(1, Ordering::SeqCst);
                }
                Err(ClientError::InDoubt { .. }) => r.in_doubt += 1,
                Err(e) => fail(&mut r, &e),
            }
        } else if submit_failed {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    r
}

/// A stopped node's log, read without modifying it.
pub struct LogImage {
    pub report: VerifyReport,
    /// (lsn, epoch, payload) of every valid record, in LSN order.
    pub records: Vec<(u64, u64, Vec<u8>)>,
}

impl LogImage {
    /// Verifies and reads the log in `dir` (the node must be stopped).
    pub fn read(dir: &Path) -> LogImage {
        let report =
            inspect::verify(dir).unwrap_or_else(|e| panic!("verify {}: {e}", dir.display()));
        let mut records = Vec::new();
        if report.records > 0 {
            inspect::dump(dir, None, u64::MAX, |r| {
                records.push((r.lsn, r.epoch, r.payload.to_vec()));
                Ok(())
            })
            .unwrap_or_else(|e| panic!("dump {}: {e}", dir.display()));
        }
        LogImage { report, records }
    }

    pub fn first_lsn(&self) -> u64 {
        self.report.first_lsn
    }

    pub fn last_lsn(&self) -> u64 {
        self.report.last_lsn
    }

    /// The record at `lsn`, if the log holds it.
    pub fn get(&self, lsn: u64) -> Option<&(u64, u64, Vec<u8>)> {
        let i = lsn.checked_sub(self.first_lsn())?;
        self.records.get(usize::try_from(i).ok()?)
    }

    /// Panics unless the log is sound (no corruption) and dense: every LSN from the
    /// first to the last once, in order.
    pub fn assert_sound_and_dense(&self, what: &str) {
        let r = &self.report;
        assert!(
            r.sound && r.problems.is_empty(),
            "{what}: log not sound: {:#?}",
            r.problems
        );
        assert_eq!(
            r.records,
            r.last_lsn + 1 - r.first_lsn,
            "{what}: {} records in lsn {}..={}",
            r.records,
            r.first_lsn,
            r.last_lsn
        );
        assert_eq!(
            self.records.len() as u64,
            r.records,
            "{what}: dump vs verify"
        );
        for (i, (lsn, _, _)) in self.records.iter().enumerate() {
            assert_eq!(*lsn, r.first_lsn + i as u64, "{what}: lsn order");
        }
    }
}

/// Panics unless `logs` hold byte-identical records (lsn, epoch and payload) for every
/// LSN of `lsns`.
pub fn assert_identical(logs: &[(String, &LogImage)], lsns: std::ops::RangeInclusive<u64>) {
    let (base_name, base) = &logs[0];
    for lsn in lsns {
        let want = base
            .get(lsn)
            .unwrap_or_else(|| panic!("{base_name} lacks lsn {lsn}"));
        for (name, log) in &logs[1..] {
            let got = log
                .get(lsn)
                .unwrap_or_else(|| panic!("{name} lacks lsn {lsn}"));
            assert!(
                got == want,
                "lsn {lsn} differs: {base_name} has epoch {} and {} bytes, {name} has epoch {} and {} bytes",
                want.1,
                want.2.len(),
                got.1,
                got.2.len()
            );
        }
    }
}

/// A member's entry in the primary's status.
pub fn member(status: &serde_json::Value, id: u64) -> &serde_json::Value {
    status["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["id"].as_u64() == Some(id)))
        .unwrap_or_else(|| panic!("no member {id} in {status}"))
}

/// Waits until the primary (the node of `c`) reports every member connected and
/// durable up to the primary's last LSN; returns that status. Panics after `within`.
pub fn wait_in_sync(c: &mut Client, within: Duration) -> serde_json::Value {
    let transport = transport();
    let deadline = Instant::now() + within;
    loop {
        let st = c.status().expect("status of the primary");
        let last = st["last_lsn"].as_u64().expect("last_lsn");
        let synced = st["members"].as_array().is_some_and(|ms| {
            ms.len() == NODES - 1
                && ms.iter().all(|m| {
                    m["connected"] == true
                        && m["durable_lsn"].as_u64().is_some_and(|d| d >= last)
                        && transport.as_deref().is_none_or(|t| m["transport"] == t)
                })
        });
        if synced {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "members not in sync within {within:?}: {st:#}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
