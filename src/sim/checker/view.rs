//! What the checker measures with: the commit rule as one primary applies it
//! ([`PrimaryView`], from the nodes' disks and reports), and the logs it compares
//! ([`Log`], [`extend`], and the low-water marks through which a log's cuts are told).

use std::cell::Cell;

use super::mode_index;
use crate::replication::commit_rule::commit_point;
use crate::replication::{Mode, NodeId, StreamSettings};
use crate::sim::Rec;
use crate::sim::node::Node;

/// The commit rule as the current primary applies it, from its events.
pub(super) struct PrimaryView {
    pub(super) node: NodeId,
    pub(super) epoch: u64,
    pub(super) settings: StreamSettings,
    pub(super) sync_set: Vec<NodeId>,
    /// Per sync-set member: counted by the commit rule (not dropped by `degrade`).
    pub(super) in_sync: Vec<bool>,
    /// Per node: its removal was asked for; its acks count for nothing until the
    /// configuration says otherwise (see `Primary`: a member leaving).
    pub(super) leaving: Vec<bool>,
    /// A learner whose restore was asked for: commits also meet the rule of the sync
    /// set with it (see `Primary`: a member joining).
    pub(super) joining: Option<NodeId>,
    pub(super) degraded: bool,
    /// Per node: length of its log's prefix known equal to the primary's log.
    pub(super) with_primary: Vec<usize>,
    /// Per node: most of the primary's records it ever held (received) in this epoch.
    pub(super) received_max: Vec<u64>,
    /// Per node: the highest (received, durable) it reported to this primary.
    pub(super) reported: Vec<(u64, u64)>,
    /// Per mode: the highest LSN this primary's rule ever allowed.
    pub(super) allowed: [u64; 3],
    pub(super) live: bool,
    /// Its members changed and the core has not applied its rule since: what the core
    /// asks about the new members (a removal) follows no commit that counted them.
    pub(super) members_fresh: bool,
}

impl PrimaryView {
    /// What member `m` holds for the commit rule of `mode`: of the primary's records,
    /// what it has durably (strong) or ever received (semi), as far as it told the
    /// primary so.
    pub(super) fn holds(&self, nodes: &[Node], m: NodeId, mode: Mode) -> u64 {
        let i = m as usize;
        let (received, durable) = self.reported[i];
        let durable = nodes[i]
            .disk()
            .durable_lsn()
            .min(self.with_primary[i] as u64)
            .min(durable);
        match mode {
            Mode::Semi => durable.max(self.received_max[i].min(received)),
            _ => durable,
        }
    }

    /// The rule's points per mode now, from the disks and the reports (`cut`: how far
    /// each node's log was cut since this view last looked); `None` once the primary
    /// no longer acts as the primary of its epoch. `last_look`: its role ends in this
    /// step, and its log (still the primary's, unless the node crashed) is measured
    /// once more for what it committed before, in the same step.
    pub(super) fn measure(
        &mut self,
        nodes: &[Node],
        mut cut: impl FnMut(&Node) -> usize,
        scratch: &mut Vec<u64>,
        last_look: bool,
    ) -> Option<[u64; 3]> {
        self.members_fresh = false;
        let p = &nodes[self.node as usize];
        let acting = p.epoch() == Some(self.epoch) && p.is_primary();
        if !self.live || !(acting || last_look && p.up()) {
            return None;
        }
        let plog = Log::of(p);
        for n in nodes {
            let i = n.id as usize;
            self.with_primary[i] = self.with_primary[i].min(cut(n));
            extend(&mut self.with_primary[i], Log::of(n), plog);
            self.received_max[i] = self.received_max[i].max(self.with_primary[i] as u64);
        }
        let local = p.disk().durable_lsn();
        let mut points = [local; 3];
        if !self.degraded && self.settings.mode != Mode::Async {
            for mode in [Mode::Semi, Mode::Strong] {
                let acked: Vec<u64> = self
                    .sync_set
                    .iter()
                    .zip(&self.in_sync)
                    .filter(|(_, in_sync)| **in_sync)
                    .map(|(&m, _)| {
                        if self.leaving[m as usize] {
                            return 0;
                        }
                        self.holds(nodes, m, mode)
                    })
                    .collect();
                let k = self.settings.k(acked.len());
                let mut point = if acked.is_empty() {
                    0
                } else {
                    commit_point(local, &acked, k, scratch)
                };
                if let Some(j) = self.joining {
                    let mut with = acked.clone();
                    with.push(self.holds(nodes, j, mode));
                    let k = self.settings.k(with.len());
                    point = point.min(commit_point(local, &with, k, scratch));
                }
                points[mode_index(mode)] = point;
            }
        }
        for (a, p) in self.allowed.iter_mut().zip(points) {
            *a = (*a).max(p);
        }
        Some(points)
    }
}

/// How a node's log shrinks between checks is told through these slots: the shortest
/// length since the observer last looked.
pub const SLOT_HISTORY: usize = 0;
pub const SLOT_PRIMARY: usize = 1;
pub const SLOT_DEPOSED: usize = 2;

#[derive(Debug)]
pub struct LowWater([Cell<usize>; 3]);

impl Default for LowWater {
    fn default() -> Self {
        LowWater(std::array::from_fn(|_| Cell::new(usize::MAX)))
    }
}

impl LowWater {
    /// The log was cut to `len` records.
    pub fn cut(&self, len: usize) {
        for c in &self.0 {
            c.set(c.get().min(len));
        }
    }

    /// The shortest length since the last call for `slot`.
    pub fn take(&self, slot: usize) -> usize {
        self.0[slot].replace(usize::MAX)
    }
}

/// A log as the checker compares it: the records from LSN `first` on; what lies below
/// was deleted after it was checked to be committed (see the module's docs).
#[derive(Clone, Copy)]
pub(super) struct Log<'a> {
    pub(super) first: u64,
    pub(super) records: &'a [Rec],
}

impl<'a> Log<'a> {
    pub(super) fn of(n: &'a Node) -> Log<'a> {
        Log {
            first: n.disk().first_lsn(),
            records: n.disk().records(),
        }
    }

    pub(super) fn whole(records: &'a [Rec]) -> Log<'a> {
        Log { first: 1, records }
    }

    /// The last LSN.
    pub(super) fn len(&self) -> usize {
        (self.first - 1) as usize + self.records.len()
    }

    /// The record at index `i` (LSN `i + 1`); `None` below the first one.
    pub(super) fn get(&self, i: usize) -> Option<&'a Rec> {
        (i + 1)
            .checked_sub(self.first as usize)
            .map(|j| &self.records[j])
    }
}

/// Extends `agree` (a prefix of `a` known equal to `b`) as far as both go; a record
/// missing below a log's first one agrees.
pub(super) fn extend(agree: &mut usize, a: Log<'_>, b: Log<'_>) {
    let end = a.len().min(b.len());
    *agree = (*agree).min(end);
    while *agree < end {
        if let (Some(x), Some(y)) = (a.get(*agree), b.get(*agree))
            && x != y
        {
            break;
        }
        *agree += 1;
    }
}
