//! TCP links: nonblocking sockets with TCP_NODELAY, read readiness from the shard's
//! io_uring (one-shot polls), one write per link per turn of everything queued on it.
//!
//! Fault model: a peer may stop reading (its send queue grows until a bound, then the
//! link is closed), vanish (reads end, writes fail: the link closes), or send garbage
//! (the decoder refuses the first bad frame; the link is answered with an error and
//! closed). Other links never notice.

use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::Arc;

use lockstep_sys::uring::Ring;

use super::{LinkId, Links, TransportError};
use crate::wire::{FrameDecoder, Message, RequestId};

/// Bytes queued on one link before it is considered stuck and closed.
pub const SEND_QUEUE_BYTES_MAX: usize = 64 << 20;

/// One TCP connection.
pub struct Conn {
    pub sock: Arc<TcpStream>,
    pub peer: String,
    pub decoder: FrameDecoder,
    out: Vec<u8>,
    out_sent: usize,
    poll_in: bool,
    poll_out: bool,
    pub readable: bool,
    pub closed: Option<String>,
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
            poll_in: false,
            poll_out: false,
            readable,
            closed: None,
        })
    }

    /// Reads what the socket has (bounded per turn, so one busy link cannot starve
    /// the others). Returns false at the end of the stream.
    ///
    /// A read that does not fill the space offered has taken everything the socket had:
    /// reading again would only return EAGAIN, so the link waits for its next poll.
    pub fn fill(&mut self) -> io::Result<bool> {
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

    pub fn queue(&mut self, id: RequestId, message: &Message<'_>) -> Result<(), String> {
        if self.out.len() - self.out_sent > SEND_QUEUE_BYTES_MAX {
            return Err(format!(
                "send queue over {SEND_QUEUE_BYTES_MAX} bytes: the peer does not read"
            ));
        }
        message
            .encode_into(id, &mut self.out)
            .map_err(|e| e.to_string())
    }

    pub fn has_output(&self) -> bool {
        self.out_sent < self.out.len()
    }

    /// Writes queued bytes until the socket would block.
    pub fn flush(&mut self) -> io::Result<()> {
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
    pub fn arm(
        &mut self,
        ring: &mut Ring,
        user_data_in: u64,
        user_data_out: u64,
    ) -> io::Result<()> {
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
    pub fn on_poll(&mut self, out: bool) {
        if out {
            self.poll_out = false;
        } else {
            self.poll_in = false;
            self.readable = true;
        }
    }

    /// Whether a poll is still armed in the ring (the slot must outlive it).
    pub fn polls_armed(&self) -> bool {
        self.poll_in || self.poll_out
    }
}

/// A shard's TCP links: a slab of connections.
#[derive(Default)]
pub struct TcpLinks {
    pub conns: Vec<Option<Conn>>,
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

    pub fn get_mut(&mut self, link: LinkId) -> Option<&mut Conn> {
        self.conns.get_mut(link).and_then(Option::as_mut)
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
        c.queue(id, message).map_err(|message| {
            let peer = c.peer.clone();
            c.closed = Some(message.clone());
            TransportError::Protocol {
                link,
                peer,
                message,
            }
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
