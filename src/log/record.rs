//! The on-disk record: a 32-byte header followed by the payload.
//!
//! ```text
//! offset size field
//!  0     4    magic      "LSR1" (0x3152_534C little-endian)
//!  4     1    version    1
//!  5     1    flags      bit 0: first record of a batch (it starts on a block boundary)
//!  6     2    reserved   0
//!  8     8    epoch      configuration epoch in which the record was first written
//! 16     8    lsn        position in the stream, dense, from 1
//! 24     4    len        payload bytes
//! 28     4    crc32c     of bytes 0..28 and the payload
//! ```
//!
//! All integers are little-endian. A header of 32 zero bytes is padding (or the end of the
//! written log); any other header that fails a check is a damaged record.

use crate::constants::{PAYLOAD_BYTES_MAX, RECORD_HEADER_BYTES};

/// Every byte is non-zero, so a record never starts with a zero byte and padding can be
/// told from a record by its first byte.
pub const MAGIC: u32 = 0x3152_534C;
const _: () = assert!(MAGIC.to_le_bytes()[0] != 0 && MAGIC.to_le_bytes()[1] != 0);
const _: () = assert!(MAGIC.to_le_bytes()[2] != 0 && MAGIC.to_le_bytes()[3] != 0);
pub const VERSION: u8 = 1;
pub const FLAG_BATCH_START: u8 = 1;
const FLAGS_KNOWN: u8 = FLAG_BATCH_START;

/// A decoded record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub flags: u8,
    pub epoch: u64,
    pub lsn: u64,
    pub len: u32,
    pub crc: u32,
}

impl Header {
    pub fn batch_start(&self) -> bool {
        self.flags & FLAG_BATCH_START != 0
    }
}

/// What is at a header position.
#[derive(Debug, PartialEq, Eq)]
pub enum Slot {
    /// Thirty-two zero bytes: padding up to the next block, or the end of the log.
    Zero,
    /// A structurally valid header (checksum not yet checked).
    Header(Header),
    /// Something that is neither.
    Damaged(&'static str),
}

/// Total bytes of a record with `payload_len` payload bytes.
pub const fn record_bytes(payload_len: usize) -> usize {
    RECORD_HEADER_BYTES + payload_len
}

/// Writes a complete record (header + payload) into `out`, which must be exactly
/// `record_bytes(payload.len())` long.
pub fn encode(out: &mut [u8], flags: u8, epoch: u64, lsn: u64, payload: &[u8]) {
    assert!(payload.len() <= PAYLOAD_BYTES_MAX);
    assert_eq!(out.len(), record_bytes(payload.len()));
    assert!(lsn > 0);
    assert_eq!(flags & !FLAGS_KNOWN, 0);
    let (h, body) = out.split_at_mut(RECORD_HEADER_BYTES);
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4] = VERSION;
    h[5] = flags;
    h[6..8].copy_from_slice(&[0, 0]);
    h[8..16].copy_from_slice(&epoch.to_le_bytes());
    h[16..24].copy_from_slice(&lsn.to_le_bytes());
    h[24..28].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    body.copy_from_slice(payload);
    let crc = checksum(&h[0..28], body);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
}

/// Sets the batch-start flag of an encoded record and fixes its checksum.
pub fn mark_batch_start(record: &mut [u8]) {
    record[5] |= FLAG_BATCH_START;
    let (h, body) = record.split_at_mut(RECORD_HEADER_BYTES);
    let crc = checksum(&h[0..28], body);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
}

fn checksum(head28: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(head28), payload)
}

/// Reads the header at the start of `bytes` (at least 32 bytes).
pub fn decode_header(bytes: &[u8]) -> Slot {
    let h = &bytes[..RECORD_HEADER_BYTES];
    if h.iter().all(|&b| b == 0) {
        return Slot::Zero;
    }
    let le32 = |r: std::ops::Range<usize>| u32::from_le_bytes(h[r].try_into().expect("4 bytes"));
    let le64 = |r: std::ops::Range<usize>| u64::from_le_bytes(h[r].try_into().expect("8 bytes"));
    if le32(0..4) != MAGIC {
        return Slot::Damaged("bad magic");
    }
    if h[4] != VERSION {
        return Slot::Damaged("unknown record version");
    }
    if h[5] & !FLAGS_KNOWN != 0 || h[6] != 0 || h[7] != 0 {
        return Slot::Damaged("unknown flags");
    }
    let len = le32(24..28);
    if len as usize > PAYLOAD_BYTES_MAX {
        return Slot::Damaged("payload length beyond the limit");
    }
    let lsn = le64(16..24);
    if lsn == 0 {
        return Slot::Damaged("lsn 0");
    }
    Slot::Header(Header {
        flags: h[5],
        epoch: le64(8..16),
        lsn,
        len,
        crc: le32(28..32),
    })
}

/// Checks the checksum of the record that starts `bytes` and whose header is `h`.
/// `bytes` must hold the whole record.
pub fn checksum_ok(bytes: &[u8], h: &Header) -> bool {
    let end = RECORD_HEADER_BYTES + h.len as usize;
    checksum(&bytes[0..28], &bytes[RECORD_HEADER_BYTES..end]) == h.crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(lsn: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0; record_bytes(payload.len())];
        encode(&mut v, 0, 3, lsn, payload);
        v
    }

    #[test]
    fn roundtrip_and_every_bit_flip_is_caught() {
        let mut v = rec(42, b"payload bytes");
        let Slot::Header(h) = decode_header(&v) else {
            panic!()
        };
        assert_eq!((h.epoch, h.lsn, h.len, h.batch_start()), (3, 42, 13, false));
        assert!(checksum_ok(&v, &h));
        mark_batch_start(&mut v);
        let Slot::Header(h) = decode_header(&v) else {
            panic!()
        };
        assert!(h.batch_start() && checksum_ok(&v, &h));
        for bit in 0..v.len() * 8 {
            let mut w = v.clone();
            w[bit / 8] ^= 1 << (bit % 8);
            let caught = match decode_header(&w) {
                Slot::Header(h2) => {
                    RECORD_HEADER_BYTES + h2.len as usize > w.len() || !checksum_ok(&w, &h2)
                }
                Slot::Zero | Slot::Damaged(_) => true,
            };
            assert!(caught, "bit {bit} flip not detected");
        }
    }

    #[test]
    fn zero_and_damaged_headers() {
        assert_eq!(decode_header(&[0u8; 32]), Slot::Zero);
        let mut v = rec(1, b"x");
        v[4] = 9;
        assert_eq!(decode_header(&v), Slot::Damaged("unknown record version"));
        let mut v = rec(1, b"x");
        v[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode_header(&v),
            Slot::Damaged("payload length beyond the limit")
        );
    }
}
