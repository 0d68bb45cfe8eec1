//! Moving the database primary: a failover when it fails, a switchover when an
//! operator asks.
//!
//! Both end in one committed controller entry ([`Request::DbPromote`]) that names the
//! new database primary in a new term; from then on the front ACKs only the new
//! primary, so no commit on the former one can return OK any more (the entry is the
//! fence). The entry is asked for only once the new primary's server holds everything
//! the stream committed, read from the stream's lockstep primary of one epoch: the
//! entry is refused if that epoch is over (a newer primary may have committed more).
//!
//! - [`failover`] (run by the front on the stream's lockstep primary, after the
//!   database primary failed for `failover_timeout`): the stream's position; the first
//!   replica on a lockstep sync member (then any other) that applied it within the
//!   timeout; the entry. The former primary is fenced if it answers.
//! - [`switchover`] (asked on any node): the primary is fenced (`read_only`), so its
//!   position stops moving; once the stream holds that position and the target applied
//!   it, the entry. Undone (the primary takes writes again) if any step before the
//!   entry fails.
//!
//! The front then promotes the new primary as it connects to it (`session`): from the
//! stream's position as it stands once the session on the former primary ended, and
//! it lets the new primary take writes only once its semi-sync state is ON, so that
//! no commit on it returns OK without the front's ACK.
//!
//! A former primary is made a replica again by its node's rejoin agent.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use super::FrontSettings;
use super::coordinator::{Coordinator, DbView};
use super::db_role::{self, RoleError};
use super::gtid::GtidState;
use super::session::{self, SessionError};
use crate::control::Request;
use crate::replication::NodeId;

/// How long a node waits to see its request committed.
const COMMIT_WAIT: Duration = Duration::from_secs(3);
const COMMIT_POLL: Duration = Duration::from_millis(1);
/// Between two reads of the stream's position during a switchover.
const POSITION_POLL: Duration = Duration::from_millis(1);
/// Longest a switchover waits for its target to apply the stream (before the fence,
/// and again after it): a replica under load runs a little behind.
const CATCH_UP: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    #[error("stream {0:?} has no database roles (yet)")]
    NoRoles(String),
    #[error("node {to} has no database server of stream {stream:?}")]
    NotAMember { to: NodeId, stream: String },
    #[error("no node is the stream's primary: its position is unknown")]
    NoPosition,
    #[error("the stream: {0}")]
    Stream(#[from] SessionError),
    #[error("no database replica holds the stream's position {position}: {tried}")]
    NoCandidate { position: GtidState, tried: String },
    #[error("the database primary {addr}: {source}")]
    Primary {
        addr: String,
        #[source]
        source: RoleError,
    },
    #[error(
        "the stream did not reach the fenced primary's position {position} within \
         {after:?} (it stands at {stream}); the primary takes writes again"
    )]
    StreamBehind {
        position: GtidState,
        stream: GtidState,
        after: Duration,
    },
    #[error("node {to}'s database server {addr}: {source}")]
    Target {
        to: NodeId,
        addr: String,
        #[source]
        source: RoleError,
    },
    #[error(
        "the controller did not commit node {to} as the database primary within \
         {COMMIT_WAIT:?} (the roles now: node {primary} in term {term})"
    )]
    NotCommitted {
        to: NodeId,
        primary: NodeId,
        term: u64,
    },
}

/// What a failover or switchover needs.
pub struct Context<'a> {
    pub stream: &'a str,
    pub front: &'a FrontSettings,
    pub coordinator: &'a dyn Coordinator,
    pub stop: &'a AtomicBool,
}

impl Context<'_> {
    fn view(&self) -> Result<DbView, FailoverError> {
        self.coordinator
            .view(self.stream)
            .ok_or_else(|| FailoverError::NoRoles(self.stream.to_owned()))
    }

    fn timeout(&self) -> Duration {
        self.front
            .db
            .as_ref()
            .map_or(Duration::from_secs(1), |d| d.failover_timeout)
    }

    /// The stream's epoch and position, from its lockstep primary (`nodes` first).
    fn position(&self, nodes: &[&str]) -> Result<(u64, GtidState), FailoverError> {
        session::stream_position(nodes, self.stream, Duration::from_secs(5), self.stop)?
            .ok_or(FailoverError::NoPosition)
    }

    /// Asks for `to` as the database primary and waits for the outcome.
    fn commit(&self, epoch: u64, from_term: u64, to: NodeId) -> Result<DbView, FailoverError> {
        let asked = Instant::now();
        let mut last_ask = None::<Instant>;
        loop {
            let view = self.view()?;
            if view.db.term != from_term {
                return if view.db.primary == to {
                    Ok(view)
                } else {
                    Err(FailoverError::NotCommitted {
                        to,
                        primary: view.db.primary,
                        term: view.db.term,
                    })
                };
            }
            if asked.elapsed() >= COMMIT_WAIT {
                return Err(FailoverError::NotCommitted {
                    to,
                    primary: view.db.primary,
                    term: view.db.term,
                });
            }
            // Asked again now and then: without a leader a request is dropped.
            if last_ask.is_none_or(|t| t.elapsed() >= Duration::from_millis(200)) {
                self.coordinator.ask(Request::DbPromote {
                    stream: self.stream.to_owned(),
                    epoch,
                    from_term,
                    to,
                });
                last_ask = Some(Instant::now());
            }
            std::thread::sleep(COMMIT_POLL);
        }
    }
}

/// Replaces the database primary of term `term`, which failed; run on the stream's
/// lockstep primary, whose clients connect to `node`. Returns what happened.
pub fn failover(ctx: &Context<'_>, node: &str, term: u64) -> Result<String, FailoverError> {
    let view = ctx.view()?;
    if view.db.term != term {
        return Ok(format!(
            "already replaced: node {} is the database primary in term {}",
            view.db.primary, view.db.term
        ));
    }
    let failed = view.db.primary;
    let (epoch, position) = ctx.position(&[node])?;
    // Replicas on the sync set's nodes first: their nodes hold every commit.
    let mut candidates: Vec<NodeId> = view
        .db
        .members
        .keys()
        .copied()
        .filter(|n| *n != failed)
        .collect();
    candidates.sort_by_key(|n| (!view.sync_set.contains(n), *n));
    let mut tried = Vec::new();
    for to in candidates {
        let addr = view.db.members[&to].clone();
        let login = ctx.front.login(&addr);
        if let Err(e) = db_role::caught_up(&login, &position, ctx.timeout()) {
            tried.push(format!("node {to} ({addr}): {e}"));
            continue;
        }
        let committed = ctx.commit(epoch, term, to)?;
        // The failed primary stops taking writes if it still answers (its commits
        // wait for ACKs that will not come; this ends them sooner).
        let old = ctx.front.login(&view.db.members[&failed]);
        std::thread::spawn(move || {
            let _ = db_role::fence(&old);
        });
        db_role::promote(&login, &position, ctx.timeout(), committed.db.term).map_err(
            |source| FailoverError::Target {
                to,
                addr: addr.clone(),
                source,
            },
        )?;
        return Ok(format!(
            "node {to}'s database server {addr} is the primary in term {}, at the \
             stream's position {position}",
            committed.db.term
        ));
    }
    Err(FailoverError::NoCandidate {
        position,
        tried: tried.join("; "),
    })
}

/// Moves the database primary to the server beside node `to` with nothing
/// acknowledged lost. Returns the time writes were refused (from the fence to the
/// promotion).
pub fn switchover(ctx: &Context<'_>, to: NodeId) -> Result<Duration, FailoverError> {
    let view = ctx.view()?;
    let Some(addr) = view.db.members.get(&to).cloned() else {
        return Err(FailoverError::NotAMember {
            to,
            stream: ctx.stream.to_owned(),
        });
    };
    if view.db.primary == to {
        return Ok(Duration::ZERO);
    }
    let nodes: Vec<&str> = view
        .primary_addr()
        .into_iter()
        .chain(view.nodes.values().map(String::as_str))
        .collect();
    let old_addr = view.db.primary_addr().to_owned();
    let old = ctx.front.login(&old_addr);
    let target = ctx.front.login(&addr);
    // Ready the target before the fence, so that the fenced time is short.
    let (_, position) = ctx.position(&nodes)?;
    db_role::caught_up(&target, &position, CATCH_UP).map_err(|source| FailoverError::Target {
        to,
        addr: addr.clone(),
        source,
    })?;
    let fenced = Instant::now();
    let held = db_role::fence_at(&old).map_err(|source| FailoverError::Primary {
        addr: old_addr.clone(),
        source,
    })?;
    let undo = |e: FailoverError| {
        if ctx.view().is_ok_and(|v| v.db.term == view.db.term) {
            let _ = db_role::unfence(&old);
        }
        e
    };
    // Everything the fenced primary committed (or still waits to) reaches the stream
    // through the front.
    let (epoch, position) = loop {
        let (epoch, position) = ctx.position(&nodes).map_err(undo)?;
        if held.iter().all(|g| position.reaches(g)) {
            break (epoch, position);
        }
        if fenced.elapsed() >= ctx.timeout() {
            return Err(undo(FailoverError::StreamBehind {
                position: held,
                stream: position,
                after: fenced.elapsed(),
            }));
        }
        std::thread::sleep(POSITION_POLL);
    };
    db_role::caught_up(&target, &position, CATCH_UP).map_err(|source| {
        undo(FailoverError::Target {
            to,
            addr: addr.clone(),
            source,
        })
    })?;
    ctx.commit(epoch, view.db.term, to).map_err(undo)?;
    // The front promotes the target as it connects (see `session`), from the stream's
    // position once the session on the fenced primary ended.
    Ok(fenced.elapsed())
}
