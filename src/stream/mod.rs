//! The stream driver: one stream's replication on one node, between the sans-I/O core
//! ([`crate::replication`]) and the machine. It is the only driver: the node runs it with
//! its io_uring [`Log`](crate::log::Log), TCP links and the shard's clock; the simulator
//! runs it with a simulated disk, a faulty network of encoded frames and a simulated
//! clock (`../shared/DESIGN.md`, "one driver, run by the node and by the simulator").
//!
//! Generic over what surrounds it:
//! - log storage: [`LogStore`], which the driver owns;
//! - links: every input that may answer takes the host's [`Links`], whose frames leave
//!   at the end of the host's turn;
//! - time: every input that needs it takes [`Time`]; the driver reads no clock;
//! - the host's own work: [`Output`]s (store the epoch durably, answer a fence, pass a
//!   request to the controller, log a note), taken with [`StreamDriver::take_outputs`].
//!
//! The parts: [`primary`] (appends, acks, the greeting of a member, the core's actions),
//! [`secondary`] (records from the primary, truncation, rebase, acks), [`roles`] (roles
//! under the controller: fences, promotion, switchover), [`rings`] (a peer link's RDMA
//! ring: its setup handshake, reading it, the fallback to TCP), [`cache`] (records kept
//! for sending).
//!
//! Order within a turn keeps the commit path short: client appends go into the log's
//! batch and the record cache, the core's sends are queued on the member links, the
//! host submits the log write, and only then are the links flushed — so the local
//! durable write and the network sends are in flight together.
//!
//! Fault handling: a failed log write stops the stream (every waiting request ends in
//! doubt, later requests get `Unavailable`); a member link that fails is closed and
//! dialled again by the host; a primary that sends records of an older epoch, or a gap,
//! is refused.

pub mod cache;
pub mod metrics;
mod output;
mod primary;
mod rings;
mod roles;
mod secondary;
mod store;

pub use output::{Note, Output};
pub use rings::LinkKind;
pub use roles::RolesApplied;
pub use store::LogStore;

use std::collections::BTreeMap;

use crate::constants::{FRAME_PAYLOAD_BYTES_MAX, FRAME_RECORDS_MAX, TICK_MS};
use crate::log::LogError;
use crate::replication::{MemberSpec, Mode, NodeId, Primary, StreamSettings};
use crate::transport::{LinkId, Links};
use crate::wire::{ErrorCode, Message, RecordRef, Records, RequestId, Role as WireRole};
use metrics::{MemberMetrics, StreamMetrics};
use primary::PrimaryDriver;
use secondary::SecondaryDriver;

pub use crate::constants::REPLICATE_BYTES_MAX;

/// The host's clock as the driver sees it: microseconds since the host started. The
/// core counts time in ticks of [`TICK_MS`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(u64);

impl Time {
    pub const fn from_micros(micros: u64) -> Time {
        Time(micros)
    }

    pub const fn from_ticks(ticks: u64) -> Time {
        Time(ticks * TICK_MS * 1000)
    }

    pub const fn micros(self) -> u64 {
        self.0
    }

    /// Ticks of the core since the host started.
    pub const fn ticks(self) -> u64 {
        self.0 / (TICK_MS * 1000)
    }

    /// Microseconds from `earlier` to `self` (0 if `earlier` is later).
    pub const fn micros_since(self, earlier: Time) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// One stream's configuration, as the driver needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSpec {
    pub name: String,
    /// The node whose greeting this node answers as a secondary.
    pub primary: NodeId,
    /// The primary's members: its sync set (`sync`) and its learners.
    pub members: Vec<MemberSpec>,
    pub settings: StreamSettings,
    /// How long an append waits for its commit when the client does not say.
    pub request_timeout_ms: u64,
    /// Retention: sealed segments kept beyond what every member still needs (`None`:
    /// the log keeps everything).
    pub retain_segments: Option<usize>,
}

impl StreamSpec {
    /// The members of a sync set and learners, as a spec lists them.
    pub fn members_of(sync_set: &[NodeId], learners: &[NodeId]) -> Vec<MemberSpec> {
        let sync = sync_set.iter().map(|&id| MemberSpec { id, sync: true });
        let learn = learners.iter().map(|&id| MemberSpec { id, sync: false });
        sync.chain(learn).collect()
    }

    /// The members the primary `me` sends to: every one but itself.
    fn members_without(&self, me: NodeId) -> Vec<MemberSpec> {
        self.members
            .iter()
            .filter(|m| m.id != me)
            .copied()
            .collect()
    }

    fn sync_set(&self) -> Vec<NodeId> {
        self.members
            .iter()
            .filter(|m| m.sync)
            .map(|m| m.id)
            .collect()
    }
}

/// Bugs planted on purpose in the driver, so that the simulator proves it catches
/// them. The node never plants one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plant {
    /// A member acks what it received as durable.
    AckBeforeDurable,
    /// The primary's retention deletes everything durable here, above the commit LSN
    /// and above what the sync set holds.
    RetainAboveCommit,
    /// The primary counts a returning member's log as far as its greeting and its acks
    /// say while the member still has to cut the tail this primary does not have (as
    /// if the logs agreed).
    CountAcksWhileTruncating,
}

/// How a driver is run: the node's limits, or the simulator's smaller ones.
#[derive(Clone, Debug)]
pub struct Options {
    /// Records in one Replicate frame at most.
    pub replicate_records_max: usize,
    /// Bytes of records (headers included) in one Replicate frame, unless a record
    /// alone is larger.
    pub replicate_bytes_max: usize,
    /// Records kept in memory for sending: at most these many bytes and records.
    pub cache_bytes: usize,
    pub cache_records: usize,
    /// Ticks between two looks of retention at the log.
    pub retain_every_ticks: u64,
    /// Ticks before a ring is offered again to a member whose last ring failed, was
    /// declined or could not be set up (the link runs on TCP meanwhile).
    pub ring_retry_ticks: u64,
    /// Every note is kept for the host (the simulator's checker reads them); without
    /// it, only those the node logs.
    pub trace: bool,
    /// Commit latency is measured by phase (a host whose clock has microseconds).
    pub latency: bool,
    pub plant: Option<Plant>,
}

impl Default for Options {
    /// The node's.
    fn default() -> Options {
        Options {
            replicate_records_max: FRAME_RECORDS_MAX,
            replicate_bytes_max: REPLICATE_BYTES_MAX,
            cache_bytes: 64 << 20,
            cache_records: 1 << 18,
            retain_every_ticks: 1000 / TICK_MS,
            ring_retry_ticks: 1000 / TICK_MS,
            trace: false,
            latency: true,
            plant: None,
        }
    }
}

/// What became of a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Handled {
    Done,
    /// The log cannot take the records now: offer the same frame again after the
    /// write in flight completes.
    Later,
    /// Close the link, saying why.
    Close(String),
}

enum Role {
    Primary(Box<PrimaryDriver>),
    Secondary(SecondaryDriver),
}

/// The driver of one stream. See the module docs.
pub struct StreamDriver<S> {
    spec: StreamSpec,
    node_id: NodeId,
    log: S,
    role: Role,
    metrics: StreamMetrics,
    /// This incarnation's epoch as primary, or the newest epoch known as secondary.
    epoch: u64,
    failed: Option<String>,
    /// This process, when the stream is under the cluster's controller.
    incarnation: Option<u64>,
    /// A switchover in progress: this primary admits nothing and reports when the
    /// target holds its whole log.
    draining: Option<roles::Draining>,
    /// The epoch whose primary role this incarnation gave up on learning of a newer
    /// one (see [`StreamDriver::step_down`]): it never takes that role again.
    stepped_down: Option<u64>,
    /// The EPOCH file: what is stored, what is being stored, and the fences waiting.
    epochs: roles::EpochStore,
    /// Tick retention last looked at the log.
    retained_at: u64,
    /// Per member: no ring is offered before this (see [`rings`]).
    ring_retry: BTreeMap<NodeId, Time>,
    outputs: Vec<Output>,
    options: Options,
}

impl<S: LogStore> StreamDriver<S> {
    /// A driver from `log` as recovered. `epoch` is this incarnation's epoch as
    /// primary, already stored (see [`start_epoch`]), or the newest epoch known as
    /// secondary; `stored_epoch` is what the EPOCH file holds.
    ///
    /// Without a controller (`incarnation` is `None`) the stream takes the role of
    /// `spec`. Under the controller, this process (`incarnation`) starts as a secondary
    /// and serves as primary only once a committed configuration names it: a restarted
    /// node never resumes a role on its own.
    #[allow(clippy::too_many_arguments)] // the stream's parts, each handed over once
    pub fn new(
        spec: StreamSpec,
        node_id: NodeId,
        log: S,
        epoch: u64,
        stored_epoch: u64,
        incarnation: Option<u64>,
        member_addrs: Vec<(NodeId, String)>,
        primary_addr: Option<String>,
        options: Options,
    ) -> StreamDriver<S> {
        let primary = spec.primary == node_id && incarnation.is_none();
        let last = log.durable_lsn();
        let role = if primary {
            let specs = spec.members_without(node_id);
            let core = Primary::new(spec.settings.clone(), epoch, &specs, last, 0);
            Role::Primary(Box::new(PrimaryDriver::new(core, member_addrs, &options)))
        } else {
            let semi = spec.settings.mode == Mode::Semi;
            // Named primary, but under the controller: no primary serves until a
            // configuration names one.
            let primary_addr = primary_addr.filter(|_| spec.primary != node_id);
            Role::Secondary(SecondaryDriver::new(
                epoch,
                log.next_lsn() - 1,
                log.last_epoch().unwrap_or(0),
                log.durable_lsn(),
                semi,
                primary_addr,
            ))
        };
        let role_name = if primary { "primary" } else { "secondary" };
        let mode = spec.settings.mode.as_str();
        let mut metrics = if options.latency {
            StreamMetrics::new(&spec.name, role_name, mode)
        } else {
            StreamMetrics::untimed(&spec.name, role_name, mode)
        };
        metrics.epoch = epoch;
        let mut d = StreamDriver {
            node_id,
            role,
            metrics,
            epoch,
            failed: None,
            incarnation,
            draining: None,
            stepped_down: None,
            epochs: roles::EpochStore::new(stored_epoch),
            retained_at: 0,
            ring_retry: BTreeMap::new(),
            outputs: Vec::new(),
            options,
            log,
            spec,
        };
        let sync_set = d.spec.sync_set();
        d.note(Note::Started {
            primary,
            epoch,
            last_lsn: last,
            sync_set,
        });
        d
    }

    /// The log, for the host's writes and its simulated faults.
    pub fn log(&self) -> &S {
        &self.log
    }

    pub fn log_mut(&mut self) -> &mut S {
        &mut self.log
    }

    /// The log back, when the process ends.
    pub fn into_log(self) -> S {
        self.log
    }

    pub fn spec(&self) -> &StreamSpec {
        &self.spec
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn is_primary(&self) -> bool {
        matches!(self.role, Role::Primary(_))
    }

    /// This node's epoch: its own as primary, the newest known as secondary.
    pub fn epoch(&self) -> u64 {
        match &self.role {
            Role::Primary(_) => self.epoch,
            Role::Secondary(s) => s.core.epoch(),
        }
    }

    /// Why the stream stopped, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// The stream's metrics, as of the last [`StreamDriver::refresh_metrics`].
    pub fn metrics(&self) -> &StreamMetrics {
        &self.metrics
    }

    /// Work for the host and notes, in the order they arose.
    pub fn take_outputs(&mut self) -> std::vec::Drain<'_, Output> {
        self.outputs.drain(..)
    }

    fn note(&mut self, note: Note) {
        primary::note_to(&mut self.outputs, self.options.trace, note);
    }

    /// Highest LSN readers may see here.
    pub fn commit_lsn(&self) -> u64 {
        match &self.role {
            Role::Primary(p) => p.core.commit_lsn(),
            Role::Secondary(s) => s.core.readable_commit(),
        }
    }

    /// Requests waiting for their commit (primary only).
    pub fn waiting(&self) -> usize {
        match &self.role {
            Role::Primary(p) => p.core.waiting(),
            Role::Secondary(_) => 0,
        }
    }

    /// The members of a primary: (id, address, link once greeted).
    pub fn members(&self) -> impl Iterator<Item = (NodeId, &str, Option<LinkId>)> + '_ {
        let members = match &self.role {
            Role::Primary(p) => p.members.as_slice(),
            Role::Secondary(_) => &[],
        };
        members.iter().map(|m| (m.id, m.addr.as_str(), m.link))
    }

    /// Members whose greeting agreed with this primary's log: their acks count.
    pub fn connected_members(&self) -> Vec<NodeId> {
        match &self.role {
            Role::Primary(p) => p.core.members().filter(|m| m.2).map(|m| m.0).collect(),
            Role::Secondary(_) => Vec::new(),
        }
    }

    /// The reply to a client's hello.
    pub fn welcome(&self) -> Message<'_> {
        match &self.role {
            Role::Primary(_) => Message::Welcome {
                node_id: self.node_id,
                role: WireRole::Primary,
                epoch: self.epoch,
                primary: None,
            },
            Role::Secondary(s) => Message::Welcome {
                node_id: self.node_id,
                role: WireRole::Secondary,
                epoch: s.core.epoch(),
                primary: s.primary_addr.as_deref(),
            },
        }
    }

    /// A client frame of this stream.
    pub fn on_client(
        &mut self,
        links: &mut impl Links,
        link: LinkId,
        id: RequestId,
        msg: &Message<'_>,
        now: Time,
    ) -> Handled {
        match msg {
            Message::Append {
                mode,
                timeout_ms,
                payloads,
            } => self.on_append(links, link, id, *mode, *timeout_ms, payloads, now),
            Message::Read {
                from_lsn,
                records_max,
                bytes_max,
            } => self.on_read(links, link, id, *from_lsn, *records_max, *bytes_max),
            Message::Status => {
                self.refresh_metrics();
                let json = self.metrics.to_json().to_string();
                send_or_close(links, link, id, &Message::StatusReply { json: &json })
            }
            other => unexpected(links, link, id, other, "client"),
        }
    }

    fn on_read(
        &mut self,
        links: &mut impl Links,
        link: LinkId,
        id: RequestId,
        from_lsn: u64,
        records_max: u32,
        bytes_max: u32,
    ) -> Handled {
        let commit = self.commit_lsn();
        let mut recs = Vec::new();
        if from_lsn <= commit {
            // The reply must fit one frame, whatever the client asked for.
            let count = (records_max as usize)
                .min((commit - from_lsn + 1) as usize)
                .min(FRAME_RECORDS_MAX);
            let bytes = (bytes_max as usize).min(FRAME_PAYLOAD_BYTES_MAX);
            match self.log.read(from_lsn, count, bytes) {
                Ok(r) => recs = r,
                Err(e) => {
                    // Below the retained range (deleted by retention) is the client's
                    // to handle, as the wire code says; anything else is the node's
                    // fault.
                    let code = match e {
                        LogError::OutOfRange { .. } => ErrorCode::OutOfRange,
                        _ => ErrorCode::Internal,
                    };
                    let message = e.to_string();
                    let m = Message::Error {
                        code,
                        message: &message,
                    };
                    return send_or_close(links, link, id, &m);
                }
            }
        }
        let refs: Vec<RecordRef<'_>> = recs
            .iter()
            .map(|r| RecordRef {
                lsn: r.lsn,
                epoch: r.epoch,
                payload: &r.payload,
            })
            .collect();
        let reply = Message::Records {
            commit_lsn: commit,
            records: Records::new(&refs),
        };
        send_or_close(links, link, id, &reply)
    }

    /// A frame on a peer link: from the primary (this node a secondary) or from a
    /// member (this node the primary).
    pub fn on_peer(
        &mut self,
        links: &mut impl Links,
        link: LinkId,
        msg: &Message<'_>,
        now: Time,
    ) -> Handled {
        if self.is_primary() {
            self.on_member_frame(links, link, msg, now)
        } else {
            self.on_primary_frame(links, link, msg)
        }
    }

    /// A link of this stream closed.
    pub fn on_link_closed(&mut self, link: LinkId) {
        self.fold_acks();
        match &mut self.role {
            Role::Primary(p) => p.on_link_closed(link),
            Role::Secondary(s) => {
                if s.primary_link == Some(link) {
                    s.primary_link = None;
                }
            }
        }
    }

    /// The log is durable up to `lsn`.
    pub fn on_durable(&mut self, lsn: u64, now: Time) {
        match &mut self.role {
            Role::Primary(p) => p.on_durable(lsn, now),
            Role::Secondary(s) => {
                s.core.on_local_durable(lsn);
                s.ack_due = true;
            }
        }
    }

    /// The host issued the log write of everything appended so far.
    pub fn on_write_issued(&mut self, now: Time) {
        if let Role::Primary(p) = &mut self.role {
            p.on_write_issued(&mut self.metrics, now);
        }
    }

    /// The log failed: stop the stream and say why.
    pub fn fail(&mut self, links: &mut impl Links, e: LogError) -> Handled {
        let why = e.to_string();
        self.metrics.failure = Some(why.clone());
        self.failed = Some(why.clone());
        self.note(Note::Failed { why });
        self.fold_acks();
        match &mut self.role {
            Role::Primary(p) => p.core.stop("the primary's log failed"),
            Role::Secondary(s) => {
                if let Some(l) = s.primary_link {
                    links.close(l, "the log failed");
                }
            }
        }
        Handled::Done
    }

    /// Runs the core for this turn: retention, ticks, sends, replies, acks, truncation.
    pub fn drive(&mut self, links: &mut impl Links, now: Time) {
        self.retain(links, now);
        if self.is_primary() {
            self.drive_primary(links, now);
        } else {
            self.drive_secondary(links);
        }
    }

    /// Retention, at most every `retain_every_ticks`: with `retain_segments = N`,
    /// sealed segments beyond the newest N are deleted once everything in them is
    /// committed and held durably by every member that must hold it (see
    /// `Primary::retention_floor`; a secondary keeps what it has not seen committed).
    fn retain(&mut self, links: &mut impl Links, now: Time) {
        let Some(keep) = self.spec.retain_segments else {
            return;
        };
        if !self.retention_due(now) {
            return;
        }
        self.retained_at = now.ticks();
        let floor = match &self.role {
            Role::Primary(p) if self.options.plant == Some(Plant::RetainAboveCommit) => {
                p.core.local_durable()
            }
            Role::Primary(p) => p.core.retention_floor(),
            Role::Secondary(s) => s.core.readable_commit(),
        };
        let before = self.log.first_lsn();
        match self.log.retain(floor + 1, keep) {
            Ok(first) if first > before => self.note(Note::Retained {
                from: before,
                to: first,
            }),
            Ok(_) => {}
            Err(e) => {
                self.fail(links, e);
            }
        }
    }

    /// Whether retention looks at the log in this turn's [`StreamDriver::drive`]: it is
    /// configured, its period is over, and the log is settled.
    pub fn retention_due(&self, now: Time) -> bool {
        self.spec.retain_segments.is_some()
            && now.ticks() >= self.retained_at + self.options.retain_every_ticks
            && self.log.settled()
    }

    /// The host tells what each link runs on: the link to each member (primary), the
    /// link from the primary (secondary).
    pub fn set_transports(
        &mut self,
        member: impl Fn(NodeId) -> &'static str,
        from_primary: &'static str,
    ) {
        for m in &mut self.metrics.members {
            m.transport = member(m.id);
        }
        self.metrics.transport = from_primary;
    }

    /// Copies the current state into the metrics.
    pub fn refresh_metrics(&mut self) {
        let m = &mut self.metrics;
        m.durable_lsn = self.log.durable_lsn();
        m.last_lsn = self.log.next_lsn() - 1;
        match &self.role {
            Role::Primary(p) => {
                m.commit_lsn = p.core.commit_lsn();
                m.degraded = p.core.degraded();
                // The host sets each link's transport; it stays until the host changes it.
                let transport_of = |id| {
                    m.members
                        .iter()
                        .find(|old| old.id == id)
                        .map_or("tcp", |old| old.transport)
                };
                let members = p
                    .core
                    .members()
                    .map(
                        |(id, in_sync, connected, received_lsn, durable_lsn)| MemberMetrics {
                            id,
                            in_sync,
                            connected,
                            received_lsn,
                            durable_lsn,
                            transport: transport_of(id),
                        },
                    )
                    .collect();
                m.members = members;
            }
            Role::Secondary(s) => {
                m.commit_lsn = s.core.readable_commit();
                m.epoch = s.core.epoch();
            }
        }
    }
}

/// The epoch a stream starts in. A primary without a controller takes a new one at
/// every start, higher than the configured one, than every epoch in its log and than
/// the stored one, and stores it before any record (so an (epoch, LSN) pair names one
/// record forever); every other start keeps the newest it knows.
pub fn start_epoch(new_primary: bool, configured: u64, last_epoch: u64, stored: u64) -> u64 {
    if new_primary {
        configured.max(last_epoch + 1).max(stored + 1)
    } else {
        configured.max(last_epoch).max(stored)
    }
}

fn send_or_close(
    links: &mut impl Links,
    link: LinkId,
    id: RequestId,
    msg: &Message<'_>,
) -> Handled {
    match links.send(link, id, msg) {
        Ok(()) => Handled::Done,
        Err(e) => Handled::Close(e.to_string()),
    }
}

/// Answers a message that has no place on a `connection` link with an error, and
/// closes the link.
fn unexpected(
    links: &mut impl Links,
    link: LinkId,
    id: RequestId,
    msg: &Message<'_>,
    connection: &str,
) -> Handled {
    let why = format!("unexpected {} on a {connection} connection", msg.kind());
    let m = Message::Error {
        code: ErrorCode::Unexpected,
        message: &why,
    };
    send_then_close(links, link, id, &m, &why)
}

/// Answers, then closes the link once the answer is out.
fn send_then_close(
    links: &mut impl Links,
    link: LinkId,
    id: RequestId,
    msg: &Message<'_>,
    why: &str,
) -> Handled {
    let _ = links.send(link, id, msg);
    Handled::Close(why.to_string())
}
