//! A new node joining a running cluster (a configuration with `join = [seeds]`).
//!
//! On its first start the node dials the seeds in turn, proves it knows the cluster
//! secret ([`crate::server::auth`]), and asks to join with its id and address. The
//! member it reached has its controller commit the join (the node becomes a learner
//! of the raft group and of every stream) and answers with the cluster's
//! configuration, which the node keeps in `control/CLUSTER` in its data directory and
//! starts from: the same streams, settings and voters as every other node. From then
//! on it is a member like the others: the primaries send it the log from its start,
//! and each puts it into its sync set once it holds everything committed.
//!
//! A later start finds `control/CLUSTER` and does not join again. A wrong secret, a
//! node id that the cluster knows at another address, or a cluster without a secret
//! stops the node with the reason; seeds that cannot be reached are tried again until
//! [`JOIN_DEADLINE`].

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::control::ClusterConfig;
use crate::server::ServerError;
use crate::server::auth::{self, AuthError};
use crate::server::config::Config;
use crate::wire::{ErrorCode, FrameDecoder, Message, RequestId};

/// How long a new node keeps trying its seeds.
pub const JOIN_DEADLINE: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A join commits within the member's own wait (12 s) or is refused.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// Why one attempt failed.
enum Attempt {
    /// Trying again (another seed, later) may work.
    Retry(String),
    /// It never will: the node stops.
    Fatal(String),
}

/// Joins the cluster of `cfg.join`, or takes the configuration of an earlier join,
/// and makes `cfg` that cluster's. Nothing to do for a configured member.
pub fn join_cluster(cfg: &mut Config) -> Result<(), ServerError> {
    if cfg.join.is_empty() {
        return Ok(());
    }
    let path = cfg.data_dir.join("control").join("CLUSTER");
    let cluster = match std::fs::read(&path) {
        Ok(bytes) => ClusterConfig::decode(&bytes)
            .map_err(|e| ServerError::Setup(format!("{}: {e}", path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let cluster = ask(cfg)?;
            store(&path, &cluster.encode()).map_err(|e| {
                ServerError::Setup(format!(
                    "store the joined configuration in {}: {e}",
                    path.display()
                ))
            })?;
            cluster
        }
        Err(e) => return Err(ServerError::Setup(format!("read {}: {e}", path.display()))),
    };
    cfg.adopt(cluster).map_err(ServerError::Setup)
}

fn ask(cfg: &Config) -> Result<ClusterConfig, ServerError> {
    let secret = cfg
        .secret
        .as_ref()
        .ok_or_else(|| ServerError::Setup("join: no secret_file".into()))?;
    let deadline = Instant::now() + JOIN_DEADLINE;
    let mut last = String::new();
    while Instant::now() < deadline {
        for seed in &cfg.join {
            match attempt(cfg, secret, seed) {
                Ok(cluster) => {
                    tracing::info!(
                        node = cfg.node_id,
                        "node {} joined the cluster through {seed}: {} members, {} streams",
                        cfg.node_id,
                        cluster.members.len(),
                        cluster.streams.len()
                    );
                    return Ok(cluster);
                }
                Err(Attempt::Fatal(why)) => {
                    return Err(ServerError::Setup(format!("join through {seed}: {why}")));
                }
                Err(Attempt::Retry(why)) => {
                    tracing::warn!(node = cfg.node_id, "join through {seed}: {why}; trying on");
                    last = format!("{seed}: {why}");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(ServerError::Setup(format!(
        "join: no seed admitted node {} within {JOIN_DEADLINE:?} (last: {last})",
        cfg.node_id
    )))
}

fn attempt(cfg: &Config, secret: &auth::Secret, seed: &str) -> Result<ClusterConfig, Attempt> {
    let retry = |e: String| Attempt::Retry(e);
    let addr = seed
        .to_socket_addrs()
        .map_err(|e| retry(format!("resolve: {e}")))?
        .next()
        .ok_or_else(|| retry("resolves to no address".into()))?;
    let sock = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|e| retry(format!("connect: {e}")))?;
    let _ = sock.set_nodelay(true);
    let _ = sock.set_read_timeout(Some(ANSWER_TIMEOUT));
    let mut decoder = FrameDecoder::new();
    auth::dial(&sock, &mut decoder, secret, cfg.node_id).map_err(|e| match e {
        AuthError::Refused(why) => Attempt::Fatal(format!("refused: {why}")),
        AuthError::Io(why) => retry(why),
    })?;
    let mut out = Vec::new();
    Message::JoinRequest {
        node_id: cfg.node_id,
        addr: &cfg.advertise,
    }
    .encode_into(RequestId(1), &mut out)
    .map_err(|e| Attempt::Fatal(format!("advertise = {:?}: {e}", cfg.advertise)))?;
    (&sock)
        .write_all(&out)
        .map_err(|e| retry(format!("send the join: {e}")))?;
    loop {
        match decoder.next_frame() {
            Ok(Some(f)) => {
                return match f.message {
                    Message::Joined { config } => ClusterConfig::decode(config)
                        .map_err(|e| retry(format!("the member sent a bad configuration: {e}"))),
                    // A wrong secret, a node id taken at another address, a seed
                    // without a controller: asking again cannot succeed.
                    Message::Error {
                        code: ErrorCode::Unauthorized | ErrorCode::Unexpected,
                        message,
                    } => Err(Attempt::Fatal(format!("refused: {message}"))),
                    Message::Error { code, message } => {
                        Err(retry(format!("{}: {message}", code.as_str())))
                    }
                    other => Err(retry(format!("answered the join with {}", other.kind()))),
                };
            }
            Ok(None) => {}
            Err(e) => return Err(retry(format!("answer: {e}"))),
        }
        match decoder.read_from(&mut &sock) {
            Ok(0) => return Err(retry("closed before answering the join".into())),
            Ok(_) => {}
            Err(e) => return Err(retry(format!("no answer to the join: {e}"))),
        }
    }
}

fn store(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    lockstep_sys::file::sync_dir(dir)
}
