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
//! - `repl`: a 3-node cluster on loopback against the floor of a replicated commit
//!   (round trip + remote durable write), see [`repl_bench`].
//! - `failover`: kill -9 of the primary of a 3-process cluster under its controller,
//!   until the first commit on the new primary, see [`failover`]; with `--mariadb`, the
//!   write stall of a MariaDB application whose database's front is on that primary,
//!   see [`failover_mariadb`]; with `--mariadb --db`, the write gap when the database
//!   primary among MariaDB members beside the nodes is lost or handed over, see
//!   [`db_failover`].
//! - `peers`: lockstep beside PostgreSQL, MariaDB and etcd on the same machine, with
//!   the same payloads, concurrency and durability, see [`peers_bench`].
//! - `mariadb`: sysbench against MariaDB alone, MariaDB with stock lossless semi-sync,
//!   and MariaDB whose semi-sync replica is lockstep's front, see [`mariadb_bench`].
//!
//! Every benchmark has a `--quick` size that the test suite runs, so it cannot rot.
//! Benchmarks report numbers and exit 0 whether or not a goal is met; they exit non-zero
//! only when something actually failed (an I/O error, a refused configuration).
#![forbid(unsafe_code)]

mod cluster;
mod committers;
mod db_failover;
mod failover;
mod failover_mariadb;
mod floor;
mod hgrm;
mod interrupt;
mod log_bench;
mod mariadb_bench;
mod mariadb_report;
mod net_floor;
mod nodes;
mod peers;
mod peers_bench;
mod peers_report;
mod plot;
mod pool;
mod proc_cpu;
mod raw_commit;
mod repl_bench;
mod repl_report;
mod report;
mod stats;
mod sysbench;
mod workdir;
mod writers;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Replication: a 3-node loopback cluster (strong, semi, async) vs. the floor of
    /// round trip + remote durable write.
    Repl(ReplArgs),
    /// Failover: kill -9 of the primary of 3 lockstepd processes under their
    /// controller; time until the first commit on the new primary (with --mariadb: the
    /// write stall a MariaDB client sees when the node with the front is lost).
    Failover(failover::FailoverArgs),
    /// lockstep beside PostgreSQL (synchronous standby), MariaDB (lossless semi-sync)
    /// and etcd (3 members), started by the tool on loopback, in one run.
    Peers(PeersArgs),
    /// sysbench against MariaDB alone, MariaDB with lossless semi-sync to a stock
    /// replica, and MariaDB + lockstep strong (its front as the semi-sync replica).
    Mariadb(MariadbArgs),
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

/// Options of `lockstep-bench repl`.
#[derive(Args, Debug, Clone)]
pub struct ReplArgs {
    /// Tiny run (a few seconds) with small segments, as the test suite runs it.
    #[arg(long)]
    pub quick: bool,
    /// Measured seconds of each series in each round (a tenth more is spent warming up).
    #[arg(long, value_name = "S")]
    pub seconds: Option<f64>,
    /// Rounds of interleaved floor and cluster series; the median across rounds is
    /// reported.
    #[arg(long, value_name = "N")]
    pub rounds: Option<usize>,
    /// Payload bytes of each record.
    #[arg(long, value_name = "BYTES", default_value_t = 256)]
    pub payload: usize,
    /// Appends outstanding in the pipelined series.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub outstanding: usize,
    /// Connections (each driven by its own thread) the pipelined series spreads its
    /// outstanding appends over.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub connections: usize,
    /// Secondaries in the cluster (all in the sync set, k = all of them).
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=4))]
    pub secondaries: u8,
    /// Streams (by commit mode) to measure, comma-separated; the cluster has all three.
    #[arg(long, value_delimiter = ',', default_values = ["strong", "semi", "async"])]
    pub modes: Vec<lockstep::wire::Mode>,
    /// Where the nodes' threads run.
    #[arg(long, value_enum, default_value_t = PlacementArg::Server)]
    pub placement: PlacementArg,
    /// Hardware profile (see hw-profiles/) of every node and of the floor's writes.
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// Peer transports to measure, comma-separated, one cluster each in turn (`tcp`,
    /// `rdma-emu`: emulated verbs over shared memory, `rdma`, `auto`); the profile's
    /// `transport` is set for each.
    #[arg(long, value_delimiter = ',', default_values = ["tcp"], value_name = "tcp,rdma-emu")]
    pub transport: Vec<String>,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// Options of `lockstep-bench peers`.
#[derive(Args, Debug, Clone)]
pub struct PeersArgs {
    /// Tiny run (a few seconds per system): 1 round, 256 B, 1 and 64 outstanding, open
    /// loop, lockstep with 2 secondaries only; as the test suite runs it.
    #[arg(long)]
    pub quick: bool,
    /// Measured seconds of each series in each round (a tenth more is spent warming up).
    #[arg(long, value_name = "S")]
    pub seconds: Option<f64>,
    /// Rounds; every series runs once per round and the median across rounds is
    /// reported.
    #[arg(long, value_name = "N")]
    pub rounds: Option<usize>,
    /// Commits per second of the open-loop series (default 1000; 500 with --quick).
    #[arg(long, value_name = "PER_S")]
    pub rate: Option<f64>,
    /// Peers to compare with, comma-separated (default: all of them).
    #[arg(long, value_delimiter = ',', value_name = "postgresql,mariadb,etcd")]
    pub peers: Vec<String>,
    /// Never install a missing peer's package (a missing peer is skipped with one line).
    #[arg(long)]
    pub no_install: bool,
    /// Directory for the table (peers.md), peers.json, hgrm/*.hgrm and the SVG charts.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Hardware profile (see hw-profiles/) of every lockstep node and of the floor.
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
}

/// Options of `lockstep-bench mariadb`.
#[derive(Args, Debug, Clone)]
pub struct MariadbArgs {
    /// Tiny run: 1 round, oltp_insert at 1 and 4 threads, 1 s after a 1 s warm-up,
    /// 2 tables of 1000 rows; as the test suite runs it.
    #[arg(long)]
    pub quick: bool,
    /// Measured seconds of each series (whole seconds, as sysbench's --time; default
    /// 10, 1 with --quick).
    #[arg(long, value_name = "S")]
    pub time: Option<u32>,
    /// Warm-up seconds before each series' measured ones, in the same sysbench run
    /// (default 2, 1 with --quick).
    #[arg(long, value_name = "S")]
    pub warm_up: Option<u32>,
    /// Rounds; every series runs once per round, the systems' order rotated, and the
    /// median across rounds is reported (default 3, 1 with --quick).
    #[arg(long, value_name = "N")]
    pub rounds: Option<usize>,
    /// sysbench tests, comma-separated (default oltp_insert,oltp_write_only).
    #[arg(long, value_delimiter = ',', value_name = "TEST")]
    pub tests: Vec<String>,
    /// sysbench threads of the series, comma-separated (default 1,16,64).
    #[arg(long, value_delimiter = ',', value_name = "N")]
    pub threads: Vec<usize>,
    /// sysbench tables (default 8, 2 with --quick).
    #[arg(long, value_name = "N")]
    pub tables: Option<usize>,
    /// Rows per sysbench table at prepare (default 10000, 1000 with --quick).
    #[arg(long, value_name = "N")]
    pub table_size: Option<usize>,
    /// Directory for the table (mariadb.md), mariadb.json and the SVG charts (default
    /// target/bench-mariadb).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Hardware profile (see hw-profiles/) of every lockstep node.
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// Where the lockstep nodes' threads run (the MariaDB servers and sysbench are left
    /// to the scheduler).
    #[arg(long, value_enum, default_value_t = PlacementArg::Spread)]
    pub placement: PlacementArg,
}

/// Where `lockstep-bench repl` runs the nodes.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlacementArg {
    /// Every node's shard on the first core (Server::start's own pinning); the clients
    /// on the last core.
    Server,
    /// The primary on the first core; the secondaries and the clients on the last.
    Spread,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Log(args) => log_bench::run(&args),
        Command::Repl(args) => repl_bench::run(&args),
        Command::Failover(args) => failover::run(&args),
        Command::Peers(args) => peers_bench::run(&args),
        Command::Mariadb(args) => mariadb_bench::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lockstep-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}
