//! `lockstep-bench failover`: how long a 3-node cluster under its controller takes to
//! commit again after its primary is killed.
//!
//! Three `lockstepd` processes with `[control]` on loopback; one client commits
//! continuously (one append outstanding) and follows the primary. Each trial kills the
//! primary with SIGKILL and measures the time from the kill to the first commit
//! acknowledged by another node, then restarts the killed node and measures the time
//! until the cluster is back to full strength (every node in the sync set of the
//! committed configuration, connected, and durable up to a commit made after the
//! restart).
//!
//! What it checks (a failure exits non-zero): every trial ends with a commit on a node
//! other than the killed one, within a bound; after the last trial every acknowledged
//! commit is in every node's log with the bytes the client sent.
//!
//! The nodes are real processes so that SIGKILL is a crash (no clean shutdown, sockets
//! closed by the kernel). `--lockstepd` names the binary; by default it is the
//! `lockstepd` next to this program (build it with `cargo build --release -p lockstep`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::Args;
use lockstep::client::{Client, ClientOptions};

use crate::Error;
use crate::cluster::free_ports;
use crate::stats::{latency_histogram, record};
use crate::workdir::Workdir;

const NODES: usize = 3;
const STREAM: &str = "s";
/// A trial fails when no other node commits within this long of the kill.
const FAILOVER_WITHIN: Duration = Duration::from_secs(30);
/// How long a node may take to answer after a (re)start, and the cluster to return to
/// full strength.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// Options of `lockstep-bench failover`.
#[derive(Args, Debug, Clone)]
pub struct FailoverArgs {
    /// Kills of the primary to measure.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub trials: usize,
    /// Tiny run (3 trials), as the test suite runs it.
    #[arg(long)]
    pub quick: bool,
    /// The node binary (default: `lockstepd` next to this program).
    #[arg(long, value_name = "FILE")]
    pub lockstepd: Option<PathBuf>,
    /// Directory for the nodes' data and stderr, kept afterwards. Without it, a
    /// temporary directory is used and removed.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The controller's `failover_timeout_ms` (default: the node's own default).
    #[arg(long, value_name = "MS")]
    pub failover_timeout_ms: Option<u64>,
    /// Switchovers to measure after the kills (default: as many as the trials).
    #[arg(long, value_name = "N")]
    pub switchovers: Option<usize>,
}

/// One acknowledged commit.
#[derive(Clone, Copy)]
struct Ack {
    lsn: u64,
    counter: u64,
    node: u32,
    at: Instant,
}

/// The payload of append `counter`: the counter, then filler of a length that varies.
fn payload_of(counter: u64) -> Vec<u8> {
    let len = 16 + (counter.wrapping_mul(7919) % 240) as usize;
    let mut p = counter.to_le_bytes().to_vec();
    p.extend((0..len).map(|i| (counter as usize).wrapping_mul(31).wrapping_add(i) as u8));
    p
}

fn client_options() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(1),
        reply_grace: Duration::from_millis(200),
        connect_timeout: Duration::from_millis(200),
        outstanding_max: 4,
        redirects_max: 4,
    }
}

/// The nodes, as child processes.
struct Nodes {
    bin: PathBuf,
    dir: PathBuf,
    addrs: Vec<String>,
    /// Admin endpoints, where a switchover is asked for.
    admins: Vec<String>,
    children: Vec<Option<Child>>,
}

impl Nodes {
    fn start(bin: PathBuf, dir: &Path, failover_timeout_ms: Option<u64>) -> Result<Nodes, Error> {
        std::fs::write(
            dir.join("profile.toml"),
            "description = \"failover benchmark: small segments\"\n[log]\nsegment_bytes = 8388608\n",
        )
        .map_err(|e| format!("write profile in {}: {e}", dir.display()))?;
        let ports = free_ports(2 * NODES)?;
        let addrs: Vec<String> = ports[..NODES]
            .iter()
            .copied()
            .map(lockstep::kit::loopback)
            .collect();
        let admins: Vec<String> = ports[NODES..]
            .iter()
            .copied()
            .map(lockstep::kit::loopback)
            .collect();
        for n in 1..=NODES {
            let mut toml = lockstep::kit::NodeToml::new(n, &addrs);
            toml.admin = Some(admins[n - 1].clone());
            toml.keys = "profile = \"profile.toml\"\n".into();
            toml.sections = format!(
                "[[streams]]\nname = \"{STREAM}\"\nprimary = 1\nmode = \"strong\"\n[control]\n"
            );
            if let Some(ms) = failover_timeout_ms {
                let _ = writeln!(toml.sections, "failover_timeout_ms = {ms}");
            }
            let t = toml.text();
            let path = dir.join(format!("node{n}.toml"));
            std::fs::write(&path, t).map_err(|e| format!("write {}: {e}", path.display()))?;
        }
        let mut nodes = Nodes {
            bin,
            dir: dir.to_path_buf(),
            addrs,
            admins,
            children: (0..NODES).map(|_| None).collect(),
        };
        for n in 1..=NODES {
            nodes.spawn(n)?;
        }
        Ok(nodes)
    }

    fn spawn(&mut self, n: usize) -> Result<(), Error> {
        let err_path = self.dir.join(format!("node{n}.stderr"));
        let err = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&err_path)
            .map_err(|e| format!("open {}: {e}", err_path.display()))?;
        let child = Command::new(&self.bin)
            .arg("--config")
            .arg(self.dir.join(format!("node{n}.toml")))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| format!("start {} for node {n}: {e}", self.bin.display()))?;
        self.children[n - 1] = Some(child);
        Ok(())
    }

    fn kill9(&mut self, n: usize) -> Result<(), Error> {
        let mut child = self.children[n - 1]
            .take()
            .ok_or_else(|| format!("node {n} is not running"))?;
        child.kill().map_err(|e| format!("SIGKILL node {n}: {e}"))?;
        child.wait().map_err(|e| format!("reap node {n}: {e}"))?;
        Ok(())
    }

    /// Fails if a node exited by itself.
    fn check_alive(&mut self) -> Result<(), Error> {
        for (i, c) in self.children.iter_mut().enumerate() {
            if let Some(c) = c
                && let Some(status) = c.try_wait().map_err(|e| format!("wait: {e}"))?
            {
                return Err(format!(
                    "node {} exited by itself with {status}; see {}/node{}.stderr",
                    i + 1,
                    self.dir.display(),
                    i + 1
                )
                .into());
            }
        }
        Ok(())
    }

    fn status(&self, n: usize) -> Option<serde_json::Value> {
        self.children[n - 1].as_ref()?;
        let mut c = Client::connect(&[&self.addrs[n - 1]], STREAM, client_options()).ok()?;
        c.status().ok()
    }

    /// The node serving as primary now, if one says so.
    fn primary(&self) -> Option<usize> {
        (1..=NODES).find(|&n| self.status(n).is_some_and(|s| s["role"] == "primary"))
    }

    /// Whether the primary has every other node in its sync set, connected, and durable
    /// up to at least `lsn`.
    fn full_strength(&self, lsn: u64) -> bool {
        let Some(p) = self.primary() else {
            return false;
        };
        self.status(p).is_some_and(|st| {
            st["members"].as_array().is_some_and(|ms| {
                ms.len() == NODES - 1
                    && ms.iter().all(|m| {
                        m["in_sync"] == true
                            && m["connected"] == true
                            && m["durable_lsn"].as_u64() >= Some(lsn)
                    })
            })
        })
    }

    /// Stops every node with SIGTERM; one that does not stop within a bound is killed.
    fn stop_all(&mut self) {
        for c in self.children.iter().flatten() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
        }
        for c in &mut self.children {
            let Some(mut child) = c.take() else { continue };
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.children {
            if let Some(mut child) = c.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The committing client: one append outstanding, following the primary, never
/// resending an append whose fate is unknown.
struct Committer {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    fn start(addrs: Vec<String>) -> Committer {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (Arc::clone(&stop), Arc::clone(&acks));
        let thread = std::thread::Builder::new()
            .name("failover-committer".into())
            .spawn(move || commit_loop(&addrs, &s, &a))
            .expect("start the committer thread");
        Committer {
            stop,
            acks,
            thread: Some(thread),
        }
    }

    /// The first acknowledged commit after `since` by a node other than `not`.
    fn first_after(&self, since: Instant, not: u32) -> Option<Ack> {
        let acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        acks.iter()
            .rev()
            .take_while(|a| a.at > since)
            .filter(|a| a.node != not)
            .last()
            .copied()
    }

    /// The last acknowledged commit before `t`.
    fn last_before(&self, t: Instant) -> Option<Ack> {
        let acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        acks.iter().rev().find(|a| a.at < t).copied()
    }

    fn last(&self) -> Option<Ack> {
        let acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        acks.last().copied()
    }

    fn finish(mut self) -> Vec<Ack> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.acks.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn commit_loop(addrs: &[String], stop: &AtomicBool, acks: &Mutex<Vec<Ack>>) {
    let mut client: Option<Client> = None;
    let mut counter = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let Some(c) = client.as_mut() else {
            match Client::connect(addrs, STREAM, client_options()) {
                Ok(c) => client = Some(c),
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
            continue;
        };
        let payload = payload_of(counter);
        let outcome = c.append(&payload);
        let at = Instant::now();
        match outcome {
            Ok(lsn) => {
                let node = c.node().map_or(0, |n| n.node_id);
                acks.lock().unwrap_or_else(|p| p.into_inner()).push(Ack {
                    lsn,
                    counter,
                    node,
                    at,
                });
            }
            // In doubt or refused: the counter is not reused, so a late commit of it
            // can never be taken for a later append. A short pause keeps a cluster
            // without a primary from being flooded.
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
        counter += 1;
    }
}

fn bin_path(arg: Option<&Path>) -> Result<PathBuf, Error> {
    if let Some(p) = arg {
        return Ok(p.to_path_buf());
    }
    let me = std::env::current_exe().map_err(|e| format!("locate this program: {e}"))?;
    let beside = me.with_file_name("lockstepd");
    if beside.is_file() {
        return Ok(beside);
    }
    Err(format!(
        "no lockstepd next to {}: build it (cargo build --release -p lockstep --bin lockstepd) \
         or give --lockstepd FILE",
        me.display()
    )
    .into())
}

fn wait_until(
    within: Duration,
    what: &str,
    mut ok: impl FnMut() -> bool,
) -> Result<Duration, Error> {
    let start = Instant::now();
    while start.elapsed() < within {
        if ok() {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("{what}: not within {within:?}").into())
}

pub fn run(args: &FailoverArgs) -> Result<(), Error> {
    let trials = if args.quick { 3 } else { args.trials };
    let bin = bin_path(args.lockstepd.as_deref())?;
    let work = Workdir::new(args.dir.as_deref())?;
    let dir = std::path::absolute(work.path()).map_err(|e| format!("{e}"))?;
    let mut nodes = Nodes::start(bin, &dir, args.failover_timeout_ms)?;
    // The controller promotes the configured primary first; a commit shows it serves.
    let mut probe: Option<Client> = None;
    let mut first_lsn = 0;
    wait_until(READY_WITHIN, "the first commit", || {
        if probe.is_none() {
            probe = Client::connect(&nodes.addrs, STREAM, client_options()).ok();
        }
        match probe.as_mut().map(|c| c.append(b"start")) {
            Some(Ok(lsn)) => {
                first_lsn = lsn;
                true
            }
            _ => {
                probe = None;
                false
            }
        }
    })?;
    drop(probe);
    wait_until(READY_WITHIN, "full strength at the start", || {
        nodes.full_strength(first_lsn)
    })?;
    let committer = Committer::start(nodes.addrs.clone());

    let mut failover = latency_histogram();
    let mut rejoin = latency_histogram();
    println!(
        "# lockstep-bench failover: {NODES} lockstepd processes, {trials} kills of the primary\n"
    );
    for trial in 1..=trials {
        nodes.check_alive()?;
        // Kill while the client is committing at the primary.
        let primary = committing_primary(&nodes, &committer)?;
        let killed_at = Instant::now();
        nodes.kill9(primary)?;
        wait_until(FAILOVER_WITHIN, "a commit on another node", || {
            committer.first_after(killed_at, primary as u32).is_some()
        })
        .map_err(|e| format!("trial {trial}: {e}"))?;
        let ack = committer
            .first_after(killed_at, primary as u32)
            .expect("found above");
        let took = ack.at - killed_at;
        record(&mut failover, took);
        let restarted_at = Instant::now();
        nodes.spawn(primary)?;
        // Full strength: the restarted node is back in the sync set and holds a commit
        // made after its restart.
        let back = wait_until(READY_WITHIN, "full strength after the restart", || {
            committer.last().is_some_and(|a| a.at > restarted_at)
                && committer.last().is_some_and(|a| nodes.full_strength(a.lsn))
        })
        .map_err(|e| format!("trial {trial}: {e}"))?;
        record(&mut rejoin, back);
        println!(
            "trial {trial}: killed node {primary}, first commit on node {} after {:.1} ms \
             (lsn {}); full strength {:.1} ms after the restart",
            ack.node,
            took.as_secs_f64() * 1e3,
            ack.lsn,
            back.as_secs_f64() * 1e3
        );
    }
    // Switchovers: the primary role moves to the next node while the client commits;
    // the client sees no commit between the old primary's last and the new one's first.
    let switchovers = if args.quick {
        2
    } else {
        args.switchovers.unwrap_or(trials)
    };
    let mut unavailable = latency_histogram();
    for trial in 1..=switchovers {
        let primary = committing_primary(&nodes, &committer)?;
        let target = primary % NODES + 1;
        let asked_at = Instant::now();
        ask_switchover(&nodes.admins[target - 1], target)?;
        wait_until(FAILOVER_WITHIN, "a commit on the target", || {
            committer.first_after(asked_at, primary as u32).is_some()
        })
        .map_err(|e| format!("switchover {trial}: {e}"))?;
        let first = committer
            .first_after(asked_at, primary as u32)
            .expect("found above");
        let last_before = committer
            .last_before(first.at)
            .map_or(asked_at, |a| a.at.max(asked_at));
        let gap = first.at - last_before;
        record(&mut unavailable, gap);
        println!(
            "switchover {trial}: node {primary} → node {}: no commit for {:.1} ms (lsn {})",
            first.node,
            gap.as_secs_f64() * 1e3,
            first.lsn
        );
        wait_until(READY_WITHIN, "full strength after the switchover", || {
            committer.last().is_some_and(|a| nodes.full_strength(a.lsn))
        })?;
    }
    let acks = committer.finish();
    nodes.stop_all();
    let lost = check_logs(&dir, &acks)?;
    let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e6;
    println!();
    println!("| measure | trials | p50 ms | p90 ms | max ms |");
    println!("|---|---|---|---|---|");
    for (name, h) in [
        (
            "kill -9 of the primary → first commit on the new primary",
            &failover,
        ),
        ("restart → back to full strength", &rejoin),
        ("switchover: writes unavailable", &unavailable),
    ] {
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} |",
            h.len(),
            ms(h, 0.5),
            ms(h, 0.9),
            h.max() as f64 / 1e6
        );
    }
    println!();
    println!(
        "acknowledged commits checked on {NODES} nodes: {}; lost: {lost}",
        acks.len()
    );
    println!(
        "goal (loopback): p50 < 500 ms: {}; max < 1000 ms: {}",
        if ms(&failover, 0.5) < 500.0 {
            "met"
        } else {
            "missed"
        },
        if (failover.max() as f64 / 1e6) < 1000.0 {
            "met"
        } else {
            "missed"
        }
    );
    println!(
        "goal (loopback): switchover unavailability < 100 ms (max): {}",
        if (unavailable.max() as f64 / 1e6) < 100.0 {
            "met"
        } else {
            "missed"
        }
    );
    if work.kept() {
        println!("data kept in {}", dir.display());
    }
    if lost > 0 {
        return Err(format!("{lost} acknowledged commits are missing or differ").into());
    }
    Ok(())
}

/// Counts the acknowledged commits that some node's log lacks or holds with other bytes.
fn check_logs(dir: &Path, acks: &[Ack]) -> Result<u64, Error> {
    let mut lost = 0;
    for n in 1..=NODES {
        let log = dir.join(format!("node{n}")).join("streams").join(STREAM);
        let report =
            lockstep::inspect::verify(&log).map_err(|e| format!("verify node {n}: {e}"))?;
        if !report.sound {
            return Err(format!("node {n}: log not sound: {:?}", report.problems).into());
        }
        let mut records = BTreeMap::new();
        lockstep::inspect::dump(&log, None, u64::MAX, |r| {
            records.insert(r.lsn, r.payload.to_vec());
            Ok(())
        })
        .map_err(|e| format!("read node {n}'s log: {e}"))?;
        for a in acks {
            if records.get(&a.lsn) != Some(&payload_of(a.counter)) {
                if lost < 5 {
                    eprintln!("node {n}: acknowledged lsn {} is missing or differs", a.lsn);
                }
                lost += 1;
            }
        }
    }
    Ok(lost)
}

/// The primary (1-based), once the client has committed there since now.
fn committing_primary(nodes: &Nodes, committer: &Committer) -> Result<usize, Error> {
    let primary =
        wait_until(READY_WITHIN, "a primary", || nodes.primary().is_some()).and_then(|_| {
            nodes
                .primary()
                .ok_or_else(|| "the primary went away".into())
        })?;
    let since = Instant::now();
    wait_until(READY_WITHIN, "commits at the primary", || {
        committer
            .last()
            .is_some_and(|a| a.at > since && a.node as usize == primary)
    })?;
    Ok(primary)
}

/// Asks node `to` (1-based) to take the primary role, through an admin endpoint.
fn ask_switchover(admin: &str, to: usize) -> Result<(), Error> {
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect(admin)
        .map_err(|e| format!("connect to the admin endpoint {admin}: {e}"))?;
    let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
    write!(
        sock,
        "POST /switchover?stream={STREAM}&to={to} HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("ask {admin} for a switchover: {e}"))?;
    let mut answer = String::new();
    sock.read_to_string(&mut answer)
        .map_err(|e| format!("read {admin}'s answer: {e}"))?;
    if answer.starts_with("HTTP/1.1 202") {
        Ok(())
    } else {
        Err(format!("{admin} refused the switchover: {answer}").into())
    }
}
