//! The driver of one stream on its shard: turns frames and log completions into inputs
//! of the replication core, and the core's actions into log writes and frames.
//!
//! Order within a turn keeps the commit path short: client appends go into the log's
//! batch and the record cache, the core's sends are queued on the member links, the log
//! write is submitted, and only then are the links flushed — so the local durable write
//! and the network sends are in flight together.
//!
//! Fault handling: a failed log write stops the stream (every waiting request ends in
//! doubt, later requests get `Unavailable`); a member link that fails is closed and
//! dialled again; a primary that sends records of an older epoch, or a gap, is refused.

mod roles;

pub use roles::RolesApplied;

use std::collections::HashMap;
use std::time::Instant;

use crate::constants::{FRAME_PAYLOAD_BYTES_MAX, FRAME_RECORDS_MAX};
use crate::log::{Log, LogError, record};
use crate::replication::shared_prefix::{Answer, Epochs, answer, member_cut, truncation_is_stale};
use crate::replication::{
    Action, Event, MemberSpec, Mode, NodeId, Outcome, Primary, Secondary, Verdict,
};
use crate::server::config::StreamConfig;
use crate::server::metrics::{MemberMetrics, Phase, StreamMetrics};
use crate::server::record_cache::RecordCache;
use crate::transport::{LinkId, Links};
use crate::wire::{ErrorCode, Message, Payloads, RecordRef, Records, RequestId, Role};

/// Bytes of records (headers included) in one Replicate frame: well within one log
/// batch on the member, so a member whose batch is empty can always take a frame.
const REPLICATE_BYTES_MAX: usize = 512 << 10;
const _: () = assert!(REPLICATE_BYTES_MAX <= crate::constants::BATCH_BYTES_DEFAULT / 2);
const _: () = assert!(REPLICATE_BYTES_MAX <= crate::constants::FRAME_PAYLOAD_BYTES_MAX);
/// Records kept in memory for sending.
const CACHE_BYTES: usize = 64 << 20;
const CACHE_RECORDS: usize = 1 << 18;

/// What became of a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Handled {
    Done,
    /// The log cannot take the records now: try the same frame again after the write
    /// in flight completes.
    Later,
    /// Close the link, saying why.
    Close(String),
}

struct ClientRequest {
    link: LinkId,
    id: RequestId,
    arrived: Instant,
    bytes: u64,
}

/// A member as the primary's driver sees it.
pub struct MemberLink {
    pub id: NodeId,
    pub addr: String,
    pub link: Option<LinkId>,
    /// Waiting for the member to truncate its tail and greet again.
    pub truncating: bool,
}

pub struct PrimaryDriver {
    core: Primary,
    cache: RecordCache,
    pub members: Vec<MemberLink>,
    requests: HashMap<u64, ClientRequest>,
    next_request: u64,
    /// (lsn, when it became durable locally), for the latency phases.
    durable_at: std::collections::VecDeque<(u64, Instant)>,
}

pub struct SecondaryDriver {
    core: Secondary,
    pub primary_link: Option<LinkId>,
    primary_addr: Option<String>,
    ack_due: bool,
    /// The primary of an epoch asked to keep records up to (its epoch, LSN, the epoch
    /// of its record there).
    truncate_to: Option<(u64, u64, u64)>,
    /// The primary of an epoch asked to start the log over after (LSN, epoch): it no
    /// longer holds what comes after this log's end.
    rebase_to: Option<(u64, u64, u64)>,
}

pub enum RoleDriver {
    Primary(Box<PrimaryDriver>),
    Secondary(SecondaryDriver),
}

pub struct StreamDriver {
    pub cfg: StreamConfig,
    pub node_id: NodeId,
    pub log: Log,
    pub role: RoleDriver,
    pub metrics: StreamMetrics,
    epoch: u64,
    failed: Option<String>,
    started: Instant,
    /// This process, when the stream is under the cluster's controller.
    incarnation: Option<u64>,
    /// Requests for the controller (removal, restore of members).
    requests: Vec<crate::control::Request>,
    /// A switchover in progress: this primary admits nothing and reports when the
    /// target holds its whole log.
    draining: Option<roles::Draining>,
    /// When retention last looked at the log.
    retained_at: Instant,
}

/// How often retention looks for segments to delete.
const RETENTION_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

fn role_name(role: &RoleDriver) -> &'static str {
    match role {
        RoleDriver::Primary(_) => "primary",
        RoleDriver::Secondary(_) => "secondary",
    }
}

impl StreamDriver {
    /// `epoch` is this incarnation's epoch as primary (see `epoch_file`), or the
    /// newest epoch known as secondary.
    pub fn new(
        cfg: StreamConfig,
        node_id: NodeId,
        log: Log,
        epoch: u64,
        member_addrs: Vec<(NodeId, String)>,
        primary_addr: Option<String>,
        started: Instant,
    ) -> StreamDriver {
        let last = log.durable_lsn();
        let role = if cfg.primary == node_id {
            let specs: Vec<MemberSpec> = cfg
                .sync_set
                .iter()
                .map(|&id| MemberSpec { id, sync: true })
                .chain(
                    cfg.learners
                        .iter()
                        .map(|&id| MemberSpec { id, sync: false }),
                )
                .collect();
            RoleDriver::Primary(Box::new(PrimaryDriver {
                core: Primary::new(cfg.settings.clone(), epoch, &specs, last, 0),
                cache: RecordCache::new(CACHE_BYTES, CACHE_RECORDS),
                members: member_addrs
                    .into_iter()
                    .map(|(id, addr)| MemberLink {
                        id,
                        addr,
                        link: None,
                        truncating: false,
                    })
                    .collect(),
                requests: HashMap::with_capacity(4096),
                next_request: 1,
                durable_at: std::collections::VecDeque::with_capacity(1024),
            }))
        } else {
            let semi = cfg.settings.mode == Mode::Semi;
            RoleDriver::Secondary(SecondaryDriver {
                core: Secondary::new(epoch, last, log.last_epoch().unwrap_or(0), semi),
                primary_link: None,
                primary_addr,
                ack_due: false,
                truncate_to: None,
                rebase_to: None,
            })
        };
        let mut metrics =
            StreamMetrics::new(&cfg.name, role_name(&role), cfg.settings.mode.as_str());
        metrics.epoch = epoch;
        StreamDriver {
            cfg,
            node_id,
            log,
            role,
            metrics,
            epoch,
            failed: None,
            started,
            incarnation: None,
            requests: Vec::new(),
            draining: None,
            retained_at: started,
        }
    }

    fn ticks(&self, now: Instant) -> u64 {
        now.duration_since(self.started).as_millis() as u64 / crate::server::config::TICK_MS
    }

    pub fn is_primary(&self) -> bool {
        matches!(self.role, RoleDriver::Primary(_))
    }

    pub fn welcome(&self) -> Message<'_> {
        match &self.role {
            RoleDriver::Primary(_) => Message::Welcome {
                node_id: self.node_id,
                role: Role::Primary,
                epoch: self.epoch,
                primary: None,
            },
            RoleDriver::Secondary(s) => Message::Welcome {
                node_id: self.node_id,
                role: Role::Secondary,
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
        now: Instant,
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
            } => {
                let commit = self.commit_lsn();
                let mut recs = Vec::new();
                if *from_lsn <= commit {
                    // The reply must fit one frame, whatever the client asked for.
                    let count = (*records_max as usize)
                        .min((commit - from_lsn + 1) as usize)
                        .min(FRAME_RECORDS_MAX);
                    let bytes = (*bytes_max as usize).min(FRAME_PAYLOAD_BYTES_MAX);
                    match self.log.read(*from_lsn, count, bytes) {
                        Ok(r) => recs = r,
                        Err(e) => {
                            return self.reply_error(
                                links,
                                link,
                                id,
                                ErrorCode::Internal,
                                &e.to_string(),
                            );
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
            Message::Status => {
                self.refresh_metrics();
                let json = self.metrics.to_json().to_string();
                send_or_close(links, link, id, &Message::StatusReply { json: &json })
            }
            other => {
                let why = format!("unexpected {} on a client connection", other.kind());
                let m = Message::Error {
                    code: ErrorCode::Unexpected,
                    message: &why,
                };
                send_then_close(links, link, id, &m, &why)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_append(
        &mut self,
        links: &mut impl Links,
        link: LinkId,
        id: RequestId,
        mode: Option<crate::wire::Mode>,
        timeout_ms: u32,
        payloads: &Payloads<'_>,
        now: Instant,
    ) -> Handled {
        let epoch = self.epoch;
        if let Some(d) = &self.draining {
            // Switching over: the target is about to be the primary.
            let primary = Some(d.to_addr.as_str());
            return send_or_close(links, link, id, &Message::NotPrimary { epoch, primary });
        }
        let RoleDriver::Primary(p) = &mut self.role else {
            let (epoch, primary) = match &self.role {
                RoleDriver::Secondary(s) => (s.core.epoch(), s.primary_addr.as_deref()),
                RoleDriver::Primary(_) => unreachable!(),
            };
            return send_or_close(links, link, id, &Message::NotPrimary { epoch, primary });
        };
        if let Some(why) = &self.failed {
            let why = why.clone();
            return self.reply_error(links, link, id, ErrorCode::Unavailable, &why);
        }
        if let Some(m) = mode.filter(|&m| m > self.cfg.settings.mode) {
            // Per request, a mode may only be weaker than the stream's.
            let msg = format!(
                "mode {m} is stronger than the stream's mode {}",
                self.cfg.settings.mode
            );
            return self.reply_error(links, link, id, ErrorCode::ModeNotAllowed, &msg);
        }
        let bytes: usize = payloads.iter().map(|p| record::record_bytes(p.len())).sum();
        if bytes > self.log.payload_bytes_max() + record::record_bytes(0) {
            let msg = format!(
                "append of {bytes} bytes (headers included) exceeds one log batch of {} bytes: split it",
                self.log.payload_bytes_max() + record::record_bytes(0)
            );
            return self.reply_error(links, link, id, ErrorCode::TooLarge, &msg);
        }
        match self.log.make_room(bytes) {
            Ok(true) => {}
            Ok(false) => return Handled::Later,
            // A full disk refuses this append (nothing was appended); the stream goes on.
            Err(e @ LogError::NoSpace { .. }) => {
                return self.reply_error(links, link, id, ErrorCode::Unavailable, &e.to_string());
            }
            Err(e) => {
                self.fail(links, e);
                let why = self.failed.clone().unwrap_or_default();
                return self.reply_error(links, link, id, ErrorCode::Unavailable, &why);
            }
        }
        let timeout = if timeout_ms == 0 {
            self.cfg.request_timeout_ms
        } else {
            u64::from(timeout_ms)
        };
        let request = p.next_request;
        p.next_request += 1;
        let count = payloads.len() as u64;
        let (first, last) = p.core.append(
            request,
            count,
            mode,
            timeout / crate::server::config::TICK_MS,
        );
        let mut lsn = first;
        let mut payload_bytes = 0;
        for payload in payloads.iter() {
            let got = self
                .log
                .append(epoch, payload)
                .expect("space was checked with fits()");
            assert_eq!(got, lsn, "the log and the core assign the same LSNs");
            p.cache.push(lsn, epoch, payload);
            payload_bytes += payload.len() as u64;
            lsn += 1;
        }
        assert_eq!(lsn, last + 1);
        p.requests.insert(
            request,
            ClientRequest {
                link,
                id,
                arrived: now,
                bytes: payload_bytes,
            },
        );
        self.metrics
            .record(Phase::Queued, now.elapsed().as_micros() as u64);
        Handled::Done
    }

    fn reply_error(
        &mut self,
        links: &mut impl Links,
        link: LinkId,
        id: RequestId,
        code: ErrorCode,
        message: &str,
    ) -> Handled {
        send_or_close(links, link, id, &Message::Error { code, message })
    }

    /// Highest LSN readers may see here.
    pub fn commit_lsn(&self) -> u64 {
        match &self.role {
            RoleDriver::Primary(p) => p.core.commit_lsn(),
            RoleDriver::Secondary(s) => s.core.readable_commit(),
        }
    }

    /// A primary connected to this node (secondary side).
    pub fn on_peer_hello(
        &mut self,
        links: &mut impl Links,
        link: LinkId,
        id: RequestId,
        from: NodeId,
        epoch: u64,
    ) -> Handled {
        let node_id = self.node_id;
        let RoleDriver::Secondary(s) = &mut self.role else {
            let reason = "this node is the stream's primary";
            return send_then_close(
                links,
                link,
                id,
                &Message::Refuse {
                    epoch: self.epoch,
                    last_lsn: self.log.durable_lsn(),
                    reason,
                },
                reason,
            );
        };
        if from != self.cfg.primary || epoch < s.core.epoch() {
            let reason = "not the configured primary, or an older epoch";
            return send_then_close(
                links,
                link,
                id,
                &Message::Refuse {
                    epoch: s.core.epoch(),
                    last_lsn: s.core.last_lsn(),
                    reason,
                },
                reason,
            );
        }
        if let Some(old) = s.primary_link.replace(link)
            && old != link
        {
            links.close(old, "the primary connected again");
        }
        // An ack owed to the previous connection would reach the new primary before
        // the handshake: the welcome below says everything it said.
        s.ack_due = false;
        s.core.on_heartbeat(epoch, 0);
        let welcome = Message::PeerWelcome {
            node_id,
            epoch: s.core.epoch(),
            last_lsn: s.core.last_lsn(),
            last_epoch: s.core.last_epoch(),
            durable_lsn: s.core.durable_lsn(),
        };
        send_or_close(links, link, id, &welcome)
    }

    /// A frame from the primary (secondary side) or from a member (primary side).
    pub fn on_peer(&mut self, links: &mut impl Links, link: LinkId, msg: &Message<'_>) -> Handled {
        match (&mut self.role, msg) {
            (
                RoleDriver::Secondary(s),
                Message::Replicate {
                    epoch,
                    prev_lsn,
                    prev_epoch,
                    commit_lsn,
                    records,
                },
            ) => {
                if s.primary_link != Some(link) {
                    return Handled::Close("records from a link that is not the primary's".into());
                }
                if s.truncate_to.is_some() || s.rebase_to.is_some() {
                    return Handled::Later;
                }
                let first = prev_lsn + 1;
                let last = first + records.len() as u64 - 1;
                let last_epoch = records.iter().last().map_or(*epoch, |r| r.epoch);
                // Room for the records this node does not have yet, in one batch.
                let have = s.core.last_lsn();
                let bytes: usize = records
                    .iter()
                    .filter(|r| r.lsn > have)
                    .map(|r| record::record_bytes(r.payload.len()))
                    .sum();
                if bytes > 0 {
                    match self.log.make_room(bytes) {
                        Ok(true) => {}
                        Ok(false) => return Handled::Later,
                        // The primary dials again: a full disk is retried at that pace.
                        Err(e @ LogError::NoSpace { .. }) => return Handled::Close(e.to_string()),
                        Err(e) => return self.fail(links, e),
                    }
                }
                match s.core.on_replicate(
                    *epoch,
                    *prev_lsn,
                    *prev_epoch,
                    first,
                    last,
                    last_epoch,
                    *commit_lsn,
                ) {
                    Verdict::Append { skip, first, last } => {
                        let mut lsn = first;
                        for r in records.iter().skip(skip) {
                            match self.log.append(r.epoch, r.payload) {
                                Ok(got) => assert_eq!(got, lsn),
                                Err(e) => return self.fail(links, e),
                            }
                            lsn += 1;
                        }
                        assert_eq!(lsn, last + 1);
                        if s.core.ack_on_receipt() {
                            s.ack_due = true;
                        }
                        Handled::Done
                    }
                    Verdict::Duplicate => {
                        s.ack_due = true;
                        Handled::Done
                    }
                    Verdict::Refuse { reason, last_lsn } => {
                        let m = Message::Refuse {
                            epoch: s.core.epoch(),
                            last_lsn,
                            reason,
                        };
                        send_or_close(links, link, RequestId(0), &m)
                    }
                }
            }
            (RoleDriver::Secondary(s), Message::Heartbeat { epoch, commit_lsn }) => {
                s.core.on_heartbeat(*epoch, *commit_lsn);
                Handled::Done
            }
            (
                RoleDriver::Secondary(s),
                Message::Truncate {
                    epoch,
                    after_lsn: lsn,
                    after_epoch: lsn_epoch,
                }
                | Message::Rebase {
                    epoch,
                    base_lsn: lsn,
                    base_epoch: lsn_epoch,
                },
            ) => {
                if *epoch < s.core.epoch() || s.primary_link != Some(link) {
                    return Handled::Close(format!("{} asked by an older primary", msg.kind()));
                }
                let asked = Some((*epoch, *lsn, *lsn_epoch));
                if matches!(msg, Message::Truncate { .. }) {
                    s.truncate_to = asked;
                } else {
                    s.rebase_to = asked;
                }
                Handled::Done
            }
            (
                RoleDriver::Primary(p),
                Message::Ack {
                    epoch: _,
                    received_lsn,
                    durable_lsn,
                },
            ) => {
                let Some(m) = p.members.iter().find(|m| m.link == Some(link)) else {
                    return Handled::Close("an ack on a link that is no member's".into());
                };
                // Until a returning member has cut the tail this primary lacks and
                // greeted again, its acks speak of records that are not this
                // primary's: counting them would commit records the member lacks.
                if !m.truncating {
                    p.core.on_ack(m.id, *received_lsn, *durable_lsn);
                }
                Handled::Done
            }
            (
                RoleDriver::Primary(p),
                Message::Refuse {
                    epoch,
                    last_lsn,
                    reason,
                },
            ) => {
                let Some(m) = p.members.iter().find(|m| m.link == Some(link)) else {
                    return Handled::Close("a refusal on a link that is no member's".into());
                };
                if *epoch > self.epoch {
                    return Handled::Close(format!(
                        "member {} is in a newer epoch {epoch}: {reason}",
                        m.id
                    ));
                }
                eprintln!(
                    "lockstep: stream {}: member {} refused records: {reason} (its log ends at {last_lsn})",
                    self.cfg.name, m.id
                );
                p.core.on_refused(m.id, *last_lsn);
                Handled::Done
            }
            (_, other) => {
                let why = format!("unexpected {} on a peer connection", other.kind());
                let m = Message::Error {
                    code: ErrorCode::Unexpected,
                    message: &why,
                };
                send_then_close(links, link, RequestId(0), &m, &why)
            }
        }
    }

    /// The dialer connected to `member`, whose log ends at (`last_lsn`, `last_epoch`).
    /// Resumes sending after the longest prefix both logs share, or asks the member to
    /// cut a tail this primary does not have (records of an earlier incarnation that
    /// never became durable here, so never committed).
    pub fn on_member_connected(
        &mut self,
        links: &mut impl Links,
        member: NodeId,
        link: LinkId,
        last_lsn: u64,
        last_epoch: u64,
        durable_lsn: u64,
    ) {
        let name = self.cfg.name.clone();
        let epoch = self.epoch;
        let answer = match self.answer(last_lsn, last_epoch) {
            Ok(a) => a,
            Err(e) => {
                let _ = self.fail(links, e);
                return;
            }
        };
        let RoleDriver::Primary(p) = &mut self.role else {
            return;
        };
        let Some(m) = p.members.iter_mut().find(|m| m.id == member) else {
            links.close(link, "not a member of the stream");
            return;
        };
        if let Some(old) = m.link.replace(link)
            && old != link
        {
            links.close(old, "the member connected again");
        }
        let ask = match answer {
            Answer::Resume { agree } => {
                m.truncating = false;
                p.core
                    .on_member_connected(member, durable_lsn.min(agree), agree + 1);
                return;
            }
            Answer::Rebase {
                base_lsn,
                base_epoch,
            } => {
                eprintln!(
                    "lockstep: stream {name}: member {member} ends at lsn {last_lsn}, before this primary's first retained record {}: it starts over after {base_lsn}",
                    base_lsn + 1
                );
                Message::Rebase {
                    epoch,
                    base_lsn,
                    base_epoch,
                }
            }
            Answer::Truncate {
                after_lsn,
                after_epoch,
            } => {
                eprintln!(
                    "lockstep: stream {name}: member {member} holds lsn {}..={last_lsn} that this primary does not: asking it to truncate after {after_lsn}",
                    after_lsn + 1
                );
                Message::Truncate {
                    epoch,
                    after_lsn,
                    after_epoch,
                }
            }
        };
        m.truncating = true;
        let _ = links.send(link, RequestId(0), &ask);
    }

    pub fn on_link_closed(&mut self, link: LinkId) {
        match &mut self.role {
            RoleDriver::Primary(p) => {
                if let Some(m) = p.members.iter_mut().find(|m| m.link == Some(link)) {
                    m.link = None;
                    m.truncating = false;
                    p.core.on_member_disconnected(m.id);
                }
                // Requests of a client that went away stay in the core: their records
                // commit or not, and nobody is told (the client asks by LSN).
                p.requests.retain(|_, r| r.link != link);
            }
            RoleDriver::Secondary(s) => {
                if s.primary_link == Some(link) {
                    s.primary_link = None;
                }
            }
        }
    }

    /// This primary's answer to a member whose log ends with (`last_epoch`, `last_lsn`).
    fn answer(&mut self, last_lsn: u64, last_epoch: u64) -> Result<Answer, LogError> {
        let RoleDriver::Primary(p) = &self.role else {
            return Ok(Answer::Resume { agree: 0 });
        };
        let base = self.log.base();
        let mut epochs = PrimaryEpochs {
            cache: &p.cache,
            log: &mut self.log,
        };
        answer(
            self.epoch,
            base,
            last_lsn,
            last_epoch,
            p.core.last_lsn(),
            &mut epochs,
        )
    }

    /// The log is durable up to `lsn`.
    pub fn on_durable(&mut self, lsn: u64, now: Instant) {
        match &mut self.role {
            RoleDriver::Primary(p) => {
                p.core.on_local_durable(lsn);
                if p.durable_at.len() == p.durable_at.capacity() {
                    p.durable_at.pop_front();
                }
                p.durable_at.push_back((lsn, now));
            }
            RoleDriver::Secondary(s) => {
                s.core.on_local_durable(lsn);
                s.ack_due = true;
            }
        }
    }

    /// The log failed: stop the stream and say why.
    pub fn fail(&mut self, links: &mut impl Links, e: LogError) -> Handled {
        let why = e.to_string();
        eprintln!("lockstep: stream {}: {why}", self.cfg.name);
        self.metrics.failure = Some(why.clone());
        self.failed = Some(why);
        if let RoleDriver::Primary(p) = &mut self.role {
            p.core.stop("the primary's log failed");
        }
        if let RoleDriver::Secondary(s) = &self.role
            && let Some(l) = s.primary_link
        {
            links.close(l, "the log failed");
        }
        Handled::Done
    }

    /// Retention, at most every [`RETENTION_EVERY`]: with `retain_segments = N`, sealed
    /// segments beyond the newest N are deleted once everything in them is committed
    /// and held durably by every member that must hold it (see
    /// `Primary::retention_floor`; a secondary keeps what it has not seen committed).
    fn retain(&mut self, links: &mut impl Links, now: Instant) {
        let Some(keep) = self.cfg.retain_segments else {
            return;
        };
        if now < self.retained_at + RETENTION_EVERY || self.log.writing() || self.log.has_pending()
        {
            return;
        }
        self.retained_at = now;
        let floor = match &self.role {
            RoleDriver::Primary(p) => p.core.retention_floor(),
            RoleDriver::Secondary(s) => s.core.readable_commit(),
        };
        let before = self.log.first_lsn();
        match self.log.retain(floor + 1, keep) {
            Ok(first) if first > before => eprintln!(
                "lockstep: stream {}: retention deleted lsn {before}..{first}",
                self.cfg.name
            ),
            Ok(_) => {}
            Err(e) => {
                let _ = self.fail(links, e);
            }
        }
    }

    /// Runs the core for this turn: ticks, sends, replies, acks, truncation.
    pub fn drive(&mut self, links: &mut impl Links, now: Instant) {
        self.retain(links, now);
        let ticks = self.ticks(now);
        let name = self.cfg.name.clone();
        let epoch = self.epoch;
        match &mut self.role {
            RoleDriver::Primary(p) => {
                p.core.on_tick(ticks);
                let commit = p.core.commit_lsn();
                for a in p.core.poll() {
                    match a {
                        Action::Send { member, from, to } => {
                            let Some(link) = p
                                .members
                                .iter()
                                .find(|m| m.id == member)
                                .and_then(|m| m.link)
                            else {
                                continue;
                            };
                            if let Err(e) = send_records(
                                &mut self.log,
                                &p.cache,
                                links,
                                link,
                                epoch,
                                commit,
                                from,
                                to,
                            ) {
                                links.close(link, &e);
                            }
                        }
                        Action::Heartbeat { member } => {
                            if let Some(link) = p
                                .members
                                .iter()
                                .find(|m| m.id == member)
                                .and_then(|m| m.link)
                            {
                                let _ = links.send(
                                    link,
                                    RequestId(0),
                                    &Message::Heartbeat {
                                        epoch,
                                        commit_lsn: commit,
                                    },
                                );
                            }
                        }
                        Action::Complete {
                            request,
                            first_lsn,
                            last_lsn,
                            outcome,
                        } => {
                            let Some(r) = p.requests.remove(&request) else {
                                continue;
                            };
                            let count = (last_lsn - first_lsn + 1) as u32;
                            let msg = match outcome {
                                Outcome::Committed => {
                                    self.metrics.commits += u64::from(count);
                                    self.metrics.commit_bytes += r.bytes;
                                    let local = p
                                        .durable_at
                                        .iter()
                                        .find(|(l, _)| *l >= last_lsn)
                                        .map(|(_, t)| *t);
                                    if let Some(t) = local {
                                        let d = t.saturating_duration_since(r.arrived).as_micros()
                                            as u64;
                                        self.metrics.record(Phase::LocalDurable, d);
                                        self.metrics.record(
                                            Phase::RemoteAck,
                                            now.saturating_duration_since(t).as_micros() as u64,
                                        );
                                    }
                                    self.metrics.record(
                                        Phase::Total,
                                        now.saturating_duration_since(r.arrived).as_micros() as u64,
                                    );
                                    Message::Appended { first_lsn, count }
                                }
                                Outcome::InDoubt(reason) => {
                                    self.metrics.in_doubt += u64::from(count);
                                    Message::InDoubt {
                                        first_lsn,
                                        count,
                                        reason,
                                    }
                                }
                            };
                            let _ = links.send(r.link, r.id, &msg);
                        }
                        Action::Event(Event::RemovalWanted { member, version }) => {
                            eprintln!(
                                "lockstep: stream {name}: member {member} is stalled: asking the controller to move it to the learners"
                            );
                            self.requests.push(crate::control::Request::Remove {
                                stream: name.clone(),
                                epoch,
                                version,
                                member,
                            });
                        }
                        Action::Event(Event::RestoreWanted { member, version }) => {
                            self.requests.push(crate::control::Request::Restore {
                                stream: name.clone(),
                                epoch,
                                version,
                                member,
                            });
                        }
                        Action::Event(ev) => {
                            self.metrics.events += 1;
                            self.metrics.degraded = matches!(ev, Event::Degraded { .. })
                                || (self.metrics.degraded && !matches!(ev, Event::Recovered));
                            eprintln!("lockstep: stream {name}: sync event: {ev:?}");
                        }
                    }
                }
                // Drop durable-time marks nobody waits for any more.
                let oldest_waiting = commit.min(p.core.local_durable());
                while p.durable_at.len() > 1 && p.durable_at[1].0 <= oldest_waiting {
                    p.durable_at.pop_front();
                }
            }
            RoleDriver::Secondary(s) => {
                if let Some((_, base, base_epoch)) = s.rebase_to
                    && !self.log.writing()
                    && !self.log.has_pending()
                {
                    s.rebase_to = None;
                    let last = self.log.next_lsn() - 1;
                    // Asked because this log ended before `base`: a log that reaches
                    // it now answers an older greeting and is kept. Otherwise the
                    // primary cannot send what follows this log's end, even when the
                    // log is a prefix of the primary's (its own epoch's records).
                    if last < base {
                        if let Err(e) = self.log.reset(base, base_epoch) {
                            let _ = self.fail(links, e);
                            return;
                        }
                        eprintln!(
                            "lockstep: stream {name}: the primary no longer holds lsn {}..={base}: the log starts over after lsn {base}",
                            last + 1
                        );
                        s.core = Secondary::new(
                            s.core.epoch(),
                            base,
                            base_epoch,
                            s.core.ack_on_receipt(),
                        );
                    }
                    if let Some(link) = s.primary_link {
                        let last = self.log.next_lsn() - 1;
                        let w = Message::PeerWelcome {
                            node_id: self.node_id,
                            epoch: s.core.epoch(),
                            last_lsn: last,
                            last_epoch: self.log.last_epoch().unwrap_or(0),
                            durable_lsn: last,
                        };
                        let _ = links.send(link, RequestId(0), &w);
                    }
                }
                if let Some((epoch, asked, asked_epoch)) = s.truncate_to
                    && !self.log.writing()
                    && !self.log.has_pending()
                {
                    s.truncate_to = None;
                    let last_epoch = self.log.last_epoch().unwrap_or(0);
                    let after = if truncation_is_stale(epoch, last_epoch) {
                        // The log is a prefix of the asking primary's: keep it all, and
                        // greet again.
                        let last = self.log.next_lsn() - 1;
                        eprintln!(
                            "lockstep: stream {name}: a truncation asked in epoch {epoch} would cut records of epoch {last_epoch}: stale, the log is kept up to lsn {last}"
                        );
                        last
                    } else {
                        let after = match self.log.last_lsn_up_to_epoch(asked_epoch) {
                            Ok(up_to) => member_cut(asked, up_to),
                            Err(e) => {
                                let _ = self.fail(links, e);
                                return;
                            }
                        };
                        let cut = if after + 1 < self.log.first_lsn() {
                            // Below what retention kept here: the log starts over, and
                            // the primary sends it what it holds.
                            self.log.reset(0, 0)
                        } else {
                            self.log.truncate_after(after)
                        };
                        if let Err(e) = cut {
                            let _ = self.fail(links, e);
                            return;
                        }
                        let after = self.log.next_lsn() - 1;
                        eprintln!(
                            "lockstep: stream {name}: truncated the log after lsn {after} as the primary asked"
                        );
                        let last_epoch = self.log.last_epoch().unwrap_or(0);
                        s.core = Secondary::new(
                            s.core.epoch(),
                            after,
                            last_epoch,
                            s.core.ack_on_receipt(),
                        );
                        after
                    };
                    let last_epoch = self.log.last_epoch().unwrap_or(0);
                    if let Some(link) = s.primary_link {
                        let w = Message::PeerWelcome {
                            node_id: self.node_id,
                            epoch: s.core.epoch(),
                            last_lsn: after,
                            last_epoch,
                            durable_lsn: after,
                        };
                        let _ = links.send(link, RequestId(0), &w);
                    }
                }
                if s.ack_due
                    && let Some(link) = s.primary_link
                {
                    s.ack_due = false;
                    let (received_lsn, durable_lsn) = s.core.ack();
                    let _ = links.send(
                        link,
                        RequestId(0),
                        &Message::Ack {
                            epoch: s.core.epoch(),
                            received_lsn,
                            durable_lsn,
                        },
                    );
                }
            }
        }
    }

    /// Copies the current state into the metrics.
    pub fn refresh_metrics(&mut self) {
        let m = &mut self.metrics;
        m.durable_lsn = self.log.durable_lsn();
        m.last_lsn = self.log.next_lsn() - 1;
        match &self.role {
            RoleDriver::Primary(p) => {
                m.commit_lsn = p.core.commit_lsn();
                m.degraded = p.core.degraded();
                m.members = p
                    .core
                    .members()
                    .map(
                        |(id, in_sync, connected, received_lsn, durable_lsn)| MemberMetrics {
                            id,
                            in_sync,
                            connected,
                            received_lsn,
                            durable_lsn,
                        },
                    )
                    .collect();
            }
            RoleDriver::Secondary(s) => {
                m.commit_lsn = s.core.readable_commit();
                m.epoch = s.core.epoch();
            }
        }
    }
}

/// The primary's epochs: recent records from the send cache, older ones from the log.
struct PrimaryEpochs<'a> {
    cache: &'a RecordCache,
    log: &'a mut Log,
}

impl Epochs for PrimaryEpochs<'_> {
    type Error = LogError;

    fn epoch_at(&mut self, lsn: u64) -> Result<Option<u64>, LogError> {
        match self.cache.get(lsn) {
            Some((e, _)) => Ok(Some(e)),
            None if lsn <= self.log.durable_lsn() => self.log.epoch_at(lsn).map(Some),
            None => Ok(None),
        }
    }

    fn last_up_to_epoch(&mut self, epoch: u64) -> Result<u64, LogError> {
        self.log.last_lsn_up_to_epoch(epoch)
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

/// Sends records `from..=to` to a member in frames of at most one member batch.
#[allow(clippy::too_many_arguments)]
fn send_records(
    log: &mut Log,
    cache: &RecordCache,
    links: &mut impl Links,
    link: LinkId,
    epoch: u64,
    commit: u64,
    from: u64,
    to: u64,
) -> Result<(), String> {
    let epoch_of = |log: &mut Log, lsn: u64| -> Result<u64, String> {
        if lsn == 0 {
            return Ok(0);
        }
        match cache.get(lsn) {
            Some((e, _)) => Ok(e),
            None => log.epoch_at(lsn).map_err(|e| e.to_string()),
        }
    };
    let mut prev_epoch = epoch_of(log, from - 1)?;
    let mut lsn = from;
    let mut owned = Vec::new();
    while lsn <= to {
        // Records from the cache; a member far behind is served from the log.
        owned.clear();
        let mut refs: Vec<RecordRef<'_>> = Vec::new();
        let mut bytes = 0;
        // Bounded by the wire's records per frame and by REPLICATE_BYTES_MAX (a record
        // larger than that goes alone).
        let count_max = ((to - lsn + 1) as usize).min(FRAME_RECORDS_MAX);
        if cache.get(lsn).is_none() {
            owned = log
                .read(lsn, count_max, REPLICATE_BYTES_MAX)
                .map_err(|e| e.to_string())?;
            for r in &owned {
                let b = record::record_bytes(r.payload.len());
                if !refs.is_empty() && bytes + b > REPLICATE_BYTES_MAX {
                    break;
                }
                bytes += b;
                refs.push(RecordRef {
                    lsn: r.lsn,
                    epoch: r.epoch,
                    payload: &r.payload,
                });
            }
        } else {
            while refs.len() < count_max {
                let l = lsn + refs.len() as u64;
                let Some((e, payload)) = cache.get(l) else {
                    break;
                };
                let b = record::record_bytes(payload.len());
                if !refs.is_empty() && bytes + b > REPLICATE_BYTES_MAX {
                    break;
                }
                bytes += b;
                refs.push(RecordRef {
                    lsn: l,
                    epoch: e,
                    payload,
                });
            }
        }
        if refs.is_empty() {
            return Err(format!("record {lsn} is neither cached nor durable"));
        }
        let n = refs.len() as u64;
        let last_epoch = refs.last().map_or(prev_epoch, |r| r.epoch);
        let msg = Message::Replicate {
            epoch,
            prev_lsn: lsn - 1,
            prev_epoch,
            commit_lsn: commit,
            records: Records::new(&refs),
        };
        links
            .send(link, RequestId(0), &msg)
            .map_err(|e| e.to_string())?;
        prev_epoch = last_epoch;
        lsn += n;
    }
    Ok(())
}
