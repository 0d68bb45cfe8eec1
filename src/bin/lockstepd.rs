//! `lockstepd`: the lockstep node daemon.
//!
//! `lockstepd --config FILE` runs a node (see `docs/config.md` for the file) until
//! SIGINT or SIGTERM. SIGHUP reads the file again and applies what can change without a
//! restart (`log_level`, the admin token), naming what cannot. On SIGTERM a primary
//! under a controller first hands its role to a caught-up sync member, then stops.
//! Under systemd (`Type=notify`) it reports READY=1 once it serves, its readiness in
//! STATUS=, and STOPPING=1.
//!
//! `lockstepd --check-config FILE` checks a configuration without starting anything.
//! `lockstepd check --data-dir DIR` runs the node's start-up path without serving: it
//! probes the kernel features the data path needs (io_uring, O_DIRECT, RWF_DSYNC, CPU
//! pinning) and recovers the log of every stream under `DIR/streams/`, exactly as a
//! starting node does (a torn tail is cut; corruption stops the node).
//!
//! Exit status (as `lockstep`'s): 0 success; 1 the node failed (cannot start, a
//! corrupt log, a missing feature); 2 usage or a bad configuration.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser, Subcommand};
use lockstep::log::Log;
use lockstep::profile::HardwareProfile;
use lockstep::server::config::Config;
use lockstep::server::logging::{self, LogFormat};
use lockstep_sys::signal::DaemonSignal;
use lockstep_sys::{cpu, probe};

/// How long a primary waits for a member to take its role before it stops anyway.
const HAND_OFF_WITHIN: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(
    name = "lockstepd",
    version,
    about = "lockstep node daemon",
    long_about = "lockstep node daemon: runs one node of a lockstep cluster.\n\n\
                  Signals: SIGTERM or SIGINT stop the node (a primary under a controller \
                  first hands its role to a caught-up sync member); SIGHUP reloads \
                  log_level and the admin token and names the keys that need a restart.\n\n\
                  Exit status: 0 success; 1 the node failed; 2 usage or a bad configuration.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Run a node with this configuration (TOML; see docs/config.md)
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check this configuration (syntax, values, files it names) and exit
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
    /// Log line format
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "LOCKSTEP_LOG_FORMAT")]
    log_format: LogFormat,
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
    /// Print the admin token of a configuration (from admin_token_file or the cluster
    /// secret), for `lockstep --token-file`
    AdminToken {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Print a shell completion script
    #[command(hide = true)]
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff)
    #[command(hide = true)]
    Man,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match (cli.cmd, cli.config, cli.check_config) {
        (
            Some(Cmd::Check {
                data_dir,
                profile,
                json,
            }),
            _,
            _,
        ) => check(&data_dir, profile.as_deref(), json),
        (Some(Cmd::AdminToken { config }), _, _) => match Config::load(&config) {
            Ok(c) => match c.admin_token() {
                Some(t) => {
                    println!("{t}");
                    ExitCode::SUCCESS
                }
                None => {
                    eprintln!(
                        "lockstepd: {}: no admin_token_file and no secret_file: this node \
                         refuses mutating admin requests",
                        config.display()
                    );
                    ExitCode::from(1)
                }
            },
            Err(e) => {
                eprintln!("lockstepd: {e}");
                ExitCode::from(2)
            }
        },
        (Some(Cmd::Completions { shell }), _, _) => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "lockstepd",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        (Some(Cmd::Man), _, _) => {
            let man = clap_mangen::Man::new(Cli::command());
            match man.render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("lockstepd: {e}");
                    ExitCode::from(1)
                }
            }
        }
        (None, None, Some(path)) => check_config(&path),
        (None, Some(config), None) => serve(&config, cli.log_format),
        (None, _, _) => {
            eprintln!("lockstepd: give --config FILE to run a node, or a subcommand (see --help)");
            ExitCode::from(2)
        }
    }
}

/// `--check-config FILE`: one line, exit 0 or 2.
fn check_config(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(c) => {
            println!(
                "{}: ok: node {}, {} nodes, {} streams{}{}",
                path.display(),
                c.node_id,
                c.nodes.len(),
                c.streams.len(),
                if c.control.is_some() {
                    ", controller"
                } else {
                    ""
                },
                if c.secret.is_some() {
                    ", cluster secret"
                } else {
                    ""
                },
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lockstepd: {e}");
            ExitCode::from(2)
        }
    }
}

/// Tells systemd (when it started this process with `Type=notify`) how the node is.
fn notify(state: &[sd_notify::NotifyState<'_>]) {
    let _ = sd_notify::notify(false, state);
}

/// How often the daemon, waiting for signals, looks whether the node must stop.
const FATAL_CHECK_EVERY: Duration = Duration::from_millis(100);

fn serve(path: &Path, format: LogFormat) -> ExitCode {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lockstepd: {e}");
            return ExitCode::from(2);
        }
    };
    let log = match logging::init(format, cfg.log_level.as_deref()) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("lockstepd: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = lockstep_sys::signal::block_daemon_signals() {
        tracing::error!("cannot block the daemon's signals: {e}");
        return ExitCode::from(1);
    }
    let node = cfg.node_id;
    tracing::info!(
        node,
        version = env!("CARGO_PKG_VERSION"),
        "lockstepd {} starting node {node} from {}",
        env!("CARGO_PKG_VERSION"),
        path.display()
    );
    let server = match lockstep::server::Server::start(cfg.clone()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(node, "node {node} cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    let admin = server
        .admin_addr()
        .map_or("on the node address only".to_string(), |a| {
            format!("also on http://{a}")
        });
    tracing::info!(
        node,
        "node {node} listening on {}; admin endpoint (/metrics, /ready, /v1) {admin}",
        server.listen_addr()
    );
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!("node {node} serving on {}", server.listen_addr())),
    ]);
    let mut cfg = cfg;
    let signal = loop {
        if let Some(why) = server.fatal() {
            // Another live process serves this node id: stop with that one line and
            // hand nothing over (this process holds no role the cluster gave it).
            tracing::error!(node, "node {node} stops: {why}");
            notify(&[sd_notify::NotifyState::Stopping]);
            server.shutdown();
            return ExitCode::from(1);
        }
        match lockstep_sys::signal::wait_daemon_signal_for(FATAL_CHECK_EVERY) {
            Ok(None) => {}
            Ok(Some(DaemonSignal::Reload)) => {
                notify(&[sd_notify::NotifyState::Reloading]);
                reload(&server, &mut cfg, path, &log);
                notify(&[sd_notify::NotifyState::Ready]);
            }
            Ok(Some(DaemonSignal::Terminate(sig))) => break format!("signal {sig}"),
            Err(e) => break e.to_string(),
        }
    };
    tracing::info!(node, "node {node} stopping ({signal})");
    notify(&[sd_notify::NotifyState::Stopping]);
    let started = Instant::now();
    for h in server.hand_off(HAND_OFF_WITHIN) {
        match h.outcome {
            Ok((to, took)) => tracing::info!(
                node,
                stream = %h.stream,
                "stream {}: node {to} took the primary role in {:.1} ms",
                h.stream,
                took.as_secs_f64() * 1e3
            ),
            // A static cluster has nobody to hand over to: its clients wait for the
            // restart, as the operator chose.
            Err(why) if cfg.control.is_none() => tracing::info!(
                node,
                stream = %h.stream,
                "stream {}: no hand-off ({why}); appends wait for this node's restart",
                h.stream
            ),
            Err(why) => tracing::warn!(
                node,
                stream = %h.stream,
                "stream {}: the primary role was not handed over: {why}",
                h.stream
            ),
        }
    }
    server.shutdown();
    tracing::info!(
        node,
        "node {node} stopped ({:.0} ms after the signal)",
        started.elapsed().as_secs_f64() * 1e3
    );
    ExitCode::SUCCESS
}

/// SIGHUP: reads the file again; applies what can change, names what cannot.
fn reload(
    server: &lockstep::server::Server,
    cfg: &mut Config,
    path: &Path,
    log: &logging::LogHandle,
) {
    let node = cfg.node_id;
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(node, "reload: {e}; the running configuration stays");
            return;
        }
    };
    let r = server.reload(cfg, &new, Some(log));
    if r.applied.is_empty() && r.restart_needed.is_empty() {
        tracing::info!(node, "reload: {} unchanged", path.display());
    }
    for a in &r.applied {
        tracing::info!(node, "reload: applied {a}");
    }
    if !r.restart_needed.is_empty() {
        tracing::warn!(
            node,
            "reload: changed keys that need a restart, not applied: {}",
            r.restart_needed.join(", ")
        );
    }
    cfg.log_level = new.log_level.clone();
    cfg.admin_token = new.admin_token.clone();
    cfg.secret = if r.restart_needed.contains(&"secret_file") {
        cfg.secret.clone()
    } else {
        new.secret.clone()
    };
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
    let rdma = lockstep_sys::verbs::probe(&lockstep_sys::verbs::DeviceChoice::from_env());
    let transport = match lockstep::transport::rdma::setup::choose(profile.transport, rdma.clone())
    {
        Ok((_, line)) => line,
        Err(why) => {
            ok = false;
            why
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
            "rdma": match &rdma {
                Ok(device) => format!("device {device}"),
                Err(why) => why.clone(),
            },
            "transport": transport,
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
        match &rdma {
            Ok(device) => println!("rdma       device {device}"),
            Err(why) => println!("rdma       {why}"),
        }
        println!("transport  {transport}");
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
