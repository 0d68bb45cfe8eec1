//! The admin plane: HTTP/1.1 served by hyper on one thread with a current-thread tokio
//! runtime, on the `admin` address and on the node's own listener (the acceptor hands
//! over connections that open with an HTTP method; frames open with `LSW1`), so that
//! the CLI needs only the nodes' addresses.
//!
//! | path | what |
//! |---|---|
//! | `GET /metrics` | Prometheus text (format 0.0.4) |
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /ready` | 200 when the node serves every stream (see [`readiness`]), else 503 with the reasons |
//! | `GET /v1/status` | the node: id, version, readiness, every stream's status |
//! | `GET /v1/members` | the controller's view of the cluster, with its age |
//! | `GET /v1/fronts` | the database fronts of this node |
//! | `POST /v1/switchover?stream=S&to=N[&timeout_ms=T]` | moves the primary role and answers with the outcome |
//!
//! `/members`, `/fronts` and `POST /switchover` are the old names of the `/v1` paths.
//!
//! Bounds: at most [`CONNECTIONS_MAX`] connections at once (more are closed at once),
//! a request head of at most [`HEAD_BYTES_MAX`] (hyper answers 431 and closes: a
//! request line of 100 MB costs no more memory than that), [`HEAD_TIMEOUT`] to send
//! it, [`CONNECTION_TIME_MAX`] per connection; request bodies are never read.
//!
//! Authentication: mutating endpoints need `Authorization: Bearer TOKEN`, the token
//! of [`crate::server::auth::admin_token`] (derived from the cluster secret) or the
//! first line of `admin_token_file`. A node with neither refuses them.

use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::control;
use crate::replication::NodeId;
use crate::server::Shared;
use crate::server::control_loop::ToControl;
use crate::server::metrics::{StreamShape, readiness};

/// Connections served at once; more are closed as they arrive.
pub const CONNECTIONS_MAX: usize = 64;
/// Bytes of a request head (request line and headers); hyper's floor is 8 KiB.
pub const HEAD_BYTES_MAX: usize = 16 << 10;
/// Time to send a request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a connection may stay open, keep-alive included.
pub const CONNECTION_TIME_MAX: Duration = Duration::from_secs(120);
/// Connections from the node's listener waiting for the admin thread.
const HANDOFF_QUEUE: usize = 64;
/// Longest a switchover may be waited for.
pub const SWITCHOVER_TIMEOUT_MAX: Duration = Duration::from_secs(60);
/// Default wait of a switchover.
pub const SWITCHOVER_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// What the handlers need of the node.
pub struct Admin {
    pub node: NodeId,
    pub shared: Arc<Shared>,
    pub control: Option<SyncSender<ToControl>>,
    pub registry: prometheus::Registry,
    pub shapes: Vec<StreamShape>,
    /// The bearer token of mutating endpoints (`None`: they are refused). SIGHUP may
    /// change it.
    pub token: RwLock<Option<String>>,
}

/// Hands connections of the node's listener to the admin thread.
#[derive(Clone)]
pub struct Inbox(tokio::sync::mpsc::Sender<std::net::TcpStream>);

impl Inbox {
    /// Queues a connection whose first bytes are an HTTP request; closes it if the
    /// admin thread is saturated.
    pub fn hand(&self, sock: std::net::TcpStream) {
        if let Err(tokio::sync::mpsc::error::TrySendError::Full(s)) = self.0.try_send(sock) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Whether the first bytes of a connection are an HTTP request.
pub fn is_http(first: &[u8]) -> bool {
    [
        &b"GET "[..],
        b"POST",
        b"HEAD",
        b"PUT ",
        b"DELE",
        b"OPTI",
        b"PATC",
    ]
    .iter()
    .any(|m| first.starts_with(m))
}

/// Starts the admin thread; `listener` is the `admin` address, if configured.
pub fn start(
    listener: Option<TcpListener>,
    admin: Arc<Admin>,
) -> std::io::Result<(Inbox, std::thread::JoinHandle<()>)> {
    let (tx, rx) = tokio::sync::mpsc::channel(HANDOFF_QUEUE);
    if let Some(l) = &listener {
        l.set_nonblocking(true)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let thread = std::thread::Builder::new()
        .name("lockstep-admin".into())
        .spawn(move || runtime.block_on(serve_all(listener, rx, admin)))?;
    Ok((Inbox(tx), thread))
}

async fn serve_all(
    listener: Option<TcpListener>,
    mut inbox: tokio::sync::mpsc::Receiver<std::net::TcpStream>,
    admin: Arc<Admin>,
) {
    let listener = match listener.map(tokio::net::TcpListener::from_std).transpose() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(node = admin.node, "admin endpoint: {e}");
            None
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut inbox_open = true;
    loop {
        let sock = tokio::select! {
            accepted = accept(listener.as_ref()) => match accepted {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(node = admin.node, "admin accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            handed = inbox.recv(), if inbox_open => match handed.map(|s| {
                s.set_nonblocking(true)?;
                tokio::net::TcpStream::from_std(s)
            }) {
                Some(Ok(s)) => s,
                Some(Err(_)) => continue,
                // The acceptor stopped (the node is stopping).
                None => {
                    inbox_open = false;
                    continue;
                }
            },
            _ = tick.tick() => {
                if admin.shared.shutdown.load(Ordering::Relaxed) {
                    return;
                }
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!(
                node = admin.node,
                "admin endpoint: {CONNECTIONS_MAX} connections open; one more closed"
            );
            drop(sock);
            continue;
        };
        let admin = Arc::clone(&admin);
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(sock);
            let service = hyper::service::service_fn(move |req| {
                let admin = Arc::clone(&admin);
                async move { Ok::<_, std::convert::Infallible>(handle(&admin, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .max_buf_size(HEAD_BYTES_MAX)
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(io, service);
            let _ = tokio::time::timeout(CONNECTION_TIME_MAX, conn).await;
            drop(permit);
        });
    }
}

async fn accept(l: Option<&tokio::net::TcpListener>) -> std::io::Result<tokio::net::TcpStream> {
    match l {
        Some(l) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, content_type: &str, body: String) -> Answer {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a response of valid parts")
}

fn json_answer(status: StatusCode, v: &serde_json::Value) -> Answer {
    answer(status, "application/json", format!("{v}\n"))
}

fn error(status: StatusCode, message: impl Into<String>) -> Answer {
    json_answer(status, &json!({ "error": message.into() }))
}

/// `key=value` pairs of a query string (no percent-decoding: names and numbers only).
fn query(req: &Request<hyper::body::Incoming>) -> Vec<(String, String)> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn handle(admin: &Admin, req: Request<hyper::body::Incoming>) -> Answer {
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/metrics") => answer(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            crate::server::metrics::render(&admin.registry),
        ),
        (&Method::GET, "/healthz") => answer(StatusCode::OK, "text/plain", "ok\n".into()),
        (&Method::GET, "/ready") => {
            let r = readiness(&admin.shared.streams(), &admin.shapes);
            if r.ready {
                answer(StatusCode::OK, "text/plain", "ready\n".into())
            } else {
                let mut body = r.reasons.join("\n");
                body.push('\n');
                answer(StatusCode::SERVICE_UNAVAILABLE, "text/plain", body)
            }
        }
        (&Method::GET, "/v1/status") => json_answer(StatusCode::OK, &node_status(admin)),
        (&Method::GET, "/v1/members" | "/members") => members(admin),
        (&Method::GET, "/v1/fronts" | "/fronts") => json_answer(
            StatusCode::OK,
            &serde_json::Value::Array(admin.shared.fronts.iter().map(|f| f.to_json()).collect()),
        ),
        (&Method::POST, "/v1/switchover" | "/switchover") => {
            if let Err(refused) = authorize(admin, &req) {
                return refused;
            }
            let q = query(&req);
            let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
            let (Some(stream), Some(to)) = (get("stream"), get("to").and_then(|v| v.parse().ok()))
            else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "expected /v1/switchover?stream=NAME&to=NODE[&timeout_ms=MS]",
                );
            };
            let timeout = get("timeout_ms")
                .and_then(|v| v.parse().ok())
                .map_or(SWITCHOVER_TIMEOUT_DEFAULT, Duration::from_millis)
                .min(SWITCHOVER_TIMEOUT_MAX);
            let (status, body) = if matches!(get("db"), Some("1" | "true")) {
                db_switchover(admin, stream, to).await
            } else {
                switchover(admin, stream, to, timeout).await
            };
            json_answer(status, &body)
        }
        (_, "/metrics" | "/healthz" | "/ready" | "/v1/status" | "/v1/members" | "/members")
        | (_, "/v1/fronts" | "/fronts" | "/v1/switchover" | "/switchover") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} {path}: wrong method", req.method()),
        ),
        _ => error(StatusCode::NOT_FOUND, format!("no such path: {path}")),
    }
}

fn members(admin: &Admin) -> Answer {
    match members_view(&admin.shared) {
        Some(v) => json_answer(StatusCode::OK, &v),
        None => error(
            StatusCode::CONFLICT,
            "this node runs no controller: no [control] section",
        ),
    }
}

/// Checks the bearer token of a mutating request.
fn authorize(admin: &Admin, req: &Request<hyper::body::Incoming>) -> Result<(), Answer> {
    let token = admin.token.read().expect("token lock").clone();
    let Some(token) = token else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "this node has no admin token: configure secret_file or admin_token_file",
        ));
    };
    let given = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if crate::server::auth::same_token(g.trim(), &token) => Ok(()),
        Some(_) => {
            tracing::warn!(
                node = admin.node,
                "admin endpoint: a request with a wrong token refused"
            );
            Err(error(StatusCode::UNAUTHORIZED, "wrong admin token"))
        }
        None => Err(error(
            StatusCode::UNAUTHORIZED,
            "this endpoint needs the admin token (Authorization: Bearer TOKEN; \
             the CLI sends it with --secret-file or --token-file)",
        )),
    }
}

/// The node's own view: id, version, readiness and each stream's status.
pub fn node_status(admin: &Admin) -> serde_json::Value {
    let streams = admin.shared.streams();
    let r = readiness(&streams, &admin.shapes);
    let view = admin.shared.members.lock().expect("members lock").clone();
    json!({
        "node": admin.node,
        "version": env!("CARGO_PKG_VERSION"),
        "ready": r.ready,
        "not_ready": r.reasons,
        "controller": view.as_ref().map(|v| json!({"leader": v["leader"], "term": v["term"]})),
        "streams": streams.iter().map(|s| s.to_json()).collect::<Vec<_>>(),
    })
}

/// The controller's view with its age (`age_ms`: since the control loop published it).
pub fn members_view(shared: &Shared) -> Option<serde_json::Value> {
    let mut v = shared.members.lock().expect("members lock").clone()?;
    let now = unix_ms();
    let published = v["published_unix_ms"].as_u64().unwrap_or(now);
    v["age_ms"] = json!(now.saturating_sub(published));
    Some(v)
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where a switchover stands in a members view.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// `to` is the primary in a newer epoch.
    Done {
        epoch: u64,
    },
    Pending {
        primary: u64,
        epoch: u64,
    },
    /// Another node became primary meanwhile.
    Lost {
        primary: u64,
        epoch: u64,
    },
}

/// Why a switchover cannot start, from the members view; else the epoch it starts from.
pub fn switchover_check(
    view: &serde_json::Value,
    stream: &str,
    to: NodeId,
) -> Result<u64, (StatusCode, String)> {
    let roles = &view["config"]["streams"][stream];
    if roles.is_null() {
        let known: Vec<&String> = view["config"]["streams"]
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        return Err((
            StatusCode::NOT_FOUND,
            format!("no stream {stream:?} in the cluster (streams: {known:?})"),
        ));
    }
    let to64 = u64::from(to);
    let is_member = view["config"]["members"]
        .as_object()
        .is_some_and(|m| m.contains_key(&to.to_string()));
    if !is_member {
        return Err((
            StatusCode::CONFLICT,
            format!("node {to} is not a member of the cluster"),
        ));
    }
    let epoch = roles["epoch"].as_u64().unwrap_or(0);
    if roles["primary"].as_u64() == Some(to64) {
        return Err((
            StatusCode::CONFLICT,
            format!("node {to} is already the primary of {stream} (epoch {epoch})"),
        ));
    }
    let in_sync_set = roles["sync_set"]
        .as_array()
        .is_some_and(|s| s.iter().any(|m| m.as_u64() == Some(to64)));
    if !in_sync_set {
        return Err((
            StatusCode::CONFLICT,
            format!(
                "node {to} is not in the sync set of {stream} (sync set {}, learners {}): \
                 only a sync member is known to hold every commit",
                roles["sync_set"], roles["learners"]
            ),
        ));
    }
    if view["leader"].is_null() {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "the controller has no leader now: ask again once one is elected".into(),
        ));
    }
    Ok(epoch)
}

/// How long a switchover's checks may wait for the published view to catch up before
/// a refusal stands.
const SWITCHOVER_CHECK_WAIT: Duration = Duration::from_millis(500);

/// How many times a switchover is asked again from a newer primary that appeared
/// meanwhile before it is given up as lost.
const SWITCHOVER_REBASES_MAX: u32 = 3;

/// Where the switchover of `stream` to `to`, asked in `epoch0`, stands.
pub fn switchover_progress(
    view: &serde_json::Value,
    stream: &str,
    to: NodeId,
    epoch0: u64,
) -> Progress {
    let roles = &view["config"]["streams"][stream];
    let primary = roles["primary"].as_u64().unwrap_or(0);
    let epoch = roles["epoch"].as_u64().unwrap_or(0);
    if epoch > epoch0 && primary == u64::from(to) {
        Progress::Done { epoch }
    } else if epoch > epoch0 {
        Progress::Lost { primary, epoch }
    } else {
        Progress::Pending { primary, epoch }
    }
}

/// Asks the controller to move `stream`'s primary role to `to` and waits for the
/// outcome: (HTTP status, JSON body).
/// Moves the database primary of `stream` to the server beside node `to`
/// (`front::db_failover::switchover`), on a thread of its own: it talks to MariaDB.
async fn db_switchover(admin: &Admin, stream: &str, to: NodeId) -> (StatusCode, serde_json::Value) {
    let Some((_, front)) = admin
        .shared
        .front_settings
        .iter()
        .find(|(n, _)| n == stream)
    else {
        return (
            StatusCode::NOT_FOUND,
            json!({"error": format!("stream {stream:?} has no front on this node")}),
        );
    };
    if front.db.is_none() || admin.control.is_none() {
        return (
            StatusCode::CONFLICT,
            json!({"error": format!(
                "stream {stream:?}: a database switchover needs the front's members and a \
                 [control] section"
            )}),
        );
    }
    let (front, coordinator, stream) = (
        front.clone(),
        Arc::clone(&admin.shared.coordinator),
        stream.to_owned(),
    );
    tracing::info!(node = admin.node, stream = %stream, to, "database switchover asked");
    let done = tokio::task::spawn_blocking(move || {
        let stop = std::sync::atomic::AtomicBool::new(false);
        let ctx = crate::front::db_failover::Context {
            stream: &stream,
            front: &front,
            coordinator: coordinator.as_ref(),
            stop: &stop,
        };
        let result = crate::front::db_failover::switchover(&ctx, to);
        (result, stream)
    })
    .await;
    match done {
        Ok((Ok(times), stream)) => {
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            let fenced = times.fenced();
            tracing::info!(
                stream = %stream,
                to,
                fenced_ms = ms(fenced),
                ready_ms = ms(times.ready),
                fence_ms = ms(times.fence),
                drain_ms = ms(times.drain),
                apply_ms = ms(times.apply),
                commit_ms = ms(times.commit),
                "database switchover done"
            );
            (
                StatusCode::OK,
                json!({"stream": stream, "db_primary": to, "fenced_ms": fenced.as_secs_f64() * 1e3}),
            )
        }
        Ok((Err(e), stream)) => {
            tracing::warn!(stream = %stream, to, "database switchover failed: {e}");
            (StatusCode::CONFLICT, json!({"error": e.to_string()}))
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": format!("the switchover's thread: {e}")}),
        ),
    }
}

async fn switchover(
    admin: &Admin,
    stream: &str,
    to: NodeId,
    timeout: Duration,
) -> (StatusCode, serde_json::Value) {
    let Some(control) = &admin.control else {
        return (
            StatusCode::CONFLICT,
            json!({"error": "this node runs no controller: switchover needs a [control] section"}),
        );
    };
    let started = Instant::now();
    // The published view may lag the committed configuration by a moment (a node just
    // back in the sync set, a leader just elected): a refusal stands once the view
    // still says so after SWITCHOVER_CHECK_WAIT.
    let (view, mut epoch0) = loop {
        let Some(view) = members_view(&admin.shared) else {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "the controller has not published its view yet: ask again"}),
            );
        };
        match switchover_check(&view, stream, to) {
            Ok(e) => break (view, e),
            Err(_) if started.elapsed() < SWITCHOVER_CHECK_WAIT => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err((status, why)) => {
                tracing::info!(node = admin.node, stream, to, "switchover refused: {why}");
                return (status, json!({ "error": why }));
            }
        }
    };
    let mut rebased = 0;
    let from = view["config"]["streams"][stream]["primary"].clone();
    tracing::info!(
        node = admin.node,
        stream,
        to,
        epoch = epoch0,
        "switchover asked"
    );
    let mut asked = None::<Instant>;
    loop {
        if asked.is_none_or(|t| t.elapsed() >= Duration::from_millis(500)) {
            asked = Some(Instant::now());
            let r = control.try_send(ToControl::Request(control::Request::Switchover {
                stream: stream.to_string(),
                to,
            }));
            if r.is_err() {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": "the node's control loop is busy: ask again"}),
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        let Some(view) = members_view(&admin.shared) else {
            continue;
        };
        let took_ms = started.elapsed().as_millis() as u64;
        match switchover_progress(&view, stream, to, epoch0) {
            Progress::Done { epoch } => {
                tracing::info!(
                    node = admin.node,
                    stream,
                    to,
                    epoch,
                    took_ms,
                    "switchover done"
                );
                return (
                    StatusCode::OK,
                    json!({"stream": stream, "from": from, "to": to, "epoch": epoch, "took_ms": took_ms}),
                );
            }
            // The view the request was decided on may have been a moment old (it is
            // published, not read from raft): another primary in a newer epoch, seen
            // first now, is asked again from, a few times.
            Progress::Lost { primary, epoch } if rebased < SWITCHOVER_REBASES_MAX => {
                tracing::info!(
                    node = admin.node,
                    stream,
                    to,
                    epoch,
                    "switchover: node {primary} is the primary in epoch {epoch} now; asking again"
                );
                rebased += 1;
                epoch0 = epoch;
                asked = None;
            }
            Progress::Lost { primary, epoch } => {
                return (
                    StatusCode::CONFLICT,
                    json!({"error": format!(
                        "node {primary} became the primary of {stream} instead (epoch {epoch})"
                    )}),
                );
            }
            Progress::Pending { primary, epoch } if started.elapsed() >= timeout => {
                return (
                    StatusCode::GATEWAY_TIMEOUT,
                    json!({"error": format!(
                        "the switchover of {stream} to node {to} did not finish within {} ms: \
                         node {primary} is still the primary (epoch {epoch}); the target may \
                         still be catching up, see the controller leader's log",
                        timeout.as_millis()
                    )}),
                );
            }
            Progress::Pending { .. } => {}
        }
    }
}
