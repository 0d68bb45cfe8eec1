//! `lockstep read`: committed records of a stream from an LSN on.

use std::fmt::Write as _;
use std::io::{self, Write};

use clap::Args;
use lockstep::client::Client;
use lockstep::inspect::{self, PREVIEW_BYTES};
use lockstep::log::Record;

use super::{CommandError, Global, Target};

#[derive(Args)]
pub(super) struct ReadArgs {
    #[command(flatten)]
    target: Target,
    /// First LSN to print (LSNs start at 1)
    #[arg(long, value_name = "LSN", value_parser = clap::value_parser!(u64).range(1..))]
    from: u64,
    /// Print at most this many records
    #[arg(
        long,
        visible_alias = "limit",
        value_name = "N",
        default_value_t = 20,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    count: u64,
    /// Show whole payloads instead of the first 64 bytes (text output)
    #[arg(long)]
    full: bool,
}

pub(super) fn read(g: &Global, a: &ReadArgs) -> Result<(), CommandError> {
    let mut client = a.target.connect(g)?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut from = a.from;
    let mut left = a.count;
    let mut commit_lsn;
    loop {
        let (commit, records) = client.read(from, u32::try_from(left).unwrap_or(u32::MAX))?;
        commit_lsn = commit;
        for r in &records {
            print_record(&mut out, r, g.json, a.full)?;
        }
        left -= records.len() as u64;
        let Some(last) = records.last() else {
            break;
        };
        from = last.lsn + 1;
        if left == 0 || from > commit {
            break;
        }
    }
    out.flush()?;
    if left > 0 {
        eprintln!(
            "lockstep read: nothing committed from lsn {from} on: the commit lsn{} is \
             {commit_lsn}",
            node_text(&client)
        );
    }
    Ok(())
}

/// " on node N (ADDR)": which node answered, for messages.
pub(super) fn node_text(client: &Client) -> String {
    client.node().map_or_else(String::new, |n| {
        format!(" on node {} ({})", n.node_id, n.addr)
    })
}

fn print_record(out: &mut impl Write, r: &Record, json: bool, full: bool) -> io::Result<()> {
    if json {
        let v = serde_json::json!({
            "lsn": r.lsn,
            "epoch": r.epoch,
            "len": r.payload.len(),
            "payload_hex": hex(&r.payload),
        });
        writeln!(out, "{v}")
    } else {
        let max = if full { usize::MAX } else { PREVIEW_BYTES };
        writeln!(
            out,
            "lsn={} epoch={} len={} {}",
            r.lsn,
            r.epoch,
            r.payload.len(),
            inspect::preview(&r.payload, max)
        )
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
