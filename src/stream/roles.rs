//! A stream under the cluster's controller: roles from committed configurations,
//! fences, the status the controller sees, and switchovers.
//!
//! Rules kept here:
//! - A node serves as primary only when the configuration names it *and* this process
//!   (its incarnation): a restarted node never resumes a role on its own.
//! - The epoch a node promises (by answering a fence, or by becoming primary) is stored
//!   durably before the promise is made, so a restart cannot forget it. The host stores
//!   it ([`Output::StoreEpoch`], one store at a time, so stores never overtake each
//!   other): the shard's thread never waits for the fsync.
//! - A primary that loses its role ends every waiting request in doubt, never as
//!   failed: their records may still be committed by the new primary.
//!
//! Without a controller a stream takes no roles from anyone but the simulator's
//! scripts, which have no incarnations: any configuration that names this node then
//! names this process.

use std::collections::BTreeMap;

use super::output::{Note, Output};
use super::primary::{MemberLink, PrimaryDriver};
use super::secondary::SecondaryDriver;
use super::{LogStore, Role, StreamDriver, StreamSpec, Time};
use crate::control::{ControlMsg, StreamRoles, StreamStatus};
use crate::replication::{MemberSpec, Mode, NodeId, Primary};
use crate::transport::Links;

/// How long a primary stops admitting for a switchover that does not complete (its
/// controller leader was lost, the target fell behind): then it serves again.
const DRAIN_MAX_US: u64 = 2_000_000;
/// Between two reports that the target holds everything.
const DRAINED_EVERY_US: u64 = 20_000;

/// A switchover in progress on its old primary.
pub(super) struct Draining {
    epoch: u64,
    to: NodeId,
    pub to_addr: String,
    reply_to: NodeId,
    since: Time,
    reported: Option<Time>,
}

/// What a change of roles means for the host's links of this stream.
#[derive(Debug, PartialEq, Eq)]
pub enum RolesApplied {
    /// Nothing changed that the host must act on.
    Same,
    /// The primary's members changed: dial the new ones.
    Members,
    /// The role changed: close the stream's peer links and dial afresh.
    Role,
    /// Not yet (a write in flight, or the epoch being stored): apply again later.
    Later,
}

/// The EPOCH file as the driver knows it.
pub(super) struct EpochStore {
    /// The newest epoch stored.
    stored: u64,
    in_flight: Option<u64>,
    /// The newest epoch asked for.
    wanted: u64,
    /// An epoch whose store failed: it is not asked for again.
    failed: Option<u64>,
    /// Fences answered once their epoch is stored: (epoch, who asked).
    fences: Vec<(u64, NodeId)>,
}

impl EpochStore {
    pub fn new(stored: u64) -> EpochStore {
        EpochStore {
            stored,
            in_flight: None,
            wanted: stored,
            failed: None,
            fences: Vec::new(),
        }
    }
}

impl<S: LogStore> StreamDriver<S> {
    /// The stream's state as the controller sees it.
    pub fn status(&self) -> StreamStatus {
        let (primary, commit_lsn, last_lsn, last_epoch) = match &self.role {
            Role::Primary(p) => (
                true,
                p.core.commit_lsn(),
                self.log.next_lsn() - 1,
                self.log.last_epoch().unwrap_or(0),
            ),
            Role::Secondary(s) => (
                false,
                s.core.readable_commit(),
                s.core.last_lsn(),
                s.core.last_epoch(),
            ),
        };
        StreamStatus {
            stream: self.spec.name.clone(),
            epoch: self.epoch,
            primary,
            last_epoch,
            last_lsn,
            durable_lsn: self.log.durable_lsn(),
            commit_lsn,
        }
    }

    /// `Fence(epoch)` from the controller's leader `reply_to`: once the epoch is
    /// stored, stop serving as an older epoch's primary, refuse older records from
    /// then on, and answer with where the durable log ends ([`Output::Fenced`]).
    pub fn fence(&mut self, links: &mut impl Links, epoch: u64, reply_to: NodeId, now: Time) {
        if epoch > self.epoch && epoch > self.epochs.stored {
            self.epochs.fences.push((epoch, reply_to));
            self.want_epoch(epoch);
            return;
        }
        self.answer_fence(links, epoch, reply_to, now);
    }

    fn answer_fence(&mut self, links: &mut impl Links, epoch: u64, reply_to: NodeId, now: Time) {
        if epoch > self.epoch {
            if self.is_primary() {
                let old = self.epoch;
                self.note(Note::FencedOut { epoch, old });
                self.stop_primary(links, now);
                self.epoch = epoch;
                self.demote(None);
            }
            self.epoch = epoch;
            if let Role::Secondary(s) = &mut self.role {
                s.core.fence(epoch);
            }
            self.metrics.epoch = epoch;
        }
        self.note(Note::Fenced { epoch });
        // Where the durable log ends: what is not durable yet may vanish in a crash and
        // was never committed, and a promotion's floor must be a log that exists.
        let durable = self.log.durable_lsn();
        let last_epoch = if durable == 0 {
            0
        } else {
            match self.log.epoch_at(durable) {
                Ok(e) => e,
                Err(e) => {
                    let why = format!("read the epoch of lsn {durable}: {e}");
                    self.note(Note::FenceUnanswered { epoch, why });
                    return;
                }
            }
        };
        self.outputs.push(Output::Fenced {
            reply_to,
            epoch,
            last_epoch,
            last_lsn: durable,
        });
    }

    /// Asks the host to store `epoch`, unless a store is in flight (the newest wanted
    /// follows it).
    fn want_epoch(&mut self, epoch: u64) {
        let e = &mut self.epochs;
        e.wanted = e.wanted.max(epoch);
        if e.in_flight.is_none() && e.wanted > e.stored && e.failed != Some(e.wanted) {
            e.in_flight = Some(e.wanted);
            self.outputs.push(Output::StoreEpoch(e.wanted));
        }
    }

    /// The host stored `epoch` durably: the fences waiting for it are answered.
    pub fn on_epoch_stored(&mut self, links: &mut impl Links, epoch: u64, now: Time) {
        let e = &mut self.epochs;
        assert_eq!(e.in_flight, Some(epoch), "the epoch asked for is stored");
        e.in_flight = None;
        e.stored = e.stored.max(epoch);
        let stored = e.stored;
        let (ready, waiting) = e.fences.drain(..).partition(|&(f, _)| f <= stored);
        e.fences = waiting;
        for (epoch, reply_to) in ready {
            self.answer_fence(links, epoch, reply_to, now);
        }
        self.want_epoch(stored);
    }

    /// The host could not store `epoch`: no fence of it is answered, and this node
    /// does not take the primary role in it.
    pub fn on_epoch_store_failed(&mut self, epoch: u64, why: String) {
        let e = &mut self.epochs;
        assert_eq!(e.in_flight, Some(epoch), "the epoch asked for failed");
        e.in_flight = None;
        e.failed = Some(epoch);
        e.fences.retain(|&(f, _)| f > epoch);
        self.note(Note::EpochNotStored { epoch, why });
        let wanted = self.epochs.wanted;
        self.want_epoch(wanted);
    }

    /// The controller's leader `reply_to` switches the primary role over to `to`: admit
    /// nothing more, and say when `to` holds everything ([`StreamDriver::drained`]).
    pub fn drain(&mut self, epoch: u64, to: NodeId, reply_to: NodeId, now: Time) {
        let Role::Primary(p) = &self.role else {
            return;
        };
        let Some(m) = p.members.iter().find(|m| m.id == to) else {
            return;
        };
        if epoch != self.epoch || self.draining.is_some() {
            return;
        }
        self.draining = Some(Draining {
            epoch,
            to,
            to_addr: m.addr.clone(),
            reply_to,
            since: now,
            reported: None,
        });
        self.note(Note::SwitchingOver { to });
    }

    /// A switchover's report when its target holds this primary's whole log: (to
    /// whom, the message). A switchover that does not complete in time is given up and
    /// the primary serves again.
    pub fn drained(&mut self, now: Time) -> Option<(NodeId, ControlMsg)> {
        self.draining.as_ref()?;
        self.fold_acks();
        let d = self.draining.as_mut()?;
        let Role::Primary(p) = &self.role else {
            self.draining = None;
            return None;
        };
        if now.micros_since(d.since) > DRAIN_MAX_US {
            let to = d.to;
            self.draining = None;
            self.note(Note::SwitchoverAbandoned { to });
            return None;
        }
        let last = p.core.last_lsn();
        let target = p.core.members().find(|m| m.0 == d.to).map_or(0, |m| m.4);
        let due = d
            .reported
            .is_none_or(|t| now.micros_since(t) >= DRAINED_EVERY_US);
        if p.core.local_durable() < last || target < last || !due {
            return None;
        }
        d.reported = Some(now);
        Some((
            d.reply_to,
            ControlMsg::Drained {
                stream: self.spec.name.clone(),
                epoch: d.epoch,
                to: d.to,
                last_lsn: last,
            },
        ))
    }

    /// Applies a committed configuration of this stream.
    pub fn set_roles(
        &mut self,
        links: &mut impl Links,
        roles: &StreamRoles,
        addrs: &BTreeMap<NodeId, String>,
        now: Time,
    ) -> RolesApplied {
        // Acks that arrived under the old members count under them.
        self.fold_acks();
        let me = roles.primary == self.node_id
            && self.incarnation.is_none_or(|i| i == roles.incarnation);
        self.spec.primary = roles.primary;
        self.spec.members = StreamSpec::members_of(&roles.sync_set, &roles.learners);
        let specs = self.spec.members_without(self.node_id);
        match (&mut self.role, me) {
            (Role::Primary(p), true) if self.epoch == roles.epoch => {
                p.core.set_members(&specs, roles.degraded, roles.version);
                let before: Vec<NodeId> = p.members.iter().map(|m| m.id).collect();
                p.members.retain(|m| {
                    let keep = specs.iter().any(|s| s.id == m.id);
                    if !keep && let Some(link) = m.link {
                        links.close(link, "no longer a member of the stream");
                    }
                    keep
                });
                for s in &specs {
                    if !p.members.iter().any(|m| m.id == s.id) {
                        p.members.push(MemberLink {
                            id: s.id,
                            addr: addrs.get(&s.id).cloned().unwrap_or_default(),
                            link: None,
                        });
                    }
                }
                let after: Vec<NodeId> = p.members.iter().map(|m| m.id).collect();
                let epoch = self.epoch;
                self.note(Note::MembersChanged {
                    epoch,
                    sync_set: roles.sync_set.clone(),
                    degraded: roles.degraded,
                });
                self.dispatch(links, now);
                if before == after {
                    RolesApplied::Same
                } else {
                    RolesApplied::Members
                }
            }
            (_, true) => {
                if roles.epoch < self.epoch {
                    // A configuration older than a fence this node answered.
                    return RolesApplied::Same;
                }
                if self.stepped_down.is_some_and(|e| roles.epoch <= e) {
                    // The role of an epoch this incarnation stepped down from.
                    return RolesApplied::Same;
                }
                if !self.log.settled() {
                    return RolesApplied::Later;
                }
                if self.epochs.stored < roles.epoch {
                    if self.epochs.failed == Some(roles.epoch) {
                        return RolesApplied::Same;
                    }
                    self.want_epoch(roles.epoch);
                    return RolesApplied::Later;
                }
                self.stop_primary(links, now);
                self.epoch = roles.epoch;
                self.promote(&specs, addrs, roles.degraded, roles.version);
                let from_lsn = self.log.durable_lsn();
                self.note(Note::Promoted {
                    epoch: roles.epoch,
                    from_lsn,
                    sync_set: roles.sync_set.clone(),
                });
                self.dispatch(links, now);
                RolesApplied::Role
            }
            (Role::Secondary(s), false) => {
                s.core.fence(roles.epoch);
                self.epoch = self.epoch.max(roles.epoch);
                s.primary_addr = addrs.get(&roles.primary).cloned();
                RolesApplied::Same
            }
            (Role::Primary(_), false) => {
                self.note(Note::Follows {
                    primary: roles.primary,
                    epoch: roles.epoch,
                });
                self.stop_primary(links, now);
                self.epoch = self.epoch.max(roles.epoch);
                self.demote(addrs.get(&roles.primary).cloned());
                RolesApplied::Role
            }
        }
    }

    /// A member answered for `newer`, an epoch above this primary's: the controller
    /// fenced it for a failover, so this primary can commit nothing more that needs
    /// that member, and the controller will configure a newer epoch (it starts a round
    /// whenever a node promised one). Under the controller the primary steps down at
    /// once instead of holding its clients until their appends time out: the waiting
    /// appends end in doubt now (a member may hold them, so the new primary may
    /// commit them), new ones are refused as not primary (nothing done, so clients
    /// resend them elsewhere), and the member links close. This incarnation never
    /// takes the primary role of its old epoch again, only a newer one from a
    /// committed configuration. Nothing is stored: the node promised nothing.
    pub fn on_newer_epoch(&mut self, links: &mut impl Links, newer: u64, now: Time) {
        self.step_down(links, newer, now);
    }

    /// See [`StreamDriver::on_newer_epoch`].
    pub(super) fn step_down(&mut self, links: &mut impl Links, newer: u64, now: Time) {
        if self.incarnation.is_none() || !self.is_primary() || newer <= self.epoch {
            return;
        }
        let old = self.epoch;
        self.note(Note::SteppedDown { epoch: newer, old });
        self.stop_primary(links, now);
        if let Role::Primary(p) = &self.role {
            for link in p.members.iter().filter_map(|m| m.link) {
                links.close(link, "this node stepped down as primary");
            }
        }
        self.stepped_down = Some(old);
        self.demote(None);
    }

    /// Ends every waiting request in doubt and tells their clients. Retention waits
    /// for the next turn, in the new role.
    fn stop_primary(&mut self, links: &mut impl Links, now: Time) {
        // What the acks that arrived before the end committed is committed.
        self.fold_acks();
        self.draining = None;
        if let Role::Primary(p) = &mut self.role {
            p.core.stop("this node lost the primary role");
            self.drive_primary(links, now);
            let epoch = self.epoch;
            self.note(Note::StoppedPrimary { epoch });
        }
    }

    fn promote(
        &mut self,
        specs: &[MemberSpec],
        addrs: &BTreeMap<NodeId, String>,
        degraded: bool,
        version: u64,
    ) {
        let last = self.log.durable_lsn();
        let mut core =
            Primary::new(self.spec.settings.clone(), self.epoch, &[], last, 0).under_controller();
        core.set_members(specs, degraded, version);
        let members = specs
            .iter()
            .map(|s| (s.id, addrs.get(&s.id).cloned().unwrap_or_default()))
            .collect();
        self.role = Role::Primary(Box::new(PrimaryDriver::new(core, members, &self.options)));
        self.metrics.role = "primary";
        self.metrics.epoch = self.epoch;
    }

    /// Becomes a secondary of `primary_addr`. A write of the old role may still be in
    /// flight: the log's last record is known, its durability comes with the write.
    fn demote(&mut self, primary_addr: Option<String>) {
        let semi = self.spec.settings.mode == Mode::Semi;
        self.role = Role::Secondary(SecondaryDriver::new(
            self.epoch,
            self.log.next_lsn() - 1,
            self.log.last_epoch().unwrap_or(0),
            self.log.durable_lsn(),
            semi,
            primary_addr,
        ));
        self.metrics.role = "secondary";
        self.metrics.epoch = self.epoch;
    }
}
