//! Batches of records inside a message, as zero-copy views.
//!
//! [`Payloads`] (the records of an `Append`, before they have LSNs) and [`Records`]
//! (records with LSN and epoch, in `Records` and `Replicate`) each have two forms behind
//! one type: a slice of borrowed items, which a sender builds, and a packed view over a
//! received frame body, which the decoder builds without copying or allocating. The
//! packed form is only made by the decoder after every entry was checked, so iterating
//! it cannot fail.
//!
//! Layouts (little-endian), after a `count: u32`:
//!
//! ```text
//! payload entry: len u32, payload (len bytes)
//! record entry:  lsn u64, epoch u64, len u32, payload (len bytes)
//! ```
//!
//! Rules checked on decode (and so on encode, which runs the decoder on its output):
//! at most `FRAME_RECORDS_MAX` entries, each payload at most `PAYLOAD_BYTES_MAX`, all
//! payloads together at most `FRAME_PAYLOAD_BYTES_MAX`; records have dense LSNs from 1
//! up (each the previous plus one) and epochs that never decrease.

use std::fmt;

use super::WireError;
use super::cursor::{Reader, Writer};
use crate::constants::{FRAME_PAYLOAD_BYTES_MAX, FRAME_RECORDS_MAX, PAYLOAD_BYTES_MAX};
use lockstep_core::Record;

/// One record of a batch, borrowing its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub lsn: u64,
    pub epoch: u64,
    pub payload: &'a [u8],
}

impl<'a> From<&'a Record> for RecordRef<'a> {
    fn from(r: &'a Record) -> Self {
        RecordRef {
            lsn: r.lsn,
            epoch: r.epoch,
            payload: &r.payload,
        }
    }
}

impl From<RecordRef<'_>> for Record {
    fn from(r: RecordRef<'_>) -> Self {
        Record {
            lsn: r.lsn,
            epoch: r.epoch,
            payload: r.payload.to_vec(),
        }
    }
}

/// The payloads of an `Append`, in append order.
#[derive(Clone, Copy)]
pub struct Payloads<'a>(PayloadsRepr<'a>);

#[derive(Clone, Copy)]
enum PayloadsRepr<'a> {
    Slices(&'a [&'a [u8]]),
    Packed { entries: &'a [u8], count: usize },
}

impl<'a> Payloads<'a> {
    /// Payloads to send. Limits are checked when the message is encoded.
    pub fn new(payloads: &'a [&'a [u8]]) -> Self {
        Payloads(PayloadsRepr::Slices(payloads))
    }

    pub fn len(&self) -> usize {
        match self.0 {
            PayloadsRepr::Slices(s) => s.len(),
            PayloadsRepr::Packed { count, .. } => count,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> PayloadIter<'a> {
        match self.0 {
            PayloadsRepr::Slices(s) => PayloadIter(PayloadIterRepr::Slices(s.iter())),
            PayloadsRepr::Packed { entries, count } => PayloadIter(PayloadIterRepr::Packed {
                entries,
                left: count,
            }),
        }
    }

    pub(crate) fn encode(&self, w: &mut Writer<'_>) -> Result<(), WireError> {
        w.len32(self.len(), "payload count")?;
        for p in self.iter() {
            w.len32(p.len(), "payload")?;
            w.bytes(p)?;
        }
        Ok(())
    }

    pub(crate) fn decode(r: &mut Reader<'a>) -> Result<Self, WireError> {
        let count = r.u32("payload count")? as usize;
        if count == 0 {
            return Err(r.malformed("an append carries no payload"));
        }
        check_count(r, count)?;
        let start = r.pos();
        let mut total = 0;
        for i in 0..count {
            let len = r.u32("payload length")? as usize;
            total = check_payload(r, i, len, total)?;
            r.bytes(len, "payload")?;
        }
        Ok(Payloads(PayloadsRepr::Packed {
            entries: r.since(start),
            count,
        }))
    }
}

/// Iterator over [`Payloads`].
pub struct PayloadIter<'a>(PayloadIterRepr<'a>);

enum PayloadIterRepr<'a> {
    Slices(std::slice::Iter<'a, &'a [u8]>),
    Packed { entries: &'a [u8], left: usize },
}

impl<'a> Iterator for PayloadIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        match &mut self.0 {
            PayloadIterRepr::Slices(it) => it.next().copied(),
            PayloadIterRepr::Packed { entries, left } => {
                *left = left.checked_sub(1)?;
                let (len, rest) = split_le::<4>(entries);
                let (payload, rest) = rest.split_at(u32::from_le_bytes(len) as usize);
                *entries = rest;
                Some(payload)
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match &self.0 {
            PayloadIterRepr::Slices(it) => it.len(),
            PayloadIterRepr::Packed { left, .. } => *left,
        };
        (n, Some(n))
    }
}

impl ExactSizeIterator for PayloadIter<'_> {}

impl<'a> IntoIterator for Payloads<'a> {
    type Item = &'a [u8];
    type IntoIter = PayloadIter<'a>;

    fn into_iter(self) -> PayloadIter<'a> {
        self.iter()
    }
}

/// Equal when the payloads are, whichever form each side has.
impl PartialEq for Payloads<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Payloads<'_> {}

/// Prints sizes, not bytes: a batch can hold megabytes.
impl fmt::Debug for Payloads<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes: usize = self.iter().map(<[u8]>::len).sum();
        write!(f, "Payloads {{ count: {}, bytes: {bytes} }}", self.len())
    }
}

/// Records with their LSN and epoch, in LSN order.
#[derive(Clone, Copy)]
pub struct Records<'a>(RecordsRepr<'a>);

#[derive(Clone, Copy)]
enum RecordsRepr<'a> {
    Slice(&'a [RecordRef<'a>]),
    Packed { entries: &'a [u8], count: usize },
}

/// The first and last record of a non-empty batch, for the rules of the message that
/// carries it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span {
    pub(crate) first_lsn: u64,
    pub(crate) first_epoch: u64,
    pub(crate) last_lsn: u64,
    pub(crate) last_epoch: u64,
}

impl<'a> Records<'a> {
    /// Records to send. Limits and order are checked when the message is encoded.
    pub fn new(records: &'a [RecordRef<'a>]) -> Self {
        Records(RecordsRepr::Slice(records))
    }

    /// No records (a read that found nothing committed after its start).
    pub fn empty() -> Self {
        Records(RecordsRepr::Slice(&[]))
    }

    pub fn len(&self) -> usize {
        match self.0 {
            RecordsRepr::Slice(s) => s.len(),
            RecordsRepr::Packed { count, .. } => count,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> RecordIter<'a> {
        match self.0 {
            RecordsRepr::Slice(s) => RecordIter(RecordIterRepr::Slice(s.iter())),
            RecordsRepr::Packed { entries, count } => RecordIter(RecordIterRepr::Packed {
                entries,
                left: count,
            }),
        }
    }

    pub(crate) fn encode(&self, w: &mut Writer<'_>) -> Result<(), WireError> {
        w.len32(self.len(), "record count")?;
        for r in self.iter() {
            w.u64(r.lsn)?;
            w.u64(r.epoch)?;
            w.len32(r.payload.len(), "payload")?;
            w.bytes(r.payload)?;
        }
        Ok(())
    }

    /// Decodes and checks a batch; returns its span unless it is empty.
    pub(crate) fn decode(r: &mut Reader<'a>) -> Result<(Self, Option<Span>), WireError> {
        let count = r.u32("record count")? as usize;
        check_count(r, count)?;
        let start = r.pos();
        let mut total = 0;
        let mut span: Option<Span> = None;
        for i in 0..count {
            let lsn = r.lsn("lsn")?;
            let epoch = r.epoch("epoch")?;
            let len = r.u32("payload length")? as usize;
            total = check_payload(r, i, len, total)?;
            r.bytes(len, "payload")?;
            span = Some(match span {
                None if lsn == 0 => return Err(r.malformed("record 0 has lsn 0")),
                None => Span {
                    first_lsn: lsn,
                    first_epoch: epoch,
                    last_lsn: lsn,
                    last_epoch: epoch,
                },
                Some(s) => {
                    if s.last_lsn.checked_add(1) != Some(lsn) {
                        return Err(r.malformed(format!(
                            "record {i} has lsn {lsn} after lsn {}: records must be contiguous",
                            s.last_lsn
                        )));
                    }
                    if epoch < s.last_epoch {
                        return Err(r.malformed(format!(
                            "record {i} (lsn {lsn}) has epoch {epoch} after epoch {}: \
                             epochs never decrease",
                            s.last_epoch
                        )));
                    }
                    Span {
                        last_lsn: lsn,
                        last_epoch: epoch,
                        ..s
                    }
                }
            });
        }
        let records = Records(RecordsRepr::Packed {
            entries: r.since(start),
            count,
        });
        Ok((records, span))
    }
}

/// Iterator over [`Records`].
pub struct RecordIter<'a>(RecordIterRepr<'a>);

enum RecordIterRepr<'a> {
    Slice(std::slice::Iter<'a, RecordRef<'a>>),
    Packed { entries: &'a [u8], left: usize },
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = RecordRef<'a>;

    fn next(&mut self) -> Option<RecordRef<'a>> {
        match &mut self.0 {
            RecordIterRepr::Slice(it) => it.next().copied(),
            RecordIterRepr::Packed { entries, left } => {
                *left = left.checked_sub(1)?;
                let (lsn, rest) = split_le::<8>(entries);
                let (epoch, rest) = split_le::<8>(rest);
                let (len, rest) = split_le::<4>(rest);
                let (payload, rest) = rest.split_at(u32::from_le_bytes(len) as usize);
                *entries = rest;
                Some(RecordRef {
                    lsn: u64::from_le_bytes(lsn),
                    epoch: u64::from_le_bytes(epoch),
                    payload,
                })
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match &self.0 {
            RecordIterRepr::Slice(it) => it.len(),
            RecordIterRepr::Packed { left, .. } => *left,
        };
        (n, Some(n))
    }
}

impl ExactSizeIterator for RecordIter<'_> {}

impl<'a> IntoIterator for Records<'a> {
    type Item = RecordRef<'a>;
    type IntoIter = RecordIter<'a>;

    fn into_iter(self) -> RecordIter<'a> {
        self.iter()
    }
}

/// Equal when the records are, whichever form each side has.
impl PartialEq for Records<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Records<'_> {}

/// Prints the LSN range and sizes, not bytes: a batch can hold megabytes.
impl fmt::Debug for Records<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.iter().next().map(|r| r.lsn);
        let last = self.iter().last().map(|r| r.lsn);
        let bytes: usize = self.iter().map(|r| r.payload.len()).sum();
        write!(
            f,
            "Records {{ count: {}, lsns: {first:?}..={last:?}, bytes: {bytes} }}",
            self.len()
        )
    }
}

fn check_count(r: &Reader<'_>, count: usize) -> Result<(), WireError> {
    if count > FRAME_RECORDS_MAX {
        return Err(r.malformed(format!(
            "{count} records exceed the limit of {FRAME_RECORDS_MAX} per frame"
        )));
    }
    Ok(())
}

/// Checks the length of entry `i` and returns the new total of the batch.
fn check_payload(r: &Reader<'_>, i: usize, len: usize, total: usize) -> Result<usize, WireError> {
    if len > PAYLOAD_BYTES_MAX {
        return Err(r.malformed(format!(
            "payload {i} of {len} bytes exceeds the limit of {PAYLOAD_BYTES_MAX} bytes"
        )));
    }
    let total = total + len;
    if total > FRAME_PAYLOAD_BYTES_MAX {
        return Err(r.malformed(format!(
            "payloads of {total} bytes or more exceed the limit of \
             {FRAME_PAYLOAD_BYTES_MAX} bytes per frame"
        )));
    }
    Ok(total)
}

/// Splits a little-endian field of `N` bytes off the front of a checked packed batch.
fn split_le<const N: usize>(bytes: &[u8]) -> ([u8; N], &[u8]) {
    let (head, rest) = bytes.split_at(N);
    (head.try_into().expect("split_at returned N bytes"), rest)
}
