//! Fault runs of real `lockstepd` processes under their controller: 3- and 5-node
//! clusters on loopback with a fault-injecting proxy between every ordered pair of
//! nodes, clients appending through any node, and rounds of faults chosen by a seeded
//! RNG: kill -9 and restart of any node (the primary included), SIGSTOP/SIGCONT, and
//! proxy faults (cut connections, delay, one-way blackhole, full partition of a node),
//! each healed after a while.
//!
//! Every link between nodes proves the cluster secret. The 3-node run keeps one sealed
//! segment of 2 MiB (`retain_segments = 1`): a node that was away while retention
//! deleted what it lacked is started over after the primary's first retained record.
//!
//! At the end, with every fault healed and every node running, the cluster must come
//! back to full strength by itself (every node in the sync set of the committed
//! configuration, and a commit succeeds). Then, from the nodes' logs after a clean
//! shutdown: every acknowledged commit (that retention kept) is on every node with
//! identical bytes, the
//! committed prefixes are byte-identical, every log is sound, and no two nodes acted
//! as primary in the same epoch (from the promotions the nodes announce on stderr).
//!
//! The MariaDB variant (`chaos_mariadb`) runs the same faults under a database: one
//! MariaDB member beside each node, the front on the lockstep primary, clients writing
//! rows to whichever member takes writes; in half of the rounds the database primary
//! is killed too (and restarted once the round is healed). At the end every
//! acknowledged row is on the database primary once and every member holds the same
//! table. `LOCKSTEP_CHAOS_DB_ROUNDS=N` (default 3).
//!
//! `LOCKSTEP_CHAOS_DEBUG=1` prints the nodes' retention and start-over lines.
//! `LOCKSTEP_CHAOS_ROUNDS=N` runs N rounds on 3 nodes and N/2 on 5 nodes (default: 10
//! and 5); `LOCKSTEP_CHAOS_SEED` replays a run (the seed is printed).

#[path = "common/chaos_cluster.rs"]
mod chaos_cluster;
#[path = "common/db_members.rs"]
mod db_members;
#[path = "common/front.rs"]
mod front;
#[path = "common/procs.rs"]
mod procs;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chaos_cluster::{ChaosCluster, STREAM, chaos_client_options};
use lockstep::client::{Client, ClientError};
use lockstep::proxy::Direction;
use procs::{LogImage, Rng, assert_identical, counter_of, payload_of};

/// Client threads of the workload.
const CLIENTS: u64 = 3;
/// Appends each client keeps in flight.
const OUTSTANDING: usize = 4;
/// How long the cluster may take to commit again after a fault is healed. Generous:
/// the machine is shared and a restarted debug-built node is slow to start.
const PROGRESS_WITHIN: Duration = Duration::from_secs(45);
/// How long the cluster may take to return to full strength at the end.
const FULL_STRENGTH_WITHIN: Duration = Duration::from_secs(90);

fn rounds() -> (usize, usize) {
    match std::env::var("LOCKSTEP_CHAOS_ROUNDS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        Some(n) => (n, (n / 2).max(1)),
        None => (10, 5),
    }
}

/// Every acknowledged append of one client: (lsn, counter).
#[derive(Default)]
struct ClientReport {
    acked: Vec<(u64, u64)>,
    in_doubt: u64,
    failed: u64,
}

/// Clients appending `payload_of(counter)` through any node, pipelined, following the
/// primary, never resending an append. Client c uses counters `c << 40 | seq`, so every
/// payload names its append.
struct Workload {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    threads: Vec<JoinHandle<ClientReport>>,
}

impl Workload {
    fn start(addrs: &[String]) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let threads = (0..CLIENTS)
            .map(|c| {
                // Each client starts at a different node.
                let mut order = addrs.to_vec();
                order.rotate_left(c as usize % addrs.len());
                let (stop, acked) = (Arc::clone(&stop), Arc::clone(&acked));
                std::thread::Builder::new()
                    .name(format!("chaos-client-{c}"))
                    .spawn(move || run_client(c, &order, &stop, &acked))
                    .expect("spawn client")
            })
            .collect();
        Workload {
            stop,
            acked,
            threads,
        }
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    /// Waits until `more` further appends are acknowledged.
    fn wait_for_more(&self, more: u64, within: Duration) -> bool {
        let target = self.acked() + more;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.acked() >= target {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn stop(self) -> Vec<ClientReport> {
        self.stop.store(true, Ordering::SeqCst);
        self.threads
            .into_iter()
            .map(|t| t.join().expect("a client thread panicked"))
            .collect()
    }
}

fn run_client(c: u64, addrs: &[String], stop: &AtomicBool, acked: &AtomicU64) -> ClientReport {
    let mut r = ClientReport::default();
    let mut client: Option<Client> = None;
    let mut pending = std::collections::VecDeque::new();
    let mut seq = 0u64;
    // Bounded by `stop`; each turn submits, collects one outcome, or sleeps.
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        if stopping && pending.is_empty() {
            return r;
        }
        let Some(cl) = client.as_mut() else {
            if stopping {
                return r;
            }
            match Client::connect(addrs, STREAM, chaos_client_options()) {
                Ok(cl) => client = Some(cl),
                Err(_) => {
                    r.failed += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            continue;
        };
        while !stopping && pending.len() < OUTSTANDING {
            let counter = c << 40 | seq;
            match cl.submit_append(&[&payload_of(counter)], None) {
                Ok(id) => {
                    pending.push_back((id, counter));
                    seq += 1;
                }
                Err(_) => {
                    // Nothing was sent: the counter may be used again.
                    r.failed += 1;
                    break;
                }
            }
        }
        match pending.pop_front() {
            Some((id, counter)) => match cl.wait(id) {
                Ok(a) => {
                    assert_eq!(a.count, 1);
                    r.acked.push((a.first_lsn, counter));
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                Err(ClientError::InDoubt { .. }) => r.in_doubt += 1,
                Err(_) => r.failed += 1,
            },
            None => {
                // No request could be sent: start over on a new connection.
                client = None;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Counts of what a run did, for its summary line.
#[derive(Default, Debug)]
struct Tally {
    kills: BTreeMap<usize, u32>,
    primary_kills: u32,
    stops: u32,
    cuts: u32,
    delays: u32,
    blackholes: u32,
    partitions: u32,
    outages: u32,
}

/// Holds a fault for a while, with the workload running.
fn hold(rng: &mut Rng) {
    std::thread::sleep(rng.millis(200, 1200));
}

/// One round: a fault chosen by `rng`, held, healed.
fn fault_round(cl: &mut ChaosCluster, rng: &mut Rng, t: &mut Tally) -> String {
    let n = cl.nodes;
    // Half of the node faults aim at the primary, where they cost a failover.
    let pick = |cl: &ChaosCluster, rng: &mut Rng| -> usize {
        if rng.below(2) == 0
            && let Some(p) = cl.primary()
        {
            return p;
        }
        rng.range(1, n as u64) as usize
    };
    match rng.below(8) {
        0 => {
            let x = pick(cl, rng);
            let was_primary = cl.primary() == Some(x);
            cl.kill9(x);
            *t.kills.entry(x).or_default() += 1;
            t.primary_kills += u32::from(was_primary);
            hold(rng);
            cl.restart(x);
            format!("kill -9 node {x} (primary: {was_primary}), restart")
        }
        1 => {
            let x = pick(cl, rng);
            cl.sigstop(x);
            t.stops += 1;
            hold(rng);
            cl.sigcont(x);
            format!("SIGSTOP node {x}, SIGCONT")
        }
        2 => {
            let x = pick(cl, rng);
            let p = [0.02, 0.1, 0.5][rng.below(3) as usize];
            for l in cl.links_of(x) {
                l.drop_connections(Direction::Forward, p);
                l.drop_connections(Direction::Backward, p);
            }
            t.cuts += 1;
            hold(rng);
            cl.heal_all();
            format!("cut connections of node {x} with p {p}")
        }
        3 => {
            let x = pick(cl, rng);
            let ms = rng.range(5, 120);
            let jitter = rng.range(0, ms / 2);
            for l in cl.links_of(x) {
                l.delay(Direction::Forward, ms, jitter);
            }
            t.delays += 1;
            hold(rng);
            cl.heal_all();
            format!("delay links of node {x} by {ms}±{jitter} ms")
        }
        4 => {
            // Node x can no longer send to the others (its outgoing proxies hold what
            // it sends and what it answers on connections the others opened).
            let x = pick(cl, rng);
            for j in (1..=n).filter(|&j| j != x) {
                cl.link(x, j).blackhole(Direction::Forward);
                cl.link(j, x).blackhole(Direction::Backward);
            }
            t.blackholes += 1;
            let reset = hold_then_heal(cl, rng, x);
            format!("one-way blackhole from node {x} (ended by reset: {reset})")
        }
        5 => {
            // Two faults at once: a crash and a partition of another node. On 3 nodes
            // that leaves no controller quorum while it lasts (nothing may commit then,
            // and nothing acknowledged may be lost); on 5 nodes a quorum remains.
            let x = pick(cl, rng);
            let y = (x + rng.range(1, n as u64 - 1) as usize - 1) % n + 1;
            assert_ne!(x, y);
            let was_primary = cl.primary() == Some(x);
            cl.kill9(x);
            *t.kills.entry(x).or_default() += 1;
            t.primary_kills += u32::from(was_primary);
            for l in cl.links_of(y) {
                l.partition();
            }
            t.partitions += 1;
            hold(rng);
            cl.heal_all();
            cl.restart(x);
            format!(
                "kill -9 node {x} (primary: {was_primary}) and partition node {y}, heal, restart"
            )
        }
        6 => {
            // A full outage: every node killed at once, then all restarted. The
            // cluster must come back by itself with every acknowledged commit.
            for x in 1..=n {
                cl.kill9(x);
                *t.kills.entry(x).or_default() += 1;
            }
            t.outages += 1;
            hold(rng);
            for x in 1..=n {
                cl.restart(x);
            }
            "full outage: kill -9 every node, restart all".to_string()
        }
        _ => {
            let x = pick(cl, rng);
            for l in cl.links_of(x) {
                l.partition();
            }
            t.partitions += 1;
            let reset = hold_then_heal(cl, rng, x);
            format!("full partition of node {x} (ended by reset: {reset})")
        }
    }
}

/// Holds a fault on node `x`'s links for a while, then lifts it; half the time the
/// links are reset first (their connections cut). Returns whether they were.
fn hold_then_heal(cl: &ChaosCluster, rng: &mut Rng, x: usize) -> bool {
    hold(rng);
    let reset = rng.below(2) == 0;
    if reset {
        for l in cl.links_of(x) {
            l.reset_all();
        }
    }
    cl.heal_all();
    reset
}

/// Waits until one node is primary with every other node in the sync set of the
/// committed configuration, connected, and durable up to a commit made now. Returns
/// (primary, that commit's LSN).
fn wait_full_strength(cl: &ChaosCluster, within: Duration) -> (usize, u64) {
    let deadline = Instant::now() + within;
    let mut last = String::from("no primary");
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let Some(p) = cl.primary() else { continue };
        let Some(st) = cl.status(p) else { continue };
        let full = st["members"].as_array().is_some_and(|ms| {
            ms.len() == cl.nodes - 1
                && ms
                    .iter()
                    .all(|m| m["in_sync"] == true && m["connected"] == true)
        });
        if !full {
            last = format!("node {p}: {}", st["members"]);
            continue;
        }
        let mut c = match Client::connect(&[&cl.addrs[p - 1]], STREAM, chaos_client_options()) {
            Ok(c) => c,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let lsn = match c.append(&payload_of(u64::MAX >> 1)) {
            Ok(l) => l,
            Err(e) => {
                last = format!("final commit: {e}");
                continue;
            }
        };
        // In a strong stream every sync member holds a commit durably; check it.
        if let Some(st) = cl.status(p)
            && st["role"] == "primary"
            && st["members"].as_array().is_some_and(|ms| {
                ms.len() == cl.nodes - 1
                    && ms
                        .iter()
                        .all(|m| m["in_sync"] == true && m["durable_lsn"].as_u64() >= Some(lsn))
            })
        {
            return (p, lsn);
        }
        last = format!("after the commit of lsn {lsn}: {:?}", cl.status(p));
    }
    panic!("not back to full strength within {within:?}: {last}");
}

fn run(nodes: usize, rounds: usize, retain: Option<usize>) {
    let _serial = procs::serial();
    if let Err(why) = lockstep_sys::probe::io_uring() {
        eprintln!("skipped: {why}");
        return;
    }
    let (mut rng, seed) = Rng::from_env("LOCKSTEP_CHAOS_SEED");
    eprintln!("chaos: {nodes} nodes, {rounds} rounds, seed {seed} (LOCKSTEP_CHAOS_SEED)");
    let started = Instant::now();
    let mut cl = match retain {
        // The smallest segments, so that the workload's few megabytes roll over several.
        Some(n) => ChaosCluster::start(
            env!("CARGO_BIN_EXE_lockstepd").into(),
            nodes,
            2 << 20,
            Some(n),
        ),
        None => ChaosCluster::start(
            env!("CARGO_BIN_EXE_lockstepd").into(),
            nodes,
            procs::segment_bytes(),
            None,
        ),
    };
    let workload = Workload::start(&cl.addrs);
    assert!(
        workload.wait_for_more(20, PROGRESS_WITHIN),
        "seed {seed}: the cluster made no first commits"
    );
    let mut tally = Tally::default();
    for round in 1..=rounds {
        let what = fault_round(&mut cl, &mut rng, &mut tally);
        let progressed = workload.wait_for_more(5, PROGRESS_WITHIN);
        eprintln!(
            "chaos: round {round}/{rounds}: {what}; {} acked ({:.1} s)",
            workload.acked(),
            started.elapsed().as_secs_f64()
        );
        assert!(
            progressed,
            "seed {seed}: round {round} ({what}): no commit within {PROGRESS_WITHIN:?} of the heal"
        );
    }
    cl.heal_all();
    let reports = workload.stop();
    let (primary, final_lsn) = wait_full_strength(&cl, FULL_STRENGTH_WITHIN);
    let promotions = cl.promotions();
    cl.stop_all();

    // No acknowledged LSN twice: two acks for one LSN mean one of them was lost.
    let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
    for r in &reports {
        for &(lsn, counter) in &r.acked {
            if let Some(other) = acked.insert(lsn, counter) {
                panic!(
                    "seed {seed}: lsn {lsn} acknowledged for appends {other:#x} and {counter:#x}"
                );
            }
        }
    }
    assert!(!acked.is_empty(), "seed {seed}: nothing acknowledged");
    let logs: Vec<(String, LogImage)> = (1..=nodes)
        .map(|n| (format!("node {n}"), LogImage::read(&cl.stream_dir(n))))
        .collect();
    // The fewest acknowledged commits checked on one node (all of them, but for what
    // retention deleted).
    let mut checked_min = usize::MAX;
    for (name, log) in &logs {
        log.assert_sound_and_dense(name);
        assert!(
            log.last_lsn() >= final_lsn,
            "seed {seed}: {name} ends at lsn {} before the final commit {final_lsn}",
            log.last_lsn()
        );
        // With retention, what lies before a log's first record was committed, held
        // by every member and deleted by design.
        let kept = if retain.is_some() { log.first_lsn() } else { 1 };
        checked_min = checked_min.min(acked.range(kept..).count());
        for (&lsn, &counter) in acked.range(kept..) {
            let rec = log
                .get(lsn)
                .unwrap_or_else(|| panic!("seed {seed}: {name} lacks acknowledged lsn {lsn}"));
            assert!(
                counter_of(&rec.2) == Some(counter),
                "seed {seed}: {name} has other bytes at acknowledged lsn {lsn} (append {counter:#x})"
            );
        }
    }
    // Every node is in the sync set at the end, so every log holds the committed
    // prefix up to the final commit, byte for byte the same.
    let first = logs.iter().map(|(_, l)| l.first_lsn()).max().unwrap();
    let views: Vec<(String, &LogImage)> = logs.iter().map(|(n, l)| (n.clone(), l)).collect();
    assert_identical(&views, first..=final_lsn);

    // One primary per epoch, and every record written in an announced epoch, after
    // the LSN its primary started from.
    let mut by_epoch: BTreeMap<u64, BTreeSet<usize>> = BTreeMap::new();
    let mut from_lsn: BTreeMap<u64, u64> = BTreeMap::new();
    for &(epoch, node, lsn) in &promotions {
        by_epoch.entry(epoch).or_default().insert(node);
        from_lsn.insert(epoch, lsn);
    }
    for (epoch, ns) in &by_epoch {
        assert_eq!(
            ns.len(),
            1,
            "seed {seed}: nodes {ns:?} all acted as primary of epoch {epoch}"
        );
    }
    for (name, log) in &logs {
        for (lsn, epoch, _) in &log.records {
            let from = from_lsn.get(epoch).unwrap_or_else(|| {
                panic!(
                    "seed {seed}: {name} has lsn {lsn} of epoch {epoch}, which no node announced"
                )
            });
            assert!(
                lsn > from,
                "seed {seed}: {name} has lsn {lsn} in epoch {epoch}, whose primary started after lsn {from}"
            );
        }
    }

    let said = |what: &str| -> usize {
        (1..=nodes)
            .map(|n| cl.stderr(n).matches(what).count())
            .sum()
    };
    eprintln!(
        "chaos: retention deleted segments {} times; members started over after the primary's base {} times",
        said("retention deleted"),
        said("starts over after")
    );
    if std::env::var_os("LOCKSTEP_CHAOS_DEBUG").is_some() {
        for n in 1..=nodes {
            for l in cl.stderr(n).lines().filter(|l| {
                l.contains("starts over") || l.contains("retention") || l.contains("stale")
            }) {
                eprintln!("node {n}: {l}");
            }
        }
    }
    let in_doubt: u64 = reports.iter().map(|r| r.in_doubt).sum();
    let failed: u64 = reports.iter().map(|r| r.failed).sum();
    eprintln!(
        "chaos: {nodes} nodes, seed {seed}: {rounds} rounds in {:.1} s; kills per node {:?} \
         ({} of the primary); {} full outages, {} SIGSTOPs, {} cuts, {} delays, {} blackholes, {} partitions; \
         {} epochs (primaries {:?}); {} acknowledged commits, at least {checked_min} checked on each of {nodes} nodes, \
         {in_doubt} in doubt, {failed} failed attempts; final commit lsn {final_lsn} on node {primary}",
        started.elapsed().as_secs_f64(),
        tally.kills,
        tally.primary_kills,
        tally.outages,
        tally.stops,
        tally.cuts,
        tally.delays,
        tally.blackholes,
        tally.partitions,
        by_epoch.len(),
        by_epoch
            .iter()
            .map(|(e, ns)| (*e, *ns.iter().next().unwrap()))
            .collect::<Vec<_>>(),
        acked.len(),
    );
}

#[test]
fn chaos_three_nodes() {
    // With retention: members that were away start over after the primary's first
    // retained record.
    run(3, rounds().0, Some(1));
}

#[test]
fn chaos_five_nodes() {
    run(5, rounds().1, None);
}

#[test]
fn chaos_mariadb() {
    if !front::mariadb_or_skip("chaos_mariadb") {
        return;
    }
    let _serial = procs::serial();
    let rounds: usize = std::env::var("LOCKSTEP_CHAOS_DB_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let (mut rng, seed) = Rng::from_env("LOCKSTEP_CHAOS_SEED");
    eprintln!("chaos_mariadb: {rounds} rounds, seed {seed} (LOCKSTEP_CHAOS_SEED)");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let db = db_members::Members::start(dir.path(), 3);
    let mut cl = ChaosCluster::start_with(
        env!("CARGO_BIN_EXE_lockstepd").into(),
        3,
        procs::segment_bytes(),
        None,
        &|n| db.stream_toml(n),
    );
    let p = db.wait_primary(Duration::from_secs(60));
    front::create_rows_table(&db.dbs[p]);
    let writers = db_members::Writers::start(db.addrs(), 8);
    assert!(
        writers.wait_for_more(50, PROGRESS_WITHIN),
        "seed {seed}: no first rows"
    );
    let mut tally = Tally::default();
    let mut db_kills = 0;
    let mut db = db;
    for round in 1..=rounds {
        let killed = if rng.below(2) == 0 {
            let p = db.wait_primary(Duration::from_secs(30));
            db.dbs[p].kill().expect("kill the database primary");
            db_kills += 1;
            Some(p)
        } else {
            None
        };
        let what = fault_round(&mut cl, &mut rng, &mut tally);
        if let Some(p) = killed {
            db.dbs[p].start().expect("restart the database member");
        }
        let progressed = writers.wait_for_more(20, PROGRESS_WITHIN);
        eprintln!(
            "chaos_mariadb: round {round}/{rounds}: {what}{}; {} rows acknowledged",
            killed.map_or(String::new(), |p| format!(
                ", database member {} killed",
                p + 1
            )),
            writers.acked()
        );
        assert!(
            progressed,
            "seed {seed}: round {round} ({what}): no row acknowledged within {PROGRESS_WITHIN:?}"
        );
    }
    cl.heal_all();
    let acked = writers.stop();
    wait_full_strength(&cl, FULL_STRENGTH_WITHIN);
    let deadline = Instant::now() + Duration::from_secs(60);
    for n in 1..=3 {
        while !db.settled(n) {
            assert!(
                Instant::now() < deadline,
                "seed {seed}: database member {n} did not rejoin"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    db.check_end(&acked);
    eprintln!(
        "chaos_mariadb: seed {seed}: {rounds} rounds, {db_kills} database primaries killed, \
         kills per node {:?}, {} SIGSTOPs, {} cuts, {} delays, {} blackholes, {} partitions; \
         {} rows acknowledged, all on the primary, every member identical",
        tally.kills,
        tally.stops,
        tally.cuts,
        tally.delays,
        tally.blackholes,
        tally.partitions,
        acked.len()
    );
    drop(cl);
    db.dbs.clear();
}
