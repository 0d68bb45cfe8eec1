//! `lockstep log verify` and `lockstep log dump`: a stream's log directory, read-only.

use std::io::{self, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use lockstep::inspect::{self, EXIT_CORRUPT};

use super::{CommandError, Global};

#[derive(Subcommand)]
pub(super) enum LogCommand {
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
pub(super) struct VerifyArgs {
    /// Log directory of one stream (holds the segment files)
    dir: PathBuf,
    /// Also list every segment
    #[arg(short, long)]
    verbose: bool,
}

#[derive(Args)]
pub(super) struct DumpArgs {
    /// Log directory of one stream (holds the segment files)
    dir: PathBuf,
    /// First LSN to print [default: the first retained LSN]
    #[arg(long, value_name = "LSN")]
    from: Option<u64>,
    /// Print at most this many records (a note on stderr says where more start)
    #[arg(
        long,
        visible_alias = "count",
        value_name = "N",
        default_value_t = 20,
        conflicts_with = "all"
    )]
    limit: u64,
    /// Print every record from --from on
    #[arg(long)]
    all: bool,
    /// Show whole payloads instead of the first 64 bytes
    #[arg(long)]
    full: bool,
}

pub(super) fn verify(g: &Global, a: &VerifyArgs) -> Result<(), CommandError> {
    let report = inspect::verify(&a.dir)?;
    let text = if g.json {
        serde_json::to_string(&report).map_err(|e| CommandError::Output(e.into()))?
    } else if a.verbose {
        format!("{report:#}")
    } else {
        report.to_string()
    };
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()?;
    for p in &report.problems {
        eprintln!("lockstep log verify: corrupt log: {p}");
    }
    if report.sound {
        Ok(())
    } else {
        Err(CommandError::Exit(EXIT_CORRUPT))
    }
}

pub(super) fn dump(g: &Global, a: &DumpArgs) -> Result<(), CommandError> {
    let mut out = io::BufWriter::new(io::stdout().lock());
    let limit = if a.all { u64::MAX } else { a.limit };
    let mut printed = 0u64;
    let mut more_from = None;
    // One record more than the limit is read to learn whether more exist.
    let summary = inspect::dump(&a.dir, a.from, limit.saturating_add(1), |r| {
        if printed == limit {
            more_from = Some(r.lsn);
            return Ok(());
        }
        printed += 1;
        let line = if g.json { r.json() } else { r.line(a.full) };
        writeln!(out, "{line}")
    });
    // Records printed before an error are valid: show them before the error.
    let flushed = out.flush();
    let summary = summary?;
    flushed?;
    for n in &summary.notes {
        eprintln!("lockstep log dump: note: {n}");
    }
    if let Some(lsn) = more_from {
        eprintln!(
            "lockstep log dump: stopped after {printed} records (--limit {limit}); more from \
             lsn {lsn}: --from {lsn}, or --all"
        );
    }
    Ok(())
}
