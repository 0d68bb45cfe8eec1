//! What every benchmark needs around its measurements: a directory on a real disk,
//! pinned threads, the run's sizes, and a progress line per round.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use crate::Error;
use crate::stats::Window;

/// Where a run's files live: a kept directory (`--dir`) or a temporary one.
pub enum Workdir {
    Kept(PathBuf),
    Temp(TempDir),
}

impl Workdir {
    pub fn new(dir: Option<&Path>) -> Result<Workdir, Error> {
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
            return Ok(Workdir::Kept(dir.to_path_buf()));
        }
        // Under the build directory when run from the workspace, else under the current
        // directory: both are on a real disk, where /tmp may be tmpfs (no O_DIRECT).
        let base = if Path::new("target").is_dir() {
            PathBuf::from("target/bench-tmp")
        } else {
            PathBuf::from(".")
        };
        std::fs::create_dir_all(&base).map_err(|e| format!("create {}: {e}", base.display()))?;
        let tmp = tempfile::Builder::new()
            .prefix("lockstep-bench-")
            .tempdir_in(&base)
            .map_err(|e| format!("create a temporary directory in {}: {e}", base.display()))?;
        Ok(Workdir::Temp(tmp))
    }

    pub fn path(&self) -> &Path {
        match self {
            Workdir::Kept(p) => p,
            Workdir::Temp(t) => t.path(),
        }
    }

    pub fn kept(&self) -> bool {
        matches!(self, Workdir::Kept(_))
    }
}

/// Pins the calling thread to the last core this process may use, as a shard is pinned.
/// Threads it starts inherit the pinning.
pub fn pin_last_core(notes: &mut Vec<String>) -> Option<usize> {
    let Some(&core) = lockstep_sys::cpu::available_cores().last() else {
        notes.push("not pinned: the CPU set of this process is unknown".into());
        return None;
    };
    pin_to(core, notes)
}

/// Pins the calling thread to `core`; on failure says why in `notes`.
pub fn pin_to(core: usize, notes: &mut Vec<String>) -> Option<usize> {
    match lockstep_sys::cpu::pin_current_thread(core) {
        Ok(()) => Some(core),
        Err(e) => {
            notes.push(format!("not pinned: {e}"));
            None
        }
    }
}

/// Rounds and the window of each series, from the command line or the defaults
/// (`quick` picks the tiny ones the test suite runs).
pub fn rounds_and_window(
    rounds: Option<usize>,
    seconds: Option<f64>,
    defaults: (usize, f64),
) -> Result<(usize, Window), Error> {
    let rounds = rounds.unwrap_or(defaults.0);
    let seconds = seconds.unwrap_or(defaults.1);
    if rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0) {
        return Err(format!("--seconds {seconds}: must be in (0, 3600]").into());
    }
    let measure = Duration::from_secs_f64(seconds);
    Ok((
        rounds,
        Window {
            warm_up: measure / 10,
            measure,
        },
    ))
}

/// One line on stderr per round; on a terminal it also shows the running series.
pub struct Progress {
    rounds: usize,
    live: bool,
}

impl Progress {
    pub fn new(rounds: usize) -> Progress {
        Progress {
            rounds,
            live: std::io::stderr().is_terminal(),
        }
    }

    pub fn step(&self, round: usize, what: &str) {
        if self.live {
            eprint!("\r\x1b[Kround {}/{}: {what}", round + 1, self.rounds);
        }
    }

    /// Like [`Progress::step`], with a bar of the round's `done` of `total` steps; not
    /// on a terminal, a plain line per step (a long run's log shows where it is).
    pub fn bar(&self, round: usize, done: usize, total: usize, what: &str) {
        if !self.live {
            eprintln!("round {}/{}: {done}/{total} {what}", round + 1, self.rounds);
        } else {
            const WIDTH: usize = 24;
            let filled = (done * WIDTH).checked_div(total).unwrap_or(0).min(WIDTH);
            eprint!(
                "\r\x1b[Kround {}/{} [{}{}] {done}/{total} {what}",
                round + 1,
                self.rounds,
                "#".repeat(filled),
                "-".repeat(WIDTH - filled),
            );
        }
    }

    pub fn round_done(&self, round: usize, took: Duration, summary: &str) {
        if self.live {
            eprint!("\r\x1b[K");
        }
        eprintln!(
            "round {}/{} done in {:.1} s: {summary}",
            round + 1,
            self.rounds,
            took.as_secs_f64(),
        );
    }
}
