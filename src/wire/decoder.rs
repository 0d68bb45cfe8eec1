//! [`FrameDecoder`]: turns the bytes of one connection into checked frames.
//!
//! Bytes go in through [`FrameDecoder::read_from`] (a socket read straight into the
//! decoder's buffer), [`FrameDecoder::spare_mut`] + [`FrameDecoder::commit`] (the same,
//! for callers that do their own reads) or [`FrameDecoder::extend`]. Frames come out of
//! [`FrameDecoder::next_frame`], borrowing their payloads from the buffer.
//!
//! Guarantees:
//! - Every frame returned passed every check: magic, version, kind, flags, length
//!   limit, checksum, and the body rules of its kind.
//! - The header is checked as its bytes arrive, so garbage is refused at its first bad
//!   byte and an oversized length as soon as the length field is in, never buffered.
//! - Memory is bounded: a socket read never makes the buffer larger than the largest
//!   valid frame plus one read chunk. The buffer is reused; after warm-up the decode
//!   path does not allocate.
//! - After an error the decoder is poisoned: it returns the same error from then on and
//!   drops further input, since the framing of the rest of the stream is lost. The
//!   connection must be closed.
//! - An incomplete frame is not an error while the connection is open (the rest may be
//!   on its way): `next_frame` returns `Ok(None)`. At end of file, [`FrameDecoder::finish`]
//!   reports a frame cut short as [`WireError::Truncated`].

use std::io::{self, Read};

use super::WireError;
use super::frame::{self, Frame};
use super::message::Message;
use crate::constants::{FRAME_HEADER_BYTES, FRAME_READ_CHUNK_BYTES};

/// Reassembles frames from a byte stream. One per connection.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    /// Received bytes live in `buf[start..end]`; `buf[end..]` is free space.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    failed: Option<WireError>,
    /// (start, end) before the last frame was taken, for [`Self::rewind_last`].
    before_last: Option<(usize, usize)>,
    /// A bound on frame bodies below their kinds' own (see [`Self::limit_bodies`]).
    body_limit: Option<usize>,
}

impl FrameDecoder {
    pub fn new() -> Self {
        FrameDecoder::default()
    }

    /// A decoder that refuses frame bodies over `limit` bytes, whatever their kind
    /// allows, as soon as their header is in: for a connection whose next frames can
    /// only be small (before its hello), so that it cannot make the buffer grow.
    /// [`Self::lift_body_limit`] returns to the kinds' own limits.
    pub fn limit_bodies(limit: usize) -> Self {
        FrameDecoder {
            body_limit: Some(limit),
            ..FrameDecoder::default()
        }
    }

    /// Back to every kind's own body limit (the hello has come).
    pub fn lift_body_limit(&mut self) {
        self.body_limit = None;
    }

    /// The header at the start of the buffered bytes, checked against the kinds'
    /// limits and this decoder's.
    fn header(&self) -> Result<Option<frame::Header>, WireError> {
        let header = frame::check_header(&self.buf[self.start..self.end])?;
        if let (Some(h), Some(max)) = (header, self.body_limit)
            && h.body_len > max
        {
            return Err(WireError::TooLarge {
                kind: h.kind,
                len: h.body_len,
                max,
            });
        }
        Ok(header)
    }

    /// Bytes received and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Bytes of memory the buffer holds (for metrics, and to check the bound above).
    pub fn buffer_bytes(&self) -> usize {
        self.buf.len()
    }

    /// The error that poisoned this decoder, if one did.
    pub fn error(&self) -> Option<&WireError> {
        self.failed.as_ref()
    }

    /// Free space for the next read: at least one read chunk, and room for the whole
    /// frame whose header has arrived. Pass the number of bytes read to [`Self::commit`].
    pub fn spare_mut(&mut self) -> &mut [u8] {
        let want = FRAME_READ_CHUNK_BYTES.max(self.frame_rest());
        self.reserve(want);
        &mut self.buf[self.end..]
    }

    /// Marks `n` bytes at the start of [`Self::spare_mut`] as received.
    pub fn commit(&mut self, n: usize) {
        assert!(n <= self.buf.len() - self.end);
        if self.failed.is_none() {
            self.end += n;
        }
    }

    /// One read from `r` into the buffer. Returns what `r.read` returned: 0 is the end
    /// of the stream (then call [`Self::finish`]).
    pub fn read_from(&mut self, r: &mut impl Read) -> io::Result<usize> {
        let n = r.read(self.spare_mut())?;
        self.commit(n);
        Ok(n)
    }

    /// Appends received bytes. Callers feeding large amounts should take frames out
    /// between calls: unlike [`Self::read_from`], this buffers all it is given.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        self.reserve(bytes.len());
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, or the error that
    /// poisons the decoder.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, WireError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let header = match self.header() {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(None),
            Err(e) => return Err(self.poison(e)),
        };
        let at = self.start;
        let len = header.frame_len();
        if self.end - at < len {
            return Ok(None);
        }
        self.before_last = Some((self.start, self.end));
        self.start += len;
        if self.start == self.end {
            // Nothing left over: the next read starts at the front without a copy.
            self.start = 0;
            self.end = 0;
        }
        // The frame borrows `self.buf` while an error is recorded in `self.failed`:
        // disjoint fields, so the borrow checker allows both.
        let bytes = &self.buf[at..at + len];
        let decoded = frame::check_checksum(bytes, &header)
            .and_then(|()| Message::decode(header.kind, &bytes[FRAME_HEADER_BYTES..]));
        match decoded {
            Ok(message) => Ok(Some(Frame {
                id: header.id,
                message,
            })),
            Err(e) => {
                self.failed = Some(e.clone());
                self.start = 0;
                self.end = 0;
                Err(e)
            }
        }
    }

    /// Puts the frame last returned by [`Self::next_frame`] back, so the next call
    /// returns it again (a receiver that cannot take it now). Only valid right after
    /// that call: no read or other frame in between.
    pub fn rewind_last(&mut self) {
        let (start, end) = self.before_last.take().expect("a frame to put back");
        assert!(self.failed.is_none());
        self.start = start;
        self.end = end;
    }

    /// Call at the end of the stream: an error if it ended inside a frame.
    pub fn finish(&self) -> Result<(), WireError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.buffered() {
            0 => Ok(()),
            buffered => Err(WireError::Truncated { buffered }),
        }
    }

    fn poison(&mut self, e: WireError) -> WireError {
        self.failed = Some(e.clone());
        self.start = 0;
        self.end = 0;
        e
    }

    /// Bytes still missing from the frame whose header is buffered (0 if none is).
    fn frame_rest(&self) -> usize {
        match self.header() {
            Ok(Some(h)) => h.frame_len().saturating_sub(self.buffered()),
            _ => 0,
        }
    }

    /// Makes `buf[end..]` at least `want` bytes long: first by moving the buffered
    /// bytes to the front, then by growing.
    fn reserve(&mut self, want: usize) {
        // Compaction moves bytes: a frame taken before can no longer be put back.
        self.before_last = None;
        if self.buf.len() - self.end >= want {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < want {
            self.buf.resize(self.end + want, 0);
        }
    }
}
