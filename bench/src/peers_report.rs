//! Results of `lockstep-bench peers`: medians across rounds, ratios to lockstep strong,
//! goals, and their forms — a markdown table, JSON, one `.hgrm` file per series and SVG
//! charts.
//!
//! Every ratio is taken within a round (lockstep strong and the other system measured
//! seconds apart under the same load and payload) and the median across rounds is
//! reported, so a slow phase of a shared machine cancels out instead of favouring one
//! side. The `.hgrm` files and the percentile charts use each series' histogram merged
//! over all rounds; the table uses medians of the per-round summaries.

use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::Error;
use crate::hgrm;
use crate::peers_bench::{BASE_PAYLOAD_BYTES, Spec, SystemInfo};
use crate::plot::{Axis, Chart, Line};
use crate::pool::{Arrival, Measured};
use crate::report::Goal;
use crate::stats::{Sample, median};
use crate::writers::bytes_label;

/// Goal: lockstep strong's commits/s at 64 outstanding ≥ this many times each peer's.
pub const GOAL_COMMITS_RATIO_MIN: f64 = 10.0;

/// Goal: each peer's p99 at 1 client ≥ this many times lockstep strong's.
pub const GOAL_P99_RATIO_MIN: f64 = 5.0;

/// The reference system's index (lockstep strong, 2 secondaries).
const REFERENCE: usize = 0;

/// Percentile charts stop at 99.99 %.
const CURVE_X_MAX: f64 = 10_000.0;

/// What one series measured over the rounds.
#[derive(Default)]
pub struct SeriesResult {
    pub per_round: Vec<Sample>,
    pub hist: Option<Histogram<u64>>,
    pub refused: Option<String>,
}

impl SeriesResult {
    pub fn add(&mut self, m: Measured) -> Result<(), Error> {
        self.per_round.push(m.sample);
        match &mut self.hist {
            Some(h) => h
                .add(&m.hist)
                .map_err(|e| format!("merge histograms: {e:?}"))?,
            None => self.hist = Some(m.hist),
        }
        Ok(())
    }
}

/// The floors of one round.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Floors {
    pub rtt: Sample,
    pub dsync: Sample,
    pub remote_dsync: Sample,
}

#[derive(Debug, Serialize)]
pub struct Setup {
    pub rounds: usize,
    pub seconds_per_series: f64,
    pub warm_up_seconds: f64,
    pub base_payload_bytes: usize,
    pub open_loop_rate_per_s: f64,
    pub open_loop_connections: usize,
    pub floor_io: String,
    pub cores: usize,
    pub measured_seconds: f64,
    pub notes: Vec<String>,
    /// Peers not measured, one line each.
    pub skipped: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct FloorRow {
    pub name: &'static str,
    pub meaning: &'static str,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub per_round: Vec<Sample>,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub system: String,
    pub slug: String,
    pub load: String,
    pub arrival: Arrival,
    /// Closed loop: outstanding commits; open loop: connections in the pool.
    pub outstanding: usize,
    pub payload_bytes: usize,
    /// "measured", or why there are no numbers ("refused: …", "failed: …").
    pub status: String,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    pub commits_per_s: Option<f64>,
    /// Lockstep strong's commits/s ÷ this series', median of per-round ratios.
    pub strong_commits_per_s_over_this: Option<f64>,
    /// This series' p99 ÷ lockstep strong's, median of per-round ratios.
    pub this_p99_over_strong: Option<f64>,
    /// The `.hgrm` file of the merged rounds (values in µs).
    pub hgrm: Option<String>,
    pub per_round: Vec<Sample>,
    #[serde(skip)]
    hist: Option<Histogram<u64>>,
    #[serde(skip)]
    system_index: usize,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub setup: Setup,
    pub floors: Vec<FloorRow>,
    pub systems: Vec<SystemInfo>,
    pub series: Vec<Row>,
    pub goals: Vec<Goal>,
}

impl Report {
    pub fn new(
        setup: Setup,
        infos: Vec<SystemInfo>,
        specs: &[Spec],
        results: Vec<SeriesResult>,
        floors: &[Floors],
    ) -> Report {
        assert_eq!(specs.len(), results.len());
        let floor = |name, meaning, f: fn(&Floors) -> Sample| {
            let per_round: Vec<Sample> = floors.iter().map(f).collect();
            FloorRow {
                name,
                meaning,
                p50_us: median(per_round.iter().map(|s| s.p50_us)),
                p99_us: median(per_round.iter().map(|s| s.p99_us)),
                p999_us: median(per_round.iter().map(|s| s.p999_us)),
                per_round,
            }
        };
        let floor_rows = if floors.is_empty() {
            Vec::new()
        } else {
            vec![
                floor(
                    "rtt",
                    "TCP round trip on loopback (a 256 B append out, its answer back)",
                    |f| f.rtt,
                ),
                floor(
                    "dsync",
                    "one 4 KiB O_DIRECT + RWF_DSYNC write through io_uring into a \
                     pre-zeroed file on the benchmark's filesystem",
                    |f| f.dsync,
                ),
                floor(
                    "remote dsync",
                    "a round trip whose far side makes the dsync write before it answers",
                    |f| f.remote_dsync,
                ),
            ]
        };
        let reference = |spec: &Spec| {
            specs.iter().position(|s| {
                s.system == REFERENCE
                    && s.arrival == spec.arrival
                    && s.outstanding == spec.outstanding
                    && s.payload == spec.payload
            })
        };
        let samples: Vec<&[Sample]> = results.iter().map(|r| r.per_round.as_slice()).collect();
        let mut rows = Vec::with_capacity(specs.len());
        for (i, (spec, result)) in specs.iter().zip(&results).enumerate() {
            let info = &infos[spec.system];
            let measured = result.refused.is_none() && !result.per_round.is_empty();
            let per_round = &result.per_round;
            let med = |f: fn(&Sample) -> f64| measured.then(|| median(per_round.iter().map(f)));
            let ratio = |f: &dyn Fn(&Sample, &Sample) -> f64| {
                let j = reference(spec)?;
                let pairs: Vec<f64> = samples[j]
                    .iter()
                    .zip(samples[i])
                    .map(|(strong, this)| f(strong, this))
                    .collect();
                (measured && !pairs.is_empty()).then(|| median(pairs))
            };
            let status = match (&result.refused, &info.failed) {
                (Some(why), _) => format!("refused: {why}"),
                (None, _) if measured => "measured".into(),
                (None, Some(why)) => format!("failed: {why}"),
                (None, None) => "not run".into(),
            };
            rows.push(Row {
                system: info.label.clone(),
                slug: info.slug.clone(),
                load: spec.load_label(),
                arrival: spec.arrival,
                outstanding: spec.outstanding,
                payload_bytes: spec.payload,
                status,
                p50_us: med(|s| s.p50_us),
                p99_us: med(|s| s.p99_us),
                p999_us: med(|s| s.p999_us),
                commits_per_s: med(|s| s.per_s),
                strong_commits_per_s_over_this: ratio(&|strong, this| strong.per_s / this.per_s),
                this_p99_over_strong: ratio(&|strong, this| this.p99_us / strong.p99_us),
                hgrm: (measured && result.hist.is_some()).then(|| hgrm_name(info, spec)),
                per_round: per_round.clone(),
                hist: if measured { result.hist.clone() } else { None },
                system_index: spec.system,
            });
        }
        let remote_dsync_p99 = floor_rows
            .iter()
            .find(|f| f.name == "remote dsync")
            .map(|f| f.p99_us);
        let goals = goals(&infos, &rows, remote_dsync_p99);
        Report {
            setup,
            floors: floor_rows,
            systems: infos,
            series: rows,
            goals,
        }
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        for s in &self.setup.skipped {
            let _ = writeln!(out, "skipped: {s}");
        }
        for n in &self.setup.notes {
            let _ = writeln!(out, "note: {n}");
        }
        out.push_str("\nFloors of this machine (median of rounds):\n\n");
        out.push_str("| floor | p50 µs | p99 µs | p99.9 µs |\n|---|---:|---:|---:|\n");
        for f in &self.floors {
            let _ = writeln!(
                out,
                "| {} | {:.1} | {:.1} | {:.1} |",
                f.name, f.p50_us, f.p99_us, f.p999_us
            );
        }
        out.push('\n');
        for f in &self.floors {
            let _ = writeln!(out, "- {}: {}", f.name, f.meaning);
        }
        let base = |r: &&Row| r.payload_bytes == BASE_PAYLOAD_BYTES;
        let _ = writeln!(
            out,
            "\nCommits of {} payloads, by load (closed loop: N outstanding commits; open \
             loop: commits due at a fixed rate on a pool of {} connections, latency from \
             the due time):\n",
            bytes_label(BASE_PAYLOAD_BYTES),
            self.setup.open_loop_connections
        );
        table(&mut out, self.series.iter().filter(base), false);
        if self.series.iter().any(|r| !base(&r)) {
            out.push_str("\nBy payload, at 1 client and 64 outstanding:\n\n");
            let mut by_payload: Vec<&Row> = self.series.iter().collect();
            by_payload.sort_by_key(|r| (r.outstanding, r.payload_bytes));
            table(
                &mut out,
                by_payload
                    .into_iter()
                    .filter(|r| r.arrival == Arrival::Closed)
                    .filter(|r| r.outstanding == 1 || r.outstanding == 64)
                    .filter(|r| {
                        self.series
                            .iter()
                            .any(|o| o.system == r.system && o.payload_bytes != BASE_PAYLOAD_BYTES)
                    }),
                true,
            );
        }
        out.push_str(
            "\n- strong ÷ this: lockstep strong's commits/s (2 secondaries, same load and \
             payload) ÷ this row's; this ÷ strong: this row's p99 ÷ lockstep strong's. Both \
             are medians of per-round ratios; above 1 lockstep strong is ahead. The goals \
             below compare each peer with lockstep strong at equal durability instead (as \
             many durable copies, or more where no cluster has exactly as many).\n\n\
             Durability of each system, and the last check of it:\n\n",
        );
        for s in &self.systems {
            let _ = writeln!(
                out,
                "- {}: {}; durable copies when a commit returns: {}.",
                s.label, s.durability, s.durable_copies
            );
            let check = match &s.failed {
                Some(why) => format!("failed: {}", first_line(why)),
                None => s.verified.clone(),
            };
            let _ = writeln!(out, "  Checked: {check}.");
        }
        out.push('\n');
        out.push_str(&Goal::lines(&self.goals));
        out
    }

    /// Writes the markdown, the JSON, the `.hgrm` files and the charts into `dir`;
    /// returns what it wrote.
    pub fn write_files(&self, dir: &Path, markdown: &str) -> Result<Vec<String>, Error> {
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).map_err(|e| format!("write {}: {e}", p.display()))
        };
        let mut written = Vec::new();
        write("peers.md", markdown)?;
        written.push("peers.md".to_string());
        write("peers.json", &serde_json::to_string_pretty(self)?)?;
        written.push("peers.json".into());
        let hdir = dir.join("hgrm");
        std::fs::create_dir_all(&hdir).map_err(|e| format!("create {}: {e}", hdir.display()))?;
        let mut n = 0;
        for r in &self.series {
            if let (Some(name), Some(h)) = (&r.hgrm, &r.hist) {
                write(
                    &format!("hgrm/{name}"),
                    &hgrm::percentile_distribution(h, 1000.0),
                )?;
                n += 1;
            }
        }
        written.push(format!("hgrm/ ({n} files)"));
        for (name, chart) in self.charts() {
            write(&name, &chart.svg())?;
            written.push(name);
        }
        Ok(written)
    }

    /// The charts: percentile curves per load, commits/s by concurrency and by payload.
    pub fn charts(&self) -> Vec<(String, Chart)> {
        let mut charts = Vec::new();
        let base: Vec<&Row> = self
            .series
            .iter()
            .filter(|r| r.payload_bytes == BASE_PAYLOAD_BYTES && r.hist.is_some())
            .collect();
        let mut loads: Vec<(String, Arrival, usize)> = Vec::new();
        for r in &base {
            let interesting =
                r.arrival != Arrival::Closed || r.outstanding == 1 || r.outstanding == 64;
            if interesting && !loads.iter().any(|(l, _, _)| *l == r.load) {
                loads.push((r.load.clone(), r.arrival, r.outstanding));
            }
        }
        for (load, arrival, _) in loads {
            let rows: Vec<&&Row> = base.iter().filter(|r| r.load == load).collect();
            let curves: Vec<(usize, Vec<(f64, f64)>)> = rows
                .iter()
                .map(|r| {
                    let h = r.hist.as_ref().expect("filtered");
                    (
                        r.system_index,
                        hgrm::percentile_curve(h, 1000.0, CURVE_X_MAX),
                    )
                })
                .collect();
            let ys = curves.iter().flat_map(|(_, c)| c.iter().map(|p| p.1));
            let Some((lo, hi)) = range(ys) else { continue };
            let name = match arrival {
                Arrival::Open { .. } => "latency-open-loop.svg".to_string(),
                Arrival::Closed => format!("latency-{}.svg", load.replace(' ', "-")),
            };
            charts.push((
                name,
                Chart {
                    title: format!(
                        "Commit latency by percentile: {load}, {}",
                        bytes_label(BASE_PAYLOAD_BYTES)
                    ),
                    subtitle: format!(
                        "all rounds merged ({} × {:.1} s); lower is better{}",
                        self.setup.rounds,
                        self.setup.seconds_per_series,
                        if matches!(arrival, Arrival::Open { .. }) {
                            "; latency from each commit's due time"
                        } else {
                            ""
                        }
                    ),
                    x: Axis {
                        label: "percentile".into(),
                        min: 1.0,
                        max: CURVE_X_MAX,
                        ticks: [
                            (1.0, "0%"),
                            (2.0, "50%"),
                            (10.0, "90%"),
                            (100.0, "99%"),
                            (1000.0, "99.9%"),
                            (10_000.0, "99.99%"),
                        ]
                        .iter()
                        .map(|&(v, l)| (v, l.to_string()))
                        .collect(),
                    },
                    y: Axis::decades("commit latency", lo, hi, "µs"),
                    lines: curves
                        .into_iter()
                        .map(|(s, points)| self.line(s, points))
                        .collect(),
                },
            ));
        }
        // Commits/s by concurrency, closed loop, base payload.
        let by = |sel: &dyn Fn(&Row) -> Option<(f64, f64)>| -> Vec<Line> {
            (0..self.systems.len())
                .filter_map(|s| {
                    let points: Vec<(f64, f64)> = self
                        .series
                        .iter()
                        .filter(|r| r.system_index == s)
                        .filter_map(sel)
                        .collect();
                    (points.len() >= 2).then(|| self.line(s, points))
                })
                .collect()
        };
        let conc = by(&|r: &Row| {
            (r.arrival == Arrival::Closed && r.payload_bytes == BASE_PAYLOAD_BYTES)
                .then_some(())
                .and_then(|()| Some((r.outstanding as f64, r.commits_per_s?)))
        });
        if let Some(c) = self.per_s_chart(
            conc,
            "Commits/s by outstanding commits",
            format!(
                "closed loop, {} payloads; higher is better",
                bytes_label(BASE_PAYLOAD_BYTES)
            ),
            "outstanding commits (lockstep: pipelined on 1 connection; peers: 1 connection each)",
        ) {
            charts.push(("throughput.svg".into(), c));
        }
        let pay = by(&|r: &Row| {
            (r.arrival == Arrival::Closed && r.outstanding == 64)
                .then_some(())
                .and_then(|()| Some((r.payload_bytes as f64, r.commits_per_s?)))
        });
        if let Some(c) = self.per_s_chart(
            pay,
            "Commits/s by payload size",
            "closed loop, 64 outstanding; higher is better".into(),
            "payload",
        ) {
            charts.push(("payload.svg".into(), c));
        }
        charts
    }

    fn per_s_chart(
        &self,
        mut lines: Vec<Line>,
        title: &str,
        subtitle: String,
        x_label: &str,
    ) -> Option<Chart> {
        if lines.is_empty() {
            return None;
        }
        for l in &mut lines {
            l.points.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        let xs = lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
        let (xlo, xhi) = range(xs)?;
        let ys = lines.iter().flat_map(|l| l.points.iter().map(|p| p.1));
        let (ylo, yhi) = range(ys)?;
        let mut ticks = Vec::new();
        let mut v = xlo;
        while v <= xhi * 1.0001 {
            let label = if x_label == "payload" {
                bytes_label(v as usize)
            } else {
                format!("{v}")
            };
            ticks.push((v, label));
            v *= if x_label == "payload" { 4.0 } else { 2.0 };
        }
        if x_label != "payload" {
            // Powers of 4 read better than every power of 2 on a short axis.
            ticks.retain(|(v, _)| (v.log2().round() as i64) % 2 == 0 || ticks_len_small(xlo, xhi));
        }
        Some(Chart {
            title: title.into(),
            subtitle,
            x: Axis {
                label: x_label.into(),
                min: xlo,
                max: xhi,
                ticks,
            },
            y: Axis::decades("commits/s", ylo, yhi, ""),
            lines,
        })
    }

    fn line(&self, system: usize, points: Vec<(f64, f64)>) -> Line {
        let info = &self.systems[system];
        Line {
            label: info.label.clone(),
            points,
            colour: info.colour,
            bold: system == REFERENCE,
            dashed: info.dashed,
        }
    }
}

fn ticks_len_small(lo: f64, hi: f64) -> bool {
    hi / lo <= 16.0
}

/// The positive range of `values`.
fn range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| *v > 0.0 && v.is_finite())
        .fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    (hi > 0.0).then(|| {
        if hi > lo {
            (lo, hi)
        } else {
            (lo / 2.0, hi * 2.0)
        }
    })
}

fn table<'a>(out: &mut String, rows: impl Iterator<Item = &'a Row>, with_payload: bool) {
    let payload_col = if with_payload { " payload |" } else { "" };
    let payload_sep = if with_payload { "---:|" } else { "" };
    let _ = writeln!(
        out,
        "| system | load |{payload_col} p50 µs | p99 µs | p99.9 µs | commits/s | strong ÷ this, \
         commits/s | this ÷ strong, p99 |\n|---|---|{payload_sep}---:|---:|---:|---:|---:|---:|"
    );
    let num = |v: Option<f64>, d: usize| v.map_or("—".to_string(), |v| format!("{v:.d$}"));
    for r in rows {
        let payload = if with_payload {
            format!(" {} |", bytes_label(r.payload_bytes))
        } else {
            String::new()
        };
        if r.status != "measured" {
            let _ = writeln!(
                out,
                "| {} | {} |{payload} {} | — | — | — | — | — |",
                r.system,
                r.load,
                first_line(&r.status)
            );
            continue;
        }
        let _ = writeln!(
            out,
            "| {} | {} |{payload} {} | {} | {} | {} | {} | {} |",
            r.system,
            r.load,
            num(r.p50_us, 1),
            num(r.p99_us, 1),
            num(r.p999_us, 1),
            num(r.commits_per_s, 0),
            num(r.strong_commits_per_s_over_this, 2),
            num(r.this_p99_over_strong, 2),
        );
    }
}

/// The goals, each peer against lockstep strong at equal durability: the strong
/// cluster with the fewest durable copies that is at least the peer's count (the
/// table's ratio columns compare with 2 secondaries instead, more than any peer has).
///
/// `remote_dsync_p99`: the p99 of a round trip whose far side makes one durable write,
/// on this machine. Every strong commit contains one (the record to a secondary, its
/// durable write, the ack back), so a p99 goal below it cannot be met here by any
/// software, and its line says so.
fn goals(infos: &[SystemInfo], rows: &[Row], remote_dsync_p99: Option<f64>) -> Vec<Goal> {
    let mut goals = Vec::new();
    let find = |system: usize, outstanding: usize| {
        rows.iter().find(|r| {
            r.system_index == system
                && r.status == "measured"
                && r.arrival == Arrival::Closed
                && r.outstanding == outstanding
                && r.payload_bytes == BASE_PAYLOAD_BYTES
        })
    };
    // Median of per-round ratios, pairing the rounds of two rows.
    let ratio = |a: &Row, b: &Row, f: fn(&Sample, &Sample) -> f64| {
        let pairs: Vec<f64> = a
            .per_round
            .iter()
            .zip(&b.per_round)
            .map(|(x, y)| f(x, y))
            .collect();
        (!pairs.is_empty()).then(|| median(pairs))
    };
    for (s, info) in infos.iter().enumerate() {
        if info.lockstep {
            continue;
        }
        let Some(reference) = equal_durability(infos, info) else {
            continue;
        };
        let strong = &infos[reference];
        let copies = |n: u8| {
            if n == 1 {
                "1 durable copy".to_string()
            } else {
                format!("{n} durable copies")
            }
        };
        let against = format!(
            "{} ({}; {}: {})",
            strong.label,
            copies(strong.durable_copies),
            info.label,
            copies(info.durable_copies)
        );
        if let (Some(r), Some(st)) = (find(s, 64), find(reference, 64))
            && let (Some(x), Some(a), Some(b)) = (
                ratio(st, r, |st, this| st.per_s / this.per_s),
                st.commits_per_s,
                r.commits_per_s,
            )
        {
            goals.push(Goal {
                name: format!(
                    "{against} ≥ {GOAL_COMMITS_RATIO_MIN} × the commits/s of the peer at 64 \
                     outstanding (ratio, median of rounds)"
                ),
                detail: format!("{a:.0} vs. {b:.0} commits/s"),
                measured: x,
                target: GOAL_COMMITS_RATIO_MIN,
                met: x >= GOAL_COMMITS_RATIO_MIN,
            });
        }
        if let (Some(r), Some(st)) = (find(s, 1), find(reference, 1))
            && let (Some(x), Some(a), Some(b)) = (
                ratio(st, r, |st, this| this.p99_us / st.p99_us),
                st.p99_us,
                r.p99_us,
            )
        {
            goals.push(Goal {
                name: format!(
                    "{against}: p99 ≤ 1/{GOAL_P99_RATIO_MIN} of the peer's at 1 client (its \
                     p99 ÷ strong's, median of rounds)"
                ),
                detail: match remote_dsync_p99 {
                    Some(d) if b / GOAL_P99_RATIO_MIN < d => format!(
                        "p99 {a:.0} µs vs. {b:.0} µs; out of reach on this machine: 1/{} of \
                         the peer's p99 is {:.0} µs, less than the p99 of the remote durable \
                         write every strong commit contains, {d:.0} µs",
                        GOAL_P99_RATIO_MIN,
                        b / GOAL_P99_RATIO_MIN
                    ),
                    _ => format!("p99 {a:.0} µs vs. {b:.0} µs"),
                },
                measured: x,
                target: GOAL_P99_RATIO_MIN,
                met: x >= GOAL_P99_RATIO_MIN,
            });
        }
    }
    goals
}

/// The lockstep system a peer's goals compare with: strong (every copy durable before a
/// commit returns) with the fewest durable copies that is at least the peer's count.
fn equal_durability(infos: &[SystemInfo], peer: &SystemInfo) -> Option<usize> {
    infos
        .iter()
        .enumerate()
        .filter(|(_, i)| i.lockstep && i.synchronous && i.durable_copies >= peer.durable_copies)
        .min_by_key(|(_, i)| i.durable_copies)
        .map(|(k, _)| k)
}

/// `lockstep-strong-2_64-outstanding_256B.hgrm`.
fn hgrm_name(info: &SystemInfo, spec: &Spec) -> String {
    let load = match spec.arrival {
        Arrival::Closed => format!("{}-outstanding", spec.outstanding),
        Arrival::Open { rate_per_s } => format!("open-{rate_per_s:.0}-per-s"),
    };
    format!("{}_{load}_{}B.hgrm", info.slug, spec.payload)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(label: &str, lockstep: bool, synchronous: bool, durable_copies: u8) -> SystemInfo {
        SystemInfo {
            label: label.into(),
            slug: label.into(),
            version: String::new(),
            durability: String::new(),
            verified: String::new(),
            failed: None,
            lockstep,
            synchronous,
            durable_copies,
            colour: 0,
            dashed: false,
        }
    }

    #[test]
    fn a_peer_is_compared_with_the_strong_cluster_of_its_durability() {
        let full = [
            info("strong 2", true, true, 3),
            info("semi 2", true, false, 1),
            info("async 2", true, false, 1),
            info("strong 1", true, true, 2),
            info("strong 4", true, true, 5),
        ];
        let pg = info("pg", false, true, 2);
        let semi_sync = info("mariadb", false, true, 1);
        let five = info("five", false, true, 5);
        let six = info("six", false, true, 6);
        assert_eq!(equal_durability(&full, &pg), Some(3));
        // Never lockstep semi or async, even where their copies match.
        assert_eq!(equal_durability(&full, &semi_sync), Some(3));
        assert_eq!(equal_durability(&full, &five), Some(4));
        assert_eq!(equal_durability(&full, &six), None);
        // The quick run has only 2 secondaries: more durable than the peer, still a goal.
        assert_eq!(equal_durability(&full[..3], &pg), Some(0));
    }
}
