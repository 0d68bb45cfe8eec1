//! Results of `lockstep-bench repl`: medians across rounds, ratios to the floor of the
//! same round, goals, and their markdown and JSON forms.
//!
//! The floor of a round is `rtt p50 + remote dsync p50` of that round (see
//! [`crate::net_floor`] for why). Every ratio is taken within a round first and the
//! median of the per-round ratios is reported, so a slow phase of a shared machine
//! cancels out instead of skewing one side.

use std::fmt::Write as _;

use serde::Serialize;

use crate::committers::Load;
use crate::net_floor::{FrameSizes, RemoteDsync};
use crate::report::Goal;
use crate::stats::{Sample, median};

/// Goal: strong mode, one client: p50 at most this many times the floor.
pub const GOAL_P50_VS_FLOOR_MAX: f64 = 1.5;

/// Goal: strong mode, many outstanding appends: at least this many commits/s.
pub const GOAL_COMMITS_PER_S_MIN: f64 = 100_000.0;

/// One series: a stream (by its mode) under a load.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Series {
    pub mode: &'static str,
    pub load: Load,
}

impl Series {
    pub fn label(&self) -> String {
        format!("{}, {}", self.mode, self.load.label())
    }
}

/// The primary's own view of a series: phase histograms of its commits (µs, as the
/// server records them; warm-up and drain included).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ServerPhases {
    /// Records committed.
    pub commits: u64,
    /// Append requests committed (each may hold many records).
    pub appends: u64,
    pub queued_p50_us: f64,
    pub local_durable_p50_us: f64,
    pub remote_ack_p50_us: f64,
    pub total_p50_us: f64,
}

/// Measurements of one round.
pub struct Round {
    pub rtt: Sample,
    pub remote: RemoteDsync,
    pub raw: Sample,
    pub series: Vec<Sample>,
    pub phases: Vec<ServerPhases>,
}

impl Round {
    /// The round's floor: rtt p50 + remote dsync p50, in µs.
    pub fn floor_us(&self) -> f64 {
        self.rtt.p50_us + self.remote.round_trip.p50_us
    }
}

/// How the run was made.
#[derive(Debug, Serialize)]
pub struct Setup {
    pub nodes: usize,
    pub shards_per_node: usize,
    pub payload_bytes: usize,
    pub placement: String,
    pub client_core: Option<usize>,
    pub floor_io: String,
    pub profile: Option<String>,
    pub frames: FrameSizes,
    pub rounds: usize,
    pub seconds_per_series: f64,
    pub warm_up_seconds: f64,
    /// Seconds waited before each round for the logs' spare segments to be prepared.
    pub segment_prep_wait_seconds: Vec<f64>,
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct FloorRow {
    pub name: &'static str,
    pub meaning: String,
    pub p50_us: f64,
    /// Not given for the `floor` row, which is a sum of two medians.
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    /// Round trips (or writes) per second, one at a time.
    pub per_s: Option<f64>,
    /// p50 ÷ the floor of the same round, median across rounds.
    pub p50_vs_floor: f64,
    pub per_round: Vec<Sample>,
}

#[derive(Debug, Serialize)]
pub struct SeriesRow {
    pub label: String,
    pub mode: &'static str,
    pub outstanding: usize,
    pub connections: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub commits_per_s: f64,
    /// p50 ÷ the floor of the same round, median across rounds.
    pub p50_vs_floor: f64,
    /// p50 ÷ the raw commit's p50 of the same round, median across rounds.
    pub p50_vs_raw_commit: f64,
    /// The primary's phase medians (median across rounds of the per-series p50s).
    pub server: ServerPhases,
    pub per_round: Vec<Sample>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub setup: Setup,
    pub floors: Vec<FloorRow>,
    pub series: Vec<SeriesRow>,
    pub goals: Vec<Goal>,
}

impl Report {
    pub fn new(setup: Setup, series: &[Series], rounds: &[Round]) -> Report {
        assert!(!rounds.is_empty());
        let f = &setup.frames;
        let med = |v: Vec<f64>| median(v);
        let floor_of = |s: &dyn Fn(&Round) -> Sample, name: &'static str, meaning: String| {
            let per_round: Vec<Sample> = rounds.iter().map(s).collect();
            FloorRow {
                name,
                meaning,
                p50_us: med(per_round.iter().map(|x| x.p50_us).collect()),
                p99_us: Some(med(per_round.iter().map(|x| x.p99_us).collect())),
                p999_us: Some(med(per_round.iter().map(|x| x.p999_us).collect())),
                per_s: Some(med(per_round.iter().map(|x| x.per_s).collect())),
                p50_vs_floor: med(rounds.iter().map(|r| s(r).p50_us / r.floor_us()).collect()),
                per_round,
            }
        };
        let mut floors = vec![
            floor_of(
                &|r| r.rtt,
                "rtt",
                format!(
                    "TCP round trip on loopback: an Append-sized frame ({} B) out, an \
                     Appended-sized one ({} B) back",
                    f.append, f.appended
                ),
            ),
            floor_of(
                &|r| r.remote.write,
                "dsync",
                "one 4 KiB O_DIRECT + RWF_DSYNC write through io_uring into a pre-zeroed \
                 file, timed by the far side of `remote dsync`"
                    .into(),
            ),
            floor_of(
                &|r| r.remote.round_trip,
                "remote dsync",
                format!(
                    "round trip of a Replicate-sized frame ({} B) and an Ack-sized reply \
                     ({} B), the far side making the dsync write before it answers",
                    f.replicate, f.ack
                ),
            ),
        ];
        let floor_per_round: Vec<f64> = rounds.iter().map(Round::floor_us).collect();
        floors.push(FloorRow {
            name: "floor",
            meaning: "rtt p50 + remote dsync p50 of the same round: client → primary, \
                      primary → secondary durable write → primary, primary → client, the \
                      primary's own write hidden in parallel; the least a strong commit \
                      can cost"
                .into(),
            p50_us: median(floor_per_round.iter().copied()),
            p99_us: None,
            p999_us: None,
            per_s: None,
            p50_vs_floor: 1.0,
            per_round: Vec::new(),
        });
        let rows: Vec<SeriesRow> = series
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let per_round: Vec<Sample> = rounds.iter().map(|r| r.series[i]).collect();
                let lat = |f: fn(&Sample) -> f64| median(per_round.iter().map(f));
                let ph =
                    |f: fn(&ServerPhases) -> f64| median(rounds.iter().map(|r| f(&r.phases[i])));
                SeriesRow {
                    label: s.label(),
                    mode: s.mode,
                    outstanding: s.load.outstanding,
                    connections: s.load.connections,
                    p50_us: lat(|x| x.p50_us),
                    p99_us: lat(|x| x.p99_us),
                    p999_us: lat(|x| x.p999_us),
                    commits_per_s: lat(|x| x.per_s),
                    p50_vs_floor: median(rounds.iter().map(|r| r.series[i].p50_us / r.floor_us())),
                    p50_vs_raw_commit: median(
                        rounds.iter().map(|r| r.series[i].p50_us / r.raw.p50_us),
                    ),
                    server: ServerPhases {
                        commits: rounds.iter().map(|r| r.phases[i].commits).sum(),
                        appends: rounds.iter().map(|r| r.phases[i].appends).sum(),
                        queued_p50_us: ph(|p| p.queued_p50_us),
                        local_durable_p50_us: ph(|p| p.local_durable_p50_us),
                        remote_ack_p50_us: ph(|p| p.remote_ack_p50_us),
                        total_p50_us: ph(|p| p.total_p50_us),
                    },
                    per_round,
                }
            })
            .collect();
        floors.push(floor_of(
            &|r| r.raw,
            "raw commit",
            format!(
                "a strong commit of bare parts, one at a time, on the cluster's cores and \
                 disk: client → primary thread, which starts its own dsync write and sends \
                 to {} secondary threads that each make the dsync write and ack, waits for \
                 all of them and replies; what lockstep would cost if it added nothing \
                 (three writes share one disk here)",
                setup.nodes - 1
            ),
        ));
        let goals = goals(&rows, &floors[3]);
        Report {
            setup,
            floors,
            series: rows,
            goals,
        }
    }

    /// The results as a markdown table, what each floor row means, and the goal lines.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "| series | p50 µs | p99 µs | p99.9 µs | commits/s | p50 ÷ floor | p50 ÷ raw commit |\n",
        );
        out.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
        let opt = |v: Option<f64>, digits: usize| {
            v.map_or("—".to_string(), |v| format!("{v:.digits$}"))
        };
        for f in &self.floors {
            let _ = writeln!(
                out,
                "| {} | {:.1} | {} | {} | {} | {:.2} | {} |",
                f.name,
                f.p50_us,
                opt(f.p99_us, 1),
                opt(f.p999_us, 1),
                opt(f.per_s, 0),
                f.p50_vs_floor,
                if f.name == "raw commit" {
                    "1.00"
                } else {
                    "—"
                },
            );
        }
        for s in &self.series {
            let _ = writeln!(
                out,
                "| {} | {:.1} | {:.1} | {:.1} | {:.0} | {:.2} | {:.2} |",
                s.label,
                s.p50_us,
                s.p99_us,
                s.p999_us,
                s.commits_per_s,
                s.p50_vs_floor,
                s.p50_vs_raw_commit,
            );
        }
        out.push('\n');
        for f in &self.floors {
            let _ = writeln!(out, "- {}: {}", f.name, f.meaning);
        }
        out.push_str(
            "- floor rows' commits/s column: round trips (or writes) per second, one at a \
             time\n",
        );
        out.push_str(
            "\nThe primary's own phase p50s (µs, server clocks, warm-up and drain included; \
             median of rounds; commits summed over the rounds):\n\n| series | commits | \
             queued | local durable | remote ack after local | total |\n\
             |---|---:|---:|---:|---:|---:|\n",
        );
        for s in &self.series {
            let p = &s.server;
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
                s.label,
                p.commits,
                p.queued_p50_us,
                p.local_durable_p50_us,
                p.remote_ack_p50_us,
                p.total_p50_us
            );
        }
        out.push('\n');
        out.push_str(&Goal::lines(&self.goals));
        out
    }
}

fn goals(rows: &[SeriesRow], floor: &FloorRow) -> Vec<Goal> {
    let mut goals = Vec::new();
    let strong = |pick: fn(&SeriesRow) -> bool| {
        rows.iter()
            .filter(|r| r.mode == "strong" && pick(r))
            .max_by_key(|r| r.outstanding)
    };
    if let Some(r) = strong(|r| r.outstanding == 1) {
        goals.push(Goal {
            name: format!(
                "strong, 1 client: p50 ≤ {GOAL_P50_VS_FLOOR_MAX} × floor \
                 (p50 ÷ floor, median of rounds)"
            ),
            detail: format!("p50 {:.1} µs vs. floor {:.1} µs", r.p50_us, floor.p50_us),
            measured: r.p50_vs_floor,
            target: GOAL_P50_VS_FLOOR_MAX,
            met: r.p50_vs_floor <= GOAL_P50_VS_FLOOR_MAX,
        });
    }
    if let Some(r) = strong(|r| r.outstanding > 1) {
        goals.push(Goal {
            name: format!(
                "strong, {}: ≥ {GOAL_COMMITS_PER_S_MIN:.0} commits/s (median of rounds)",
                Load {
                    outstanding: r.outstanding,
                    connections: r.connections
                }
                .label()
            ),
            detail: format!("p50 {:.1} µs", r.p50_us),
            measured: r.commits_per_s,
            target: GOAL_COMMITS_PER_S_MIN,
            met: r.commits_per_s >= GOAL_COMMITS_PER_S_MIN,
        });
    }
    goals
}
