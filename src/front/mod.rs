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
pub mod coordinator;
pub mod cursor;
pub mod db_failover;
pub mod db_role;
pub mod events;
pub mod export;
pub mod gtid;
pub mod metrics;
pub mod outbox;
pub mod reader;
pub mod record;
pub mod registration;
pub mod rejoin;
pub mod server;
pub mod session;
pub mod settings;
pub mod transactions;
pub mod watch;

use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use coordinator::Coordinator;
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
    /// The database servers beside the member nodes, when the cluster fails the
    /// database over (`members = { ... }`); `None`: `upstream` is the primary for good.
    pub db: Option<DbMembers>,
}

/// A front's database members (`[[streams]] front = { members = { ... } }`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbMembers {
    /// This node.
    pub node: crate::replication::NodeId,
    /// node → its database server's `host:port`; `upstream` is one of them, the
    /// database primary when the cluster first starts.
    pub members: std::collections::BTreeMap<crate::replication::NodeId, String>,
    /// A database primary unreachable (or unusable as a primary) this long is
    /// replaced.
    pub failover_timeout: Duration,
    /// This node's binlog server of the stream, which the database server beside it
    /// replicates from while it is not the primary; `None` if the node serves none.
    pub source: Option<db_role::Source>,
}

impl FrontSettings {
    /// The database roles the cluster starts from.
    pub fn genesis_roles(&self) -> Option<crate::control::DbRoles> {
        let db = self.db.as_ref()?;
        let primary = db
            .members
            .iter()
            .find(|(_, addr)| **addr == self.upstream)
            .map(|(&n, _)| n)?;
        Some(crate::control::DbRoles {
            members: db.members.clone(),
            primary,
            term: 0,
        })
    }

    /// How the front logs in to the database server at `addr`.
    pub fn login(&self, addr: &str) -> connection::Login {
        connection::Login {
            addr: addr.to_owned(),
            user: self.user.clone(),
            password: self.password.clone(),
            database: None,
            connect_timeout: self.connect_timeout,
            io_timeout: Some(self.connect_timeout.max(Duration::from_secs(5))),
            packet_bytes_max: connection::PACKET_BYTES_DEFAULT,
        }
    }
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
pub const DB_FAILOVER_TIMEOUT_DEFAULT: Duration = Duration::from_millis(500);

/// How often an idle front (not on the stream's primary) asks its node for its role.
const ROLE_POLL: Duration = Duration::from_millis(10);

/// A failure repeated this long is logged again.
const REPEAT_LOG: Duration = Duration::from_secs(60);

/// A stream's front, running.
pub struct Front {
    stop: Arc<AtomicBool>,
    sockets: Arc<Mutex<Vec<TcpStream>>>,
    metrics: Arc<FrontMetrics>,
    threads: Vec<JoinHandle<()>>,
}

/// `serving_term` when no session serves a database primary of a known term.
const NO_TERM: u64 = u64::MAX;

/// How often the term watcher looks at the committed database roles.
const TERM_POLL: Duration = Duration::from_millis(2);

/// Ends a session whose database primary is no longer the committed one: from the
/// moment a new term is committed, no commit on the former primary is ACKed.
struct TermWatch {
    stream: String,
    coordinator: Arc<dyn Coordinator>,
    serving_term: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    sockets: Arc<Mutex<Vec<TcpStream>>>,
}

impl TermWatch {
    fn run(self) {
        while !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(TERM_POLL);
            let serving = self.serving_term.load(Ordering::SeqCst);
            if serving == NO_TERM {
                continue;
            }
            let Some(view) = self.coordinator.view(&self.stream) else {
                continue;
            };
            if view.db.term != serving {
                for s in self.sockets.lock().expect("front sockets").iter() {
                    let _ = s.shutdown(Shutdown::Both);
                }
            }
        }
    }
}

impl Front {
    /// Starts the front of `stream` on the node whose clients connect to `node`.
    /// `append_bytes_max` is the node's log batch: the largest append it takes. With
    /// database members, `coordinator` gives the committed database roles (the front
    /// replicates the database primary they name) and takes the front's requests.
    pub fn start(
        stream: &str,
        node: &str,
        settings: FrontSettings,
        append_timeout: Duration,
        append_bytes_max: usize,
        coordinator: Option<Arc<dyn Coordinator>>,
    ) -> std::io::Result<Front> {
        let stop = Arc::new(AtomicBool::new(false));
        let sockets = Arc::new(Mutex::new(Vec::new()));
        let metrics = Arc::new(FrontMetrics::new(stream, &settings.upstream));
        let serving_term = Arc::new(AtomicU64::new(NO_TERM));
        let coordinator = coordinator.filter(|_| settings.db.is_some());
        let mut threads = Vec::new();
        if let Some(c) = &coordinator {
            let watcher = TermWatch {
                stream: stream.to_owned(),
                coordinator: Arc::clone(c),
                serving_term: Arc::clone(&serving_term),
                stop: Arc::clone(&stop),
                sockets: Arc::clone(&sockets),
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("lockstep-front-term-{stream}"))
                    .spawn(move || watcher.run())?,
            );
        }
        let runner = Runner {
            stream: stream.to_owned(),
            node: node.to_owned(),
            settings,
            append_timeout,
            append_bytes_max,
            stop: Arc::clone(&stop),
            sockets: Arc::clone(&sockets),
            metrics: Arc::clone(&metrics),
            coordinator,
            serving_term,
        };
        threads.push(
            std::thread::Builder::new()
                .name(format!("lockstep-front-{stream}"))
                .spawn(move || runner.run())?,
        );
        Ok(Front {
            stop,
            sockets,
            metrics,
            threads,
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
        for t in self.threads.drain(..) {
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
    coordinator: Option<Arc<dyn Coordinator>>,
    /// The term of the database primary the running session serves.
    serving_term: Arc<AtomicU64>,
}

/// The database primary a session replicates.
struct Target {
    settings: FrontSettings,
    /// Its term and node, with database members.
    role: Option<(u64, crate::replication::NodeId)>,
}

impl Runner {
    /// The database primary to replicate now: the committed one with database
    /// members, else the configured one. `None` while the roles are not known yet.
    fn target(&self) -> Option<Target> {
        let Some(c) = &self.coordinator else {
            return Some(Target {
                settings: self.settings.clone(),
                role: None,
            });
        };
        let view = c.view(&self.stream)?;
        let mut settings = self.settings.clone();
        settings.upstream = view.db.primary_addr().to_owned();
        Some(Target {
            settings,
            role: Some((view.db.term, view.db.primary)),
        })
    }

    fn run(self) {
        let mut retry = self.settings.retry;
        let mut last_error: Option<(String, Instant)> = None;
        let mut serving = false;
        // Since when the database primary of `down.1` has failed every session.
        let mut down: Option<(Instant, u64)> = None;
        // The term whose primary this front let take writes.
        let opened_term = AtomicU64::new(NO_TERM);
        while !self.stop.load(Ordering::Relaxed) {
            let Some(target) = self.target() else {
                std::thread::sleep(ROLE_POLL);
                continue;
            };
            if let Some((term, node)) = target.role {
                self.metrics
                    .set_db_primary(Some((node, target.settings.upstream.clone(), term)));
                self.serving_term.store(term, Ordering::SeqCst);
            }
            let cfg = SessionConfig {
                stream: &self.stream,
                node: &self.node,
                front: &target.settings,
                append_timeout: self.append_timeout,
                append_bytes_max: self.append_bytes_max,
                metrics: &self.metrics,
                stop: &self.stop,
                sockets: &self.sockets,
                promote_term: target
                    .role
                    .map(|(term, _)| term)
                    .filter(|t| *t != opened_term.load(Ordering::SeqCst)),
                opened_term: &opened_term,
            };
            let started = Instant::now();
            let sessions = self.metrics.sessions.load(Ordering::Relaxed);
            let outcome = session::run(&cfg);
            self.serving_term.store(NO_TERM, Ordering::SeqCst);
            let streamed = self.metrics.sessions.load(Ordering::Relaxed) != sessions;

            if started.elapsed() > RETRY_MAX {
                // A session that ran for a while is not part of a run of failures.
                retry = self.settings.retry;
            }
            match outcome {
                Ok(Ended::Stopped) => down = None,
                Ok(Ended::NotPrimary) => {
                    down = None;
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
                    // A session ended by a new term is not the new primary's failure.
                    let superseded = target.role.is_some_and(|(term, _)| {
                        self.target()
                            .and_then(|t| t.role)
                            .is_some_and(|(now, _)| now != term)
                    });
                    if superseded {
                        down = None;
                        retry = self.settings.retry;
                        continue;
                    }
                    let repeated = last_error
                        .as_ref()
                        .is_some_and(|(t, at)| *t == text && at.elapsed() < REPEAT_LOG);
                    if !repeated {
                        tracing::warn!("front of stream {}: {text}; trying again", self.stream);
                        last_error = Some((text, Instant::now()));
                    }
                    if let (Some(db), Some((term, _))) = (&self.settings.db, target.role)
                        && e.is_database_side()
                    {
                        let since = match down {
                            Some((at, t)) if t == term && !streamed => at,
                            _ => Instant::now(),
                        };
                        down = Some((since, term));
                        if since.elapsed() >= db.failover_timeout {
                            self.fail_over(&target.settings.upstream, term);
                            down = None;
                            retry = self.settings.retry;
                            continue;
                        }
                        // Look again soon: the failover must not wait for a backoff.
                        retry = retry.min(db.failover_timeout / 4);
                    }
                    std::thread::sleep(retry);
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
        }
    }

    fn fail_over(&self, failed: &str, term: u64) {
        let Some(c) = &self.coordinator else { return };
        let ctx = db_failover::Context {
            stream: &self.stream,
            front: &self.settings,
            coordinator: c.as_ref(),
            stop: &self.stop,
        };
        match db_failover::failover(&ctx, &self.node, term) {
            Ok(outcome) => tracing::warn!(
                "front of stream {}: the database primary {failed} failed; {outcome}",
                self.stream
            ),
            Err(e) => tracing::error!(
                "front of stream {}: failover of the database primary {failed}: {e}",
                self.stream
            ),
        }
    }
}
