//! The listening socket: every new connection's first frame (a hello) says which stream
//! it is for; the connection is then handed to the shard that owns that stream.
//! Handshakes run on short threads so that a slow or silent peer holds up nobody.
//!
//! With a cluster secret, a node's connection (`PeerHello`, `ControlHello`,
//! `JoinRequest`) must first pass the handshake of [`crate::server::auth`], as the
//! node it then claims to be; clients' connections need not. A `ControlHello` is
//! answered `ControlWelcome` once [`crate::server::identity`] gives the node id to the
//! greeting process, and `Error (id-in-use)` when another live process serves it.
//!
//! Bounds: at most [`HANDSHAKES_MAX`] connections greet at once (one more is closed at
//! once), each reading frames of at most [`HELLO_BODY_BYTES_MAX`] until its hello; at
//! most [`JOINS_PENDING_MAX`] joins wait for their commit.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use crate::constants::{HANDSHAKES_MAX, HELLO_BODY_BYTES_MAX, JOINS_PENDING_MAX};
use crate::replication::NodeId;
use crate::server::Shared;
use crate::server::auth::{self, Secret};
use crate::server::control_link::Budget;
use crate::server::control_loop::ToControl;
use crate::server::identity::{self, Identities, Refusal};
use crate::server::shard::Handoff;
use crate::wire::{ErrorCode, FrameDecoder, Kind, Message, RequestId};

// Every kind that may come before (or as) a hello fits the hello decoder's bound.
const _: () = {
    let first = [
        Kind::ClientHello,
        Kind::PeerHello,
        Kind::ControlHello,
        Kind::AuthHello,
        Kind::AuthProof,
        Kind::JoinRequest,
    ];
    let mut i = 0;
    while i < first.len() {
        assert!(first[i].body_bytes_max() <= HELLO_BODY_BYTES_MAX);
        i += 1;
    }
};

const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Where each stream lives: (name, shard).
pub struct Routes {
    pub streams: Vec<(String, usize)>,
    /// Index of each stream within its shard.
    pub local: Vec<usize>,
    pub shards: Vec<SyncSender<Handoff>>,
    /// The node's control loop, when it runs a controller.
    pub control: Option<SyncSender<ToControl>>,
    pub secret: Option<Secret>,
    /// The admin plane: connections that open with an HTTP request go there.
    pub admin: Option<crate::server::admin::Inbox>,
    /// Which process serves each node id (with a controller).
    pub identities: Option<Arc<Identities>>,
    /// The control messages queued by all incoming control connections.
    pub control_budget: Arc<AtomicUsize>,
    /// Connections greeting now (each on a thread of its own).
    pub handshakes: Arc<AtomicUsize>,
    /// Joins waiting for their commit now.
    pub joins: AtomicUsize,
}

/// A handshake's place among the [`HANDSHAKES_MAX`]: given back when its connection
/// has greeted (or failed to), before a long-lived reader or a join's wait.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How long a joiner waits for its join to commit, at most.
const JOIN_WAIT: Duration = Duration::from_secs(12);

pub fn run(listener: TcpListener, routes: Arc<Routes>, shared: Arc<Shared>) {
    let mut busy_logged = None;
    for sock in listener.incoming() {
        if shared.shutdown.load(Ordering::Relaxed) {
            return;
        }
        let Ok(sock) = sock else { continue };
        if routes.handshakes.fetch_add(1, Ordering::AcqRel) >= HANDSHAKES_MAX {
            routes.handshakes.fetch_sub(1, Ordering::AcqRel);
            let _ = sock.shutdown(std::net::Shutdown::Both);
            refused_busy(&mut busy_logged);
            continue;
        }
        let slot = Slot(Arc::clone(&routes.handshakes));
        let routes = Arc::clone(&routes);
        let spawned = std::thread::Builder::new()
            .name("lockstep-hello".into())
            .spawn(move || greet(sock, &routes, slot));
        if let Err(e) = spawned {
            tracing::error!("cannot start a handshake thread: {e}");
        }
    }
}

/// One line per ten seconds while connections are closed for want of a handshake
/// slot.
fn refused_busy(logged: &mut Option<Instant>) {
    if logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
        *logged = Some(Instant::now());
        tracing::warn!(
            "{HANDSHAKES_MAX} connections are greeting at once: closing new connections \
             until one has greeted"
        );
    }
}

fn refuse(sock: &TcpStream, id: RequestId, code: ErrorCode, message: &str) {
    let mut out = Vec::new();
    if (Message::Error { code, message })
        .encode_into(id, &mut out)
        .is_ok()
    {
        let _ = (&*sock).write_all(&out);
    }
    let _ = sock.shutdown(std::net::Shutdown::Both);
}

/// Whether a node's hello may go on: with a secret, only as the node that passed the
/// handshake.
fn admitted(sock: &TcpStream, routes: &Routes, authed: Option<NodeId>, node: NodeId) -> bool {
    if routes.secret.is_none() || authed == Some(node) {
        return true;
    }
    let peer = sock
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let why = match authed {
        None => format!(
            "node {node} did not prove it knows the cluster secret (is its secret_file set?)"
        ),
        Some(other) => format!("authenticated as node {other}, greeted as node {node}"),
    };
    auth::log_refusal(
        &format!("from node {node}"),
        &format!("refused a connection from {peer}: {why}"),
    );
    auth::refuse(sock, &why);
    false
}

fn greet(sock: TcpStream, routes: &Routes, slot: Slot) {
    let _ = sock.set_read_timeout(Some(HELLO_TIMEOUT));
    // The admin plane answers on the node's address too: frames open with `LSW1`,
    // HTTP requests with a method.
    if let Some(admin) = &routes.admin {
        let mut first = [0u8; 4];
        let mut seen = 0;
        let deadline = std::time::Instant::now() + HELLO_TIMEOUT;
        while seen < first.len() {
            if std::time::Instant::now() >= deadline {
                return;
            }
            match sock.peek(&mut first) {
                Ok(0) | Err(_) => return,
                Ok(n) if n == seen => std::thread::sleep(Duration::from_millis(2)),
                Ok(n) => seen = n,
            }
        }
        if crate::server::admin::is_http(&first) {
            let _ = sock.set_read_timeout(None);
            drop(slot);
            return admin.hand(sock);
        }
    }
    let mut decoder = FrameDecoder::limit_bodies(HELLO_BODY_BYTES_MAX);
    let mut authed: Option<NodeId> = None;
    // After the handshake the hello may already be in the decoder.
    let mut buffered = false;
    let (id, stream_name, peer) = loop {
        if !std::mem::take(&mut buffered) {
            match decoder.read_from(&mut &sock) {
                Ok(0) if decoder.buffered() > 0 => {
                    return refuse(
                        &sock,
                        RequestId(0),
                        ErrorCode::Malformed,
                        "the connection ended inside a frame",
                    );
                }
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        match decoder.next_frame() {
            Ok(None) => continue,
            Err(e) => return refuse(&sock, RequestId(0), ErrorCode::Malformed, &e.to_string()),
            Ok(Some(f)) => match f.message {
                Message::ClientHello { stream } => break (f.id, stream.to_string(), None),
                Message::AuthHello { node_id, nonce } => {
                    let nonce = *nonce;
                    if authed.is_some() {
                        return refuse(&sock, f.id, ErrorCode::Unexpected, "a second AuthHello");
                    }
                    match auth::accept(&sock, &mut decoder, routes.secret.as_ref(), node_id, &nonce)
                    {
                        Ok(()) => {
                            authed = Some(node_id);
                            buffered = true;
                        }
                        Err(e) => {
                            let peer = sock
                                .peer_addr()
                                .map_or_else(|_| "?".to_string(), |a| a.to_string());
                            auth::log_refusal(
                                &format!("from node {node_id}"),
                                &format!("refused node {node_id} from {peer}: {e}"),
                            );
                            let _ = sock.shutdown(std::net::Shutdown::Both);
                            return;
                        }
                    }
                }
                Message::JoinRequest { node_id, addr } => {
                    let addr = addr.to_string();
                    drop(slot);
                    return join(sock, routes, authed, f.id, node_id, addr);
                }
                Message::PeerHello {
                    stream,
                    node_id,
                    epoch,
                } => {
                    if !admitted(&sock, routes, authed, node_id) {
                        return;
                    }
                    break (f.id, stream.to_string(), Some((node_id, epoch)));
                }
                Message::ControlHello {
                    node_id,
                    incarnation,
                    addr,
                } => {
                    if !admitted(&sock, routes, authed, node_id) {
                        return;
                    }
                    let (Some(control), Some(ids)) =
                        (routes.control.clone(), routes.identities.as_ref())
                    else {
                        return refuse(
                            &sock,
                            f.id,
                            ErrorCode::Unexpected,
                            "this node runs no controller",
                        );
                    };
                    let hello = Hello {
                        id: f.id,
                        node: node_id,
                        incarnation,
                        addr: addr.map(str::to_string),
                    };
                    drop(slot);
                    return control_hello(sock, decoder, ids, control, routes, hello);
                }
                other => {
                    let msg = format!("expected a hello first, got {}", other.kind());
                    return refuse(&sock, f.id, ErrorCode::Unexpected, &msg);
                }
            },
        }
    };
    let Some(stream) = routes.streams.iter().position(|(n, _)| *n == stream_name) else {
        return refuse(
            &sock,
            id,
            ErrorCode::UnknownStream,
            &format!("no stream {stream_name:?} on this node"),
        );
    };
    let _ = sock.set_read_timeout(None);
    decoder.lift_body_limit();
    drop(slot);
    let shard = routes.streams[stream].1;
    let stream = routes.local[stream];
    let h = match peer {
        None => Handoff::Client {
            stream,
            sock,
            decoder,
            hello: id,
        },
        Some((from, epoch)) => Handoff::FromPrimary {
            stream,
            sock,
            decoder,
            hello: id,
            from,
            epoch,
        },
    };
    // A full queue means the shard is overwhelmed: the connection is dropped.
    let _ = routes.shards[shard].try_send(h);
}

/// A `ControlHello`: request `id` of process `incarnation` of `node`, serving at
/// `addr`.
struct Hello {
    id: RequestId,
    node: NodeId,
    incarnation: u64,
    addr: Option<String>,
}

/// A control greeting: the node id is given to the greeting process (answered
/// `ControlWelcome`, and its `Control` frames read), or refused with one line here and
/// an `Error` there.
fn control_hello(
    sock: TcpStream,
    mut decoder: FrameDecoder,
    ids: &Arc<Identities>,
    control: SyncSender<ToControl>,
    routes: &Routes,
    hello: Hello,
) {
    let Hello {
        id,
        node,
        incarnation,
        addr,
    } = hello;
    let peer = sock
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let lease = match ids.claim(node, incarnation, addr.as_deref(), &sock) {
        Ok(lease) => lease,
        Err(Refusal::InUse(in_use)) => {
            identity::log_refusal(
                node,
                incarnation,
                &format!(
                    "refused a second process of node {node} (incarnation {incarnation}, \
                     serving at {}, from {peer}): {in_use}",
                    addr.as_deref().unwrap_or("an address it did not say")
                ),
            );
            return refuse(&sock, id, ErrorCode::IdInUse, &in_use.to_string());
        }
        Err(Refusal::Full(why)) => {
            identity::log_refusal(
                node,
                incarnation,
                &format!("refused the control connection of node {node} from {peer}: {why}"),
            );
            return refuse(&sock, id, ErrorCode::Overloaded, &why);
        }
    };
    let mut out = Vec::new();
    let welcome = Message::ControlWelcome {
        node_id: ids.node_id(),
        incarnation: ids.incarnation(),
    };
    if welcome.encode_into(id, &mut out).is_err() || (&sock).write_all(&out).is_err() {
        return;
    }
    let _ = sock.set_read_timeout(None);
    decoder.lift_body_limit();
    let budget = Budget::new(Arc::clone(&routes.control_budget), ids.is_member(node));
    crate::server::control_link::read_peer(lease, sock, decoder, control, budget);
}

/// A new node's request to join: only after the handshake, and only in a cluster with
/// a secret and a controller. Answers `Joined` with the cluster's configuration once
/// the join is committed.
fn join(
    sock: TcpStream,
    routes: &Routes,
    authed: Option<NodeId>,
    id: RequestId,
    node: NodeId,
    addr: String,
) {
    let peer = sock
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    if routes.secret.is_none() {
        let why = "this cluster has no secret: nodes join only clusters with a secret_file";
        tracing::warn!(peer = %peer, "refused the join of node {node} from {peer}: {why}");
        return auth::refuse(&sock, why);
    }
    if !admitted(&sock, routes, authed, node) {
        return;
    }
    let Some(control) = &routes.control else {
        return refuse(
            &sock,
            id,
            ErrorCode::Unexpected,
            "this node runs no controller: nodes join clusters with a [control] section",
        );
    };
    if routes.joins.fetch_add(1, Ordering::AcqRel) >= JOINS_PENDING_MAX {
        routes.joins.fetch_sub(1, Ordering::AcqRel);
        return refuse(
            &sock,
            id,
            ErrorCode::Unavailable,
            &format!("{JOINS_PENDING_MAX} joins wait for their commit already; ask again"),
        );
    }
    wait_for_join(&sock, control, id, node, &addr, &peer);
    routes.joins.fetch_sub(1, Ordering::AcqRel);
}

/// Asks the control loop for the join and answers the joiner.
fn wait_for_join(
    sock: &TcpStream,
    control: &SyncSender<ToControl>,
    id: RequestId,
    node: NodeId,
    addr: &str,
    peer: &str,
) {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let asked = ToControl::Join {
        node,
        addr: addr.to_string(),
        reply: tx,
    };
    if control.send(asked).is_err() {
        return refuse(sock, id, ErrorCode::Unavailable, "the node is stopping");
    }
    match rx.recv_timeout(JOIN_WAIT) {
        Ok(Ok(config)) => {
            tracing::info!(
                joined = node,
                "node {node} at {addr} joined the cluster (from {peer})"
            );
            let mut out = Vec::new();
            if (Message::Joined { config: &config })
                .encode_into(id, &mut out)
                .is_ok()
            {
                let _ = (&*sock).write_all(&out);
            }
        }
        Ok(Err(refused)) => {
            tracing::warn!(
                joining = node,
                "the join of node {node} at {addr} failed: {}",
                refused.why
            );
            // `Unexpected` tells the joiner not to ask again; `Unavailable`, to retry.
            let code = if refused.never {
                ErrorCode::Unexpected
            } else {
                ErrorCode::Unavailable
            };
            refuse(sock, id, code, &refused.why);
        }
        Err(_) => refuse(
            sock,
            id,
            ErrorCode::Unavailable,
            "the join was not committed in time",
        ),
    }
}
