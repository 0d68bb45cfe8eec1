//! Bounds-checked field access to a message body: [`Reader`] decodes, [`Writer`] encodes.
//!
//! Every read checks that the field lies inside the body before touching it, so a
//! length field can never make the decoder read past the frame or allocate; every
//! write checks that the body stays within its kind's limit before copying, so an
//! oversized message is refused before it is copied.

use super::WireError;
use super::frame::Kind;
use crate::constants::{EPOCH_MAX, LSN_MAX};

/// A cursor over the body of one frame of kind `kind`.
pub(crate) struct Reader<'a> {
    kind: Kind,
    body: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(kind: Kind, body: &'a [u8]) -> Self {
        Reader { kind, body, pos: 0 }
    }

    /// The error for a body of this kind that breaks a rule.
    pub(crate) fn malformed(&self, reason: impl Into<String>) -> WireError {
        WireError::Malformed {
            kind: self.kind,
            reason: reason.into(),
        }
    }

    /// Offset of the next field in the body.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// The body bytes from `start` to the cursor.
    pub(crate) fn since(&self, start: usize) -> &'a [u8] {
        &self.body[start..self.pos]
    }

    pub(crate) fn bytes(&mut self, len: usize, field: &str) -> Result<&'a [u8], WireError> {
        let left = self.body.len() - self.pos;
        if len > left {
            return Err(self.malformed(format!(
                "the body ends inside {field}: {len} bytes needed at offset {}, {left} left",
                self.pos
            )));
        }
        let bytes = &self.body[self.pos..self.pos + len];
        self.pos += len;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N], WireError> {
        let bytes = self.bytes(N, field)?;
        Ok(bytes.try_into().expect("bytes() returned N bytes"))
    }

    pub(crate) fn u8(&mut self, field: &str) -> Result<u8, WireError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &str) -> Result<u16, WireError> {
        self.array(field).map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self, field: &str) -> Result<u32, WireError> {
        self.array(field).map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self, field: &str) -> Result<u64, WireError> {
        self.array(field).map(u64::from_le_bytes)
    }

    /// An LSN: a u64 of at most [`LSN_MAX`], so that no receiver's `lsn + 1` wraps.
    pub(crate) fn lsn(&mut self, field: &str) -> Result<u64, WireError> {
        let v = self.u64(field)?;
        if v > LSN_MAX {
            return Err(self.malformed(format!("{field} {v} is beyond the largest LSN {LSN_MAX}")));
        }
        Ok(v)
    }

    /// An epoch: a u64 of at most [`EPOCH_MAX`], so that no receiver's `epoch + 1`
    /// wraps.
    pub(crate) fn epoch(&mut self, field: &str) -> Result<u64, WireError> {
        let v = self.u64(field)?;
        if v > EPOCH_MAX {
            return Err(self.malformed(format!(
                "{field} {v} is beyond the largest epoch {EPOCH_MAX}"
            )));
        }
        Ok(v)
    }

    /// A string with a u16 length prefix, at most `max` bytes of UTF-8.
    pub(crate) fn str16(&mut self, field: &str, max: usize) -> Result<&'a str, WireError> {
        let len = self.u16(field)?;
        self.text(len.into(), field, max)
    }

    /// A string with a u32 length prefix, at most `max` bytes of UTF-8.
    pub(crate) fn str32(&mut self, field: &str, max: usize) -> Result<&'a str, WireError> {
        let len = self.u32(field)?;
        self.text(len as usize, field, max)
    }

    fn text(&mut self, len: usize, field: &str, max: usize) -> Result<&'a str, WireError> {
        if len > max {
            return Err(self.malformed(format!(
                "{field} of {len} bytes exceeds the limit of {max} bytes"
            )));
        }
        let bytes = self.bytes(len, field)?;
        std::str::from_utf8(bytes)
            .map_err(|e| self.malformed(format!("{field} is not valid UTF-8: {e}")))
    }

    /// Ends decoding: a body with bytes after its last field is refused, so every
    /// message has exactly one encoding.
    pub(crate) fn finish(self) -> Result<(), WireError> {
        let left = self.body.len() - self.pos;
        if left != 0 {
            return Err(self.malformed(format!(
                "{left} trailing bytes after the last field (at offset {})",
                self.pos
            )));
        }
        Ok(())
    }
}

/// Appends the body of one frame of kind `kind` to `out`, which already holds
/// everything up to the body.
pub(crate) struct Writer<'o> {
    kind: Kind,
    out: &'o mut Vec<u8>,
    body_start: usize,
}

impl<'o> Writer<'o> {
    pub(crate) fn new(kind: Kind, out: &'o mut Vec<u8>) -> Self {
        let body_start = out.len();
        Writer {
            kind,
            out,
            body_start,
        }
    }

    /// Bytes of body written so far.
    pub(crate) fn body_len(&self) -> usize {
        self.out.len() - self.body_start
    }

    pub(crate) fn bytes(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        let max = self.kind.body_bytes_max();
        let len = self.body_len().saturating_add(bytes.len());
        if len > max {
            return Err(WireError::TooLarge {
                kind: self.kind,
                len,
                max,
            });
        }
        self.out.extend_from_slice(bytes);
        Ok(())
    }

    pub(crate) fn u8(&mut self, v: u8) -> Result<(), WireError> {
        self.bytes(&[v])
    }

    pub(crate) fn u16(&mut self, v: u16) -> Result<(), WireError> {
        self.bytes(&v.to_le_bytes())
    }

    pub(crate) fn u32(&mut self, v: u32) -> Result<(), WireError> {
        self.bytes(&v.to_le_bytes())
    }

    pub(crate) fn u64(&mut self, v: u64) -> Result<(), WireError> {
        self.bytes(&v.to_le_bytes())
    }

    /// A length that must fit its u32 field; larger ones are refused, never truncated.
    pub(crate) fn len32(&mut self, len: usize, field: &str) -> Result<(), WireError> {
        let len = u32::try_from(len).map_err(|_| self.too_long(field, len))?;
        self.u32(len)
    }

    pub(crate) fn str16(&mut self, s: &str, field: &str) -> Result<(), WireError> {
        let len = u16::try_from(s.len()).map_err(|_| self.too_long(field, s.len()))?;
        self.u16(len)?;
        self.bytes(s.as_bytes())
    }

    pub(crate) fn str32(&mut self, s: &str, field: &str) -> Result<(), WireError> {
        self.len32(s.len(), field)?;
        self.bytes(s.as_bytes())
    }

    /// A node address; `None` is sent as length 0, so `Some("")` is refused to keep
    /// one encoding per message.
    pub(crate) fn addr(&mut self, addr: Option<&str>, field: &str) -> Result<(), WireError> {
        if addr == Some("") {
            return Err(self.malformed(format!("{field} is an empty address; send None")));
        }
        self.str16(addr.unwrap_or(""), field)
    }

    pub(crate) fn malformed(&self, reason: impl Into<String>) -> WireError {
        WireError::Malformed {
            kind: self.kind,
            reason: reason.into(),
        }
    }

    fn too_long(&self, field: &str, len: usize) -> WireError {
        self.malformed(format!(
            "{field} of {len} bytes does not fit its length field"
        ))
    }
}
