//! One connection to one node, split in two halves for two threads: a writer that
//! queues appends and a reader that waits for their outcomes. For a producer that
//! must never stop reading its own input while commits are in flight (the MariaDB
//! front reads binlog events on one thread and ACKs commits from the other).
//!
//! Unlike [`Client`](super::Client), a pipeline follows no redirect and resends
//! nothing: every outcome, `NotPrimary` and `InDoubt` included, goes to the reader as
//! the node gave it, and the owner decides. A node answers the appends of one
//! connection in the order it received them unless one is in doubt, so a caller may
//! treat `Appended` for a request as the commit of every earlier one that was
//! `Appended` too.
//!
//! Clean-up: dropping either half closes nothing until both are dropped;
//! [`PipelineWriter::shutdown`] ends the connection for both.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use super::{Appended, ClientError, ClientOptions, Conn, NodeInfo, is_timeout, receive};
use crate::wire::{ErrorCode, FrameDecoder, Message, Payloads, RequestId};

/// What the node said about one append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Appended(Appended),
    /// Its fate is unknown: it may be committed later, or never.
    InDoubt {
        first_lsn: u64,
        count: u32,
        reason: String,
    },
    /// The node is not the primary; it did nothing.
    NotPrimary {
        epoch: u64,
        primary: Option<String>,
    },
    /// The node refused the request.
    Refused {
        code: ErrorCode,
        message: String,
    },
}

/// The sending half.
pub struct PipelineWriter {
    socket: TcpStream,
    addr: String,
    out: Vec<u8>,
    next_id: u64,
    timeout_ms: u32,
}

/// The receiving half.
pub struct PipelineReader {
    socket: TcpStream,
    addr: String,
    decoder: FrameDecoder,
    read_timeout: Option<Duration>,
    wait: Duration,
}

/// Opens a pipeline to `addr` for `stream`. Each append asks the node to answer within
/// `options.timeout`; the reader waits at most that plus `options.reply_grace` for any
/// reply while appends are outstanding.
pub fn open(
    addr: &str,
    stream: &str,
    options: &ClientOptions,
) -> Result<(NodeInfo, PipelineWriter, PipelineReader), ClientError> {
    crate::wire::check_stream_name(stream)?;
    let hello = RequestId(1);
    let conn = Conn::open(addr, stream, hello, options)?;
    let io_err = |op, source| ClientError::Io {
        addr: addr.to_owned(),
        op,
        source,
    };
    let write_half = conn.socket.try_clone().map_err(|e| io_err("connect", e))?;
    let timeout_ms = u32::try_from(options.timeout.as_millis()).unwrap_or(u32::MAX);
    Ok((
        conn.node,
        PipelineWriter {
            socket: write_half,
            addr: addr.to_owned(),
            out: conn.out,
            next_id: hello.0 + 1,
            timeout_ms,
        },
        PipelineReader {
            socket: conn.socket,
            addr: addr.to_owned(),
            decoder: conn.decoder,
            read_timeout: conn.read_timeout,
            wait: options.timeout + options.reply_grace,
        },
    ))
}

impl PipelineWriter {
    /// Queues an append of `payloads` (consecutive LSNs); returns its request id. The
    /// frame is written by [`flush`](Self::flush).
    pub fn append(&mut self, payloads: &[&[u8]]) -> Result<RequestId, ClientError> {
        let id = RequestId(self.next_id);
        let message = Message::Append {
            mode: None,
            timeout_ms: self.timeout_ms,
            payloads: Payloads::new(payloads),
        };
        message
            .encode_into(id, &mut self.out)
            .map_err(|source| ClientError::Invalid {
                op: "append",
                source,
            })?;
        self.next_id += 1;
        Ok(id)
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.out.len()
    }

    /// Writes what is queued.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let written = self.socket.write_all(&self.out);
        self.out.clear();
        written.map_err(|source| ClientError::Io {
            addr: self.addr.clone(),
            op: "send",
            source,
        })
    }

    /// Ends the connection: the reader's next wait returns an error at once.
    pub fn shutdown(&self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }

    /// Stops sending but keeps receiving: the node answers what it already read, then
    /// closes, and the reader sees the end.
    pub fn finish(&mut self) -> Result<(), ClientError> {
        self.flush()?;
        self.socket
            .shutdown(Shutdown::Write)
            .map_err(|source| ClientError::Io {
                addr: self.addr.clone(),
                op: "shut down",
                source,
            })
    }
}

impl PipelineReader {
    /// Waits for the next reply. `Timeout` when nothing arrived within the request
    /// timeout and its grace; `Disconnected` when the node closed the connection.
    pub fn next_outcome(&mut self) -> Result<(RequestId, Outcome), ClientError> {
        let deadline = std::time::Instant::now() + self.wait;
        loop {
            let frame = self
                .decoder
                .next_frame()
                .map_err(|source| ClientError::Wire {
                    addr: self.addr.clone(),
                    op: "append",
                    source,
                })?;
            if let Some(frame) = frame {
                let id = frame.id;
                let outcome = match frame.message {
                    Message::Appended { first_lsn, count } => {
                        Outcome::Appended(Appended { first_lsn, count })
                    }
                    Message::InDoubt {
                        first_lsn,
                        count,
                        reason,
                    } => Outcome::InDoubt {
                        first_lsn,
                        count,
                        reason: reason.to_owned(),
                    },
                    Message::NotPrimary { epoch, primary } => Outcome::NotPrimary {
                        epoch,
                        primary: primary.map(str::to_owned),
                    },
                    Message::Error { code, message } => Outcome::Refused {
                        code,
                        message: message.to_owned(),
                    },
                    other => {
                        return Err(ClientError::Protocol {
                            addr: self.addr.clone(),
                            op: "append",
                            reason: format!("a {} message on a pipeline", other.kind()),
                        });
                    }
                };
                return Ok((id, outcome));
            }
            match receive(
                &mut self.socket,
                &mut self.decoder,
                &mut self.read_timeout,
                Some(deadline),
            ) {
                Ok(0) => {
                    return Err(ClientError::Disconnected {
                        addr: self.addr.clone(),
                        op: "append",
                        reason: "the node closed the connection".into(),
                    });
                }
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {
                    if std::time::Instant::now() >= deadline {
                        return Err(ClientError::Timeout {
                            addr: self.addr.clone(),
                            op: "append",
                            after: self.wait,
                        });
                    }
                }
                Err(source) => {
                    return Err(ClientError::Io {
                        addr: self.addr.clone(),
                        op: "receive",
                        source,
                    });
                }
            }
        }
    }
}
