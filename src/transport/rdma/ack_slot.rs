//! A member's ack slot on the primary: one cache line the member RDMA-WRITEs its
//! positions into, and the primary reads once per loop turn.
//!
//! Layout (64 bytes, one slot per member, slots cache-line aligned so two members'
//! writes never share a line):
//!
//! ```text
//! 0 seq | 8 epoch | 16 received_lsn | 24 durable_lsn | 32 consumed ring position
//! 40 token | 48 0  | 56 check = "ACKS" << 32 | crc32c(bytes 0..56)
//! ```
//!
//! The member writes the whole slot with one write, check word last; the primary may
//! read while it is being placed, so a slot whose check does not match is torn and is
//! read again next turn (never used). The token is the one the primary's offer gave
//! this link: a slot written by an earlier link's member (a write still in flight when
//! that link closed) carries another token and is ignored. Every field only grows: `seq` counts the member's
//! writes, and a slot whose seq is not newer than the last one read says nothing new.
//! `durable_lsn` is what the member's log holds durably: it is written only after the
//! member's log write completed, which is what lets the primary count it for commits.

use super::verbs::{LocalRegion, QueuePair, RemoteRegion, VerbsError, WcStatus, WorkCompletion};

pub const SLOT_BYTES: usize = 64;
const CHECK_MAGIC: u64 = 0x4143_4b53; // "ACKS"

/// What one slot says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AckSlot {
    pub seq: u64,
    pub epoch: u64,
    pub received_lsn: u64,
    pub durable_lsn: u64,
    /// The member consumed its ring below this position: the primary's credits.
    pub consumed: u64,
    /// The link's token, from the primary's offer.
    pub token: u64,
}

impl AckSlot {
    pub fn encode(&self) -> [u8; SLOT_BYTES] {
        let mut b = [0u8; SLOT_BYTES];
        let fields = [
            self.seq,
            self.epoch,
            self.received_lsn,
            self.durable_lsn,
            self.consumed,
            self.token,
        ];
        for (i, f) in fields.iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&f.to_ne_bytes());
        }
        let check = (CHECK_MAGIC << 32) | u64::from(crc32c::crc32c(&b[..56]));
        b[56..64].copy_from_slice(&check.to_ne_bytes());
        b
    }

    /// The slot, unless it is empty or torn.
    pub fn decode(b: &[u8; SLOT_BYTES]) -> Option<AckSlot> {
        let check = u64::from_ne_bytes(b[56..64].try_into().expect("8"));
        if check != (CHECK_MAGIC << 32) | u64::from(crc32c::crc32c(&b[..56])) {
            return None;
        }
        let f = |i: usize| u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().expect("8"));
        Some(AckSlot {
            seq: f(0),
            epoch: f(1),
            received_lsn: f(2),
            durable_lsn: f(3),
            consumed: f(4),
            token: f(5),
        })
    }
}

/// Reads slot `index` of the primary's slot region: `None` when it is empty or torn.
pub fn read_slot(region: &impl LocalRegion, index: usize) -> Option<AckSlot> {
    let mut b = [0u8; SLOT_BYTES];
    region.read(index * SLOT_BYTES, &mut b);
    AckSlot::decode(&b)
}

/// The primary's view of one member's slot: the newest slot read, and what is new.
#[derive(Debug)]
pub struct SlotView {
    last: AckSlot,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("ack slot went backwards: {now:?} after {before:?}")]
pub struct SlotBackwards {
    pub before: AckSlot,
    pub now: AckSlot,
}

impl SlotView {
    /// A view that takes only slots written with `token`.
    pub fn new(token: u64) -> SlotView {
        SlotView {
            last: AckSlot {
                token,
                ..AckSlot::default()
            },
        }
    }

    /// Reads the slot; `Ok(Some)` when the member wrote something newer.
    pub fn poll(
        &mut self,
        region: &impl LocalRegion,
        index: usize,
    ) -> Result<Option<AckSlot>, SlotBackwards> {
        let Some(now) = read_slot(region, index) else {
            return Ok(None);
        };
        if now.token != self.last.token || now.seq <= self.last.seq {
            return Ok(None);
        }
        let before = self.last;
        let backwards = now.received_lsn < before.received_lsn
            || now.durable_lsn < before.durable_lsn
            || now.consumed < before.consumed
            || now.epoch < before.epoch;
        if backwards {
            return Err(SlotBackwards { before, now });
        }
        self.last = now;
        Ok(Some(now))
    }
}

/// The member's side: writes its slot on the primary.
pub struct AckWriter {
    remote: RemoteRegion,
    offset: u64,
    seq: u64,
    token: u64,
    completions: Vec<WorkCompletion>,
}

impl AckWriter {
    /// Writes slot `index` of the primary's slot region `remote`, with the link's
    /// `token`.
    pub fn new(remote: RemoteRegion, index: usize, token: u64) -> AckWriter {
        let offset = (index * SLOT_BYTES) as u64;
        assert!(remote.holds(offset, SLOT_BYTES as u64));
        AckWriter {
            remote,
            offset,
            seq: 0,
            token,
            completions: Vec::new(),
        }
    }

    /// Writes the member's positions with the next seq, and wakes the primary. Every
    /// ack is written, an unchanged one too: it tells the primary the member is alive
    /// and caught up (the commit rule's ack timeout counts on it).
    pub fn write(
        &mut self,
        qp: &mut impl QueuePair,
        epoch: u64,
        received_lsn: u64,
        durable_lsn: u64,
        consumed: u64,
    ) -> Result<(), VerbsError> {
        self.seq += 1;
        let slot = AckSlot {
            seq: self.seq,
            epoch,
            received_lsn,
            durable_lsn,
            consumed,
            token: self.token,
        };
        let bytes = slot.encode().to_vec();
        qp.post_write(self.seq, bytes, &self.remote, self.offset, Some(0))
            .map_err(|(e, _)| e)
    }

    /// Reaps completions of slot writes; a failed one fails the link.
    pub fn reap(&mut self, qp: &mut impl QueuePair) -> Result<(), WcStatus> {
        qp.poll(&mut self.completions, 64);
        let failed = self
            .completions
            .drain(..)
            .find(|c| c.status != WcStatus::Success);
        failed.map_or(Ok(()), |c| Err(c.status))
    }
}

#[cfg(test)]
mod tests {
    use super::super::emulated::EmulatedProvider;
    use super::super::verbs::Provider;
    use super::*;

    #[test]
    fn a_written_slot_is_read_once_and_a_torn_one_never() {
        let mut p = EmulatedProvider::new();
        let slots = p.register(4 * SLOT_BYTES).unwrap();
        let mut member = p.create_qp(1 << 16).unwrap();
        let mut primary = p.create_qp(1 << 16).unwrap();
        member.connect(&primary.endpoint()).unwrap();
        primary.connect(&member.endpoint()).unwrap();
        let mut w = AckWriter::new(slots.remote(), 2, 99);
        let mut view = SlotView::new(99);
        assert_eq!(view.poll(&slots, 2).unwrap(), None, "empty slot");
        w.write(&mut member, 3, 10, 8, 4096).unwrap();
        assert!(primary.take_wakeups(), "the primary is woken");
        let got = view.poll(&slots, 2).unwrap().unwrap();
        assert_eq!(
            (got.received_lsn, got.durable_lsn, got.consumed),
            (10, 8, 4096)
        );
        assert_eq!(view.poll(&slots, 2).unwrap(), None, "nothing new");
        assert_eq!(view.poll(&slots, 1).unwrap(), None, "other slots untouched");
        // The same ack again is news: the member is alive.
        w.write(&mut member, 3, 10, 8, 4096).unwrap();
        assert_eq!(view.poll(&slots, 2).unwrap().unwrap().seq, got.seq + 1);
        // An earlier link's member, with another token, is not heard on this one.
        let mut stale = AckWriter::new(slots.remote(), 2, 98);
        stale.write(&mut member, 3, 50, 50, 9000).unwrap();
        assert_eq!(view.poll(&slots, 2).unwrap(), None);
        // A slot write torn before its check word is not read.
        w.write(&mut member, 3, 12, 12, 4096).unwrap();
        assert_eq!(view.poll(&slots, 2).unwrap().unwrap().durable_lsn, 12);
        p.faults().lock().unwrap().tear_next_write_bytes = Some(40);
        w.write(&mut member, 3, 20, 20, 8192).unwrap();
        assert_eq!(view.poll(&slots, 2).unwrap(), None);
        assert!(w.reap(&mut member).is_err());
    }

    #[test]
    fn a_slot_that_goes_backwards_is_refused() {
        let mut p = EmulatedProvider::new();
        let slots = p.register(SLOT_BYTES).unwrap();
        let mut member = p.create_qp(1 << 16).unwrap();
        let primary = p.create_qp(1 << 16).unwrap();
        member.connect(&primary.endpoint()).unwrap();
        let mut w = AckWriter::new(slots.remote(), 0, 5);
        let mut view = SlotView::new(5);
        w.write(&mut member, 3, 10, 10, 64).unwrap();
        view.poll(&slots, 0).unwrap().unwrap();
        w.write(&mut member, 3, 10, 9, 64).unwrap();
        assert!(view.poll(&slots, 0).is_err());
    }
}
