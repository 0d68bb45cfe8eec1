//! Results of `lockstep-bench mariadb`: medians across rounds, ratios to MariaDB alone
//! and to stock semi-sync, CPU per transaction, the goals, and their forms — a markdown
//! table, JSON with every round, and SVG charts.
//!
//! Every ratio is taken within a round (the two systems measured seconds apart under
//! the same test and threads) and the median across rounds is reported, so a slow
//! phase of the shared machine cancels out instead of favouring one side. Every other
//! number is the median of the rounds' values.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::Error;
use crate::mariadb_bench::{Kind, Plan, Sample, SystemInfo};
use crate::plot::{Axis, Chart, Line};
use crate::report::Goal;
use crate::stats::{Sample as Floor, median};

/// Goal: lockstep's TPS at the largest thread count ≥ this many times MariaDB alone's.
pub const GOAL_VS_ALONE_MIN: f64 = 0.9;

/// Goal: lockstep's TPS at the largest thread count ≥ this many times semi-sync's.
pub const GOAL_VS_SEMI_SYNC_MIN: f64 = 1.0;

/// One series over the rounds: a system under a test at a number of threads.
#[derive(Debug, Serialize)]
pub struct Series {
    pub test: String,
    pub threads: usize,
    pub kind: Kind,
    pub per_round: Vec<Sample>,
}

#[derive(Debug, Serialize)]
pub struct Setup {
    pub mariadb: String,
    pub sysbench: String,
    pub plan: Plan,
    pub placement: String,
    pub cores: usize,
    pub measured_seconds: f64,
    /// How the floors' durable write is made.
    pub floor_io: String,
    pub notes: Vec<String>,
}

/// The floors of one round (see `mariadb_bench`'s module docs).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Floors {
    /// Loopback round trip.
    pub rtt: Floor,
    /// One 4 KiB durable write.
    pub dsync: Floor,
    /// A round trip whose far side makes that write before it answers.
    pub remote_dsync: Floor,
}

/// CPU per transaction (µs), medians across rounds, over sysbench's whole run.
#[derive(Debug, Default, Serialize)]
pub struct CpuPerTx {
    pub mariadb_us: f64,
    pub replica_us: Option<f64>,
    pub lockstep_us: Option<f64>,
    pub front_us: Option<f64>,
    pub sysbench_us: f64,
    /// The system's processes and sysbench together.
    pub total_us: f64,
    /// Busy cores of the whole machine, and of its rest (kernel threads, other users).
    pub machine_busy_cores: f64,
    pub rest_of_machine_cores: f64,
}

/// lockstep's side of a series: what the front and the primary's commits did.
#[derive(Debug, Default, Serialize)]
pub struct LockstepView {
    /// Transactions per semi-sync ACK the front sent (ACKs cover batches).
    pub transactions_per_ack: Option<f64>,
    /// lockstep append requests per MariaDB transaction (an append carries every
    /// transaction the front batched while earlier appends were in flight).
    pub appends_per_transaction: Option<f64>,
    /// p50 of the primary's commit phases (µs): queued, local durable write, remote
    /// ack after it, total.
    pub queued_p50_us: f64,
    pub local_durable_p50_us: f64,
    pub remote_ack_p50_us: f64,
    pub total_p50_us: f64,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub test: String,
    pub threads: usize,
    pub kind: Kind,
    pub system: String,
    pub tps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// This row's TPS ÷ MariaDB alone's, and ÷ semi-sync's; medians of per-round ratios.
    pub tps_over_alone: Option<f64>,
    pub tps_over_semi_sync: Option<f64>,
    /// The primary's mean wait for a semi-sync ACK (µs).
    pub ack_wait_avg_us: Option<f64>,
    pub cpu_per_tx: CpuPerTx,
    pub lockstep: Option<LockstepView>,
    pub ignored_errors: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub setup: Setup,
    /// Every round's floors.
    pub floors: Vec<Floors>,
    pub systems: Vec<SystemInfo>,
    pub rows: Vec<Row>,
    pub goals: Vec<Goal>,
    /// Every series with every round's measurements.
    pub series: Vec<Series>,
}

impl Report {
    pub fn new(
        setup: Setup,
        floors: Vec<Floors>,
        systems: Vec<SystemInfo>,
        series: Vec<Series>,
    ) -> Report {
        let find = |s: &Series, kind: Kind| {
            series
                .iter()
                .find(|o| o.kind == kind && o.test == s.test && o.threads == s.threads)
        };
        let rows: Vec<Row> = series
            .iter()
            .filter(|s| !s.per_round.is_empty())
            .map(|s| {
                let label = systems
                    .iter()
                    .find(|i| i.kind == s.kind)
                    .map_or_else(|| s.kind.slug().to_string(), |i| i.label.clone());
                row(s, label, find(s, Kind::Alone), find(s, Kind::SemiSync))
            })
            .collect();
        let goals = goals(&rows);
        Report {
            setup,
            floors,
            systems,
            rows,
            goals,
            series,
        }
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let p = &self.setup.plan;
        let _ = writeln!(
            out,
            "{}, {}: {} round{} × {} s per series after a {} s warm-up, {} tables × {} rows; \
             {} cores; lockstep nodes: {}.\n",
            self.setup.mariadb,
            self.setup.sysbench,
            p.rounds,
            if p.rounds == 1 { "" } else { "s" },
            p.time_s,
            p.warm_up_s,
            p.tables,
            p.table_size,
            self.setup.cores,
            self.setup.placement,
        );
        for n in &self.setup.notes {
            let _ = writeln!(out, "note: {n}");
        }
        if !self.floors.is_empty() {
            out.push_str(
                "Floors of this machine (median of the rounds' p50 and p99, µs; measured at \
                 the start of each round):\n\n| floor | p50 µs | p99 µs |\n|---|---:|---:|\n",
            );
            for (name, f) in [
                (
                    "loopback round trip",
                    (|f: &Floors| f.rtt) as fn(&Floors) -> Floor,
                ),
                (
                    "4 KiB durable write (O_DIRECT + RWF_DSYNC)",
                    |f: &Floors| f.dsync,
                ),
                (
                    "round trip with that write on the far side",
                    |f: &Floors| f.remote_dsync,
                ),
            ] {
                let _ = writeln!(
                    out,
                    "| {name} | {:.0} | {:.0} |",
                    median(self.floors.iter().map(|x| f(x).p50_us)),
                    median(self.floors.iter().map(|x| f(x).p99_us)),
                );
            }
            let _ = writeln!(
                out,
                "\nA lockstep ACK takes at least a round trip (the front's append to the \
                 primary and its answer) plus a round trip with a durable write (the record \
                 to a secondary, its write, its ack; the primary's own write runs in \
                 parallel): {:.0} µs at p50 here.",
                median(
                    self.floors
                        .iter()
                        .map(|x| x.rtt.p50_us + x.remote_dsync.p50_us)
                )
            );
            out.push('\n');
        }
        out.push_str(
            "| test | threads | system | TPS | p50 ms | p99 ms | TPS ÷ alone | TPS ÷ semi-sync \
             | ACK wait µs |\n|---|---:|---|---:|---:|---:|---:|---:|---:|\n",
        );
        let num = |v: Option<f64>, d: usize| v.map_or("—".to_string(), |v| format!("{v:.d$}"));
        for r in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {} |",
                r.test,
                r.threads,
                r.system,
                r.tps,
                r.p50_ms,
                r.p99_ms,
                num(r.tps_over_alone, 2),
                num(r.tps_over_semi_sync, 2),
                num(r.ack_wait_avg_us, 0),
            );
        }
        out.push_str(
            "\nCPU per transaction (µs of CPU over sysbench's whole run ÷ its transactions; \
             replica/lockstep: the semi-sync replica, or the process of the 3 lockstep nodes \
             and the front) and the machine's busy cores:\n\n\
             | test | threads | system | MariaDB | replica / lockstep | of it the front | \
             sysbench | total | machine busy, cores | of it the rest, cores |\n\
             |---|---:|---|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in &self.rows {
            let c = &r.cpu_per_tx;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0} | {} | {} | {:.0} | {:.0} | {:.2} | {:.2} |",
                r.test,
                r.threads,
                r.system,
                c.mariadb_us,
                num(c.replica_us.or(c.lockstep_us), 0),
                num(c.front_us, 0),
                c.sysbench_us,
                c.total_us,
                c.machine_busy_cores,
                c.rest_of_machine_cores,
            );
        }
        if self.rows.iter().any(|r| r.lockstep.is_some()) {
            out.push_str(
                "\nlockstep's side (the front's ACKs, and the primary's commit phases, p50 \
                 µs):\n\n\
                 | test | threads | transactions per ACK | appends per transaction | queued | \
                 local durable | remote ack after local | total |\n\
                 |---|---:|---:|---:|---:|---:|---:|---:|\n",
            );
            for r in &self.rows {
                let Some(l) = &r.lockstep else { continue };
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
                    r.test,
                    r.threads,
                    num(l.transactions_per_ack, 2),
                    num(l.appends_per_transaction, 2),
                    l.queued_p50_us,
                    l.local_durable_p50_us,
                    l.remote_ack_p50_us,
                    l.total_p50_us,
                );
            }
        }
        out.push_str(
            "\n- TPS: sysbench's transactions per second over the measured seconds; p50, \
             p99: of its transaction latency histogram. Medians across rounds; the ratios \
             are medians of per-round ratios. ACK wait: the primary's mean wait for a \
             semi-sync ACK over the series (growth of Rpl_semi_sync_master_tx_wait_time ÷ \
             that of _tx_waits).\n\nSystems, and the last check of each:\n\n",
        );
        for s in &self.systems {
            let _ = writeln!(out, "- {}: {}.", s.label, s.durability);
            let _ = writeln!(out, "  Checked: {}.", s.verified);
        }
        out.push('\n');
        out.push_str(&Goal::lines(&self.goals));
        out
    }

    /// Writes the markdown, the JSON and the charts into `dir`; returns their names.
    pub fn write_files(&self, dir: &Path, markdown: &str) -> Result<Vec<String>, Error> {
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).map_err(|e| format!("write {}: {e}", p.display()))
        };
        let mut written = Vec::new();
        write("mariadb.md", markdown)?;
        written.push("mariadb.md".to_string());
        write("mariadb.json", &serde_json::to_string_pretty(self)?)?;
        written.push("mariadb.json".into());
        for (name, chart) in self.charts() {
            write(&name, &chart.svg())?;
            written.push(name);
        }
        Ok(written)
    }

    /// TPS by threads, and p99 by threads: a line per system and test.
    pub fn charts(&self) -> Vec<(String, Chart)> {
        let threads: Vec<usize> = {
            let mut t: Vec<usize> = self.rows.iter().map(|r| r.threads).collect();
            t.sort_unstable();
            t.dedup();
            t
        };
        if threads.len() < 2 {
            return Vec::new();
        }
        let tests: Vec<&str> = {
            let mut t: Vec<&str> = Vec::new();
            for r in &self.rows {
                if !t.contains(&r.test.as_str()) {
                    t.push(&r.test);
                }
            }
            t
        };
        let lines = |value: fn(&Row) -> f64| -> Vec<Line> {
            let mut lines = Vec::new();
            for (ti, test) in tests.iter().enumerate() {
                for kind in Kind::ALL {
                    let points: Vec<(f64, f64)> = self
                        .rows
                        .iter()
                        .filter(|r| r.kind == kind && r.test == *test)
                        .map(|r| (r.threads as f64, value(r)))
                        .collect();
                    if points.len() < 2 {
                        continue;
                    }
                    let label = self
                        .systems
                        .iter()
                        .find(|s| s.kind == kind)
                        .map_or(kind.slug(), |s| s.label.as_str());
                    lines.push(Line {
                        label: format!("{label}, {test}"),
                        points,
                        colour: match kind {
                            Kind::Lockstep => 0,
                            Kind::Alone => 5,
                            Kind::SemiSync => 7,
                        },
                        bold: kind == Kind::Lockstep,
                        dashed: ti > 0,
                    });
                }
            }
            lines
        };
        let x = || Axis {
            label: "sysbench threads (one connection each)".into(),
            min: threads[0] as f64,
            max: threads[threads.len() - 1] as f64,
            ticks: threads.iter().map(|&t| (t as f64, t.to_string())).collect(),
        };
        let subtitle = |what: &str| {
            format!(
                "{}, {}; median of {} round{}, {} s each; {what}",
                self.setup.mariadb,
                self.setup.sysbench,
                self.setup.plan.rounds,
                if self.setup.plan.rounds == 1 { "" } else { "s" },
                self.setup.plan.time_s
            )
        };
        let mut charts = Vec::new();
        let tps = lines(|r| r.tps);
        if let Some((lo, hi)) = range(tps.iter().flat_map(|l| l.points.iter().map(|p| p.1))) {
            charts.push((
                "mariadb-tps.svg".to_string(),
                Chart {
                    title: "MariaDB transactions/s by sysbench threads".into(),
                    subtitle: subtitle("higher is better"),
                    x: x(),
                    y: Axis::decades("transactions/s", lo, hi, ""),
                    lines: tps,
                },
            ));
        }
        let p99 = lines(|r| r.p99_ms * 1000.0);
        if let Some((lo, hi)) = range(p99.iter().flat_map(|l| l.points.iter().map(|p| p.1))) {
            charts.push((
                "mariadb-p99.svg".to_string(),
                Chart {
                    title: "MariaDB transaction latency p99 by sysbench threads".into(),
                    subtitle: subtitle("lower is better"),
                    x: x(),
                    y: Axis::decades("p99 latency", lo, hi, "µs"),
                    lines: p99,
                },
            ));
        }
        charts
    }
}

/// The medians of one series, with its ratios to the same test and threads of MariaDB
/// alone and of semi-sync.
fn row(s: &Series, system: String, alone: Option<&Series>, semi: Option<&Series>) -> Row {
    let rounds = &s.per_round;
    let med = |f: &dyn Fn(&Sample) -> f64| median(rounds.iter().map(f));
    let med_opt = |f: &dyn Fn(&Sample) -> Option<f64>| {
        let v: Vec<f64> = rounds.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| median(v))
    };
    let ratio = |other: Option<&Series>| {
        let other = other?;
        let pairs: Vec<f64> = rounds
            .iter()
            .filter_map(|x| {
                let o = other.per_round.iter().find(|o| o.round == x.round)?;
                (o.tps > 0.0).then(|| x.tps / o.tps)
            })
            .collect();
        (!pairs.is_empty()).then(|| median(pairs))
    };
    let per_tx = |x: &Sample, secs: f64| secs * 1e6 / x.transactions_all.max(1) as f64;
    let cpu_per_tx = CpuPerTx {
        mariadb_us: med(&|x| per_tx(x, x.cpu.mariadb_s)),
        replica_us: med_opt(&|x| x.cpu.replica_s.map(|c| per_tx(x, c))),
        lockstep_us: med_opt(&|x| x.cpu.lockstep_s.map(|c| per_tx(x, c))),
        front_us: med_opt(&|x| x.cpu.front_s.map(|c| per_tx(x, c))),
        sysbench_us: med(&|x| per_tx(x, x.cpu.sysbench_s)),
        total_us: med(&|x| {
            let c = &x.cpu;
            per_tx(
                x,
                c.mariadb_s
                    + c.replica_s.unwrap_or(0.0)
                    + c.lockstep_s.unwrap_or(0.0)
                    + c.sysbench_s,
            )
        }),
        machine_busy_cores: med(&|x| x.cpu.machine_busy_s / x.wall_s.max(1e-9)),
        rest_of_machine_cores: med(&|x| x.cpu.rest_of_machine_s / x.wall_s.max(1e-9)),
    };
    let lockstep = (s.kind == Kind::Lockstep).then(|| LockstepView {
        transactions_per_ack: med_opt(&|x| {
            let f = x.front?;
            (f.acks > 0).then(|| f.transactions as f64 / f.acks as f64)
        }),
        appends_per_transaction: med_opt(&|x| {
            let l = x.lockstep?;
            let f = x.front?;
            (f.transactions > 0).then(|| l.appends as f64 / f.transactions as f64)
        }),
        queued_p50_us: med(&|x| x.lockstep.map_or(0.0, |l| l.queued_p50_us)),
        local_durable_p50_us: med(&|x| x.lockstep.map_or(0.0, |l| l.local_durable_p50_us)),
        remote_ack_p50_us: med(&|x| x.lockstep.map_or(0.0, |l| l.remote_ack_p50_us)),
        total_p50_us: med(&|x| x.lockstep.map_or(0.0, |l| l.total_p50_us)),
    });
    Row {
        test: s.test.clone(),
        threads: s.threads,
        kind: s.kind,
        system,
        tps: med(&|x| x.tps),
        p50_ms: med(&|x| x.p50_ms),
        p99_ms: med(&|x| x.p99_ms),
        tps_over_alone: ratio(alone),
        tps_over_semi_sync: ratio(semi),
        ack_wait_avg_us: med_opt(&|x| x.ack_wait_avg_us),
        cpu_per_tx,
        lockstep,
        ignored_errors: rounds.iter().map(|x| x.ignored_errors).sum(),
    }
}

/// The goals of issue 12, per test at the largest thread count measured: lockstep
/// strong ≥ 0.9 × MariaDB alone's TPS, and ≥ 1.0 × stock semi-sync's.
fn goals(rows: &[Row]) -> Vec<Goal> {
    let Some(threads) = rows.iter().map(|r| r.threads).max() else {
        return Vec::new();
    };
    let mut goals = Vec::new();
    let mut tests: Vec<&str> = Vec::new();
    for r in rows {
        if !tests.contains(&r.test.as_str()) {
            tests.push(&r.test);
        }
    }
    for test in tests {
        let find = |kind: Kind| {
            rows.iter()
                .find(|r| r.kind == kind && r.test == test && r.threads == threads)
        };
        let Some(ls) = find(Kind::Lockstep) else {
            continue;
        };
        for (kind, target, ratio, name) in [
            (
                Kind::Alone,
                GOAL_VS_ALONE_MIN,
                ls.tps_over_alone,
                "MariaDB alone",
            ),
            (
                Kind::SemiSync,
                GOAL_VS_SEMI_SYNC_MIN,
                ls.tps_over_semi_sync,
                "MariaDB semi-sync",
            ),
        ] {
            let (Some(other), Some(x)) = (find(kind), ratio) else {
                continue;
            };
            goals.push(Goal {
                name: format!(
                    "lockstep strong ≥ {target:.1} × the TPS of {name}, {test} at {threads} \
                     threads (ratio, median of rounds)"
                ),
                detail: format!(
                    "{:.0} vs. {:.0} TPS; p50/p99 {:.2}/{:.2} ms vs. {:.2}/{:.2} ms",
                    ls.tps, other.tps, ls.p50_ms, ls.p99_ms, other.p50_ms, other.p99_ms
                ),
                measured: x,
                target,
                met: x >= target,
            });
        }
    }
    goals
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mariadb_bench::{CpuUse, FrontDelta};
    use crate::repl_report::ServerPhases;

    fn sample(round: usize, tps: f64, p99_ms: f64) -> Sample {
        Sample {
            round,
            position: 0,
            tps,
            p50_ms: p99_ms / 2.0,
            p99_ms,
            p999_ms: p99_ms,
            max_ms: p99_ms,
            p99_ms_sysbench: p99_ms,
            transactions: 1000,
            transactions_all: 1000,
            events: 1000,
            latencies: 1000,
            ignored_errors: 0,
            reconnects: 0,
            wall_s: 2.0,
            cpu: CpuUse {
                mariadb_s: 0.1,
                machine_busy_s: 3.0,
                rest_of_machine_s: 1.0,
                ..CpuUse::default()
            },
            acked: None,
            ack_wait_avg_us: None,
            front: None,
            lockstep: None,
        }
    }

    fn series(kind: Kind, threads: usize, tps: &[f64]) -> Series {
        Series {
            test: "oltp_insert".into(),
            threads,
            kind,
            per_round: tps
                .iter()
                .enumerate()
                .map(|(r, &t)| sample(r, t, 1000.0 / t))
                .collect(),
        }
    }

    fn setup(rounds: usize) -> Setup {
        Setup {
            mariadb: "MariaDB 10.11".into(),
            sysbench: "sysbench 1.0.20".into(),
            plan: Plan {
                rounds,
                warm_up_s: 1,
                time_s: 1,
                tests: vec!["oltp_insert".into()],
                threads: vec![1, 64],
                tables: 1,
                table_size: 1,
            },
            placement: "here".into(),
            cores: 2,
            measured_seconds: 1.0,
            floor_io: String::new(),
            notes: Vec::new(),
        }
    }

    #[test]
    fn ratios_are_medians_of_per_round_ratios_and_goals_use_the_most_threads() {
        // Round 2 is slow for lockstep and alone alike: its ratio is still 1.0.
        let mut lockstep = series(Kind::Lockstep, 64, &[1000.0, 900.0, 500.0]);
        for x in &mut lockstep.per_round {
            x.front = Some(FrontDelta {
                transactions: 1000,
                acks: 250,
                sessions: 0,
                failures: 0,
            });
            x.lockstep = Some(ServerPhases {
                commits: 1000,
                appends: 1000,
                ..ServerPhases::default()
            });
        }
        let all = vec![
            series(Kind::Alone, 1, &[100.0, 100.0, 100.0]),
            series(Kind::Lockstep, 1, &[50.0, 60.0, 70.0]),
            series(Kind::Alone, 64, &[1000.0, 1000.0, 500.0]),
            series(Kind::SemiSync, 64, &[800.0, 1000.0, 1000.0]),
            lockstep,
        ];
        let r = Report::new(setup(3), Vec::new(), Vec::new(), all);
        let row = |kind, threads| {
            r.rows
                .iter()
                .find(|x| x.kind == kind && x.threads == threads)
                .unwrap()
        };
        let ls = row(Kind::Lockstep, 64);
        // Per round ÷ alone: 1.0, 0.9, 1.0 → 1.0 (medians of TPS would give 900/1000).
        assert_eq!(ls.tps_over_alone, Some(1.0));
        // ÷ semi-sync: 1.25, 0.9, 0.5 → 0.9.
        assert_eq!(ls.tps_over_semi_sync, Some(0.9));
        assert_eq!(ls.tps, 900.0);
        let view = ls.lockstep.as_ref().unwrap();
        assert_eq!(view.transactions_per_ack, Some(4.0));
        assert_eq!(view.appends_per_transaction, Some(1.0));
        assert_eq!(row(Kind::Alone, 64).tps_over_alone, Some(1.0));
        assert_eq!(row(Kind::Lockstep, 1).tps_over_semi_sync, None);
        // CPU per transaction: 0.1 s over 1000 transactions; 1.5 busy cores.
        assert!((ls.cpu_per_tx.mariadb_us - 100.0).abs() < 1e-9);
        assert!((ls.cpu_per_tx.machine_busy_cores - 1.5).abs() < 1e-9);

        assert_eq!(r.goals.len(), 2);
        assert!(
            r.goals[0]
                .name
                .contains("MariaDB alone, oltp_insert at 64 threads")
        );
        assert!(r.goals[0].met, "1.0 ≥ 0.9");
        assert!(r.goals[1].name.contains("semi-sync"));
        assert!(!r.goals[1].met, "0.9 < 1.0");
        let md = r.markdown();
        assert!(md.contains("→ PASS") && md.contains("→ MISS"), "{md}");
        let charts = r.charts();
        let names: Vec<&str> = charts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["mariadb-tps.svg", "mariadb-p99.svg"]);
        // alone and lockstep have two thread counts each; semi-sync only one.
        assert_eq!(charts[0].1.lines.len(), 2);
    }
}
