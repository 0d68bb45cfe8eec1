//! A shard: one pinned thread with one io_uring, owning its streams, their logs and
//! every connection to them. Shards share nothing; new connections arrive through a
//! bounded queue from the acceptor and the dialers.
//!
//! One turn of the loop: take new connections, read ready sockets and handle their
//! frames, drive every stream's core, submit the log writes, flush the links, then wait
//! for the next completion or tick. Requests waiting for their commit are state in the
//! core, not threads.

use std::collections::BTreeMap;
use std::io;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::{Duration, Instant};

use lockstep_sys::uring::{Completion, Ring};

use crate::constants::{MEMBER_SEND_QUEUE_BYTES_MAX, TICK_MS};
use crate::log::Log;
use crate::replication::NodeId;
use crate::server::Shared;
use crate::server::control_loop::ToControl;
use crate::server::epoch_file;
use crate::stream::{Handled, LinkKind, Note, Output, RolesApplied, StreamDriver, Time};
use crate::transport::rdma::emulated::EmulatedProvider;
use crate::transport::rdma::link::{NodeLinks, Rings};
use crate::transport::rdma::setup::Chosen;
use crate::transport::rdma::verbs::Provider;
use crate::transport::tcp::{Conn, TcpLinks};
use crate::transport::{LinkId, Links};
use crate::wire::{ErrorCode, FrameDecoder, Message, RequestId};

/// Time between turns when nothing happens: the core's clock resolution.
const TICK: Duration = Duration::from_millis(TICK_MS);
/// Time between two dials of an unreachable member.
const REDIAL: Duration = Duration::from_millis(100);
/// How often a shard reports its streams to the node's controller.
const STATUS: Duration = Duration::from_millis(10);
/// How often a shard publishes its metrics.
const PUBLISH: Duration = Duration::from_millis(100);

/// Under `transport = "rdma-emu"`: fails one queue pair after this many ring writes
/// (see `transport::rdma::emulated::Faults`), for the tests of the fallback to TCP.
pub const FAULT_QP_ERROR_ENV: &str = "LOCKSTEP_FAULT_RDMA_EMU_QP_ERROR_AFTER_WRITES";

const POLL_BIT: u64 = 1 << 63;
/// With `POLL_BIT`: the completion is a ring's wake-up, not a socket's readiness.
const WAKE_BIT: u64 = 1 << 62;

/// A connection handed to a shard.
pub enum Handoff {
    /// A client greeted with `ClientHello` (id `hello`).
    Client {
        stream: usize,
        sock: TcpStream,
        decoder: FrameDecoder,
        hello: RequestId,
    },
    /// The stream's primary greeted this node with `PeerHello`.
    FromPrimary {
        stream: usize,
        sock: TcpStream,
        decoder: FrameDecoder,
        hello: RequestId,
        from: NodeId,
        epoch: u64,
    },
    /// A dialer reached a member, which answered with `PeerWelcome`.
    ToMember {
        stream: usize,
        member: NodeId,
        sock: TcpStream,
        decoder: FrameDecoder,
        last_lsn: u64,
        last_epoch: u64,
        durable_lsn: u64,
    },
    /// A dial failed; try again later. `newer_epoch`: the member refused in an epoch
    /// above the one dialled with.
    DialFailed {
        stream: usize,
        member: NodeId,
        newer_epoch: Option<u64>,
    },
    /// The controller committed a configuration of the stream.
    Roles {
        stream: usize,
        roles: Box<crate::control::StreamRoles>,
        addrs: Arc<std::collections::BTreeMap<NodeId, String>>,
    },
    /// The controller's leader `reply_to` switches the stream over to `to`.
    Drain {
        stream: usize,
        epoch: u64,
        to: NodeId,
        reply_to: NodeId,
    },
    /// The controller's leader `reply_to` fences the stream at `epoch`.
    Fence {
        stream: usize,
        epoch: u64,
        reply_to: NodeId,
    },
    /// The stream's epoch is stored durably (or why not).
    EpochStored {
        stream: usize,
        epoch: u64,
        result: io::Result<()>,
    },
}

struct LinkInfo {
    stream: usize,
    kind: LinkKind,
    generation: u32,
    /// A frame waits for room in the log.
    stalled: bool,
}

struct Dial {
    dialing: bool,
    next: Instant,
}

pub struct Shard<P: Provider> {
    pub index: usize,
    ring: Ring,
    links: NodeLinks<P>,
    info: Vec<Option<LinkInfo>>,
    generation: u32,
    streams: Vec<StreamDriver<Log>>,
    /// Per stream, per member: the dialer's state.
    dials: Vec<BTreeMap<NodeId, Dial>>,
    inbox: Receiver<Handoff>,
    to_self: SyncSender<Handoff>,
    shared: Arc<Shared>,
    completions: Vec<Completion>,
    node_id: NodeId,
    /// The node's control loop, when the node runs a controller.
    control: Option<SyncSender<ToControl>>,
    /// Configurations that wait for a stream's log to be idle.
    roles_later: Vec<Handoff>,
    next_status: Instant,
    /// The node's start: the drivers' clock counts from it.
    started: Instant,
}

/// The emulated verbs provider of a shard, with the fault the tests may inject.
pub fn emulated_provider() -> EmulatedProvider {
    let provider = EmulatedProvider::new();
    // A fault injection point of the emulated verbs (tests only: the node never sets
    // it): the queue pair that posts the write after this many goes to error.
    if let Some(n) = std::env::var(FAULT_QP_ERROR_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
    {
        provider
            .faults()
            .lock()
            .expect("faults lock")
            .error_after_writes = Some(n);
    }
    provider
}

/// What a shard is made of, each part handed over once; the verbs provider comes
/// beside it, of the type the node's transport needs.
pub struct ShardParts {
    pub index: usize,
    pub ring: Ring,
    pub streams: Vec<StreamDriver<Log>>,
    pub inbox: Receiver<Handoff>,
    pub to_self: SyncSender<Handoff>,
    pub shared: Arc<Shared>,
    pub node_id: NodeId,
    pub control: Option<SyncSender<ToControl>>,
    /// The node's start: the drivers' clock counts from it.
    pub started: Instant,
    pub transport: Chosen,
}

/// Starts shard `parts.index` on a thread of its own (named `name`), pinned to its core
/// where it can be.
pub fn spawn<P>(
    parts: ShardParts,
    provider: P,
    name: String,
) -> io::Result<std::thread::JoinHandle<()>>
where
    P: Provider + Send + 'static,
    P::Region: Send,
    P::Qp: Send,
{
    let shard = Shard::new(parts, provider);
    std::thread::Builder::new().name(name).spawn(move || {
        let i = shard.index;
        if let Err(e) = pin(i) {
            tracing::warn!(shard = i, "shard {i} runs unpinned: {e}");
        }
        shard.run();
    })
}

impl<P: Provider> Shard<P> {
    pub fn new(parts: ShardParts, provider: P) -> Shard<P> {
        let now = Instant::now();
        let dials = parts.streams.iter().map(|s| dials_of(s, now)).collect();
        Shard {
            index: parts.index,
            ring: parts.ring,
            links: NodeLinks {
                tcp: TcpLinks::default(),
                rings: Rings::new(provider, parts.transport),
            },
            info: Vec::new(),
            generation: 0,
            streams: parts.streams,
            dials,
            inbox: parts.inbox,
            to_self: parts.to_self,
            shared: parts.shared,
            completions: Vec::with_capacity(256),
            node_id: parts.node_id,
            control: parts.control,
            roles_later: Vec::new(),
            next_status: now,
            started: parts.started,
        }
    }

    /// The drivers' clock.
    fn time(&self, at: Instant) -> Time {
        Time::from_micros(at.saturating_duration_since(self.started).as_micros() as u64)
    }

    /// Runs until the node shuts down.
    pub fn run(mut self) {
        for s in &mut self.streams {
            if let Err(e) = s.log_mut().register_buffers(&mut self.ring) {
                tracing::warn!(
                    shard = self.index,
                    stream = s.name(),
                    "registered buffers unavailable: {e}"
                );
            }
        }
        let mut next_publish = Instant::now();
        while !self.shared.shutdown.load(Ordering::Relaxed) {
            let now = Instant::now();
            self.take_handoffs(now);
            self.report(now);
            self.dial_members(now);
            let stalled = self.read_links(now);
            let ring_more = self.read_rings(now);
            let time = self.time(now);
            for i in 0..self.streams.len() {
                self.streams[i].drive(&mut self.links, time);
            }
            self.offer_rings(time);
            self.carry_out();
            // The log writes are queued, the sends leave, then the wait below submits the
            // writes: local write and sends are in flight together. The sends go first
            // because submitting a direct write costs a device notification (tens of
            // microseconds on a VM) and the remote path — network and the member's own
            // write — is the longer one of a strong commit.
            self.flush_logs();
            self.flush_links(time);
            // Notes of rings that failed in the flush.
            self.carry_out();
            let wait = if stalled || ring_more {
                Duration::ZERO
            } else {
                TICK
            };
            if let Err(e) = self.ring.submit_and_wait_timeout(1, wait) {
                tracing::error!(shard = self.index, "io_uring wait failed: {e}");
                std::thread::sleep(TICK);
            }
            self.reap(Instant::now());
            if now >= next_publish {
                self.publish();
                next_publish = now + PUBLISH;
            }
        }
        self.links.tcp.shut_down();
        self.publish();
    }

    fn publish(&mut self) {
        let mut out = Vec::with_capacity(self.streams.len());
        for (si, s) in self.streams.iter_mut().enumerate() {
            let links: Vec<(NodeId, Option<LinkId>)> =
                s.members().map(|(id, _, link)| (id, link)).collect();
            let rings = &self.links.rings;
            let member = |id| {
                let link = links.iter().find(|(m, _)| *m == id).and_then(|l| l.1);
                link.map_or("tcp", |l| rings.transport_of(l))
            };
            let mut from_primary = "tcp";
            for (link, info) in self.info.iter().enumerate() {
                if let Some(info) = info
                    && info.kind == LinkKind::FromPrimary
                    && info.stream == si
                    && self.links.tcp.is_open(link)
                {
                    from_primary = rings.transport_of(link);
                }
            }
            s.refresh_metrics();
            s.set_transports(member, from_primary);
            out.push(s.metrics().clone());
        }
        *self.shared.metrics[self.index]
            .lock()
            .expect("metrics lock") = out;
    }

    fn add_link(&mut self, conn: Conn, stream: usize, kind: LinkKind) -> LinkId {
        let link = self.links.tcp.add(conn);
        if self.info.len() <= link {
            self.info.resize_with(link + 1, || None);
        }
        // 30 bits: the generation shares a completion's user data with the link and
        // the poll and wake-up bits.
        self.generation = self.generation.wrapping_add(1) & 0x3fff_ffff;
        self.info[link] = Some(LinkInfo {
            stream,
            kind,
            generation: self.generation,
            stalled: false,
        });
        link
    }

    /// Statuses for the controller, every `STATUS` interval, and switchovers' reports.
    fn report(&mut self, now: Instant) {
        let time = self.time(now);
        let Some(control) = &self.control else {
            return;
        };
        for s in &mut self.streams {
            if let Some((to, msg)) = s.drained(time) {
                let _ = control.try_send(ToControl::Send { to, msg });
            }
        }
        if now < self.next_status {
            return;
        }
        self.next_status = now + STATUS;
        for s in &self.streams {
            let _ = control.try_send(ToControl::Status(s.status()));
        }
    }

    /// Carries out what the drivers asked of the host: notes into the node's log,
    /// epochs to store, fence answers and requests for the controller.
    fn carry_out(&mut self) {
        for i in 0..self.streams.len() {
            let outputs: Vec<Output> = self.streams[i].take_outputs().collect();
            if outputs.is_empty() {
                continue;
            }
            let name = self.streams[i].name().to_string();
            for o in outputs {
                match o {
                    Output::Note(n @ Note::Failed { .. }) => {
                        tracing::error!(shard = self.index, stream = %name, "{n}");
                    }
                    Output::Note(n) if n.warns() => {
                        tracing::warn!(shard = self.index, stream = %name, "{n}");
                    }
                    Output::Note(n) => tracing::info!(shard = self.index, stream = %name, "{n}"),
                    Output::StoreEpoch(epoch) => {
                        let dir = self.streams[i].log().dir().to_path_buf();
                        let reply = self.to_self.clone();
                        let done = move |result: io::Result<()>| {
                            let _ = reply.send(Handoff::EpochStored {
                                stream: i,
                                epoch,
                                result,
                            });
                        };
                        if let Err(e) = epoch_file::store_in_background(dir, epoch, done) {
                            let why = format!("no thread to store it: {e}");
                            self.streams[i].on_epoch_store_failed(epoch, why);
                        }
                    }
                    Output::Fenced {
                        reply_to,
                        epoch,
                        last_epoch,
                        last_lsn,
                    } => {
                        if let Some(c) = &self.control {
                            let _ = c.try_send(ToControl::Fenced {
                                reply_to,
                                stream: name.clone(),
                                epoch,
                                last_epoch,
                                last_lsn,
                            });
                        }
                    }
                    Output::Request(r) => {
                        if let Some(c) = &self.control {
                            let _ = c.try_send(ToControl::Request(r));
                        }
                    }
                }
            }
        }
    }

    /// Closes every peer link of a stream (its role changed).
    fn close_peer_links(&mut self, stream: usize, why: &str) {
        for link in 0..self.info.len() {
            if let Some(info) = &self.info[link]
                && info.stream == stream
                && info.kind != LinkKind::Client
            {
                self.links.close(link, why);
            }
        }
    }

    fn reset_dials(&mut self, stream: usize, now: Instant) {
        self.dials[stream] = dials_of(&self.streams[stream], now);
    }

    /// A fence or a stored epoch may have ended the primary role: the stream's peer
    /// links then belong to the old role.
    fn after_fence(&mut self, stream: usize, was_primary: bool, now: Instant) {
        if was_primary && !self.streams[stream].is_primary() {
            self.close_peer_links(stream, "fenced");
            self.reset_dials(stream, now);
        }
    }

    fn take_handoffs(&mut self, now: Instant) {
        let time = self.time(now);
        let later = std::mem::take(&mut self.roles_later);
        // Bounded per turn, like every queue.
        let mut batch = later;
        batch.extend(self.inbox.try_iter().take(64));
        for h in batch {
            match h {
                Handoff::Roles {
                    stream,
                    roles,
                    addrs,
                } => {
                    let applied =
                        self.streams[stream].set_roles(&mut self.links, &roles, &addrs, time);
                    match applied {
                        RolesApplied::Same => {}
                        RolesApplied::Members => self.reset_dials(stream, now),
                        RolesApplied::Role => {
                            self.close_peer_links(stream, "the stream's roles changed");
                            self.reset_dials(stream, now);
                        }
                        RolesApplied::Later => self.roles_later.push(Handoff::Roles {
                            stream,
                            roles,
                            addrs,
                        }),
                    }
                }
                Handoff::Drain {
                    stream,
                    epoch,
                    to,
                    reply_to,
                } => self.streams[stream].drain(epoch, to, reply_to, time),
                Handoff::Fence {
                    stream,
                    epoch,
                    reply_to,
                } => {
                    let was_primary = self.streams[stream].is_primary();
                    self.streams[stream].fence(&mut self.links, epoch, reply_to, time);
                    self.after_fence(stream, was_primary, now);
                }
                Handoff::EpochStored {
                    stream,
                    epoch,
                    result,
                } => {
                    let was_primary = self.streams[stream].is_primary();
                    match result {
                        Ok(()) => {
                            self.streams[stream].on_epoch_stored(&mut self.links, epoch, time)
                        }
                        Err(e) => self.streams[stream].on_epoch_store_failed(epoch, e.to_string()),
                    }
                    self.after_fence(stream, was_primary, now);
                }
                Handoff::Client {
                    stream,
                    sock,
                    decoder,
                    hello,
                } => {
                    let Some(conn) = conn(sock, decoder) else {
                        continue;
                    };
                    let link = self.add_link(conn, stream, LinkKind::Client);
                    let s = &self.streams[stream];
                    let _ = self.links.send(link, hello, &s.welcome());
                }
                Handoff::FromPrimary {
                    stream,
                    sock,
                    decoder,
                    hello,
                    from,
                    epoch,
                } => {
                    let Some(conn) = conn(sock, decoder) else {
                        continue;
                    };
                    let conn = conn.with_send_queue_max(MEMBER_SEND_QUEUE_BYTES_MAX);
                    let link = self.add_link(conn, stream, LinkKind::FromPrimary);
                    if let Handled::Close(why) = self.streams[stream].on_peer_hello(
                        &mut self.links,
                        link,
                        hello,
                        from,
                        epoch,
                    ) {
                        self.links.close(link, &why);
                    }
                }
                Handoff::ToMember {
                    stream,
                    member,
                    sock,
                    decoder,
                    last_lsn,
                    last_epoch,
                    durable_lsn,
                } => {
                    if let Some(d) = self.dials[stream].get_mut(&member) {
                        d.dialing = false;
                    }
                    let Some(conn) = conn(sock, decoder) else {
                        continue;
                    };
                    let link = self.add_link(conn, stream, LinkKind::ToMember);
                    self.streams[stream].on_member_connected(
                        &mut self.links,
                        member,
                        link,
                        last_lsn,
                        last_epoch,
                        durable_lsn,
                    );
                }
                Handoff::DialFailed {
                    stream,
                    member,
                    newer_epoch,
                } => {
                    if let Some(d) = self.dials[stream].get_mut(&member) {
                        d.dialing = false;
                        d.next = now + REDIAL;
                    }
                    if let Some(epoch) = newer_epoch {
                        let was_primary = self.streams[stream].is_primary();
                        let time = self.time(now);
                        self.streams[stream].on_newer_epoch(&mut self.links, epoch, time);
                        self.after_fence(stream, was_primary, now);
                    }
                }
            }
        }
        self.carry_out();
    }

    fn dial_members(&mut self, now: Instant) {
        for (si, s) in self.streams.iter().enumerate() {
            for (member, addr, link) in s.members() {
                let Some(d) = self.dials[si].get_mut(&member) else {
                    continue;
                };
                if link.is_some() || d.dialing || now < d.next {
                    continue;
                }
                d.dialing = true;
                d.next = now + REDIAL;
                crate::server::dialer::spawn(crate::server::dialer::Dial {
                    stream: si,
                    stream_name: s.name().to_string(),
                    member,
                    addr: addr.to_string(),
                    node_id: self.node_id,
                    epoch: s.epoch(),
                    reply: self.to_self.clone(),
                    secret: self.shared.secret.clone(),
                });
            }
        }
    }

    /// Reads every readable link and handles its frames. Returns whether a frame waits
    /// for room in a log (then the next wait must not sleep).
    fn read_links(&mut self, now: Instant) -> bool {
        let time = self.time(now);
        let mut any_stalled = false;
        for link in 0..self.links.tcp.slots() {
            let Some(info) = self.info.get(link).and_then(Option::as_ref) else {
                continue;
            };
            let (stream, kind, stalled) = (info.stream, info.kind, info.stalled);
            let Some(mut decoder) = self.links.tcp.take_input(link, stalled) else {
                continue;
            };
            let mut now_stalled = false;
            loop {
                let frame = match decoder.next_frame() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => {
                        let message = e.to_string();
                        let _ = self.links.send(
                            link,
                            RequestId(0),
                            &Message::Error {
                                code: ErrorCode::Malformed,
                                message: &message,
                            },
                        );
                        self.links
                            .close(link, &format!("malformed frame: {message}"));
                        break;
                    }
                };
                let s = &mut self.streams[stream];
                let setup = s.on_ring_setup(&mut self.links, link, kind, &frame.message, time);
                let handled = match (setup, kind) {
                    (Some(handled), _) => handled,
                    (None, LinkKind::Client) => {
                        s.on_client(&mut self.links, link, frame.id, &frame.message, time)
                    }
                    (None, LinkKind::FromPrimary | LinkKind::ToMember) => {
                        s.on_peer(&mut self.links, link, &frame.message, time)
                    }
                };
                match handled {
                    Handled::Done => {}
                    Handled::Later => {
                        decoder.rewind_last();
                        now_stalled = true;
                        break;
                    }
                    Handled::Close(why) => {
                        self.links.close(link, &why);
                        break;
                    }
                }
            }
            self.links.tcp.put_back(link, decoder);
            if let Some(info) = self.info[link].as_mut() {
                info.stalled = now_stalled;
            }
            any_stalled |= now_stalled;
        }
        any_stalled
    }

    /// The generation of the connection `link` holds now, if any.
    fn generation_of(&self, link: LinkId) -> Option<u32> {
        self.info
            .get(link)
            .and_then(Option::as_ref)
            .map(|i| i.generation)
    }

    /// The stream and kind of the connection `link` holds now, if any.
    fn kind_of(&self, link: LinkId) -> Option<(usize, LinkKind)> {
        let info = self.info.get(link)?.as_ref()?;
        Some((info.stream, info.kind))
    }

    /// Offers rings to the members of every stream this node is primary of (see
    /// `stream::rings`).
    fn offer_rings(&mut self, time: Time) {
        for s in &mut self.streams {
            s.offer_rings(&mut self.links, time);
        }
    }

    /// Reads the rings: a member's frames from its primary (within the budget), a
    /// primary's ack slots (every one, once per turn). Returns whether a ring has more
    /// to read or a frame waits for room (the next wait must not sleep).
    fn read_rings(&mut self, now: Instant) -> bool {
        let time = self.time(now);
        let mut more = false;
        for link in self.links.rings.links() {
            if let Some((stream, kind)) = self.kind_of(link) {
                more |= self.streams[stream].read_ring(&mut self.links, link, kind, time);
            }
        }
        more
    }

    fn flush_logs(&mut self) {
        let now = self.time(Instant::now());
        for s in &mut self.streams {
            if s.failure().is_some() {
                continue;
            }
            match s.log_mut().flush(&mut self.ring) {
                Ok(true) => s.on_write_issued(now),
                Ok(false) => {}
                Err(e) => {
                    s.fail(&mut self.links, e);
                }
            }
        }
    }

    fn flush_links(&mut self, time: Time) {
        for link in self.links.rings.links() {
            if let Some((stream, _)) = self.kind_of(link) {
                self.streams[stream].flush_ring(&mut self.links, link, time);
            }
        }
        for (link, fd) in self.links.rings.to_arm() {
            let (Some(generation), Some((stream, _))) =
                (self.generation_of(link), self.kind_of(link))
            else {
                continue;
            };
            let data = POLL_BIT | WAKE_BIT | (u64::from(generation) << 32) | ((link as u64) << 1);
            if let Err(e) = self.ring.poll(&fd, libc::POLLIN, data) {
                let why = format!("cannot poll its wake-ups: {e}");
                self.streams[stream].ring_failed(&mut self.links, link, &why, time);
            }
        }
        for link in 0..self.links.tcp.slots() {
            let Some(generation) = self.generation_of(link) else {
                continue;
            };
            let base = POLL_BIT | (u64::from(generation) << 32) | ((link as u64) << 1);
            let Some((peer, why)) = self.links.tcp.flush(link, &mut self.ring, base, base | 1)
            else {
                continue;
            };
            self.links.rings.drop_end(link);
            let info = self.info[link].take().expect("link info");
            // A peer closing its end is routine (a client leaving, a node stopping).
            if !why.starts_with("closed by the peer") || why.contains("inside a frame") {
                tracing::info!(shard = self.index, peer = %peer, "link closed: {why}");
            }
            self.streams[info.stream].on_link_closed(link);
        }
    }

    fn reap(&mut self, now: Instant) {
        let now = self.time(now);
        self.ring.reap(&mut self.completions);
        for c in self.completions.drain(..) {
            if c.user_data & POLL_BIT != 0 {
                let link = ((c.user_data >> 1) & 0x7fff_ffff) as usize;
                let generation = ((c.user_data >> 32) & 0x3fff_ffff) as u32;
                let current = self
                    .info
                    .get(link)
                    .and_then(Option::as_ref)
                    .is_some_and(|i| i.generation == generation);
                if current && c.user_data & WAKE_BIT != 0 {
                    self.links.rings.on_wakeup(link);
                } else if current {
                    self.links.tcp.on_poll(link, c.user_data & 1 == 1);
                }
                continue;
            }
            let s = &mut self.streams[c.user_data as usize];
            match s.log_mut().complete(c) {
                Ok(durable) => s.on_durable(durable, now),
                Err(e) => {
                    s.fail(&mut self.links, e);
                }
            }
        }
    }
}

/// A primary dials each of its members; a secondary dials nobody.
fn dials_of(s: &StreamDriver<Log>, now: Instant) -> BTreeMap<NodeId, Dial> {
    s.members()
        .map(|(id, _, _)| {
            let d = Dial {
                dialing: false,
                next: now,
            };
            (id, d)
        })
        .collect()
}

fn conn(sock: TcpStream, decoder: FrameDecoder) -> Option<Conn> {
    match Conn::with_decoder(sock, decoder) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("cannot set up a connection: {e}");
            None
        }
    }
}

/// Pins the calling shard thread, or says why not.
pub fn pin(index: usize) -> io::Result<()> {
    let cores = lockstep_sys::cpu::available_cores();
    let Some(&core) = cores.get(index % cores.len().max(1)) else {
        return Err(io::Error::other("no cores reported"));
    };
    lockstep_sys::cpu::pin_current_thread(core).map_err(|e| io::Error::other(e.to_string()))
}
