//! `lockstep-bench log`: the log engine against the durable-write floor of its own disk.
//!
//! What it measures, in one run on one filesystem:
//! - the floor: a bare 4 KiB and a bare 8 KiB durable write, one at a time (see
//!   [`crate::floor`]); a 256 B record is one 4 KiB block on disk, a 4 KiB record with its
//!   32-byte header needs two;
//! - the log: 1, 8 and 64 closed-loop writers × 256 B and 4 KiB payloads on one
//!   [`Log`] in one pinned thread (see [`crate::writers`]).
//!
//! Why: the two goals of the log are stated against the hardware, not in absolute
//! numbers. One writer should pay little over a bare durable write (p50 ≤ 1.15 × the
//! 4 KiB floor), and group commit should multiply throughput (64 writers ≥ 20 × the
//! records/s of one). The machine is shared and noisy, so floor and series alternate in
//! rounds and the report gives medians of per-round values and ratios.
//!
//! With `--dir` the log is kept (in DIR/log) for `lockstep log verify`; its durable LSN
//! equals the `records_written` of the report. A full run on a fast disk writes
//! gigabytes, so at the end the oldest segments beyond [`LOG_KEPT_BYTES_MAX`] are deleted
//! as retention would delete them (never during a series, where the deletion would
//! disturb the measurements). Without `--dir` everything lives in a temporary directory
//! under ./target (never /tmp, which may be tmpfs) that is removed.

use std::fs::{self, TryLockError};
use std::path::Path;
use std::time::Instant;

use lockstep::log::segment::{self, LOCK_NAME, SPARE_NAME, parse_name};
use lockstep::log::{Log, LogOptions};
use lockstep::profile::HardwareProfile;
use lockstep_sys::file::Access;
use lockstep_sys::uring::Ring;

use crate::floor::{Floor, FloorIo};
use crate::report::{FLOOR_WRITE_BYTES, Report, Round, Setup};
use crate::stats::Window;
use crate::workdir::{Progress, Workdir, pin_last_core, rounds_and_window};
use crate::writers::{Series, Writers, bytes_label};
use crate::{Error, LogArgs};

/// `user_data` of the log's writes.
const LOG_TAG: u64 = 1;

/// Name of the floor's scratch file in the benchmark directory (removed at the end).
const FLOOR_FILE: &str = "floor.scratch";

/// Name of the log directory inside the benchmark directory.
const LOG_DIR: &str = "log";

/// Most log a kept run leaves behind.
const LOG_KEPT_BYTES_MAX: u64 = 1 << 30;

/// The log series of every round, in order.
const SERIES: [Series; 6] = [
    Series {
        writers: 1,
        payload_bytes: 256,
    },
    Series {
        writers: 8,
        payload_bytes: 256,
    },
    Series {
        writers: 64,
        payload_bytes: 256,
    },
    Series {
        writers: 1,
        payload_bytes: 4096,
    },
    Series {
        writers: 8,
        payload_bytes: 4096,
    },
    Series {
        writers: 64,
        payload_bytes: 4096,
    },
];

const WRITERS_MAX: usize = 64;
const PAYLOAD_BYTES_MAX: usize = 4096;

/// Sizes of a run.
struct Settings {
    rounds: usize,
    window: Window,
    segment_bytes: u64,
    profile: HardwareProfile,
}

impl Settings {
    fn new(args: &LogArgs) -> Result<Settings, Error> {
        let profile = match &args.profile {
            Some(path) => HardwareProfile::load(path)?,
            None => HardwareProfile::default(),
        };
        let (defaults, segment_bytes) = if args.quick {
            ((3, 0.15), 4 << 20)
        } else {
            ((7, 1.5), profile.log_options().segment_bytes)
        };
        let (rounds, window) = rounds_and_window(args.rounds, args.seconds, defaults)?;
        Ok(Settings {
            rounds,
            window,
            segment_bytes,
            profile,
        })
    }
}

/// Runs `lockstep-bench log`.
pub fn run(args: &LogArgs) -> Result<(), Error> {
    let settings = Settings::new(args)?;
    lockstep_sys::probe::io_uring().map_err(|why| format!("cannot benchmark the log: {why}"))?;
    let work = Workdir::new(args.dir.as_deref())?;
    let dir = work.path();
    let mut notes = Vec::new();
    let probe = lockstep_sys::probe::storage(dir)
        .map_err(|e| format!("probe storage under {}: {e}", dir.display()))?;
    let (floor_io, why) = FloorIo::choose(&probe);
    notes.extend(why);
    let pinned_core = pin_last_core(&mut notes);
    let mut ring =
        Ring::new(settings.profile.ring_options()).map_err(|e| format!("io_uring: {e}"))?;
    let mut floor = Floor::create(
        &dir.join(FLOOR_FILE),
        settings.segment_bytes,
        floor_io,
        &mut ring,
    )?;
    let log_dir = dir.join(LOG_DIR);
    clear_old_log(&log_dir, &mut notes)?;
    let opts = LogOptions {
        segment_bytes: settings.segment_bytes,
        ..settings.profile.log_options()
    };
    let mut log = Log::open(&log_dir, opts, LOG_TAG)?;
    notes.extend(log.recovery().notes.iter().map(|n| format!("log: {n}")));
    if log.direct_io() != (floor.io().access == Access::Direct) {
        return Err(format!(
            "the log and the floor chose different I/O modes under {}; \
             the comparison would be meaningless",
            dir.display()
        )
        .into());
    }
    log.register_buffers(&mut ring)?;
    for n in &notes {
        eprintln!("note: {n}");
    }

    let progress = Progress::new(settings.rounds);
    let mut writers = Writers::new(WRITERS_MAX, PAYLOAD_BYTES_MAX);
    let mut rounds = Vec::with_capacity(settings.rounds);
    for r in 0..settings.rounds {
        let started = Instant::now();
        let mut floors = Vec::with_capacity(FLOOR_WRITE_BYTES.len());
        for &bytes in &FLOOR_WRITE_BYTES {
            progress.step(r, &format!("floor {}", bytes_label(bytes)));
            floors.push(floor.run(&mut ring, bytes, settings.window)?);
        }
        let mut series = Vec::with_capacity(SERIES.len());
        for s in SERIES {
            progress.step(r, &s.label());
            series.push(writers.run(&mut log, &mut ring, s, settings.window)?);
        }
        progress.round_done(
            r,
            started.elapsed(),
            &format!(
                "floor 4 KiB p50 {:.1} µs, 1 × 256 B p50 {:.1} µs",
                floors[0].p50_us, series[0].latency.p50_us
            ),
        );
        rounds.push(Round { floors, series });
    }
    let durable = log.sync(&mut ring)?;
    assert_eq!(
        durable,
        writers.records_written(),
        "every record is durable"
    );
    let first_lsn = if work.kept() {
        trim(&mut log, settings.segment_bytes)?
    } else {
        log.first_lsn()
    };
    drop(log);
    floor.remove()?;

    let setup = Setup {
        log_dir: log_dir.clone(),
        log_kept: work.kept(),
        log_io: floor_io.label().into(),
        floor_io: floor_io.label().into(),
        pinned_core,
        rounds: settings.rounds,
        seconds_per_series: settings.window.measure.as_secs_f64(),
        warm_up_seconds: settings.window.warm_up.as_secs_f64(),
        segment_bytes: settings.segment_bytes,
        notes,
    };
    let report = Report::new(setup, &SERIES, &rounds, durable, first_lsn);
    println!(
        "lockstep-bench log: {} rounds × {:.2} s per series (+{:.2} s warm-up), {}, \
         {} segments, {}",
        settings.rounds,
        settings.window.measure.as_secs_f64(),
        settings.window.warm_up.as_secs_f64(),
        floor_io.label(),
        bytes_label(usize::try_from(settings.segment_bytes).expect("segment size fits usize")),
        pinned_core.map_or("not pinned".into(), |c| format!("pinned to core {c}")),
    );
    println!("medians across rounds; ratios are taken within each round\n");
    print!("{}", report.markdown());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    if work.kept() {
        let trimmed = if first_lsn > 1 {
            format!(
                "; older segments deleted to keep at most {}",
                bytes_label(LOG_KEPT_BYTES_MAX as usize)
            )
        } else {
            String::new()
        };
        println!(
            "\nlog kept in {} (lsn {first_lsn}..={durable} of {durable} records written{trimmed}); \
             check it with `lockstep log verify {}`",
            log_dir.display(),
            log_dir.display()
        );
    }
    Ok(())
}

/// Deletes the oldest segments of the log beyond [`LOG_KEPT_BYTES_MAX`] (at least two
/// are kept). Returns the new first LSN.
fn trim(log: &mut Log, segment_bytes: u64) -> Result<u64, Error> {
    let keep = usize::try_from(LOG_KEPT_BYTES_MAX / segment_bytes)
        .unwrap_or(usize::MAX)
        .max(2);
    let segments = segment::list(log.dir())
        .map_err(|e| format!("list segments of {}: {e}", log.dir().display()))?;
    if segments.len() <= keep {
        return Ok(log.first_lsn());
    }
    let (first_kept, _) = segments[segments.len() - keep];
    Ok(log.delete_before(first_kept)?)
}

/// Removes the log a previous run left in `log_dir`, refusing if anything there is not
/// a log file (the benchmark never deletes what it did not write) or if another process
/// holds the log's lock.
fn clear_old_log(log_dir: &Path, notes: &mut Vec<String>) -> Result<(), Error> {
    let entries = match fs::read_dir(log_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("list {}: {e}", log_dir.display()).into()),
    };
    let mut files = Vec::new();
    for e in entries {
        let e = e.map_err(|e| format!("list {}: {e}", log_dir.display()))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else {
            return Err(not_a_log(log_dir, &e.path()));
        };
        if name == LOCK_NAME {
            continue;
        }
        if name != SPARE_NAME && parse_name(name).is_none() {
            return Err(not_a_log(log_dir, &e.path()));
        }
        files.push(e.path());
    }
    // Held while deleting, so a log in use elsewhere is never touched.
    let lock_path = log_dir.join(LOCK_NAME);
    let lock = match fs::File::open(&lock_path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("open {}: {e}", lock_path.display()).into()),
    };
    if let Some(lock) = &lock {
        lock.try_lock().map_err(|e| match e {
            TryLockError::WouldBlock => {
                format!(
                    "the log in {} is in use by another process",
                    log_dir.display()
                )
            }
            TryLockError::Error(e) => format!("lock {}: {e}", lock_path.display()),
        })?;
    }
    for f in &files {
        fs::remove_file(f).map_err(|e| format!("remove {}: {e}", f.display()))?;
    }
    if !files.is_empty() {
        notes.push(format!(
            "removed the log of a previous run in {}",
            log_dir.display()
        ));
    }
    Ok(())
}

fn not_a_log(log_dir: &Path, path: &Path) -> Error {
    format!(
        "{} holds {}, which is not a log file; choose another --dir",
        log_dir.display(),
        path.display()
    )
    .into()
}
