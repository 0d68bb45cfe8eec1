//! Outgoing peer connections: a primary's shard asks for a link to a member; a short
//! thread connects, greets with `PeerHello`, waits for `PeerWelcome` and hands the
//! ready link to the shard. Blocking connects never stall a shard.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::mpsc::SyncSender;
use std::time::Duration;

use crate::replication::NodeId;
use crate::server::auth::{self, AuthError, Secret};
use crate::server::shard::Handoff;
use crate::wire::{FrameDecoder, Kind, Message, RequestId, WireError};

const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Dial {
    pub stream: usize,
    pub stream_name: String,
    pub member: NodeId,
    pub addr: String,
    pub node_id: NodeId,
    pub epoch: u64,
    pub reply: SyncSender<Handoff>,
    /// The cluster secret, proved before the hello when the cluster has one.
    pub secret: Option<Secret>,
}

/// Why a dial did not give a link to the member.
#[derive(Debug, thiserror::Error)]
enum DialError {
    /// Nobody listens: the normal state of a member that is down (not logged).
    #[error("connection refused")]
    Down,
    /// The member refused this node's proof of the secret (logged where it was seen,
    /// at a bounded rate).
    #[error("the member refused this node's proof of the secret")]
    Unauthorized,
    #[error("resolve: {0}")]
    Resolve(std::io::Error),
    #[error("resolves to no address")]
    NoAddress,
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        source: std::io::Error,
    },
    #[error("{0}")]
    Handshake(String),
    #[error("no answer to the hello within {HANDSHAKE_TIMEOUT:?}")]
    Timeout,
    #[error("closed during the handshake")]
    Closed,
    #[error("handshake: {0}")]
    Wire(#[from] WireError),
    #[error("refused the connection (epoch {epoch}, log ends at {last_lsn}): {reason}")]
    Refused {
        epoch: u64,
        last_lsn: u64,
        reason: String,
    },
    #[error("answered the hello with {0}")]
    Unexpected(Kind),
}

impl DialError {
    fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> DialError {
        move |source| DialError::Io { op, source }
    }
}

pub fn spawn(d: Dial) {
    let spawned = std::thread::Builder::new()
        .name("lockstep-dial".into())
        .spawn(move || {
            let (stream, member) = (d.stream, d.member);
            let reply = d.reply.clone();
            let h = match handshake(&d) {
                Ok(h) => h,
                Err(e) => {
                    if !matches!(e, DialError::Down | DialError::Unauthorized) {
                        tracing::warn!(
                            stream = %d.stream_name,
                            member = d.member,
                            "member {} at {}: {e}",
                            d.member,
                            d.addr
                        );
                    }
                    // A member that refused in a newer epoch shows this primary
                    // deposed (the driver steps down).
                    let epoch = match e {
                        DialError::Refused { epoch, .. } if epoch > d.epoch => Some(epoch),
                        _ => None,
                    };
                    Handoff::DialFailed {
                        stream,
                        member,
                        newer_epoch: epoch,
                    }
                }
            };
            // The shard may be gone (shutdown): nothing to do then.
            let _ = reply.send(h);
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start a dialer thread: {e}");
    }
}

fn handshake(d: &Dial) -> Result<Handoff, DialError> {
    let addr = d
        .addr
        .to_socket_addrs()
        .map_err(DialError::Resolve)?
        .next()
        .ok_or(DialError::NoAddress)?;
    // A refused connection is the normal state of a member that is down: not logged.
    let sock = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|_| DialError::Down)?;
    sock.set_nodelay(true)
        .map_err(DialError::io("set TCP_NODELAY"))?;
    sock.set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(DialError::io("set a read timeout"))?;
    let mut decoder = FrameDecoder::new();
    if let Some(secret) = &d.secret {
        auth::dial(&sock, &mut decoder, secret, d.node_id).map_err(|e| match e {
            AuthError::Refused(why) => {
                auth::log_refusal(
                    &format!("to node {}", d.member),
                    &format!(
                        "stream {}: member {} at {} refused this node: {why}",
                        d.stream_name, d.member, d.addr
                    ),
                );
                DialError::Unauthorized
            }
            AuthError::Io(why) => DialError::Handshake(why),
        })?;
    }
    let mut out = Vec::new();
    Message::PeerHello {
        stream: &d.stream_name,
        node_id: d.node_id,
        epoch: d.epoch,
    }
    .encode_into(RequestId(1), &mut out)?;
    (&sock)
        .write_all(&out)
        .map_err(DialError::io("send hello"))?;
    loop {
        let n = decoder.read_from(&mut &sock).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => DialError::Timeout,
            _ => DialError::Io {
                op: "handshake",
                source: e,
            },
        })?;
        if n == 0 {
            return Err(DialError::Closed);
        }
        let frame = match decoder.next_frame()? {
            Some(f) => f,
            None => continue,
        };
        let (last_lsn, last_epoch, durable_lsn) = match frame.message {
            Message::PeerWelcome {
                last_lsn,
                last_epoch,
                durable_lsn,
                ..
            } => (last_lsn, last_epoch, durable_lsn),
            Message::Refuse {
                reason,
                last_lsn,
                epoch,
            } => {
                return Err(DialError::Refused {
                    epoch,
                    last_lsn,
                    reason: reason.to_string(),
                });
            }
            other => return Err(DialError::Unexpected(other.kind())),
        };
        sock.set_read_timeout(None)
            .map_err(DialError::io("clear the read timeout"))?;
        return Ok(Handoff::ToMember {
            stream: d.stream,
            member: d.member,
            sock,
            decoder,
            last_lsn,
            last_epoch,
            durable_lsn,
        });
    }
}
