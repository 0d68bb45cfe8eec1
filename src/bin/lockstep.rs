//! `lockstep`: the operator's command-line tool.
//!
//! A thin layer over the library: argument parsing and printing here, the logic in
//! [`lockstep::inspect`] (`log`), [`lockstep::client`] (`append`, `read`, `status`),
//! the nodes' admin plane over HTTP (`members`, `cluster health`, `switchover`),
//! [`lockstep::demo`] (`demo`) and [`lockstep::front::export`] (`binlog export`).
//!
//! One set of options for every command that talks to a cluster: `--nodes` (or
//! `LOCKSTEP_NODES`), `--json`, `--timeout-ms`, and for mutating admin commands
//! `--token-file` / `--secret-file` (or `LOCKSTEP_TOKEN_FILE` / `LOCKSTEP_SECRET_FILE`).
//!
//! Exit statuses, the same for every command: 0 success; 1 the operation failed (a
//! refused request, a corrupt log, an unhealthy cluster); 2 usage error (bad
//! arguments, unreadable input); 3 no node could be reached; 4 an append is in doubt
//! (it may or may not be committed).
//!
//! `--json`: results go to stdout as JSON, one value per line (a command with one
//! result prints one line; `read` and `log dump` print one line per record); an error
//! goes to stderr as one line `{"error": {"message", "exit_code", "kind"}}`.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use lockstep::client::{Appended, Client, ClientError, ClientOptions};
use lockstep::constants::FRAME_RECORDS_MAX;
use lockstep::demo::{self, DemoError, DemoOptions};
use lockstep::front::export::{self as binlog_export, ExportError, ExportOptions};
use lockstep::front::gtid::GtidState;
use lockstep::inspect::{self, EXIT_CORRUPT, InspectError, PREVIEW_BYTES};
use lockstep::log::Record;
use lockstep::log::record::record_bytes;
use lockstep::server::metrics::PHASES;
use lockstep::wire::Mode;
use serde::Deserialize;
use serde_json::{Value, json};

/// Exit status of a failed operation (a refusal, corruption, an unhealthy cluster).
const EXIT_FAILED: u8 = 1;
/// Exit status of bad usage (clap uses it too).
const EXIT_USAGE: u8 = 2;
/// Exit status when no node could be reached.
const EXIT_UNREACHABLE: u8 = 3;
/// Exit status of an append whose fate is unknown.
const EXIT_IN_DOUBT: u8 = 4;

/// Record bytes (headers included) of one append request. Well below one log batch of
/// the default and the shipped profiles, so a node never refuses a request as larger
/// than its batch; longer inputs are sent as several requests, one after the other.
const APPEND_REQUEST_BYTES_MAX: usize = 256 << 10;

/// How long the CLI waits for a reply when the stream's own request timeout applies
/// (no --timeout-ms): longer than any sensible `request_timeout_ms`.
const STREAM_TIMEOUT_WAIT: Duration = Duration::from_secs(60);

/// How long one HTTP request to an admin endpoint may take (a switchover's own wait
/// is added).
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Parser)]
#[command(
    name = "lockstep",
    version,
    about = "Operator tool for lockstep, strong-synchronous replication of transaction logs",
    long_about = "Operator tool for lockstep, strong-synchronous replication of database \
                  transaction logs.\n\n\
                  `append`, `read`, `status`, `members`, `cluster health` and `switchover` \
                  talk to a running cluster through any of its nodes (--nodes, or \
                  LOCKSTEP_NODES). The `log` commands inspect a stream's log directory on \
                  disk; they only read. `demo` runs a 3-node cluster in this process and \
                  measures it. `binlog export` writes the transactions of a MariaDB \
                  front's stream as binlog files.\n\n\
                  Exit status: 0 success; 1 the operation failed (refused, corrupt, \
                  unhealthy); 2 usage error; 3 no node reachable; 4 an append is in doubt \
                  (its fate is unknown: look it up by LSN with `read` or `status`).\n\n\
                  --json: one JSON value per line on stdout (one per record for `read` and \
                  `log dump`); errors as {\"error\": {\"message\", \"exit_code\", \"kind\"}} on \
                  stderr.",
    after_help = "Examples:\n  \
                  export LOCKSTEP_NODES=10.0.0.1:7001,10.0.0.2:7001,10.0.0.3:7001\n  \
                  lockstep cluster health\n  \
                  lockstep append --stream orders 'row 1' 'row 2'\n  \
                  lockstep read --stream orders --from 1 --count 10\n  \
                  lockstep status --stream orders\n  \
                  lockstep switchover --stream orders --to 2 --secret-file /etc/lockstep/cluster.secret\n  \
                  lockstep log verify DATA_DIR/streams/orders\n  \
                  lockstep log dump DATA_DIR/streams/orders --from 1000 --limit 5\n  \
                  lockstep binlog export --stream shop --out shop-binlog"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options of every command that talks to a cluster.
#[derive(Args, Clone)]
struct Global {
    /// Node addresses (host:port of each node's listener, or of its admin endpoint for
    /// the admin commands), tried in order
    #[arg(
        long = "nodes",
        visible_alias = "node",
        alias = "admin",
        value_name = "ADDR[,ADDR...]",
        value_delimiter = ',',
        env = "LOCKSTEP_NODES",
        global = true
    )]
    nodes: Vec<String>,
    /// Print JSON (one value per line; errors as JSON on stderr)
    #[arg(long, global = true)]
    json: bool,
    /// How long an append may wait for its commit before the node answers "in doubt"
    /// [default: the stream's request_timeout_ms]; replies are awaited this long plus
    /// one second. For switchover: how long to wait for the outcome [default: 10000]
    #[arg(long, value_name = "MS", global = true)]
    timeout_ms: Option<u64>,
    /// File whose first line is the admin token (mutating admin commands)
    #[arg(long, value_name = "FILE", env = "LOCKSTEP_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    /// The cluster secret file; the admin token is derived from it (mutating admin
    /// commands)
    #[arg(long, value_name = "FILE", env = "LOCKSTEP_SECRET_FILE", global = true)]
    secret_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Append records to a stream and print their LSNs once committed
    ///
    /// Payloads come from the arguments (one record each), from the lines of stdin
    /// (`-`, one record per line, empty lines included), or from files (`--file`, one
    /// record per file, any bytes). They get consecutive LSNs unless they are too many
    /// for one request (more than 256 KiB or 8192 records); they are then sent as
    /// several requests in order. During a failover the append is redirected and
    /// retried until its timeout.
    ///
    /// An append that timed out or lost its connection is in doubt: it may or may not
    /// be committed. The tool then exits with status 4 and says how to look it up;
    /// resending it could append it twice.
    Append(AppendArgs),
    /// Print committed records of a stream from an LSN on
    ///
    /// One line per record: lsn, epoch, payload length and the payload (quoted text if
    /// printable ASCII, else hex). Only committed records are shown; reading past the
    /// commit LSN prints nothing more and says so on stderr.
    Read(ReadArgs),
    /// Show a stream's state: role, epoch, LSNs, commits, sync set, latency
    ///
    /// Asks the stream's primary (found among --nodes, or through the controller's
    /// view): its member table is the current one. When no primary answers, shows the
    /// answering node's own view and says that its member table is unknown.
    Status(StatusArgs),
    /// Show the cluster at a glance: each node UP or DOWN, its role, epoch, log
    /// positions and lag in each stream, and the controller's leader
    ///
    /// Every node is asked directly (its /v1/status); the controller's view (the
    /// roles, and what it last heard from nodes that do not answer) comes from the
    /// first node of --nodes that answers, with its age.
    Members,
    /// The cluster as a whole
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Move a stream's primary role to another node without losing anything, and wait
    /// for the outcome
    ///
    /// Asks the cluster's controller through any node: the primary stops admitting
    /// appends, waits until the target holds its whole log, and the controller
    /// commits the new configuration. Exits 0 once the target is the primary, 1 with
    /// the reason when refused (unknown stream or node, the node already primary or
    /// not in the sync set) or not done within --timeout-ms. Needs the [control]
    /// section, and the admin token (--token-file or --secret-file).
    Switchover(SwitchoverArgs),
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
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    #[command(hide = true)]
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff) of lockstep or of one subcommand
    #[command(hide = true)]
    Man {
        /// Write lockstep.1 and one page per subcommand (lockstep-NAME.1) into DIR
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// As `members`, with a verdict: exit 0 when every node is UP and ready and every
    /// stream has a primary with its full sync set, 1 otherwise (the problems listed)
    Health,
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
fn binlog_export(g: &Global, a: &ExportArgs) -> Result<(), CommandError> {
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

#[derive(Args)]
struct SwitchoverArgs {
    /// The stream whose primary role moves
    #[arg(long, value_name = "NAME")]
    stream: String,
    /// The node to become primary (a member of the stream's sync set)
    #[arg(long, value_name = "NODE")]
    to: u32,
}

/// Which stream a request goes to.
#[derive(Args)]
struct Target {
    /// Stream name
    #[arg(long, value_name = "NAME")]
    stream: String,
}

impl Target {
    fn connect(&self, g: &Global) -> Result<Client, CommandError> {
        let nodes = g.nodes()?;
        let options = ClientOptions {
            timeout: g
                .timeout_ms
                .map_or(STREAM_TIMEOUT_WAIT, Duration::from_millis),
            ..ClientOptions::default()
        };
        let mut client = Client::connect(nodes, &self.stream, options)?;
        if g.timeout_ms.is_none() {
            client.use_stream_timeout();
        }
        Ok(client)
    }

    /// The `--nodes` and `--stream` arguments, for a command line to suggest.
    fn args(&self, g: &Global) -> String {
        format!("--nodes {} --stream {}", g.nodes.join(","), self.stream)
    }
}

impl Global {
    fn nodes(&self) -> Result<&[String], CommandError> {
        if self.nodes.is_empty() {
            return Err(CommandError::Usage(
                "no node given: --nodes ADDR[,ADDR...] or LOCKSTEP_NODES".into(),
            ));
        }
        Ok(&self.nodes)
    }

    /// The admin token: --token-file's first line, else derived from --secret-file.
    fn token(&self) -> Result<Option<String>, CommandError> {
        if let Some(p) = &self.token_file {
            return lockstep::server::auth::load_admin_token(p)
                .map(Some)
                .map_err(|e| CommandError::Usage(e.replace("admin_token_file", "--token-file")));
        }
        if let Some(p) = &self.secret_file {
            return lockstep::server::auth::Secret::load(p)
                .map(|s| Some(s.admin_token()))
                .map_err(|e| CommandError::Usage(e.named("--secret-file")));
        }
        Ok(None)
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
    report: Option<PathBuf>,
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

/// Why a command failed.
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
    /// The operation was refused or did not succeed; nothing more to add.
    #[error("{0}")]
    Failed(String),
    /// No node answered.
    #[error("{0}")]
    Unreachable(String),
    /// A log inspection ended with this exit status (its report is printed).
    #[error("{0}")]
    Inspect(#[from] InspectError),
    /// The command printed its result and exits with this status (an unhealthy
    /// cluster, a corrupt log).
    #[error("")]
    Exit(u8),
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
            CommandError::Unreachable(_)
            | CommandError::Client(ClientError::Unreachable { .. }) => EXIT_UNREACHABLE,
            CommandError::Inspect(e) => e.exit_code(),
            CommandError::Exit(code) => *code,
            _ => EXIT_FAILED,
        }
    }

    fn kind(&self) -> &'static str {
        match self.exit_code() {
            EXIT_USAGE => "usage",
            EXIT_UNREACHABLE => "unreachable",
            EXIT_IN_DOUBT => "in_doubt",
            _ => "failed",
        }
    }
}

fn main() -> ExitCode {
    let json_asked = std::env::args().any(|a| a == "--json");
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            if json_asked && code != 0 {
                let message = e.kind().to_string();
                print_json_error(
                    &format!("{message}: {}", first_line(&e.to_string())),
                    code,
                    "usage",
                );
                return ExitCode::from(code);
            }
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let g = cli.global;
    let (name, result) = match cli.command {
        Command::Log(LogCommand::Verify(a)) => ("log verify", log_verify(&g, &a)),
        Command::Log(LogCommand::Dump(a)) => ("log dump", log_dump(&g, &a)),
        Command::Append(a) => ("append", append(&g, &a)),
        Command::Read(a) => ("read", read(&g, &a)),
        Command::Status(a) => ("status", status(&g, &a)),
        Command::Demo(a) => ("demo", run_demo(a)),
        Command::Switchover(a) => ("switchover", switchover(&g, &a)),
        Command::Members => ("members", members(&g, false)),
        Command::Cluster(ClusterCommand::Health) => ("cluster health", members(&g, true)),
        Command::Binlog(BinlogCommand::Export(a)) => ("binlog export", binlog_export(&g, &a)),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "lockstep", &mut io::stdout());
            ("completions", Ok(()))
        }
        Command::Man { out } => ("man", man(out)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that went away (`| head`) is not a failure of the tool.
        Err(CommandError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(CommandError::Exit(code)) => ExitCode::from(code),
        Err(e) => {
            if g.json {
                print_json_error(&e.to_string(), e.exit_code(), e.kind());
            } else {
                eprintln!("lockstep {name}: {e}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
}

fn print_json_error(message: &str, code: u8, kind: &str) {
    let v = json!({"error": {"message": message.trim_start_matches("error: "), "exit_code": code, "kind": kind}});
    eprintln!("{v}");
}

/// `lockstep man`: the page of lockstep to stdout, or every page into a directory.
fn man(out: Option<PathBuf>) -> Result<(), CommandError> {
    let cmd = Cli::command();
    let Some(dir) = out else {
        let mut stdout = io::stdout().lock();
        clap_mangen::Man::new(cmd).render(&mut stdout)?;
        return Ok(());
    };
    std::fs::create_dir_all(&dir).map_err(|source| CommandError::Input {
        what: dir.display().to_string(),
        source,
    })?;
    let mut pages = vec![("lockstep".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages.push((format!("lockstep-{}", sub.get_name()), sub.clone()));
    }
    for (name, page) in pages {
        let mut buf = Vec::new();
        clap_mangen::Man::new(page)
            .title(name.clone())
            .render(&mut buf)?;
        std::fs::write(dir.join(format!("{name}.1")), buf)?;
    }
    Ok(())
}

// ---- the admin plane over HTTP ----

/// A node's admin endpoint answered: (HTTP status, body as JSON or text).
struct HttpAnswer {
    status: u16,
    body: String,
}

impl HttpAnswer {
    fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }

    /// The `error` of a JSON error body, else the body.
    fn reason(&self) -> String {
        self.json()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| self.body.trim().to_string())
    }
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .timeout_connect(Some(Duration::from_secs(1)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// One HTTP request to `addr`; `Err` when the node cannot be reached.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<HttpAnswer, String> {
    let url = format!("http://{addr}{path}");
    let agent = agent(timeout);
    let auth = token.map(|t| format!("Bearer {t}"));
    let result = if method == "POST" {
        let mut r = agent.post(&url);
        if let Some(a) = &auth {
            r = r.header("Authorization", a);
        }
        r.send_empty()
    } else {
        let mut r = agent.get(&url);
        if let Some(a) = &auth {
            r = r.header("Authorization", a);
        }
        r.call()
    };
    let mut response = result.map_err(|e| format!("{addr}: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .map_err(|e| format!("{addr}: reading the answer: {e}"))?;
    Ok(HttpAnswer { status, body })
}

/// The first node of --nodes that answers `GET path`: (its address, its answer).
fn first_answer(g: &Global, path: &str) -> Result<(String, HttpAnswer), CommandError> {
    let mut errors = Vec::new();
    for addr in g.nodes()? {
        match http(addr, "GET", path, None, HTTP_TIMEOUT) {
            Ok(a) => return Ok((addr.clone(), a)),
            Err(e) => errors.push(e),
        }
    }
    Err(CommandError::Unreachable(format!(
        "no node answered: {}",
        errors.join("; ")
    )))
}

/// `lockstep switchover`.
fn switchover(g: &Global, a: &SwitchoverArgs) -> Result<(), CommandError> {
    let token = g.token()?;
    let wait = g
        .timeout_ms
        .map_or(Duration::from_secs(10), Duration::from_millis);
    let path = format!(
        "/v1/switchover?stream={}&to={}&timeout_ms={}",
        a.stream,
        a.to,
        wait.as_millis()
    );
    let mut errors = Vec::new();
    for addr in g.nodes()? {
        let answer = match http(addr, "POST", &path, token.as_deref(), wait + HTTP_TIMEOUT) {
            Ok(answer) => answer,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        return match answer.status {
            200 => {
                let v = answer.json().unwrap_or(Value::Null);
                let mut out = io::stdout().lock();
                if g.json {
                    writeln!(out, "{v}")?;
                } else {
                    writeln!(
                        out,
                        "stream {}: node {} is the primary (epoch {}, was node {}), after {} ms",
                        a.stream, a.to, v["epoch"], v["from"], v["took_ms"]
                    )?;
                }
                Ok(())
            }
            400 => Err(CommandError::Usage(answer.reason())),
            401 | 403 => Err(CommandError::Failed(answer.reason())),
            _ => Err(CommandError::Failed(answer.reason())),
        };
    }
    Err(CommandError::Unreachable(format!(
        "no node answered: {}",
        errors.join("; ")
    )))
}

/// One node as `members` shows it.
struct NodeRow {
    node: u64,
    addr: String,
    /// Its own /v1/status, if it answered.
    status: Option<Value>,
    /// What the controller last heard from it, and how long ago.
    heard: Option<(Value, u64)>,
}

impl NodeRow {
    fn stream(&self, name: &str) -> Option<Value> {
        let live = self.status.as_ref().and_then(|s| {
            s["streams"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["stream"] == name).cloned())
        });
        live.or_else(|| {
            self.heard.as_ref().and_then(|(s, _)| {
                s["streams"]
                    .as_array()
                    .and_then(|a| a.iter().find(|x| x["stream"] == name).cloned())
            })
        })
    }
}

/// `lockstep members` and `lockstep cluster health`.
fn members(g: &Global, verdict: bool) -> Result<(), CommandError> {
    // The controller's view, from the first node that has one.
    let mut view: Option<(String, Value)> = None;
    let mut reached = false;
    for addr in g.nodes()? {
        match http(addr, "GET", "/v1/members", None, HTTP_TIMEOUT) {
            Ok(a) if a.status == 200 => {
                reached = true;
                if let Some(v) = a.json() {
                    view = Some((addr.clone(), v));
                    break;
                }
            }
            Ok(_) => reached = true,
            Err(_) => {}
        }
    }
    // Every node: those of the view, else those of --nodes.
    let mut rows: Vec<NodeRow> = Vec::new();
    match &view {
        Some((_, v)) => {
            for n in v["nodes"].as_array().into_iter().flatten() {
                rows.push(NodeRow {
                    node: n["node"].as_u64().unwrap_or(0),
                    addr: n["addr"].as_str().unwrap_or("").to_string(),
                    status: None,
                    heard: n["heard_ms_ago"].as_u64().map(|ms| (n.clone(), ms)),
                });
            }
        }
        None => {
            for addr in g.nodes()? {
                rows.push(NodeRow {
                    node: 0,
                    addr: addr.clone(),
                    status: None,
                    heard: None,
                });
            }
        }
    }
    for row in &mut rows {
        if let Ok(a) = http(&row.addr, "GET", "/v1/status", None, Duration::from_secs(2))
            && a.status == 200
        {
            row.status = a.json();
            reached = true;
            if row.node == 0 {
                row.node = row
                    .status
                    .as_ref()
                    .and_then(|s| s["node"].as_u64())
                    .unwrap_or(0);
            }
        }
    }
    if !reached {
        return Err(CommandError::Unreachable(format!(
            "no node of {} answered",
            g.nodes.join(",")
        )));
    }
    // The streams: from the view's configuration, else from what the nodes said.
    let mut streams: BTreeMap<String, Value> = BTreeMap::new();
    if let Some((_, v)) = &view {
        for (name, roles) in v["config"]["streams"].as_object().into_iter().flatten() {
            streams.insert(name.clone(), roles.clone());
        }
    } else {
        for row in &rows {
            for s in row
                .status
                .as_ref()
                .and_then(|s| s["streams"].as_array().cloned())
                .unwrap_or_default()
            {
                let name = s["stream"].as_str().unwrap_or("").to_string();
                let e = streams.entry(name).or_insert_with(|| json!({}));
                if s["role"] == "primary" {
                    e["primary"] = json!(row.node);
                    e["epoch"] = s["epoch"].clone();
                }
            }
        }
    }
    let mut problems = Vec::new();
    let mut out_streams = Vec::new();
    for (name, roles) in &streams {
        let primary = roles["primary"].as_u64();
        let primary_last = rows
            .iter()
            .find(|r| Some(r.node) == primary)
            .and_then(|r| r.stream(name))
            .and_then(|s| s["last_lsn"].as_u64());
        let mut nodes = Vec::new();
        for r in &rows {
            let s = r.stream(name);
            let up = r.status.is_some();
            let role = if Some(r.node) == primary {
                "primary"
            } else if roles["sync_set"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x.as_u64() == Some(r.node)))
            {
                "sync"
            } else if roles["learners"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x.as_u64() == Some(r.node)))
            {
                "learner"
            } else if s.is_some() {
                "member"
            } else {
                "-"
            };
            let field = |k: &str| s.as_ref().and_then(|s| s[k].as_u64());
            let lag = match (primary_last, field("durable_lsn")) {
                (Some(p), Some(d)) => Some(p.saturating_sub(d)),
                _ => None,
            };
            if !up {
                problems.push(format!("node {} ({}) is DOWN", r.node, r.addr));
            }
            nodes.push(json!({
                "node": r.node,
                "addr": r.addr,
                "up": up,
                "ready": r.status.as_ref().map(|s| s["ready"].clone()),
                "role": role,
                "epoch": field("epoch"),
                "durable_lsn": field("durable_lsn"),
                "commit_lsn": field("commit_lsn"),
                "lag": lag,
                // The node's own answer is live; a DOWN node's numbers are what the
                // controller heard from it this long ago.
                "as_of_ms": if up { Some(0) } else { r.heard.as_ref().map(|(_, ms)| *ms) },
            }));
        }
        match primary {
            None => problems.push(format!("stream {name}: no primary")),
            Some(p) if !rows.iter().any(|r| r.node == p && r.status.is_some()) => problems.push(
                format!("stream {name}: its primary, node {p}, does not answer"),
            ),
            _ => {}
        }
        if roles["degraded"].as_bool() == Some(true) {
            problems.push(format!(
                "stream {name}: DEGRADED (committing on the primary alone)"
            ));
        }
        if roles["learners"].as_array().is_some_and(|l| !l.is_empty()) {
            problems.push(format!(
                "stream {name}: learners {} are not in the sync set",
                roles["learners"]
            ));
        }
        out_streams.push(json!({
            "stream": name,
            "epoch": roles["epoch"],
            "primary": primary,
            "sync_set": roles["sync_set"],
            "learners": roles["learners"],
            "degraded": roles["degraded"].as_bool().unwrap_or(false),
            "nodes": nodes,
        }));
    }
    for r in rows
        .iter()
        .filter(|r| r.status.as_ref().is_some_and(|s| s["ready"] == false))
    {
        for why in r
            .status
            .as_ref()
            .and_then(|s| s["not_ready"].as_array().cloned())
            .unwrap_or_default()
        {
            problems.push(format!(
                "node {} not ready: {}",
                r.node,
                why.as_str().unwrap_or("")
            ));
        }
    }
    problems.dedup();
    let healthy = problems.is_empty();
    let (leader, term, from, age) = match &view {
        Some((addr, v)) => (
            v["leader"].clone(),
            v["term"].clone(),
            Some(addr.clone()),
            v["age_ms"].as_u64(),
        ),
        None => (Value::Null, Value::Null, None, None),
    };
    let mut out = io::stdout().lock();
    if g.json {
        let v = json!({
            "controller": view.as_ref().map(|_| json!({"leader": leader, "term": term, "view_from": from, "view_age_ms": age})),
            "streams": out_streams,
            "healthy": healthy,
            "problems": problems,
        });
        writeln!(out, "{v}")?;
    } else {
        match &view {
            Some(_) => writeln!(
                out,
                "controller leader: {} (term {term}); roles as {} published them {} ms ago",
                leader
                    .as_u64()
                    .map_or("none".to_string(), |l| format!("node {l}")),
                from.as_deref().unwrap_or("?"),
                age.unwrap_or(0)
            )?,
            None => writeln!(
                out,
                "no controller (static cluster): roles as the nodes report them"
            )?,
        }
        for s in &out_streams {
            writeln!(
                out,
                "stream {}: epoch {}, primary {}, sync set {}, learners {}{}",
                s["stream"].as_str().unwrap_or(""),
                s["epoch"],
                s["primary"],
                s["sync_set"],
                s["learners"],
                if s["degraded"] == true {
                    ", DEGRADED"
                } else {
                    ""
                }
            )?;
            let mut table = vec![
                [
                    "node", "addr", "state", "role", "epoch", "durable", "commit", "lag",
                ]
                .map(str::to_owned)
                .to_vec(),
            ];
            for n in s["nodes"].as_array().into_iter().flatten() {
                let show = |k: &str| n[k].as_u64().map_or("-".to_string(), |v| v.to_string());
                let state = match (n["up"].as_bool(), n["ready"].as_bool()) {
                    (Some(true), Some(true)) => "UP".to_string(),
                    (Some(true), _) => "UP, not ready".to_string(),
                    _ => match n["as_of_ms"].as_u64() {
                        Some(ms) => format!("DOWN (heard {ms} ms ago)"),
                        None => "DOWN".to_string(),
                    },
                };
                table.push(vec![
                    show("node"),
                    n["addr"].as_str().unwrap_or("").to_string(),
                    state,
                    n["role"].as_str().unwrap_or("-").to_string(),
                    show("epoch"),
                    show("durable_lsn"),
                    show("commit_lsn"),
                    show("lag"),
                ]);
            }
            write!(out, "{}", demo::markdown_table(&table))?;
        }
        if verdict {
            if healthy {
                writeln!(out, "healthy: yes")?;
            } else {
                writeln!(out, "healthy: no")?;
                for p in &problems {
                    writeln!(out, "  {p}")?;
                }
            }
        }
    }
    out.flush()?;
    if verdict && !healthy {
        return Err(CommandError::Exit(EXIT_FAILED));
    }
    Ok(())
}

fn append(g: &Global, a: &AppendArgs) -> Result<(), CommandError> {
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

fn read(g: &Global, a: &ReadArgs) -> Result<(), CommandError> {
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

/// A stream's status from `addr`, with the node that answered.
fn status_of(g: &Global, stream: &str, addr: &str) -> Option<(Value, String)> {
    let options = ClientOptions {
        timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
        ..ClientOptions::default()
    };
    let _ = g;
    let mut c = Client::connect(&[addr], stream, options).ok()?;
    let v = c.status().ok()?;
    Some((v, node_text(&c)))
}

/// `lockstep status`: the primary's view when a primary answers, else the first
/// node's own view with a note.
fn status(g: &Global, a: &StatusArgs) -> Result<(), CommandError> {
    let nodes = g.nodes()?;
    let mut first: Option<(Value, String)> = None;
    let mut primary: Option<(Value, String)> = None;
    let mut tried = Vec::new();
    for addr in nodes {
        tried.push(addr.clone());
        if let Some((v, node)) = status_of(g, &a.target.stream, addr) {
            let is_primary = v["role"] == "primary";
            if first.is_none() {
                first = Some((v.clone(), node.clone()));
            }
            if is_primary {
                primary = Some((v, node));
                break;
            }
        }
    }
    // The controller knows where the primary is, when --nodes does not list it.
    if primary.is_none()
        && let Ok((_, answer)) = first_answer(g, "/v1/members")
        && let Some(view) = answer.json()
        && let Some(p) = view["config"]["streams"][&a.target.stream]["primary"].as_u64()
        && let Some(addr) = view["config"]["members"][p.to_string()].as_str()
        && !tried.iter().any(|t| t == addr)
    {
        primary = status_of(g, &a.target.stream, addr);
    }
    let (v, node, own_view) = match (primary, first) {
        (Some((v, node)), _) => (v, node, false),
        (None, Some((v, node))) => (v, node, true),
        (None, None) => {
            // Say why with the client's own error.
            a.target.connect(g)?;
            return Err(CommandError::Unreachable("no node answered".into()));
        }
    };
    let mut out = io::stdout().lock();
    if g.json {
        let mut v = v;
        v["primary_view"] = json!(!own_view);
        writeln!(out, "{v}")?;
    } else {
        let mut text = match StatusView::deserialize(&v) {
            Ok(view) => view.text(&node),
            // A node of another version: show what it said rather than nothing.
            Err(e) => format!(
                "status{node} in an unknown shape ({e}):\n{}\n",
                serde_json::to_string_pretty(&v).expect("a JSON value serializes")
            ),
        };
        if own_view {
            text.push_str(
                "\nnote: no primary of this stream answered; this is the answering node's \
                 own view (its log positions are current, the members' are the primary's \
                 to know)\n",
            );
        }
        out.write_all(text.as_bytes())?;
    }
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
    /// A secondary's link from its primary.
    transport: String,
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
    transport: String,
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
        if self.role != "primary" && !self.transport.is_empty() {
            let _ = writeln!(
                t,
                "transport {} (the link from the primary)",
                self.transport
            );
        }
        if !self.members.is_empty() {
            let mut rows = vec![
                [
                    "member",
                    "in sync",
                    "connected",
                    "received lsn",
                    "durable lsn",
                    "lag",
                    "transport",
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
                    m.transport.clone(),
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

fn log_verify(g: &Global, a: &VerifyArgs) -> Result<(), CommandError> {
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

fn log_dump(g: &Global, a: &DumpArgs) -> Result<(), CommandError> {
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
