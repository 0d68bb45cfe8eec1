//! The primary side of the driver: client appends into the log and the record cache,
//! the greeting of a member (resume, truncate, or start over after the base), members'
//! acks and refusals, and the core's actions (sends, heartbeats, completed requests,
//! events).
//!
//! A member's acks count for the commit rule only while the core holds it connected,
//! which it is from a greeting whose log agrees with this primary's (`Resume`) until
//! its link closes or it is asked to cut its log again: one rule, in the core
//! (`Primary::on_ack`). Until then its acks speak of records that are not this
//! primary's, and counting them would commit records the member lacks.

use std::collections::{HashMap, VecDeque};

use super::cache::RecordCache;
use super::metrics::{Phase, StreamMetrics};
use super::output::{Note, Output};
use super::{
    Handled, LogStore, Options, Plant, Role, StreamDriver, Time, send_or_close, unexpected,
};
use crate::control::Request;
use crate::log::{LogError, record};
use crate::replication::shared_prefix::{Answer, Epochs, answer};
use crate::replication::{Action, Event, NodeId, Outcome, Primary};
use crate::transport::{LinkId, Links, TransportError};
use crate::wire::{ErrorCode, Message, Payloads, RecordRef, Records, RequestId};

/// A member as the primary's driver sees it.
pub(super) struct MemberLink {
    pub id: NodeId,
    pub addr: String,
    /// The link of its last greeting, while open.
    pub link: Option<LinkId>,
}

struct ClientRequest {
    link: LinkId,
    id: RequestId,
    arrived: Time,
    bytes: u64,
}

pub(super) struct PrimaryDriver {
    pub core: Primary,
    cache: RecordCache,
    pub members: Vec<MemberLink>,
    requests: HashMap<u64, ClientRequest>,
    next_request: u64,
    /// (lsn, when it became durable locally), for the latency phases.
    durable_at: VecDeque<(u64, Time)>,
    /// Arrivals of the appends not yet in an issued write, for the queued phase.
    unissued: Vec<Time>,
    /// Members' acks of this turn, (member, received, durable), folded into the commit
    /// rule at once: at the turn's drive, or before anything changes a member's
    /// standing (its greeting, its link, the members, the role).
    acks: Vec<(NodeId, u64, u64)>,
}

/// Why records could not be sent to a member: its link is closed then, and the
/// member's next greeting finds where to resume.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("read records for a member: {0}")]
    Log(#[from] LogError),
    #[error(transparent)]
    Link(#[from] TransportError),
    #[error("record {0} is neither cached nor durable")]
    Missing(u64),
}

impl PrimaryDriver {
    pub fn new(core: Primary, members: Vec<(NodeId, String)>, options: &Options) -> PrimaryDriver {
        PrimaryDriver {
            core,
            cache: RecordCache::new(options.cache_bytes, options.cache_records),
            members: members
                .into_iter()
                .map(|(id, addr)| MemberLink {
                    id,
                    addr,
                    link: None,
                })
                .collect(),
            requests: HashMap::with_capacity(4096.min(options.cache_records)),
            next_request: 1,
            durable_at: VecDeque::with_capacity(1024.min(options.cache_records)),
            unissued: Vec::new(),
            acks: Vec::new(),
        }
    }

    pub fn on_link_closed(&mut self, link: LinkId) {
        if let Some(m) = self.members.iter_mut().find(|m| m.link == Some(link)) {
            m.link = None;
            self.core.on_member_disconnected(m.id);
        }
        // Requests of a client that went away stay in the core: their records commit
        // or not, and nobody is told (the client asks by LSN).
        self.requests.retain(|_, r| r.link != link);
    }

    pub fn on_durable(&mut self, lsn: u64, now: Time) {
        self.core.on_local_durable(lsn);
        if self.durable_at.len() == self.durable_at.capacity() {
            self.durable_at.pop_front();
        }
        self.durable_at.push_back((lsn, now));
    }

    pub fn on_write_issued(&mut self, metrics: &mut StreamMetrics, now: Time) {
        for arrived in self.unissued.drain(..) {
            metrics.record(Phase::Queued, now.micros_since(arrived));
        }
    }
}

/// Keeps a note for the host (see [`StreamDriver::note`]), where `self` is borrowed
/// in parts.
pub(super) fn note_to(outputs: &mut Vec<Output>, trace: bool, note: Note) {
    if trace || note.logged() {
        outputs.push(Output::Note(note));
    }
}

impl<S: LogStore> StreamDriver<S> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_append(
        &mut self,
        links: &mut impl Links,
        link: LinkId,
        id: RequestId,
        mode: Option<crate::wire::Mode>,
        timeout_ms: u32,
        payloads: &Payloads<'_>,
        now: Time,
    ) -> Handled {
        let epoch = self.epoch;
        let refuse = |links: &mut _, code, message: &str| {
            send_or_close(links, link, id, &Message::Error { code, message })
        };
        if let Some(d) = &self.draining {
            // Switching over: the target is about to be the primary.
            let primary = Some(d.to_addr.as_str());
            return send_or_close(links, link, id, &Message::NotPrimary { epoch, primary });
        }
        let p = match &mut self.role {
            Role::Primary(p) => p,
            Role::Secondary(s) => {
                let (epoch, primary) = (s.core.epoch(), s.primary_addr.as_deref());
                return send_or_close(links, link, id, &Message::NotPrimary { epoch, primary });
            }
        };
        if let Some(why) = &self.failed {
            return refuse(links, ErrorCode::Unavailable, why);
        }
        if let Some(m) = mode.filter(|&m| m > self.spec.settings.mode) {
            // Per request, a mode may only be weaker than the stream's.
            let msg = format!(
                "mode {m} is stronger than the stream's mode {}",
                self.spec.settings.mode
            );
            return refuse(links, ErrorCode::ModeNotAllowed, &msg);
        }
        let bytes: usize = payloads.iter().map(|p| record::record_bytes(p.len())).sum();
        let batch_max = self.log.payload_bytes_max() + record::record_bytes(0);
        if bytes > batch_max {
            let msg = format!(
                "append of {bytes} bytes (headers included) exceeds one log batch of {batch_max} bytes: split it"
            );
            return refuse(links, ErrorCode::TooLarge, &msg);
        }
        match self.log.make_room(bytes) {
            Ok(true) => {}
            Ok(false) => return Handled::Later,
            // A full disk refuses this append (nothing was appended); the stream goes on.
            Err(e @ LogError::NoSpace { .. }) => {
                return refuse(links, ErrorCode::Unavailable, &e.to_string());
            }
            Err(e) => {
                self.fail(links, e);
                let why = self.failed.clone().unwrap_or_default();
                return refuse(links, ErrorCode::Unavailable, &why);
            }
        }
        let timeout_ms = if timeout_ms == 0 {
            self.spec.request_timeout_ms
        } else {
            u64::from(timeout_ms)
        };
        let request = p.next_request;
        p.next_request += 1;
        let count = payloads.len() as u64;
        let timeout_ticks = timeout_ms / crate::constants::TICK_MS;
        let (first, last) = p.core.append(request, count, mode, timeout_ticks);
        let mut lsn = first;
        let mut payload_bytes = 0;
        for payload in payloads.iter() {
            let got = self
                .log
                .append(epoch, payload)
                .expect("room was made for the whole group");
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
        p.unissued.push(now);
        Handled::Done
    }

    /// A frame from a member: its acks, its refusals, and its greeting again after it
    /// cut its log.
    pub(super) fn on_member_frame(
        &mut self,
        links: &mut impl Links,
        link: LinkId,
        msg: &Message<'_>,
        now: Time,
    ) -> Handled {
        let Role::Primary(p) = &mut self.role else {
            unreachable!("called on a primary");
        };
        let Some(member) = p
            .members
            .iter()
            .find(|m| m.link == Some(link))
            .map(|m| m.id)
        else {
            return Handled::Close(format!("{} on a link that is no member's", msg.kind()));
        };
        match msg {
            Message::PeerWelcome {
                last_lsn,
                last_epoch,
                durable_lsn,
                ..
            } => {
                self.on_member_connected(links, member, link, *last_lsn, *last_epoch, *durable_lsn);
                Handled::Done
            }
            Message::Ack {
                received_lsn,
                durable_lsn,
                ..
            } => {
                p.acks.push((member, *received_lsn, *durable_lsn));
                Handled::Done
            }
            Message::Refuse {
                epoch,
                last_lsn,
                reason,
            } => {
                if *epoch > self.epoch {
                    let why = format!("member {member} is in a newer epoch {epoch}: {reason}");
                    self.step_down(links, *epoch, now);
                    return Handled::Close(why);
                }
                p.core.on_refused(member, *last_lsn);
                self.note(Note::MemberRefused {
                    member,
                    reason: reason.to_string(),
                    last_lsn: *last_lsn,
                });
                Handled::Done
            }
            other => unexpected(links, link, RequestId(0), other, "peer"),
        }
    }

    /// `member` greeted on `link`: its log ends at (`last_lsn`, `last_epoch`), durable
    /// up to `durable_lsn`. Resumes sending after the longest prefix both logs share,
    /// asks the member to cut a tail this primary does not have (records of an earlier
    /// incarnation that never became durable here, so never committed), or to start
    /// over after this log's base when retention deleted what it needs next.
    pub fn on_member_connected(
        &mut self,
        links: &mut impl Links,
        member: NodeId,
        link: LinkId,
        last_lsn: u64,
        last_epoch: u64,
        durable_lsn: u64,
    ) {
        self.fold_acks();
        let epoch = self.epoch;
        let answer = match self.answer(last_lsn, last_epoch) {
            Ok(a) => a,
            Err(e) => {
                self.fail(links, e);
                return;
            }
        };
        let plant = self.options.plant;
        let Role::Primary(p) = &mut self.role else {
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
        let (ask, note, cut) = match answer {
            Answer::Resume { agree } => {
                let durable = durable_lsn.min(agree);
                p.core.on_member_connected(member, durable, agree + 1);
                self.note(Note::Reported {
                    epoch,
                    member,
                    received: durable,
                    durable,
                });
                return;
            }
            Answer::Rebase {
                base_lsn,
                base_epoch,
            } => (
                Message::Rebase {
                    epoch,
                    base_lsn,
                    base_epoch,
                },
                Note::MemberRebases {
                    member,
                    last_lsn,
                    base_lsn,
                },
                None,
            ),
            Answer::Truncate {
                after_lsn,
                after_epoch,
            } => (
                Message::Truncate {
                    epoch,
                    after_lsn,
                    after_epoch,
                },
                Note::MemberTruncates {
                    member,
                    last_lsn,
                    after_lsn,
                },
                Some(after_lsn),
            ),
        };
        match cut {
            Some(after) if plant == Some(Plant::CountAcksWhileTruncating) => {
                p.core.on_member_connected(member, durable_lsn, after + 1);
                self.note(Note::Reported {
                    epoch,
                    member,
                    received: durable_lsn,
                    durable: durable_lsn,
                });
            }
            // Its log disagrees with this one until it greets again.
            _ => p.core.on_member_disconnected(member),
        }
        self.note(note);
        let _ = links.send(link, RequestId(0), &ask);
    }

    /// This primary's answer to a member whose log ends with (`last_epoch`, `last_lsn`).
    fn answer(&mut self, last_lsn: u64, last_epoch: u64) -> Result<Answer, LogError> {
        let Role::Primary(p) = &self.role else {
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

    /// Hands the core the acks of this turn at once, noting those that count.
    pub(super) fn fold_acks(&mut self) {
        let (epoch, trace) = (self.epoch, self.options.trace);
        let Role::Primary(p) = &mut self.role else {
            return;
        };
        if p.acks.is_empty() {
            return;
        }
        let outputs = &mut self.outputs;
        p.core
            .on_acks(p.acks.drain(..), |member, received, durable| {
                let reported = Note::Reported {
                    epoch,
                    member,
                    received,
                    durable,
                };
                note_to(outputs, trace, reported);
            });
    }

    /// The primary's turn: the acks of the turn, the core's tick, then its actions.
    pub(super) fn drive_primary(&mut self, links: &mut impl Links, now: Time) {
        self.fold_acks();
        if let Role::Primary(p) = &mut self.role {
            p.core.on_tick(now.ticks());
        }
        self.dispatch(links, now);
    }

    /// Carries out the core's actions: sends, heartbeats, completed requests, events.
    /// Besides every turn, right after a change of the members, so that what the core
    /// decided on them (a restore asked for, a block) is told at once.
    pub(super) fn dispatch(&mut self, links: &mut impl Links, now: Time) {
        let epoch = self.epoch;
        let trace = self.options.trace;
        let Role::Primary(p) = &mut self.role else {
            return;
        };
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
                    let frame = Replicate {
                        epoch,
                        commit,
                        records_max: self.options.replicate_records_max,
                        bytes_max: self.options.replicate_bytes_max,
                    };
                    if let Err(e) = frame.send(&mut self.log, &p.cache, links, link, from, to) {
                        links.close(link, &e.to_string());
                    }
                }
                Action::Heartbeat { member } => {
                    let link = p
                        .members
                        .iter()
                        .find(|m| m.id == member)
                        .and_then(|m| m.link);
                    if let Some(link) = link {
                        let m = Message::Heartbeat {
                            epoch,
                            commit_lsn: commit,
                        };
                        let _ = links.send(link, RequestId(0), &m);
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
                            let m = &mut self.metrics;
                            m.commits += u64::from(count);
                            m.commit_bytes += r.bytes;
                            let local = p
                                .durable_at
                                .iter()
                                .find(|(l, _)| *l >= last_lsn)
                                .map(|(_, t)| *t);
                            if let Some(t) = local {
                                m.record(Phase::LocalDurable, t.micros_since(r.arrived));
                                m.record(Phase::RemoteAck, now.micros_since(t));
                            }
                            m.record(Phase::Total, now.micros_since(r.arrived));
                            let completed = Note::Completed {
                                epoch,
                                first: first_lsn,
                                last: last_lsn,
                            };
                            note_to(&mut self.outputs, trace, completed);
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
                Action::Event(event) => {
                    let stream = self.spec.name.clone();
                    match event {
                        Event::RemovalWanted { member, version } => {
                            self.outputs.push(Output::Request(Request::Remove {
                                stream,
                                epoch,
                                version,
                                member,
                            }));
                        }
                        Event::RestoreWanted { member, version } => {
                            self.outputs.push(Output::Request(Request::Restore {
                                stream,
                                epoch,
                                version,
                                member,
                            }));
                        }
                        ref ev => {
                            let m = &mut self.metrics;
                            m.events += 1;
                            m.degraded = matches!(ev, Event::Degraded { .. })
                                || (m.degraded && !matches!(ev, Event::Recovered));
                        }
                    }
                    note_to(&mut self.outputs, trace, Note::Sync { epoch, event });
                }
            }
        }
        // Drop durable-time marks nobody waits for any more.
        let oldest_waiting = commit.min(p.core.local_durable());
        while p.durable_at.len() > 1 && p.durable_at[1].0 <= oldest_waiting {
            p.durable_at.pop_front();
        }
    }
}

/// The primary's epochs for the shared-prefix rule: recent records from the send
/// cache, older ones from the log.
struct PrimaryEpochs<'a, S> {
    cache: &'a RecordCache,
    log: &'a mut S,
}

impl<S: LogStore> Epochs for PrimaryEpochs<'_, S> {
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

/// Replicate frames of one primary turn.
struct Replicate {
    epoch: u64,
    commit: u64,
    records_max: usize,
    bytes_max: usize,
}

impl Replicate {
    /// Sends records `from..=to` on `link` in frames of at most `records_max` records
    /// and `bytes_max` bytes (a larger record goes alone): from the cache, or from the
    /// log for a member far behind.
    fn send<S: LogStore>(
        &self,
        log: &mut S,
        cache: &RecordCache,
        links: &mut impl Links,
        link: LinkId,
        from: u64,
        to: u64,
    ) -> Result<(), SendError> {
        let epoch_of = |log: &mut S, lsn: u64| -> Result<u64, LogError> {
            if lsn == 0 {
                return Ok(0);
            }
            match cache.get(lsn) {
                Some((e, _)) => Ok(e),
                None => log.epoch_at(lsn),
            }
        };
        let mut prev_epoch = epoch_of(log, from - 1)?;
        let mut lsn = from;
        let mut owned = Vec::new();
        while lsn <= to {
            owned.clear();
            let mut refs: Vec<RecordRef<'_>> = Vec::new();
            let mut bytes = 0;
            let count_max = ((to - lsn + 1) as usize).min(self.records_max);
            // Whether a record of `payload_len` bytes still goes into this frame.
            let mut fits = |refs: &[RecordRef<'_>], payload_len: usize| {
                let b = record::record_bytes(payload_len);
                let fits = refs.is_empty() || bytes + b <= self.bytes_max;
                bytes += if fits { b } else { 0 };
                fits
            };
            if cache.get(lsn).is_none() {
                owned = log.read(lsn, count_max, self.bytes_max)?;
                for r in &owned {
                    if !fits(&refs, r.payload.len()) {
                        break;
                    }
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
                    if !fits(&refs, payload.len()) {
                        break;
                    }
                    refs.push(RecordRef {
                        lsn: l,
                        epoch: e,
                        payload,
                    });
                }
            }
            if refs.is_empty() {
                return Err(SendError::Missing(lsn));
            }
            let n = refs.len() as u64;
            let last_epoch = refs.last().map_or(prev_epoch, |r| r.epoch);
            let msg = Message::Replicate {
                epoch: self.epoch,
                prev_lsn: lsn - 1,
                prev_epoch,
                commit_lsn: self.commit,
                records: Records::new(&refs),
            };
            links.send(link, RequestId(0), &msg)?;
            prev_epoch = last_epoch;
            lsn += n;
        }
        Ok(())
    }
}
