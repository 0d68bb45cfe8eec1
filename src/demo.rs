//! `lockstep demo`: a 3-node cluster in this process, measured against the floor of the
//! machine it runs on, and checked.
//!
//! What one run does, in order:
//! 1. measures the floor of a strong-synchronous commit here (see [`floor`]): one TCP
//!    round trip on loopback and one durable 4 KiB write on the filesystem of the logs;
//!    their sum is the least any strong commit can cost on this machine;
//! 2. starts three nodes ([`LocalCluster`]) with one stream per commit mode ("strong",
//!    "semi", "async"), node 1 primary, the two others its sync set with k = both;
//! 3. runs a series per mode with 1 outstanding append and one with 64 pipelined on one
//!    connection (see [`series`]), each after a warm-up that is not recorded;
//! 4. lets the members catch up, stops the nodes and compares the committed prefix of
//!    every stream on all three nodes, record by record, from their logs on disk
//!    (invariant 2 of DESIGN.md); a difference fails the run and keeps the data.
//!
//! A latency means little alone: 300 µs is excellent on one disk and poor on another.
//! So the table gives each mode's single-client p50 as a ratio to the floor measured in
//! the same run. That floor is the strong one; semi and async wait for less (no remote
//! disk write, no remote ack at all), so their ratio may fall below 1. The floor is
//! measured before the nodes start, so that their start-up (which pre-zeroes log
//! segments) cannot disturb it.
//!
//! Resources: the nodes' threads, one client connection per series, and a data
//! directory: a temporary one under `./target` when that exists (a real disk, where the
//! system's temporary directory may be tmpfs without O_DIRECT), else under the system's
//! temporary directory; it is removed at the end unless the caller keeps it, or the
//! logs turned out to differ (then they are the evidence).

pub mod cluster;
pub mod database;
pub mod floor;
pub mod install;
pub mod mariadb;
pub mod process;
pub mod series;

use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

pub use cluster::{ClusterError, LocalCluster, StoppedCluster, StreamSpec};
use floor::{DurableIo, FloorError};
use series::SeriesResult;

use crate::client::ClientError;
use crate::constants::{PAYLOAD_BYTES_MAX, SEGMENT_BYTES_MIN};
use crate::replication::Mode;

/// Nodes of the demo cluster: a primary and a sync set of two.
pub const NODES: usize = 3;

/// Appends outstanding in the series of each mode: one client waiting for each commit,
/// and many commits sharing the connection and the durable writes.
pub const OUTSTANDING: [usize; 2] = [1, 64];

/// Measured seconds of each series by default: six series, the floors and the checks
/// take about half a minute in all.
pub const SECONDS_DEFAULT: f64 = 4.0;

/// Measured seconds of each series with `quick`, the size the test suite runs.
pub const SECONDS_QUICK: f64 = 0.25;

/// Payload bytes of each record by default: a typical small transaction's log record.
pub const PAYLOAD_BYTES_DEFAULT: usize = 256;

/// Log segment size of the demo's nodes: smaller than the profiles' 64 MiB, because all
/// nine logs (three streams on three nodes) pre-zero a segment and a spare when they
/// open, which would otherwise take seconds of the run; large enough that a series
/// rolls over a few times, as a busy log does.
const SEGMENT_BYTES: u64 = 16 << 20;

/// The floors are measured for this share of a series' time each.
const FLOOR_SHARE: f64 = 0.3;

/// Bound on waiting for the nodes to connect, and for the members to catch up.
const CLUSTER_WAIT: Duration = Duration::from_secs(10);

/// Where temporary data goes when `./target` exists.
const TARGET_TMP: &str = "target/demo-tmp";

/// What a demo run does.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Measured seconds of each series (default [`SECONDS_DEFAULT`], or
    /// [`SECONDS_QUICK`] with `quick`).
    pub seconds: Option<f64>,
    pub payload_bytes: usize,
    /// A tiny run of a few seconds with the smallest log segments, as the test suite
    /// runs it.
    pub quick: bool,
    /// Keep the data in this directory (created; it must be empty) instead of a
    /// temporary one.
    pub keep: Option<PathBuf>,
    /// Also write the report as JSON to this file.
    pub json: Option<PathBuf>,
    /// Show a progress bar on stderr (only where stderr is a terminal).
    pub progress: bool,
    /// Run the database demo ([`database`]): MariaDB made strongly synchronous by the
    /// cluster, beside MariaDB alone.
    pub mariadb: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            seconds: None,
            payload_bytes: PAYLOAD_BYTES_DEFAULT,
            quick: false,
            keep: None,
            json: None,
            progress: false,
            mariadb: false,
        }
    }
}

/// Why a demo run failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Unsupported(String),
    /// The database demo failed: what the database or the front said.
    #[error("{0}")]
    Database(String),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("floor: {0}")]
    Floor(#[from] FloorError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// An append failed; `nodes` is what each node said about the stream then.
    #[error("series {stream}, {outstanding} outstanding: {source}\nthe nodes: {nodes}")]
    Append {
        stream: String,
        outstanding: usize,
        #[source]
        source: Box<ClientError>,
        nodes: String,
    },
    #[error(
        "series {stream}, {outstanding} outstanding: no append was answered in the measured window"
    )]
    NothingMeasured { stream: String, outstanding: usize },
    /// The committed prefixes differ between nodes: the data is kept for inspection.
    #[error("committed prefixes differ: {source}; the data is kept in {}", kept.display())]
    Diverged {
        #[source]
        source: ClusterError,
        kept: PathBuf,
    },
}

/// How long one measurement runs: a warm-up that is not recorded, then the measured time.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub warm_up: Duration,
    pub measure: Duration,
}

impl Window {
    /// A window measuring `measure`, after a warm-up of an eighth of it (at least 0.1 s).
    pub fn new(measure: Duration) -> Window {
        Window {
            warm_up: (measure / 8).max(Duration::from_millis(100)),
            measure,
        }
    }

    pub fn total(&self) -> Duration {
        self.warm_up + self.measure
    }
}

/// Quantiles of a latency histogram, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    /// Latencies recorded.
    pub count: u64,
}

impl Latency {
    /// The quantiles of `h` (nanoseconds); all zero when it is empty.
    pub fn of(h: &Histogram<u64>) -> Latency {
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Latency {
            p50_us: us(0.5),
            p99_us: us(0.99),
            p999_us: us(0.999),
            count: h.len(),
        }
    }
}

/// Largest latency held exactly: a minute, far beyond any timeout of the demo.
const LATENCY_NS_MAX: u64 = 60_000_000_000;

/// A latency histogram in nanoseconds with 3 significant digits.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("valid histogram bounds")
}

fn record_latency(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1));
}

/// The results of a run, as printed and as written with `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct DemoReport {
    pub nodes: usize,
    pub payload_bytes: usize,
    pub warm_up_s: f64,
    pub measure_s: f64,
    /// Where the data was (removed unless `kept`).
    pub data_dir: PathBuf,
    pub kept: bool,
    /// How the logs and the floor write durably here.
    pub durable_io: &'static str,
    /// Why the durable writes are not O_DIRECT + RWF_DSYNC, if they are not.
    pub durable_io_note: Option<String>,
    pub floor: FloorReport,
    pub series: Vec<SeriesReport>,
    pub streams: Vec<StreamReport>,
}

/// The floor of this machine, measured in the run.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct FloorReport {
    /// One round trip of a small message over loopback TCP.
    pub tcp_round_trip: Latency,
    /// One durable 4 KiB write on the data filesystem.
    pub durable_write: Latency,
    /// The least a strong commit can take: two round trips (client to primary, primary
    /// to member) and the member's durable write, the primary's own write hidden in
    /// parallel — 2 × round-trip p50 + durable-write p50, as `lockstep-bench repl`
    /// measures it.
    pub strong_sync_p50_us: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct SeriesReport {
    pub mode: Mode,
    pub outstanding: usize,
    #[serde(flatten)]
    pub result: SeriesResult,
    /// p50 ÷ the strong-sync floor, for the single-client series.
    pub p50_over_floor: Option<f64>,
}

/// A stream after the run: its committed prefix was identical on every node.
#[derive(Clone, Debug, Serialize)]
pub struct StreamReport {
    pub stream: String,
    pub mode: Mode,
    pub commit_lsn: u64,
    pub identical_on_nodes: usize,
}

/// Runs the database demo ([`database`]), printing to `out` as it goes.
pub fn run_database(
    opts: &DemoOptions,
    out: &mut dyn Write,
) -> Result<database::DbReport, DemoError> {
    lockstep_sys::probe::io_uring()
        .map_err(|why| DemoError::Unsupported(format!("lockstep needs io_uring: {why}")))?;
    let work = Workdir::new(opts.keep.as_deref())?;
    let report = match database::run(opts, work.path(), out) {
        Ok(r) => r,
        Err(e) => {
            if matches!(e, DemoError::Diverged { .. }) {
                work.keep_anyway();
            }
            return Err(e);
        }
    };
    if let Some(path) = &opts.json {
        let json = serde_json::to_string_pretty(&report).expect("the report serializes");
        std::fs::write(path, json + "\n").map_err(|source| DemoError::Io {
            op: "write",
            path: path.clone(),
            source,
        })?;
    }
    work.finish()?;
    Ok(report)
}

/// Runs the demo, printing to `out` as it goes; see the module docs.
pub fn run(opts: &DemoOptions, out: &mut dyn Write) -> Result<DemoReport, DemoError> {
    let series_window = series_window(opts)?;
    if !(1..=PAYLOAD_BYTES_MAX).contains(&opts.payload_bytes) {
        return Err(DemoError::Usage(format!(
            "--payload {}: must be in 1..={PAYLOAD_BYTES_MAX}",
            opts.payload_bytes
        )));
    }
    lockstep_sys::probe::io_uring()
        .map_err(|why| DemoError::Unsupported(format!("lockstep needs io_uring: {why}")))?;
    let floor_window = Window::new(series_window.measure.mul_f64(FLOOR_SHARE));
    let work = Workdir::new(opts.keep.as_deref())?;
    let dir = work.path().to_path_buf();
    let probe = lockstep_sys::probe::storage(&dir).map_err(|source| DemoError::Io {
        op: "probe the storage under",
        path: dir.clone(),
        source,
    })?;
    let (durable_io, durable_io_note) = DurableIo::choose(&probe);
    let mut intro = format!(
        "lockstep demo: {NODES} nodes in this process on 127.0.0.1, one stream per mode ({}), \
         {} B records\ndata in {}{}\neach series: {} s warm-up, then {} s measured\n",
        Mode::ALL.map(Mode::as_str).join(", "),
        opts.payload_bytes,
        dir.display(),
        if work.kept() {
            ""
        } else {
            " (removed at the end)"
        },
        series_window.warm_up.as_secs_f64(),
        series_window.measure.as_secs_f64(),
    );
    if let Some(note) = &durable_io_note {
        let _ = writeln!(intro, "note: {note}");
    }
    write_out(out, &intro)?;

    let series_count = Mode::ALL.len() * OUTSTANDING.len();
    let planned = floor_window.total() * 2 + series_window.total() * series_count as u32;
    // Two floors, the start, the series, the checks.
    let mut progress = Progress::new(opts.progress, planned, series_count + 4);
    let floor = measure_floor(&dir, durable_io, floor_window, &mut progress)?;

    progress.stage("starting 3 nodes");
    let specs = Mode::ALL.map(|m| StreamSpec::new(m.as_str(), m));
    let segment_bytes = if opts.quick {
        SEGMENT_BYTES_MIN
    } else {
        SEGMENT_BYTES
    };
    let cluster = LocalCluster::start(&dir, NODES, &specs, Some(segment_bytes))?;
    cluster.wait_connected(CLUSTER_WAIT)?;
    let mut series = Vec::with_capacity(series_count);
    for spec in &specs {
        for outstanding in OUTSTANDING {
            progress.stage(&format!("{}, {}", spec.name, load_label(outstanding)));
            let result = run_series(&cluster, spec, outstanding, opts, series_window, &progress)?;
            progress.done(series_window.total());
            series.push(SeriesReport {
                mode: spec.mode,
                outstanding,
                result,
                p50_over_floor: (outstanding == 1)
                    .then(|| result.latency.p50_us / floor.strong_sync_p50_us),
            });
        }
    }

    progress.stage("members catching up, stopping the nodes, comparing the logs");
    let streams = match check_logs(cluster, &specs, &series, &dir) {
        Ok(streams) => streams,
        Err(e) => {
            if matches!(e, DemoError::Diverged { .. }) {
                // The logs are the evidence.
                work.keep_anyway();
            }
            return Err(e);
        }
    };
    drop(progress);
    let report = DemoReport {
        nodes: NODES,
        payload_bytes: opts.payload_bytes,
        warm_up_s: series_window.warm_up.as_secs_f64(),
        measure_s: series_window.measure.as_secs_f64(),
        data_dir: dir,
        kept: work.kept(),
        durable_io: durable_io.label(),
        durable_io_note,
        floor,
        series,
        streams,
    };
    write_out(out, &report.text())?;
    if let Some(path) = &opts.json {
        let json = serde_json::to_string_pretty(&report).expect("the report serializes");
        std::fs::write(path, json + "\n").map_err(|source| DemoError::Io {
            op: "write",
            path: path.clone(),
            source,
        })?;
    }
    work.finish()?;
    Ok(report)
}

/// The window of each series, from `--seconds` or the default of the size asked for.
fn series_window(opts: &DemoOptions) -> Result<Window, DemoError> {
    let default = if opts.quick {
        SECONDS_QUICK
    } else {
        SECONDS_DEFAULT
    };
    let seconds = opts.seconds.unwrap_or(default);
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0) {
        return Err(DemoError::Usage(format!(
            "--seconds {seconds}: must be in (0, 3600]"
        )));
    }
    Ok(Window::new(Duration::from_secs_f64(seconds)))
}

fn write_out(out: &mut dyn Write, text: &str) -> Result<(), DemoError> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|source| DemoError::Io {
            op: "write to",
            path: PathBuf::from("stdout"),
            source,
        })
}

/// Both floors, before any node runs.
fn measure_floor(
    dir: &Path,
    io: DurableIo,
    window: Window,
    progress: &mut Progress,
) -> Result<FloorReport, DemoError> {
    progress.stage("floor: TCP round trip on loopback");
    let tcp_round_trip = floor::tcp_round_trip(window)?;
    progress.done(window.total());
    progress.stage("floor: durable 4 KiB write");
    let durable_write = floor::durable_write(dir, io, window)?;
    progress.done(window.total());
    Ok(FloorReport {
        tcp_round_trip,
        durable_write,
        strong_sync_p50_us: 2.0 * tcp_round_trip.p50_us + durable_write.p50_us,
    })
}

/// One series against the cluster; a failed append comes with what each node says
/// about the stream, which usually names the cause.
fn run_series(
    cluster: &LocalCluster,
    spec: &StreamSpec,
    outstanding: usize,
    opts: &DemoOptions,
    window: Window,
    progress: &Progress,
) -> Result<SeriesResult, DemoError> {
    let result = series::run(
        cluster.addrs(),
        &spec.name,
        outstanding,
        opts.payload_bytes,
        window,
        &mut |elapsed| progress.within(elapsed),
    )
    .map_err(|source| DemoError::Append {
        stream: spec.name.clone(),
        outstanding,
        source: Box::new(source),
        nodes: cluster.describe(&spec.name),
    })?;
    if result.latency.count == 0 {
        return Err(DemoError::NothingMeasured {
            stream: spec.name.clone(),
            outstanding,
        });
    }
    Ok(result)
}

/// Lets every member catch up to what was acknowledged, stops the nodes, and compares
/// each stream's committed prefix on all of them.
fn check_logs(
    cluster: LocalCluster,
    specs: &[StreamSpec],
    series: &[SeriesReport],
    dir: &Path,
) -> Result<Vec<StreamReport>, DemoError> {
    let mut streams = Vec::with_capacity(specs.len());
    for spec in specs {
        let acknowledged = (series.iter())
            .filter(|s| s.mode == spec.mode)
            .map(|s| s.result.last_lsn)
            .max()
            .unwrap_or(0);
        let commit_lsn = cluster.wait_replicated(&spec.name, acknowledged, CLUSTER_WAIT)?;
        streams.push(StreamReport {
            stream: spec.name.clone(),
            mode: spec.mode,
            commit_lsn,
            identical_on_nodes: NODES,
        });
    }
    let stopped = cluster.shutdown();
    for s in &streams {
        stopped
            .check_identical_prefix(&s.stream, s.commit_lsn)
            .map_err(|source| DemoError::Diverged {
                source,
                kept: dir.to_path_buf(),
            })?;
    }
    Ok(streams)
}

fn load_label(outstanding: usize) -> String {
    if outstanding == 1 {
        "1 client".to_owned()
    } else {
        format!("{outstanding} outstanding")
    }
}

impl DemoReport {
    /// The table, the comparison's verdict and where the data is.
    pub fn text(&self) -> String {
        let dash = || "—".to_owned();
        let mut rows = vec![
            vec![
                "series".to_owned(),
                "p50 µs".to_owned(),
                "p99 µs".to_owned(),
                "p99.9 µs".to_owned(),
                "commits/s".to_owned(),
                "p50 ÷ floor".to_owned(),
            ],
            floor_row(
                "floor: TCP round trip, loopback",
                &self.floor.tcp_round_trip,
            ),
            floor_row(
                &format!("floor: 4 KiB write, {}", self.durable_io),
                &self.floor.durable_write,
            ),
            vec![
                "floor: strong sync = 2 round trips + write".to_owned(),
                micros(self.floor.strong_sync_p50_us),
                dash(),
                dash(),
                dash(),
                "1.00".to_owned(),
            ],
        ];
        for s in &self.series {
            let mut row = vec![format!("{}, {}", s.mode, load_label(s.outstanding))];
            row.extend(latency_cells(&s.result.latency));
            row.push(format!("{:.0}", s.result.commits_per_s));
            row.push(s.p50_over_floor.map_or_else(dash, |r| format!("{r:.2}")));
            rows.push(row);
        }
        let mut text = String::from("\n");
        text += &markdown_table(&rows);
        let prefixes: Vec<String> = (self.streams.iter())
            .map(|s| format!("{} 1..={}", s.stream, s.commit_lsn))
            .collect();
        let _ = writeln!(
            text,
            "\ncommitted prefixes identical on {} nodes ({})",
            self.nodes,
            prefixes.join(", ")
        );
        if self.kept {
            let _ = writeln!(
                text,
                "data kept in {} (node N: nodeN/, configuration nodeN.toml)",
                self.data_dir.display()
            );
        }
        text
    }
}

fn floor_row(name: &str, l: &Latency) -> Vec<String> {
    let mut row = vec![name.to_owned()];
    row.extend(latency_cells(l));
    row.extend(["—".to_owned(), "—".to_owned()]);
    row
}

/// p50, p99 and p99.9 cells.
fn latency_cells(l: &Latency) -> [String; 3] {
    [l.p50_us, l.p99_us, l.p999_us].map(micros)
}

fn micros(us: f64) -> String {
    format!("{us:.1}")
}

/// A markdown table with padded columns, so it reads well in a terminal too: the first
/// column left-aligned, the others (numbers) right-aligned.
pub fn markdown_table(rows: &[Vec<String>]) -> String {
    let columns = rows[0].len();
    let width = |c: usize| {
        (rows.iter())
            .map(|r| r[c].chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..columns).map(width).collect();
    let mut text = String::new();
    for (i, row) in rows.iter().enumerate() {
        text.push('|');
        for (c, cell) in row.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            let (left, right) = if c == 0 { (0, pad) } else { (pad, 0) };
            let _ = write!(text, " {}{cell}{} |", " ".repeat(left), " ".repeat(right));
        }
        text.push('\n');
        if i == 0 {
            text.push('|');
            for (c, w) in widths.iter().enumerate() {
                let dashes = "-".repeat(w.saturating_sub(1));
                if c == 0 {
                    let _ = write!(text, " {dashes}- |");
                } else {
                    let _ = write!(text, " {dashes}: |");
                }
            }
            text.push('\n');
        }
    }
    text
}

/// Where the run's data lives: a directory the caller keeps, or a temporary one.
enum Workdir {
    Kept(PathBuf),
    Temp(tempfile::TempDir),
}

impl Workdir {
    fn new(keep: Option<&Path>) -> Result<Workdir, DemoError> {
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| DemoError::Io { op, path, source }
        };
        if let Some(dir) = keep {
            std::fs::create_dir_all(dir).map_err(io("create", dir))?;
            let mut entries = std::fs::read_dir(dir).map_err(io("list", dir))?;
            if entries.next().is_some() {
                return Err(DemoError::Usage(format!(
                    "--keep {}: the directory is not empty; the demo starts from empty logs",
                    dir.display()
                )));
            }
            return Ok(Workdir::Kept(dir.to_path_buf()));
        }
        let base = if Path::new("target").is_dir() {
            PathBuf::from(TARGET_TMP)
        } else {
            std::env::temp_dir()
        };
        std::fs::create_dir_all(&base).map_err(io("create", &base))?;
        let tmp = tempfile::Builder::new()
            .prefix("lockstep-demo-")
            .tempdir_in(&base)
            .map_err(io("create a temporary directory in", &base))?;
        Ok(Workdir::Temp(tmp))
    }

    fn path(&self) -> &Path {
        match self {
            Workdir::Kept(p) => p,
            Workdir::Temp(t) => t.path(),
        }
    }

    fn kept(&self) -> bool {
        matches!(self, Workdir::Kept(_))
    }

    /// Keeps the data whatever was asked, for inspection after a failure.
    fn keep_anyway(self) {
        if let Workdir::Temp(t) = self {
            let _kept: PathBuf = t.keep();
        }
    }

    /// Removes a temporary directory, reporting a failure to do so.
    fn finish(self) -> Result<(), DemoError> {
        match self {
            Workdir::Kept(_) => Ok(()),
            Workdir::Temp(t) => {
                let path = t.path().to_path_buf();
                t.close().map_err(|source| DemoError::Io {
                    op: "remove",
                    path,
                    source,
                })
            }
        }
    }
}

/// The progress bar: its length is the planned time of the measurements in
/// milliseconds, so it moves evenly; stages without a plan (start-up, the checks) show
/// their name only.
struct Progress {
    bar: ProgressBar,
    done_ms: u64,
    stage: usize,
    stages: usize,
}

impl Progress {
    fn new(enabled: bool, planned: Duration, stages: usize) -> Progress {
        let bar = if enabled && io::stderr().is_terminal() {
            let bar = ProgressBar::new(planned.as_millis() as u64);
            bar.set_style(
                ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {msg}")
                    .expect("a valid progress template")
                    .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        } else {
            ProgressBar::hidden()
        };
        Progress {
            bar,
            done_ms: 0,
            stage: 0,
            stages,
        }
    }

    fn stage(&mut self, name: &str) {
        self.stage += 1;
        let n = self.stage.min(self.stages);
        self.bar.set_message(format!("{n}/{} {name}", self.stages));
    }

    /// `elapsed` of the current stage has passed.
    fn within(&self, elapsed: Duration) {
        self.bar
            .set_position(self.done_ms + elapsed.as_millis() as u64);
    }

    /// The current stage, planned to take `planned`, is over.
    fn done(&mut self, planned: Duration) {
        self.done_ms += planned.as_millis() as u64;
        self.bar.set_position(self.done_ms);
    }
}

impl Drop for Progress {
    /// Clears the bar, so that the results or an error start on a clean line.
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
