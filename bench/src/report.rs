//! Results of `lockstep-bench log`: medians across rounds, ratios, goals, and their
//! markdown and JSON forms.
//!
//! Ratios are taken within a round first (a series against the floor measured minutes,
//! not hours, apart on the same device) and the median of those ratios is reported, so
//! that a slow phase of a shared machine cancels out instead of skewing one side.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use crate::stats::{Sample, median};
use crate::writers::{LogSample, Series, bytes_label};

/// Floors measured in every round, by write size.
pub const FLOOR_WRITE_BYTES: [usize; 2] = [4096, 8192];

/// Goal: one writer's p50 at most this many times the 4 KiB floor's p50.
pub const GOAL_P50_VS_FLOOR_MAX: f64 = 1.15;

/// Goal: 64 writers reach at least this many times one writer's records/s.
pub const GOAL_SCALING_MIN: f64 = 20.0;

/// Measurements of one round: the floors (in [`FLOOR_WRITE_BYTES`] order) and the log
/// series (in the run's series order).
pub struct Round {
    pub floors: Vec<Sample>,
    pub series: Vec<LogSample>,
}

/// How the run was made.
#[derive(Debug, Serialize)]
pub struct Setup {
    pub log_dir: PathBuf,
    pub log_kept: bool,
    pub log_io: String,
    pub floor_io: String,
    pub pinned_core: Option<usize>,
    pub rounds: usize,
    pub seconds_per_series: f64,
    pub warm_up_seconds: f64,
    pub segment_bytes: u64,
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct FloorRow {
    pub write_bytes: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub writes_per_s: f64,
    /// p50 ÷ the 4 KiB floor's p50 of the same round, median across rounds.
    pub p50_vs_floor_4k: f64,
    pub per_round: Vec<Sample>,
}

#[derive(Debug, Serialize)]
pub struct SeriesRow {
    pub writers: usize,
    pub payload_bytes: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub records_per_s: f64,
    pub records_per_write: f64,
    pub write_bytes_mean: f64,
    /// p50 ÷ the 4 KiB floor's p50 of the same round, median across rounds.
    pub p50_vs_floor_4k: f64,
    /// Size of the floor this series' writes match, if one was measured.
    pub same_size_floor_bytes: Option<usize>,
    /// p50 ÷ that floor's p50 of the same round, median across rounds.
    pub p50_vs_floor_same_size: Option<f64>,
    /// records/s ÷ the 1-writer series' of the same payload and round, median.
    pub records_per_s_vs_1_writer: Option<f64>,
    pub full_retries: u64,
    pub per_round: Vec<LogSample>,
}

#[derive(Debug, Serialize)]
pub struct Goal {
    pub name: String,
    /// The values behind `measured`, for the reader.
    pub detail: String,
    pub measured: f64,
    pub target: f64,
    pub met: bool,
}

impl Goal {
    /// One `goal: …: measured … → PASS|MISS` line per goal.
    pub fn lines(goals: &[Goal]) -> String {
        let mut out = String::new();
        for g in goals {
            let verdict = if g.met { "PASS" } else { "MISS" };
            let _ = writeln!(
                out,
                "goal: {}: measured {:.2} ({}) → {verdict}",
                g.name, g.measured, g.detail
            );
        }
        out
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub setup: Setup,
    pub floors: Vec<FloorRow>,
    pub series: Vec<SeriesRow>,
    pub goals: Vec<Goal>,
    /// Records appended (and made durable) by the whole run: the log's durable LSN.
    pub records_written: u64,
    /// Lowest LSN left in the log (see [`crate::log_bench`] on what a kept log keeps).
    pub first_lsn: u64,
}

impl Report {
    pub fn new(
        setup: Setup,
        series: &[Series],
        rounds: &[Round],
        records_written: u64,
        first_lsn: u64,
    ) -> Report {
        assert!(!rounds.is_empty());
        let floors: Vec<FloorRow> = FLOOR_WRITE_BYTES
            .iter()
            .enumerate()
            .map(|(i, &write_bytes)| {
                let per_round: Vec<Sample> = rounds.iter().map(|r| r.floors[i]).collect();
                FloorRow {
                    write_bytes,
                    p50_us: median(per_round.iter().map(|s| s.p50_us)),
                    p99_us: median(per_round.iter().map(|s| s.p99_us)),
                    p999_us: median(per_round.iter().map(|s| s.p999_us)),
                    writes_per_s: median(per_round.iter().map(|s| s.per_s)),
                    p50_vs_floor_4k: median(
                        rounds
                            .iter()
                            .map(|r| r.floors[i].p50_us / r.floors[0].p50_us),
                    ),
                    per_round,
                }
            })
            .collect();
        let rows: Vec<SeriesRow> = series
            .iter()
            .enumerate()
            .map(|(i, s)| series_row(series, rounds, i, s))
            .collect();
        let goals = goals(series, &rows, &floors[0]);
        Report {
            setup,
            floors,
            series: rows,
            goals,
            records_written,
            first_lsn,
        }
    }

    /// The results as a markdown table followed by the goal lines.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let io = &self.setup.floor_io;
        out.push_str(
            "| series | write | records/write | p50 µs | p99 µs | p99.9 µs | records/s \
             | p50 ÷ floor 4 KiB | p50 ÷ floor same size | records/s ÷ 1 writer |\n",
        );
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for f in &self.floors {
            let _ = writeln!(
                out,
                "| floor {} ({io}) | {} | — | {:.1} | {:.1} | {:.1} | {:.0} | {:.2} | 1.00 | — |",
                bytes_label(f.write_bytes),
                bytes_label(f.write_bytes),
                f.p50_us,
                f.p99_us,
                f.p999_us,
                f.writes_per_s,
                f.p50_vs_floor_4k,
            );
        }
        for s in &self.series {
            let label = Series {
                writers: s.writers,
                payload_bytes: s.payload_bytes,
            }
            .label();
            let _ = writeln!(
                out,
                "| {label} | {:.1} KiB | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.2} | {} | {} |",
                s.write_bytes_mean / 1024.0,
                s.records_per_write,
                s.p50_us,
                s.p99_us,
                s.p999_us,
                s.records_per_s,
                s.p50_vs_floor_4k,
                s.p50_vs_floor_same_size
                    .zip(s.same_size_floor_bytes)
                    .map_or("—".into(), |(r, b)| format!(
                        "{r:.2} ({})",
                        bytes_label(b)
                    )),
                s.records_per_s_vs_1_writer
                    .map_or("—".into(), |r| format!("{r:.1}")),
            );
        }
        out.push('\n');
        out.push_str(&Goal::lines(&self.goals));
        out
    }
}

fn series_row(series: &[Series], rounds: &[Round], i: usize, s: &Series) -> SeriesRow {
    let per_round: Vec<LogSample> = rounds.iter().map(|r| r.series[i]).collect();
    let lat = |f: fn(&Sample) -> f64| median(per_round.iter().map(|x| f(&x.latency)));
    let write_bytes_mean = median(per_round.iter().map(|x| x.write_bytes_mean));
    // The floor of the size this series writes, when the writes are (almost all) of one
    // measured size.
    let same_size = FLOOR_WRITE_BYTES
        .iter()
        .position(|&b| (write_bytes_mean - b as f64).abs() < 0.05 * b as f64);
    let one_writer = series
        .iter()
        .position(|o| o.writers == 1 && o.payload_bytes == s.payload_bytes);
    SeriesRow {
        writers: s.writers,
        payload_bytes: s.payload_bytes,
        p50_us: lat(|x| x.p50_us),
        p99_us: lat(|x| x.p99_us),
        p999_us: lat(|x| x.p999_us),
        records_per_s: lat(|x| x.per_s),
        records_per_write: median(per_round.iter().map(|x| x.records_per_write)),
        write_bytes_mean,
        p50_vs_floor_4k: median(
            rounds
                .iter()
                .map(|r| r.series[i].latency.p50_us / r.floors[0].p50_us),
        ),
        same_size_floor_bytes: same_size.map(|f| FLOOR_WRITE_BYTES[f]),
        p50_vs_floor_same_size: same_size.map(|f| {
            median(
                rounds
                    .iter()
                    .map(|r| r.series[i].latency.p50_us / r.floors[f].p50_us),
            )
        }),
        records_per_s_vs_1_writer: one_writer.map(|o| {
            median(
                rounds
                    .iter()
                    .map(|r| r.series[i].latency.per_s / r.series[o].latency.per_s),
            )
        }),
        full_retries: per_round.iter().map(|x| x.full_retries).sum(),
        per_round,
    }
}

fn goals(series: &[Series], rows: &[SeriesRow], floor_4k: &FloorRow) -> Vec<Goal> {
    let row = |writers: usize, payload_bytes: usize| {
        series
            .iter()
            .position(|s| s.writers == writers && s.payload_bytes == payload_bytes)
            .map(|i| &rows[i])
    };
    let mut goals = Vec::new();
    if let Some(r) = row(1, 256) {
        goals.push(Goal {
            name: format!(
                "1 writer, 256 B: p50 ≤ {GOAL_P50_VS_FLOOR_MAX} × raw 4 KiB floor \
                 (p50 ÷ floor, median of rounds)"
            ),
            detail: format!("p50 {:.1} µs vs. floor {:.1} µs", r.p50_us, floor_4k.p50_us),
            measured: r.p50_vs_floor_4k,
            target: GOAL_P50_VS_FLOOR_MAX,
            met: r.p50_vs_floor_4k <= GOAL_P50_VS_FLOOR_MAX,
        });
    }
    for payload in [256, 4096] {
        let (Some(many), Some(one)) = (row(64, payload), row(1, payload)) else {
            continue;
        };
        if let Some(x) = many.records_per_s_vs_1_writer {
            goals.push(Goal {
                detail: format!(
                    "{:.0} vs. {:.0} records/s",
                    many.records_per_s, one.records_per_s
                ),
                name: format!(
                    "64 writers ≥ {GOAL_SCALING_MIN} × 1-writer records/s, {} \
                     (ratio, median of rounds)",
                    bytes_label(payload)
                ),
                measured: x,
                target: GOAL_SCALING_MIN,
                met: x >= GOAL_SCALING_MIN,
            });
        }
    }
    goals
}
