//! The node's control loop: one thread that drives the node's [`Controller`], carries
//! its messages to and from the other nodes, persists its state, and passes committed
//! configurations and fences to the shards.
//!
//! Connections: one outgoing connection per other member, owned by a writer thread
//! with a bounded queue (a message that finds the queue full, or no connection, is
//! dropped: raft, statuses and fences are all sent again). It greets with
//! `ControlHello` (this node's id and process incarnation) and waits for
//! `ControlWelcome`; `Error (id-in-use)` means another live process serves this
//! node's id, and this process stops. Incoming connections greet at the node's
//! listening address; the acceptor gives the id to the greeting process (see
//! `identity`) and its handshake thread then reads their `Control` frames and queues
//! them here (see `control_link`).
//!
//! Persistence: the controller's state is one small file, `control/STATE` in the data
//! directory, replaced atomically (write, fsync, rename, fsync the directory) before
//! anything that depends on it is sent. A failure to persist stops the node: raft's
//! promises cannot be kept without it.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use crate::constants::CONTROL_WELCOME_WAIT_MS;
use crate::control::{
    ClusterConfig, ControlLog, ControlMsg, Controller, ControllerSettings, NodeStatus, Output,
    Request, StreamRoles, StreamStatus,
};
use crate::replication::NodeId;
use crate::server::auth::{self, AuthError, Secret};
use crate::server::shard::Handoff;
use crate::server::{ServerError, Shared};
use crate::wire::{ErrorCode, Message, RequestId};

/// Messages queued for one peer before new ones are dropped.
const PEER_QUEUE: usize = 4096;
/// Inputs queued for the control loop.
pub const CONTROL_QUEUE: usize = 16 * 1024;
const DIAL_TIMEOUT: Duration = Duration::from_millis(200);
const REDIAL: Duration = Duration::from_millis(50);
const TURN: Duration = Duration::from_millis(2);
/// How often the cluster view for `GET /members` is refreshed.
const PUBLISH: Duration = Duration::from_millis(50);

/// An input of the control loop.
pub enum ToControl {
    /// A message from another node's controller.
    Peer {
        from: NodeId,
        msg: ControlMsg,
        /// Counted against its connection's budget until handled.
        queued: crate::server::control_link::Queued,
    },
    /// A shard's report of one of its streams.
    Status(StreamStatus),
    /// A primary's request.
    Request(Request),
    /// A controller message from a stream (a switchover's `Drained`).
    Send { to: NodeId, msg: ControlMsg },
    /// A node that proved it knows the cluster secret asks to join; `reply` gets the
    /// cluster's configuration (JSON) once the join is committed, or why not.
    Join {
        node: NodeId,
        addr: String,
        reply: SyncSender<Result<Vec<u8>, JoinRefused>>,
    },
    /// A shard answered a fence of `reply_to`.
    Fenced {
        reply_to: NodeId,
        stream: String,
        epoch: u64,
        last_epoch: u64,
        last_lsn: u64,
    },
}

/// Where the control loop sends each stream's configuration and fences.
pub struct StreamRoute {
    pub name: String,
    pub shard: SyncSender<Handoff>,
    pub local: usize,
}

pub struct ControlLoop {
    node_id: NodeId,
    incarnation: u64,
    /// Where this node serves (its advertised address), said in its greetings.
    serves: String,
    ctrl: Controller,
    inbox: Receiver<ToControl>,
    peers: BTreeMap<NodeId, SyncSender<Vec<u8>>>,
    routes: Vec<StreamRoute>,
    statuses: BTreeMap<String, StreamStatus>,
    state_dir: PathBuf,
    shared: Arc<Shared>,
    applied_version: Option<u64>,
    secret: Option<Secret>,
    joins: Vec<PendingJoin>,
    /// The roles last applied, to log what changed.
    applied_roles: BTreeMap<String, StreamRoles>,
    /// Streams whose configured `primary` is this node, on the cluster's first start:
    /// if the controller's first promotion picks another node (this one started late),
    /// this node asks for a switchover to itself once it is in the sync set.
    want_primary: BTreeMap<String, WantPrimary>,
}

/// The configured primary's claim on a stream at the cluster's first start.
struct WantPrimary {
    asked: Option<Instant>,
    since: Instant,
}

/// How long the configured primary keeps asking for its role at first start.
const WANT_PRIMARY_FOR: Duration = Duration::from_secs(30);

/// Why a join was not answered with the configuration.
pub struct JoinRefused {
    /// Asking again cannot succeed (the node id is taken at another address).
    pub never: bool,
    pub why: String,
}

/// A join waiting for its commit.
struct PendingJoin {
    node: NodeId,
    addr: String,
    reply: SyncSender<Result<Vec<u8>, JoinRefused>>,
    asked: Instant,
    deadline: Instant,
}

/// How long a join may take to commit before the joiner is told to try again.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a pending join is asked for again (a leader may have changed).
const JOIN_RETRY: Duration = Duration::from_millis(200);

/// Reads the persisted state of `data_dir`, if any.
pub fn load_state(data_dir: &Path) -> Result<Option<ControlLog>, ServerError> {
    let path = data_dir.join("control").join("STATE");
    match std::fs::read(&path) {
        Ok(bytes) => ControlLog::decode(&bytes)
            .map(Some)
            .map_err(|source| ServerError::ControlState { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ServerError::Read { path, source }),
    }
}

fn store_state(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join("STATE.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join("STATE"))?;
    lockstep_sys::file::sync_dir(dir)
}

impl ControlLoop {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node_id: NodeId,
        incarnation: u64,
        serves: String,
        genesis: ClusterConfig,
        persisted: Option<ControlLog>,
        settings: ControllerSettings,
        inbox: Receiver<ToControl>,
        routes: Vec<StreamRoute>,
        data_dir: &Path,
        shared: Arc<Shared>,
        secret: Option<Secret>,
    ) -> Result<ControlLoop, ServerError> {
        // A cluster's first start: no state on disk and the streams' roles still those
        // of the files. The configured primaries are honoured then (see `want_primary`).
        let first_start = persisted.is_none();
        let want_primary = if first_start {
            genesis
                .streams
                .iter()
                .filter(|(_, r)| r.primary == node_id && r.incarnation == 0)
                .map(|(name, _)| {
                    (
                        name.clone(),
                        WantPrimary {
                            asked: None,
                            since: Instant::now(),
                        },
                    )
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        let ctrl = Controller::new(node_id, genesis, persisted, settings, incarnation)?;
        let mut l = ControlLoop {
            node_id,
            incarnation,
            serves,
            ctrl,
            inbox,
            peers: BTreeMap::new(),
            routes,
            statuses: BTreeMap::new(),
            state_dir: data_dir.join("control"),
            shared,
            applied_version: None,
            secret,
            joins: Vec::new(),
            applied_roles: BTreeMap::new(),
            want_primary,
        };
        let members = l.ctrl.config().members.clone();
        l.link(&members)?;
        Ok(l)
    }

    /// Starts a control link to every member that has none (members are only ever
    /// added).
    fn link(&mut self, members: &BTreeMap<NodeId, String>) -> Result<(), ServerError> {
        for (&id, addr) in members {
            if id == self.node_id || self.peers.contains_key(&id) {
                continue;
            }
            let (tx, rx) = std::sync::mpsc::sync_channel(PEER_QUEUE);
            let sh = Arc::clone(&self.shared);
            let link = Link {
                node_id: self.node_id,
                incarnation: self.incarnation,
                serves: self.serves.clone(),
                peer: id,
                addr: addr.clone(),
                secret: self.secret.clone(),
            };
            std::thread::Builder::new()
                .name(format!("lockstep-ctl-{id}"))
                .spawn(move || write_peer(link, rx, sh))
                .map_err(|source| ServerError::Thread {
                    what: format!("the control link to node {id}"),
                    source,
                })?;
            self.peers.insert(id, tx);
        }
        Ok(())
    }

    pub fn run(mut self) {
        let started = Instant::now();
        // The configuration restored from disk applies first.
        let config = self.ctrl.config().clone();
        self.apply(&config);
        let mut published = Instant::now() - PUBLISH;
        while !self.shared.shutdown.load(Ordering::Relaxed) {
            match self.inbox.recv_timeout(TURN) {
                Ok(first) => {
                    self.handle(first);
                    for _ in 0..1024 {
                        match self.inbox.try_recv() {
                            Ok(m) => self.handle(m),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            self.ctrl.set_status(NodeStatus {
                node: self.node_id,
                incarnation: self.incarnation,
                streams: self.statuses.values().cloned().collect(),
            });
            self.ctrl.on_tick(started.elapsed().as_millis() as u64);
            self.execute();
            self.answer_joins();
            self.claim_primary();
            if published.elapsed() >= PUBLISH {
                published = Instant::now();
                self.publish();
            }
        }
    }

    /// The cluster as this node's controller sees it, for `GET /members`.
    fn publish(&self) {
        let config = self.ctrl.config();
        let nodes: Vec<serde_json::Value> = config
            .members
            .iter()
            .map(|(&id, addr)| {
                let heard = self.ctrl.heard_from(id);
                serde_json::json!({
                    "node": id,
                    "addr": addr,
                    "voter": config.voters.contains(&id),
                    "heard_ms_ago": heard.map(|(_, age)| age),
                    "incarnation": heard.map(|(s, _)| s.incarnation),
                    "streams": heard.map(|(s, _)| s.streams.clone()),
                })
            })
            .collect();
        let view = serde_json::json!({
            "published_unix_ms": crate::server::admin::unix_ms(),
            "node": self.node_id,
            "leader": self.ctrl.leader(),
            "term": self.ctrl.term(),
            "config": config,
            "nodes": nodes,
        });
        *self.shared.members.lock().expect("members lock") = Some(view);
    }

    fn handle(&mut self, m: ToControl) {
        match m {
            ToControl::Status(s) => {
                self.statuses.insert(s.stream.clone(), s);
            }
            ToControl::Request(r) => self.ctrl.request(r),
            ToControl::Fenced {
                reply_to,
                stream,
                epoch,
                last_epoch,
                last_lsn,
            } => {
                let msg = ControlMsg::Fenced {
                    stream,
                    epoch,
                    node: self.node_id,
                    incarnation: self.incarnation,
                    last_epoch,
                    last_lsn,
                };
                self.send(reply_to, msg);
            }
            ToControl::Peer { from, msg, queued } => {
                self.deliver(from, msg);
                drop(queued);
            }
            ToControl::Send { to, msg } => self.send(to, msg),
            ToControl::Join { node, addr, reply } => {
                let now = Instant::now();
                self.joins.push(PendingJoin {
                    node,
                    addr,
                    reply,
                    asked: now - JOIN_RETRY,
                    deadline: now + JOIN_TIMEOUT,
                });
                self.answer_joins();
            }
        }
        self.execute();
    }

    /// Answers the joins the configuration now holds (or refuses), and asks the
    /// leader again for the others.
    fn answer_joins(&mut self) {
        if self.joins.is_empty() {
            return;
        }
        let now = Instant::now();
        let config = self.ctrl.config();
        let mut asks = Vec::new();
        self.joins.retain_mut(|j| {
            let answer = match config.members.get(&j.node) {
                Some(addr) if *addr == j.addr => Some(Ok(config.encode())),
                Some(addr) => Some(Err(JoinRefused {
                    never: true,
                    why: format!(
                        "node {} is already a member of the cluster, at {addr}",
                        j.node
                    ),
                })),
                None if now >= j.deadline => Some(Err(JoinRefused {
                    never: false,
                    why: format!(
                        "the join was not committed within {JOIN_TIMEOUT:?} \
                         (is a controller leader elected?)"
                    ),
                })),
                None => None,
            };
            match answer {
                Some(a) => {
                    let _ = j.reply.try_send(a);
                    false
                }
                None => {
                    if now >= j.asked + JOIN_RETRY {
                        j.asked = now;
                        asks.push(Request::Join {
                            node: j.node,
                            addr: j.addr.clone(),
                        });
                    }
                    true
                }
            }
        });
        for r in asks {
            self.ctrl.request(r);
        }
    }

    /// A message for this node, from `from` (possibly this node itself).
    fn deliver(&mut self, from: NodeId, msg: ControlMsg) {
        match msg {
            ControlMsg::Fence { stream, epoch } => {
                match self.routes.iter().find(|r| r.name == stream) {
                    Some(r) => {
                        let _ = r.shard.try_send(Handoff::Fence {
                            stream: r.local,
                            epoch,
                            reply_to: from,
                        });
                    }
                    None => {
                        tracing::warn!(
                            node = self.node_id,
                            "node {from} fences unknown stream {stream}"
                        )
                    }
                }
            }
            ControlMsg::Drain { stream, epoch, to } => {
                match self.routes.iter().find(|r| r.name == stream) {
                    Some(r) => {
                        let _ = r.shard.try_send(Handoff::Drain {
                            stream: r.local,
                            epoch,
                            to,
                            reply_to: from,
                        });
                    }
                    None => tracing::warn!(
                        node = self.node_id,
                        "node {from} switches over unknown stream {stream}"
                    ),
                }
            }
            other => self.ctrl.on_message(from, other),
        }
    }

    fn send(&mut self, to: NodeId, msg: ControlMsg) {
        if to == self.node_id {
            return self.deliver(to, msg);
        }
        let Some(peer) = self.peers.get(&to) else {
            return;
        };
        match peer.try_send(msg.encode()) {
            Ok(()) | Err(TrySendError::Full(_)) => {}
            Err(TrySendError::Disconnected(_)) => {
                tracing::warn!(
                    node = self.node_id,
                    peer = to,
                    "the control link to node {to} stopped"
                );
            }
        }
    }

    fn execute(&mut self) {
        // Outputs may produce more (a message to this node itself): bounded rounds.
        for _ in 0..16 {
            let outputs = self.ctrl.poll();
            if outputs.is_empty() {
                return;
            }
            for o in outputs {
                match o {
                    Output::Send { to, msg } => self.send(to, msg),
                    Output::Persist(bytes) => {
                        if let Err(e) = store_state(&self.state_dir, &bytes) {
                            // Raft's promises rest on this write: the node stops rather
                            // than vote or ack without it.
                            panic!(
                                "lockstep: control: cannot persist the controller state in {}: {e}",
                                self.state_dir.display()
                            );
                        }
                    }
                    Output::Config(c) => self.apply(&c),
                    Output::Event(e) => log_event(self.node_id, &e),
                }
            }
        }
    }

    /// At the cluster's first start, asks for a switchover to this node for each
    /// stream whose configured primary it is and that the controller gave to another
    /// node (one that was up first). Gives up, with one line, after
    /// [`WANT_PRIMARY_FOR`].
    fn claim_primary(&mut self) {
        if self.want_primary.is_empty() {
            return;
        }
        let config = self.ctrl.config().clone();
        let me = self.node_id;
        let mut asks = Vec::new();
        self.want_primary.retain(|stream, want| {
            let Some(roles) = config.streams.get(stream) else {
                return false;
            };
            if roles.primary == me && roles.incarnation != 0 {
                return false;
            }
            if want.since.elapsed() >= WANT_PRIMARY_FOR {
                tracing::warn!(
                    node = me,
                    stream = %stream,
                    "stream {stream}: node {me} is the configured primary, but node {} holds \
                     the role and a switchover to node {me} did not happen within {}s; \
                     `lockstep switchover --stream {stream} --to {me}` moves it",
                    roles.primary,
                    WANT_PRIMARY_FOR.as_secs()
                );
                return false;
            }
            // Not decided yet, or this node is not yet a sync member holding the log.
            if roles.incarnation == 0 || !roles.sync_set.contains(&me) {
                return true;
            }
            if want
                .asked
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(500))
            {
                if want.asked.is_none() {
                    tracing::info!(
                        node = me,
                        stream = %stream,
                        "stream {stream}: node {} was promoted first (it was up before this \
                         node); asking for a switchover to node {me}, the configured primary",
                        roles.primary
                    );
                }
                want.asked = Some(Instant::now());
                asks.push(Request::Switchover {
                    stream: stream.clone(),
                    to: me,
                });
            }
            true
        });
        for r in asks {
            self.ctrl.request(r);
        }
    }

    fn apply(&mut self, config: &ClusterConfig) {
        if self.applied_version == Some(config.version) {
            return;
        }
        self.applied_version = Some(config.version);
        self.shared.coordinator.publish(config);
        for (name, roles) in &config.streams {
            let before = self.applied_roles.get(name);
            let changed = before.is_none_or(|b| {
                (b.epoch, b.primary, &b.sync_set, &b.learners, b.degraded)
                    != (
                        roles.epoch,
                        roles.primary,
                        &roles.sync_set,
                        &roles.learners,
                        roles.degraded,
                    )
            });
            if changed && roles.incarnation != 0 {
                tracing::info!(
                    node = self.node_id,
                    stream = %name,
                    epoch = roles.epoch,
                    primary = roles.primary,
                    "stream {name}: primary node {} in epoch {}, sync set {}, learners {}{}",
                    roles.primary,
                    roles.epoch,
                    ids(&roles.sync_set),
                    ids(&roles.learners),
                    if roles.degraded { ", DEGRADED" } else { "" }
                );
            }
            self.applied_roles.insert(name.clone(), roles.clone());
        }
        if let Err(e) = self.link(&config.members) {
            tracing::error!(node = self.node_id, "{e}");
        }
        if let Some(ids) = &self.shared.identities {
            ids.set_members(&config.members);
        }
        let addrs = Arc::new(config.members.clone());
        for r in &self.routes {
            if let Some(roles) = config.streams.get(&r.name) {
                let _ = r.shard.try_send(Handoff::Roles {
                    stream: r.local,
                    roles: Box::new(roles.clone()),
                    addrs: Arc::clone(&addrs),
                });
            }
        }
    }
}

/// Node ids as `{1, 2}` (`{}` for none).
fn ids(nodes: &[NodeId]) -> String {
    let list: Vec<String> = nodes.iter().map(ToString::to_string).collect();
    format!("{{{}}}", list.join(", "))
}

/// A controller event as a log line. Refused switchovers and joins are the operator's
/// business; the rest
/// (proposals, applied commands, fence rounds) is the controller's own account, at
/// debug level: the operator's lines are the role changes that [`ControlLoop::apply`]
/// logs.
fn log_event(node: NodeId, event: &str) {
    // A refused removal or restore is the normal race of two requests on one version
    // (the primary asks again); refused switchovers and joins are an operator's.
    let operator = event.contains("switchover") || event.contains("join");
    if operator && event.contains("refused") {
        tracing::warn!(node, "controller: {event}");
    } else {
        tracing::debug!(node, "controller: {event}");
    }
}

/// Who dials whom for one control link.
struct Link {
    node_id: NodeId,
    incarnation: u64,
    /// Where this node serves (its advertised address).
    serves: String,
    peer: NodeId,
    addr: String,
    secret: Option<Secret>,
}

/// Owns the outgoing control connection to `peer`: dials, greets, writes. A peer
/// that answers the greeting with `id-in-use` says that another live process serves
/// this node's id: this process stops (see [`Shared::stop_fatally`]).
fn write_peer(link: Link, rx: Receiver<Vec<u8>>, shared: Arc<Shared>) {
    let peer = link.peer;
    let mut conn: Option<TcpStream> = None;
    let mut next_dial = Instant::now();
    let mut frame = Vec::with_capacity(4096);
    while !shared.shutdown.load(Ordering::Relaxed) {
        let msg = match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if conn.is_none() && Instant::now() >= next_dial {
            next_dial = Instant::now() + REDIAL;
            let greeting = Greeting {
                node_id: link.node_id,
                incarnation: link.incarnation,
                serves: &link.serves,
                addr: &link.addr,
                secret: link.secret.as_ref(),
                wait: Duration::from_millis(CONTROL_WELCOME_WAIT_MS),
            };
            conn = match dial(&greeting) {
                Ok(c) => Some(c),
                Err(DialError::InUse(why)) => {
                    shared.stop_fatally(format!("node {peer} at {}: {why}", link.addr));
                    break;
                }
                Err(DialError::Refused(why)) => {
                    auth::log_refusal(
                        &format!("to node {peer}"),
                        &format!(
                            "control: node {peer} at {} refused this node: {why}",
                            link.addr
                        ),
                    );
                    None
                }
                Err(DialError::Io(_)) => None,
            };
        }
        let Some(sock) = conn.as_mut() else {
            continue;
        };
        frame.clear();
        if let Err(e) = (Message::Control { message: &msg }).encode_into(RequestId(0), &mut frame) {
            tracing::error!(
                peer,
                "a control message for node {peer} does not encode: {e}"
            );
            continue;
        }
        if sock.write_all(&frame).is_err() {
            let _ = sock.shutdown(Shutdown::Both);
            conn = None;
        }
    }
    if let Some(sock) = conn {
        let _ = sock.shutdown(Shutdown::Both);
    }
}

/// Who greets another node's controller (this node, process `incarnation`, serving
/// at `serves`), and where (`addr`).
pub struct Greeting<'a> {
    pub node_id: NodeId,
    pub incarnation: u64,
    pub serves: &'a str,
    pub addr: &'a str,
    pub secret: Option<&'a Secret>,
    /// How long to wait for each answer (the handshake's, the greeting's).
    pub wait: Duration,
}

/// Why a greeting did not give a control connection.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// Another live process serves this node's id (the other node's words).
    #[error("{0}")]
    InUse(String),
    /// The other node refused this one (the secret, or no room).
    #[error("{0}")]
    Refused(String),
    /// The connection failed or broke the protocol (the other node may be down).
    #[error("{0}")]
    Io(String),
}

/// Connects to a node's controller, proves the secret, greets with `ControlHello` and
/// waits for `ControlWelcome`.
pub fn dial(g: &Greeting<'_>) -> Result<TcpStream, DialError> {
    let io = |e: String| DialError::Io(e);
    let target = g
        .addr
        .to_socket_addrs()
        .map_err(|e| io(e.to_string()))?
        .next()
        .ok_or_else(|| io("no address".into()))?;
    let mut sock =
        TcpStream::connect_timeout(&target, DIAL_TIMEOUT).map_err(|e| io(e.to_string()))?;
    let _ = sock.set_nodelay(true);
    let _ = sock.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = sock.set_read_timeout(Some(g.wait));
    let mut decoder = crate::wire::FrameDecoder::new();
    if let Some(secret) = g.secret {
        auth::dial(&sock, &mut decoder, secret, g.node_id).map_err(|e| match e {
            AuthError::Refused(why) => DialError::Refused(why),
            AuthError::Io(why) => DialError::Io(why),
        })?;
    }
    let mut hello = Vec::new();
    Message::ControlHello {
        node_id: g.node_id,
        incarnation: g.incarnation,
        addr: Some(g.serves).filter(|a| !a.is_empty()),
    }
    .encode_into(RequestId(0), &mut hello)
    .map_err(|e| io(e.to_string()))?;
    sock.write_all(&hello).map_err(|e| io(e.to_string()))?;
    loop {
        match decoder.next_frame() {
            Ok(Some(f)) => {
                return match f.message {
                    Message::ControlWelcome { .. } => {
                        let _ = sock.set_read_timeout(None);
                        Ok(sock)
                    }
                    Message::Error {
                        code: ErrorCode::IdInUse,
                        message,
                    } => Err(DialError::InUse(message.to_string())),
                    Message::Error { code, message } => {
                        Err(DialError::Refused(format!("{message} ({})", code.as_str())))
                    }
                    other => Err(io(format!("answered the greeting with {}", other.kind()))),
                };
            }
            Ok(None) => {}
            Err(e) => return Err(io(e.to_string())),
        }
        match decoder.read_from(&mut &sock) {
            Ok(0) => return Err(io("closed before answering the greeting".into())),
            Ok(_) => {}
            Err(e) => return Err(io(e.to_string())),
        }
    }
}
