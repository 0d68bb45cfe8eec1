//! A member's ring: the primary RDMA-WRITEs framed records into it, the member polls it.
//!
//! Layout of one record, starting at a 64-byte aligned offset:
//!
//! ```text
//! 0   magic u32 | kind u16 | 0 u16 | body_len u32 | crc32c u32 | epoch u64 | lsn u64
//! 32  body (body_len bytes, padded to 8)
//! ..  trailer u64 = !position
//! ```
//!
//! and the record takes a multiple of 64 bytes. `position` is the record's absolute byte
//! position (its offset is the position modulo the ring size), so a trailer left by an
//! earlier lap never matches. The crc covers the header (crc field zero), the body and
//! the position. A record never wraps: when it does not fit before the ring's end, a pad
//! record (kind 2, empty body) sends the reader to the next lap.
//!
//! Invariants:
//! - the reader reads nothing past a record whose trailer is not in place: a record is
//!   placed body first and trailer last (placement is in order within one write), so a
//!   torn placement is simply not there yet;
//! - a record whose trailer is in place but whose magic, kind or crc is wrong is refused
//!   ([`RingError::Corrupt`]): the link fails, it is never skipped;
//! - the writer places bytes only below `consumed + ring_bytes` ([`Credits`]): a full
//!   ring keeps records back, it never overwrites.

use std::collections::VecDeque;

use super::credits::{CreditError, Credits};
use super::verbs::{LocalRegion, QueuePair, RemoteRegion, VerbsError, WcStatus, WorkCompletion};

const MAGIC: u32 = 0x4c53_5252; // "LSRR"
const KIND_FRAME: u16 = 1;
const KIND_PAD: u16 = 2;
pub const HEADER_BYTES: usize = 32;
pub const TRAILER_BYTES: usize = 8;
/// Records start at multiples of this, so a trailer or header is never split across a
/// cache line from its neighbour's.
pub const RECORD_ALIGN: usize = 64;

const _: () = assert!(HEADER_BYTES + TRAILER_BYTES <= RECORD_ALIGN);

/// Bytes a record with a body of `body_bytes` takes in the ring.
pub const fn record_bytes(body_bytes: usize) -> usize {
    (HEADER_BYTES + body_bytes.next_multiple_of(8) + TRAILER_BYTES).next_multiple_of(RECORD_ALIGN)
}

#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("a record of {body} bytes does not fit a ring of {ring} bytes")]
    TooLarge { body: usize, ring: u64 },
    #[error("ring record at position {position} refused: {why}")]
    Corrupt { position: u64, why: String },
    #[error(transparent)]
    Verbs(#[from] VerbsError),
    #[error("ring write {wr_id} completed with {status:?}")]
    Completion { wr_id: u64, status: WcStatus },
    #[error(transparent)]
    Credits(#[from] CreditError),
}

/// One record read from the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingRecord {
    pub epoch: u64,
    pub lsn: u64,
    pub body: Vec<u8>,
    /// The position after it: where the reader goes on once the record is consumed.
    pub end: u64,
}

fn crc(header: &[u8; HEADER_BYTES], body: &[u8], position: u64) -> u32 {
    let mut h = *header;
    h[12..16].fill(0);
    let c = crc32c::crc32c(&h);
    let c = crc32c::crc32c_append(c, body);
    crc32c::crc32c_append(c, &position.to_le_bytes())
}

/// Appends one record at `position` to `out`.
fn encode(out: &mut Vec<u8>, kind: u16, epoch: u64, lsn: u64, body: &[u8], position: u64) {
    let start = out.len();
    let mut h = [0u8; HEADER_BYTES];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..6].copy_from_slice(&kind.to_le_bytes());
    h[8..12].copy_from_slice(&(body.len() as u32).to_le_bytes());
    h[16..24].copy_from_slice(&epoch.to_le_bytes());
    h[24..32].copy_from_slice(&lsn.to_le_bytes());
    let c = crc(&h, body, position);
    h[12..16].copy_from_slice(&c.to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(body);
    out.resize(start + HEADER_BYTES + body.len().next_multiple_of(8), 0);
    out.extend_from_slice(&(!position).to_ne_bytes());
    out.resize(start + record_bytes(body.len()), 0);
    // The record is checked as it is written, as it will be when it is read.
    debug_assert_eq!(out.len() - start, record_bytes(body.len()));
}

/// The primary's side of one member's ring.
pub struct RingWriter {
    remote: RemoteRegion,
    credits: Credits,
    /// Records encoded but not yet posted, contiguous in the ring from `batch_at`.
    batch: Vec<u8>,
    batch_at: u64,
    next_wr: u64,
    /// Buffers back from completed writes, reused for later batches.
    spare: Vec<Vec<u8>>,
    completions: Vec<WorkCompletion>,
}

impl RingWriter {
    pub fn new(remote: RemoteRegion) -> RingWriter {
        let ring_bytes = remote.len();
        assert!(ring_bytes.is_multiple_of(RECORD_ALIGN as u64));
        assert!(ring_bytes > 0);
        RingWriter {
            remote,
            credits: Credits::new(ring_bytes),
            batch: Vec::new(),
            batch_at: 0,
            next_wr: 1,
            spare: Vec::new(),
            completions: Vec::new(),
        }
    }

    pub fn ring_bytes(&self) -> u64 {
        self.remote.len()
    }

    /// Bytes placed (or batched) so far: the position of the next record.
    pub fn written(&self) -> u64 {
        self.credits.written()
    }

    pub fn credits(&self) -> &Credits {
        &self.credits
    }

    /// Whether a record of `body_bytes` fits now (with the pad it may need).
    pub fn fits(&self, body_bytes: usize) -> bool {
        self.needs(body_bytes) <= self.credits.room()
    }

    fn needs(&self, body_bytes: usize) -> u64 {
        let total = record_bytes(body_bytes) as u64;
        let size = self.ring_bytes();
        let off = self.credits.written() % size;
        if off + total > size {
            size - off + total
        } else {
            total
        }
    }

    /// Batches one record. `Ok(false)`: the ring is full (back-pressure): nothing was
    /// batched, and the caller keeps the record until the member consumes.
    pub fn push(
        &mut self,
        qp: &mut impl QueuePair,
        epoch: u64,
        lsn: u64,
        body: &[u8],
    ) -> Result<bool, RingError> {
        let total = record_bytes(body.len()) as u64;
        let size = self.ring_bytes();
        if total > size {
            return Err(RingError::TooLarge {
                body: body.len(),
                ring: size,
            });
        }
        if !self.fits(body.len()) {
            return Ok(false);
        }
        if self.batch.is_empty() {
            self.batch_at = self.credits.written();
        }
        let off = self.credits.written() % size;
        if off + total > size {
            let pad_at = self.credits.written();
            encode(&mut self.batch, KIND_PAD, 0, 0, &[], pad_at);
            assert!(self.credits.take(size - off));
            // The batch ends at the ring's end; the next one starts the lap.
            self.post(qp, None)?;
        }
        if self.batch.is_empty() {
            self.batch_at = self.credits.written();
        }
        encode(
            &mut self.batch,
            KIND_FRAME,
            epoch,
            lsn,
            body,
            self.credits.written(),
        );
        assert!(self.credits.take(total));
        if self.credits.written().is_multiple_of(size) {
            // The record ends the lap: a batch is contiguous in the ring, so it ends too.
            self.post(qp, None)?;
        }
        Ok(true)
    }

    /// Posts what is batched, waking the member.
    pub fn flush(&mut self, qp: &mut impl QueuePair) -> Result<(), RingError> {
        self.post(qp, Some(0))
    }

    fn post(&mut self, qp: &mut impl QueuePair, imm: Option<u32>) -> Result<(), RingError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut next = self.spare.pop().unwrap_or_default();
        next.clear();
        let buf = std::mem::replace(&mut self.batch, next);
        let offset = self.batch_at % self.ring_bytes();
        let wr_id = self.next_wr;
        self.next_wr += 1;
        qp.post_write(wr_id, buf, &self.remote, offset, imm)
            .map_err(|(e, _)| RingError::Verbs(e))?;
        self.batch_at = self.credits.written();
        Ok(())
    }

    /// Reaps the ring's completions: buffers come back; a failed write fails the ring.
    pub fn reap(&mut self, qp: &mut impl QueuePair) -> Result<(), RingError> {
        qp.poll(&mut self.completions, 64);
        let mut failed = None;
        for c in self.completions.drain(..) {
            if c.status != WcStatus::Success && failed.is_none() {
                failed = Some(RingError::Completion {
                    wr_id: c.wr_id,
                    status: c.status,
                });
            }
            if self.spare.len() < 8 {
                self.spare.push(c.buf);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// The member reports everything below `position` consumed.
    pub fn on_consumed(&mut self, position: u64) -> Result<(), RingError> {
        Ok(self.credits.on_consumed(position)?)
    }
}

/// The member's side of its ring.
pub struct RingReader {
    ring_bytes: u64,
    position: u64,
}

impl RingReader {
    pub fn new(ring_bytes: u64) -> RingReader {
        assert!(ring_bytes.is_multiple_of(RECORD_ALIGN as u64));
        RingReader {
            ring_bytes,
            position: 0,
        }
    }

    /// Everything below this position is consumed (what the ack slot reports).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next record, if its trailer is in place; the reader stays on it until
    /// [`RingReader::consume`].
    pub fn peek(&mut self, region: &impl LocalRegion) -> Result<Option<RingRecord>, RingError> {
        // At most one pad before a record.
        for _ in 0..2 {
            let pos = self.position;
            let off = (pos % self.ring_bytes) as usize;
            let mut h = [0u8; HEADER_BYTES];
            region.read(off, &mut h);
            let body_len = u32::from_le_bytes(h[8..12].try_into().expect("4")) as usize;
            let trailer_at = off + HEADER_BYTES + body_len.next_multiple_of(8);
            if trailer_at + TRAILER_BYTES > self.ring_bytes as usize {
                // A length that leads past the ring is a header not yet placed (or an
                // earlier lap's bytes): nothing to read yet.
                return Ok(None);
            }
            if region.load_u64(trailer_at) != !pos {
                return Ok(None);
            }
            // The trailer is in place: the header read before it may be stale.
            region.read(off, &mut h);
            let body_len2 = u32::from_le_bytes(h[8..12].try_into().expect("4")) as usize;
            let corrupt = |why: String| RingError::Corrupt { position: pos, why };
            if body_len2 != body_len {
                return Err(corrupt("length changed under its trailer".into()));
            }
            let magic = u32::from_le_bytes(h[0..4].try_into().expect("4"));
            if magic != MAGIC {
                return Err(corrupt(format!("magic {magic:#x}")));
            }
            let mut body = vec![0u8; body_len];
            region.read(off + HEADER_BYTES, &mut body);
            let stored = u32::from_le_bytes(h[12..16].try_into().expect("4"));
            let computed = crc(&h, &body, pos);
            if stored != computed {
                return Err(corrupt(format!(
                    "crc32c {stored:#010x}, computed {computed:#010x}"
                )));
            }
            let kind = u16::from_le_bytes(h[4..6].try_into().expect("2"));
            match kind {
                KIND_PAD => {
                    self.position = (pos / self.ring_bytes + 1) * self.ring_bytes;
                }
                KIND_FRAME => {
                    return Ok(Some(RingRecord {
                        epoch: u64::from_le_bytes(h[16..24].try_into().expect("8")),
                        lsn: u64::from_le_bytes(h[24..32].try_into().expect("8")),
                        body,
                        end: pos + record_bytes(body_len) as u64,
                    }));
                }
                other => return Err(corrupt(format!("kind {other}"))),
            }
        }
        Ok(None)
    }

    /// The record that ends at `end` is consumed: its bytes may be overwritten.
    pub fn consume(&mut self, end: u64) {
        assert!(end > self.position, "consume moves forwards");
        self.position = end;
    }
}

/// Frames waiting for room in the ring: kept in order, bounded in bytes.
#[derive(Default)]
pub struct Backlog {
    frames: VecDeque<(u64, u64, Vec<u8>)>,
    bytes: usize,
}

impl Backlog {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn push(&mut self, epoch: u64, lsn: u64, frame: Vec<u8>) {
        self.bytes += frame.len();
        self.frames.push_back((epoch, lsn, frame));
    }

    /// Moves frames into the ring while it has room; returns how many moved.
    pub fn drain_into(
        &mut self,
        ring: &mut RingWriter,
        qp: &mut impl QueuePair,
    ) -> Result<usize, RingError> {
        let mut moved = 0;
        while let Some((epoch, lsn, frame)) = self.frames.front() {
            if !ring.push(qp, *epoch, *lsn, frame)? {
                break;
            }
            self.bytes -= frame.len();
            self.frames.pop_front();
            moved += 1;
        }
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::super::emulated::{EmulatedProvider, EmulatedQp, EmulatedRegion};
    use super::super::verbs::{Provider, QpState};
    use super::*;

    struct Rig {
        provider: EmulatedProvider,
        region: EmulatedRegion,
        qp: EmulatedQp,
        _peer: EmulatedQp,
        writer: RingWriter,
        reader: RingReader,
    }

    fn rig(ring_bytes: usize) -> Rig {
        let mut provider = EmulatedProvider::new();
        let region = provider.register(ring_bytes).unwrap();
        let mut qp = provider.create_qp(1 << 16).unwrap();
        let mut peer = provider.create_qp(1 << 16).unwrap();
        qp.connect(&peer.endpoint()).unwrap();
        peer.connect(&qp.endpoint()).unwrap();
        let writer = RingWriter::new(region.remote());
        Rig {
            provider,
            region,
            qp,
            _peer: peer,
            writer,
            reader: RingReader::new(ring_bytes as u64),
        }
    }

    fn body(lsn: u64, len: usize) -> Vec<u8> {
        (0..len).map(|i| (lsn as usize * 31 + i) as u8).collect()
    }

    impl Rig {
        /// Reads every record in place, consuming it; returns their LSNs.
        fn read_all(&mut self) -> Vec<u64> {
            let mut lsns = Vec::new();
            while let Some(r) = self.reader.peek(&self.region).unwrap() {
                assert_eq!(r.body, body(r.lsn, r.body.len()), "record {}", r.lsn);
                assert_eq!(r.epoch, 7);
                lsns.push(r.lsn);
                self.reader.consume(r.end);
            }
            lsns
        }

        fn push(&mut self, lsn: u64, len: usize) -> bool {
            self.writer
                .push(&mut self.qp, 7, lsn, &body(lsn, len))
                .unwrap()
        }

        fn report_consumed(&mut self) {
            self.writer.reap(&mut self.qp).unwrap();
            self.writer.on_consumed(self.reader.position()).unwrap();
        }
    }

    #[test]
    fn records_arrive_in_order_and_whole() {
        let mut r = rig(1 << 16);
        for lsn in 1..=20 {
            assert!(r.push(lsn, lsn as usize * 13));
        }
        assert!(
            r.read_all().is_empty(),
            "nothing is placed before the flush"
        );
        r.writer.flush(&mut r.qp).unwrap();
        assert_eq!(r.read_all(), (1..=20).collect::<Vec<_>>());
    }

    #[test]
    fn the_ring_wraps_around_many_laps() {
        let mut r = rig(4096);
        let mut got = Vec::new();
        let mut lsn = 1;
        // Sizes that do not divide the ring, so pads are needed at most laps' ends.
        for round in 0..200 {
            for _ in 0..3 {
                assert!(r.push(lsn, 100 + (round * 37) % 400), "room at {lsn}");
                lsn += 1;
            }
            r.writer.flush(&mut r.qp).unwrap();
            got.extend(r.read_all());
            r.report_consumed();
        }
        assert_eq!(got, (1..lsn).collect::<Vec<_>>());
        assert!(r.writer.written() > 40 * 4096, "many laps");
    }

    #[test]
    fn a_full_ring_keeps_records_back_and_never_overwrites() {
        let mut r = rig(4096);
        let mut backlog = Backlog::default();
        for lsn in 1..=40 {
            backlog.push(7, lsn, body(lsn, 200));
        }
        let moved = backlog.drain_into(&mut r.writer, &mut r.qp).unwrap();
        r.writer.flush(&mut r.qp).unwrap();
        // 200-byte bodies take 256 bytes: 16 fit in 4096.
        assert_eq!(moved, 16);
        assert_eq!(r.writer.credits().room(), 0);
        assert_eq!(backlog.drain_into(&mut r.writer, &mut r.qp).unwrap(), 0);
        // The member has not consumed: what is there is exactly the first 16.
        let first = r.read_all();
        assert_eq!(first, (1..=16).collect::<Vec<_>>());
        // Credits return only as the member reports its position.
        assert_eq!(backlog.drain_into(&mut r.writer, &mut r.qp).unwrap(), 0);
        r.report_consumed();
        let mut rest = Vec::new();
        while !backlog.is_empty() {
            backlog.drain_into(&mut r.writer, &mut r.qp).unwrap();
            r.writer.flush(&mut r.qp).unwrap();
            rest.extend(r.read_all());
            r.report_consumed();
        }
        assert_eq!(rest, (17..=40).collect::<Vec<_>>());
    }

    #[test]
    fn records_that_end_a_lap_exactly_start_the_next_at_offset_zero() {
        let mut r = rig(4096);
        let mut got = Vec::new();
        // 216-byte bodies take 256 bytes: 16 end the lap exactly, with no pad.
        for lsn in 1..=48 {
            assert!(r.push(lsn, 216));
            if lsn % 4 == 0 {
                r.writer.flush(&mut r.qp).unwrap();
                got.extend(r.read_all());
                r.report_consumed();
            }
        }
        assert_eq!(got, (1..=48).collect::<Vec<_>>());
    }

    #[test]
    fn a_record_larger_than_the_ring_is_refused() {
        let mut r = rig(4096);
        let e = r.writer.push(&mut r.qp, 7, 1, &[0; 4096]).unwrap_err();
        assert!(matches!(e, RingError::TooLarge { .. }));
    }

    #[test]
    fn a_torn_placement_is_never_read_past_its_trailer() {
        let trailer_at = HEADER_BYTES + 500usize.next_multiple_of(8);
        // Torn inside the header, after it, mid-body, just before the trailer and
        // inside it.
        for torn in [0, 16, HEADER_BYTES, 300, trailer_at, trailer_at + 4] {
            let mut r = rig(8192);
            assert!(r.push(1, 300));
            r.writer.flush(&mut r.qp).unwrap();
            assert_eq!(r.read_all(), vec![1]);
            r.provider.faults().lock().unwrap().tear_next_write_bytes = Some(torn);
            assert!(r.push(2, 500));
            assert!(r.push(3, 10));
            r.writer.flush(&mut r.qp).unwrap();
            let before = r.reader.position();
            assert!(
                r.reader.peek(&r.region).unwrap().is_none(),
                "torn at {torn}"
            );
            assert_eq!(r.reader.position(), before);
            assert_eq!(r.qp.state(), QpState::Error);
            assert!(r.writer.reap(&mut r.qp).is_err(), "the writer learns of it");
        }
    }

    #[test]
    fn a_record_with_a_bad_crc_is_refused() {
        for flip in [4usize, 20, HEADER_BYTES + 3] {
            let mut r = rig(8192);
            assert!(r.push(1, 100));
            r.writer.flush(&mut r.qp).unwrap();
            // Flip one byte of the placed record through a second queue pair.
            let mut b = [0u8; 1];
            r.region.read(flip, &mut b);
            let mut qp2 = r.provider.create_qp(1 << 16).unwrap();
            qp2.connect(&r.qp.endpoint()).unwrap();
            // Writes are 8-byte words: rewrite the word holding the byte.
            let word_at = flip / 8 * 8;
            let mut word = [0u8; 8];
            r.region.read(word_at, &mut word);
            word[flip - word_at] ^= 0x40;
            qp2.post_write(1, word.to_vec(), &r.region.remote(), word_at as u64, None)
                .unwrap();
            let e = r.reader.peek(&r.region).unwrap_err();
            assert!(matches!(e, RingError::Corrupt { position: 0, .. }), "{e}");
        }
    }

    #[test]
    fn an_earlier_laps_record_is_not_taken_for_a_new_one() {
        let mut r = rig(4096);
        // Fill the ring exactly once with 16 records of 256 bytes, consume them all.
        for lsn in 1..=16 {
            assert!(r.push(lsn, 200));
        }
        r.writer.flush(&mut r.qp).unwrap();
        assert_eq!(r.read_all().len(), 16);
        // Position 4096 is offset 0 again, where record 1's bytes still lie.
        assert!(r.reader.peek(&r.region).unwrap().is_none());
    }
}
