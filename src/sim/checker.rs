//! The invariants of `DESIGN.md`, checked after every step of a run and at its end.
//!
//! The checker knows what the nodes really hold (their disks) and what they say about
//! themselves (their [`NodeEvent`]s): who took the primary role in which epoch, which
//! sync-set members the primary counts, which epochs a member answered. It never reads
//! the cores' own positions to decide what was allowed.
//!
//! 1. No acknowledged commit is lost: records a client was told are committed are, at
//!    that moment, in the primary's durable log with the client's bytes, within what the
//!    commit rule allowed for the request's mode; and every later primary's log holds
//!    them. More strongly, the committed history (every LSN the commit rule ever allowed
//!    in the stream's mode) stays a prefix of the current primary's durable log.
//! 2. Committed prefixes are byte-identical: whatever a node serves as committed (its
//!    readable commit LSN, and the records a read returns) equals the committed history.
//! 3. At most one primary per epoch (a primary start is a new epoch, so a second start
//!    in the same epoch counts too), and no node accepts records of an epoch older than
//!    one it answered a primary of (its answer to the primary's greeting, or to the
//!    controller's fence).
//! 4. Nothing is readable as committed before the commit rule holds: no node's readable
//!    commit LSN and no read go beyond the highest LSN the rule ever allowed, computed
//!    from the disks: the primary's durable LSN and the `k`-th best sync-set member
//!    among those the primary counts, where a member holds what it has durably (strong)
//!    or ever received (semi) of the primary's own records — as far as the member told
//!    the primary so (its handshake and acks, [`NodeEvent::Reported`]).
//!
//! The rule counts a member's records from its report, not from its disk alone: a
//! record on `k` members' disks that no ack or handshake reported to the primary was
//! never committed (no client was told, nothing reads it as committed), and a failover
//! after a change of the sync set may drop it. Example (seed 29206): a member's torn
//! write leaves records whole on its disk while it is down; the primary never hears of
//! them, restores a learner that lacks them (it holds everything the primary committed),
//! and a failover then rightly promotes that learner. Reports are capped by the disks,
//! so a member that acks what it does not hold (`Bug::AckBeforeDurable`) still fails.
//!
//! Retention and rebasing: a log may lack a prefix (retention deleted it, or the log
//! started over after a base the primary sent). That is legitimate only for records of
//! the committed history, so every deletion is checked when it happens: the records a
//! node's retention deletes must be committed, equal to the committed ones, and — on a
//! primary, per the floor rule — held durably by every sync-set member (or already
//! deleted there); the base a node starts over after must be a committed record. A
//! missing prefix then counts as agreeing with the history everywhere below.
//!
//! Also at the end: no record was appended twice (a client resending an in-doubt
//! append as new would do that).

use std::collections::{BTreeMap, HashSet};

use crate::replication::{Event, Mode, NodeId};
use crate::sim::Rec;
use crate::sim::event::NodeEvent;
use crate::sim::node::Node;
use view::{Log, PrimaryView, extend};
pub use view::{LowWater, SLOT_DEPOSED, SLOT_HISTORY, SLOT_PRIMARY};

mod view;

fn mode_index(m: Mode) -> usize {
    match m {
        Mode::Async => 0,
        Mode::Semi => 1,
        Mode::Strong => 2,
    }
}

/// An acknowledged append.
struct Acked {
    first: u64,
    payloads: Vec<Vec<u8>>,
    /// Acknowledged in strong mode: held durably by `k` members, so it survives a
    /// failover. A weaker per-request mode promises only the primary's durable write.
    strong: bool,
}

pub struct Checker {
    history: Vec<Rec>,
    /// Per mode (async, semi, strong): the highest LSN the rule ever allowed.
    allowed: [u64; 3],
    stream_mode: Mode,
    primaries: BTreeMap<u64, NodeId>,
    view: Option<PrimaryView>,
    /// Primaries of older epochs than the view's that still act as primaries, not
    /// knowing of their successor yet: each may still complete commits of its own
    /// epoch (on acks sent before the fence), judged by its own epoch's rule.
    deposed: Vec<PrimaryView>,
    /// Per mode: the highest LSN a deposed primary's own rule ever allowed. Committed
    /// (the successor holds it) though the history, which follows the successor, may
    /// not have reached it yet.
    deposed_allowed: [u64; 3],
    /// Per node: the newest epoch it answered a primary of.
    answered: Vec<u64>,
    /// Records a deposed primary deleted by retention ahead of the history, committed by
    /// its own epoch's rule, by (node, LSN).
    deleted_ahead: BTreeMap<(NodeId, u64), Rec>,
    /// Per node: length of its log's prefix known equal to the committed history.
    with_history: Vec<usize>,
    acked: Vec<Acked>,
    violation: Option<String>,
    scratch: Vec<u64>,
    /// The primary role may move to another node (the controller runs): a record
    /// acknowledged in a weaker mode than strong is kept only if a later strong commit
    /// covers it.
    pub failover: bool,
}

impl Checker {
    pub fn new(nodes: usize, stream_mode: Mode) -> Checker {
        Checker {
            history: Vec::new(),
            allowed: [0; 3],
            stream_mode,
            primaries: BTreeMap::new(),
            view: None,
            deposed: Vec::new(),
            deposed_allowed: [0; 3],
            answered: vec![0; nodes],
            deleted_ahead: BTreeMap::new(),
            with_history: vec![0; nodes],
            acked: Vec::new(),
            violation: None,
            scratch: Vec::new(),
            failover: false,
        }
    }

    pub fn violation(&self) -> Option<&str> {
        self.violation.as_deref()
    }

    /// The committed history: every record the commit rule allowed, in LSN order.
    pub fn history(&self) -> &[Rec] {
        &self.history
    }

    /// Highest LSN the rule ever allowed in `mode`.
    pub fn allowed(&self, mode: Mode) -> u64 {
        self.allowed[mode_index(mode)]
    }

    fn violate(&mut self, what: String) {
        if self.violation.is_none() {
            self.violation = Some(what);
        }
    }

    /// What a node says about itself.
    pub fn on_event(&mut self, e: &NodeEvent, nodes: &[Node]) {
        match e {
            NodeEvent::BecamePrimary {
                node,
                epoch,
                settings,
                sync_set,
            } => {
                if let Some(other) = self.primaries.insert(*epoch, *node) {
                    self.violate(format!(
                        "invariant 3: n{node} became primary of epoch {epoch}, which n{other} already held"
                    ));
                }
                if self.view.as_ref().is_some_and(|v| v.epoch > *epoch) {
                    // A primary of an older epoch that learnt of its promotion late: the
                    // members fenced for the newer epoch refuse it, and it commits
                    // nothing; the newer primary stays the one the rule follows.
                    return;
                }
                let newer = PrimaryView {
                    node: *node,
                    epoch: *epoch,
                    settings: settings.clone(),
                    sync_set: sync_set.clone(),
                    in_sync: vec![true; sync_set.len()],
                    leaving: vec![false; nodes.len()],
                    joining: None,
                    degraded: false,
                    with_primary: vec![0; nodes.len()],
                    received_max: vec![0; nodes.len()],
                    reported: vec![(0, 0); nodes.len()],
                    allowed: [0; 3],
                    live: true,
                    members_fresh: false,
                };
                // A node's older views are of no more use once it has a newer one.
                self.deposed.retain(|d| d.node != *node);
                if let Some(old) = self.view.replace(newer)
                    && old.live
                    && old.epoch < *epoch
                {
                    self.deposed.retain(|d| d.node != old.node);
                    self.deposed.push(old);
                }
                self.check_acked_kept(nodes, *node);
            }
            NodeEvent::StoppedPrimary { node, epoch } => {
                // Requests it completed before its role ended, in this step, are judged
                // by its rule as it stood then.
                self.measure_with(nodes, Some((*node, *epoch)));
                if let Some(v) = self.view_mut(*node, *epoch) {
                    v.live = false;
                }
            }
            NodeEvent::MembersChanged {
                node,
                epoch,
                sync_set,
                degraded,
            } => {
                // What the core committed under the old members (acks and writes of
                // this step before the change) counted them.
                self.measure(nodes);
                if let Some(v) = self.view_mut(*node, *epoch) {
                    // A new version of the roles ends every request in flight, as in
                    // the primary.
                    v.leaving.iter_mut().for_each(|l| *l = false);
                    v.joining = None;
                    v.sync_set = sync_set.clone();
                    v.in_sync = vec![true; sync_set.len()];
                    v.degraded = *degraded;
                    v.members_fresh = true;
                }
            }
            NodeEvent::Welcomed { node, epoch } | NodeEvent::Fenced { node, epoch } => {
                let a = &mut self.answered[*node as usize];
                *a = (*a).max(*epoch);
            }
            NodeEvent::Accepted {
                node,
                epoch,
                first,
                last,
            } => {
                let answered = self.answered[*node as usize];
                if *epoch < answered {
                    self.violate(format!(
                        "invariant 3: n{node} accepted {first}..={last} of epoch {epoch} after answering a primary of epoch {answered}"
                    ));
                }
            }
            NodeEvent::Core { node, epoch, event } => {
                let fresh = self
                    .view_mut(*node, *epoch)
                    .is_some_and(|v| v.members_fresh);
                if matches!(event, Event::RemovalWanted { .. }) && !fresh {
                    // What the primary committed before it asked (in the same step)
                    // still counted the member: take the rule's measure first. Not
                    // when the members just changed: the core asks about the new
                    // members before it applies its rule to them.
                    self.measure(nodes);
                }
                let Some(v) = self.view_mut(*node, *epoch) else {
                    return;
                };
                let pos = |m: &NodeId| v.sync_set.iter().position(|x| x == m);
                match event {
                    Event::MemberDropped { member, .. } => {
                        if let Some(i) = pos(member) {
                            v.in_sync[i] = false;
                        }
                    }
                    Event::MemberRestored { member } => {
                        if let Some(i) = pos(member) {
                            v.in_sync[i] = true;
                        }
                    }
                    Event::RemovalWanted { member, .. } => v.leaving[*member as usize] = true,
                    Event::RestoreWanted { member, .. } => v.joining = Some(*member),
                    Event::Degraded { .. } => v.degraded = true,
                    Event::Recovered => v.degraded = false,
                    Event::Blocked { .. } => {}
                }
            }
            NodeEvent::Reported {
                node,
                epoch,
                member,
                received,
                durable,
            } => {
                if let Some(v) = self.view_mut(*node, *epoch) {
                    let r = &mut v.reported[*member as usize];
                    *r = (r.0.max(*received), r.1.max(*durable));
                    // The core recomputes its commit point on the report, before
                    // anything else of this step changes its members.
                    self.measure(nodes);
                }
            }
            NodeEvent::Completed { .. } => {
                // The rule's measure as the core acted: a request it completed before
                // it asked for a restore (in the same step) did not wait for the
                // joining member yet.
                self.measure(nodes);
            }
            NodeEvent::Retained {
                node,
                primary_epoch,
                first,
                records,
            } => self.on_retained(nodes, *node, *primary_epoch, *first, records),
            NodeEvent::Rebased {
                node,
                epoch,
                base_lsn,
                base_epoch,
            } => {
                // Committed: in the history, or by the asking primary's own rule in an
                // earlier epoch when it was deposed, and deleted by it since.
                let deleted_ahead = self
                    .primaries
                    .get(epoch)
                    .and_then(|p| self.deleted_ahead.get(&(*p, *base_lsn)));
                let committed = *base_lsn == 0
                    || self
                        .history
                        .get(*base_lsn as usize - 1)
                        .or(deleted_ahead)
                        .is_some_and(|r| r.epoch == *base_epoch);
                if !committed {
                    self.violate(format!(
                        "invariant 1: n{node} started its log over after ({base_lsn}, epoch {base_epoch}) as the primary of epoch {epoch} asked, which is no committed record (the history is {} long)",
                        self.history.len()
                    ));
                }
            }
            NodeEvent::BecameSecondary { .. } | NodeEvent::Truncated { .. } => {}
        }
    }

    /// Retention deleted `records` (LSN `first..`) from `node`'s log, as the primary of
    /// `primary_epoch` or as a secondary: only committed records, and on a primary only
    /// those every sync-set member holds durably (or deleted itself).
    fn on_retained(
        &mut self,
        nodes: &[Node],
        node: NodeId,
        primary_epoch: Option<u64>,
        first: u64,
        records: &[Rec],
    ) {
        // A deposed primary that has not heard of its successor commits by its own
        // epoch's rule (the successor holds those records, but the history, which
        // follows the successor, may not have reached them yet).
        let mode = mode_index(self.stream_mode);
        let own_rule = primary_epoch
            .and_then(|e| self.deposed.iter().find(|v| v.node == node && v.epoch == e))
            .map_or(0, |v| v.allowed[mode]);
        for (i, r) in records.iter().enumerate() {
            let lsn = first + i as u64;
            match self.history.get(lsn as usize - 1) {
                None if lsn <= own_rule => {
                    // Committed by its own epoch's rule, ahead of the history: what it
                    // acknowledges of it later is judged against this record.
                    self.deleted_ahead.insert((node, lsn), r.clone());
                }
                None => {
                    return self.violate(format!(
                        "invariant 1: n{node}'s retention deleted lsn {lsn}, which is not committed (the history is {} long)",
                        self.history.len()
                    ));
                }
                Some(c) if c != r => {
                    return self.violate(format!(
                        "invariant 2: n{node}'s retention deleted lsn {lsn}, which differs from the committed one"
                    ));
                }
                Some(_) => {}
            }
        }
        let Some(epoch) = primary_epoch else { return };
        let Some(v) = self.view_mut(node, epoch) else {
            return;
        };
        let last = first + records.len() as u64 - 1;
        let sync_set = v.sync_set.clone();
        for m in sync_set {
            let d = &nodes[m as usize].disk();
            let missing = (first.max(d.first_lsn())..=last).find(|&lsn| {
                lsn > d.durable_lsn() || d.record(lsn) != Some(&records[(lsn - first) as usize])
            });
            if let Some(lsn) = missing {
                return self.violate(format!(
                    "retention floor: n{node}, primary of epoch {epoch}, deleted lsn {lsn}, which sync-set member n{m} does not hold durably"
                ));
            }
        }
    }

    /// The view of the primary of `epoch`, `node`: the newest, or a deposed one.
    fn view_mut(&mut self, node: NodeId, epoch: u64) -> Option<&mut PrimaryView> {
        self.view
            .iter_mut()
            .chain(self.deposed.iter_mut())
            .find(|v| v.node == node && v.epoch == epoch)
    }

    /// The rule's measure now, for the newest primary (the history follows it) and
    /// for the deposed ones.
    pub fn measure(&mut self, nodes: &[Node]) {
        self.measure_with(nodes, None);
    }

    /// [`Checker::measure`], with a last look at the primary of (node, epoch).
    fn measure_with(&mut self, nodes: &[Node], last_look: Option<(NodeId, u64)>) {
        self.apply_rule(nodes, last_look);
        if self.deposed.is_empty() {
            return;
        }
        let cuts: Vec<usize> = nodes
            .iter()
            .map(|n| n.disk().low_water.take(SLOT_DEPOSED))
            .collect();
        for v in &mut self.deposed {
            let last = last_look == Some((v.node, v.epoch));
            v.measure(nodes, |n| cuts[n.id as usize], &mut self.scratch, last);
            for (a, v) in self.deposed_allowed.iter_mut().zip(v.allowed) {
                *a = (*a).max(v);
            }
        }
    }

    /// Every acknowledged record is in `primary`'s log.
    fn check_acked_kept(&mut self, nodes: &[Node], primary: NodeId) {
        let disk = &nodes[primary as usize].disk();
        for a in &self.acked {
            if self.failover && !a.strong {
                continue;
            }
            for (i, p) in a.payloads.iter().enumerate() {
                let lsn = a.first + i as u64;
                // Below the log's first record: deleted once checked to be committed.
                if lsn >= disk.first_lsn() && disk.record(lsn).is_none_or(|r| &r.payload != p) {
                    let what = format!(
                        "invariant 1: acknowledged lsn {lsn} is not in the log of n{primary}, the primary"
                    );
                    self.violation.get_or_insert(what);
                    return;
                }
            }
        }
    }

    /// After every step: the commit rule from the disks, the history, and what every
    /// node would serve as committed.
    pub fn check(&mut self, nodes: &[Node]) {
        for n in nodes {
            let w = n.disk().low_water.take(SLOT_HISTORY);
            let a = &mut self.with_history[n.id as usize];
            *a = (*a).min(w);
        }
        self.measure(nodes);
        for n in nodes {
            let i = n.id as usize;
            extend(
                &mut self.with_history[i],
                Log::of(n),
                Log::whole(&self.history),
            );
            let Some(r) = n.readable_commit() else {
                continue;
            };
            // A secondary may have learned its commit LSN from a deposed primary,
            // committed by that primary's own epoch's rule, and keep it as it moves
            // to the successor's epoch: every later primary holds those records.
            let mode = mode_index(self.stream_mode);
            let allowed = if n.is_primary() {
                self.allowed[mode]
            } else {
                self.allowed[mode].max(self.deposed_allowed[mode])
            };
            if r > allowed && !self.deposed(nodes, n.id) {
                self.violate(format!(
                    "invariant 4: n{} reads {r} as committed, the commit rule allowed {allowed}",
                    n.id
                ));
            }
            if (self.with_history[i] as u64) < r.min(self.history.len() as u64) {
                self.violate(format!(
                    "invariant 2: n{} reads {r} as committed but its record {} differs from the committed one",
                    n.id,
                    self.with_history[i] + 1
                ));
            }
        }
    }

    fn apply_rule(&mut self, nodes: &[Node], last_look: Option<(NodeId, u64)>) {
        let Some(v) = &mut self.view else { return };
        let cut = |n: &Node| n.disk().low_water.take(SLOT_PRIMARY);
        let last = last_look == Some((v.node, v.epoch));
        let Some(points) = v.measure(nodes, cut, &mut self.scratch, last) else {
            return;
        };
        for (a, p) in self.allowed.iter_mut().zip(points) {
            *a = (*a).max(p);
        }
        let p = &nodes[v.node as usize];
        let plog = Log::of(p);
        // The history grows to what the stream's mode allowed, from the primary's log,
        // which must hold the history so far.
        let target = self.allowed[mode_index(self.stream_mode)] as usize;
        let pi = v.node as usize;
        extend(&mut self.with_history[pi], plog, Log::whole(&self.history));
        let node = v.node;
        let epoch = v.epoch;
        if self.with_history[pi] < self.history.len() {
            self.violate(format!(
                "invariant 1: committed lsn {} is not in the log of n{node}, primary of epoch {epoch}",
                self.with_history[pi] + 1
            ));
            return;
        }
        if target > self.history.len() {
            assert!(
                target <= plog.len(),
                "the rule never passes the primary's log"
            );
            let mut from = self.history.len() + 1;
            while (from as u64) < plog.first && from <= target {
                // Below the log's first record: only what this node deleted as a
                // deposed primary, committed by its own epoch's rule ahead of the
                // history; anything else was deleted before the rule allowed it
                // (retention reports that too).
                let Some(r) = self.deleted_ahead.get(&(node, from as u64)) else {
                    self.violate(format!(
                        "invariant 1: lsn {from} was deleted from the log of n{node}, primary of epoch {epoch}, before it was committed"
                    ));
                    return;
                };
                self.history.push(r.clone());
                from += 1;
            }
            self.history
                .extend((from..=target).map(|i| plog.get(i - 1).expect("held").clone()));
            self.with_history[pi] = target;
        }
        if (p.disk().durable_lsn() as usize) < self.history.len() {
            self.violate(format!(
                "invariant 1: n{node} holds {} durably, the committed history is {} long",
                p.disk().durable_lsn(),
                self.history.len()
            ));
        }
    }

    /// A client was told `first..` (its `payloads`) are committed by `node`, for a
    /// request of `mode` (`None`: the stream's).
    pub fn on_acked(
        &mut self,
        nodes: &[Node],
        node: NodeId,
        first: u64,
        payloads: &[Vec<u8>],
        mode: Option<Mode>,
    ) {
        let mode = mode.map_or(self.stream_mode, |m| m.min(self.stream_mode));
        let last = first + payloads.len() as u64 - 1;
        // The rule's measure as of this moment: the answer may follow a write that
        // became durable in this very step.
        self.measure(nodes);
        // A deposed primary's own-epoch commit is judged by its own epoch's rule (its
        // successor may not have heard from the members yet): the rule of its epoch if
        // it still acts as primary, else of the role that ended in this step.
        let n = &nodes[node as usize];
        let own = self
            .deposed
            .iter()
            .find(|v| v.node == node && (!n.is_primary() || n.epoch() == Some(v.epoch)));
        let allowed = match own {
            Some(v) if self.view.as_ref().is_none_or(|c| c.node != node) => {
                v.allowed[mode_index(mode)]
            }
            _ => self.allowed[mode_index(mode)],
        };
        // A deposed primary that has not heard of its successor still acknowledges
        // what a weaker mode lets it commit alone (its own durable write, checked
        // below): the commit rule of the current epoch says nothing about that, nor
        // about an async commit of a primary whose role ends in this very step.
        let deposed = self.failover
            && mode != Mode::Strong
            && (mode == Mode::Async || self.view.as_ref().is_some_and(|v| v.node != node));
        if last > allowed && !deposed {
            self.violate(format!(
                "invariant 1: {first}..={last} acknowledged as committed ({mode:?}) by n{node}, the commit rule allowed {allowed}"
            ));
        }
        let n = &nodes[node as usize];
        let log = Log::of(n);
        let history = &self.history;
        let deleted_ahead = &self.deleted_ahead;
        // A record retention deleted since was checked to be committed then: it must be
        // the committed one (by a deposed primary's own rule, the one it deleted).
        let record = |lsn: u64| {
            log.get(lsn as usize - 1)
                .or(history.get(lsn as usize - 1))
                .or(deleted_ahead.get(&(node, lsn)))
        };
        let held = (first..=last).all(|lsn| {
            lsn <= n.disk().durable_lsn()
                && record(lsn).is_some_and(|r| r.payload == payloads[(lsn - first) as usize])
        });
        if !held {
            let what = format!(
                "invariant 1: {first}..={last} acknowledged by n{node} whose durable log does not hold the client's records"
            );
            self.violation.get_or_insert(what);
        }
        let strong = mode == Mode::Strong;
        if strong {
            // Strong commits are a prefix: this one means every earlier record of this
            // primary's log is held by `k` members too, weakly acknowledged ones
            // included — as long as they are still in it (a failover may have lost them
            // before, which their weaker mode allowed).
            for a in self.acked.iter_mut().filter(|a| !a.strong) {
                let end = a.first + a.payloads.len() as u64 - 1;
                a.strong = end <= last
                    && a.payloads
                        .iter()
                        .enumerate()
                        .all(|(i, p)| record(a.first + i as u64).is_some_and(|r| &r.payload == p));
            }
        }
        self.acked.push(Acked {
            first,
            payloads: payloads.to_vec(),
            strong,
        });
    }

    /// `node` is a primary of an older epoch than the one the rule follows: deposed,
    /// not knowing it yet. It may still complete commits of its own epoch on acks sent
    /// before the fence (the records are then in its successor's log: invariant 1
    /// checks that); the successor's rule does not judge them.
    fn deposed(&self, nodes: &[Node], node: NodeId) -> bool {
        let n = &nodes[node as usize];
        self.failover
            && n.is_primary()
            && self
                .view
                .as_ref()
                .is_some_and(|v| v.node != node && n.epoch().is_some_and(|e| e < v.epoch))
    }

    /// A read from `node` returned `records` with `commit`.
    pub fn on_read(&mut self, nodes: &[Node], node: NodeId, commit: u64, records: &[(u64, Rec)]) {
        // As in `check`: a secondary may serve a deposed primary's commits.
        let mode = mode_index(self.stream_mode);
        let allowed = if nodes[node as usize].is_primary() {
            self.allowed[mode]
        } else {
            self.allowed[mode].max(self.deposed_allowed[mode])
        };
        if commit > allowed && !self.deposed(nodes, node) {
            self.violate(format!(
                "invariant 4: a read from n{node} says {commit} is committed, the rule allowed {allowed}"
            ));
        }
        // A deposed primary that has not heard of its successor commits by its own
        // epoch's rule, ahead of the history, which follows the successor (as its acks,
        // see `on_acked`).
        let own_rule = if self.deposed(nodes, node) {
            let epoch = nodes[node as usize].epoch();
            self.deposed
                .iter()
                .find(|v| v.node == node && Some(v.epoch) == epoch)
                .map_or(0, |v| v.allowed[mode_index(self.stream_mode)])
        } else {
            0
        };
        for (lsn, r) in records {
            if *lsn > commit {
                self.violate(format!(
                    "invariant 4: a read from n{node} returned lsn {lsn} beyond its commit {commit}"
                ));
            }
            let ahead = *lsn > self.history.len() as u64 && *lsn <= own_rule;
            if !ahead && self.history.get(*lsn as usize - 1) != Some(r) {
                self.violate(format!(
                    "invariant 2: a read from n{node} returned a record at {lsn} that differs from the committed one"
                ));
            }
        }
    }

    /// At the end: acknowledged records kept by the current primary, no record twice.
    pub fn finish(&mut self, nodes: &[Node]) {
        if let Some(p) = nodes.iter().find(|n| n.is_primary()) {
            self.check_acked_kept(nodes, p.id);
        }
        let mut seen = HashSet::with_capacity(self.history.len());
        for (i, r) in self.history.iter().enumerate() {
            if !seen.insert(r.payload.as_slice()) && r.payload.len() >= 8 {
                let what = format!(
                    "lsn {} repeats an earlier record: an append was sent twice",
                    i + 1
                );
                self.violation.get_or_insert(what);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(b: u8) -> Rec {
        Rec {
            epoch: 1,
            payload: vec![b],
        }
    }

    #[test]
    fn agreement_extends_only_over_equal_records() {
        let a = [rec(1), rec(2), rec(3)];
        let b = [rec(1), rec(2), rec(9), rec(4)];
        let mut agree = 0;
        extend(&mut agree, Log::whole(&a), Log::whole(&b));
        assert_eq!(agree, 2);
        // A deleted prefix agrees; records held must still be equal.
        let held = Log {
            first: 3,
            records: &b[2..],
        };
        let mut agree = 0;
        extend(&mut agree, held, Log::whole(&a));
        assert_eq!(agree, 2);
        let mut agree = 0;
        extend(&mut agree, Log::whole(&b), held);
        assert_eq!(agree, 4);
        // A cut below the agreement is told through the low water mark.
        let w = LowWater::default();
        w.cut(1);
        w.cut(3);
        assert_eq!(w.take(SLOT_HISTORY), 1);
        assert_eq!(w.take(SLOT_HISTORY), usize::MAX);
        assert_eq!(w.take(SLOT_PRIMARY), 1);
    }
}
