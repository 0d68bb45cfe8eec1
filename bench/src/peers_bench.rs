//! `lockstep-bench peers`: lockstep beside what its users would pick instead —
//! PostgreSQL with a synchronous standby, MariaDB with lossless semi-sync, etcd — on
//! the same machine, in one run, measured by the same code with the same payloads,
//! concurrency and durability.
//!
//! What one run does:
//! - installs the peers' Debian packages if they are missing (root and apt-get only;
//!   `--no-install` never does), and skips a peer that cannot be had with one line
//!   saying why (see [`crate::peers::install`]);
//! - starts each peer in a temporary directory on loopback as an unprivileged account
//!   (see [`crate::peers`]), and lockstep clusters of 1, 2 and 4 secondaries in this
//!   process (see [`crate::cluster`]; `--quick`: 2 secondaries only);
//! - measures in rounds, interleaved: the floors (a loopback round trip, and one 4 KiB
//!   O_DIRECT + RWF_DSYNC write through io_uring on the benchmark's filesystem, see
//!   [`crate::net_floor`]), then every series: closed loop at 1 … 256 outstanding
//!   commits, and open loop at a fixed rate with latency from each commit's due time
//!   (see [`crate::pool`]); 256 B payloads, and 64 B … 64 KiB at 1 and 64 outstanding;
//! - verifies before and after every series that each system's durability was in
//!   force (a peer's replica synchronous and acking, lockstep's members in sync and no
//!   commit in doubt); a series without that proof is refused, not reported;
//! - writes a markdown table (medians across rounds; ratios to lockstep strong taken
//!   within each round), JSON, an `.hgrm` file per series and SVG charts to `--out`
//!   (see [`crate::peers_report`]), and tears every server down, on error too.
//!
//! How each system is driven, as its users would: lockstep's own client pipelines
//! outstanding appends on one connection; the peers answer one statement per
//! connection at a time, so N outstanding commits are N connections, one thread each.
//! One client is one connection for everyone, and so is the open loop (a pool of
//! connections). Lockstep's shards run on the first core and its clients on the last,
//! as in `lockstep-bench repl`; the peers' servers and clients are left to the
//! scheduler, which serves multi-process servers better than a fixed placement would
//! on two cores.
//!
//! Reference for the table's ratios: lockstep strong with 2 secondaries, which waits
//! for the durable write of every secondary — more durable copies than any peer here
//! (one standby, one replica, a majority of three). The goals compare each peer with
//! lockstep strong at equal durability: the strong cluster with as many durable copies
//! as the peer (1 secondary for all of them), or more where none has exactly as many.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lockstep::client::{Client, ClientOptions};
use lockstep::wire::Mode;

use crate::cluster::{self, Cluster, Placement};
use crate::committers::{self, COMMIT_TIMEOUT, Load};
use crate::floor::FloorIo;
use crate::interrupt;
use crate::net_floor::{self, FarSide, FrameSizes, NetFloor};
use crate::peers::etcd::{self, Etcd};
use crate::peers::install::{self, Package};
use crate::peers::mariadb::{self, MariaDb};
use crate::peers::postgres::{self, Postgres};
use crate::peers_report::{self, Floors, Report, SeriesResult};
use crate::pool::{self, Arrival, Conn, Measured};
use crate::stats::{Sample, Window};
use crate::workdir::{Progress, Workdir, rounds_and_window};
use crate::writers::payload_byte;
use crate::{Error, PeersArgs};

/// Payload of the concurrency sweep.
pub const BASE_PAYLOAD_BYTES: usize = 256;

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const PREP_TIMEOUT: Duration = Duration::from_secs(120);

/// The sizes of a run.
struct Plan {
    rounds: usize,
    window: Window,
    /// Closed-loop outstanding commits at the base payload.
    outstanding: Vec<usize>,
    /// Payloads measured at 1 and 64 outstanding besides the base one.
    payloads: Vec<usize>,
    /// Secondaries of the lockstep clusters; the first has all three modes.
    clusters: Vec<u8>,
    open_rate_per_s: f64,
    open_connections: usize,
}

impl Plan {
    fn new(args: &PeersArgs) -> Result<Plan, Error> {
        let defaults = if args.quick { (1, 0.3) } else { (3, 2.0) };
        let (rounds, window) = rounds_and_window(args.rounds, args.seconds, defaults)?;
        let plan = if args.quick {
            Plan {
                rounds,
                window,
                outstanding: vec![1, 64],
                payloads: Vec::new(),
                clusters: vec![2],
                open_rate_per_s: args.rate.unwrap_or(500.0),
                open_connections: 16,
            }
        } else {
            Plan {
                rounds,
                window,
                outstanding: vec![1, 4, 16, 64, 256],
                payloads: vec![64, 1 << 10, 4 << 10, 16 << 10, 64 << 10],
                clusters: vec![2, 1, 4],
                open_rate_per_s: args.rate.unwrap_or(1000.0),
                open_connections: 64,
            }
        };
        if !(plan.open_rate_per_s.is_finite() && plan.open_rate_per_s > 0.0) {
            return Err(format!("--rate {}: must be positive", plan.open_rate_per_s).into());
        }
        Ok(plan)
    }

    fn connections_max(&self) -> usize {
        self.outstanding
            .iter()
            .copied()
            .max()
            .unwrap_or(1)
            .max(self.open_connections)
    }
}

/// One series: a system under a load with a payload.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub system: usize,
    pub arrival: Arrival,
    /// Closed loop: outstanding commits; open loop: connections in the pool.
    pub outstanding: usize,
    pub payload: usize,
}

impl Spec {
    pub fn load_label(&self) -> String {
        match self.arrival {
            Arrival::Closed if self.outstanding == 1 => "1 client".into(),
            Arrival::Closed => format!("{} outstanding", self.outstanding),
            Arrival::Open { rate_per_s } => format!("open loop {rate_per_s:.0}/s"),
        }
    }
}

/// A system under test, as the report names it.
#[derive(Debug, serde::Serialize)]
pub struct SystemInfo {
    pub label: String,
    pub slug: String,
    pub version: String,
    pub durability: String,
    /// The last verification's account, or why a series was refused.
    pub verified: String,
    pub failed: Option<String>,
    pub lockstep: bool,
    /// Whether a commit returns only after every copy below is durable (lockstep strong
    /// and the peers; not lockstep semi or async).
    pub synchronous: bool,
    /// Machines whose disk holds a commit, fsynced, when the commit returns.
    pub durable_copies: u8,
    #[serde(skip)]
    pub colour: usize,
    #[serde(skip)]
    pub dashed: bool,
}

enum Driver {
    Lockstep {
        cluster: usize,
        clients: Vec<Client>,
    },
    Peer {
        server: PeerRef,
        conns: Vec<Box<dyn Conn>>,
    },
}

#[derive(Clone, Copy)]
enum PeerRef {
    Postgres,
    /// With the replica's fsync before its ack (`sync_relay_log = 1`), or without.
    MariaDb {
        replica_sync: bool,
    },
    Etcd,
}

struct System {
    info: SystemInfo,
    driver: Driver,
    payload_sweep: bool,
}

/// The peers' servers (dropped, and so stopped, when the run ends).
#[derive(Default)]
struct Peers {
    postgres: Option<Postgres>,
    mariadb: Option<MariaDb>,
    etcd: Option<Etcd>,
}

/// The peers that can be asked for with `--peers`.
pub const PEER_NAMES: [&str; 3] = ["postgresql", "mariadb", "etcd"];

fn package(name: &str) -> Package {
    match name {
        "postgresql" => Package {
            name: "postgresql",
            installed_if: || postgres::bin_dir().is_some(),
        },
        "mariadb" => Package {
            name: "mariadb-server",
            installed_if: || Path::new(mariadb::MARIADBD).exists(),
        },
        _ => Package {
            name: "etcd-server",
            installed_if: || Path::new(etcd::ETCD).exists(),
        },
    }
}

/// Runs `lockstep-bench peers`.
pub fn run(args: &PeersArgs) -> Result<(), Error> {
    let plan = Plan::new(args)?;
    // The peers' servers must not outlive an interrupted run.
    interrupt::take_signals()?;
    for p in &args.peers {
        if !PEER_NAMES.contains(&p.as_str()) {
            return Err(format!("--peers {p}: one of {}", PEER_NAMES.join(", ")).into());
        }
    }
    lockstep_sys::probe::io_uring().map_err(|why| format!("cannot benchmark lockstep: {why}"))?;
    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/bench-peers"));
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("create {}: {e}", out_dir.display()))?;
    let work = Workdir::new(None)?;
    let dir = work.path();
    // The peers' accounts must reach their directories inside it.
    open_to_servers(dir)?;
    let mut notes = Vec::new();
    let probe = lockstep_sys::probe::storage(dir)
        .map_err(|e| format!("probe storage under {}: {e}", dir.display()))?;
    let (floor_io, why) = FloorIo::choose(&probe);
    notes.extend(why);

    // Peers first: an install takes minutes and must not run beside a measurement.
    let wanted: Vec<&str> = PEER_NAMES
        .iter()
        .copied()
        .filter(|p| args.peers.is_empty() || args.peers.iter().any(|a| a == p))
        .collect();
    let mut skipped: Vec<String> = Vec::new();
    let missing = install::ensure(
        &wanted.iter().map(|p| package(p)).collect::<Vec<_>>(),
        !args.no_install,
    );
    let mut peers = Peers::default();
    for name in &wanted {
        interrupt::check()?;
        let pkg = package(name);
        if let Some((_, why)) = missing.iter().find(|(p, _)| p.name == pkg.name) {
            skipped.push(format!("{}: {why}", peer_title(name)));
            continue;
        }
        eprintln!("starting {}", peer_title(name));
        let pdir = dir.join(name);
        let started = match *name {
            "postgresql" => Postgres::start(&pdir).map(|p| peers.postgres = Some(p)),
            "mariadb" => MariaDb::start(&pdir).map(|m| peers.mariadb = Some(m)),
            _ => Etcd::start(&pdir).map(|e| peers.etcd = Some(e)),
        };
        if let Err(e) = started {
            skipped.push(format!("{}: could not be started: {e}", peer_title(name)));
        }
    }
    for s in &skipped {
        println!("skipped: {}", first_line(s));
    }

    // lockstep: one cluster per number of secondaries.
    let (profile_path, profile) =
        cluster::node_profile(args.profile.as_deref(), args.quick, dir, "peers")?;
    let cores = lockstep_sys::cpu::available_cores();
    let (primary_core, client_core) = (cores.first().copied(), cores.last().copied());
    let mut clusters = Vec::new();
    for (i, &secondaries) in plan.clusters.iter().enumerate() {
        let modes: &[Mode] = if i == 0 { &Mode::ALL } else { &[Mode::Strong] };
        let cdir = dir.join(format!("lockstep-{secondaries}"));
        std::fs::create_dir_all(&cdir).map_err(|e| format!("create {}: {e}", cdir.display()))?;
        let c = Cluster::start(
            &cdir,
            usize::from(secondaries) + 1,
            modes,
            profile_path.as_deref(),
            Placement::ServerDefault,
        )?;
        c.wait_ready(READY_TIMEOUT)?;
        interrupt::check()?;
        clusters.push((c, secondaries, modes));
    }

    // The systems, lockstep strong with 2 secondaries first: the reference.
    let conns_max = plan.connections_max();
    let options = ClientOptions {
        timeout: COMMIT_TIMEOUT,
        ..ClientOptions::default()
    };
    let mut systems = Vec::new();
    for (ci, (cluster, secondaries, modes)) in clusters.iter().enumerate() {
        for &mode in modes.iter() {
            let clients = (0..plan.open_connections.max(1))
                .map(|_| {
                    Client::connect(cluster.addrs(), mode.as_str(), options.clone())
                        .map_err(|e| format!("connect a client to stream {}: {e}", mode.as_str()))
                })
                .collect::<Result<Vec<Client>, String>>()?;
            let sec = if *secondaries == 1 {
                "1 secondary".to_string()
            } else {
                format!("{secondaries} secondaries")
            };
            systems.push(System {
                info: SystemInfo {
                    label: format!("lockstep {}, {sec}", mode.as_str()),
                    slug: format!("lockstep-{}-{secondaries}", mode.as_str()),
                    version: env!("CARGO_PKG_VERSION").into(),
                    durability: lockstep_durability(mode, *secondaries),
                    verified: String::new(),
                    failed: None,
                    lockstep: true,
                    synchronous: mode == Mode::Strong,
                    durable_copies: if mode == Mode::Strong {
                        secondaries + 1
                    } else {
                        1
                    },
                    colour: match (mode, secondaries) {
                        (Mode::Strong, 2) => 0,
                        (Mode::Semi, _) => 1,
                        (Mode::Async, _) => 2,
                        (_, 1) => 3,
                        _ => 4,
                    },
                    dashed: mode != Mode::Strong,
                },
                driver: Driver::Lockstep {
                    cluster: ci,
                    clients,
                },
                payload_sweep: ci == 0 && mode == Mode::Strong,
            });
        }
    }
    if let Some(pg) = &peers.postgres {
        let v = short_version(&pg.version);
        for (mode, colour, dashed) in [("on", 5, false), ("remote_apply", 6, true)] {
            match pg.connect(conns_max, mode) {
                Ok(conns) => systems.push(peer_system(
                    peer_info(
                        format!("PostgreSQL {v}, sync {mode}"),
                        format!("postgresql-{mode}"),
                        &pg.version,
                        postgres_durability(mode),
                        2,
                        colour,
                        dashed,
                    ),
                    PeerRef::Postgres,
                    conns,
                )),
                Err(e) => skipped.push(format!("PostgreSQL ({mode}): connect: {e}")),
            }
        }
    }
    if let Some(m) = &peers.mariadb {
        let v = short_version(&m.version);
        for (replica_sync, colour, dashed) in [(false, 7, true), (true, 9, false)] {
            // Without the replica's fsync, only the primary's disk holds a commit.
            let copies = if replica_sync { 2 } else { 1 };
            let (label, slug, durability) = if replica_sync {
                (
                    format!("MariaDB {v}, semi-sync, replica fsync"),
                    "mariadb-replica-fsync",
                    format!(
                        "{MARIADB_DURABILITY}; the replica syncs its relay log \
                         (sync_relay_log = 1) before it acks"
                    ),
                )
            } else {
                (
                    format!("MariaDB {v}, semi-sync"),
                    "mariadb",
                    format!(
                        "{MARIADB_DURABILITY}; the replica acks once the event is in its \
                         relay log, before an fsync (sync_relay_log = 10000, the default), \
                         as lockstep semi"
                    ),
                )
            };
            match m.connect(conns_max) {
                Ok(conns) => systems.push(peer_system(
                    peer_info(
                        label,
                        slug.into(),
                        &m.version,
                        durability,
                        copies,
                        colour,
                        dashed,
                    ),
                    PeerRef::MariaDb { replica_sync },
                    conns,
                )),
                Err(e) => skipped.push(format!("MariaDB: connect: {e}")),
            }
        }
    }
    if let Some(e) = &peers.etcd {
        match e.connect(conns_max) {
            Ok(conns) => systems.push(peer_system(
                peer_info(
                    format!("etcd {}, 3 members", short_version(&e.version)),
                    "etcd".into(),
                    &e.version,
                    ETCD_DURABILITY.into(),
                    2,
                    8,
                    false,
                ),
                PeerRef::Etcd,
                conns,
            )),
            Err(err) => skipped.push(format!("etcd: connect: {err}")),
        }
    }

    let specs = series(&plan, &systems);
    let sizes = FrameSizes::for_payload(BASE_PAYLOAD_BYTES);
    let mut floor = NetFloor::start(
        FarSide {
            core: primary_core,
            scratch: net_floor::scratch_path(dir, "remote"),
            scratch_bytes: profile.log_options().segment_bytes,
            io: floor_io,
            ring: profile.ring_options(),
        },
        sizes,
    )?;
    let payload_max = specs.iter().map(|s| s.payload).max().unwrap_or(1);
    let payload: Vec<u8> = (0..payload_max).map(payload_byte).collect();
    for n in &notes {
        eprintln!("note: {n}");
    }

    let progress = Progress::new(plan.rounds);
    let mut results: Vec<SeriesResult> = specs.iter().map(|_| SeriesResult::default()).collect();
    let mut floors = Vec::with_capacity(plan.rounds);
    let run_started = Instant::now();
    for r in 0..plan.rounds {
        let started = Instant::now();
        progress.step(r, "waiting for segment preparation");
        clusters[0].0.wait_segments_prepared(PREP_TIMEOUT)?;
        progress.step(r, "floor: rtt");
        let (rtt, remote) = on_core(client_core, || -> Result<_, Error> {
            Ok((floor.rtt(plan.window)?, floor.remote_dsync(plan.window)?))
        })?;
        floors.push(Floors {
            rtt,
            dsync: remote.write,
            remote_dsync: remote.round_trip,
        });
        for (step, i) in round_order(&specs, r).into_iter().enumerate() {
            let spec = &specs[i];
            progress.bar(
                r,
                step,
                specs.len(),
                &format!(
                    "{}, {}, {}",
                    systems[spec.system].info.label,
                    spec.load_label(),
                    crate::writers::bytes_label(spec.payload)
                ),
            );
            interrupt::check()?;
            let system = &mut systems[spec.system];
            if system.info.failed.is_some() || results[i].refused.is_some() {
                continue;
            }
            let body = &payload[..spec.payload];
            let outcome = measure(
                system,
                spec,
                body,
                &plan,
                &clusters,
                &mut peers,
                client_core,
            );
            match outcome {
                Ok((m, verified)) => {
                    system.info.verified = verified;
                    results[i].add(m)?;
                }
                Err(Outcome::Refused(why)) => {
                    eprintln!(
                        "refused: {}, {}: {why}",
                        system.info.label,
                        spec.load_label()
                    );
                    system.info.verified = format!("refused: {why}");
                    results[i].refused = Some(why);
                }
                Err(Outcome::Failed(why)) if !system.info.lockstep => {
                    eprintln!("failed: {}: {why}", system.info.label);
                    system.info.failed = Some(why);
                }
                Err(Outcome::Failed(why)) => {
                    return Err(
                        format!("{}, {}: {why}", system.info.label, spec.load_label()).into(),
                    );
                }
            }
        }
        for (c, _, _) in &clusters {
            c.check()?;
        }
        progress.round_done(
            r,
            started.elapsed(),
            &round_summary(&specs, &systems, &results, r),
        );
    }
    floor.finish()?;
    let took = run_started.elapsed();
    // Connections close before the servers stop.
    let infos: Vec<SystemInfo> = systems.into_iter().map(|s| s.info).collect();
    for (c, _, _) in clusters {
        c.shutdown();
    }
    drop(peers);

    let report = Report::new(
        peers_report::Setup {
            rounds: plan.rounds,
            seconds_per_series: plan.window.measure.as_secs_f64(),
            warm_up_seconds: plan.window.warm_up.as_secs_f64(),
            base_payload_bytes: BASE_PAYLOAD_BYTES,
            open_loop_rate_per_s: plan.open_rate_per_s,
            open_loop_connections: plan.open_connections,
            floor_io: floor_io.label().into(),
            cores: cores.len(),
            measured_seconds: took.as_secs_f64(),
            notes,
            skipped: skipped.iter().map(|s| first_line(s).to_string()).collect(),
        },
        infos,
        &specs,
        results,
        &floors,
    );
    let md = report.markdown();
    println!(
        "\nlockstep-bench peers: {} rounds × {:.2} s per series (+{:.2} s warm-up), {} systems, \
         {} series per round, {:.0} s",
        plan.rounds,
        plan.window.measure.as_secs_f64(),
        plan.window.warm_up.as_secs_f64(),
        report.systems.len(),
        specs.len(),
        took.as_secs_f64()
    );
    print!("{md}");
    let written = report.write_files(&out_dir, &md)?;
    println!("\nwritten to {}: {}", out_dir.display(), written.join(", "));
    Ok(())
}

/// Why a series has no result.
enum Outcome {
    /// Durability was not in force: the series is not reported.
    Refused(String),
    /// The system failed (an error of a commit or of a check).
    Failed(String),
}

/// Verifies, runs and verifies again one series.
fn measure(
    system: &mut System,
    spec: &Spec,
    payload: &[u8],
    plan: &Plan,
    clusters: &[(Cluster, u8, &[Mode])],
    peers: &mut Peers,
    client_core: Option<usize>,
) -> Result<(Measured, String), Outcome> {
    if let Driver::Peer {
        server: PeerRef::MariaDb { replica_sync },
        ..
    } = system.driver
        && let Some(m) = peers.mariadb.as_mut()
    {
        m.set_replica_sync(replica_sync)
            .map_err(|e| Outcome::Failed(e.to_string()))?;
    }
    let mut verify = |driver: &Driver, commits: u64| -> Result<String, Outcome> {
        match driver {
            Driver::Lockstep { cluster, .. } => {
                let c = &clusters[*cluster].0;
                c.check()
                    .and_then(|()| c.wait_ready(Duration::from_secs(2)))
                    .map_err(|e| Outcome::Refused(e.to_string()))?;
                Ok(
                    "every member connected and in sync, no stream degraded, no commit in \
                    doubt"
                        .into(),
                )
            }
            Driver::Peer { server, .. } => {
                let r = match server {
                    PeerRef::Postgres => peers.postgres.as_mut().map(Postgres::verify),
                    PeerRef::MariaDb { replica_sync } => peers
                        .mariadb
                        .as_mut()
                        .map(|m| m.verify(*replica_sync, commits)),
                    PeerRef::Etcd => peers.etcd.as_mut().map(Etcd::verify),
                };
                r.expect("a running peer")
                    .map_err(|e| Outcome::Refused(e.to_string()))
            }
        }
    };
    verify(&system.driver, 0)?;
    let arrival = spec.arrival;
    let window = plan.window;
    let result = match &mut system.driver {
        Driver::Lockstep { clients, .. } => on_core(client_core, || match arrival {
            Arrival::Closed => committers::run(
                clients,
                Load {
                    outstanding: spec.outstanding,
                    connections: 1,
                },
                payload,
                window,
            ),
            Arrival::Open { .. } => pool::run(clients, spec.outstanding, arrival, payload, window),
        }),
        Driver::Peer { conns, .. } => {
            let n = match arrival {
                Arrival::Closed => spec.outstanding,
                Arrival::Open { .. } => spec.outstanding,
            };
            pool::run(conns, n, arrival, payload, window)
        }
    };
    let m = result.map_err(|e| Outcome::Failed(e.to_string()))?;
    // Everything the clients counted, warm-up and drain included, must be acked.
    let verified = verify(&system.driver, m.sample.count)?;
    Ok((m, verified))
}

/// Runs `f` in a thread pinned to `core` (threads it starts inherit the pinning).
fn on_core<T: Send>(core: Option<usize>, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(c) = core {
                // Unpinned is still a valid measurement; the repl benchmark notes it too.
                let _ = lockstep_sys::cpu::pin_current_thread(c);
            }
            f()
        })
        .join()
        .expect("a measuring thread panicked")
    })
}

/// The series of one round, grouped by payload and load so that every system's series
/// of one load run close together in time.
fn series(plan: &Plan, systems: &[System]) -> Vec<Spec> {
    let mut specs = Vec::new();
    let mut group = |arrival: Arrival, outstanding: usize, payload: usize, sweep_only: bool| {
        for (i, s) in systems.iter().enumerate() {
            if !sweep_only || s.payload_sweep {
                specs.push(Spec {
                    system: i,
                    arrival,
                    outstanding,
                    payload,
                });
            }
        }
    };
    for &n in &plan.outstanding {
        group(Arrival::Closed, n, BASE_PAYLOAD_BYTES, false);
    }
    group(
        Arrival::Open {
            rate_per_s: plan.open_rate_per_s,
        },
        plan.open_connections,
        BASE_PAYLOAD_BYTES,
        false,
    );
    for &p in &plan.payloads {
        if p == BASE_PAYLOAD_BYTES {
            continue;
        }
        for n in [1, 64] {
            group(Arrival::Closed, n, p, true);
        }
    }
    specs
}

/// The order of the series in round `round`: group by group as [`series`] lists
/// them, each group's systems rotated by one place per round. A system's series can
/// leave work behind (a database flushing its buffers after the load stopped) that
/// lands on whichever series runs next; rotating spreads that over every system
/// instead of always charging it to the same one.
fn round_order(specs: &[Spec], round: usize) -> Vec<usize> {
    let mut order = Vec::with_capacity(specs.len());
    let mut start = 0;
    while start < specs.len() {
        let same = |s: &Spec| {
            let g = &specs[start];
            s.arrival == g.arrival && s.outstanding == g.outstanding && s.payload == g.payload
        };
        let len = specs[start..].iter().take_while(|s| same(s)).count();
        order.extend((0..len).map(|k| start + (k + round) % len));
        start += len;
    }
    order
}

fn round_summary(
    specs: &[Spec],
    systems: &[System],
    results: &[SeriesResult],
    round: usize,
) -> String {
    specs
        .iter()
        .zip(results)
        .filter(|(s, _)| s.payload == BASE_PAYLOAD_BYTES && s.arrival == Arrival::Closed)
        .filter(|(s, _)| s.outstanding == 1 || s.outstanding == 64)
        .filter_map(|(s, r)| {
            let x: &Sample = r.per_round.get(round)?;
            Some(format!(
                "{} {}: p99 {:.0} µs {:.0}/s",
                systems[s.system].info.slug, s.outstanding, x.p99_us, x.per_s
            ))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A peer's system, its connections driven as [`Conn`]s, in every payload series.
fn peer_system<C: Conn + 'static>(info: SystemInfo, server: PeerRef, conns: Vec<C>) -> System {
    System {
        info,
        driver: Driver::Peer {
            server,
            conns: conns
                .into_iter()
                .map(|c| Box::new(c) as Box<dyn Conn>)
                .collect(),
        },
        payload_sweep: true,
    }
}

fn peer_info(
    label: String,
    slug: String,
    version: &str,
    durability: String,
    durable_copies: u8,
    colour: usize,
    dashed: bool,
) -> SystemInfo {
    SystemInfo {
        label,
        slug,
        version: version.to_string(),
        durability,
        verified: String::new(),
        failed: None,
        lockstep: false,
        synchronous: true,
        durable_copies,
        colour,
        dashed,
    }
}

fn lockstep_durability(mode: Mode, secondaries: u8) -> String {
    match mode {
        Mode::Strong => format!(
            "commit after the primary's durable write (O_DIRECT + RWF_DSYNC) and the durable \
             write of all {secondaries} in the sync set (k = {secondaries})"
        ),
        Mode::Semi => format!(
            "commit after the primary's durable write and receipt (not yet durable) by all \
             {secondaries} secondaries"
        ),
        Mode::Async => "commit after the primary's durable write; secondaries follow".into(),
    }
}

fn postgres_durability(mode: &str) -> String {
    let what = if mode == "on" {
        "flushed the WAL to disk"
    } else {
        "flushed and applied the WAL"
    };
    format!(
        "fsync = on; 1 synchronous standby (synchronous_standby_names); synchronous_commit = \
         {mode}: a commit returns after the primary's WAL flush and after the standby {what}"
    )
}

const MARIADB_DURABILITY: &str = "sync_binlog = 1, innodb_flush_log_at_trx_commit = 1; \
    semi-sync AFTER_SYNC to 1 replica with a 49-day timeout";

const ETCD_DURABILITY: &str = "3 members; a put commits after the leader and a majority \
    fsynced it to their WAL (etcd's default)";

fn peer_title(name: &str) -> &'static str {
    match name {
        "postgresql" => "PostgreSQL",
        "mariadb" => "MariaDB",
        _ => "etcd",
    }
}

/// `15.18` from `postgres (PostgreSQL) 15.18 (Debian ...)`, `10.11` from MariaDB's
/// `Ver 10.11.14-MariaDB-...`, `3.4` from `etcd Version: 3.4.23`.
pub(crate) fn short_version(full: &str) -> String {
    full.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|w| w.contains('.') && w.starts_with(|c: char| c.is_ascii_digit()))
        .map(|w| w.split('.').take(2).collect::<Vec<_>>().join("."))
        .unwrap_or_else(|| full.to_string())
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

/// Lets the peers' accounts reach their directories under `dir`: `dir` itself and
/// every parent must be searchable by others (a temporary directory is made 0700).
pub(crate) fn open_to_servers(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let abs = cluster::absolute(dir)?;
    let meta = std::fs::metadata(&abs).map_err(|e| format!("stat {}: {e}", abs.display()))?;
    let mut perm = meta.permissions();
    perm.set_mode(perm.mode() | 0o711);
    std::fs::set_permissions(&abs, perm).map_err(|e| format!("chmod {}: {e}", abs.display()))?;
    for p in abs.ancestors().skip(1) {
        let mode = std::fs::metadata(p)
            .map_err(|e| format!("stat {}: {e}", p.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(format!(
                "{} is not searchable by other users, so the peers' servers (which run as \
                 their own accounts) cannot reach their directories; run from elsewhere or \
                 chmod o+x it",
                p.display()
            )
            .into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_rotate_the_systems_within_each_group() {
        let spec = |system, outstanding| Spec {
            system,
            arrival: Arrival::Closed,
            outstanding,
            payload: BASE_PAYLOAD_BYTES,
        };
        let specs = [spec(0, 1), spec(1, 1), spec(2, 1), spec(0, 64), spec(1, 64)];
        assert_eq!(round_order(&specs, 0), [0, 1, 2, 3, 4]);
        assert_eq!(round_order(&specs, 1), [1, 2, 0, 4, 3]);
        assert_eq!(round_order(&specs, 2), [2, 0, 1, 3, 4]);
    }

    #[test]
    fn versions_are_cut_to_major_and_minor() {
        assert_eq!(
            short_version("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"),
            "15.18"
        );
        assert_eq!(
            short_version("mariadbd  Ver 10.11.14-MariaDB-0+deb12u2 for debian-linux-gnu"),
            "10.11"
        );
        assert_eq!(short_version("etcd Version: 3.4.23"), "3.4");
    }
}
