//! Database fronts: an unmodified MariaDB primary commits only once lockstep holds the
//! transaction on `k` nodes' disks.
//!
//! The front is a semi-synchronous replica of the database primary that lives in the
//! stream's lockstep primary. It takes the primary's binlog (`COM_BINLOG_DUMP` from a
//! GTID position), verifies every event, groups them into transactions, appends each
//! transaction to the stream (strong mode) and sends the semi-sync ACK for a
//! transaction only after lockstep committed it. The primary, waiting AFTER_SYNC with
//! no timeout to asynchronous replication, answers COMMIT once the ACK arrives.
//!
//! ```text
//! app ─► MariaDB primary ──binlog events──► front (on the stream's lockstep primary)
//!             ▲                               │ append transaction (GTID, file, pos)
//!             └────── ACK (file, pos) ◄───────┘ after lockstep committed it
//! ```
//!
//! Modules: [`connection`] (a MariaDB client connection), [`settings`] (what the front
//! demands of the primary), [`registration`] (becoming a semi-sync replica),
//! [`events`] (verified binlog events), [`transactions`] (events into transactions
//! and pieces), [`record`] (the stream's records), [`gtid`] (positions), [`ack`]
//! (the semi-sync ACK), [`session`] (one binlog connection), [`outbox`] (its appends
//! in flight and the ACKs they release), [`watch`] (alerts on the
//! primary's semi-sync state), [`metrics`], and [`reader`] (transactions read back
//! from the stream).
//! [`export`] writes a stream's transactions as MariaDB binlog files, laid out by
//! [`binlog_file`] (`lockstep binlog export`).
//!
//! Invariants:
//! - An ACK covers only transactions lockstep committed: the primary's and the sync
//!   set's durable writes of every piece, and of everything before them.
//! - A transaction is appended once: the stream's GTIDs are contiguous per domain, a
//!   resent transaction the stream holds is skipped (and ACKed from the stream's
//!   copy), a gap stops the front.
//! - One front per stream appends: only the stream's lockstep primary runs a session,
//!   and a session starts only once everything earlier in the stream is committed and
//!   no append of an earlier session is in flight.
//!
//! Fault model: the primary may crash, restart, send corrupt or truncated packets,
//! disappear mid-event, or fall back to asynchronous replication; lockstep may fail
//! over. Each ends the session with one log line (and the alert for a fallback);
//! nothing uncommitted is ACKed, and the next session resumes from the stream.
//!
//! Threads: one runner per stream with a front; a running session adds one thread for
//! the node's answers and one that watches the primary's semi-sync state.

pub mod ack;
pub mod binlog_file;
pub mod connection;
pub mod cursor;
pub mod db_role;
pub mod events;
pub mod export;
pub mod gtid;
pub mod metrics;
pub mod outbox;
pub mod reader;
pub mod record;
pub mod registration;
pub mod server;
pub mod session;
pub mod settings;
pub mod transactions;
pub mod watch;

use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use metrics::FrontMetrics;
use session::{Ended, SessionConfig};

/// How a front reaches its database primary (`[[streams]] front = { ... }`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontSettings {
    /// The primary's `host:port`.
    pub upstream: String,
    pub user: String,
    /// From `password_file`; `None` for an account without a password.
    pub password: Option<Vec<u8>>,
    /// The id this node's front registers with: `server_id` of the configuration plus
    /// the node's id, so that the fronts of two nodes (an old primary's, not yet gone,
    /// and a new one's) are two replicas to the database, never one.
    pub server_id: u32,
    /// The primary sends a heartbeat after this long without events.
    pub heartbeat: Duration,
    pub connect_timeout: Duration,
    /// The first wait before a failed session is tried again; it doubles up to
    /// [`RETRY_MAX`].
    pub retry: Duration,
    /// Largest binlog event accepted (MariaDB's `slave_max_allowed_packet`).
    pub event_bytes_max: usize,
}

/// Defaults of [`FrontSettings`]: the base of the fronts' server ids.
pub const SERVER_ID_BASE_DEFAULT: u32 = 4_000_000_000;
/// The binlog server's default server id.
pub const BINLOG_SERVER_ID_DEFAULT: u32 = 3_999_999_999;
pub const HEARTBEAT_DEFAULT: Duration = Duration::from_millis(500);
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(2);
pub const RETRY_DEFAULT: Duration = Duration::from_millis(50);
pub const RETRY_MAX: Duration = Duration::from_secs(2);
pub const EVENT_BYTES_DEFAULT: usize = 1 << 30;

/// How often an idle front (not on the stream's primary) asks its node for its role.
const ROLE_POLL: Duration = Duration::from_millis(10);

/// A failure repeated this long is logged again.
const REPEAT_LOG: Duration = Duration::from_secs(60);

/// A stream's front, running.
pub struct Front {
    stop: Arc<AtomicBool>,
    sockets: Arc<Mutex<Vec<TcpStream>>>,
    metrics: Arc<FrontMetrics>,
    thread: Option<JoinHandle<()>>,
}

impl Front {
    /// Starts the front of `stream` on the node whose clients connect to `node`.
    /// `append_bytes_max` is the node's log batch: the largest append it takes.
    pub fn start(
        stream: &str,
        node: &str,
        settings: FrontSettings,
        append_timeout: Duration,
        append_bytes_max: usize,
    ) -> std::io::Result<Front> {
        let stop = Arc::new(AtomicBool::new(false));
        let sockets = Arc::new(Mutex::new(Vec::new()));
        let metrics = Arc::new(FrontMetrics::new(stream, &settings.upstream));
        let runner = Runner {
            stream: stream.to_owned(),
            node: node.to_owned(),
            settings,
            append_timeout,
            append_bytes_max,
            stop: Arc::clone(&stop),
            sockets: Arc::clone(&sockets),
            metrics: Arc::clone(&metrics),
        };
        let thread = std::thread::Builder::new()
            .name(format!("lockstep-front-{stream}"))
            .spawn(move || runner.run())?;
        Ok(Front {
            stop,
            sockets,
            metrics,
            thread: Some(thread),
        })
    }

    pub fn metrics(&self) -> &Arc<FrontMetrics> {
        &self.metrics
    }

    /// Stops the front: its connections are closed; nothing uncommitted was ACKed.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in self.sockets.lock().expect("front sockets").iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Runner {
    stream: String,
    node: String,
    settings: FrontSettings,
    append_timeout: Duration,
    append_bytes_max: usize,
    stop: Arc<AtomicBool>,
    sockets: Arc<Mutex<Vec<TcpStream>>>,
    metrics: Arc<FrontMetrics>,
}

impl Runner {
    fn run(self) {
        let mut retry = self.settings.retry;
        let mut last_error: Option<(String, Instant)> = None;
        let mut serving = false;
        while !self.stop.load(Ordering::Relaxed) {
            let cfg = SessionConfig {
                stream: &self.stream,
                node: &self.node,
                front: &self.settings,
                append_timeout: self.append_timeout,
                append_bytes_max: self.append_bytes_max,
                metrics: &self.metrics,
                stop: &self.stop,
                sockets: &self.sockets,
            };
            let started = Instant::now();
            let outcome = session::run(&cfg);
            if started.elapsed() > RETRY_MAX {
                // A session that ran for a while is not part of a run of failures.
                retry = self.settings.retry;
            }
            match outcome {
                Ok(Ended::Stopped) => {}
                Ok(Ended::NotPrimary) => {
                    if serving {
                        tracing::info!(
                            "front of stream {}: this node is no longer the \
                             stream's primary; the front waits",
                            self.stream
                        );
                        serving = false;
                    }
                    retry = self.settings.retry;
                    std::thread::sleep(ROLE_POLL);
                }
                // A stop shuts the session's connections: not a failure to report.
                Err(_) if self.stop.load(Ordering::Relaxed) => {}
                Err(e) => {
                    serving = true;
                    self.metrics.failures.fetch_add(1, Ordering::Relaxed);
                    let text = e.to_string();
                    self.metrics.set_error(Some(text.clone()));
                    let repeated = last_error
                        .as_ref()
                        .is_some_and(|(t, at)| *t == text && at.elapsed() < REPEAT_LOG);
                    if !repeated {
                        tracing::warn!("front of stream {}: {text}; trying again", self.stream);
                        last_error = Some((text, Instant::now()));
                    }
                    std::thread::sleep(retry);
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
        }
    }
}
