//! `lockstep`: the operator's command-line tool.
//!
//! A thin layer over the library: argument parsing and printing here, the logic in
//! [`lockstep::inspect`] (`log`), [`lockstep::client`] (`append`, `read`, `status`),
//! [`lockstep::demo`] (`demo`) and [`lockstep::front::export`] (`binlog export`).
//!
//! Exit statuses: 0 success (for `log verify`: the log is sound); 1 corruption found
//! (`log`) or a failed request or run (`append`, `read`, `status`, `demo`, `binlog
//! export`); 2 usage or I/O error; 3 an append is in doubt: it may or may not be
//! committed.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use lockstep::client::{Appended, Client, ClientError, ClientOptions};
use lockstep::constants::FRAME_RECORDS_MAX;
use lockstep::demo::{self, DemoError, DemoOptions};
use lockstep::front::export::{self as binlog_export, ExportError, ExportOptions};
use lockstep::front::gtid::GtidState;
use lockstep::inspect::{self, EXIT_CORRUPT, EXIT_SOUND, InspectError, PREVIEW_BYTES};
use lockstep::log::Record;
use lockstep::log::record::record_bytes;
use lockstep::server::metrics::PHASES;
use lockstep::wire::Mode;
use serde::Deserialize;

/// Exit status of a failed request or demo run.
const EXIT_FAILED: u8 = 1;
/// Exit status of bad usage (clap uses it too).
const EXIT_USAGE: u8 = 2;
/// Exit status of an append whose fate is unknown.
const EXIT_IN_DOUBT: u8 = 3;

/// Record bytes (headers included) of one append request. Well below one log batch of
/// the default and the shipped profiles, so a node never refuses a request as larger
/// than its batch; longer inputs are sent as several requests, one after the other.
const APPEND_REQUEST_BYTES_MAX: usize = 256 << 10;

#[derive(Parser)]
#[command(
    name = "lockstep",
    version,
    about = "Operator tool for lockstep, strong-synchronous replication of transaction logs",
    long_about = "Operator tool for lockstep, strong-synchronous replication of database \
                  transaction logs.\n\n\
                  `append`, `read` and `status` talk to a running cluster. The `log` \
                  commands inspect a stream's log directory on disk; they only read and \
                  never repair or change anything (starting the node does the recovery). \
                  `demo` runs a 3-node cluster in this process and measures it. `binlog \
                  export` writes the transactions of a MariaDB front's stream as binlog \
                  files.\n\n\
                  Exit status: 0 success; 1 corruption found (log) or a failed request or \
                  run; 2 usage or I/O error; 3 an append is in doubt (its fate is unknown: \
                  look it up by LSN with `read` or `status`).",
    after_help = "Examples:\n  \
                  lockstep demo\n  \
                  lockstep append --nodes 10.0.0.1:7001,10.0.0.2:7001 --stream orders 'row 1' 'row 2'\n  \
                  lockstep read --nodes 10.0.0.1:7001 --stream orders --from 1 --count 10\n  \
                  lockstep status --nodes 10.0.0.1:7001 --stream orders\n  \
                  lockstep log verify DATA_DIR/streams/orders\n  \
                  lockstep log dump DATA_DIR/streams/orders --from 1000 --count 5\n  \
                  lockstep binlog export --nodes 10.0.0.1:7001 --stream shop --out shop-binlog"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Append records to a stream and print their LSNs once committed
    ///
    /// Payloads come from the arguments (one record each), from the lines of stdin
    /// (`-`, one record per line, empty lines included), or from files (`--file`, one
    /// record per file, any bytes). They get consecutive LSNs unless they are too many
    /// for one request (more than 256 KiB or 8192 records); they are then sent as
    /// several requests in order.
    ///
    /// An append that timed out or lost its connection is in doubt: it may or may not
    /// be committed. The tool then exits with status 3 and says how to look it up;
    /// resending it could append it twice.
    Append(AppendArgs),
    /// Print committed records from an LSN on
    ///
    /// One line per record: lsn, epoch, payload length and the payload (quoted text if
    /// printable ASCII, else hex). Only committed records are shown; reading past the
    /// commit LSN prints nothing more and says so on stderr.
    Read(ReadArgs),
    /// Show a node's view of a stream: role, LSNs, commits, sync set, latency
    Status(StatusArgs),
    /// Run a 3-node cluster in this process, measure each commit mode against this
    /// machine's floor, and check that the nodes' logs agree
    ///
    /// Prints a table of p50/p99/p99.9 commit latency and commits/s for the modes
    /// strong, semi and async with 1 client and with 64 pipelined appends, beside the
    /// floor measured in the same run (loopback TCP round trip + one durable 4 KiB
    /// write). Then stops the nodes and compares the committed prefix of every stream
    /// on all three. Takes about 35 s (`--quick`: a few seconds).
    Demo(DemoArgs),
    /// Inspect a stream's log directory (read-only)
    #[command(subcommand)]
    Log(LogCommand),
    /// Move a stream's primary role to another node without losing anything
    ///
    /// Asks the cluster's controller, through any node's admin endpoint: the primary
    /// stops admitting appends, waits until the target holds its whole log, and the
    /// controller commits the new configuration. Appends are refused (redirected) for
    /// that short moment; nothing acknowledged is lost. Needs the `[control]` section.
    Switchover(SwitchoverArgs),
    /// Show the cluster as the controller sees it: each stream's epoch, primary, sync
    /// set and learners, and each node's log positions and lag
    ///
    /// Asks one node's admin endpoint (`GET /members`). `--json` prints the raw view.
    Members(MembersArgs),
    /// The binlog of a MariaDB front's stream: export it as standard binlog files
    ///
    /// A stream fed by a MariaDB front holds the primary's transactions, event for
    /// event. `binlog export` writes its committed transactions as MariaDB binlog files
    /// (`lockstep-bin.000001`, ... and `lockstep-bin.index`) that stock tools read:
    /// `mariadb-binlog FILES | mariadb` replays them (point-in-time recovery, a new
    /// replica, an audit). Each file holds the primary's format description, a
    /// GTID_LIST with the position at its start, whole transactions, and a ROTATE to
    /// the next file.
    #[command(subcommand)]
    Binlog(BinlogCommand),
}

#[derive(Subcommand)]
enum BinlogCommand {
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
struct ExportArgs {
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
fn binlog_export(a: &ExportArgs) -> Result<(), CommandError> {
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
    let mut client = a.target.connect()?;
    let summary = binlog_export::export(&mut client, &options)?;
    let mut out = io::stdout().lock();
    if a.target.json {
        let v = serde_json::to_value(&summary).map_err(|e| CommandError::Output(e.into()))?;
        writeln!(out, "{v}")?;
    } else {
        writeln!(out, "{summary}")?;
    }
    out.flush()?;
    Ok(())
}

#[derive(Args)]
struct MembersArgs {
    /// A node's admin address (host:port, the `admin` key of its configuration)
    #[arg(long, value_name = "ADDR")]
    admin: String,
    /// Print the view as JSON
    #[arg(long)]
    json: bool,
}

/// `GET path` on an admin endpoint: (status line, body).
fn admin_get(admin: &str, path: &str) -> Result<(String, String), CommandError> {
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect(admin)
        .map_err(|e| CommandError::Usage(format!("connect to {admin}: {e}")))?;
    let _ = sock.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    sock.write_all(request.as_bytes())?;
    let mut answer = String::new();
    sock.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    Ok((
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    ))
}

fn members(a: &MembersArgs) -> Result<(), CommandError> {
    let (status, body) = admin_get(&a.admin, "/members")?;
    if !status.contains(" 200 ") {
        return Err(CommandError::Usage(format!("{}: {}", a.admin, body.trim())));
    }
    let view: serde_json::Value = serde_json::from_str(&body)
        .map_err(|e| CommandError::Usage(format!("{}: not a members view: {e}", a.admin)))?;
    let mut out = io::stdout().lock();
    if a.json {
        writeln!(out, "{view:#}")?;
        return Ok(());
    }
    let leader = view["leader"]
        .as_u64()
        .map_or("none".to_string(), |l| l.to_string());
    writeln!(
        out,
        "controller leader: node {leader} (term {}), as node {} sees it",
        view["term"], view["node"]
    )?;
    let streams = view["config"]["streams"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (name, roles) in &streams {
        writeln!(
            out,
            "stream {name}: epoch {}, primary {}, sync set {}, learners {}{}",
            roles["epoch"],
            roles["primary"],
            roles["sync_set"],
            roles["learners"],
            if roles["degraded"].as_bool() == Some(true) {
                ", DEGRADED"
            } else {
                ""
            }
        )?;
        let primary_last = view["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["node"] == roles["primary"])
            .flat_map(|n| n["streams"].as_array().cloned().unwrap_or_default())
            .find(|s| s["stream"] == name.as_str())
            .and_then(|s| s["last_lsn"].as_u64());
        writeln!(
            out,
            "  node  role      heard      epoch  durable  commit   lag"
        )?;
        for n in view["nodes"].as_array().into_iter().flatten() {
            let id = &n["node"];
            let role = if *id == roles["primary"] {
                "primary"
            } else if roles["sync_set"].as_array().is_some_and(|s| s.contains(id)) {
                "sync"
            } else if roles["learners"].as_array().is_some_and(|s| s.contains(id)) {
                "learner"
            } else {
                "-"
            };
            let heard = n["heard_ms_ago"]
                .as_u64()
                .map_or("never".to_string(), |ms| format!("{ms} ms ago"));
            let s = n["streams"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["stream"] == name.as_str());
            let field = |k: &str| s.and_then(|s| s[k].as_u64());
            let show = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
            let lag = match (primary_last, field("durable_lsn")) {
                (Some(p), Some(d)) => p.saturating_sub(d).to_string(),
                _ => "-".to_string(),
            };
            let id = id.to_string();
            writeln!(
                out,
                "  {id:<5} {role:<9} {heard:<10} {:>5}  {:>7}  {:>6}  {lag:>4}",
                show(field("epoch")),
                show(field("durable_lsn")),
                show(field("commit_lsn")),
            )?;
        }
    }
    Ok(())
}

#[derive(Args)]
struct SwitchoverArgs {
    /// A node's admin address (host:port, the `admin` key of its configuration)
    #[arg(long, value_name = "ADDR")]
    admin: String,
    #[arg(long)]
    stream: String,
    /// The node to become primary (a member of the stream's sync set)
    #[arg(long, value_name = "NODE")]
    to: u32,
}

/// Asks for a switchover through a node's admin endpoint.
fn switchover(a: &SwitchoverArgs) -> Result<(), CommandError> {
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect(&a.admin)
        .map_err(|e| CommandError::Usage(format!("connect to {}: {e}", a.admin)))?;
    let _ = sock.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let request = format!(
        "POST /switchover?stream={}&to={} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        a.stream, a.to, a.admin
    );
    sock.write_all(request.as_bytes())?;
    let mut answer = String::new();
    sock.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.lines().next().unwrap_or("");
    if status.contains(" 202 ") {
        print!("{body}");
        Ok(())
    } else {
        Err(CommandError::Usage(format!("{}: {}", a.admin, body.trim())))
    }
}

/// Which cluster and stream a request goes to, and how its output looks.
#[derive(Args)]
struct Target {
    /// Node addresses (host:port), tried in order; a node that is not the stream's
    /// primary redirects appends to it
    #[arg(
        long = "nodes",
        visible_alias = "node",
        value_name = "ADDR[,ADDR...]",
        value_delimiter = ',',
        required = true
    )]
    nodes: Vec<String>,
    /// Stream name
    #[arg(long, value_name = "NAME")]
    stream: String,
    /// How long the node may take to commit an append before it answers "in doubt";
    /// replies of any request are awaited this long plus one second
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    timeout_ms: u64,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

impl Target {
    fn connect(&self) -> Result<Client, ClientError> {
        let options = ClientOptions {
            timeout: Duration::from_millis(self.timeout_ms),
            ..ClientOptions::default()
        };
        Client::connect(&self.nodes, &self.stream, options)
    }

    /// The `--nodes` and `--stream` arguments, for a command line to suggest.
    fn args(&self) -> String {
        format!("--nodes {} --stream {}", self.nodes.join(","), self.stream)
    }
}

#[derive(Args)]
struct AppendArgs {
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

#[derive(Args)]
struct ReadArgs {
    #[command(flatten)]
    target: Target,
    /// First LSN to print (LSNs start at 1)
    #[arg(long, value_name = "LSN", value_parser = clap::value_parser!(u64).range(1..))]
    from: u64,
    /// Print at most this many records
    #[arg(
        long,
        value_name = "N",
        default_value_t = 20,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    count: u64,
    /// Show whole payloads instead of the first 64 bytes (text output)
    #[arg(long)]
    full: bool,
}

#[derive(Args)]
struct StatusArgs {
    #[command(flatten)]
    target: Target,
}

#[derive(Args)]
struct DemoArgs {
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
    json: Option<PathBuf>,
    /// Run the database demo: a MariaDB primary made strongly synchronous by the
    /// cluster (its front), measured beside MariaDB alone and checked on every node;
    /// installs mariadb-server when it is missing and this runs as root
    #[arg(long)]
    mariadb: bool,
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

/// Why a request or a demo run failed.
#[derive(Debug, thiserror::Error)]
enum CommandError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Client(#[from] ClientError),
    /// An append in doubt, with what the operator can do about it.
    #[error("{source}\n{help}")]
    InDoubt { source: ClientError, help: String },
    #[error("read {what}: {source}")]
    Input { what: String, source: io::Error },
    #[error("writing output: {0}")]
    Output(#[from] io::Error),
    #[error(transparent)]
    Demo(#[from] DemoError),
    #[error(transparent)]
    Export(#[from] ExportError),
}

impl CommandError {
    fn exit_code(&self) -> u8 {
        match self {
            CommandError::Usage(_)
            | CommandError::Input { .. }
            | CommandError::Client(ClientError::StreamName(_) | ClientError::NoAddress)
            | CommandError::Demo(DemoError::Usage(_))
            | CommandError::Export(ExportError::Usage(_)) => EXIT_USAGE,
            CommandError::InDoubt { .. } => EXIT_IN_DOUBT,
            _ => EXIT_FAILED,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (name, result) = match cli.command {
        Command::Log(LogCommand::Verify(a)) => return inspect_exit(log_verify(&a)),
        Command::Log(LogCommand::Dump(a)) => return inspect_exit(log_dump(&a)),
        Command::Append(a) => ("append", append(&a)),
        Command::Read(a) => ("read", read(&a)),
        Command::Status(a) => ("status", status(&a)),
        Command::Demo(a) => ("demo", run_demo(a)),
        Command::Switchover(a) => ("switchover", switchover(&a)),
        Command::Members(a) => ("members", members(&a)),
        Command::Binlog(BinlogCommand::Export(a)) => ("binlog export", binlog_export(&a)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that went away (`| head`) is not a failure of the tool.
        Err(CommandError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lockstep {name}: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn inspect_exit(result: Result<u8, InspectError>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(InspectError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
            ExitCode::from(EXIT_SOUND)
        }
        Err(e) => {
            eprintln!("lockstep: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn append(a: &AppendArgs) -> Result<(), CommandError> {
    let payloads = append_payloads(a)?;
    if payloads.is_empty() {
        return Err(CommandError::Usage(
            "nothing to append: give payloads, `-` for one per line of stdin, or --file".to_owned(),
        ));
    }
    let mut client = a.target.connect()?;
    let mut out = io::stdout().lock();
    let mut sent = 0;
    for request in requests(&payloads) {
        let batch: Vec<&[u8]> = request.iter().map(Vec::as_slice).collect();
        let id = client.submit_append(&batch, a.mode)?;
        let appended = match client.wait(id) {
            Ok(appended) => appended,
            Err(e @ ClientError::InDoubt { .. }) => {
                let unsent = payloads.len() - sent - request.len();
                return Err(in_doubt(e, &a.target, unsent));
            }
            Err(e) => return Err(e.into()),
        };
        sent += request.len();
        print_appended(&mut out, appended, a.target.json)?;
    }
    out.flush()?;
    Ok(())
}

/// Every payload of the command line, in order.
fn append_payloads(a: &AppendArgs) -> Result<Vec<Vec<u8>>, CommandError> {
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
fn in_doubt(e: ClientError, target: &Target, unsent: usize) -> CommandError {
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
            target.args()
        ),
        None => format!(
            "the node did not say which LSNs it gave them: `lockstep status {}` shows the \
             commit LSN; `lockstep read` from the last LSN you know to be yours shows whether \
             the payloads were committed",
            target.args()
        ),
    };
    if unsent > 0 {
        let _ = write!(help, "\n{unsent} later payloads were not sent");
    }
    CommandError::InDoubt { source: e, help }
}

fn read(a: &ReadArgs) -> Result<(), CommandError> {
    let mut client = a.target.connect()?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut from = a.from;
    let mut left = a.count;
    let mut commit_lsn;
    loop {
        let (commit, records) = client.read(from, u32::try_from(left).unwrap_or(u32::MAX))?;
        commit_lsn = commit;
        for r in &records {
            print_record(&mut out, r, a.target.json, a.full)?;
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
fn node_text(client: &Client) -> String {
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

fn status(a: &StatusArgs) -> Result<(), CommandError> {
    let mut client = a.target.connect()?;
    let json = client.status()?;
    let text = if a.target.json {
        format!("{json}\n")
    } else {
        let node = node_text(&client);
        match StatusView::deserialize(&json) {
            Ok(view) => view.text(&node),
            // A node of another version: show what it said rather than nothing.
            Err(e) => format!(
                "status{node} in an unknown shape ({e}):\n{}\n",
                serde_json::to_string_pretty(&json).expect("a JSON value serializes")
            ),
        }
    };
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// The status reply of a node (see `lockstep::server::metrics`), as far as it is shown.
#[derive(Deserialize, Default)]
#[serde(default)]
struct StatusView {
    stream: String,
    role: String,
    mode: String,
    epoch: u64,
    last_lsn: u64,
    durable_lsn: u64,
    commit_lsn: u64,
    commits: u64,
    commit_bytes: u64,
    in_doubt: u64,
    events: u64,
    degraded: bool,
    failure: Option<String>,
    members: Vec<MemberView>,
    latency: BTreeMap<String, PhaseView>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MemberView {
    id: u64,
    in_sync: bool,
    connected: bool,
    received_lsn: u64,
    durable_lsn: u64,
    lag: u64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PhaseView {
    count: u64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
}

impl StatusView {
    fn text(&self, node: &str) -> String {
        let yes = |b: bool| if b { "yes" } else { "no" }.to_owned();
        let mut t = format!("stream {}{node}\n", self.stream);
        let _ = writeln!(
            t,
            "role      {}, epoch {}, mode {}",
            self.role, self.epoch, self.mode
        );
        let _ = writeln!(
            t,
            "lsns      last {}, durable {}, commit {}",
            self.last_lsn, self.durable_lsn, self.commit_lsn
        );
        // Commits, the sync set and latency are the primary's to know.
        if self.role == "primary" {
            let _ = writeln!(
                t,
                "commits   {} ({}), in doubt {}",
                self.commits,
                bytes_text(self.commit_bytes),
                self.in_doubt
            );
            let in_sync = self.members.iter().filter(|m| m.in_sync).count();
            let _ = writeln!(
                t,
                "sync set  {in_sync} of {} members in sync, {}, {} recorded changes",
                self.members.len(),
                if self.degraded {
                    "DEGRADED (committing without the sync set)"
                } else {
                    "not degraded"
                },
                self.events
            );
        }
        let _ = writeln!(t, "failure   {}", self.failure.as_deref().unwrap_or("none"));
        if !self.members.is_empty() {
            let mut rows = vec![
                [
                    "member",
                    "in sync",
                    "connected",
                    "received lsn",
                    "durable lsn",
                    "lag",
                ]
                .map(str::to_owned)
                .to_vec(),
            ];
            for m in &self.members {
                rows.push(vec![
                    m.id.to_string(),
                    yes(m.in_sync),
                    yes(m.connected),
                    m.received_lsn.to_string(),
                    m.durable_lsn.to_string(),
                    m.lag.to_string(),
                ]);
            }
            t.push('\n');
            t += &demo::markdown_table(&rows);
        }
        let measured = |p: &&PhaseView| p.count > 0;
        if self.latency.values().any(|p| measured(&p)) {
            let mut rows = vec![
                [
                    "commit latency",
                    "count",
                    "p50 µs",
                    "p99 µs",
                    "p99.9 µs",
                    "max µs",
                ]
                .map(str::to_owned)
                .to_vec(),
            ];
            // The phases in the order a commit goes through them.
            let known = PHASES.map(|p| p.as_str());
            let others = self.latency.keys().map(String::as_str);
            let names = known
                .into_iter()
                .chain(others.filter(|k| !known.contains(k)));
            for name in names {
                let Some(p) = self.latency.get(name) else {
                    continue;
                };
                rows.push(vec![
                    name.replace('_', " "),
                    p.count.to_string(),
                    p.p50_us.to_string(),
                    p.p99_us.to_string(),
                    p.p999_us.to_string(),
                    p.max_us.to_string(),
                ]);
            }
            t.push('\n');
            t += &demo::markdown_table(&rows);
        }
        t
    }
}

fn bytes_text(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn run_demo(a: DemoArgs) -> Result<(), CommandError> {
    let options = DemoOptions {
        seconds: a.seconds,
        payload_bytes: a.payload_bytes,
        quick: a.quick,
        keep: a.keep,
        json: a.json,
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
