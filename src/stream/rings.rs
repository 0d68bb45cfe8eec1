//! A ring's life on a peer link, run by the driver for every host alike (the node's
//! shard and the simulator's process): the setup handshake of
//! [`transport::rdma::setup`](crate::transport::rdma::setup) (`RingOffer`, `RingAccept`,
//! `RingSwitch`), the pause before a ring is offered again, reading a member's ring and
//! a primary's ack slots, and the fallback to TCP when a ring fails.
//!
//! Sans-I/O like the rest of the driver: the regions and queue pairs live in the
//! host's [`Rings`](crate::transport::rdma::link::Rings), reached through its
//! [`RingLinks`]; frames leave through the host's links; time comes in as [`Time`];
//! what happened is told in [`Note`]s, which the host logs. The host keeps only what is
//! its own: which of its connections is which ([`LinkKind`]), and the wake-up
//! descriptors it waits on.
//!
//! Invariants:
//! - setup frames go on the link's TCP connection, never into its ring: `RingSwitch` is
//!   the last frame the primary sends there, and the member reads the ring only after
//!   it, so no frame overtakes another;
//! - a ring that fails (a queue pair in error, a refused record, an ack slot going
//!   backwards, a wake-up that cannot be waited on) closes its whole link with one
//!   note, `... falling back to tcp`: the primary greets the member again on TCP and
//!   the greeting says where the member's log ends, so nothing is lost or sent twice;
//! - after a failure, a decline or a setup error, a ring is offered to that member
//!   again only after [`Options::ring_retry_ticks`](super::Options), so a member that
//!   cannot run one stays on TCP without a storm of offers.

use crate::replication::NodeId;
use crate::transport::LinkId;
use crate::transport::rdma::link::{RingLinks, Taken, read_ring};
use crate::transport::rdma::setup::Chosen;
use crate::transport::rdma::verbs::Provider;
use crate::wire::Message;

use super::{Handled, LogStore, Note, StreamDriver, Time};

/// What a host's connection carries, as the host knows from its greeting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    Client,
    /// From the stream's primary: this node is its member.
    FromPrimary,
    /// To a member: this node is the stream's primary.
    ToMember,
}

impl<S: LogStore> StreamDriver<S> {
    /// A frame of a ring's setup on `link`; `None` when the frame is not one (the
    /// caller hands it to [`StreamDriver::on_peer`] or [`StreamDriver::on_client`]).
    pub fn on_ring_setup<P: Provider, L: RingLinks<P>>(
        &mut self,
        links: &mut L,
        link: LinkId,
        kind: LinkKind,
        msg: &Message<'_>,
        now: Time,
    ) -> Option<Handled> {
        let reply = |links: &mut L, m: &Message<'_>| match links.send_on_tcp(link, m) {
            Ok(()) => Handled::Done,
            Err(e) => Handled::Close(e.to_string()),
        };
        match (kind, msg) {
            (LinkKind::FromPrimary, Message::RingOffer { setup }) => {
                let (answer, declined) = links.rings_mut().on_offer(link, setup);
                if let Some(why) = declined {
                    self.note(Note::RingDeclined { why });
                }
                Some(reply(links, &Message::RingAccept { setup: &answer }))
            }
            (LinkKind::FromPrimary, Message::RingSwitch) => {
                Some(match links.rings_mut().on_switch(link) {
                    Ok(()) => {
                        self.note(Note::RingSwitched { link });
                        Handled::Done
                    }
                    Err(why) => Handled::Close(why),
                })
            }
            (LinkKind::ToMember, Message::RingAccept { setup }) => {
                // An answer on a link no member holds any more is the driver's to
                // refuse, as any frame there.
                let member = self.member_of(link)?;
                match links.rings_mut().on_answer(link, setup) {
                    Ok(_) => {
                        let transport = links.rings().chosen();
                        self.note(Note::RingRuns { member, transport });
                        Some(reply(links, &Message::RingSwitch))
                    }
                    Err(why) => {
                        self.note(Note::RingNotTaken { member, why });
                        self.retry_ring_later(member, now);
                        Some(Handled::Done)
                    }
                }
            }
            (_, Message::RingOffer { .. } | Message::RingSwitch | Message::RingAccept { .. }) => {
                Some(Handled::Close(format!(
                    "unexpected {} on this link",
                    msg.kind()
                )))
            }
            _ => None,
        }
    }

    /// A primary offers a ring to every member whose log agrees with its own and whose
    /// open link has none, unless that member's last ring ended too recently.
    pub fn offer_rings<P: Provider, L: RingLinks<P>>(&mut self, links: &mut L, now: Time) {
        if links.rings().chosen() == Chosen::Tcp || !self.is_primary() {
            return;
        }
        let connected = self.connected_members();
        let offers: Vec<(NodeId, LinkId)> = self
            .members()
            .filter_map(|(id, _, link)| Some((id, link?)))
            .filter(|(id, link)| {
                connected.contains(id)
                    && !links.rings().has_end(*link)
                    && links.is_open(*link)
                    && self.ring_retry.get(id).is_none_or(|at| now >= *at)
            })
            .collect();
        for (member, link) in offers {
            match links.rings_mut().offer(link) {
                Ok(setup) => {
                    // A link that closed meanwhile drops the offer with it.
                    let _ = links.send_on_tcp(link, &Message::RingOffer { setup: &setup });
                }
                Err(why) => {
                    self.note(Note::NoRing { member, why });
                    self.retry_ring_later(member, now);
                }
            }
        }
    }

    /// Reads `link`'s ring once this turn: a member takes its primary's records (within
    /// [`RING_RECORDS_PER_TURN`](crate::transport::rdma::link::RING_RECORDS_PER_TURN)),
    /// a primary its member's ack slot. Returns whether the ring has more to read or a
    /// record waits for room in the log (the host's next wait must not sleep).
    pub fn read_ring<P: Provider, L: RingLinks<P>>(
        &mut self,
        links: &mut L,
        link: LinkId,
        kind: LinkKind,
        now: Time,
    ) -> bool {
        if !links.is_open(link) {
            return false;
        }
        let read = match kind {
            LinkKind::FromPrimary => read_ring(links, link, |links, frame| {
                match self.on_peer(links, link, &frame.message, now) {
                    Handled::Done => Taken::Done,
                    Handled::Later => Taken::Later,
                    Handled::Close(why) => Taken::Close(why),
                }
            })
            .map(|r| r.more || r.stalled),
            LinkKind::ToMember => links.rings_mut().read_ack(link).map(|slot| {
                if let Some(slot) = slot {
                    let ack = Message::Ack {
                        epoch: slot.epoch,
                        received_lsn: slot.received_lsn,
                        durable_lsn: slot.durable_lsn,
                    };
                    // An ack the driver refuses ends the link as it would on TCP: the
                    // ring itself did not fail.
                    if let Handled::Close(why) = self.on_peer(links, link, &ack, now) {
                        links.close(link, &why);
                    }
                }
                false
            }),
            LinkKind::Client => Ok(false),
        };
        read.unwrap_or_else(|why| {
            self.ring_failed(links, link, &why, now);
            false
        })
    }

    /// Posts what `link`'s ring has for the peer (records as far as credits go, or the
    /// newest ack); a failure falls back to TCP.
    pub fn flush_ring<P: Provider, L: RingLinks<P>>(
        &mut self,
        links: &mut L,
        link: LinkId,
        now: Time,
    ) {
        if let Err(why) = links.rings_mut().flush(link) {
            self.ring_failed(links, link, &why, now);
        }
    }

    /// `link`'s ring failed: one note, the ring is dropped and the whole link closes, so
    /// the member is greeted again on TCP and the greeting says where to resume. A ring
    /// is offered to that member again after a pause.
    pub fn ring_failed<P: Provider, L: RingLinks<P>>(
        &mut self,
        links: &mut L,
        link: LinkId,
        why: &str,
        now: Time,
    ) {
        let member = self.member_of(link);
        if let Some(m) = member {
            self.retry_ring_later(m, now);
        }
        self.note(Note::RingFailed {
            member,
            why: why.to_string(),
        });
        links.rings_mut().drop_end(link);
        links.close(link, &format!("rdma: {why}"));
    }

    fn retry_ring_later(&mut self, member: NodeId, now: Time) {
        let pause = Time::from_ticks(self.options.ring_retry_ticks);
        let at = Time::from_micros(now.micros() + pause.micros());
        self.ring_retry.insert(member, at);
    }

    /// The member this primary's `link` goes to.
    fn member_of(&self, link: LinkId) -> Option<NodeId> {
        self.members()
            .find(|(_, _, l)| *l == Some(link))
            .map(|(id, _, _)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::StreamSettings;
    use crate::sim::disk::Disk;
    use crate::stream::{Options, Output, StreamSpec};
    use crate::transport::rdma::emulated::EmulatedProvider;
    use crate::transport::rdma::link::Rings;
    use crate::transport::{Links, TransportError};
    use crate::wire::{Frame, RequestId};

    /// One node's links of the test: frames sent on TCP are kept to be handed over by
    /// the test; frames a ring carries stay in the ring.
    struct TestLinks {
        rings: Rings<EmulatedProvider>,
        tcp: Vec<Vec<u8>>,
        closed: Vec<String>,
    }

    impl TestLinks {
        fn new(chosen: Chosen) -> TestLinks {
            TestLinks {
                rings: Rings::new(EmulatedProvider::new(), chosen),
                tcp: Vec::new(),
                closed: Vec::new(),
            }
        }

        /// The setup frames sent on TCP since the last call (the greeting's others
        /// are dropped).
        fn setup_frames(&mut self) -> Vec<Vec<u8>> {
            self.tcp
                .drain(..)
                .filter(|f| {
                    let m = Frame::parse(f).unwrap().message;
                    matches!(
                        m,
                        Message::RingOffer { .. }
                            | Message::RingAccept { .. }
                            | Message::RingSwitch
                    )
                })
                .collect()
        }
    }

    impl Links for TestLinks {
        fn send(
            &mut self,
            link: LinkId,
            id: RequestId,
            m: &Message<'_>,
        ) -> Result<(), TransportError> {
            if let Some(r) = self.rings.route(link, id, m) {
                return r;
            }
            let mut frame = Vec::new();
            m.encode_into(id, &mut frame).unwrap();
            self.tcp.push(frame);
            Ok(())
        }

        fn close(&mut self, _link: LinkId, why: &str) {
            self.closed.push(why.to_string());
        }

        fn is_open(&self, _link: LinkId) -> bool {
            self.closed.is_empty()
        }
    }

    impl RingLinks<EmulatedProvider> for TestLinks {
        fn rings(&self) -> &Rings<EmulatedProvider> {
            &self.rings
        }

        fn rings_mut(&mut self) -> &mut Rings<EmulatedProvider> {
            &mut self.rings
        }

        fn send_on_tcp(&mut self, _link: LinkId, m: &Message<'_>) -> Result<(), TransportError> {
            let mut frame = Vec::new();
            m.encode_into(RequestId(0), &mut frame).unwrap();
            self.tcp.push(frame);
            Ok(())
        }
    }

    const LINK: LinkId = 4;

    /// Node `id` of a two-node stream whose primary is node 1.
    fn driver(id: NodeId) -> StreamDriver<Disk> {
        let spec = StreamSpec {
            name: "s".into(),
            primary: 1,
            members: StreamSpec::members_of(&[1, 2], &[]),
            settings: StreamSettings::default(),
            request_timeout_ms: 1000,
            retain_segments: None,
        };
        let options = Options {
            trace: true,
            latency: false,
            ring_retry_ticks: 100,
            ..Options::default()
        };
        let members = if id == 1 {
            vec![(2, "n2".to_string())]
        } else {
            Vec::new()
        };
        StreamDriver::new(
            spec,
            id,
            Disk::default(),
            1,
            1,
            None,
            members,
            None,
            options,
        )
    }

    /// The driver's notes of rings since the last call.
    fn ring_notes(d: &mut StreamDriver<Disk>) -> Vec<Note> {
        d.take_outputs()
            .filter_map(|o| match o {
                Output::Note(
                    n @ (Note::RingDeclined { .. }
                    | Note::RingSwitched { .. }
                    | Note::RingRuns { .. }
                    | Note::RingNotTaken { .. }
                    | Note::NoRing { .. }
                    | Note::RingFailed { .. }),
                ) => Some(n),
                _ => None,
            })
            .collect()
    }

    fn notes(d: &mut StreamDriver<Disk>) -> Vec<String> {
        ring_notes(d).iter().map(Note::to_string).collect()
    }

    /// Hands each setup frame `from` sent to `to`'s driver, as the host's reader does.
    fn deliver(
        from: &mut TestLinks,
        to: &mut StreamDriver<Disk>,
        to_links: &mut TestLinks,
        kind: LinkKind,
        now: Time,
    ) -> usize {
        let frames = from.setup_frames();
        for f in &frames {
            let m = Frame::parse(f).unwrap().message;
            let handled = to.on_ring_setup(to_links, LINK, kind, &m, now);
            assert_eq!(handled, Some(Handled::Done));
        }
        frames.len()
    }

    /// A primary with its member greeted on `LINK`, and the member.
    fn pair(
        member_chosen: Chosen,
    ) -> (StreamDriver<Disk>, TestLinks, StreamDriver<Disk>, TestLinks) {
        let (mut p, mut pl) = (driver(1), TestLinks::new(Chosen::RdmaEmu));
        let (m, ml) = (driver(2), TestLinks::new(member_chosen));
        p.on_member_connected(&mut pl, 2, LINK, 0, 0, 0);
        assert_eq!(p.connected_members(), vec![2]);
        notes(&mut p);
        (p, pl, m, ml)
    }

    #[test]
    fn the_handshake_switches_the_link_after_its_last_tcp_frame() {
        let (mut p, mut pl, mut m, mut ml) = pair(Chosen::RdmaEmu);
        let t = Time::from_ticks(10);
        p.offer_rings(&mut pl, t);
        assert_eq!(
            deliver(&mut pl, &mut m, &mut ml, LinkKind::FromPrimary, t),
            1
        );
        assert_eq!(deliver(&mut ml, &mut p, &mut pl, LinkKind::ToMember, t), 1);
        assert_eq!(notes(&mut p), ["link to member 2 runs on rdma-emu"]);
        // RingSwitch went on TCP although the ring already runs.
        assert_eq!(pl.rings.transport_of(LINK), "rdma-emu");
        assert_eq!(
            deliver(&mut pl, &mut m, &mut ml, LinkKind::FromPrimary, t),
            1
        );
        assert_eq!(notes(&mut m), [format!("ring on link {LINK}")]);
        assert_eq!(ml.rings.transport_of(LINK), "rdma-emu");
        // A link with a ring is offered none again.
        p.offer_rings(&mut pl, t);
        assert!(pl.setup_frames().is_empty());
    }

    #[test]
    fn a_declined_ring_is_offered_again_only_after_the_pause() {
        let (mut p, mut pl, mut m, mut ml) = pair(Chosen::Tcp);
        let t = Time::from_ticks(10);
        p.offer_rings(&mut pl, t);
        deliver(&mut pl, &mut m, &mut ml, LinkKind::FromPrimary, t);
        assert_eq!(
            notes(&mut m),
            [
                "rdma: declined the primary's ring (this node runs tcp, the primary offers rdma-emu); the link stays on tcp"
            ]
        );
        deliver(&mut ml, &mut p, &mut pl, LinkKind::ToMember, t);
        let n = ring_notes(&mut p);
        assert_eq!(n.len(), 1);
        assert!(n[0].warns());
        assert!(
            n[0].to_string()
                .starts_with("rdma: link to member 2 stays on tcp: the member declines"),
            "{n:?}"
        );
        assert_eq!(pl.rings.transport_of(LINK), "tcp");
        p.offer_rings(&mut pl, Time::from_ticks(109));
        assert!(pl.setup_frames().is_empty(), "offered within the pause");
        p.offer_rings(&mut pl, Time::from_ticks(110));
        assert_eq!(pl.setup_frames().len(), 1, "offered after the pause");
    }

    #[test]
    fn a_failed_ring_closes_its_link_with_one_note_and_pauses_offers() {
        let (mut p, mut pl, mut m, mut ml) = pair(Chosen::RdmaEmu);
        let t = Time::from_ticks(10);
        p.offer_rings(&mut pl, t);
        deliver(&mut pl, &mut m, &mut ml, LinkKind::FromPrimary, t);
        deliver(&mut ml, &mut p, &mut pl, LinkKind::ToMember, t);
        deliver(&mut pl, &mut m, &mut ml, LinkKind::FromPrimary, t);
        notes(&mut p);
        notes(&mut m);
        p.ring_failed(&mut pl, LINK, "queue pair in error", t);
        assert_eq!(
            notes(&mut p),
            ["rdma link to member 2 failed: queue pair in error; falling back to tcp"]
        );
        assert_eq!(pl.closed, ["rdma: queue pair in error"]);
        assert!(!pl.rings.has_end(LINK));
        // The link is closed here; open again, the pause still holds offers back.
        pl.closed.clear();
        p.offer_rings(&mut pl, Time::from_ticks(50));
        assert!(pl.setup_frames().is_empty());
        // The member's side of a failure names the primary.
        m.ring_failed(&mut ml, LINK, "ring frame: bad crc", t);
        assert_eq!(
            notes(&mut m),
            ["rdma link to the primary failed: ring frame: bad crc; falling back to tcp"]
        );
    }

    #[test]
    fn setup_frames_on_the_wrong_link_close_it() {
        let (mut p, mut pl, _, _) = pair(Chosen::RdmaEmu);
        let t = Time::from_ticks(1);
        for kind in [LinkKind::Client, LinkKind::ToMember] {
            let h = p.on_ring_setup(&mut pl, LINK, kind, &Message::RingSwitch, t);
            assert_eq!(
                h,
                Some(Handled::Close("unexpected RingSwitch on this link".into()))
            );
        }
        let other = Message::Heartbeat {
            epoch: 1,
            commit_lsn: 0,
        };
        assert_eq!(
            p.on_ring_setup(&mut pl, LINK, LinkKind::ToMember, &other, t),
            None
        );
    }
}
