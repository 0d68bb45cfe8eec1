//! TCP links: nonblocking sockets with TCP_NODELAY, read readiness from the shard's
//! io_uring (one-shot polls), one write per link per turn of everything queued on it.
//!
//! Fault model: a peer may stop reading (its send queue grows until a bound, then the
//! link is closed), vanish (reads end, writes fail: the link closes), or send garbage
//! (the decoder refuses the first bad frame; the link is answered with an error and
//! closed). Other links never notice.
//!
//! Memory: a link's receive buffer holds at most its largest frame and a read chunk
//! (see [`FrameDecoder`]); its send buffer at most its queue bound
//! ([`SEND_QUEUE_BYTES_MAX`], or less for links that only carry small answers) and as
//! much again of bytes already sent, which are dropped once they are the larger part.

use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;

use lockstep_sys::uring::Ring;

use super::{LinkId, Links, TransportError};
use crate::constants::SEND_QUEUE_BYTES_MAX;
use crate::wire::{ErrorCode, FrameDecoder, Message, RequestId};

/// One TCP connection.
pub struct Conn {
    sock: Arc<TcpStream>,
    peer: String,
    decoder: FrameDecoder,
    out: Vec<u8>,
    out_sent: usize,
    /// Bytes queued (not yet sent) before the link is considered stuck.
    out_max: usize,
    poll_in: bool,
    poll_out: bool,
    readable: bool,
    /// Why the link closed, once it did; its slot is freed at the next flush.
    closed: Option<String>,
}

impl Conn {
    /// A connection whose first bytes (the hello, perhaps more) are already in
    /// `decoder`.
    pub fn with_decoder(sock: TcpStream, decoder: FrameDecoder) -> io::Result<Conn> {
        sock.set_nodelay(true)?;
        sock.set_nonblocking(true)?;
        let peer = sock
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        let readable = decoder.buffered() > 0;
        Ok(Conn {
            sock: Arc::new(sock),
            peer,
            decoder,
            out: Vec::with_capacity(64 << 10),
            out_sent: 0,
            out_max: SEND_QUEUE_BYTES_MAX,
            poll_in: false,
            poll_out: false,
            readable,
            closed: None,
        })
    }

    /// The same link with a smaller send queue: for a link that carries only small
    /// answers (a member's acks to its primary), a peer that does not read them is
    /// found out long before the default bound.
    pub fn with_send_queue_max(mut self, bytes: usize) -> Conn {
        self.out_max = bytes.min(SEND_QUEUE_BYTES_MAX);
        self
    }

    /// Reads what the socket has (bounded per turn, so one busy link cannot starve
    /// the others). Returns false at the end of the stream.
    ///
    /// A read that does not fill the space offered has taken everything the socket had:
    /// reading again would only return EAGAIN, so the link waits for its next poll.
    fn fill(&mut self) -> io::Result<bool> {
        self.readable = false;
        for _ in 0..16 {
            let offered = self.decoder.spare_mut().len();
            match self.decoder.read_from(&mut &*self.sock) {
                Ok(0) => return Ok(false),
                Ok(n) if n < offered => return Ok(true),
                Ok(_) => self.readable = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Queues one frame; a link whose queue is over its bound, or a message that does
    /// not encode, fails (the link is then closed).
    fn queue(
        &mut self,
        link: LinkId,
        id: RequestId,
        message: &Message<'_>,
    ) -> Result<(), TransportError> {
        let protocol = |message: String| TransportError::Protocol {
            link,
            peer: self.peer.clone(),
            message,
        };
        let queued = self.out.len() - self.out_sent;
        if queued > self.out_max {
            return Err(protocol(format!(
                "send queue over {} bytes: the peer does not read",
                self.out_max
            )));
        }
        // A peer that reads, but never all of it, would keep the bytes already sent in
        // the buffer forever: drop them once they are the larger part.
        if self.out_sent > queued {
            self.out.drain(..self.out_sent);
            self.out_sent = 0;
        }
        message
            .encode_into(id, &mut self.out)
            .map_err(|e| protocol(e.to_string()))
    }

    fn has_output(&self) -> bool {
        self.out_sent < self.out.len()
    }

    /// Writes queued bytes until the socket would block.
    fn flush(&mut self) -> io::Result<()> {
        while self.out_sent < self.out.len() {
            match (&*self.sock).write(&self.out[self.out_sent..]) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => self.out_sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_sent = 0;
        Ok(())
    }

    /// Arms the readiness polls this link needs; `user_data` identifies it.
    fn arm(&mut self, ring: &mut Ring, user_data_in: u64, user_data_out: u64) -> io::Result<()> {
        if !self.poll_in && self.closed.is_none() {
            ring.poll(&self.sock, libc::POLLIN | libc::POLLRDHUP, user_data_in)
                .map_err(|e| io::Error::other(e.to_string()))?;
            self.poll_in = true;
        }
        if !self.poll_out && self.has_output() && self.closed.is_none() {
            ring.poll(&self.sock, libc::POLLOUT, user_data_out)
                .map_err(|e| io::Error::other(e.to_string()))?;
            self.poll_out = true;
        }
        Ok(())
    }

    /// A readiness poll completed.
    fn on_poll(&mut self, out: bool) {
        if out {
            self.poll_out = false;
        } else {
            self.poll_in = false;
            self.readable = true;
        }
    }
}

/// A shard's TCP links: a slab of connections. The shard reads them
/// ([`TcpLinks::take_input`]), hands their frames to its streams, and flushes them
/// ([`TcpLinks::flush`]) once a turn; the streams send through [`Links`].
#[derive(Default)]
pub struct TcpLinks {
    conns: Vec<Option<Conn>>,
}

impl TcpLinks {
    pub fn add(&mut self, conn: Conn) -> LinkId {
        if let Some(i) = self.conns.iter().position(Option::is_none) {
            self.conns[i] = Some(conn);
            i
        } else {
            self.conns.push(Some(conn));
            self.conns.len() - 1
        }
    }

    fn get_mut(&mut self, link: LinkId) -> Option<&mut Conn> {
        self.conns.get_mut(link).and_then(Option::as_mut)
    }

    /// Links are numbered below this.
    pub fn slots(&self) -> usize {
        self.conns.len()
    }

    /// Reads what `link` has, if it is readable or a frame of it waits (`stalled`), and
    /// returns its decoder with the frames to handle: it stays out of the link until
    /// [`TcpLinks::put_back`], so that the handlers may send on any link, this one
    /// included. The end of the stream, or a failed read, closes the link (a stream
    /// that ended inside a frame is told why first).
    pub fn take_input(&mut self, link: LinkId, stalled: bool) -> Option<FrameDecoder> {
        let c = self.get_mut(link)?;
        if c.closed.is_some() || !(c.readable || stalled) {
            return None;
        }
        if c.readable {
            match c.fill() {
                Ok(true) => {}
                Ok(false) => {
                    let why = match c.decoder.finish() {
                        Ok(()) => "closed by the peer".to_string(),
                        Err(e) => {
                            // The peer may have closed only its sending side: say why.
                            let message = format!("the connection ended inside a frame: {e}");
                            let _ = c.queue(
                                link,
                                RequestId(0),
                                &Message::Error {
                                    code: ErrorCode::Malformed,
                                    message: &message,
                                },
                            );
                            format!("closed by the peer inside a frame: {e}")
                        }
                    };
                    self.close(link, &why);
                    return None;
                }
                Err(e) => {
                    self.close(link, &format!("read failed: {e}"));
                    return None;
                }
            }
        }
        Some(std::mem::take(&mut c.decoder))
    }

    /// The decoder [`TcpLinks::take_input`] took, with the frames left in it.
    pub fn put_back(&mut self, link: LinkId, decoder: FrameDecoder) {
        if let Some(c) = self.get_mut(link) {
            c.decoder = decoder;
        }
    }

    /// Writes what is queued on `link` and arms its readiness polls (`user_data_in`,
    /// `user_data_out` identify them). A link that closed sends what it has queued (an
    /// error reply, say), is shut down and freed: then (peer, why).
    pub fn flush(
        &mut self,
        link: LinkId,
        ring: &mut Ring,
        user_data_in: u64,
        user_data_out: u64,
    ) -> Option<(String, String)> {
        let c = self.get_mut(link)?;
        if c.closed.is_none()
            && let Err(e) = c.flush()
        {
            c.closed = Some(format!("write failed: {e}"));
        }
        if let Some(why) = c.closed.take() {
            let _ = c.flush();
            let _ = c.sock.shutdown(Shutdown::Both);
            let peer = std::mem::take(&mut c.peer);
            self.conns[link] = None;
            return Some((peer, why));
        }
        if let Err(e) = c.arm(ring, user_data_in, user_data_out) {
            c.closed = Some(format!("cannot poll: {e}"));
        }
        None
    }

    /// A readiness poll of `link` completed (`out`: for writing).
    pub fn on_poll(&mut self, link: LinkId, out: bool) {
        if let Some(c) = self.get_mut(link) {
            c.on_poll(out);
        }
    }

    /// Shuts every connection down (the node stops).
    pub fn shut_down(&self) {
        for c in self.conns.iter().flatten() {
            let _ = c.sock.shutdown(Shutdown::Both);
        }
    }
}

impl Links for TcpLinks {
    fn send(
        &mut self,
        link: LinkId,
        id: RequestId,
        message: &Message<'_>,
    ) -> Result<(), TransportError> {
        let c = self.get_mut(link).ok_or(TransportError::Closed(link))?;
        if c.closed.is_some() {
            return Err(TransportError::Closed(link));
        }
        c.queue(link, id, message).inspect_err(|e| {
            c.closed = Some(match e {
                TransportError::Protocol { message, .. } => message.clone(),
                other => other.to_string(),
            });
        })
    }

    fn close(&mut self, link: LinkId, why: &str) {
        if let Some(c) = self.get_mut(link)
            && c.closed.is_none()
        {
            c.closed = Some(why.to_string());
        }
    }

    fn is_open(&self, link: LinkId) -> bool {
        self.conns
            .get(link)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.closed.is_none())
    }
}
