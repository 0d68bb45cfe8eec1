//! The primary of one stream, as a state machine.
//!
//! Inputs: appends (LSNs assigned here), the primary's own durable LSN, members' acks,
//! connects and disconnects, ticks. Outputs ([`Action`]): what to send to whom, which
//! waiting requests are complete, and recorded events. It reads no clock and touches no
//! file or socket; the shard driver turns actions into I/O.
//!
//! Invariants:
//! - `commit_lsn()` never decreases and never exceeds the primary's durable LSN.
//! - A request completes as committed only when the commit rule holds for its last LSN
//!   under its mode (the stream's mode, or a weaker one the request asked for).
//! - With `on_insufficient = block`, no record is committed without `k` acks of the full
//!   sync set; members are never dropped.
//! - A request that times out is reported in doubt, never as failed: its records may
//!   still commit, and the client learns their fate by LSN.

use std::collections::VecDeque;

use crate::replication::commit_rule::commit_point;
use crate::replication::settings::{Mode, OnInsufficient, StreamSettings};

pub use crate::types::NodeId;
pub type RequestId = u64;

/// How a waiting request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Committed,
    /// Fate unknown to the client: ask by LSN.
    InDoubt(&'static str),
}

/// A recorded change of how the stream commits. Each one is a log line and a metric.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A stalled member left the effective sync set (`degrade` only).
    MemberDropped { member: NodeId, members_left: usize },
    /// A member that caught up rejoined the effective sync set.
    MemberRestored { member: NodeId },
    /// Fewer members are available than the commit rule needs: commits wait (`block`).
    Blocked { available: usize, min_sync: usize },
    /// Fewer members are available than the commit rule needs and the sync set is down
    /// to `min_sync`: commits proceed on the primary alone (`degrade`).
    Degraded { available: usize, min_sync: usize },
    /// Commits follow the stream's mode again.
    Recovered,
    /// A sync-set member is stalled: the controller should move it to the learners,
    /// if the configuration is still at `version`. Repeated every ack timeout until
    /// the configuration changes.
    RemovalWanted { member: NodeId, version: u64 },
    /// A learner holds everything committed: the controller may put it back into the
    /// sync set, if the configuration is still at `version`. Repeated likewise.
    RestoreWanted { member: NodeId, version: u64 },
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send records `from..=to` to `member`.
    Send {
        member: NodeId,
        from: u64,
        to: u64,
    },
    /// Tell `member` the commit LSN (nothing else to send it).
    Heartbeat {
        member: NodeId,
    },
    /// A request's records are committed, or in doubt.
    Complete {
        request: RequestId,
        first_lsn: u64,
        last_lsn: u64,
        outcome: Outcome,
    },
    Event(Event),
}

/// A member of the stream: a sync-set member or a learner.
#[derive(Clone, Debug)]
struct Member {
    id: NodeId,
    /// Configured in the sync set.
    sync: bool,
    /// Currently counted by the commit rule (a sync member not dropped by `degrade`).
    in_sync: bool,
    connected: bool,
    next_send: u64,
    received: u64,
    durable: u64,
    /// Since when the member owes an ack (or has been disconnected).
    owing_since: Option<u64>,
    last_heartbeat: u64,
    /// The commit LSN as of the last send or heartbeat to the member: it has heard
    /// of commits up to here at most.
    told_commit: u64,
    /// When the controller was last asked about this member.
    asked_at: Option<u64>,
    /// Its removal was asked for: its acks no longer count (the controller may apply
    /// the removal at any moment, and a failover then looks only at the others), while
    /// `k` stays that of the configured sync set until the removal is committed.
    leaving: bool,
    /// A learner whose return to the sync set was asked for: from then on commits
    /// also satisfy the rule of the sync set with it, whenever the controller applies
    /// the change (one member joins at a time).
    joining: bool,
}

impl Member {
    fn acked(&self, mode: Mode) -> u64 {
        match mode {
            Mode::Semi => self.received.max(self.durable),
            Mode::Strong | Mode::Async => self.durable,
        }
    }
}

struct Waiter {
    request: RequestId,
    first_lsn: u64,
    last_lsn: u64,
    deadline: u64,
}

/// A member's position as the driver reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberSpec {
    pub id: NodeId,
    pub sync: bool,
}

/// Index of a mode's queue of waiting requests.
fn queue(mode: Mode) -> usize {
    match mode {
        Mode::Async => 0,
        Mode::Semi => 1,
        Mode::Strong => 2,
    }
}

/// Ticks between heartbeats to an idle member.
pub const HEARTBEAT_TICKS: u64 = 50;

/// Ticks an idle member waits to hear of commits made since its last send or
/// heartbeat.
pub const COMMIT_NOTICE_TICKS: u64 = 2;

/// The primary of one stream. See the module docs.
pub struct Primary {
    settings: StreamSettings,
    epoch: u64,
    next_lsn: u64,
    local_durable: u64,
    commit_lsn: u64,
    members: Vec<Member>,
    /// Waiting requests per effective mode (async, semi, strong), each in LSN order.
    waiting: [VecDeque<Waiter>; 3],
    now: u64,
    degraded: bool,
    blocked: bool,
    /// Membership changes go through the cluster's controller.
    controlled: bool,
    /// The version of the controller's configuration of the members (see
    /// `control::StreamRoles::version`).
    config_version: u64,
    /// Where the log ended when this primary started: records it inherited, which an
    /// earlier primary may have committed without this one knowing.
    inherited_lsn: u64,
    actions: Vec<Action>,
    scratch: Vec<u64>,
    acked_scratch: Vec<u64>,
}

impl Primary {
    /// A primary in `epoch` whose log ends at `last_lsn` (all of it durable).
    /// `commit_lsn` is the highest LSN known to be committed (0 if unknown: it is then
    /// learnt from the members' acks).
    pub fn new(
        settings: StreamSettings,
        epoch: u64,
        members: &[MemberSpec],
        last_lsn: u64,
        commit_lsn: u64,
    ) -> Primary {
        // The settings were validated against the configured sync set; a controller
        // may since have shrunk it (`k` never exceeds the members there are).
        assert!(commit_lsn <= last_lsn);
        Primary {
            settings,
            epoch,
            next_lsn: last_lsn + 1,
            local_durable: last_lsn,
            commit_lsn,
            members: members
                .iter()
                .map(|m| Member {
                    id: m.id,
                    sync: m.sync,
                    in_sync: m.sync,
                    connected: false,
                    next_send: last_lsn + 1,
                    received: 0,
                    durable: 0,
                    owing_since: Some(0),
                    last_heartbeat: 0,
                    told_commit: 0,
                    asked_at: None,
                    leaving: false,
                    joining: false,
                })
                .collect(),
            waiting: [VecDeque::new(), VecDeque::new(), VecDeque::new()],
            now: 0,
            degraded: false,
            blocked: false,
            controlled: false,
            config_version: 0,
            inherited_lsn: last_lsn,
            actions: Vec::new(),
            scratch: Vec::with_capacity(members.len()),
            acked_scratch: Vec::with_capacity(members.len()),
        }
    }

    /// Membership changes go through the controller from now on (see the module docs).
    pub fn under_controller(mut self) -> Primary {
        self.controlled = true;
        self
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The committed configuration's members (sync set and learners) and whether the
    /// stream is degraded (its sync set shrank below `min_sync` under `degrade`: commits
    /// wait for the primary alone). Members keep what the primary knows of them.
    ///
    /// `version` is the configuration's: a new one ends every request in flight (the
    /// controller refuses requests of older versions), so removals and restores are
    /// reconsidered from the new members.
    pub fn set_members(&mut self, members: &[MemberSpec], degraded: bool, version: u64) {
        let next = self.next_lsn;
        let moved_on = version != self.config_version;
        self.config_version = version;
        let mut old = std::mem::take(&mut self.members);
        for spec in members {
            let m = match old.iter().position(|m| m.id == spec.id) {
                Some(at) => old.swap_remove(at),
                None => Member {
                    id: spec.id,
                    sync: spec.sync,
                    in_sync: spec.sync,
                    connected: false,
                    next_send: next,
                    received: 0,
                    durable: 0,
                    owing_since: Some(self.now),
                    last_heartbeat: 0,
                    told_commit: 0,
                    asked_at: None,
                    leaving: false,
                    joining: false,
                },
            };
            // A removal or a restore asked for and not yet refused stays asked for.
            let leaving = !moved_on && spec.sync && m.sync && m.leaving;
            let joining = !moved_on && !spec.sync && m.joining;
            self.members.push(Member {
                sync: spec.sync,
                in_sync: spec.sync,
                asked_at: if leaving || joining { m.asked_at } else { None },
                leaving,
                joining,
                ..m
            });
        }
        if degraded != self.degraded {
            self.degraded = degraded;
            self.actions.push(Action::Event(if degraded {
                Event::Degraded {
                    available: self.members.iter().filter(|m| m.in_sync).count(),
                    min_sync: self.settings.min_sync,
                }
            } else {
                Event::Recovered
            }));
        }
        self.check_members();
    }

    pub fn settings(&self) -> &StreamSettings {
        &self.settings
    }

    /// Highest LSN committed under the stream's mode: the limit of what readers see.
    pub fn commit_lsn(&self) -> u64 {
        self.commit_lsn
    }

    pub fn local_durable(&self) -> u64 {
        self.local_durable
    }

    /// LSN of the last assigned record.
    pub fn last_lsn(&self) -> u64 {
        self.next_lsn - 1
    }

    pub fn degraded(&self) -> bool {
        self.degraded
    }

    /// Requests waiting for their commit.
    pub fn waiting(&self) -> usize {
        self.waiting.iter().map(VecDeque::len).sum()
    }

    /// (member, in effective sync set, connected, received, durable) of every member.
    pub fn members(&self) -> impl Iterator<Item = (NodeId, bool, bool, u64, u64)> + '_ {
        self.members
            .iter()
            .map(|m| (m.id, m.in_sync, m.connected, m.received, m.durable))
    }

    /// Everything up to this LSN is committed and held durably by every member that
    /// must hold it or is catching up now: the sync set, and the learners connected
    /// now. Retention may delete up to it; a learner away meanwhile starts again after
    /// the primary's first retained record when it returns.
    pub fn retention_floor(&self) -> u64 {
        self.members
            .iter()
            .filter(|m| m.sync || m.connected)
            .map(|m| m.durable)
            .fold(self.commit_lsn.min(self.local_durable), u64::min)
    }

    /// Assigns LSNs to `count` records of `request`, to be written locally and sent.
    /// The request completes when its last record is committed under
    /// `min(mode, stream mode)`, or in doubt after `timeout_ticks`.
    pub fn append(
        &mut self,
        request: RequestId,
        count: u64,
        mode: Option<Mode>,
        timeout_ticks: u64,
    ) -> (u64, u64) {
        assert!(count > 0);
        let first = self.next_lsn;
        let last = first + count - 1;
        self.next_lsn = last + 1;
        let mode = mode.map_or(self.settings.mode, |m| m.min(self.settings.mode));
        self.waiting[queue(mode)].push_back(Waiter {
            request,
            first_lsn: first,
            last_lsn: last,
            deadline: self.now.saturating_add(timeout_ticks),
        });
        for m in &mut self.members {
            if m.connected && m.owing_since.is_none() {
                m.owing_since = Some(self.now);
            }
        }
        (first, last)
    }

    /// The primary's own log is durable up to `lsn`.
    pub fn on_local_durable(&mut self, lsn: u64) {
        assert!(
            lsn < self.next_lsn,
            "durable lsn {lsn} beyond the last assigned {}",
            self.next_lsn - 1
        );
        self.local_durable = self.local_durable.max(lsn);
        self.advance();
    }

    /// A member connected; its log ends at `last_lsn`, durable up to `durable`. Records
    /// are sent again from `resume_from` (the driver checked the member shares the
    /// primary's log up to `resume_from - 1`).
    pub fn on_member_connected(&mut self, member: NodeId, durable: u64, resume_from: u64) {
        let now = self.now;
        let next = self.next_lsn;
        let m = self.member_mut(member);
        m.connected = true;
        m.durable = durable;
        m.received = durable;
        m.next_send = resume_from.min(next);
        m.owing_since = (durable + 1 < next).then_some(now);
        self.advance();
    }

    pub fn on_member_disconnected(&mut self, member: NodeId) {
        let now = self.now;
        let m = self.member_mut(member);
        if m.connected {
            m.connected = false;
            m.owing_since.get_or_insert(now);
        }
    }

    /// A member's cumulative ack. Acks of a turn may come in any order; positions only
    /// grow. Acks of a member that is not connected are ignored; returns whether this
    /// one counted.
    pub fn on_ack(&mut self, member: NodeId, received: u64, durable: u64) -> bool {
        let counted = self.record_ack(member, received, durable);
        if counted {
            self.advance();
        }
        counted
    }

    /// The acks of one turn of the driver, in the order they arrived: each counts as
    /// [`Primary::on_ack`] says (`counted` is told of those that do), and the commit
    /// rule is applied once for all of them.
    pub fn on_acks(
        &mut self,
        acks: impl IntoIterator<Item = (NodeId, u64, u64)>,
        mut counted: impl FnMut(NodeId, u64, u64),
    ) {
        let mut any = false;
        for (member, received, durable) in acks {
            if self.record_ack(member, received, durable) {
                counted(member, received, durable);
                any = true;
            }
        }
        if any {
            self.advance();
        }
    }

    /// Takes in an ack's positions, without applying the commit rule.
    fn record_ack(&mut self, member: NodeId, received: u64, durable: u64) -> bool {
        let (now, next) = (self.now, self.next_lsn);
        let m = self.member_mut(member);
        // Only a connected member's acks count: a member connects once its log agrees
        // with this primary's, and an ack from before that speaks of other records.
        if !m.connected {
            return false;
        }
        let progressed = received > m.received || durable > m.durable;
        m.received = m.received.max(received).min(next - 1);
        m.durable = m.durable.max(durable).min(next - 1);
        if m.durable + 1 >= next {
            m.owing_since = None;
        } else if progressed {
            m.owing_since = Some(now);
        }
        true
    }

    /// A member refused records because its log ends at `last_lsn` (a gap).
    pub fn on_refused(&mut self, member: NodeId, last_lsn: u64) {
        let m = self.member_mut(member);
        m.next_send = (last_lsn + 1).min(m.next_send);
    }

    /// Time passes: stalled members, timed-out requests, heartbeats.
    pub fn on_tick(&mut self, now: u64) {
        self.now = self.now.max(now);
        self.check_members();
        for queue in &mut self.waiting {
            // Front only: requests time out in LSN order, which keeps a tick O(expired).
            while queue.front().is_some_and(|w| w.deadline <= self.now) {
                let w = queue.pop_front().expect("checked");
                self.actions.push(Action::Complete {
                    request: w.request,
                    first_lsn: w.first_lsn,
                    last_lsn: w.last_lsn,
                    outcome: Outcome::InDoubt("timed out waiting for the commit"),
                });
            }
        }
        let commit = self.commit_lsn;
        for m in &mut self.members {
            // A member that has not heard of the last commits hears of them soon
            // (readers of its log, such as its binlog server, serve only what it knows
            // committed); otherwise a heartbeat now and then.
            let every = if commit > m.told_commit {
                COMMIT_NOTICE_TICKS
            } else {
                HEARTBEAT_TICKS
            };
            if m.connected && m.next_send >= self.next_lsn && self.now >= m.last_heartbeat + every {
                m.last_heartbeat = self.now;
                m.told_commit = commit;
                self.actions.push(Action::Heartbeat { member: m.id });
            }
        }
    }

    /// Every waiting request ends in doubt (the primary stops: its log failed, or it
    /// lost its role).
    pub fn stop(&mut self, reason: &'static str) {
        for queue in &mut self.waiting {
            for w in queue.drain(..) {
                self.actions.push(Action::Complete {
                    request: w.request,
                    first_lsn: w.first_lsn,
                    last_lsn: w.last_lsn,
                    outcome: Outcome::InDoubt(reason),
                });
            }
        }
    }

    /// Collects the sends of this turn (one range per member, within its window) and
    /// hands over every pending action.
    pub fn poll(&mut self) -> std::vec::Drain<'_, Action> {
        let last = self.next_lsn - 1;
        let window = self.settings.window_records;
        for m in &mut self.members {
            if !m.connected || m.next_send > last {
                continue;
            }
            let acked = m.received.max(m.durable);
            let limit = acked + window;
            if m.next_send > limit {
                continue;
            }
            let to = last.min(limit);
            self.actions.push(Action::Send {
                member: m.id,
                from: m.next_send,
                to,
            });
            m.next_send = to + 1;
            m.last_heartbeat = self.now;
            m.told_commit = self.commit_lsn;
        }
        self.actions.drain(..)
    }

    fn member_mut(&mut self, id: NodeId) -> &mut Member {
        self.members
            .iter_mut()
            .find(|m| m.id == id)
            .unwrap_or_else(|| panic!("unknown member {id}"))
    }

    fn stalled(&self, m: &Member) -> bool {
        m.owing_since
            .is_some_and(|t| self.now.saturating_sub(t) > self.settings.ack_timeout_ticks)
    }

    /// Asks the controller to remove stalled sync members and restore caught-up
    /// learners; the sync set itself changes only in [`Primary::set_members`].
    fn ask_controller(&mut self) {
        let again = self.settings.ack_timeout_ticks.max(1);
        for i in 0..self.members.len() {
            let m = &self.members[i];
            let due = m.asked_at.is_none_or(|t| self.now >= t + again);
            let id = m.id;
            let sync_members = self.members.iter().filter(|m| m.sync).count();
            let allowed = sync_members > self.settings.min_sync
                || self.settings.on_insufficient == OnInsufficient::Degrade;
            let event = if m.sync && m.leaving {
                // Asked until the committed configuration removes it: a request can be
                // lost with a controller leader.
                Event::RemovalWanted {
                    member: id,
                    version: self.config_version,
                }
            } else if m.sync && self.stalled(m) && allowed {
                if !self.covered_without(id) {
                    // Removing it now would leave a committed record on fewer than
                    // `k` of the remaining members: a failover among them could lose
                    // it. Wait until they hold everything committed.
                    continue;
                }
                self.members[i].leaving = true;
                Event::RemovalWanted {
                    member: id,
                    version: self.config_version,
                }
            } else if !m.sync && m.joining {
                Event::RestoreWanted {
                    member: id,
                    version: self.config_version,
                }
            } else if !m.sync
                && m.connected
                && m.durable >= self.held_lsn()
                && !self.stalled(m)
                && !self.members.iter().any(|o| o.joining)
            {
                self.members[i].joining = true;
                Event::RestoreWanted {
                    member: id,
                    version: self.config_version,
                }
            } else {
                self.members[i].asked_at = None;
                continue;
            };
            if due {
                self.members[i].asked_at = Some(self.now);
                self.actions.push(Action::Event(event));
            }
        }
        let in_sync = self.members.iter().filter(|m| m.in_sync).count();
        let available = self
            .members
            .iter()
            .filter(|m| m.in_sync && !self.stalled(m))
            .count();
        let insufficient = self.settings.mode != Mode::Async
            && !self.degraded
            && available < self.settings.k(in_sync);
        if insufficient != self.blocked {
            self.blocked = insufficient;
            self.actions.push(Action::Event(if insufficient {
                Event::Blocked {
                    available,
                    min_sync: self.settings.min_sync,
                }
            } else {
                Event::Recovered
            }));
        }
        self.advance();
    }

    /// Whether every committed record is held by `k` of the sync set without `member`
    /// (as the commit rule counts them), so that removing it loses nothing to a
    /// failover decided among the others.
    fn covered_without(&mut self, member: NodeId) -> bool {
        let mode = self.settings.mode;
        self.acked_scratch.clear();
        self.acked_scratch.extend(
            self.members
                .iter()
                .filter(|m| m.in_sync && m.id != member)
                .map(|m| if m.leaving { 0 } else { m.acked(mode) }),
        );
        let k = self.settings.k(self.acked_scratch.len());
        if k == 0 {
            return true;
        }
        commit_point(u64::MAX, &self.acked_scratch, k, &mut self.scratch) >= self.held_lsn()
    }

    /// Every record that may be committed: what this primary committed, and what it
    /// inherited (an earlier primary may have committed it).
    fn held_lsn(&self) -> u64 {
        self.commit_lsn.max(self.inherited_lsn)
    }

    /// Applies `on_insufficient` to stalled and recovered members.
    fn check_members(&mut self) {
        if self.controlled {
            return self.ask_controller();
        }
        let min_sync = self.settings.min_sync;
        if self.settings.on_insufficient == OnInsufficient::Degrade {
            for i in 0..self.members.len() {
                let in_sync = self.members.iter().filter(|m| m.in_sync).count();
                if self.members[i].in_sync && self.stalled(&self.members[i]) && in_sync > min_sync {
                    self.members[i].in_sync = false;
                    let member = self.members[i].id;
                    self.actions.push(Action::Event(Event::MemberDropped {
                        member,
                        members_left: in_sync - 1,
                    }));
                }
            }
            // A dropped member rejoins once it is connected and holds everything
            // committed, so counting it again cannot move the commit point back.
            for i in 0..self.members.len() {
                let m = &self.members[i];
                if m.sync
                    && !m.in_sync
                    && m.connected
                    && m.durable >= self.commit_lsn
                    && !self.stalled(m)
                {
                    let member = m.id;
                    self.members[i].in_sync = true;
                    self.actions
                        .push(Action::Event(Event::MemberRestored { member }));
                }
            }
        }
        let in_sync = self.members.iter().filter(|m| m.in_sync).count();
        let available = self
            .members
            .iter()
            .filter(|m| m.in_sync && !self.stalled(m))
            .count();
        let insufficient =
            self.settings.mode != Mode::Async && available < self.settings.k(in_sync);
        match (insufficient, self.settings.on_insufficient) {
            (true, OnInsufficient::Block) if !self.blocked => {
                self.blocked = true;
                self.actions.push(Action::Event(Event::Blocked {
                    available,
                    min_sync,
                }));
            }
            (true, OnInsufficient::Degrade) if !self.degraded => {
                self.degraded = true;
                self.actions.push(Action::Event(Event::Degraded {
                    available,
                    min_sync,
                }));
            }
            (false, _) if self.blocked || self.degraded => {
                // Leaving async commits needs the members to hold what was committed
                // without them, or the commit point would stall behind them.
                let caught_up = self
                    .members
                    .iter()
                    .filter(|m| m.in_sync)
                    .all(|m| m.durable >= self.commit_lsn);
                if !self.degraded || caught_up {
                    self.blocked = false;
                    self.degraded = false;
                    self.actions.push(Action::Event(Event::Recovered));
                }
            }
            _ => {}
        }
        self.advance();
    }

    /// The commit point of `mode` now.
    fn point(&mut self, mode: Mode) -> u64 {
        if mode == Mode::Async || self.degraded {
            return self.local_durable;
        }
        self.acked_scratch.clear();
        self.acked_scratch.extend(
            self.members
                .iter()
                .filter(|m| m.in_sync)
                .map(|m| if m.leaving { 0 } else { m.acked(mode) }),
        );
        let joining = self
            .members
            .iter()
            .find(|m| m.joining)
            .map(|m| m.acked(mode));
        if self.acked_scratch.is_empty() && joining.is_none() {
            // No sync set and not degraded: nothing commits on the primary alone.
            return 0;
        }
        let mut point = u64::MAX;
        if !self.acked_scratch.is_empty() {
            let k = self.settings.k(self.acked_scratch.len());
            point = commit_point(
                self.local_durable,
                &self.acked_scratch,
                k,
                &mut self.scratch,
            );
        }
        if let Some(acked) = joining {
            // The sync set as it will be once the restore is applied.
            self.acked_scratch.push(acked);
            let k = self.settings.k(self.acked_scratch.len());
            point = point.min(commit_point(
                self.local_durable,
                &self.acked_scratch,
                k,
                &mut self.scratch,
            ));
        }
        point
    }

    /// Recomputes the commit LSN and completes the requests it covers.
    fn advance(&mut self) {
        let stream_point = self.point(self.settings.mode);
        self.commit_lsn = self.commit_lsn.max(stream_point);
        assert!(self.commit_lsn <= self.local_durable);
        for mode in [Mode::Async, Mode::Semi, Mode::Strong] {
            if self.waiting[queue(mode)].is_empty() {
                continue;
            }
            let point = if mode == self.settings.mode {
                self.commit_lsn
            } else {
                self.point(mode)
            };
            let queue = &mut self.waiting[queue(mode)];
            while queue.front().is_some_and(|w| w.last_lsn <= point) {
                let w = queue.pop_front().expect("checked");
                self.actions.push(Action::Complete {
                    request: w.request,
                    first_lsn: w.first_lsn,
                    last_lsn: w.last_lsn,
                    outcome: Outcome::Committed,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
