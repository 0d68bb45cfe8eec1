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
use crate::wire::{FrameDecoder, Message, RequestId};

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

pub fn spawn(d: Dial) {
    let spawned = std::thread::Builder::new()
        .name("lockstep-dial".into())
        .spawn(move || {
            let (stream, member) = (d.stream, d.member);
            let reply = d.reply.clone();
            let h = match handshake(&d) {
                Ok(h) => h,
                Err(e) => {
                    if !e.is_empty() {
                        tracing::warn!(
                            stream = %d.stream_name,
                            member = d.member,
                            "member {} at {}: {e}",
                            d.member,
                            d.addr
                        );
                    }
                    Handoff::DialFailed { stream, member }
                }
            };
            // The shard may be gone (shutdown): nothing to do then.
            let _ = reply.send(h);
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start a dialer thread: {e}");
    }
}

fn handshake(d: &Dial) -> Result<Handoff, String> {
    let addr = d
        .addr
        .to_socket_addrs()
        .map_err(|e| format!("resolve: {e}"))?
        .next()
        .ok_or_else(|| "resolves to no address".to_string())?;
    // A refused connection is the normal state of a member that is down: not logged.
    let sock = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|_| String::new())?;
    sock.set_nodelay(true).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(|e| e.to_string())?;
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
                // Logged (at a bounded rate) here.
                String::new()
            }
            AuthError::Io(why) => why,
        })?;
    }
    let mut out = Vec::new();
    Message::PeerHello {
        stream: &d.stream_name,
        node_id: d.node_id,
        epoch: d.epoch,
    }
    .encode_into(RequestId(1), &mut out)
    .map_err(|e| e.to_string())?;
    (&sock)
        .write_all(&out)
        .map_err(|e| format!("send hello: {e}"))?;
    loop {
        let n = decoder.read_from(&mut &sock).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                format!("no answer to the hello within {HANDSHAKE_TIMEOUT:?}")
            }
            _ => format!("handshake: {e}"),
        })?;
        if n == 0 {
            return Err("closed during the handshake".into());
        }
        let frame = match decoder.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            Err(e) => return Err(format!("handshake: {e}")),
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
                return Err(format!(
                    "refused the connection (epoch {epoch}, log ends at {last_lsn}): {reason}"
                ));
            }
            other => return Err(format!("answered the hello with {}", other.kind())),
        };
        sock.set_read_timeout(None).map_err(|e| e.to_string())?;
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
