//! `lockstep binlog export`: a MariaDB front's stream as standard binlog files.

use std::io::{self, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use lockstep::front::export::{self as binlog_export, ExportOptions};
use lockstep::front::gtid::GtidState;

use super::{CommandError, Global, Target};

#[derive(Subcommand)]
pub(super) enum BinlogCommand {
    /// Write the stream's committed transactions as MariaDB binlog files into a new
    /// directory
    ///
    /// Reads committed records only, in chunks (memory stays bounded by one read and
    /// the largest transaction), up to the commit LSN found when the export began.
    /// Without --from-gtid it starts at the stream's first retained record, which
    /// must start a front session (its format record describes the events); with
    /// --from-gtid POS it exports what a MariaDB replica connecting with POS would
    /// receive: every transaction POS does not hold. A POS beyond the stream, one from
    /// another history, or one whose following transactions retention deleted is an
    /// error.
    ///
    /// Each event keeps the primary's bytes except its header's log_pos (its end
    /// offset in the new file) and its CRC32, which is verified first and then
    /// computed again. A file ends with a ROTATE at the first transaction boundary
    /// once it holds --file-bytes or more.
    ///
    /// The files are written beside DIR (in .DIR.partial-PID), made durable, and
    /// renamed to DIR at the end: DIR appears whole or not at all. A failed export
    /// removes its partial directory; a killed one leaves it, and it may be deleted.
    /// Prints one summary line (with --json, a JSON object).
    Export(ExportArgs),
}

#[derive(Args)]
pub(super) struct ExportArgs {
    #[command(flatten)]
    target: Target,
    /// The directory to create for the files (it must not exist, or be empty)
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Export the transactions after this GTID position, as MariaDB writes it
    /// (`0-1-100,1-2-5`) [default: from the stream's first retained record]
    #[arg(long, value_name = "POS")]
    from_gtid: Option<String>,
    /// End a file at the first transaction boundary once it holds this many bytes
    /// (as MariaDB's max_binlog_size: 4096 to 1 GiB)
    #[arg(
        long,
        value_name = "N",
        default_value_t = binlog_export::FILE_BYTES_DEFAULT,
        value_parser = clap::value_parser!(u64).range(4096..=1 << 30)
    )]
    file_bytes: u64,
}

/// `lockstep binlog export`.
pub(super) fn export(g: &Global, a: &ExportArgs) -> Result<(), CommandError> {
    let from = match &a.from_gtid {
        Some(text) => Some(
            GtidState::parse(text).map_err(|e| CommandError::Usage(format!("--from-gtid: {e}")))?,
        ),
        None => None,
    };
    let options = ExportOptions {
        out: a.out.clone(),
        from,
        file_bytes: a.file_bytes,
    };
    let mut client = a.target.connect(g)?;
    let summary = binlog_export::export(&mut client, &options)?;
    let mut out = io::stdout().lock();
    if g.json {
        let v = serde_json::to_value(&summary).map_err(|e| CommandError::Output(e.into()))?;
        writeln!(out, "{v}")?;
    } else {
        writeln!(out, "{summary}")?;
    }
    out.flush()?;
    Ok(())
}
