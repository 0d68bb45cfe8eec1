//! `lockstep demo`: a 3-node cluster in this process, measured.

use std::io;
use std::path::PathBuf;

use clap::Args;
use lockstep::demo::{self, DemoOptions};

use super::CommandError;

#[derive(Args)]
pub(super) struct DemoArgs {
    /// Measured seconds of each of the six series [default: 4, or 0.25 with --quick]
    #[arg(long, value_name = "S")]
    seconds: Option<f64>,
    /// Payload bytes of each record
    #[arg(long = "payload", value_name = "BYTES", default_value_t = demo::PAYLOAD_BYTES_DEFAULT)]
    payload_bytes: usize,
    /// A tiny run of a few seconds (what the test suite runs)
    #[arg(long)]
    quick: bool,
    /// Keep the nodes' data and configurations in DIR (created; must be empty)
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// Also write the results as JSON to FILE
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Run the database demo: a MariaDB primary made strongly synchronous by the
    /// cluster (its front), measured beside MariaDB alone and checked on every node;
    /// installs mariadb-server when it is missing and this runs as root
    #[arg(long)]
    mariadb: bool,
}

pub(super) fn run(a: DemoArgs) -> Result<(), CommandError> {
    let options = DemoOptions {
        seconds: a.seconds,
        payload_bytes: a.payload_bytes,
        quick: a.quick,
        keep: a.keep,
        json: a.report,
        progress: true,
        mariadb: a.mariadb,
    };
    if options.mariadb {
        demo::run_database(&options, &mut io::stdout())?;
    } else {
        demo::run(&options, &mut io::stdout())?;
    }
    Ok(())
}
