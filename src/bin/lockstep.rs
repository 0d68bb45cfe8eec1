//! `lockstep`: the operator's command-line tool.
//!
//! A thin layer over the library: argument parsing and printing here, the logic in
//! [`lockstep::inspect`]. Exit statuses: 0 success (for `log verify`: the log is sound),
//! 1 corruption found, 2 usage or I/O error.
#![forbid(unsafe_code)]

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use lockstep::inspect::{self, EXIT_CORRUPT, EXIT_SOUND, InspectError};

#[derive(Parser)]
#[command(
    name = "lockstep",
    version,
    about = "Operator tool for lockstep, strong-synchronous replication of transaction logs",
    long_about = "Operator tool for lockstep, strong-synchronous replication of database \
                  transaction logs.\n\n\
                  The `log` commands inspect a stream's log directory on disk; they only \
                  read and never repair or change anything (starting the node does the \
                  recovery).\n\n\
                  Exit status: 0 success, 1 corruption found, 2 usage or I/O error.",
    after_help = "Examples:\n  \
                  lockstep log verify DATA_DIR/streams/orders\n  \
                  lockstep log dump DATA_DIR/streams/orders --from 1000 --count 5"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect a stream's log directory (read-only)
    #[command(subcommand)]
    Log(LogCommand),
}

#[derive(Subcommand)]
enum LogCommand {
    /// Check every record of every segment, LSN continuity and epochs
    ///
    /// Exit status 0 when the log is sound (a torn tail, the normal result of a crash
    /// during an unacknowledged write, is reported but still sound), 1 on corruption
    /// (each problem on stderr with file, offset and reason), 2 on usage or I/O errors.
    Verify(VerifyArgs),
    /// Print records from an LSN on
    ///
    /// One line per record: lsn, epoch, payload length, crc32c and the payload (quoted
    /// text if printable ASCII, else hex). Damage in a segment read is reported as by
    /// `verify` (exit status 1); an LSN outside the log is an error (exit status 2).
    Dump(DumpArgs),
}

#[derive(Args)]
struct VerifyArgs {
    /// Log directory of one stream (holds the segment files)
    dir: PathBuf,
    /// Print the report as one JSON object
    #[arg(long)]
    json: bool,
    /// Also list every segment
    #[arg(short, long)]
    verbose: bool,
}

#[derive(Args)]
struct DumpArgs {
    /// Log directory of one stream (holds the segment files)
    dir: PathBuf,
    /// First LSN to print [default: the first retained LSN]
    #[arg(long, value_name = "LSN")]
    from: Option<u64>,
    /// Print at most this many records
    #[arg(long, value_name = "N", default_value_t = 20)]
    count: u64,
    /// Show whole payloads instead of the first 64 bytes
    #[arg(long)]
    full: bool,
    /// Print one JSON object per record (payload in hex)
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Log(LogCommand::Verify(a)) => log_verify(&a),
        Command::Log(LogCommand::Dump(a)) => log_dump(&a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        // A reader that went away (`| head`) is not a failure of the tool.
        Err(InspectError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
            ExitCode::from(EXIT_SOUND)
        }
        Err(e) => {
            eprintln!("lockstep: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn log_verify(a: &VerifyArgs) -> Result<u8, InspectError> {
    let report = inspect::verify(&a.dir)?;
    let text = if a.json {
        serde_json::to_string(&report).map_err(|e| InspectError::Output(e.into()))?
    } else if a.verbose {
        format!("{report:#}")
    } else {
        report.to_string()
    };
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(InspectError::Output)?;
    for p in &report.problems {
        eprintln!("lockstep: corrupt log: {p}");
    }
    Ok(if report.sound {
        EXIT_SOUND
    } else {
        EXIT_CORRUPT
    })
}

fn log_dump(a: &DumpArgs) -> Result<u8, InspectError> {
    let mut out = io::BufWriter::new(io::stdout().lock());
    let summary = inspect::dump(&a.dir, a.from, a.count, |r| {
        let line = if a.json { r.json() } else { r.line(a.full) };
        writeln!(out, "{line}")
    });
    // Records printed before an error are valid: show them before the error.
    let flushed = out.flush().map_err(InspectError::Output);
    let summary = summary?;
    flushed?;
    for n in &summary.notes {
        eprintln!("lockstep: note: {n}");
    }
    Ok(EXIT_SOUND)
}
