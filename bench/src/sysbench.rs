//! sysbench as a subprocess against a MariaDB server on loopback: preparing its tables,
//! running one series, and reading its report.
//!
//! One series is one sysbench run: `--report-checkpoints=W --time=W+M` runs the load
//! for W seconds of warm-up, at which point sysbench prints a checkpoint report and
//! resets every counter and its latency histogram, and then M measured seconds. The
//! final report (and the only histogram, `--histogram=on`) therefore covers the
//! measured seconds alone, and its "per sec." rate is over them; the warm-up's
//! transactions are still counted (for the checks that every commit was acknowledged,
//! and for CPU per transaction, whose readings cover the whole run).
//!
//! Latency: sysbench records each event's (transaction's) latency in a histogram of
//! 1024 logarithmic buckets from 1 µs to 100 s (about 1.8 % apart) and prints the
//! buckets that hold events, each at its value in ms. They are read into an
//! hdrhistogram (ns) so that p50 and p99 come from the same distribution that sysbench
//! measured, within a bucket's width.
//!
//! Bounds: sysbench stops itself `FORCED_SHUTDOWN_S` after its time is up even if a
//! transaction hangs (a semi-sync primary whose replica is gone waits forever), so a
//! series never blocks the benchmark.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::Error;
use crate::stats;

pub const SYSBENCH: &str = "sysbench";

/// Seconds sysbench waits after its time is up before it stops its threads by force.
const FORCED_SHUTDOWN_S: u32 = 30;

/// Whether sysbench can run here: its version, or why not.
pub fn available() -> Result<String, String> {
    let out = Command::new(SYSBENCH)
        .arg("--version")
        .output()
        .map_err(|e| format!("no {SYSBENCH} ({e}; the Debian package sysbench)"))?;
    if !out.status.success() {
        return Err(format!("{SYSBENCH} --version: {}", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// What sysbench runs and against which server.
#[derive(Clone, Debug)]
pub struct Workload {
    /// A bundled test (`oltp_insert`, `oltp_write_only`, …).
    pub test: String,
    pub tables: usize,
    pub table_size: usize,
    /// The server's loopback port; the account `user` (no password) and database `db`.
    pub port: u16,
    pub user: String,
    pub db: String,
}

impl Workload {
    fn command(&self) -> Command {
        let mut c = Command::new(SYSBENCH);
        c.arg(&self.test)
            .args(["--db-driver=mysql", "--mysql-host=127.0.0.1"])
            .arg(format!("--mysql-port={}", self.port))
            .arg(format!("--mysql-user={}", self.user))
            .arg(format!("--mysql-db={}", self.db))
            .arg(format!("--tables={}", self.tables))
            .arg(format!("--table-size={}", self.table_size));
        c
    }

    /// Creates and fills the tables (`prepare`), with up to `threads` tables at a time.
    pub fn prepare(&self, threads: usize, log: &Path) -> Result<Duration, Error> {
        let started = Instant::now();
        let mut c = self.command();
        c.arg(format!("--threads={}", threads.clamp(1, self.tables)))
            .arg("prepare");
        run_logged(&mut c, log, &format!("sysbench {} prepare", self.test))?;
        Ok(started.elapsed())
    }

    /// One series: `threads` clients for `warm_up_s` then `time_s` measured seconds.
    /// The output is kept in `log`.
    pub fn run(
        &self,
        threads: usize,
        warm_up_s: u32,
        time_s: u32,
        log: &Path,
    ) -> Result<Run, Error> {
        assert!(threads >= 1);
        assert!(time_s >= 1);
        let mut c = self.command();
        c.arg(format!("--threads={threads}"))
            .arg(format!("--time={}", warm_up_s + time_s))
            .arg(format!("--forced-shutdown={FORCED_SHUTDOWN_S}"))
            .args(["--histogram=on", "--percentile=99"]);
        if warm_up_s > 0 {
            c.arg(format!("--report-checkpoints={warm_up_s}"));
        }
        c.arg("run");
        let what = format!("sysbench {} run, {threads} threads", self.test);
        let started = Instant::now();
        let text = run_logged(&mut c, log, &what)?;
        let wall = started.elapsed();
        let mut run = parse(&text).map_err(|e| format!("{what}: {e}; see {}", log.display()))?;
        if warm_up_s > 0 && run.reports < 2 {
            return Err(format!(
                "{what}: no checkpoint report after the warm-up; see {}",
                log.display()
            )
            .into());
        }
        run.wall = wall;
        Ok(run)
    }
}

/// Runs `c`, its output (stdout and stderr) kept in `log`; returns the output, or an
/// error with its end.
fn run_logged(c: &mut Command, log: &Path, what: &str) -> Result<String, Error> {
    let out = c
        .output()
        .map_err(|e| format!("{what}: start {SYSBENCH}: {e}"))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    std::fs::write(log, &text).map_err(|e| format!("write {}: {e}", log.display()))?;
    if !out.status.success() {
        let tail: Vec<&str> = text.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "{what}: {}; its output ends:\n    {}",
            out.status,
            tail.join("\n    ")
        )
        .into());
    }
    Ok(text)
}

/// What one sysbench run reported.
#[derive(Debug)]
pub struct Run {
    /// Transactions in the measured seconds, and their rate.
    pub transactions: u64,
    pub per_s: f64,
    /// Transactions of the whole run, warm-up included.
    pub transactions_all: u64,
    /// Events of the measured seconds (a transaction each, for the OLTP tests).
    pub events: u64,
    /// Errors sysbench ignored (deadlocks, lock wait timeouts: it retries the
    /// transaction) and reconnects, in the measured seconds.
    pub ignored_errors: u64,
    pub reconnects: u64,
    /// sysbench's own 99th percentile (ms), to compare with the histogram's.
    pub p99_ms_sysbench: f64,
    /// Latency of the measured seconds' events, ns.
    pub hist: Histogram<u64>,
    /// Reports in the output (the checkpoint's and the final one).
    pub reports: usize,
    /// From the start of sysbench to its exit.
    pub wall: Duration,
}

/// Reads sysbench's output: the final report, every report's transactions, and the
/// last latency histogram.
pub fn parse(text: &str) -> Result<Run, Error> {
    let reports: Vec<&str> = text.split("SQL statistics:").skip(1).collect();
    let last = reports.last().ok_or("no report in its output")?;
    let field = |report: &str, name: &str| -> Option<(f64, Option<f64>)> {
        let line = report.lines().find(|l| l.trim_start().starts_with(name))?;
        let rest = line.trim_start()[name.len()..].trim();
        let mut words = rest.split_whitespace();
        let value = words.next()?.trim_end_matches('s').parse().ok()?;
        let rate = rest
            .split_once('(')
            .and_then(|(_, r)| r.split_whitespace().next()?.parse().ok());
        Some((value, rate))
    };
    let need = |report: &str, name: &str| {
        field(report, name).ok_or_else(|| format!("no {name:?} in its report"))
    };
    let (transactions, per_s) = need(last, "transactions:")?;
    let per_s = per_s.ok_or("no rate of transactions in its report")?;
    let mut transactions_all = 0.0;
    for r in &reports {
        transactions_all += need(r, "transactions:")?.0;
    }
    let hist = histogram(text)?;
    Ok(Run {
        transactions: transactions as u64,
        per_s,
        transactions_all: transactions_all as u64,
        events: need(last, "total number of events:")?.0 as u64,
        ignored_errors: need(last, "ignored errors:")?.0 as u64,
        reconnects: need(last, "reconnects:")?.0 as u64,
        p99_ms_sysbench: need(last, "99th percentile:")?.0,
        hist,
        reports: reports.len(),
        wall: Duration::ZERO,
    })
}

/// The last "Latency histogram" block: lines of `value |stars count`, value in ms.
fn histogram(text: &str) -> Result<Histogram<u64>, Error> {
    const HEAD: &str = "Latency histogram (values are in milliseconds)";
    let (_, block) = text.rsplit_once(HEAD).ok_or("no latency histogram")?;
    let mut h = stats::latency_histogram();
    // The block's own header line, then the buckets until the first other line.
    for line in block.lines().skip(2) {
        let Some((value, rest)) = line.split_once('|') else {
            if line.trim().is_empty() {
                continue;
            }
            break;
        };
        let ms: f64 = value
            .trim()
            .parse()
            .map_err(|_| format!("histogram line {line:?}"))?;
        let count: u64 = rest
            .split_whitespace()
            .last()
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("histogram line {line:?}"))?;
        let ns = (ms * 1e6).round().max(1.0) as u64;
        h.saturating_record_n(ns, count);
    }
    if h.is_empty() {
        return Err("an empty latency histogram".into());
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of sysbench 1.0.20's output with a checkpoint after the warm-up
    /// (shortened: fewer histogram buckets).
    const OUTPUT: &str = "sysbench 1.0.20 (using system LuaJIT 2.1.0-beta3)

Running the test with following options:
Number of threads: 4
Report checkpoint(s) at 1 seconds

Threads started!

[ 1s ] Checkpoint report:
SQL statistics:
    queries performed:
        read:                            0
        write:                           2271
        other:                           0
        total:                           2271
    transactions:                        2271   (2268.13 per sec.)
    queries:                             2271   (2268.13 per sec.)
    ignored errors:                      0      (0.00 per sec.)
    reconnects:                          0      (0.00 per sec.)

General statistics:
    total time:                          1.0001s
    total number of events:              2271

Latency (ms):
         min:                                    0.39
         avg:                                    1.75
         max:                                   15.81
         99th percentile:                        9.06
         sum:                                 3984.79

Threads fairness:
    events (avg/stddev):           568.2500/4.71
    execution time (avg/stddev):   0.9962/0.00

Latency histogram (values are in milliseconds)
       value  ------------- distribution ------------- count
       0.348 |                                         1
       1.000 |****************************************  96
       2.000 |*                                        2
      25.737 |*                                        1
 
SQL statistics:
    queries performed:
        read:                            0
        write:                           100
        other:                           0
        total:                           100
    transactions:                        100    (33.30 per sec.)
    queries:                             100    (33.30 per sec.)
    ignored errors:                      2      (0.67 per sec.)
    reconnects:                          0      (0.00 per sec.)

General statistics:
    total time:                          4.0040s
    total number of events:              100

Latency (ms):
         min:                                    0.35
         avg:                                    1.96
         max:                                   25.93
         99th percentile:                        2.00
         sum:                                11993.02

Threads fairness:
    events (avg/stddev):           1531.7500/7.22
    execution time (avg/stddev):   2.9983/0.00

";

    #[test]
    fn the_measured_report_and_its_histogram_are_read() {
        let r = parse(OUTPUT).unwrap();
        assert_eq!(r.reports, 2);
        assert_eq!(r.transactions, 100);
        assert_eq!(r.transactions_all, 2371);
        assert!((r.per_s - 33.30).abs() < 1e-9);
        assert_eq!(r.events, 100);
        assert_eq!(r.ignored_errors, 2);
        assert_eq!(r.reconnects, 0);
        assert_eq!(r.p99_ms_sysbench, 2.0);
        assert_eq!(r.hist.len(), 100);
        let ms = |q: f64| r.hist.value_at_quantile(q) as f64 / 1e6;
        assert!((ms(0.5) - 1.0).abs() < 0.002, "{}", ms(0.5));
        assert!((ms(0.99) - 2.0).abs() < 0.004, "{}", ms(0.99));
        assert!((ms(1.0) - 25.737).abs() < 0.05, "{}", ms(1.0));
    }

    #[test]
    fn output_without_a_report_or_histogram_is_refused() {
        assert!(parse("FATAL: error 2013: Lost connection").is_err());
        let no_hist = OUTPUT.replace("Latency histogram", "Something else");
        assert!(parse(&no_hist).is_err());
    }
}
