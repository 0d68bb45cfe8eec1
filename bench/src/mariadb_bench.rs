//! `lockstep-bench mariadb`: what the MariaDB front costs an application, measured with
//! sysbench on one machine against the two things a MariaDB user would run instead.
//!
//! Three systems, each started fresh by the run in its temporary directory (MariaDB
//! 10.11 through [`lockstep::demo::mariadb`], on loopback, as the `mysql` account when
//! run as root):
//! - **alone**: one MariaDB, durable (`sync_binlog = 1`, `innodb_flush_log_at_trx_commit
//!   = 1`, binlog on), no replica: the database without any replication.
//! - **semi-sync**: a MariaDB primary with lossless semi-sync (AFTER_SYNC, a 49-day
//!   timeout, waiting even without a replica) and one stock MariaDB replica attached
//!   with `CHANGE MASTER TO … MASTER_USE_GTID = slave_pos`, acking on receipt (relay
//!   log written, not synced: MariaDB's default).
//! - **lockstep**: the same semi-sync primary whose only replica is the front of a
//!   3-node lockstep cluster in this process (strong mode, both secondaries durable,
//!   k = 2): the primary's COMMIT returns once lockstep holds the transaction on three
//!   nodes' disks. The nodes are placed on cores as `lockstep-bench repl` places them
//!   (`--placement`); the MariaDB servers and sysbench are left to the scheduler.
//!
//! Load: sysbench (`--db-driver=mysql`, account `app`, database `app`) as a
//! subprocess, see [`crate::sysbench`]. Its tables are prepared once per system; each
//! series is one sysbench run of a test at a number of threads, a warm-up then the
//! measured seconds, with TPS from its report and p50/p99 from its latency histogram.
//!
//! Rounds: every round runs every (test, threads) series of every system; within a
//! round the series are grouped by (test, threads) and the systems' order is rotated
//! by one place per round, so that a disturbance of the shared machine, or the work a
//! system leaves behind (a database flushing after its load stopped), falls on every
//! system alike. The report quotes medians across rounds and ratios taken within each
//! round (see [`crate::mariadb_report`]).
//!
//! Checks, before and after every series; a series without them is an error of the
//! run, not a result:
//! - alone: its durability settings;
//! - semi-sync and lockstep: the primary's `Rpl_semi_sync_master_status` ON with at
//!   least one semi-sync replica and the settings above; `Rpl_semi_sync_master_no_tx`
//!   (commits without an ack) unchanged across the series, and `_yes_tx` grown by at
//!   least the transactions sysbench counted (warm-up included); for semi-sync also
//!   the replica's `Rpl_semi_sync_slave_status` ON;
//! - lockstep: besides, every member in sync, no stream failed or degraded, no commit
//!   in doubt, and the front's committed transactions grown by at least sysbench's.
//!
//! Floors, measured at the start of every round: a loopback round trip, and a round
//! trip whose far side makes one 4 KiB durable write (O_DIRECT + RWF_DSYNC) before it
//! answers (see [`crate::net_floor`]). A lockstep ACK contains both at least (the
//! front's append to the primary and its answer; the record to a secondary, its
//! durable write, its ack), so they say what part of the ACK wait the machine sets.
//!
//! Also measured per series: the CPU seconds every process used (from /proc, see
//! [`crate::proc_cpu`]), the primary's average ACK wait (the growth of
//! `Rpl_semi_sync_master_tx_wait_time` over that of `_tx_waits`), the front's
//! transactions and ACKs, and lockstep's commit phases on its primary.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lockstep::demo::mariadb::{self as demo, MariaDb, Role};
use lockstep::server::metrics::StreamMetrics;
use lockstep::wire::Mode;
use serde::Serialize;

use crate::cluster::{self, Cluster, Extras, Placement};
use crate::floor::FloorIo;
use crate::mariadb_report::{Floors, Report, Series, Setup};
use crate::net_floor::{self, FarSide, FrameSizes, NetFloor};
use crate::peers::mariadb::{PrimaryState, attach_replica};
use crate::peers_bench::{open_to_servers, short_version};
use crate::proc_cpu::{self, Machine};
use crate::repl_bench::phase_delta;
use crate::repl_report::ServerPhases;
use crate::stats::Window;
use crate::sysbench::{self, Workload};
use crate::workdir::{Progress, Workdir};
use crate::{Error, MariadbArgs, PlacementArg, interrupt};

/// The sysbench tests this benchmark accepts: the OLTP tests that write.
pub const TESTS: [&str; 6] = [
    "oltp_insert",
    "oltp_write_only",
    "oltp_read_write",
    "oltp_update_index",
    "oltp_update_non_index",
    "oltp_delete",
];

/// How long a replica (stock or the front) may take to become semi-synchronous.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const PREP_TIMEOUT: Duration = Duration::from_secs(300);

/// The lockstep stream the front appends to.
const STREAM: Mode = Mode::Strong;

/// Bytes of one transaction's binlog events as the front appends them (an oltp_insert
/// row and its events), for the sizes of the floors' frames.
const TRANSACTION_BYTES: usize = 512;

/// The systems, in the order of the first round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Alone,
    SemiSync,
    Lockstep,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Alone, Kind::SemiSync, Kind::Lockstep];

    pub fn slug(self) -> &'static str {
        match self {
            Kind::Alone => "alone",
            Kind::SemiSync => "semi-sync",
            Kind::Lockstep => "lockstep",
        }
    }
}

/// The sizes of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub rounds: usize,
    pub warm_up_s: u32,
    pub time_s: u32,
    pub tests: Vec<String>,
    pub threads: Vec<usize>,
    pub tables: usize,
    pub table_size: usize,
}

impl Plan {
    fn new(args: &MariadbArgs) -> Result<Plan, Error> {
        let q = args.quick;
        let plan = Plan {
            rounds: args.rounds.unwrap_or(if q { 1 } else { 3 }),
            warm_up_s: args.warm_up.unwrap_or(if q { 1 } else { 2 }),
            time_s: args.time.unwrap_or(if q { 1 } else { 10 }),
            tests: if !args.tests.is_empty() {
                args.tests.clone()
            } else if q {
                vec!["oltp_insert".into()]
            } else {
                vec!["oltp_insert".into(), "oltp_write_only".into()]
            },
            threads: if !args.threads.is_empty() {
                args.threads.clone()
            } else if q {
                vec![1, 4]
            } else {
                vec![1, 16, 64]
            },
            tables: args.tables.unwrap_or(if q { 2 } else { 8 }),
            table_size: args.table_size.unwrap_or(if q { 1000 } else { 10_000 }),
        };
        if plan.rounds == 0 {
            return Err("--rounds must be at least 1".into());
        }
        if !(1..=3600).contains(&plan.time_s) {
            return Err(format!("--time {}: must be 1 to 3600 seconds", plan.time_s).into());
        }
        if plan.warm_up_s > 600 {
            return Err(format!("--warm-up {}: at most 600 seconds", plan.warm_up_s).into());
        }
        for t in &plan.tests {
            if !TESTS.contains(&t.as_str()) {
                return Err(format!("--tests {t}: one of {}", TESTS.join(", ")).into());
            }
        }
        // 600 is the servers' max_connections (lockstep::demo::mariadb).
        if plan.threads.iter().any(|&n| !(1..=512).contains(&n)) {
            return Err("--threads: each from 1 to 512".into());
        }
        if plan.tables == 0 || plan.table_size == 0 {
            return Err("--tables and --table-size must be positive".into());
        }
        Ok(plan)
    }
}

/// A system under test, as the report names it.
#[derive(Debug, Serialize)]
pub struct SystemInfo {
    pub kind: Kind,
    pub label: String,
    pub version: String,
    pub durability: String,
    /// The last check's account.
    pub verified: String,
    /// Seconds sysbench's `prepare` took on it.
    pub prepare_s: f64,
}

/// A running system and what its checks last saw.
struct System {
    info: SystemInfo,
    /// The server the clients use.
    primary: MariaDb,
    primary_pid: u32,
    replica: Option<(MariaDb, u32)>,
    cluster: Option<Cluster>,
    /// The primary's semi-sync counters at the last check (semi-sync and lockstep).
    state: Option<PrimaryState>,
    /// The front's counters at the last check (lockstep).
    front: Option<FrontCounters>,
}

/// One series' measurements in one round.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub round: usize,
    /// Place of the system within its (test, threads) group in this round.
    pub position: usize,
    pub tps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// sysbench's own 99th percentile, for comparison with the histogram's.
    pub p99_ms_sysbench: f64,
    /// Transactions of the measured seconds, and of the whole run (warm-up included).
    pub transactions: u64,
    pub transactions_all: u64,
    /// Events sysbench counted in the measured seconds, and its histogram's count: a
    /// transaction each, give or take the few in flight at the warm-up's checkpoint.
    pub events: u64,
    pub latencies: u64,
    pub ignored_errors: u64,
    pub reconnects: u64,
    pub wall_s: f64,
    pub cpu: CpuUse,
    /// Transactions the primary counted as acknowledged by a replica (`_yes_tx`).
    pub acked: Option<u64>,
    /// The primary's mean wait for an ACK over the series (µs).
    pub ack_wait_avg_us: Option<f64>,
    pub front: Option<FrontDelta>,
    /// lockstep's commit phases on its primary (appends of the front).
    pub lockstep: Option<ServerPhases>,
}

/// CPU seconds used during one series (sysbench's whole run, warm-up included).
#[derive(Clone, Debug, Default, Serialize)]
pub struct CpuUse {
    /// The system's MariaDB primary (alone: its only server).
    pub mariadb_s: f64,
    /// The semi-sync replica.
    pub replica_s: Option<f64>,
    /// The benchmark's process, which runs the 3 lockstep nodes and the front.
    pub lockstep_s: Option<f64>,
    /// Of it, the front's threads.
    pub front_s: Option<f64>,
    pub sysbench_s: f64,
    /// The other systems' processes, idle meanwhile (for alone and semi-sync series
    /// this includes the benchmark's process with its idle lockstep cluster).
    pub idle_systems_s: f64,
    /// Every CPU's busy seconds, and what none of the processes above used: kernel
    /// threads (I/O completion, journaling) and other users of the machine.
    pub machine_busy_s: f64,
    pub rest_of_machine_s: f64,
}

/// What the front did during one series.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct FrontDelta {
    pub transactions: u64,
    pub acks: u64,
    pub sessions: u64,
    pub failures: u64,
}

/// The front's counters (from node 1's admin endpoint, `/fronts`).
#[derive(Clone, Copy, Debug, Default)]
struct FrontCounters {
    transactions: u64,
    acks: u64,
    sessions: u64,
    failures: u64,
}

/// Runs `lockstep-bench mariadb`.
pub fn run(args: &MariadbArgs) -> Result<(), Error> {
    let plan = Plan::new(args)?;
    // The servers must not outlive an interrupted run.
    interrupt::take_signals()?;
    demo::available().map_err(|why| format!("cannot run the MariaDB benchmark: {why}"))?;
    let sysbench_version = sysbench::available().map_err(|why| {
        format!("cannot run the MariaDB benchmark: {why}; ci/setup.sh installs it")
    })?;
    lockstep_sys::probe::io_uring().map_err(|why| format!("cannot run lockstep: {why}"))?;
    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/bench-mariadb"));
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("create {}: {e}", out_dir.display()))?;
    let work = Workdir::new(None)?;
    let dir = work.path();
    // The servers' account must reach their directories inside it.
    open_to_servers(dir)?;
    let logs = dir.join("sysbench");
    std::fs::create_dir_all(&logs).map_err(|e| format!("create {}: {e}", logs.display()))?;

    let cores = lockstep_sys::cpu::available_cores();
    let placement = match (args.placement, cores.first(), cores.last()) {
        (PlacementArg::Spread, Some(&first), Some(&last)) => Placement::Cores {
            primary: first,
            secondaries: last,
        },
        _ => Placement::ServerDefault,
    };
    let (profile_path, profile) =
        cluster::node_profile(args.profile.as_deref(), args.quick, dir, "mariadb")?;
    let probe = lockstep_sys::probe::storage(dir)
        .map_err(|e| format!("probe storage under {}: {e}", dir.display()))?;
    let (floor_io, floor_note) = FloorIo::choose(&probe);

    let mut systems = Vec::new();
    for kind in Kind::ALL {
        interrupt::check()?;
        eprintln!("starting {}", kind.slug());
        let s = start(kind, dir, profile_path.as_deref(), placement)
            .map_err(|e| format!("start {}: {e}", kind.slug()))?;
        systems.push(s);
    }
    for s in &mut systems {
        interrupt::check()?;
        let w = workload(&plan, &plan.tests[0], s.primary.port);
        eprintln!(
            "preparing {}: {} tables × {} rows",
            s.info.label, plan.tables, plan.table_size
        );
        let log = logs.join(format!("{}-prepare.log", s.info.kind.slug()));
        s.info.prepare_s = w.prepare(4, &log)?.as_secs_f64();
        let checked = verify(s, 0)?;
        s.info.verified = checked.0;
    }
    // Every process that could use CPU during a series, by system.
    let tracked: Vec<(Kind, &'static str, u32)> = systems
        .iter()
        .flat_map(|s| {
            let mut v = vec![(s.info.kind, "mariadb", s.primary_pid)];
            if let Some((_, pid)) = &s.replica {
                v.push((s.info.kind, "replica", *pid));
            }
            if s.cluster.is_some() {
                v.push((s.info.kind, "lockstep", std::process::id()));
            }
            v
        })
        .collect();

    let mut series: Vec<Series> = Vec::new();
    for test in &plan.tests {
        for &threads in &plan.threads {
            for kind in Kind::ALL {
                series.push(Series {
                    test: test.clone(),
                    threads,
                    kind,
                    per_round: Vec::new(),
                });
            }
        }
    }
    let mut floor = NetFloor::start(
        FarSide {
            core: cores.first().copied(),
            scratch: net_floor::scratch_path(dir, "remote"),
            scratch_bytes: profile.log_options().segment_bytes,
            io: floor_io,
            ring: profile.ring_options(),
        },
        FrameSizes::for_payload(TRANSACTION_BYTES),
    )?;
    let floor_window = Window {
        warm_up: Duration::from_millis(100),
        measure: if args.quick {
            Duration::from_millis(300)
        } else {
            Duration::from_secs(2)
        },
    };
    let mut floors = Vec::with_capacity(plan.rounds);
    let progress = Progress::new(plan.rounds);
    let group = Kind::ALL.len();
    let total = series.len();
    let run_started = Instant::now();
    for round in 0..plan.rounds {
        let started = Instant::now();
        progress.step(round, "floors");
        // The nodes zero their next segment files in the background after start and
        // after a log rolled over; that must not land on a floor or the first series.
        for s in &systems {
            if let Some(c) = &s.cluster {
                c.wait_segments_prepared(PREP_TIMEOUT)?;
            }
        }
        let rtt = floor.rtt(floor_window)?;
        let remote = floor.remote_dsync(floor_window)?;
        floors.push(Floors {
            rtt,
            dsync: remote.write,
            remote_dsync: remote.round_trip,
        });
        for g in (0..total).step_by(group) {
            for position in 0..group {
                let i = g + (position + round) % group;
                let (test, threads, kind) = {
                    let s = &series[i];
                    (s.test.clone(), s.threads, s.kind)
                };
                progress.bar(
                    round,
                    g + position,
                    total,
                    &format!("{test}, {threads} threads, {}", kind.slug()),
                );
                interrupt::check()?;
                let system = systems
                    .iter_mut()
                    .find(|s| s.info.kind == kind)
                    .expect("every kind runs");
                let log = logs.join(format!("{}-{test}-{threads}-r{round}.log", kind.slug()));
                let w = workload(&plan, &test, system.primary.port);
                let sample = measure(system, &tracked, &w, threads, &plan, &log)
                    .map_err(|e| format!("{}, {test}, {threads} threads: {e}", kind.slug()))?;
                series[i].per_round.push(Sample {
                    round,
                    position,
                    ..sample
                });
            }
        }
        progress.round_done(round, started.elapsed(), &round_summary(&series, round));
    }
    let took = run_started.elapsed();
    floor.finish()?;

    // Servers stop here (the cluster first, replicas before their primaries).
    let infos: Vec<SystemInfo> = systems.into_iter().map(stop).collect();
    let version = infos.first().map(|i| i.version.clone()).unwrap_or_default();
    let report = Report::new(
        Setup {
            mariadb: version,
            sysbench: sysbench_version,
            plan: plan.clone(),
            placement: placement.label(),
            cores: cores.len(),
            measured_seconds: took.as_secs_f64(),
            floor_io: floor_io.label().into(),
            notes: floor_note.into_iter().collect(),
        },
        floors,
        infos,
        series,
    );
    let md = report.markdown();
    println!(
        "\nlockstep-bench mariadb: {} rounds × {} s per series (+{} s warm-up), {} series per \
         round, {:.0} s",
        plan.rounds,
        plan.time_s,
        plan.warm_up_s,
        total,
        took.as_secs_f64()
    );
    print!("{md}");
    let written = report.write_files(&out_dir, &md)?;
    println!("\nwritten to {}: {}", out_dir.display(), written.join(", "));
    Ok(())
}

fn workload(plan: &Plan, test: &str, port: u16) -> Workload {
    Workload {
        test: test.to_string(),
        tables: plan.tables,
        table_size: plan.table_size,
        port,
        user: demo::APP_USER.into(),
        db: demo::APP_DB.into(),
    }
}

/// Starts one system under `dir` and waits until it is ready for clients, with
/// durability proven.
fn start(
    kind: Kind,
    dir: &Path,
    profile: Option<&Path>,
    placement: Placement,
) -> Result<System, Error> {
    let mdir = dir.join("mariadb");
    // The database servers of one system: at most a primary and a replica.
    let ports = lockstep::kit::free_ports(2)?;
    let (primary, replica, cluster) = match kind {
        Kind::Alone => (
            MariaDb::create(&mdir, "alone", ports[0], 1, Role::Alone, &[])?,
            None,
            None,
        ),
        Kind::SemiSync => {
            let p = MariaDb::create(&mdir, "semi-primary", ports[0], 2, Role::Primary, &[])?;
            let r = MariaDb::create(&mdir, "semi-replica", ports[1], 3, Role::Replica, &[])?;
            attach_replica(&p, &r, ATTACH_TIMEOUT)?;
            (p, Some(r), None)
        }
        Kind::Lockstep => {
            let p = MariaDb::create(&mdir, "lockstep-primary", ports[0], 4, Role::Primary, &[])?;
            let cdir = dir.join("lockstep");
            std::fs::create_dir_all(&cdir)
                .map_err(|e| format!("create {}: {e}", cdir.display()))?;
            let password = cdir.join("front.password");
            write_private(&password, demo::FRONT_PASSWORD)?;
            let front = format!(
                "{{ kind = \"mariadb\", primary = \"{}\", user = \"{}\", password_file = \"{}\" }}",
                p.addr(),
                demo::FRONT_USER,
                password.display()
            );
            let c = Cluster::start_with(
                &cdir,
                3,
                &[STREAM],
                profile,
                placement,
                &Extras {
                    front: Some(front),
                    admin: true,
                },
            )?;
            c.wait_ready(READY_TIMEOUT)?;
            wait_semi_sync(&p, ATTACH_TIMEOUT)?;
            (p, None, Some(c))
        }
    };
    let primary_pid = pid_of(&primary)?;
    let replica = match replica {
        Some(r) => {
            let pid = pid_of(&r)?;
            Some((r, pid))
        }
        None => None,
    };
    let version = format!("MariaDB {}", short_version(&primary.version));
    let (label, durability) = match kind {
        Kind::Alone => (
            format!("{version} alone"),
            "sync_binlog = 1, innodb_flush_log_at_trx_commit = 1, binlog on; no replica: \
             1 durable copy when COMMIT returns"
                .to_string(),
        ),
        Kind::SemiSync => (
            format!("{version} semi-sync"),
            "as alone, and lossless semi-sync (AFTER_SYNC, 49-day timeout) to one stock \
             MariaDB replica, which acks once its relay log has the events (written, not \
             synced: its default): 1 durable copy and 1 more in a replica's memory"
                .to_string(),
        ),
        Kind::Lockstep => (
            format!("{version} + lockstep strong"),
            "as semi-sync, with the front of a 3-node lockstep cluster as the only replica: \
             it acks once lockstep committed the transaction in strong mode (O_DIRECT + \
             RWF_DSYNC on its primary and both secondaries, k = 2): 4 durable copies"
                .to_string(),
        ),
    };
    let mut system = System {
        info: SystemInfo {
            kind,
            label,
            version,
            durability,
            verified: String::new(),
            prepare_s: 0.0,
        },
        primary,
        primary_pid,
        replica,
        cluster,
        state: None,
        front: None,
    };
    let (verified, _) = verify(&mut system, 0)?;
    system.info.verified = verified;
    Ok(system)
}

/// Stops a system once its clients are gone: the cluster first (its front then stops
/// reading the primary), then the replica, then the primary. Returns its description.
fn stop(s: System) -> SystemInfo {
    let System {
        info,
        primary,
        replica,
        cluster,
        ..
    } = s;
    if let Some(c) = cluster {
        c.shutdown();
    }
    drop(replica);
    drop(primary);
    info
}

/// A file only its owner may read (the front refuses a password file others can).
pub(crate) fn write_private(path: &Path, text: &str) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod {}: {e}", path.display()).into())
}

/// The server's process id, from its pid file (MariaDB writes it before it takes
/// clients, and `MariaDb::create` returns only once it does).
fn pid_of(db: &MariaDb) -> Result<u32, Error> {
    let path = db
        .data_dir()
        .parent()
        .map(|d| d.join(format!("{}.pid", db.name)))
        .ok_or("a server without a directory")?;
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
    text.trim()
        .parse()
        .map_err(|_| format!("{}: not a process id: {text:?}", path.display()).into())
}

/// Waits until `primary` is semi-synchronous with a replica connected (the front).
pub(crate) fn wait_semi_sync(primary: &MariaDb, timeout: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    loop {
        let state = PrimaryState::read(&mut primary.connect()?)?;
        if state.semi_sync_on && state.clients >= 1 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "MariaDB {}: the front did not connect as a semi-synchronous replica within \
                 {timeout:?} (semi-sync on: {}, clients: {})",
                primary.name, state.semi_sync_on, state.clients
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a check saw beyond its account, for the deltas of a series.
struct Checked {
    state: Option<PrimaryState>,
    front: Option<FrontCounters>,
}

/// Checks the system's durability (see the module docs); `transactions` is what
/// sysbench counted since the last check (0 before a series). Returns an account of
/// what is in force, and the counters that were read.
fn verify(s: &mut System, transactions: u64) -> Result<(String, Checked), Error> {
    let name = s.info.kind.slug();
    s.primary.check_alive()?;
    if let Some((r, _)) = s.replica.as_mut() {
        r.check_alive()?;
    }
    let state = PrimaryState::read(&mut s.primary.connect()?)?;
    if s.info.kind == Kind::Alone {
        let account = state.require_durable(name)?;
        return Ok((
            account,
            Checked {
                state: None,
                front: None,
            },
        ));
    }
    let mut account = state.require_lossless(name)?;
    if let Some(before) = &s.state {
        if state.no_tx != before.no_tx {
            return Err(format!(
                "{name}: {} commits returned without a replica's ack",
                state.no_tx - before.no_tx
            )
            .into());
        }
        let acked = state.yes_tx - before.yes_tx;
        if acked < transactions {
            return Err(format!(
                "{name}: the primary counted {acked} acknowledged commits, sysbench \
                 {transactions}"
            )
            .into());
        }
        account.push_str(&format!(
            "; {acked} commits acknowledged since the last check, none without"
        ));
    }
    if let Some((r, _)) = &s.replica {
        let acking = r
            .connect()?
            .show("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_slave_status'")?
            .into_iter()
            .next()
            .map(|(_, v)| v)
            .unwrap_or_default();
        if acking != "ON" {
            return Err(
                format!("{name}: the replica's Rpl_semi_sync_slave_status is {acking:?}").into(),
            );
        }
        account.push_str("; the replica acks (Rpl_semi_sync_slave_status = ON)");
    }
    let mut front = None;
    if let Some(c) = &s.cluster {
        c.check()?;
        c.wait_ready(Duration::from_secs(2))?;
        let admin = c.admin_addr().ok_or("node 1 has no admin endpoint")?;
        let now = front_counters(admin)?;
        if let Some(before) = &s.front {
            let committed = now.transactions - before.transactions;
            if committed < transactions {
                return Err(format!(
                    "{name}: the front committed {committed} transactions, sysbench counted \
                     {transactions}"
                )
                .into());
            }
        }
        account.push_str(
            "; lockstep: every member connected and in sync, no stream failed or degraded, \
             no commit in doubt",
        );
        front = Some(now);
    }
    s.state = Some(state.clone());
    s.front = front;
    Ok((
        account,
        Checked {
            state: Some(state),
            front,
        },
    ))
}

/// The front counters of stream [`STREAM`] from node 1's admin endpoint.
fn front_counters(admin: SocketAddr) -> Result<FrontCounters, Error> {
    let what = || format!("GET /fronts from {admin}");
    let mut sock = TcpStream::connect_timeout(&admin, Duration::from_secs(2))
        .map_err(|e| format!("{}: {e}", what()))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| format!("{}: {e}", what()))?;
    sock.write_all(b"GET /fronts HTTP/1.1\r\nHost: lockstep\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("{}: {e}", what()))?;
    let mut text = String::new();
    sock.read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", what()))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .ok_or_else(|| format!("{}: no body", what()))?;
    let fronts: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("{}: {e}", what()))?;
    let f = fronts
        .as_array()
        .and_then(|a| a.iter().find(|f| f["stream"] == STREAM.as_str()))
        .ok_or_else(|| format!("{}: no front of stream {}", what(), STREAM.as_str()))?;
    if f["connected"] != true {
        return Err(format!(
            "the front is not connected to its primary (last error: {})",
            f["last_error"]
        )
        .into());
    }
    let n = |k: &str| f[k].as_u64().unwrap_or(0);
    Ok(FrontCounters {
        transactions: n("transactions"),
        acks: n("acks"),
        sessions: n("sessions"),
        failures: n("failures"),
    })
}

/// CPU readings at one moment.
struct CpuSnapshot {
    processes: HashMap<u32, f64>,
    front_threads: HashMap<u32, f64>,
    children_s: f64,
    machine: Machine,
}

impl CpuSnapshot {
    fn take(tracked: &[(Kind, &'static str, u32)], front: bool) -> Result<CpuSnapshot, Error> {
        let mut processes = HashMap::new();
        for &(_, _, pid) in tracked {
            processes.insert(pid, proc_cpu::process_seconds(pid)?);
        }
        Ok(CpuSnapshot {
            processes,
            front_threads: if front {
                proc_cpu::threads_seconds("lockstep-front")?
            } else {
                HashMap::new()
            },
            children_s: proc_cpu::waited_children_seconds()?,
            machine: Machine::read()?,
        })
    }

    /// What every process used since `before`, for a series of system `kind`.
    fn since(
        &self,
        before: &CpuSnapshot,
        tracked: &[(Kind, &'static str, u32)],
        kind: Kind,
    ) -> CpuUse {
        let used = |pid: u32| self.processes[&pid] - before.processes[&pid];
        let mut cpu = CpuUse::default();
        let mut counted: Vec<u32> = Vec::new();
        for &(k, role, pid) in tracked {
            // The benchmark's process is tracked once even if listed for several roles.
            if counted.contains(&pid) {
                continue;
            }
            counted.push(pid);
            let s = used(pid);
            if k != kind {
                cpu.idle_systems_s += s;
                continue;
            }
            match role {
                "mariadb" => cpu.mariadb_s = s,
                "replica" => cpu.replica_s = Some(s),
                _ => cpu.lockstep_s = Some(s),
            }
        }
        if kind == Kind::Lockstep {
            cpu.front_s = Some(proc_cpu::threads_delta(
                &before.front_threads,
                &self.front_threads,
            ));
        }
        cpu.sysbench_s = self.children_s - before.children_s;
        cpu.machine_busy_s = self.machine.busy_s - before.machine.busy_s;
        let ours = cpu.mariadb_s
            + cpu.replica_s.unwrap_or(0.0)
            + cpu.lockstep_s.unwrap_or(0.0)
            + cpu.sysbench_s
            + cpu.idle_systems_s;
        cpu.rest_of_machine_s = (cpu.machine_busy_s - ours).max(0.0);
        cpu
    }
}

/// Verifies, runs and verifies again one series.
fn measure(
    system: &mut System,
    tracked: &[(Kind, &'static str, u32)],
    w: &Workload,
    threads: usize,
    plan: &Plan,
    log: &Path,
) -> Result<Sample, Error> {
    let (_, before) = verify(system, 0)?;
    let metrics_before: Option<Vec<StreamMetrics>> =
        system.cluster.as_ref().map(Cluster::primary_metrics);
    let kind = system.info.kind;
    let cpu_before = CpuSnapshot::take(tracked, kind == Kind::Lockstep)?;
    let run = w.run(threads, plan.warm_up_s, plan.time_s, log)?;
    let cpu_after = CpuSnapshot::take(tracked, kind == Kind::Lockstep)?;
    let (verified, after) = verify(system, run.transactions_all)?;
    system.info.verified = verified;
    let lockstep = match (&metrics_before, &system.cluster) {
        (Some(b), Some(c)) => Some(phase_delta(b, &c.primary_metrics(), STREAM.as_str())),
        _ => None,
    };
    let (acked, ack_wait_avg_us) = match (&before.state, &after.state) {
        (Some(b), Some(a)) => {
            let waits = a.tx_waits - b.tx_waits;
            let wait_us = a.tx_wait_time_us - b.tx_wait_time_us;
            (
                Some(a.yes_tx - b.yes_tx),
                (waits > 0).then(|| wait_us as f64 / waits as f64),
            )
        }
        _ => (None, None),
    };
    let front = match (&before.front, &after.front) {
        (Some(b), Some(a)) => Some(FrontDelta {
            transactions: a.transactions - b.transactions,
            acks: a.acks - b.acks,
            sessions: a.sessions - b.sessions,
            failures: a.failures - b.failures,
        }),
        _ => None,
    };
    let ms = |q: f64| run.hist.value_at_quantile(q) as f64 / 1e6;
    Ok(Sample {
        round: 0,
        position: 0,
        tps: run.per_s,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: run.hist.max() as f64 / 1e6,
        p99_ms_sysbench: run.p99_ms_sysbench,
        transactions: run.transactions,
        transactions_all: run.transactions_all,
        events: run.events,
        latencies: run.hist.len(),
        ignored_errors: run.ignored_errors,
        reconnects: run.reconnects,
        wall_s: run.wall.as_secs_f64(),
        cpu: cpu_after.since(&cpu_before, tracked, kind),
        acked,
        ack_wait_avg_us,
        front,
        lockstep,
    })
}

/// One line per round: each system's TPS at the largest thread count of each test.
fn round_summary(series: &[Series], round: usize) -> String {
    let max_threads = series.iter().map(|s| s.threads).max().unwrap_or(0);
    series
        .iter()
        .filter(|s| s.threads == max_threads)
        .filter_map(|s| {
            let x = s.per_round.iter().find(|x| x.round == round)?;
            Some(format!(
                "{} {} {}: {:.0} TPS",
                s.kind.slug(),
                s.test,
                s.threads,
                x.tps
            ))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quick_plan_and_the_full_plan() {
        let args = |quick| MariadbArgs {
            quick,
            time: None,
            warm_up: None,
            rounds: None,
            tests: Vec::new(),
            threads: Vec::new(),
            tables: None,
            table_size: None,
            out: None,
            profile: None,
            placement: PlacementArg::Spread,
        };
        let full = Plan::new(&args(false)).unwrap();
        assert_eq!(full.rounds, 3);
        assert_eq!(full.threads, [1, 16, 64]);
        assert_eq!(full.tests, ["oltp_insert", "oltp_write_only"]);
        let quick = Plan::new(&args(true)).unwrap();
        assert_eq!(quick.rounds, 1);
        assert_eq!(quick.threads, [1, 4]);
        assert_eq!(quick.tests, ["oltp_insert"]);
        let mut bad = args(true);
        bad.tests = vec!["fileio".into()];
        assert!(Plan::new(&bad).is_err());
        let mut bad = args(true);
        bad.threads = vec![0];
        assert!(Plan::new(&bad).is_err());
    }

    #[test]
    fn cpu_of_a_series_is_split_by_system_and_role() {
        let tracked = [
            (Kind::Alone, "mariadb", 10),
            (Kind::SemiSync, "mariadb", 20),
            (Kind::SemiSync, "replica", 21),
            (Kind::Lockstep, "mariadb", 30),
            (Kind::Lockstep, "lockstep", 99),
        ];
        let snap = |scale: f64, busy: f64| CpuSnapshot {
            processes: tracked
                .iter()
                .map(|&(_, _, p)| (p, p as f64 * scale))
                .collect(),
            front_threads: HashMap::from([(7, scale)]),
            children_s: 100.0 * scale,
            machine: Machine { busy_s: busy },
        };
        let (a, b) = (snap(1.0, 1000.0), snap(1.01, 1003.0));
        let cpu = b.since(&a, &tracked, Kind::SemiSync);
        assert!((cpu.mariadb_s - 0.2).abs() < 1e-9);
        assert!((cpu.replica_s.unwrap() - 0.21).abs() < 1e-9);
        assert_eq!(cpu.lockstep_s, None);
        assert_eq!(cpu.front_s, None);
        assert!((cpu.sysbench_s - 1.0).abs() < 1e-9);
        assert!((cpu.idle_systems_s - (0.1 + 0.3 + 0.99)).abs() < 1e-9);
        assert!((cpu.machine_busy_s - 3.0).abs() < 1e-9);
        let ours = 0.2 + 0.21 + 1.0 + 0.1 + 0.3 + 0.99;
        assert!((cpu.rest_of_machine_s - (3.0 - ours)).abs() < 1e-9);
        let cpu = b.since(&a, &tracked, Kind::Lockstep);
        assert!((cpu.lockstep_s.unwrap() - 0.99).abs() < 1e-9);
        assert!((cpu.front_s.unwrap() - 0.01).abs() < 1e-9);
    }
}
