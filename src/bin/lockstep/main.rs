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
//!
//! One file per command group: `append`, `read`, `status`, `members` (and `cluster
//! health`), `switchover`, `log`, `binlog`, `demo`; `http` is the admin plane's client.
#![forbid(unsafe_code)]

mod append;
mod binlog;
mod db_primary;
mod demo;
mod http;
mod log;
mod members;
mod read;
mod status;
mod switchover;

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use lockstep::client::{Client, ClientError, ClientOptions};
use lockstep::demo::DemoError;
use lockstep::front::export::ExportError;
use lockstep::inspect::InspectError;
use serde_json::json;

use append::AppendArgs;
use binlog::BinlogCommand;
use db_primary::DbPrimaryArgs;
use demo::DemoArgs;
use log::LogCommand;
use members::ClusterCommand;
use read::ReadArgs;
use status::StatusArgs;
use switchover::SwitchoverArgs;

/// Exit status of a failed operation (a refusal, corruption, an unhealthy cluster).
const EXIT_FAILED: u8 = 1;
/// Exit status of bad usage (clap uses it too).
const EXIT_USAGE: u8 = 2;
/// Exit status when no node could be reached.
const EXIT_UNREACHABLE: u8 = 3;
/// Exit status of an append whose fate is unknown.
const EXIT_IN_DOUBT: u8 = 4;

/// How long the CLI waits for a reply when the stream's own request timeout applies
/// (no --timeout-ms): longer than any sensible `request_timeout_ms`.
const STREAM_TIMEOUT_WAIT: Duration = Duration::from_secs(60);

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
    /// Print the address of a stream's database primary (the MariaDB server clients
    /// write to); with --wait, once it takes writes
    DbPrimary(DbPrimaryArgs),
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
        Command::Log(LogCommand::Verify(a)) => ("log verify", log::verify(&g, &a)),
        Command::Log(LogCommand::Dump(a)) => ("log dump", log::dump(&g, &a)),
        Command::Append(a) => ("append", append::append(&g, &a)),
        Command::Read(a) => ("read", read::read(&g, &a)),
        Command::Status(a) => ("status", status::status(&g, &a)),
        Command::Demo(a) => ("demo", demo::run(a)),
        Command::Switchover(a) => ("switchover", switchover::switchover(&g, &a)),
        Command::DbPrimary(a) => ("db-primary", db_primary::db_primary(&g, &a)),
        Command::Members => ("members", members::members(&g, false)),
        Command::Cluster(ClusterCommand::Health) => ("cluster health", members::members(&g, true)),
        Command::Binlog(BinlogCommand::Export(a)) => ("binlog export", binlog::export(&g, &a)),
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
