//! The rejoin agent: keeps the database server beside this node a replica of the
//! node's binlog server while it is not the database primary.
//!
//! Every database member starts read-only (and with `--init-rpl-role=SLAVE`, so that
//! MariaDB truncates an unacknowledged binlog tail at start). The agent looks at the
//! server every [`EVERY`]: one that does not replicate from this node's binlog server
//! is made to ([`db_role::rejoin`]), unless its binlog holds transactions the stream
//! never committed, which is refused with one error line (it must be restarted with
//! `--init-rpl-role=SLAVE` or rebuilt). A server that takes writes while the roles
//! name another primary is fenced once the roles stayed the same for [`FENCE_GRACE`]
//! (the grace covers a promotion this node has not seen committed yet).
//!
//! The agent never touches the database primary's server: the front on the stream's
//! lockstep primary promotes it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::FrontSettings;
use super::coordinator::Coordinator;
use super::db_role::{self, RoleError};
use super::session;

/// Between two looks at the server.
const EVERY: Duration = Duration::from_millis(100);
/// A writable server that the roles do not name stays so this long before it is
/// fenced.
const FENCE_GRACE: Duration = Duration::from_secs(2);

/// A stream's rejoin agent, running.
pub struct RejoinAgent {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RejoinAgent {
    /// Starts the agent of `stream` if this node has a database server and a binlog
    /// server for it; `None` otherwise.
    pub fn start(
        stream: &str,
        front: &FrontSettings,
        coordinator: Arc<dyn Coordinator>,
    ) -> std::io::Result<Option<RejoinAgent>> {
        let Some(db) = &front.db else { return Ok(None) };
        if db.source.is_none() || !db.members.contains_key(&db.node) {
            return Ok(None);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let agent = Agent {
            stream: stream.to_owned(),
            front: front.clone(),
            coordinator,
            stop: Arc::clone(&stop),
            state: String::new(),
            writable_since: None,
        };
        let thread = std::thread::Builder::new()
            .name(format!("lockstep-rejoin-{stream}"))
            .spawn(move || agent.run())?;
        Ok(Some(RejoinAgent {
            stop,
            thread: Some(thread),
        }))
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RejoinAgent {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Agent {
    stream: String,
    front: FrontSettings,
    coordinator: Arc<dyn Coordinator>,
    stop: Arc<AtomicBool>,
    /// What the last round found, logged when it changes.
    state: String,
    /// Since when the server takes writes under roles of this term naming another.
    writable_since: Option<(Instant, u64)>,
}

impl Agent {
    fn run(mut self) {
        while !self.stop.load(Ordering::Relaxed) {
            let state = self.round();
            if state != self.state {
                if state.starts_with("refused") || state.starts_with("cannot") {
                    tracing::error!(stream = %self.stream, "database server: {state}");
                } else {
                    tracing::info!(stream = %self.stream, "database server: {state}");
                }
                self.state = state;
            }
            std::thread::sleep(EVERY);
        }
    }

    /// One look at the server; returns what it found or did.
    fn round(&mut self) -> String {
        let db = self
            .front
            .db
            .as_ref()
            .expect("an agent has database members");
        let source = db.source.as_ref().expect("an agent has a binlog server");
        let addr = &db.members[&db.node];
        let Some(view) = self.coordinator.view(&self.stream) else {
            return "waiting for the controller's roles".into();
        };
        if view.db.primary == db.node {
            self.writable_since = None;
            return format!("{addr} is the database primary (term {})", view.db.term);
        }
        let login = self.front.login(addr);
        let seen = match db_role::observe(&login) {
            Ok(s) => s,
            Err(e) => return format!("{addr} does not answer: {e}"),
        };
        if !seen.read_only {
            let since = match self.writable_since {
                Some((at, term)) if term == view.db.term => at,
                _ => Instant::now(),
            };
            self.writable_since = Some((since, view.db.term));
            if since.elapsed() < FENCE_GRACE {
                return format!(
                    "{addr} takes writes; the roles name node {}",
                    view.db.primary
                );
            }
            return match db_role::fence(&login) {
                Ok(()) => format!(
                    "{addr} took writes while node {} is the database primary (term {}): \
                     fenced (read_only)",
                    view.db.primary, view.db.term
                ),
                Err(e) => format!("cannot fence {addr}: {e}"),
            };
        }
        self.writable_since = None;
        if seen.replicating.as_ref() == Some(&(source.host.clone(), source.port)) {
            return format!(
                "{addr} replicates from this node's binlog server {}:{}",
                source.host, source.port
            );
        }
        let nodes: Vec<&str> = view
            .primary_addr()
            .into_iter()
            .chain(view.nodes.values().map(String::as_str))
            .collect();
        let position = match session::stream_position(
            &nodes,
            &self.stream,
            Duration::from_secs(2),
            &self.stop,
        ) {
            Ok(Some((_, p))) => p,
            Ok(None) => return "waiting for the stream's primary".into(),
            Err(e) => return format!("the stream's position: {e}"),
        };
        match db_role::rejoin(&login, source, &position) {
            Ok(()) => format!(
                "{addr} rejoined as a replica of this node's binlog server {}:{} (the \
                 stream at {position})",
                source.host, source.port
            ),
            Err(e @ RoleError::Diverged { .. }) => format!("refused as a replica: {e}"),
            Err(e) => format!("cannot rejoin {addr}: {e}"),
        }
    }
}
