//! What the node does around the stream driver, for a simulated process: production's
//! shard, acceptor and dialer in miniature. The driver is the node's own
//! ([`crate::stream`]); nothing of the protocol is decided here.
//!
//! - Links: the driver sends through [`SimLinks`], which encodes every message into a
//!   wire frame; the network carries the bytes, and the receiver decodes them, so the
//!   codec runs under every fault. Clients have links of their own
//!   ([`CLIENT_LINKS`] and up), answered at once.
//! - A dialled member is greeted with `PeerHello`; its first answer is `PeerWelcome`
//!   (handed to the driver as production's dialer does) or a refusal (the link closes).
//!   The first frame on an accepted connection must be `PeerHello`, as the acceptor
//!   requires.
//! - The driver's outputs: the epoch is stored on the disk at once (its EPOCH file),
//!   fence answers and requests go to the controller, and every note becomes a line of
//!   the trace and, where the checker needs it, a [`NodeEvent`].

use std::collections::BTreeMap;

use crate::control::{ControlMsg, Policy, Request, StreamRoles};
use crate::log::LogError;
use crate::replication::{Mode, NodeId, StreamSettings};
use crate::sim::Rec;
use crate::sim::disk::Disk;
use crate::sim::event::NodeEvent;
use crate::sim::network::{ConnId, Network};
use crate::sim::node::Config;
use crate::sim::workload::{ClientRef, Reply};
use crate::stream::{Handled, LinkKind, Note, Output, RolesApplied, StreamDriver, Time};
use crate::transport::rdma::emulated::EmulatedProvider;
use crate::transport::rdma::link::{RingLinks, Rings};
use crate::transport::{LinkId, Links, TransportError};
use crate::wire::{ErrorCode, Frame, Message, Payloads, RequestId};

/// Links from this id up are clients' (client `c` has `CLIENT_LINKS + c`); below are
/// the network's connections.
pub const CLIENT_LINKS: LinkId = 1 << 62;

/// Ticks between two dials of a member that is not connected.
const REDIAL_TICKS: u64 = 10;

/// Room for most frames of a run (larger ones grow their buffer).
const FRAME_BYTES_GUESS: usize = 512;

/// The simulated stream's name.
pub const STREAM: &str = "s";

/// What a node wants done after an input.
#[derive(Debug, Default)]
pub struct Out {
    /// Frames on connections.
    pub sends: Vec<(ConnId, Vec<u8>)>,
    pub closes: Vec<ConnId>,
    pub events: Vec<NodeEvent>,
    /// Answers to clients.
    pub replies: Vec<(ClientRef, Reply)>,
    /// Messages for other nodes' controllers: (to whom, the message).
    pub control: Vec<(NodeId, ControlMsg)>,
    /// Requests for this node's controller.
    pub requests: Vec<Request>,
    pub trace: Vec<String>,
}

/// The driver's links on the simulated network, for one input. A peer link whose ring
/// runs sends through it instead (see `transport::rdma::link`).
pub struct SimLinks<'a> {
    net: &'a Network,
    out: &'a mut Out,
    rings: &'a mut Rings<EmulatedProvider>,
    /// Client frames: (client, frame).
    clients: Vec<(usize, Vec<u8>)>,
}

impl<'a> SimLinks<'a> {
    fn new(
        net: &'a Network,
        out: &'a mut Out,
        rings: &'a mut Rings<EmulatedProvider>,
    ) -> SimLinks<'a> {
        SimLinks {
            net,
            out,
            rings,
            clients: Vec::new(),
        }
    }

    /// The input is handled: the clients' frames become their answers.
    fn done(self, node: NodeId) {
        for (client, frame) in self.clients {
            let (token, reply) = reply_of(node, &frame);
            self.out.replies.push(((client, token), reply));
        }
    }
}

impl Links for SimLinks<'_> {
    fn send(&mut self, link: LinkId, id: RequestId, m: &Message<'_>) -> Result<(), TransportError> {
        if !self.is_open(link) {
            return Err(TransportError::Closed(link));
        }
        if link < CLIENT_LINKS
            && let Some(result) = self.rings.route(link, id, m)
        {
            return result;
        }
        let frame = encode(link, id, m)?;
        match link.checked_sub(CLIENT_LINKS) {
            Some(client) => self.clients.push((client, frame)),
            None => self.out.sends.push((link as ConnId, frame)),
        }
        Ok(())
    }

    fn close(&mut self, link: LinkId, _why: &str) {
        if link < CLIENT_LINKS {
            self.out.closes.push(link as ConnId);
        }
    }

    fn is_open(&self, link: LinkId) -> bool {
        let conn = link as ConnId;
        link >= CLIENT_LINKS || (self.net.is_open(conn) && !self.out.closes.contains(&conn))
    }
}

impl RingLinks<EmulatedProvider> for SimLinks<'_> {
    fn rings(&self) -> &Rings<EmulatedProvider> {
        self.rings
    }

    fn rings_mut(&mut self) -> &mut Rings<EmulatedProvider> {
        self.rings
    }

    fn send_on_tcp(&mut self, link: LinkId, m: &Message<'_>) -> Result<(), TransportError> {
        if !self.is_open(link) {
            return Err(TransportError::Closed(link));
        }
        let frame = encode(link, RequestId(0), m)?;
        self.out.sends.push((link as ConnId, frame));
        Ok(())
    }
}

/// A message as the frame the network carries.
fn encode(link: LinkId, id: RequestId, m: &Message<'_>) -> Result<Vec<u8>, TransportError> {
    let mut frame = Vec::with_capacity(FRAME_BYTES_GUESS);
    m.encode_into(id, &mut frame)
        .map_err(|e| TransportError::Protocol {
            link,
            peer: format!("sim link {link}"),
            message: e.to_string(),
        })?;
    Ok(frame)
}

/// What a connection of this process carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Peer {
    /// Dialled to this member; its answer to the greeting is awaited.
    Dialing(NodeId),
    /// To a member, greeted (the driver knows the link).
    Member,
    /// From the primary, greeted.
    Primary,
}

impl Peer {
    /// The link's kind for the driver, once greeted.
    fn kind(self) -> Option<LinkKind> {
        match self {
            Peer::Dialing(_) => None,
            Peer::Member => Some(LinkKind::ToMember),
            Peer::Primary => Some(LinkKind::FromPrimary),
        }
    }
}

/// An input's surroundings: the node, the time, the network, and what it wants done.
pub struct Ctx<'a> {
    pub node: NodeId,
    /// The process, as the controller knows it.
    pub incarnation: u64,
    pub now: u64,
    pub net: &'a Network,
    pub out: &'a mut Out,
    /// The stream's settings as configured (a planted bug may give the driver others).
    pub settings: &'a StreamSettings,
}

impl Ctx<'_> {
    fn time(&self) -> Time {
        Time::from_ticks(self.now)
    }
}

/// A process that is up: its stream driver and its connections.
pub struct Process {
    pub driver: StreamDriver<Disk>,
    links: BTreeMap<ConnId, Peer>,
    /// Tick of the next dial of each member.
    next_dial: BTreeMap<NodeId, u64>,
    /// A configuration to apply again (the log was busy, or its epoch being stored).
    roles_later: Option<StreamRoles>,
    /// The driver's outputs being carried out (kept to save allocations).
    outputs: Vec<Output>,
    /// The rings of its peer links (on TCP only, they never run).
    rings: Rings<EmulatedProvider>,
}

impl Process {
    pub fn new(driver: StreamDriver<Disk>, rings: Rings<EmulatedProvider>) -> Process {
        Process {
            driver,
            links: BTreeMap::new(),
            next_dial: BTreeMap::new(),
            roles_later: None,
            outputs: Vec::new(),
            rings,
        }
    }

    /// Runs `f` on the driver with this input's links, then carries out its outputs.
    fn with_links<T>(
        &mut self,
        cx: &mut Ctx<'_>,
        f: impl FnOnce(&mut StreamDriver<Disk>, &mut SimLinks<'_>, Time) -> T,
    ) -> T {
        let time = cx.time();
        let mut links = SimLinks::new(cx.net, cx.out, &mut self.rings);
        let t = f(&mut self.driver, &mut links, time);
        links.done(cx.node);
        self.carry_out(cx);
        t
    }

    /// Carries out the driver's outputs (storing an epoch may answer fences, which
    /// brings more: bounded rounds).
    pub fn carry_out(&mut self, cx: &mut Ctx<'_>) {
        let mut outputs = std::mem::take(&mut self.outputs);
        for _ in 0..4 {
            outputs.extend(self.driver.take_outputs());
            if outputs.is_empty() {
                break;
            }
            for o in outputs.drain(..) {
                match o {
                    Output::StoreEpoch(epoch) => {
                        self.driver.log_mut().epoch_file = epoch;
                        let time = cx.time();
                        let mut links = SimLinks::new(cx.net, cx.out, &mut self.rings);
                        self.driver.on_epoch_stored(&mut links, epoch, time);
                        links.done(cx.node);
                    }
                    Output::Fenced {
                        reply_to,
                        epoch,
                        last_epoch,
                        last_lsn,
                    } => {
                        let msg = ControlMsg::Fenced {
                            stream: STREAM.into(),
                            epoch,
                            node: cx.node,
                            incarnation: cx.incarnation,
                            last_epoch,
                            last_lsn,
                        };
                        cx.out.control.push((reply_to, msg));
                    }
                    Output::Request(r) => cx.out.requests.push(r),
                    Output::Note(note) => self.on_note(cx, note),
                }
            }
        }
        self.outputs = outputs;
        self.report_deleted(cx);
    }

    /// A note: a line of the trace, and the checker's event where it needs one.
    fn on_note(&mut self, cx: &mut Ctx<'_>, note: Note) {
        let node = cx.node;
        cx.out.trace.push(format!("n{node}: {note}"));
        let event = match note {
            Note::Started {
                primary: true,
                epoch,
                sync_set,
                ..
            }
            | Note::Promoted {
                epoch, sync_set, ..
            } => NodeEvent::BecamePrimary {
                node,
                epoch,
                settings: cx.settings.clone(),
                sync_set,
            },
            Note::Started { epoch, .. } => NodeEvent::BecameSecondary { node, epoch },
            Note::StoppedPrimary { epoch } => NodeEvent::StoppedPrimary { node, epoch },
            Note::Fenced { epoch } => NodeEvent::Fenced { node, epoch },
            Note::Welcomed { epoch } => NodeEvent::Welcomed { node, epoch },
            Note::MembersChanged {
                epoch,
                sync_set,
                degraded,
            } => NodeEvent::MembersChanged {
                node,
                epoch,
                sync_set,
                degraded,
            },
            Note::Accepted { epoch, first, last } => NodeEvent::Accepted {
                node,
                epoch,
                first,
                last,
            },
            Note::Reported {
                epoch,
                member,
                received,
                durable,
            } => NodeEvent::Reported {
                node,
                epoch,
                member,
                received,
                durable,
            },
            Note::Completed { epoch, first, last } => NodeEvent::Completed {
                node,
                epoch,
                first,
                last,
            },
            Note::Sync { epoch, event } => NodeEvent::Core { node, epoch, event },
            Note::Truncated { after } => NodeEvent::Truncated { node, after },
            Note::Rebasing {
                epoch,
                base_lsn,
                base_epoch,
            } => NodeEvent::Rebased {
                node,
                epoch,
                base_lsn,
                base_epoch,
            },
            // What retention deleted is told in the order it happened.
            Note::Retained { .. } | Note::Failed { .. } => {
                self.report_deleted(cx);
                return;
            }
            _ => return,
        };
        cx.out.events.push(event);
    }

    /// What retention deleted since the last report, as the checker's events.
    fn report_deleted(&mut self, cx: &mut Ctx<'_>) {
        let primary_epoch = self.driver.is_primary().then(|| self.driver.epoch());
        for (first, records) in self.driver.log_mut().take_deleted() {
            cx.out.events.push(NodeEvent::Retained {
                node: cx.node,
                primary_epoch,
                first,
                records,
            });
        }
    }

    /// A configuration the controller committed (or a script's).
    pub fn apply(&mut self, cx: &mut Ctx<'_>, config: &Config) {
        self.roles_later = Some(roles_of(config, cx.settings));
        self.apply_later(cx);
    }

    /// Applies a configuration that waited, if it applies now.
    fn apply_later(&mut self, cx: &mut Ctx<'_>) {
        let Some(roles) = self.roles_later.take() else {
            return;
        };
        let addrs = addrs_of(&roles);
        let applied = self.with_links(cx, |d, links, now| d.set_roles(links, &roles, &addrs, now));
        match applied {
            RolesApplied::Same => {}
            RolesApplied::Members => self.next_dial.clear(),
            RolesApplied::Role => {
                // The old role's peer links end, as the shard closes them.
                let conns: Vec<ConnId> = self.links.keys().copied().collect();
                cx.out.closes.extend(conns);
                self.next_dial.clear();
            }
            // The epoch may have been stored meanwhile: once more, at the next turn.
            RolesApplied::Later => self.roles_later = Some(roles),
        }
    }

    /// The controller's `Fence(epoch)`, from `reply_to`.
    pub fn fence(&mut self, cx: &mut Ctx<'_>, epoch: u64, reply_to: NodeId) {
        let was_primary = self.driver.is_primary();
        self.with_links(cx, |d, links, now| d.fence(links, epoch, reply_to, now));
        self.after_fence(cx, was_primary);
    }

    /// As the shard's: a fence or a newer epoch may have ended the primary role; the
    /// stream's peer links then belong to the old role.
    fn after_fence(&mut self, cx: &mut Ctx<'_>, was_primary: bool) {
        if was_primary && !self.driver.is_primary() {
            let conns: Vec<ConnId> = self.links.keys().copied().collect();
            cx.out.closes.extend(conns);
            self.next_dial.clear();
        }
    }

    /// The controller's `Drain`: a switchover to `to`.
    pub fn drain(&mut self, cx: &mut Ctx<'_>, epoch: u64, to: NodeId, reply_to: NodeId) {
        self.driver.drain(epoch, to, reply_to, cx.time());
    }

    /// Members to dial now (a primary's, not connected and not being dialled).
    pub fn to_dial(&mut self, now: u64) -> Vec<NodeId> {
        let mut v = Vec::new();
        if !self.driver.is_primary() {
            return v;
        }
        for (member, _, link) in self.driver.members() {
            let dialing = self.links.values().any(|p| *p == Peer::Dialing(member));
            let next = self.next_dial.entry(member).or_insert(0);
            if link.is_none() && !dialing && *next <= now {
                *next = now + REDIAL_TICKS;
                v.push(member);
            }
        }
        v
    }

    /// A connection to `member` is open: greet it, as production's dialer does.
    pub fn dialled(&mut self, cx: &mut Ctx<'_>, member: NodeId, conn: ConnId) {
        self.links.insert(conn, Peer::Dialing(member));
        let hello = Message::PeerHello {
            stream: STREAM,
            node_id: cx.node,
            epoch: self.driver.epoch(),
        };
        let mut frame = Vec::new();
        hello
            .encode_into(RequestId(1), &mut frame)
            .expect("a hello encodes");
        cx.out.sends.push((conn, frame));
    }

    /// A connection of this process closed.
    pub fn on_conn_closed(&mut self, cx: &mut Ctx<'_>, conn: ConnId) {
        self.rings.drop_end(conn as LinkId);
        if let Some(Peer::Member | Peer::Primary) = self.links.remove(&conn) {
            self.with_links(cx, |d, _, _| d.on_link_closed(conn as LinkId));
        }
    }

    /// A frame from `from` on `conn`.
    pub fn on_frame(&mut self, cx: &mut Ctx<'_>, conn: ConnId, bytes: &[u8]) -> Handled {
        let link = conn as LinkId;
        let frame = match Frame::parse(bytes) {
            Ok(f) => f,
            Err(e) => {
                // As the shard: an error frame, and the link closes.
                let message = e.to_string();
                cx.out
                    .trace
                    .push(format!("n{}: malformed frame: {message}", cx.node));
                let m = Message::Error {
                    code: ErrorCode::Malformed,
                    message: &message,
                };
                return self.with_links(cx, |_, links, _| {
                    let _ = links.send(link, RequestId(0), &m);
                    Handled::Close(message.clone())
                });
            }
        };
        let peer = self.links.get(&conn).copied();
        let handled = match (peer, &frame.message) {
            (None, Message::PeerHello { node_id, epoch, .. }) => {
                self.links.insert(conn, Peer::Primary);
                let (from, epoch) = (*node_id, *epoch);
                self.with_links(cx, |d, links, _| {
                    d.on_peer_hello(links, link, frame.id, from, epoch)
                })
            }
            (
                Some(Peer::Dialing(member)),
                Message::PeerWelcome {
                    last_lsn,
                    last_epoch,
                    durable_lsn,
                    ..
                },
            ) => {
                self.links.insert(conn, Peer::Member);
                let (l, e, d) = (*last_lsn, *last_epoch, *durable_lsn);
                self.with_links(cx, |driver, links, _| {
                    driver.on_member_connected(links, member, link, l, e, d)
                });
                Handled::Done
            }
            (Some(Peer::Dialing(member)), Message::Refuse { epoch, reason, .. }) => {
                // As the shard's dialer: a refusal in a newer epoch deposes this primary.
                let why = format!("member {member} refused: {reason}");
                let epoch = *epoch;
                if epoch > self.driver.epoch() {
                    let was_primary = self.driver.is_primary();
                    self.with_links(cx, |d, links, now| d.on_newer_epoch(links, epoch, now));
                    self.after_fence(cx, was_primary);
                }
                Handled::Close(why)
            }
            (None | Some(Peer::Dialing(_)), m) => {
                Handled::Close(format!("{} before the greeting", m.kind()))
            }
            (Some(p @ (Peer::Member | Peer::Primary)), m) => {
                let kind = p.kind().expect("greeted");
                self.with_links(cx, |d, links, now| {
                    d.on_ring_setup(links, link, kind, m, now)
                        .unwrap_or_else(|| d.on_peer(links, link, m, now))
                })
            }
        };
        if let Handled::Close(why) = &handled {
            cx.out
                .trace
                .push(format!("n{}: closes link {conn}: {why}", cx.node));
            cx.out.closes.push(conn);
        }
        handled
    }

    /// A client's append, as an `Append` frame of request `token` on its link.
    pub fn client_append(
        &mut self,
        cx: &mut Ctx<'_>,
        client: ClientRef,
        mode: Option<Mode>,
        timeout_ticks: u64,
        payloads: &[Vec<u8>],
    ) {
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let timeout_ms = (timeout_ticks * crate::constants::TICK_MS).min(u64::from(u32::MAX));
        let msg = Message::Append {
            mode,
            timeout_ms: timeout_ms as u32,
            payloads: Payloads::new(&refs),
        };
        let link = CLIENT_LINKS + client.0;
        let handled = self.with_links(cx, |d, links, now| {
            d.on_client(links, link, RequestId(client.1), &msg, now)
        });
        // The simulated disk always has room, or refuses with ENOSPC.
        assert_eq!(
            handled,
            Handled::Done,
            "an append is answered or waits in the core"
        );
    }

    /// A client's read: (commit LSN, records from `from`), or `None` if refused.
    pub fn read(
        &mut self,
        cx: &mut Ctx<'_>,
        from: u64,
        records_max: u64,
    ) -> Option<(u64, Vec<(u64, Rec)>)> {
        let msg = Message::Read {
            from_lsn: from,
            records_max: records_max.min(u64::from(u32::MAX)) as u32,
            bytes_max: u32::MAX,
        };
        let time = cx.time();
        let mut links = SimLinks::new(cx.net, cx.out, &mut self.rings);
        self.driver
            .on_client(&mut links, CLIENT_LINKS, RequestId(1), &msg, time);
        let (_, frame) = links.clients.pop()?;
        match Frame::parse(&frame)
            .expect("the driver's frames decode")
            .message
        {
            Message::Records {
                commit_lsn,
                records,
            } => {
                let recs = records
                    .iter()
                    .map(|r| {
                        let rec = Rec {
                            epoch: r.epoch,
                            payload: r.payload.to_vec(),
                        };
                        (r.lsn, rec)
                    })
                    .collect();
                Some((commit_lsn, recs))
            }
            _ => None,
        }
    }

    /// The disk made the log durable up to `lsn`.
    pub fn on_durable(&mut self, lsn: u64, now: u64) {
        self.driver.on_durable(lsn, Time::from_ticks(now));
    }

    /// A write failed (EIO): the log stops, as production's does.
    pub fn fail(&mut self, cx: &mut Ctx<'_>) {
        let e = LogError::Failed {
            dir: "sim".into(),
            reason: "a durable write failed (EIO)".into(),
        };
        self.with_links(cx, |d, links, _| d.fail(links, e));
    }

    /// The process's turn: a configuration that waited, the rings read (a member's
    /// records, a primary's ack slots), the driver's turn, a switchover's report, then
    /// rings offered and flushed.
    pub fn drive(&mut self, cx: &mut Ctx<'_>) {
        self.apply_later(cx);
        for link in self.rings.links() {
            let Some(kind) = self.links.get(&(link as ConnId)).and_then(|p| p.kind()) else {
                continue;
            };
            self.with_links(cx, |d, links, now| d.read_ring(links, link, kind, now));
        }
        let drained = self.with_links(cx, |d, links, now| {
            d.drive(links, now);
            d.drained(now)
        });
        cx.out.control.extend(drained);
        self.with_links(cx, |d, links, now| {
            d.offer_rings(links, now);
            for link in links.rings().links() {
                d.flush_ring(links, link, now);
            }
        });
    }
}

/// A simulated configuration as the controller commits a stream's roles.
fn roles_of(c: &Config, settings: &StreamSettings) -> StreamRoles {
    StreamRoles {
        epoch: c.epoch,
        primary: c.primary,
        incarnation: c.incarnation.unwrap_or(0),
        sync_set: c.sync_set.clone(),
        learners: c.learners.clone(),
        degraded: c.degraded,
        policy: Policy::of(settings, 5000),
        version: c.version,
        floor: (0, 0),
        db: None,
    }
}

/// The address of node `id` on the simulated network.
pub fn addr_of(id: NodeId) -> String {
    format!("n{id}")
}

fn addrs_of(roles: &StreamRoles) -> BTreeMap<NodeId, String> {
    std::iter::once(roles.primary)
        .chain(roles.sync_set.iter().copied())
        .chain(roles.learners.iter().copied())
        .map(|id| (id, addr_of(id)))
        .collect()
}

/// A node's answer to a client, from its frame: (the request's token, the answer).
fn reply_of(node: NodeId, frame: &[u8]) -> (u64, Reply) {
    let f = Frame::parse(frame).expect("the driver's frames decode");
    let reply = match f.message {
        Message::Appended { first_lsn, count } => Reply::Appended {
            first: first_lsn,
            last: first_lsn + u64::from(count) - 1,
        },
        Message::InDoubt {
            first_lsn, count, ..
        } => Reply::InDoubt {
            first: first_lsn,
            last: first_lsn + u64::from(count) - 1,
        },
        // Named primary, but not as this process: the controller is about to promote
        // a node; nobody serves until then.
        Message::NotPrimary { primary, .. } => {
            match primary.and_then(|a| a.strip_prefix('n')?.parse::<NodeId>().ok()) {
                Some(p) if p != node => Reply::NotPrimary { primary: p },
                _ => Reply::Unavailable("no primary serves yet".into()),
            }
        }
        Message::Error {
            code: ErrorCode::ModeNotAllowed,
            ..
        } => Reply::ModeNotAllowed,
        Message::Error { message, .. } => Reply::Unavailable(message.to_string()),
        other => panic!("a client is answered with {}", other.kind()),
    };
    (f.id.0, reply)
}
