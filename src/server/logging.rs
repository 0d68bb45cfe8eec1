//! The node's log: `tracing` events written to stderr as text or JSON, one line each,
//! with a timestamp (UTC, RFC 3339), a level, a target and structured fields (`node`,
//! `stream`, `epoch`, `peer`, ...).
//!
//! The filter is a `RUST_LOG`-style directive list (`info`, `info,raft=debug`,
//! `lockstep::server::admin=debug`): `RUST_LOG` when set, else the configuration's
//! `log_level`, else [`DEFAULT_FILTER`]. It can be changed while the node runs
//! ([`LogHandle::set_filter`], on SIGHUP).
//!
//! raft-rs logs through slog: [`SlogBridge`] forwards its records as `tracing` events
//! of target `raft`, one level down for its info and debug records (raft's info is
//! per-message chatter: votes, term changes) and at its own level for warnings and
//! errors. `RUST_LOG=info,raft=debug` shows its elections and configuration changes.
//!
//! Thread safety: the subscriber is global and installed once per process
//! ([`init`]); a second call returns an error rather than replacing it. Tests that run
//! several nodes in one process share it.

use std::fmt::Write as _;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// The filter when neither `RUST_LOG` nor the configuration gives one.
pub const DEFAULT_FILTER: &str = "info";

/// How log lines look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-12-07T19:40:00.123456Z  INFO lockstep::server: message key=value`
    Text,
    /// One JSON object per line: timestamp, level, target, fields (message included).
    Json,
}

/// Changes the filter of the installed subscriber.
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` was set: it wins over the configuration, on reload too.
    from_env: bool,
}

impl LogHandle {
    /// Applies `directives` (from the configuration) unless `RUST_LOG` decides the
    /// filter. Returns whether the filter changed.
    pub fn set_filter(&self, directives: Option<&str>) -> Result<bool, String> {
        if self.from_env {
            return Ok(false);
        }
        let filter = parse_filter(directives.unwrap_or(DEFAULT_FILTER))?;
        let new = filter.to_string();
        let mut changed = false;
        self.filter
            .modify(|f| {
                changed = f.to_string() != new;
                *f = filter;
            })
            .map_err(|e| format!("log filter: {e}"))?;
        Ok(changed)
    }
}

/// Parses a directive list, refusing what `EnvFilter` would silently ignore.
pub fn parse_filter(directives: &str) -> Result<EnvFilter, String> {
    EnvFilter::builder()
        .parse(directives)
        .map_err(|e| format!("log_level = {directives:?}: {e}"))
}

/// Installs the process's subscriber: stderr, `format`, the filter from `RUST_LOG` or
/// else `configured` (the configuration's `log_level`) or else [`DEFAULT_FILTER`].
pub fn init(format: LogFormat, configured: Option<&str>) -> Result<LogHandle, String> {
    let env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let from_env = env.is_some();
    let directives = env.as_deref().or(configured).unwrap_or(DEFAULT_FILTER);
    let filter = parse_filter(directives).map_err(|e| {
        if from_env {
            format!("RUST_LOG: {e}")
        } else {
            e
        }
    })?;
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(true);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        LogFormat::Text => registry.with(fmt).try_init(),
        LogFormat::Json => registry
            .with(fmt.json().flatten_event(true).with_current_span(false))
            .try_init(),
    };
    installed.map_err(|e| format!("install the log subscriber: {e}"))?;
    bridge_raft();
    Ok(LogHandle {
        filter: handle,
        from_env,
    })
}

/// Installs a plain text subscriber for tests and tools, if none is installed yet;
/// the filter comes from `RUST_LOG` (default: warnings). Never fails.
pub fn init_for_tests() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false),
        )
        .try_init();
}

/// Hands raft-rs a logger that writes through `tracing` (see
/// `control::controller::set_raft_logger`).
fn bridge_raft() {
    let logger = slog::Logger::root(SlogBridge, slog::o!());
    crate::control::controller::set_raft_logger(logger);
}

/// A slog drain that forwards every record to `tracing`, target `raft`.
pub struct SlogBridge;

impl slog::Drain for SlogBridge {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        use slog::KV as _;
        // Cheap test first: most raft records are below the filter.
        let level = match record.level() {
            slog::Level::Critical | slog::Level::Error => tracing::Level::ERROR,
            slog::Level::Warning => tracing::Level::WARN,
            slog::Level::Info => tracing::Level::DEBUG,
            slog::Level::Debug | slog::Level::Trace => tracing::Level::TRACE,
        };
        // Cheap test first: most raft records are below the filter.
        let enabled = match level {
            tracing::Level::ERROR => tracing::enabled!(target: "raft", tracing::Level::ERROR),
            tracing::Level::WARN => tracing::enabled!(target: "raft", tracing::Level::WARN),
            tracing::Level::DEBUG => tracing::enabled!(target: "raft", tracing::Level::DEBUG),
            _ => tracing::enabled!(target: "raft", tracing::Level::TRACE),
        };
        if !enabled {
            return Ok(());
        }
        let mut kv = KvText(String::new());
        let _ = record.kv().serialize(record, &mut kv);
        let _ = values.serialize(record, &mut kv);
        let message = record.msg().to_string();
        let fields = kv.0.trim_start().to_string();
        match level {
            tracing::Level::ERROR => tracing::error!(target: "raft", raft = %fields, "{message}"),
            tracing::Level::WARN => tracing::warn!(target: "raft", raft = %fields, "{message}"),
            tracing::Level::DEBUG => tracing::debug!(target: "raft", raft = %fields, "{message}"),
            _ => tracing::trace!(target: "raft", raft = %fields, "{message}"),
        }
        Ok(())
    }
}

/// slog key-values as `key=value` text.
struct KvText(String);

impl slog::Serializer for KvText {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}
