//! The RDMA side of a shard's peer links, and the shard's [`Links`] over TCP and rings.
//!
//! A peer link always starts on TCP (its greeting, `../shared/DESIGN.md`, "Greeting a
//! member"). Once the member's log agrees with the primary's, the primary offers a ring
//! ([`super::setup`]); after `RingSwitch`, every frame the primary sends on the link is
//! a record of the member's ring, and the member's acks go into its ack slot on the
//! primary instead of the socket. Everything else a member says (a refusal, a greeting
//! after a cut) still goes over TCP.
//!
//! Invariants:
//! - frames of one link reach the member in the order they were sent: TCP frames before
//!   `RingSwitch`, ring records after it, and the member reads the ring only once it has
//!   read `RingSwitch`;
//! - an ack slot says `durable_lsn` only for what the member's log holds durably (it is
//!   written from the driver's `Ack`, which the driver sends after the log write
//!   completed);
//! - on any failure of a ring (a queue pair in error, a refused record, an ack slot that
//!   goes backwards) the whole link closes with one log line, and the primary dials the
//!   member again over TCP: the greeting finds where the member's log ends, so nothing
//!   is lost or sent twice. A ring is offered again on a later link, after a pause.
//!
//! Polling is bounded: the member reads at most [`RING_RECORDS_PER_TURN`] records per
//! loop turn; when its ring is empty, the shard waits on the queue pair's wake-up
//! descriptor (armed in its io_uring) like on a socket.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::ack_slot::{AckSlot, AckWriter, SLOT_BYTES, SlotView};
use super::ring::{Backlog, RingReader, RingWriter, record_bytes};
use super::setup::{Answer, Chosen, Offer};
use super::verbs::{LocalRegion, Provider, QpState, QueuePair};
use crate::constants::SEND_QUEUE_BYTES_MAX;
use crate::constants::{BATCH_BYTES_MAX, FRAME_FIXED_BYTES_MAX, FRAME_HEADER_BYTES};
use crate::transport::tcp::TcpLinks;
use crate::transport::{LinkId, Links, TransportError};
use crate::wire::{Frame, Message, RequestId};

/// Bytes of one member's ring.
pub const RING_BYTES: usize = 8 << 20;
/// Members one shard's ack-slot region holds.
pub const SLOTS_MAX: usize = 64;
/// Ring records a member reads in one loop turn at most.
pub const RING_RECORDS_PER_TURN: usize = 64;
/// Bytes of frames waiting for room in a ring before the link counts as stuck.
pub const RING_BACKLOG_BYTES_MAX: usize = SEND_QUEUE_BYTES_MAX;
/// Bytes of ring writes a primary's queue pair may have outstanding. Credits keep what
/// is placed and not yet consumed within one ring, but a write's completion may be
/// reaped after the member consumed it and returned its credits, so twice the ring.
pub const PRIMARY_SEND_BYTES: usize = 2 * RING_BYTES;
/// Bytes of ack-slot writes a member's queue pair may have outstanding: every write
/// the send queue holds.
pub const MEMBER_SEND_BYTES: usize = lockstep_sys::verbs::SEND_QUEUE_DEPTH * SLOT_BYTES;

// The largest frame a primary sends (one record alone over the Replicate limit) fits
// the ring twice, so a record never waits for more room than the ring has.
const _: () = assert!(
    2 * record_bytes(FRAME_HEADER_BYTES + FRAME_FIXED_BYTES_MAX + 20 + BATCH_BYTES_MAX)
        <= RING_BYTES
);
const _: () = assert!(RING_BYTES.is_multiple_of(super::ring::RECORD_ALIGN));

/// The primary's end of a member's link.
struct ToMember<Q> {
    qp: Q,
    slot: usize,
    /// Set once the member accepted: frames go to the ring from then on.
    writer: Option<RingWriter>,
    backlog: Backlog,
    view: SlotView,
    armed: bool,
}

/// The member's end of the primary's link.
struct FromPrimary<Q, R> {
    qp: Q,
    ring: R,
    reader: RingReader,
    acks: AckWriter,
    /// `RingSwitch` was read: the ring carries the primary's frames.
    switched: bool,
    /// The newest ack the driver sent: (epoch, received, durable).
    ack: Option<(u64, u64, u64)>,
    /// The driver sent an ack since the slot was last written.
    ack_due: bool,
    /// The consumed position the slot was last written with.
    slot_consumed: u64,
    armed: bool,
}

enum End<P: Provider> {
    ToMember(ToMember<P::Qp>),
    FromPrimary(FromPrimary<P::Qp, P::Region>),
}

/// What reading a member's ring gave.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RingRead {
    pub records: usize,
    /// The budget ran out with records left: the next wait must not sleep.
    pub more: bool,
    /// A frame waits for room in the log.
    pub stalled: bool,
}

/// What a frame from a ring asks of the reader.
pub enum Taken {
    Done,
    /// Offer the same frame again later (the log has no room now).
    Later,
    Close(String),
}

/// The rings of one shard's links.
pub struct Rings<P: Provider> {
    provider: P,
    chosen: Chosen,
    /// The ack slots of this shard's members (primary side), registered at the first
    /// offer.
    slots: Option<P::Region>,
    slot_used: Vec<bool>,
    ends: Vec<Option<End<P>>>,
    /// The token of the last offer: every offer's is new.
    next_token: u64,
    /// A bug planted for the simulator: the member's slot says durable what it has only
    /// received. Never set by the node.
    pub plant_ack_before_durable: bool,
}

impl<P: Provider> Rings<P> {
    pub fn new(provider: P, chosen: Chosen) -> Rings<P> {
        Rings {
            provider,
            chosen,
            slots: None,
            slot_used: vec![false; SLOTS_MAX],
            ends: Vec::new(),
            next_token: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64),
            plant_ack_before_durable: false,
        }
    }

    pub fn chosen(&self) -> Chosen {
        self.chosen
    }

    pub fn provider(&self) -> &P {
        &self.provider
    }

    fn end(&mut self, link: LinkId) -> Option<&mut End<P>> {
        self.ends.get_mut(link).and_then(Option::as_mut)
    }

    fn put(&mut self, link: LinkId, end: End<P>) {
        if self.ends.len() <= link {
            self.ends.resize_with(link + 1, || None);
        }
        self.drop_end(link);
        self.ends[link] = Some(end);
    }

    /// Forgets `link`'s ring (the link closed): its slot is free again, and dropping
    /// its region deregisters it.
    pub fn drop_end(&mut self, link: LinkId) {
        if let Some(end) = self.ends.get_mut(link).and_then(Option::take)
            && let End::ToMember(m) = end
        {
            self.slot_used[m.slot] = false;
        }
    }

    /// Whether `link` has a ring, offered or running.
    pub fn has_end(&self, link: LinkId) -> bool {
        self.ends.get(link).is_some_and(Option::is_some)
    }

    /// The transport `link` runs on now.
    pub fn transport_of(&self, link: LinkId) -> &'static str {
        let running = match self.ends.get(link).and_then(Option::as_ref) {
            Some(End::ToMember(m)) => m.writer.is_some(),
            Some(End::FromPrimary(p)) => p.switched,
            None => false,
        };
        if running { self.chosen.as_str() } else { "tcp" }
    }

    /// The primary offers a ring on `link` to a member: the `RingOffer` setup.
    pub fn offer(&mut self, link: LinkId) -> Result<Vec<u8>, String> {
        if self.chosen == Chosen::Tcp {
            return Err("this node runs tcp".into());
        }
        if self.slots.is_none() {
            let region = self
                .provider
                .register(SLOTS_MAX * SLOT_BYTES)
                .map_err(|e| format!("register the ack slots: {e}"))?;
            self.slots = Some(region);
        }
        let slot = self
            .slot_used
            .iter()
            .position(|used| !used)
            .ok_or_else(|| format!("all {SLOTS_MAX} ack slots are in use"))?;
        let qp = self
            .provider
            .create_qp(PRIMARY_SEND_BYTES)
            .map_err(|e| format!("create a queue pair: {e}"))?;
        self.next_token += 1;
        let token = self.next_token;
        let offer = Offer {
            transport: self.chosen.as_str().to_string(),
            endpoint: qp.endpoint(),
            slots: self.slots.as_ref().expect("registered").remote(),
            slot: slot as u32,
            token,
        };
        self.slot_used[slot] = true;
        let view = SlotView::new(token);
        self.put(
            link,
            End::ToMember(ToMember {
                qp,
                slot,
                writer: None,
                backlog: Backlog::default(),
                view,
                armed: false,
            }),
        );
        Ok(offer.encode())
    }

    /// The member's answer to an offer on `link` (it sends it back as `RingAccept`),
    /// and why it declines, if it does.
    pub fn on_offer(&mut self, link: LinkId, setup: &[u8]) -> (Vec<u8>, Option<String>) {
        match self.accept(link, setup) {
            Ok(a) => (a.encode(), None),
            Err(reason) => {
                let answer = Answer::Decline {
                    reason: reason.clone(),
                };
                (answer.encode(), Some(reason))
            }
        }
    }

    fn accept(&mut self, link: LinkId, setup: &[u8]) -> Result<Answer, String> {
        let offer = Offer::decode(setup)?;
        if offer.transport != self.chosen.as_str() {
            return Err(format!(
                "this node runs {}, the primary offers {}",
                self.chosen.as_str(),
                offer.transport
            ));
        }
        let ring = self
            .provider
            .register(RING_BYTES)
            .map_err(|e| format!("register a ring: {e}"))?;
        let mut qp = self
            .provider
            .create_qp(MEMBER_SEND_BYTES)
            .map_err(|e| format!("create a queue pair: {e}"))?;
        qp.connect(&offer.endpoint)
            .map_err(|e| format!("connect to the primary's queue pair: {e}"))?;
        if !offer
            .slots
            .holds(u64::from(offer.slot) * SLOT_BYTES as u64, SLOT_BYTES as u64)
        {
            return Err(format!("ack slot {} outside its region", offer.slot));
        }
        let answer = Answer::Accept {
            endpoint: qp.endpoint(),
            ring: ring.remote(),
        };
        self.put(
            link,
            End::FromPrimary(FromPrimary {
                acks: AckWriter::new(offer.slots, offer.slot as usize, offer.token),
                reader: RingReader::new(ring.len() as u64),
                qp,
                ring,
                switched: false,
                ack: None,
                ack_due: false,
                slot_consumed: 0,
                armed: false,
            }),
        );
        Ok(answer)
    }

    /// The member's answer on `link` reached the primary. `Ok(true)`: the ring runs,
    /// and the caller sends `RingSwitch` on TCP now; `Ok(false)`: declined, the link
    /// stays on TCP; `Err`: the setup failed (the link stays on TCP).
    pub fn on_answer(&mut self, link: LinkId, setup: &[u8]) -> Result<bool, String> {
        let answer = Answer::decode(setup);
        let Some(End::ToMember(m)) = self.end(link) else {
            return Err("an answer without an offer".into());
        };
        let (endpoint, ring) = match answer {
            Ok(Answer::Accept { endpoint, ring }) => (endpoint, ring),
            Ok(Answer::Decline { reason }) => {
                self.drop_end(link);
                return Err(format!("the member declines: {reason}"));
            }
            Err(e) => {
                self.drop_end(link);
                return Err(e);
            }
        };
        if let Err(e) = m.qp.connect(&endpoint) {
            self.drop_end(link);
            return Err(format!("connect to the member's queue pair: {e}"));
        }
        if !ring.len().is_multiple_of(super::ring::RECORD_ALIGN as u64)
            || ring.len() < (RING_BYTES / 2) as u64
        {
            self.drop_end(link);
            return Err(format!(
                "the member's ring of {} bytes is unusable",
                ring.len()
            ));
        }
        m.writer = Some(RingWriter::new(ring));
        Ok(true)
    }

    /// The member read `RingSwitch` on `link`: the ring carries the primary's frames.
    pub fn on_switch(&mut self, link: LinkId) -> Result<(), String> {
        match self.end(link) {
            Some(End::FromPrimary(p)) => {
                p.switched = true;
                Ok(())
            }
            _ => Err("RingSwitch without a ring".into()),
        }
    }

    /// Sends `message` through `link`'s ring if it runs one; `None`: send it on TCP.
    pub fn route(
        &mut self,
        link: LinkId,
        id: RequestId,
        message: &Message<'_>,
    ) -> Option<Result<(), TransportError>> {
        let plant = self.plant_ack_before_durable;
        match self.end(link)? {
            End::ToMember(m) => {
                m.writer.as_ref()?;
                if m.backlog.bytes() > RING_BACKLOG_BYTES_MAX {
                    return Some(Err(TransportError::Protocol {
                        link,
                        peer: "member".into(),
                        message: format!(
                            "ring backlog over {RING_BACKLOG_BYTES_MAX} bytes: the member does not consume"
                        ),
                    }));
                }
                let mut frame = Vec::new();
                if let Err(e) = message.encode_into(id, &mut frame) {
                    return Some(Err(TransportError::Protocol {
                        link,
                        peer: "member".into(),
                        message: e.to_string(),
                    }));
                }
                let (epoch, lsn) = match message {
                    Message::Replicate {
                        epoch, prev_lsn, ..
                    } => (*epoch, prev_lsn + 1),
                    Message::Heartbeat { epoch, commit_lsn } => (*epoch, *commit_lsn),
                    _ => (0, 0),
                };
                m.backlog.push(epoch, lsn, frame);
                Some(Ok(()))
            }
            End::FromPrimary(p) => {
                if !p.switched {
                    return None;
                }
                match message {
                    Message::Ack {
                        epoch,
                        received_lsn,
                        durable_lsn,
                    } => {
                        let durable = if plant { *received_lsn } else { *durable_lsn };
                        p.ack = Some((*epoch, *received_lsn, durable));
                        p.ack_due = true;
                        Some(Ok(()))
                    }
                    _ => None,
                }
            }
        }
    }

    /// The next record of the member's ring on `link` (once switched), left in place
    /// until [`Rings::consume`].
    fn peek(&mut self, link: LinkId) -> Result<Option<super::ring::RingRecord>, String> {
        let Some(End::FromPrimary(p)) = self.end(link) else {
            return Ok(None);
        };
        if !p.switched {
            return Ok(None);
        }
        if p.qp.state() == QpState::Error {
            return Err("queue pair in error".into());
        }
        p.reader.peek(&p.ring).map_err(|e| e.to_string())
    }

    fn consume(&mut self, link: LinkId, end: u64) {
        if let Some(End::FromPrimary(p)) = self.end(link) {
            p.reader.consume(end);
        }
    }

    /// The primary reads `link`'s ack slot: the member's ack when it wrote a new one.
    /// The slot's consumed position returns ring credits.
    pub fn read_ack(&mut self, link: LinkId) -> Result<Option<AckSlot>, String> {
        let Some(slots) = self.slots.as_ref() else {
            return Ok(None);
        };
        let Some(Some(End::ToMember(m))) = self.ends.get_mut(link) else {
            return Ok(None);
        };
        let Some(writer) = m.writer.as_mut() else {
            return Ok(None);
        };
        writer.reap(&mut m.qp).map_err(|e| e.to_string())?;
        if m.qp.state() == QpState::Error {
            return Err("queue pair in error".into());
        }
        let Some(slot) = m.view.poll(slots, m.slot).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        if slot.durable_lsn > slot.received_lsn {
            return Err(format!(
                "ack slot says durable {} beyond received {}",
                slot.durable_lsn, slot.received_lsn
            ));
        }
        writer
            .on_consumed(slot.consumed)
            .map_err(|e| e.to_string())?;
        // Epoch 0: the member has sent no ack on this ring yet; the slot only returns
        // credits. Any other slot is an ack, an unchanged one too (the member is alive).
        if slot.epoch == 0 {
            return Ok(None);
        }
        Ok(Some(slot))
    }

    /// Posts what `link` has for its peer: frames into the ring as far as credits go
    /// (primary), the newest ack into the slot (member).
    pub fn flush(&mut self, link: LinkId) -> Result<(), String> {
        match self.end(link) {
            Some(End::ToMember(m)) => {
                let Some(writer) = m.writer.as_mut() else {
                    return Ok(());
                };
                m.backlog
                    .drain_into(writer, &mut m.qp)
                    .map_err(|e| e.to_string())?;
                writer.flush(&mut m.qp).map_err(|e| e.to_string())
            }
            Some(End::FromPrimary(p)) => {
                p.acks
                    .reap(&mut p.qp)
                    .map_err(|s| format!("ack slot write completed with {s:?}"))?;
                // The slot is written for every ack the driver sent, and also when a
                // quarter of the ring was consumed since the last write, so credits
                // return while nothing new becomes durable (heartbeats only).
                let consumed = p.reader.position();
                let credits_due = consumed >= p.slot_consumed + (RING_BYTES / 4) as u64;
                if !p.ack_due && !credits_due {
                    return Ok(());
                }
                let (epoch, received, durable) = p.ack.unwrap_or((0, 0, 0));
                p.ack_due = false;
                p.slot_consumed = consumed;
                p.acks
                    .write(&mut p.qp, epoch, received, durable, consumed)
                    .map_err(|e| e.to_string())?;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Wake-up descriptors to arm: (link, descriptor) of every end not armed yet.
    pub fn to_arm(&mut self) -> Vec<(LinkId, Arc<OwnedFd>)> {
        let mut out = Vec::new();
        for (link, end) in self.ends.iter_mut().enumerate() {
            let (qp_fd, armed) = match end {
                Some(End::ToMember(m)) if m.writer.is_some() => (m.qp.wakeup_fd(), &mut m.armed),
                Some(End::FromPrimary(p)) if p.switched => (p.qp.wakeup_fd(), &mut p.armed),
                _ => continue,
            };
            if !*armed {
                *armed = true;
                out.push((link, qp_fd.clone()));
            }
        }
        out
    }

    /// `link`'s wake-up descriptor became readable.
    pub fn on_wakeup(&mut self, link: LinkId) {
        match self.end(link) {
            Some(End::ToMember(m)) => {
                m.armed = false;
                m.qp.take_wakeups();
            }
            Some(End::FromPrimary(p)) => {
                p.armed = false;
                p.qp.take_wakeups();
            }
            None => {}
        }
    }

    /// Links with a ring, for the shard's turn.
    pub fn links(&self) -> Vec<LinkId> {
        self.ends
            .iter()
            .enumerate()
            .filter(|(_, e)| e.is_some())
            .map(|(l, _)| l)
            .collect()
    }
}

/// Links whose host runs rings: the node's shard ([`NodeLinks`]) and the simulator's
/// processes. The stream driver runs a ring's setup and fallback through it
/// (`stream::rings`).
pub trait RingLinks<P: Provider>: Links {
    fn rings(&self) -> &Rings<P>;
    fn rings_mut(&mut self) -> &mut Rings<P>;
    /// Sends a setup frame on `link`'s TCP connection, never into its ring:
    /// `RingSwitch` is the last frame the member reads there.
    fn send_on_tcp(&mut self, link: LinkId, message: &Message<'_>) -> Result<(), TransportError>;
}

impl<P: Provider> RingLinks<P> for NodeLinks<P> {
    fn rings(&self) -> &Rings<P> {
        &self.rings
    }

    fn rings_mut(&mut self) -> &mut Rings<P> {
        &mut self.rings
    }

    fn send_on_tcp(&mut self, link: LinkId, message: &Message<'_>) -> Result<(), TransportError> {
        self.tcp.send(link, RequestId(0), message)
    }
}

/// The member reads up to its budget of frames from `link`'s ring, handing each to
/// `take` with the links (the driver answers on them).
pub fn read_ring<P: Provider, L: RingLinks<P>>(
    links: &mut L,
    link: LinkId,
    mut take: impl FnMut(&mut L, &Frame<'_>) -> Taken,
) -> Result<RingRead, String> {
    let mut read = RingRead::default();
    while read.records < RING_RECORDS_PER_TURN {
        let Some(rec) = links.rings_mut().peek(link)? else {
            return Ok(read);
        };
        let frame = Frame::parse(&rec.body).map_err(|e| format!("ring frame: {e}"))?;
        match take(links, &frame) {
            Taken::Done => {}
            Taken::Later => {
                read.stalled = true;
                return Ok(read);
            }
            Taken::Close(why) => return Err(why),
        }
        links.rings_mut().consume(link, rec.end);
        read.records += 1;
    }
    read.more = true;
    Ok(read)
}

/// A shard's links: TCP connections, some of which run a ring.
pub struct NodeLinks<P: Provider> {
    pub tcp: TcpLinks,
    pub rings: Rings<P>,
}

impl<P: Provider> Links for NodeLinks<P> {
    fn send(
        &mut self,
        link: LinkId,
        id: RequestId,
        message: &Message<'_>,
    ) -> Result<(), TransportError> {
        if !self.tcp.is_open(link) {
            return Err(TransportError::Closed(link));
        }
        match self.rings.route(link, id, message) {
            Some(result) => result,
            None => self.tcp.send(link, id, message),
        }
    }

    fn close(&mut self, link: LinkId, why: &str) {
        self.tcp.close(link, why);
    }

    fn is_open(&self, link: LinkId) -> bool {
        self.tcp.is_open(link)
    }
}

#[cfg(test)]
mod tests {
    use super::super::emulated::EmulatedProvider;
    use super::*;
    use crate::wire::{RecordRef, Records};

    /// A member's log as the driver keeps it: records appended in order, a gap or a
    /// duplicate refused.
    #[derive(Default)]
    struct MemberLog {
        lsns: Vec<u64>,
    }

    impl MemberLog {
        fn last(&self) -> u64 {
            self.lsns.last().copied().unwrap_or(0)
        }

        fn take(&mut self, frame: &Frame<'_>) -> Taken {
            let Message::Replicate {
                prev_lsn, records, ..
            } = &frame.message
            else {
                return Taken::Close(format!("unexpected {}", frame.message.kind()));
            };
            assert_eq!(*prev_lsn, self.last(), "no gap and no duplicate");
            for r in records.iter() {
                self.lsns.push(r.lsn);
            }
            Taken::Done
        }
    }

    fn replicate<P: Provider>(links: &mut Rings<P>, link: LinkId, lsn: u64) -> bool {
        replicate_payload(links, link, lsn, &lsn.to_le_bytes())
    }

    /// Sends record `lsn` with `payload` through `link`'s ring; false: not on a ring.
    fn replicate_payload<P: Provider>(
        links: &mut Rings<P>,
        link: LinkId,
        lsn: u64,
        payload: &[u8],
    ) -> bool {
        let recs = [RecordRef {
            lsn,
            epoch: 1,
            payload,
        }];
        let m = Message::Replicate {
            epoch: 1,
            prev_lsn: lsn - 1,
            prev_epoch: if lsn == 1 { 0 } else { 1 },
            commit_lsn: 0,
            records: Records::new(&recs),
        };
        match links.route(link, RequestId(0), &m) {
            Some(r) => {
                r.unwrap();
                true
            }
            None => false,
        }
    }

    /// Primary and member ends of one link, set up as the shard does it.
    fn set_up<P: Provider>(primary: &mut Rings<P>, member: &mut Rings<P>, link: LinkId) {
        let offer = primary.offer(link).unwrap();
        let (answer, declined) = member.on_offer(link, &offer);
        assert_eq!(declined, None);
        assert!(primary.on_answer(link, &answer).unwrap());
        member.on_switch(link).unwrap();
        assert_eq!(primary.transport_of(link), primary.chosen().as_str());
        assert_eq!(member.transport_of(link), member.chosen().as_str());
    }

    /// Reads the member's ring into `log` as the shard's turn does, without the TCP
    /// side (the tests below play it).
    fn read_all<P: Provider>(
        member: &mut Rings<P>,
        link: LinkId,
        log: &mut MemberLog,
    ) -> Result<(), String> {
        loop {
            let Some(rec) = member.peek(link)? else {
                return Ok(());
            };
            let frame = Frame::parse(&rec.body).map_err(|e| e.to_string())?;
            match log.take(&frame) {
                Taken::Done => member.consume(link, rec.end),
                _ => unreachable!(),
            }
        }
    }

    /// The member acks what it holds; the primary reads the slot.
    fn ack<P: Provider>(
        primary: &mut Rings<P>,
        member: &mut Rings<P>,
        link: LinkId,
        log: &MemberLog,
    ) -> Result<Option<AckSlot>, String> {
        let last = log.last();
        let a = Message::Ack {
            epoch: 1,
            received_lsn: last,
            durable_lsn: last,
        };
        member.route(link, RequestId(0), &a).unwrap().unwrap();
        member.flush(link)?;
        primary.read_ack(link)
    }

    #[test]
    fn a_qp_error_mid_stream_falls_back_to_tcp_and_reconnects_without_loss_or_duplicate() {
        let mut primary = Rings::new(EmulatedProvider::new(), Chosen::RdmaEmu);
        let mut member = Rings::new(EmulatedProvider::new(), Chosen::RdmaEmu);
        let mut log = MemberLog::default();
        let mut link = 0;
        set_up(&mut primary, &mut member, link);
        let mut next = 1;
        // The primary's queue pair fails after a few batches, mid-stream.
        primary
            .provider()
            .faults()
            .lock()
            .unwrap()
            .error_after_writes = Some(3);
        let mut failed_at = None;
        while next <= 200 {
            for _ in 0..5 {
                assert!(replicate(&mut primary, link, next));
                next += 1;
            }
            let flushed = primary.flush(link);
            let read = read_all(&mut member, link, &mut log);
            let acked = ack(&mut primary, &mut member, link, &log);
            if flushed.is_err()
                || read.is_err()
                || acked.is_err()
                || primary.read_ack(link).is_err()
            {
                failed_at = Some(next);
                break;
            }
        }
        let failed_at = failed_at.expect("the injected error failed the ring");
        assert!(
            log.last() < failed_at - 1,
            "the failure cut the stream short: the fallback has records to resend"
        );
        // Fallback: the link closes (both ends drop their rings); the primary greets
        // the member again on TCP, whose answer is where the member's log ends, and
        // sends from there on TCP.
        primary.drop_end(link);
        member.drop_end(link);
        link += 1;
        assert_eq!(primary.transport_of(link), "tcp");
        let resume = log.last() + 1;
        for lsn in resume..resume + 10 {
            assert!(!replicate(&mut primary, link, lsn), "TCP carries it");
            log.lsns.push(lsn);
        }
        // Reconnection: a ring again on the new link, from where TCP left off.
        set_up(&mut primary, &mut member, link);
        let from = log.last() + 1;
        for lsn in from..from + 300 {
            assert!(replicate(&mut primary, link, lsn));
            if lsn % 7 == 0 {
                primary.flush(link).unwrap();
                read_all(&mut member, link, &mut log).unwrap();
                ack(&mut primary, &mut member, link, &log).unwrap();
            }
        }
        primary.flush(link).unwrap();
        read_all(&mut member, link, &mut log).unwrap();
        let slot = ack(&mut primary, &mut member, link, &log).unwrap().unwrap();
        assert_eq!(slot.durable_lsn, from + 299);
        assert_eq!(log.lsns, (1..from + 300).collect::<Vec<_>>());
    }

    #[test]
    fn a_restarted_member_gets_a_new_ring_and_the_old_one_is_not_heard() {
        let mut primary = Rings::new(EmulatedProvider::new(), Chosen::RdmaEmu);
        let mut member = Rings::new(EmulatedProvider::new(), Chosen::RdmaEmu);
        let mut log = MemberLog::default();
        set_up(&mut primary, &mut member, 0);
        for lsn in 1..=50 {
            assert!(replicate(&mut primary, 0, lsn));
        }
        primary.flush(0).unwrap();
        read_all(&mut member, 0, &mut log).unwrap();
        assert_eq!(
            ack(&mut primary, &mut member, 0, &log)
                .unwrap()
                .unwrap()
                .durable_lsn,
            50
        );
        // The member's process restarts: its rings and queue pairs are gone (its log,
        // durable, stays); the primary sees the link close.
        drop(member);
        primary.drop_end(0);
        let mut member = Rings::new(EmulatedProvider::new(), Chosen::RdmaEmu);
        // The new link reuses the slot; the new member starts its acks from zero.
        set_up(&mut primary, &mut member, 3);
        for lsn in 51..=80 {
            assert!(replicate(&mut primary, 3, lsn));
        }
        primary.flush(3).unwrap();
        read_all(&mut member, 3, &mut log).unwrap();
        let slot = ack(&mut primary, &mut member, 3, &log).unwrap().unwrap();
        assert_eq!(slot.durable_lsn, 80);
        assert_eq!(log.lsns, (1..=80).collect::<Vec<_>>());
    }

    #[test]
    fn a_member_that_stops_reading_holds_the_primary_back_until_it_reads() {
        let mut primary = Rings::new(EmulatedProvider::new(), Chosen::RdmaEmu);
        let mut member = Rings::new(EmulatedProvider::new(), Chosen::RdmaEmu);
        let mut log = MemberLog::default();
        set_up(&mut primary, &mut member, 0);
        // 64 KiB records: the 8 MiB ring takes under 128 of them.
        let big = vec![7u8; 64 << 10];
        for lsn in 1..=200 {
            assert!(replicate_payload(&mut primary, 0, lsn, &big));
        }
        primary.flush(0).unwrap();
        read_all(&mut member, 0, &mut log).unwrap();
        let placed = log.last();
        assert!(placed < 128 && placed > 100, "the ring took {placed}");
        // Nothing more is placed until the member reports its position.
        primary.flush(0).unwrap();
        read_all(&mut member, 0, &mut log).unwrap();
        assert_eq!(log.last(), placed);
        ack(&mut primary, &mut member, 0, &log).unwrap();
        while log.last() < 200 {
            primary.flush(0).unwrap();
            read_all(&mut member, 0, &mut log).unwrap();
            ack(&mut primary, &mut member, 0, &log).unwrap();
        }
        assert_eq!(log.lsns, (1..=200).collect::<Vec<_>>());
    }

    #[test]
    fn a_member_of_another_transport_declines() {
        let mut primary = Rings::new(EmulatedProvider::new(), Chosen::RdmaEmu);
        let mut member = Rings::new(EmulatedProvider::new(), Chosen::Tcp);
        let offer = primary.offer(0).unwrap();
        let (answer, declined) = member.on_offer(0, &offer);
        assert!(declined.unwrap().contains("this node runs tcp"));
        assert!(primary.on_answer(0, &answer).is_err());
        assert_eq!(primary.transport_of(0), "tcp");
        assert!(!primary.has_end(0));
    }

    /// Hardware test: the ring protocol (set-up, records over many laps, acks and
    /// credits) on an RDMA device, loopback between two providers of this host. Needs a
    /// NIC or soft-RoCE (`tools/soft-roce-rig`); skips with the probe's reason without.
    #[test]
    fn the_ring_protocol_runs_on_a_device() {
        use super::super::device::DeviceProvider;
        let choice = lockstep_sys::verbs::DeviceChoice::from_env();
        if let Err(why) = lockstep_sys::verbs::probe(&choice) {
            eprintln!("skipped: rdma: {why}");
            return;
        }
        let open = || DeviceProvider::open(&choice).expect("the probe opened it");
        let mut primary = Rings::new(open(), Chosen::Rdma);
        let mut member = Rings::new(open(), Chosen::Rdma);
        let mut log = MemberLog::default();
        set_up(&mut primary, &mut member, 0);
        // 4 KiB records: the 8 MiB ring laps more than once.
        let body = vec![3u8; 4 << 10];
        let mut next = 1;
        while next <= 5000 {
            for _ in 0..50 {
                assert!(replicate_payload(&mut primary, 0, next, &body));
                next += 1;
            }
            primary.flush(0).unwrap();
            // The NIC places the writes asynchronously: read until they are all in.
            for _ in 0..10_000 {
                // As the shard does on a wake-up: receives taken and posted again, so
                // the peer's writes with immediate always find one.
                member.on_wakeup(0);
                read_all(&mut member, 0, &mut log).unwrap();
                if log.last() == next - 1 {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
            assert_eq!(log.last(), next - 1, "every record placed");
            let mut acked = None;
            for _ in 0..10_000 {
                primary.on_wakeup(0);
                acked = ack(&mut primary, &mut member, 0, &log).unwrap();
                if acked.is_some_and(|a| a.durable_lsn == next - 1) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
            assert_eq!(acked.map(|a| a.durable_lsn), Some(next - 1));
        }
        assert_eq!(log.lsns, (1..next).collect::<Vec<_>>());
    }
}
