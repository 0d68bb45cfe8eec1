//! `lockstep-bench`: measures lockstep against the raw limits of the machine it runs on.
//!
//! A number about lockstep means little alone: a 300 µs commit is excellent on one disk
//! and poor on another. Every benchmark here therefore measures the floor the hardware
//! sets (for example one durable 4 KiB write) in the same run, on the same device, and
//! reports lockstep as a ratio to it. The machine is assumed shared and noisy: floors and
//! series are interleaved in rounds and the median across rounds is reported.
//!
//! Subcommands:
//! - `log`: the log engine alone (group commit, durable writes), see [`log_bench`].
//!
//! Every benchmark has a `--quick` size that the test suite runs, so it cannot rot.
//! Benchmarks report numbers and exit 0 whether or not a goal is met; they exit non-zero
//! only when something actually failed (an I/O error, a refused configuration).
#![forbid(unsafe_code)]

mod floor;
mod log_bench;
mod report;
mod stats;
mod writers;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Errors of a benchmark run: the message names the operation and the file.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser, Debug)]
#[command(name = "lockstep-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Log engine: durable-write floor vs. group commit with 1, 8 and 64 writers.
    Log(LogArgs),
}

/// Options of `lockstep-bench log`.
#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// Directory for the log and the floor's scratch file. The log is kept there
    /// (in DIR/log) for `lockstep log verify`. Without it, a temporary directory under
    /// ./target (or the current directory) is used and removed afterwards.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Tiny run (a few seconds) with small segments, as the test suite runs it.
    #[arg(long)]
    pub quick: bool,
    /// Measured seconds of each series in each round (a tenth more is spent warming up).
    #[arg(long, value_name = "S")]
    pub seconds: Option<f64>,
    /// Rounds of interleaved floor and log series; the median across rounds is reported.
    #[arg(long, value_name = "N")]
    pub rounds: Option<usize>,
    /// Hardware profile (see hw-profiles/): io_uring and log settings.
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Log(args) => log_bench::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lockstep-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}
