//! The listening socket: every new connection's first frame (a hello) says which stream
//! it is for; the connection is then handed to the shard that owns that stream.
//! Handshakes run on short threads so that a slow or silent peer holds up nobody.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::time::Duration;

use crate::server::Shared;
use crate::server::shard::Handoff;
use crate::wire::{ErrorCode, FrameDecoder, Message, RequestId};

const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Where each stream lives: (name, shard).
pub struct Routes {
    pub streams: Vec<(String, usize)>,
    /// Index of each stream within its shard.
    pub local: Vec<usize>,
    pub shards: Vec<SyncSender<Handoff>>,
    /// The node's control loop, when it runs a controller.
    pub control: Option<SyncSender<crate::server::control_loop::ToControl>>,
}

pub fn run(listener: TcpListener, routes: Arc<Routes>, shared: Arc<Shared>) {
    for sock in listener.incoming() {
        if shared.shutdown.load(Ordering::Relaxed) {
            return;
        }
        let Ok(sock) = sock else { continue };
        let routes = Arc::clone(&routes);
        let spawned = std::thread::Builder::new()
            .name("lockstep-hello".into())
            .spawn(move || greet(sock, &routes));
        if let Err(e) = spawned {
            eprintln!("lockstep: cannot start a handshake thread: {e}");
        }
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

fn greet(sock: TcpStream, routes: &Routes) {
    let _ = sock.set_read_timeout(Some(HELLO_TIMEOUT));
    let mut decoder = FrameDecoder::new();
    let (id, stream_name, peer) = loop {
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
        match decoder.next_frame() {
            Ok(None) => continue,
            Err(e) => return refuse(&sock, RequestId(0), ErrorCode::Malformed, &e.to_string()),
            Ok(Some(f)) => match f.message {
                Message::ClientHello { stream } => break (f.id, stream.to_string(), None),
                Message::PeerHello {
                    stream,
                    node_id,
                    epoch,
                } => break (f.id, stream.to_string(), Some((node_id, epoch))),
                Message::ControlHello { node_id, .. } => {
                    let Some(control) = routes.control.clone() else {
                        return refuse(
                            &sock,
                            f.id,
                            ErrorCode::Unexpected,
                            "this node runs no controller",
                        );
                    };
                    let _ = sock.set_read_timeout(None);
                    return crate::server::control_loop::read_peer(node_id, sock, decoder, control);
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
