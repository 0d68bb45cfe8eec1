//! One connection bound to the stream: connect, hello, welcome, and the reads that
//! wait no longer than the caller's deadline.

use std::io::{self, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::{ClientError, ClientOptions, NodeInfo};
use crate::wire::{FrameDecoder, Message, RequestId};

/// One connection bound to the stream.
pub(super) struct Conn {
    pub(super) node: NodeInfo,
    pub(super) socket: TcpStream,
    pub(super) decoder: FrameDecoder,
    /// The socket's read timeout as last set (see [`receive`]).
    pub(super) read_timeout: Option<Duration>,
    /// Request frames not yet written.
    pub(super) out: Vec<u8>,
    /// When the node last sent a frame (its welcome, at first).
    pub(super) heard_at: Instant,
}

impl Conn {
    /// Connects, sends the hello and waits for the welcome.
    pub(super) fn open(
        addr: &str,
        stream: &str,
        hello: RequestId,
        options: &ClientOptions,
    ) -> Result<Conn, ClientError> {
        let io_err = |op, source| ClientError::Io {
            addr: addr.to_owned(),
            op,
            source,
        };
        let mut socket =
            connect_tcp(addr, options.connect_timeout).map_err(|e| io_err("connect", e))?;
        let deadline = Instant::now() + options.connect_timeout;
        socket.set_nodelay(true).map_err(|e| io_err("connect", e))?;
        // A node that stops reading must not block the client for longer than a reply
        // may take.
        (socket.set_write_timeout(Some(options.timeout + options.reply_grace)))
            .map_err(|e| io_err("connect", e))?;
        let mut out = Vec::new();
        (Message::ClientHello { stream }.encode_into(hello, &mut out)).map_err(|source| {
            ClientError::Invalid {
                op: "hello",
                source,
            }
        })?;
        socket.write_all(&out).map_err(|e| io_err("hello", e))?;
        out.clear();
        let mut decoder = FrameDecoder::new();
        let mut read_timeout = None;
        loop {
            let protocol = |reason: String| ClientError::Protocol {
                addr: addr.to_owned(),
                op: "hello",
                reason,
            };
            match decoder.next_frame() {
                Err(source) => {
                    return Err(ClientError::Wire {
                        addr: addr.to_owned(),
                        op: "hello",
                        source,
                    });
                }
                Ok(Some(frame)) if frame.id != hello => {
                    return Err(protocol(format!(
                        "a reply to request {} before the welcome",
                        frame.id
                    )));
                }
                Ok(Some(frame)) => {
                    let node = match frame.message {
                        Message::Welcome {
                            node_id,
                            role,
                            epoch,
                            primary,
                        } => NodeInfo {
                            addr: addr.to_owned(),
                            node_id,
                            role,
                            epoch,
                            primary: primary.map(str::to_owned),
                        },
                        Message::Error { code, message } => {
                            return Err(ClientError::Server {
                                addr: addr.to_owned(),
                                op: "hello",
                                code,
                                message: message.to_owned(),
                            });
                        }
                        other => {
                            return Err(protocol(format!(
                                "a {} instead of a Welcome",
                                other.kind()
                            )));
                        }
                    };
                    return Ok(Conn {
                        node,
                        socket,
                        decoder,
                        read_timeout,
                        out,
                        heard_at: Instant::now(),
                    });
                }
                Ok(None) => {
                    match receive(&mut socket, &mut decoder, &mut read_timeout, Some(deadline)) {
                        Ok(0) => return Err(protocol("the node closed the connection".to_owned())),
                        Ok(_) => {}
                        Err(e) if is_timeout(&e) => {
                            return Err(ClientError::Timeout {
                                addr: addr.to_owned(),
                                op: "hello",
                                after: options.connect_timeout,
                            });
                        }
                        Err(e) => return Err(io_err("hello", e)),
                    }
                }
            }
        }
    }
}

/// Connects to the first address `addr` resolves to that accepts within `timeout`.
pub(super) fn connect_tcp(addr: &str, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = None;
    for sa in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&sa, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, "the address resolves to nothing")
    }))
}

/// One read into `decoder`: waits until `until`, or not at all when it is `None`.
/// A timeout is an error of kind `WouldBlock` or `TimedOut` (see [`is_timeout`]).
///
/// The socket's read timeout is set again only when it would wait past `until` or is
/// far shorter than needed: callers loop until their deadline, so an early timeout
/// costs a turn, while a system call per read would cost every read.
pub(super) fn receive(
    socket: &mut TcpStream,
    decoder: &mut FrameDecoder,
    timeout_set: &mut Option<Duration>,
    until: Option<Instant>,
) -> io::Result<usize> {
    match until {
        None => {
            socket.set_nonblocking(true)?;
            let read = decoder.read_from(socket);
            socket.set_nonblocking(false)?;
            read
        }
        Some(until) => {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            if timeout_set.is_none_or(|t| t > left || t < left / 2) {
                socket.set_read_timeout(Some(left))?;
                *timeout_set = Some(left);
            }
            decoder.read_from(socket)
        }
    }
}

pub(super) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}
