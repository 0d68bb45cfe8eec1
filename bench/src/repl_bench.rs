//! `lockstep-bench repl`: a lockstep cluster on loopback against the floor of a
//! replicated commit on the same machine.
//!
//! What it measures, in one run:
//! - the floor (see [`crate::net_floor`]): a loopback round trip (`rtt`), and a round
//!   trip whose far side makes one 4 KiB O_DIRECT + RWF_DSYNC write before it answers
//!   (`remote dsync`, which also yields the bare write time, `dsync`). The floor of one
//!   commit is `rtt + remote dsync`;
//! - the raw commit (see [`crate::raw_commit`]): the same strong commit made of bare
//!   threads, sockets and writes on the cluster's cores and disk, which shows what of the
//!   distance to the floor is the shared machine and what is lockstep;
//! - the cluster (see [`crate::cluster`]): a primary and `--secondaries` (default 2)
//!   [`lockstep::server::Server`]s in this process with one shard each, node 1 the
//!   primary of three streams, one per commit mode (strong, semi, async), sync set =
//!   every other node, k = all of them;
//! - per stream, lockstep's own [`lockstep::client::Client`] committing `--payload`-byte
//!   records (see [`crate::committers`]): one client with one append at a time, and
//!   `--outstanding` appends pipelined on `--connections` connections.
//!
//! Why: the goals are stated against the hardware, not in absolute numbers: one strong
//! commit should cost at most 1.5 × the floor, and the pipeline should carry 100k strong
//! commits/s. The machine is shared and noisy, so floors and series alternate in rounds
//! and the report gives medians of per-round values and ratios.
//!
//! Placement. The default, `--placement server`, leaves the nodes where `Server::start`
//! pins them when started from one process: every node's shard on the first core; the
//! clients run on the last core. `--placement spread` puts the primary on the first core
//! and the secondaries on the last, with the clients. On a 2-core VM, `server` measured
//! better (strong 1 client 1.21–1.24 × floor against 1.53–1.63, 64 outstanding 91–99k
//! against 78–86k commits/s, 5 rounds each): there the disk's interrupt and the
//! direct-I/O completion workers run on the last core, and secondaries sharing it with
//! them and the client wake up later. The floor's far end and the raw commit's primary
//! run on the primary's core, its secondaries on the secondaries' core; the floor's near
//! end and the raw commit's client run on the clients' core.
//!
//! With one connection the pipelined series is latency-bound, not capped by the
//! connection: commits/s ≈ outstanding ÷ latency (measured: 64 → 93k, 128 → 150k,
//! 256 → 186k commits/s), and spreading 64 over 2 or 4 connections (a thread each) was
//! slower on 2 cores (75k, 69k). Hence one connection by default.
//!
//! Everything lives in a temporary directory under ./target (never /tmp, which may be
//! tmpfs), removed at the end.

use std::path::Path;
use std::time::{Duration, Instant};

use lockstep::client::{Client, ClientOptions};
use lockstep::server::metrics::{PHASES, Phase, StreamMetrics};
use lockstep::wire::Mode;

use crate::cluster::{self, Cluster, Placement};
use crate::committers::{self, COMMIT_TIMEOUT, Load};
use crate::floor::FloorIo;
use crate::net_floor::{self, FarSide, FrameSizes, NetFloor};
use crate::raw_commit::{self, RawCommit};
use crate::repl_report::{Report, Round, Series, ServerPhases, Setup};
use crate::report::Goal;
use crate::stats;
use crate::workdir::{Progress, Workdir, pin_to, rounds_and_window};
use crate::writers::{bytes_label, payload_byte};
use crate::{Error, PlacementArg, ReplArgs};

/// The RDMA transport's goal: a strong commit of one client within this many times
/// the client's round trip plus one dsync write, measured in the same round.
const GOAL_RING_VS_LOCAL_MAX: f64 = 1.1;

/// How long the cluster may take to connect its members.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the logs may take to prepare their spare segments before a round.
const PREP_TIMEOUT: Duration = Duration::from_secs(120);

/// How long to wait for the shards to publish their metrics after a series (they
/// publish every 100 ms).
const PUBLISH_WAIT: Duration = Duration::from_millis(150);

/// Runs `lockstep-bench repl`: the whole measurement once per transport, then the
/// transports side by side.
pub fn run(args: &ReplArgs) -> Result<(), Error> {
    let mut rows = Vec::new();
    for t in &args.transport {
        if !matches!(t.as_str(), "tcp" | "rdma-emu" | "rdma" | "auto") {
            return Err(format!("--transport {t}: one of tcp, rdma-emu, rdma, auto").into());
        }
    }
    for t in &args.transport {
        println!("## transport {t}\n");
        rows.extend(run_transport(args, t)?);
        println!();
    }
    println!("## transports side by side (medians across rounds)\n");
    print!("{}", transports_table(&rows));
    print!("{}", Goal::lines(&transport_goals(&rows)));
    Ok(())
}

/// The RDMA transport's goals against TCP, from one run: a strong commit of one
/// client within 1.1 × (client round trip + one dsync write), and less CPU per
/// commit than TCP on every node.
fn transport_goals(rows: &[TransportRow]) -> Vec<Goal> {
    let one = |t: &str| {
        rows.iter()
            .find(|r| r.transport == t && r.mode == "strong" && r.outstanding == 1)
    };
    let mut goals = Vec::new();
    for t in ["rdma-emu", "rdma"] {
        let Some(r) = one(t) else { continue };
        goals.push(Goal {
            name: format!(
                "{t}, strong, 1 client: p50 ≤ {GOAL_RING_VS_LOCAL_MAX} × (rtt + dsync) \
                 (p50 ÷ (rtt + dsync), median of rounds)"
            ),
            detail: format!("p50 {:.1} µs", r.p50_us),
            measured: r.local_ratio,
            target: GOAL_RING_VS_LOCAL_MAX,
            met: r.local_ratio <= GOAL_RING_VS_LOCAL_MAX,
        });
        if let Some(tcp) = one("tcp") {
            let ratio = r
                .cpu_us_per_commit
                .iter()
                .zip(&tcp.cpu_us_per_commit)
                .map(|(a, b)| a / b.max(f64::MIN_POSITIVE))
                .fold(0.0, f64::max);
            let list = |v: &[f64]| {
                v.iter()
                    .map(|c| format!("{c:.1}"))
                    .collect::<Vec<_>>()
                    .join(" / ")
            };
            goals.push(Goal {
                name: format!(
                    "{t}, strong, 1 client: CPU per commit below tcp's on every node \
                     (the highest {t} ÷ tcp ratio)"
                ),
                detail: format!(
                    "µs per commit, nodes 1..: {t} {} vs. tcp {}",
                    list(&r.cpu_us_per_commit),
                    list(&tcp.cpu_us_per_commit)
                ),
                measured: ratio,
                target: 1.0,
                met: ratio < 1.0,
            });
        }
    }
    goals
}

/// One series of one transport, as the side-by-side table shows it.
struct TransportRow {
    transport: String,
    series: String,
    p50_us: f64,
    p99_us: f64,
    per_s: f64,
    /// p50 ÷ the floor (rtt + remote dsync) of the same round.
    floor_ratio: f64,
    /// p50 ÷ (rtt + one dsync write) of the same round: what a strong commit costs
    /// when the primary-to-member network share is gone.
    local_ratio: f64,
    mode: &'static str,
    outstanding: usize,
    /// Per node (node 1 the primary): CPU microseconds of its shard thread per commit.
    cpu_us_per_commit: Vec<f64>,
}

fn transports_table(rows: &[TransportRow]) -> String {
    let nodes = rows
        .iter()
        .map(|r| r.cpu_us_per_commit.len())
        .max()
        .unwrap_or(0);
    let mut head = vec![
        "transport".to_string(),
        "series".into(),
        "p50 µs".into(),
        "p99 µs".into(),
        "commits/s".into(),
        "p50 × floor".into(),
        "p50 × (rtt + dsync)".into(),
    ];
    head.extend((1..=nodes).map(|n| format!("CPU µs/commit n{n}")));
    let mut t = format!("| {} |\n|{}\n", head.join(" | "), "---|".repeat(head.len()));
    for r in rows {
        let cpu: Vec<String> = r
            .cpu_us_per_commit
            .iter()
            .map(|c| format!("{c:.1}"))
            .collect();
        t += &format!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {} |\n",
            r.transport,
            r.series,
            r.p50_us,
            r.p99_us,
            r.per_s,
            r.floor_ratio,
            r.local_ratio,
            cpu.join(" | ")
        );
    }
    t
}

/// CPU nanoseconds so far of each node's shard threads (`lockstep-n{node}-s{i}`) in
/// this process, by node id (1 = the primary), from /proc's schedstat.
fn shard_cpu_ns(nodes: usize) -> Vec<u64> {
    let mut per_node = vec![0u64; nodes];
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return per_node;
    };
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let Some(node) = comm
            .trim()
            .strip_prefix("lockstep-n")
            .and_then(|r| r.split('-').next())
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let ns = std::fs::read_to_string(t.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        if (1..=nodes).contains(&node) {
            per_node[node - 1] += ns;
        }
    }
    per_node
}

/// The profile of every node under `transport`: the given (or quick) profile's text
/// with the transport set.
fn profile_with_transport(
    path: Option<&Path>,
    dir: &Path,
    transport: &str,
) -> Result<std::path::PathBuf, Error> {
    let text = match path {
        Some(p) => std::fs::read_to_string(p).map_err(|e| format!("read {}: {e}", p.display()))?,
        None => String::new(),
    };
    if text
        .lines()
        .any(|l| l.trim_start().starts_with("transport"))
    {
        return Err("the profile sets transport itself: leave it to --transport".into());
    }
    let out = dir.join(format!("profile-{transport}.toml"));
    std::fs::write(&out, format!("transport = \"{transport}\"\n{text}"))
        .map_err(|e| format!("write {}: {e}", out.display()))?;
    Ok(out)
}

/// Runs the measurement with the peer links on `transport`.
fn run_transport(args: &ReplArgs, transport: &str) -> Result<Vec<TransportRow>, Error> {
    let defaults = if args.quick { (3, 0.15) } else { (7, 1.0) };
    let (rounds, window) = rounds_and_window(args.rounds, args.seconds, defaults)?;
    if args.payload == 0 || args.payload > lockstep::constants::PAYLOAD_BYTES_MAX {
        return Err(format!(
            "--payload {}: must be in 1..={}",
            args.payload,
            lockstep::constants::PAYLOAD_BYTES_MAX
        )
        .into());
    }
    if args.connections == 0 || args.outstanding < args.connections {
        return Err(format!(
            "--connections {} with --outstanding {}: need 1 ≤ connections ≤ outstanding",
            args.connections, args.outstanding
        )
        .into());
    }
    lockstep_sys::probe::io_uring()
        .map_err(|why| format!("cannot benchmark replication: {why}"))?;
    let work = Workdir::new(None)?;
    let dir = work.path();
    let mut notes = Vec::new();

    let probe = lockstep_sys::probe::storage(dir)
        .map_err(|e| format!("probe storage under {}: {e}", dir.display()))?;
    let (floor_io, why) = FloorIo::choose(&probe);
    notes.extend(why);

    // The profile: --profile, or for --quick small segments so that start-up is quick.
    let (profile_path, profile) =
        cluster::node_profile(args.profile.as_deref(), args.quick, dir, "repl")?;
    let profile_path = Some(profile_with_transport(
        profile_path.as_deref(),
        dir,
        transport,
    )?);
    notes.push(format!("peer links on {transport}"));

    let cores = lockstep_sys::cpu::available_cores();
    let (placement, primary_core, secondary_core, client_core) =
        place(args.placement, &cores, &mut notes);

    let modes = Mode::ALL;
    let loads = [
        Load {
            outstanding: 1,
            connections: 1,
        },
        Load {
            outstanding: args.outstanding,
            connections: args.connections,
        },
    ];
    let series: Vec<Series> = args
        .modes
        .iter()
        .flat_map(|m| {
            loads.iter().map(|&load| Series {
                mode: m.as_str(),
                load,
            })
        })
        .collect();

    let nodes = usize::from(args.secondaries) + 1;
    let cluster = Cluster::start(dir, nodes, &modes, profile_path.as_deref(), placement)?;
    let sizes = FrameSizes::for_payload(args.payload);
    let scratch_bytes = profile.log_options().segment_bytes;
    let mut floor = NetFloor::start(
        FarSide {
            core: primary_core,
            scratch: net_floor::scratch_path(dir, "remote"),
            scratch_bytes,
            io: floor_io,
            ring: profile.ring_options(),
        },
        sizes,
    )?;
    let mut raw = RawCommit::start(
        raw_commit::Sides {
            primary_core,
            secondary_core,
            scratch: (0..=args.secondaries)
                .map(|i| net_floor::scratch_path(dir, &format!("raw-{i}")))
                .collect(),
            scratch_bytes,
            io: floor_io,
            ring: profile.ring_options(),
        },
        sizes,
    )?;
    // The main thread drives the clients and the floor's near end; client threads it
    // starts inherit its core. Pinned only now: the nodes and the floor's far end were
    // started from it, and a thread can only pin itself within its own CPU set.
    let client_core = client_core.and_then(|c| pin_to(c, &mut notes));
    cluster.wait_ready(READY_TIMEOUT)?;
    let options = ClientOptions {
        timeout: COMMIT_TIMEOUT,
        ..ClientOptions::default()
    };
    let mut clients: Vec<Vec<Client>> = modes
        .iter()
        .map(|m| {
            (0..args.connections)
                .map(|_| {
                    Client::connect(cluster.addrs(), m.as_str(), options.clone())
                        .map_err(|e| format!("connect a client to stream {}: {e}", m.as_str()))
                })
                .collect::<Result<Vec<Client>, String>>()
        })
        .collect::<Result<_, _>>()?;
    let payload: Vec<u8> = (0..args.payload).map(payload_byte).collect();

    for n in &notes {
        eprintln!("note: {n}");
    }
    let progress = Progress::new(rounds);
    let mut measured = Vec::with_capacity(rounds);
    let mut before = cluster.primary_metrics();
    let mut prep_waits = Vec::with_capacity(rounds);
    // Per round, per series: CPU ns of each node's shard threads, and commits.
    let mut cpu: Vec<Vec<(Vec<u64>, u64)>> = Vec::with_capacity(rounds);
    for r in 0..rounds {
        let mut cpu_round = Vec::with_capacity(series.len());
        // Floors are measured on a quiet disk: no log still zeroing its next segment
        // (the series pay for the rollovers they cause themselves).
        progress.step(r, "waiting for segment preparation");
        prep_waits.push(cluster.wait_segments_prepared(PREP_TIMEOUT)?);
        let started = Instant::now();
        progress.step(r, "rtt");
        let rtt = floor.rtt(window)?;
        progress.step(r, "remote dsync");
        let remote = floor.remote_dsync(window)?;
        progress.step(r, "raw commit");
        let raw_sample = raw.run(window)?;
        let mut samples = Vec::with_capacity(series.len());
        let mut phases = Vec::with_capacity(series.len());
        for s in &series {
            progress.step(r, &s.label());
            let m = modes
                .iter()
                .position(|m| m.as_str() == s.mode)
                .expect("a configured mode");
            let cpu_before = shard_cpu_ns(nodes);
            let measured =
                committers::run(&mut clients[m], s.load, &payload, window).map_err(|e| {
                    match cluster.check() {
                        // The cluster's own account of what went wrong comes first.
                        Err(why) => format!("{}: {why}; the client saw: {e}", s.label()),
                        Ok(()) => format!("{}: {e}", s.label()),
                    }
                })?;
            let cpu_after = shard_cpu_ns(nodes);
            samples.push(measured.sample);
            std::thread::sleep(PUBLISH_WAIT);
            let after = cluster.primary_metrics();
            let delta = phase_delta(&before, &after, s.mode);
            let used: Vec<u64> = cpu_after
                .iter()
                .zip(&cpu_before)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect();
            cpu_round.push((used, delta.commits));
            phases.push(delta);
            before = after;
        }
        cluster.check()?;
        let round = Round {
            rtt,
            remote,
            raw: raw_sample,
            series: samples,
            phases,
        };
        progress.round_done(
            r,
            started.elapsed(),
            &format!(
                "floor p50 {:.1} µs, {}",
                round.floor_us(),
                series
                    .iter()
                    .zip(&round.series)
                    .map(|(s, x)| format!("{} p50 {:.0} µs {:.0}/s", s.label(), x.p50_us, x.per_s))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        measured.push(round);
        cpu.push(cpu_round);
    }
    drop(clients);
    cluster.shutdown();
    floor.finish()?;
    raw.finish()?;

    if prep_waits[0] > Duration::from_millis(100) {
        notes.push(format!(
            "waited {:.1} s after start-up (and at most {:.1} s before a later round) for \
             the logs to prepare their spare segments, so that no floor shares the disk \
             with that",
            prep_waits[0].as_secs_f64(),
            prep_waits[1..]
                .iter()
                .max()
                .map_or(0.0, Duration::as_secs_f64)
        ));
    }
    if cores.len() < nodes + 1 {
        notes.push(format!(
            "{} cores for {nodes} shards and the client: threads share cores, so the series \
             pay for wake-ups and context switches that a cluster of separate machines \
             would not (the raw commit pays them too)",
            cores.len()
        ));
    }
    let setup = Setup {
        nodes,
        shards_per_node: 1,
        payload_bytes: args.payload,
        placement: placement.label(),
        client_core,
        floor_io: floor_io.label().into(),
        profile: profile_path.as_ref().map(|p| p.display().to_string()),
        frames: sizes,
        rounds,
        seconds_per_series: window.measure.as_secs_f64(),
        warm_up_seconds: window.warm_up.as_secs_f64(),
        segment_prep_wait_seconds: prep_waits.iter().map(Duration::as_secs_f64).collect(),
        notes,
    };
    let report = Report::new(setup, &series, &measured);
    println!(
        "lockstep-bench repl: {nodes} nodes on loopback, {} payloads, {rounds} rounds × {:.2} s \
         per series (+{:.2} s warm-up), {}; clients on {}",
        bytes_label(args.payload),
        window.measure.as_secs_f64(),
        window.warm_up.as_secs_f64(),
        report.setup.placement,
        client_core.map_or("any core".into(), |c| format!("core {c}")),
    );
    for n in &report.setup.notes {
        println!("note: {n}");
    }
    println!("medians across rounds; ratios are taken within each round\n");
    print!("{}", report.markdown());
    if let Some(path) = &args.json {
        let path = if args.transport.len() > 1 {
            path.with_extension(format!("{transport}.json"))
        } else {
            path.clone()
        };
        write_json(&path, &report)?;
    }
    let rows = series
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let med = |f: &dyn Fn(&Round) -> f64| stats::median(measured.iter().map(f));
            let cpu_us_per_commit = (0..nodes)
                .map(|n| {
                    stats::median(cpu.iter().map(|round| {
                        let (used, commits) = &round[i];
                        used[n] as f64 / 1000.0 / (*commits).max(1) as f64
                    }))
                })
                .collect();
            TransportRow {
                transport: transport.to_string(),
                series: s.label(),
                p50_us: med(&|r| r.series[i].p50_us),
                p99_us: med(&|r| r.series[i].p99_us),
                per_s: med(&|r| r.series[i].per_s),
                floor_ratio: med(&|r| r.series[i].p50_us / r.floor_us()),
                local_ratio: med(&|r| r.series[i].p50_us / (r.rtt.p50_us + r.remote.write.p50_us)),
                mode: s.mode,
                outstanding: s.load.outstanding,
                cpu_us_per_commit,
            }
        })
        .collect();
    Ok(rows)
}

/// The placement, and the cores of the primary, the secondaries and the clients (for
/// the floor's and the raw commit's threads, which stand in for them).
fn place(
    arg: PlacementArg,
    cores: &[usize],
    notes: &mut Vec<String>,
) -> (Placement, Option<usize>, Option<usize>, Option<usize>) {
    let (Some(&first), Some(&last)) = (cores.first(), cores.last()) else {
        notes.push("the CPU set of this process is unknown: nothing is placed".into());
        return (Placement::ServerDefault, None, None, None);
    };
    match arg {
        PlacementArg::Spread => (
            Placement::Cores {
                primary: first,
                secondaries: last,
            },
            Some(first),
            Some(last),
            Some(last),
        ),
        PlacementArg::Server => (
            Placement::ServerDefault,
            Some(first),
            Some(first),
            Some(last),
        ),
    }
}

/// The primary's phase medians of the commits of stream `mode` between two snapshots.
pub(crate) fn phase_delta(
    before: &[StreamMetrics],
    after: &[StreamMetrics],
    mode: &str,
) -> ServerPhases {
    let find = |ms: &[StreamMetrics]| ms.iter().find(|m| m.stream == mode).cloned();
    let (Some(b), Some(a)) = (find(before), find(after)) else {
        return ServerPhases::default();
    };
    let p50 = |phase: Phase| {
        let i = PHASES.iter().position(|&p| p == phase).expect("a phase");
        let mut h = a.latency_us[i].clone();
        if h.subtract(&b.latency_us[i]).is_err() || h.is_empty() {
            return 0.0;
        }
        h.value_at_quantile(0.5) as f64
    };
    let total = PHASES
        .iter()
        .position(|&p| p == Phase::Total)
        .expect("a phase");
    ServerPhases {
        commits: a.commits.saturating_sub(b.commits),
        appends: a.latency_us[total]
            .len()
            .saturating_sub(b.latency_us[total].len()),
        queued_p50_us: p50(Phase::Queued),
        local_durable_p50_us: p50(Phase::LocalDurable),
        remote_ack_p50_us: p50(Phase::RemoteAck),
        total_p50_us: p50(Phase::Total),
    }
}

fn write_json(path: &Path, report: &Report) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()).into())
}
