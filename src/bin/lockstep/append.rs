//! `lockstep append`: payloads from arguments, stdin or files, sent in requests of a
//! bounded size; an append in doubt says how to learn its fate.

use std::fmt::Write as _;
use std::io::{self, BufRead, Write};
use std::path::PathBuf;

use clap::Args;
use lockstep::client::{Appended, ClientError};
use lockstep::constants::FRAME_RECORDS_MAX;
use lockstep::log::record::record_bytes;
use lockstep::wire::Mode;

use super::{CommandError, Global, Target};

/// Record bytes (headers included) of one append request. Well below one log batch of
/// the default and the shipped profiles, so a node never refuses a request as larger
/// than its batch; longer inputs are sent as several requests, one after the other.
const APPEND_REQUEST_BYTES_MAX: usize = 256 << 10;

#[derive(Args)]
pub(super) struct AppendArgs {
    #[command(flatten)]
    target: Target,
    /// Commit mode of these appends; may only weaken the stream's mode
    /// [default: the stream's]
    #[arg(long, value_name = "strong|semi|async")]
    mode: Option<Mode>,
    /// Append this file's contents as one record (repeatable)
    #[arg(long, value_name = "FILE", conflicts_with = "payloads")]
    file: Vec<PathBuf>,
    /// Payloads, one record each; `-` reads one record per line from stdin
    #[arg(value_name = "PAYLOAD")]
    payloads: Vec<String>,
}

pub(super) fn append(g: &Global, a: &AppendArgs) -> Result<(), CommandError> {
    let payloads = append_payloads(a)?;
    if payloads.is_empty() {
        return Err(CommandError::Usage(
            "nothing to append: give payloads, `-` for one per line of stdin, or --file".to_owned(),
        ));
    }
    let mut client = a.target.connect(g)?;
    let mut out = io::stdout().lock();
    let mut sent = 0;
    for request in requests(&payloads) {
        let batch: Vec<&[u8]> = request.iter().map(Vec::as_slice).collect();
        let id = client.submit_append(&batch, a.mode)?;
        let appended = match client.wait(id) {
            Ok(appended) => appended,
            Err(e @ ClientError::InDoubt { .. }) => {
                let unsent = payloads.len() - sent - request.len();
                return Err(in_doubt(e, g, &a.target, unsent));
            }
            Err(e) => return Err(e.into()),
        };
        sent += request.len();
        print_appended(&mut out, appended, g.json)?;
    }
    out.flush()?;
    Ok(())
}

/// Every payload of the command line, in order.
pub(super) fn append_payloads(a: &AppendArgs) -> Result<Vec<Vec<u8>>, CommandError> {
    if !a.file.is_empty() {
        return (a.file.iter())
            .map(|f| {
                std::fs::read(f).map_err(|source| CommandError::Input {
                    what: f.display().to_string(),
                    source,
                })
            })
            .collect();
    }
    if a.payloads.iter().any(|p| p == "-") {
        if a.payloads.len() != 1 {
            return Err(CommandError::Usage(
                "`-` (lines of stdin) cannot be combined with other payloads".to_owned(),
            ));
        }
        let input_err = |source| CommandError::Input {
            what: "stdin".to_owned(),
            source,
        };
        let mut lines = Vec::new();
        for line in io::stdin().lock().split(b'\n') {
            let mut line = line.map_err(input_err)?;
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            lines.push(line);
        }
        return Ok(lines);
    }
    Ok(a.payloads.iter().map(|p| p.as_bytes().to_vec()).collect())
}

/// The payloads split into append requests of at most [`APPEND_REQUEST_BYTES_MAX`]
/// record bytes (one larger payload goes alone) and [`FRAME_RECORDS_MAX`] records.
fn requests(payloads: &[Vec<u8>]) -> Vec<&[Vec<u8>]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, p) in payloads.iter().enumerate() {
        let b = record_bytes(p.len());
        let full = i - start == FRAME_RECORDS_MAX || bytes + b > APPEND_REQUEST_BYTES_MAX;
        if i > start && full {
            out.push(&payloads[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += b;
    }
    out.push(&payloads[start..]);
    out
}

fn print_appended(out: &mut impl Write, a: Appended, json: bool) -> io::Result<()> {
    if json {
        let v = serde_json::json!({ "first_lsn": a.first_lsn, "count": a.count });
        writeln!(out, "{v}")
    } else {
        (a.first_lsn..=a.last_lsn()).try_for_each(|lsn| writeln!(out, "{lsn}"))
    }
}

/// The in-doubt error with the commands that tell its fate.
fn in_doubt(e: ClientError, g: &Global, target: &Target, unsent: usize) -> CommandError {
    let ClientError::InDoubt {
        first_lsn, count, ..
    } = &e
    else {
        unreachable!("called with an in-doubt error");
    };
    let mut help = match first_lsn {
        Some(first) => format!(
            "to learn its fate: `lockstep read {} --from {first} --count {count}` shows the \
             records if they are committed (compare the payloads); nothing there means they \
             are not committed yet",
            target.args(g)
        ),
        None => format!(
            "the node did not say which LSNs it gave them: `lockstep status {}` shows the \
             commit LSN; `lockstep read` from the last LSN you know to be yours shows whether \
             the payloads were committed",
            target.args(g)
        ),
    };
    if unsent > 0 {
        let _ = write!(help, "\n{unsent} later payloads were not sent");
    }
    CommandError::InDoubt { source: e, help }
}
