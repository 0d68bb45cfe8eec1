//! One session of a front: from finding where the stream stands to the end of one
//! binlog connection.
//!
//! 1. Open a pipeline to the local node; go no further unless it is the stream's
//!    primary.
//! 2. Wait until the stream's commit point reaches the end of its log as it was, so
//!    that everything in the log is committed (a new primary commits the tail it
//!    inherited), and read the last front record: its position is the stream's.
//!    Nothing a previous session sent is still in flight: a session ends only once the
//!    node answered or closed its pipeline.
//! 3. Connect to the database primary, check its settings, register as a semi-sync
//!    replica and ask for the binlog from the stream's position (when the stream holds
//!    no transaction yet: from the primary's own position, or from its binlog's start
//!    when database members replicate the stream).
//! 4. Append a format record, then every transaction as it arrives (in pieces, many
//!    in flight, batched while more events are already received), and ACK each
//!    batch's end position once lockstep committed it. A reader thread takes the
//!    node's answers; the session's thread never waits for a commit.
//!
//! The session ends on the first error of either side: a bad event, a gap in the
//! GTIDs, an append the node did not commit (in doubt, refused, not primary), a lost
//! connection. Whatever was not committed is never ACKed; the next session resumes
//! from what the stream holds, and the primary resends the rest.

use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::FrontSettings;
use super::ack::BinlogPos;
use super::connection::{Login, MyConn, MyError};
use super::events::{BinlogEvent, HEADER_BYTES, StreamError};
use super::gtid::GtidState;
use super::metrics::FrontMetrics;
use super::outbox::Outbox;
use super::record::{Body, Format, FrontRecord, Piece, RecordError};
use super::registration::{DumpRequest, RegisterError, start_dump};
use super::settings::{CheckError, check};
use super::transactions::{Grouped, Grouper};
use crate::client::pipeline;
use crate::client::{Client, ClientError, ClientOptions};
use crate::wire::{RequestId, Role};

/// Between two looks at the stream's commit point while waiting for it.
const TAIL_POLL: Duration = Duration::from_millis(2);

/// How one session ended without an error.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// This node is not the stream's primary.
    NotPrimary,
    /// The node is shutting down.
    Stopped,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("lockstep: {0}")]
    Lockstep(#[from] ClientError),
    #[error(
        "the stream's commit point stays at {commit}, below the end of its log ({last}), \
         for {after:?}: its sync set does not acknowledge"
    )]
    TailNotCommitted {
        commit: u64,
        last: u64,
        after: Duration,
    },
    #[error("the stream's record {lsn}: {source}")]
    Record {
        lsn: u64,
        #[source]
        source: RecordError,
    },
    #[error(
        "the stream holds records but none written by a front is left in its retained \
         log: where the database stands is unknown"
    )]
    NoPosition,
    #[error("{0}")]
    Check(#[from] CheckError),
    #[error("{0}")]
    Register(#[from] RegisterError),
    #[error("{0}")]
    Stream(#[from] StreamError),
    #[error("the binlog from {addr}: {reason}")]
    Binlog { addr: String, reason: String },
    #[error("lockstep did not commit append {id}: {outcome}")]
    NotCommitted { id: RequestId, outcome: String },
    #[error("ACK to {addr}: {source}")]
    Ack {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the database primary {addr} is read-only: it restarted (as every database member \
         does, read-only) or was fenced"
    )]
    ReadOnly { addr: String },
    #[error("the database primary: {0}")]
    Role(#[from] super::db_role::RoleError),
}

impl SessionError {
    /// Whether the session failed on the database's side (unreachable, lost, refused
    /// as a primary), as opposed to lockstep's: only those count towards a database
    /// failover.
    pub fn is_database_side(&self) -> bool {
        !matches!(
            self,
            SessionError::Lockstep(_)
                | SessionError::TailNotCommitted { .. }
                | SessionError::Record { .. }
                | SessionError::NoPosition
                | SessionError::NotCommitted { .. }
        )
    }
}

impl From<MyError> for SessionError {
    fn from(e: MyError) -> SessionError {
        SessionError::Check(CheckError::Connection(e))
    }
}

/// What a session needs to know.
pub struct SessionConfig<'a> {
    pub stream: &'a str,
    /// The local node's client address.
    pub node: &'a str,
    pub front: &'a FrontSettings,
    /// How long the node may take to commit an append before it answers in doubt.
    pub append_timeout: Duration,
    /// Most log bytes (payloads and record headers) of one append: the node's log
    /// batch, which one append must fit.
    pub append_bytes_max: usize,
    pub metrics: &'a Arc<FrontMetrics>,
    pub stop: &'a AtomicBool,
    /// Sockets a stop shuts down, so that a blocked session returns at once.
    pub sockets: &'a Mutex<Vec<TcpStream>>,
    /// With database members: the term under which a read-only primary may be
    /// promoted (`None`: this front already did so in its term; a primary read-only
    /// again was fenced, or restarted, and is replaced by a failover instead).
    pub promote_term: Option<u64>,
    /// The term whose primary this front let take writes.
    pub opened_term: &'a AtomicU64,
}

/// How long a promoted primary may take to turn its semi-sync state ON once the
/// front streams from it.
const OPEN_WRITES_WITHIN: Duration = Duration::from_secs(2);

/// Runs one session (see the module docs).
pub fn run(cfg: &SessionConfig<'_>) -> Result<Ended, SessionError> {
    let options = ClientOptions {
        timeout: cfg.append_timeout,
        reply_grace: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(2),
        outstanding_max: 1024,
        redirects_max: 0,
    };
    let (node, writer, reader) = pipeline::open(cfg.node, cfg.stream, &options)?;
    if node.role != Role::Primary {
        return Ok(Ended::NotPrimary);
    }
    let mut local = Client::connect(&[cfg.node], cfg.stream, options.clone())?;
    let Some(commit) = wait_for_tail(&mut local, cfg)? else {
        return Ok(Ended::NotPrimary);
    };
    if cfg.stop.load(Ordering::Relaxed) {
        return Ok(Ended::Stopped);
    }
    let tail = last_front_record(&mut local, commit)?;
    drop(local);

    let front = cfg.front;
    let login = Login {
        addr: front.upstream.clone(),
        user: front.user.clone(),
        password: front.password.clone(),
        database: None,
        connect_timeout: front.connect_timeout,
        io_timeout: Some(front.connect_timeout.max(Duration::from_secs(5))),
        packet_bytes_max: front.event_bytes_max,
    };
    let mut conn = MyConn::connect(&login)?;
    // With database members, the front makes the committed primary one: a read-only
    // server (a replica, or a member that restarted) is promoted once per term, and
    // takes writes only once this session's ACKs are in place.
    let mut open_writes = false;
    if let Some(db) = &front.db
        && conn.query("SELECT @@global.read_only")?.first(0).as_deref() != Some("0")
    {
        let Some(term) = cfg.promote_term else {
            return Err(SessionError::ReadOnly {
                addr: front.upstream.clone(),
            });
        };
        let stream_at = tail
            .as_ref()
            .map(|r| r.position.clone())
            .unwrap_or_default();
        super::db_role::promote(&login, &stream_at, db.failover_timeout, term)?;
        open_writes = true;
    }
    let upstream = check(&mut conn, front.server_id)?;
    for w in &upstream.warnings {
        tracing::warn!("front of stream {}: {}: {w}", cfg.stream, front.upstream);
    }
    let position = match &tail {
        Some(record) => record.position.clone(),
        // The database members replicate the stream alone: it holds the primary's
        // whole binlog, and a transaction already waiting for its ACK is not skipped.
        None if front.db.is_some() => GtidState::default(),
        None => upstream.binlog_pos.clone(),
    };
    let mut stream = start_dump(
        conn,
        &DumpRequest {
            server_id: front.server_id,
            position: &position,
            heartbeat: front.heartbeat,
            silence: front.heartbeat * 3 + Duration::from_secs(1),
        },
    )?;
    let upstream_socket = stream
        .socket()
        .try_clone()
        .map_err(|source| SessionError::Ack {
            addr: front.upstream.clone(),
            source,
        })?;
    register(cfg, &upstream_socket);
    let tail_ack = tail.as_ref().and_then(|r| match &r.body {
        Body::Piece(p) if p.last => Some(BinlogPos {
            file: p.file.clone(),
            pos: p.end_pos,
        }),
        _ => None,
    });
    cfg.metrics.sessions.fetch_add(1, Ordering::Relaxed);
    cfg.metrics.connected.store(1, Ordering::Relaxed);
    let _watch = super::watch::Watch::start(cfg.stream, front, cfg.metrics);
    tracing::info!(
        "front of stream {}: streaming the binlog of {} ({}) from {}",
        cfg.stream,
        front.upstream,
        upstream.version,
        if position.is_empty() {
            "its start".to_string()
        } else {
            format!("GTID {position}")
        }
    );

    let outbox = Arc::new(
        Outbox::new(
            writer,
            &upstream_socket,
            &front.upstream,
            cfg.append_bytes_max,
            Arc::clone(cfg.metrics),
        )
        .map_err(|source| SessionError::Ack {
            addr: front.upstream.clone(),
            source,
        })?,
    );
    let acker = {
        let outbox = Arc::clone(&outbox);
        std::thread::Builder::new()
            .name("lockstep-front-ack".into())
            .spawn(move || outbox.run_acks(reader))
            .map_err(|source| SessionError::Ack {
                addr: front.upstream.clone(),
                source,
            })?
    };
    let mut main = Main {
        cfg,
        outbox: &outbox,
        grouper: Grouper::new(position.clone()),
        layout: None,
        position,
        tail_ack,
    };
    let result = if open_writes {
        match super::db_role::open_writes(&login, OPEN_WRITES_WITHIN) {
            Ok(()) => {
                cfg.opened_term
                    .store(cfg.promote_term.unwrap_or(0), Ordering::SeqCst);
                tracing::info!(
                    "front of stream {}: the database primary {} takes writes",
                    cfg.stream,
                    front.upstream
                );
                main.stream(&mut stream)
            }
            Err(e) => Err(e.into()),
        }
    } else {
        main.stream(&mut stream)
    };
    // End the pipeline: the node answers what it read and closes; the ACK thread
    // ACKs what commits meanwhile and returns once the node is done with the
    // connection, so nothing of this session is still in flight when the next starts.
    outbox.close();
    let _ = acker.join();
    let _ = upstream_socket.shutdown(Shutdown::Both);
    cfg.metrics.connected.store(0, Ordering::Relaxed);
    unregister(cfg);
    // The first failure explains the others (a failed append closes the binlog
    // connection, which the session's thread then sees as an error of its own).
    if let Some(failure) = outbox.take_failure() {
        return Err(failure);
    }
    result
}

/// Where the stream stands: the position of its last committed front record, read
/// from the first of `nodes` that is the stream's primary (`None` if none is, or the
/// stream holds no front record yet, in the second place of the pair).
pub fn stream_position(
    nodes: &[&str],
    stream: &str,
    timeout: Duration,
    stop: &AtomicBool,
) -> Result<Option<(u64, GtidState)>, SessionError> {
    let options = ClientOptions {
        timeout,
        reply_grace: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(500),
        outstanding_max: 16,
        redirects_max: 0,
    };
    let mut last_error = None;
    for node in nodes {
        let mut c = match Client::connect(&[node], stream, options.clone()) {
            Ok(c) => c,
            Err(e) => {
                last_error = Some(e);
                continue;
            }
        };
        let Some(commit) = wait_commit(&mut c, timeout, stop)? else {
            continue;
        };
        let epoch = c.status()?["epoch"].as_u64().unwrap_or(0);
        let position = last_front_record(&mut c, commit)?
            .map(|r| r.position)
            .unwrap_or_default();
        return Ok(Some((epoch, position)));
    }
    match last_error {
        Some(e) if nodes.len() == 1 => Err(e.into()),
        _ => Ok(None),
    }
}

/// Waits until the stream's commit point reaches its log end as first seen. Returns
/// the commit point, or `None` if the node is not the primary.
fn wait_for_tail(local: &mut Client, cfg: &SessionConfig<'_>) -> Result<Option<u64>, SessionError> {
    wait_commit(local, cfg.append_timeout, cfg.stop)
}

fn wait_commit(
    local: &mut Client,
    timeout: Duration,
    stop: &AtomicBool,
) -> Result<Option<u64>, SessionError> {
    let started = Instant::now();
    let mut last = None;
    loop {
        let status = local.status()?;
        if status["role"].as_str() != Some("primary") {
            return Ok(None);
        }
        let commit = status["commit_lsn"].as_u64().unwrap_or(0);
        let end = *last.get_or_insert(status["last_lsn"].as_u64().unwrap_or(0));
        if commit >= end {
            return Ok(Some(commit));
        }
        if started.elapsed() >= timeout || stop.load(Ordering::Relaxed) {
            return Err(SessionError::TailNotCommitted {
                commit,
                last: end,
                after: started.elapsed(),
            });
        }
        std::thread::sleep(TAIL_POLL);
    }
}

/// The last record a front wrote at or below `commit`; `None` if the stream holds no
/// front record at all.
fn last_front_record(local: &mut Client, commit: u64) -> Result<Option<FrontRecord>, SessionError> {
    let mut lsn = commit;
    while lsn >= 1 {
        let (_, records) = match local.read(lsn, 1) {
            Ok(r) => r,
            // Below the log's retained start: the front's records are gone.
            Err(_) if lsn < commit => return Err(SessionError::NoPosition),
            Err(e) => return Err(e.into()),
        };
        let Some(record) = records.first().filter(|r| r.lsn == lsn) else {
            return Err(SessionError::NoPosition);
        };
        match FrontRecord::decode(&record.payload) {
            Ok(r) => return Ok(Some(r)),
            Err(RecordError::Foreign) => lsn -= 1,
            Err(source) => return Err(SessionError::Record { lsn, source }),
        }
    }
    Ok(None)
}

fn register(cfg: &SessionConfig<'_>, socket: &TcpStream) {
    if let Ok(s) = socket.try_clone() {
        cfg.sockets.lock().expect("front sockets").push(s);
    }
}

fn unregister(cfg: &SessionConfig<'_>) {
    cfg.sockets.lock().expect("front sockets").clear();
}

/// The session's own thread: binlog in, appends out.
struct Main<'a> {
    cfg: &'a SessionConfig<'a>,
    outbox: &'a Outbox,
    grouper: Grouper,
    /// The layout of the format description this session recorded.
    layout: Option<Vec<u8>>,
    /// Where the session started.
    position: GtidState,
    /// The stream's last transaction, ACKed once the dump runs (a commit of the
    /// primary may still wait for it if the ACK of the previous session was lost).
    tail_ack: Option<BinlogPos>,
}

impl Main<'_> {
    fn stream(&mut self, stream: &mut super::events::BinlogStream) -> Result<Ended, SessionError> {
        let addr = stream.addr().to_owned();
        let mut out = Vec::new();
        loop {
            if self.cfg.stop.load(Ordering::Relaxed) || self.outbox.failed() {
                return Ok(Ended::Stopped);
            }
            let event = stream.next_event()?;
            if let Some(at) = self.tail_ack.take() {
                self.outbox.ack(&at)?;
            }
            self.observe(&event);
            self.grouper
                .feed(event, &stream.checksums, &mut out)
                .map_err(|reason| SessionError::Binlog {
                    addr: addr.clone(),
                    reason,
                })?;
            for grouped in out.drain(..) {
                self.take(grouped, &addr)?;
            }
            if !stream.event_buffered() {
                self.outbox.idle()?;
            }
            self.outbox.wait_for_room();
        }
    }

    fn observe(&self, event: &BinlogEvent) {
        if event.log_pos > 0 && !event.is_artificial() {
            self.cfg
                .metrics
                .received_pos
                .store(u64::from(event.log_pos), Ordering::Relaxed);
        }
    }

    fn take(&mut self, grouped: Grouped, addr: &str) -> Result<(), SessionError> {
        match grouped {
            Grouped::Piece {
                record,
                last,
                needs_ack: _,
            } => {
                if self.layout.is_none() {
                    return Err(SessionError::Binlog {
                        addr: addr.to_owned(),
                        reason: "a transaction before the format description".into(),
                    });
                }
                let end = match &record.body {
                    Body::Piece(Piece {
                        gtid,
                        end_pos,
                        file,
                        ..
                    }) if last => Some((
                        *gtid,
                        BinlogPos {
                            file: file.clone(),
                            pos: *end_pos,
                        },
                    )),
                    _ => None,
                };
                self.outbox.push(&record, end)?;
            }
            Grouped::Held {
                gtid: _,
                file,
                end_pos,
            } => {
                self.cfg.metrics.held.fetch_add(1, Ordering::Relaxed);
                self.outbox.held(BinlogPos { file, pos: end_pos })?;
            }
            Grouped::Rotated { file, pos: _ } => self.cfg.metrics.set_file(&file),
            Grouped::Format(event) => self.format(event, addr)?,
            Grouped::Nothing => {}
        }
        Ok(())
    }

    /// The first format description of a session goes into the stream; later ones
    /// (after a rotation) must describe the same layout.
    fn format(&mut self, event: Vec<u8>, addr: &str) -> Result<(), SessionError> {
        let layout = fde_layout(&event);
        match &self.layout {
            Some(l) if *l == layout => Ok(()),
            Some(_) => Err(SessionError::Binlog {
                addr: addr.to_owned(),
                reason: "the primary's binlog format changed within the session".into(),
            }),
            None => {
                let version = event
                    .get(HEADER_BYTES + 2..HEADER_BYTES + 52)
                    .map(|v| String::from_utf8_lossy(v).trim_end_matches('\0').to_owned())
                    .unwrap_or_default();
                let server_id = super::events::Header::parse(&event).map_or(0, |h| h.server_id);
                let record = FrontRecord {
                    position: self.position.clone(),
                    body: Body::Format(Format {
                        upstream: self.cfg.front.upstream.clone(),
                        server_id,
                        server_version: version,
                        file: self.grouper.file().to_owned(),
                        pos: 4,
                        format_event: event,
                    }),
                };
                self.outbox.push(&record, None)?;
                self.layout = Some(layout);
                Ok(())
            }
        }
    }
}

/// A format description's layout: everything but its header, creation time and
/// checksum (which differ between binlog files of one server).
fn fde_layout(event: &[u8]) -> Vec<u8> {
    let body = event.get(HEADER_BYTES..).unwrap_or_default();
    let body = body.get(..body.len().saturating_sub(4)).unwrap_or_default();
    let mut layout = body.get(..52).unwrap_or(body).to_vec();
    layout.extend_from_slice(body.get(56..).unwrap_or_default());
    layout
}
