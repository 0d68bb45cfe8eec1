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
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use lockstep::client::Client;

use crate::Error;
use crate::nodes::{
    FAILOVER_WITHIN, NODES, Nodes, READY_WITHIN, STREAM, Switch, ask_switchover, bin_path,
    client_options, wait_until,
};
use crate::stats::{latency_histogram, record};
use crate::workdir::Workdir;

/// Options of `lockstep-bench failover`.
#[derive(Args, Debug, Clone)]
pub struct FailoverArgs {
    /// Kills of the primary to measure.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub trials: usize,
    /// Tiny run (3 trials and 2 switchovers; with --mariadb 2 and 1), as the test suite
    /// runs it.
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
    /// SIGSTOPs of the primary to measure after the switchovers (the client's write
    /// gap; the stopped node is continued after each).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub stops: usize,
    /// Measure what a MariaDB application sees: a MariaDB primary whose semi-sync
    /// replica is the stream's front, clients committing INSERTs through it (see
    /// `failover_mariadb`).
    #[arg(long)]
    pub mariadb: bool,
    /// With --mariadb: client threads committing single-row INSERTs (default 4; 8 with
    /// --db).
    #[arg(long, value_name = "N", requires = "mariadb")]
    pub clients: Option<usize>,
    /// With --mariadb: the database fails over instead of lockstep: a MariaDB member
    /// beside each node, the front promoting one of them (see `db_failover`).
    #[arg(long, requires = "mariadb")]
    pub db: bool,
    /// With --mariadb: never install a missing MariaDB (the run is skipped with one
    /// line instead).
    #[arg(long, requires = "mariadb")]
    pub no_install: bool,
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

pub fn run(args: &FailoverArgs) -> Result<(), Error> {
    if args.db {
        return crate::db_failover::run(args);
    }
    if args.mariadb {
        return crate::failover_mariadb::run(args);
    }
    let trials = if args.quick { 3 } else { args.trials };
    let bin = bin_path(args.lockstepd.as_deref())?;
    let work = Workdir::new(args.dir.as_deref())?;
    let dir = std::path::absolute(work.path()).map_err(|e| format!("{e}"))?;
    let mut nodes = Nodes::start(bin, &dir, args.failover_timeout_ms, |_| String::new())?;
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
        ask_switchover(&nodes.admins[target - 1], target, Switch::Stream)?;
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
    // SIGSTOP of the primary: it neither answers nor closes its connections, so the
    // client learns of the failover only by its own timeout or a redirect. The measure
    // is the client's write gap: its last commit before the stop to its first after.
    let stops = if args.quick { 1 } else { args.stops };
    let mut stopped = latency_histogram();
    for trial in 1..=stops {
        nodes.check_alive()?;
        let primary = committing_primary(&nodes, &committer)?;
        let stopped_at = Instant::now();
        nodes.signal(primary, "STOP")?;
        let found = wait_until(FAILOVER_WITHIN, "a commit on another node", || {
            committer.first_after(stopped_at, primary as u32).is_some()
        });
        nodes.signal(primary, "CONT")?;
        found.map_err(|e| format!("SIGSTOP {trial}: {e}"))?;
        let first = committer
            .first_after(stopped_at, primary as u32)
            .expect("found above");
        let last_before = committer
            .last_before(stopped_at)
            .map_or(stopped_at, |a| a.at);
        let gap = first.at - last_before;
        record(&mut stopped, gap);
        println!(
            "SIGSTOP {trial}: node {primary} stopped, first commit on node {} {:.1} ms after \
             the last before (lsn {})",
            first.node,
            gap.as_secs_f64() * 1e3,
            first.lsn
        );
        wait_until(READY_WITHIN, "full strength after SIGCONT", || {
            committer.last().is_some_and(|a| a.at > stopped_at)
                && committer.last().is_some_and(|a| nodes.full_strength(a.lsn))
        })
        .map_err(|e| format!("SIGSTOP {trial}: {e}"))?;
    }
    let acks = committer.finish();
    nodes.stop_all();
    let lost = check_logs(&nodes, &acks)?;
    println!();
    let mut rows = vec![
        (
            "kill -9 of the primary → first commit on the new primary",
            &failover,
        ),
        ("restart → back to full strength", &rejoin),
        ("switchover: writes unavailable", &unavailable),
    ];
    if stops > 0 {
        rows.push(("SIGSTOP of the primary: the client's write gap", &stopped));
    }
    print_table(&rows);
    println!();
    println!(
        "acknowledged commits checked on {NODES} nodes: {}; lost: {lost}",
        acks.len()
    );
    println!(
        "goal (loopback): p50 < 500 ms: {}; max < 1000 ms: {}",
        met(ms_at(&failover, 0.5) < 500.0),
        met(ms_max(&failover) < 1000.0)
    );
    println!(
        "goal (loopback): switchover unavailability < 100 ms (max): {}",
        met(ms_max(&unavailable) < 100.0)
    );
    if stops > 0 {
        println!(
            "goal (loopback): the client's write gap on SIGSTOP of the primary p50 < 500 ms: \
             {}; max < 1000 ms: {}",
            met(ms_at(&stopped, 0.5) < 500.0),
            met(ms_max(&stopped) < 1000.0)
        );
    }
    if work.kept() {
        println!("data kept in {}", dir.display());
    }
    if lost > 0 {
        return Err(format!("{lost} acknowledged commits are missing or differ").into());
    }
    Ok(())
}

/// Quantile `q` of `h` in milliseconds.
pub(crate) fn ms_at(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e6
}

/// The largest value of `h` in milliseconds.
pub(crate) fn ms_max(h: &Histogram<u64>) -> f64 {
    h.max() as f64 / 1e6
}

/// The word of a goal line.
pub(crate) fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "missed" }
}

/// The table of the failover benchmarks: one row per measure, with its count, p50,
/// p90 and max in milliseconds.
pub(crate) fn print_table(rows: &[(&str, &Histogram<u64>)]) {
    println!("| measure | trials | p50 ms | p90 ms | max ms |");
    println!("|---|---|---|---|---|");
    for (name, h) in rows {
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} |",
            h.len(),
            ms_at(h, 0.5),
            ms_at(h, 0.9),
            ms_max(h)
        );
    }
}

/// Counts the acknowledged commits that some node's log lacks or holds with other bytes.
fn check_logs(nodes: &Nodes, acks: &[Ack]) -> Result<u64, Error> {
    let mut lost = 0;
    for n in 1..=NODES {
        let log = nodes.stream_dir(n);
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
    nodes.committing_primary(|primary, since| {
        committer
            .last()
            .is_some_and(|a| a.at > since && a.node as usize == primary)
    })
}
