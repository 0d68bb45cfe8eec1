//! `lockstepd`: the lockstep node daemon.
//!
//! `lockstepd --config FILE` runs a node (see `lockstep::server::config` for the file)
//! until SIGINT or SIGTERM, then stops cleanly. Exit status 2 on a bad configuration,
//! 1 when the node cannot start (a corrupt log, a busy port).
//!
//! `lockstepd check --data-dir DIR` runs the node's start-up path without serving: it
//! probes the kernel features the data path needs (io_uring, O_DIRECT, RWF_DSYNC, CPU
//! pinning) and recovers the log of every stream under `DIR/streams/`, exactly as a
//! starting node does (a torn tail is cut; corruption stops the node). Exit status: 0
//! when the node could start, 1 when a stream is corrupt or a required feature is
//! missing, 2 on usage errors.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lockstep::log::Log;
use lockstep::profile::HardwareProfile;
use lockstep_sys::{cpu, probe};

#[derive(Parser)]
#[command(
    name = "lockstepd",
    version,
    about = "lockstep node daemon",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Run a node with this configuration (TOML).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Probe the kernel and recover every stream of a data directory, as start-up does.
    Check {
        /// The node's data directory (streams live in DIR/streams/NAME).
        #[arg(long)]
        data_dir: PathBuf,
        /// Hardware profile (see hw-profiles/).
        #[arg(long)]
        profile: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match (cli.cmd, cli.config) {
        (
            Some(Cmd::Check {
                data_dir,
                profile,
                json,
            }),
            _,
        ) => check(&data_dir, profile.as_deref(), json),
        (None, Some(config)) => serve(&config),
        (None, None) => {
            eprintln!("lockstepd: give --config FILE to run a node, or a subcommand (see --help)");
            ExitCode::from(2)
        }
    }
}

fn serve(path: &Path) -> ExitCode {
    let cfg = match lockstep::server::config::Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lockstepd: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = lockstep_sys::signal::block_termination() {
        eprintln!("lockstepd: cannot block termination signals: {e}");
        return ExitCode::from(1);
    }
    let node = cfg.node_id;
    let server = match lockstep::server::Server::start(cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lockstepd: node {node} cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    match server.admin_addr() {
        Some(a) => eprintln!(
            "lockstepd: node {node} listening on {} (metrics on http://{a}/metrics)",
            server.listen_addr()
        ),
        None => eprintln!(
            "lockstepd: node {node} listening on {}",
            server.listen_addr()
        ),
    }
    match lockstep_sys::signal::wait_termination() {
        Ok(sig) => eprintln!("lockstepd: node {node} stopping (signal {sig})"),
        Err(e) => eprintln!("lockstepd: node {node} stopping: {e}"),
    }
    server.shutdown();
    ExitCode::SUCCESS
}

fn check(data_dir: &Path, profile: Option<&Path>, json: bool) -> ExitCode {
    let profile = match profile.map(HardwareProfile::load).transpose() {
        Ok(p) => p.unwrap_or_default(),
        Err(e) => {
            eprintln!("lockstepd: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = std::fs::create_dir_all(data_dir.join("streams")) {
        eprintln!(
            "lockstepd: cannot create {}: {e}",
            data_dir.join("streams").display()
        );
        return ExitCode::from(2);
    }
    let mut ok = true;
    let uring = probe::io_uring();
    ok &= uring.is_ok();
    let storage = match probe::storage(data_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "lockstepd: cannot probe storage under {}: {e}",
                data_dir.display()
            );
            return ExitCode::from(2);
        }
    };
    let cores = cpu::available_cores();
    let pinning = cores
        .first()
        .ok_or_else(|| "no cores reported".to_string())
        .and_then(|&c| cpu::pin_current_thread(c).map_err(|e| e.to_string()));
    let mut streams = Vec::new();
    let mut names: Vec<_> = match std::fs::read_dir(data_dir.join("streams")) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .map(|e| e.path())
            .collect(),
        Err(e) => {
            eprintln!("lockstepd: cannot list streams: {e}");
            return ExitCode::from(2);
        }
    };
    names.sort();
    for (i, dir) in names.iter().enumerate() {
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let report = match Log::open(dir, profile.log_options(), i as u64) {
            Ok(log) => serde_json::json!({
                "stream": name,
                "first_lsn": log.first_lsn(),
                "durable_lsn": log.durable_lsn(),
                "last_epoch": log.last_epoch(),
                "direct_io": log.direct_io(),
                "notes": log.recovery().notes,
            }),
            Err(e) => {
                ok = false;
                serde_json::json!({ "stream": name, "error": e.to_string() })
            }
        };
        streams.push(report);
    }
    let text = |r: &Result<(), String>| match r {
        Ok(()) => "ok".to_string(),
        Err(why) => format!("unavailable: {why}"),
    };
    if json {
        let report = serde_json::json!({
            "data_dir": data_dir,
            "profile": profile.description,
            "io_uring": text(&uring),
            "o_direct": text(&storage.direct),
            "rwf_dsync": text(&storage.rwf_dsync),
            "cores": cores,
            "pinning": text(&pinning),
            "streams": streams,
            "ok": ok,
        });
        println!("{report:#}");
    } else {
        println!("data dir   {}", data_dir.display());
        if !profile.description.is_empty() {
            println!("profile    {}", profile.description);
        }
        println!("io_uring   {}", text(&uring));
        println!("O_DIRECT   {}", text(&storage.direct));
        println!("RWF_DSYNC  {}", text(&storage.rwf_dsync));
        println!("cores      {cores:?}, pinning {}", text(&pinning));
        if storage.direct.is_err() {
            println!("note       writes fall back to buffered I/O + fdatasync on this filesystem");
        }
        for s in &streams {
            match s.get("error") {
                Some(e) => println!(
                    "stream {}: FAILED: {}",
                    s["stream"],
                    e.as_str().unwrap_or_default()
                ),
                None => {
                    println!(
                        "stream {}: lsn {}..={}, last epoch {}",
                        s["stream"], s["first_lsn"], s["durable_lsn"], s["last_epoch"]
                    );
                    for n in s["notes"].as_array().into_iter().flatten() {
                        println!("  {}", n.as_str().unwrap_or_default());
                    }
                }
            }
        }
        println!("{}", if ok { "ready" } else { "NOT READY" });
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
