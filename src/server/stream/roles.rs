//! A stream under the cluster's controller: roles from committed configurations,
//! fences, the status the controller sees, and the requests the primary makes.
//!
//! Rules kept here:
//! - A node serves as primary only when the configuration names it *and* this process
//!   (its incarnation): a restarted node never resumes a role on its own.
//! - The epoch a node promises (by answering a fence, or by becoming primary) is stored
//!   durably before the promise is made, so a restart cannot forget it.
//! - A primary that loses its role ends every waiting request in doubt, never as
//!   failed: their records may still be committed by the new primary.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{MemberLink, PrimaryDriver, RoleDriver, SecondaryDriver, StreamDriver};
use crate::control::{Request, StreamRoles, StreamStatus};
use crate::replication::{MemberSpec, Mode, NodeId, Primary, Secondary};
use crate::server::epoch_file;
use crate::server::record_cache::RecordCache;
use crate::transport::Links;

/// How long a primary stops admitting for a switchover that does not complete (its
/// controller leader was lost, the target fell behind): then it serves again.
const DRAIN_MAX: std::time::Duration = std::time::Duration::from_secs(2);
/// Between two reports that the target holds everything.
const DRAINED_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// A switchover in progress on its old primary.
pub struct Draining {
    pub epoch: u64,
    pub to: NodeId,
    pub to_addr: String,
    pub reply_to: NodeId,
    since: Instant,
    reported: Option<Instant>,
}

/// What a change of roles means for the shard's links of this stream.
#[derive(Debug, PartialEq, Eq)]
pub enum RolesApplied {
    /// Nothing changed that the shard must act on.
    Same,
    /// The primary's members changed: dial the new ones.
    Members,
    /// The role changed: close the stream's peer links and dial afresh.
    Role,
    /// The log is busy (a write in flight): apply again on a later turn.
    Later,
}

impl StreamDriver {
    /// Puts the stream under a controller: it serves nobody until a configuration
    /// names this process primary, and records only from an epoch's primary.
    pub fn controlled(mut self, incarnation: u64) -> StreamDriver {
        self.incarnation = Some(incarnation);
        if let RoleDriver::Primary(_) = self.role {
            self.demote(None);
        }
        self
    }

    /// The stream's state as the controller sees it.
    pub fn status(&self) -> StreamStatus {
        let (primary, commit_lsn, last_lsn, last_epoch) = match &self.role {
            RoleDriver::Primary(p) => (
                true,
                p.core.commit_lsn(),
                self.log.next_lsn() - 1,
                self.log.last_epoch().unwrap_or(0),
            ),
            RoleDriver::Secondary(s) => (
                false,
                s.core.readable_commit(),
                s.core.last_lsn(),
                s.core.last_epoch(),
            ),
        };
        StreamStatus {
            stream: self.cfg.name.clone(),
            epoch: self.epoch,
            primary,
            last_epoch,
            last_lsn,
            durable_lsn: self.log.durable_lsn(),
            commit_lsn,
        }
    }

    /// Requests for the controller gathered since the last call.
    pub fn take_requests(&mut self) -> Vec<Request> {
        std::mem::take(&mut self.requests)
    }

    /// Answers `Fence(epoch)`: stores the epoch durably, stops serving as an older
    /// epoch's primary, refuses older records from now on. Returns where the log ends
    /// (epoch of the last record, its LSN).
    pub fn fence(
        &mut self,
        links: &mut impl Links,
        epoch: u64,
        now: Instant,
    ) -> Result<(u64, u64), String> {
        if epoch > self.epoch {
            epoch_file::store(self.log.dir(), epoch).map_err(|e| {
                format!(
                    "stream {}: store epoch {epoch} in {}: {e}",
                    self.cfg.name,
                    self.log.dir().display()
                )
            })?;
            if self.is_primary() {
                eprintln!(
                    "lockstep: stream {}: fenced by epoch {epoch}: no longer the primary of epoch {}",
                    self.cfg.name, self.epoch
                );
                self.stop_primary(links, now);
                self.epoch = epoch;
                self.demote(None);
            }
            self.epoch = epoch;
            if let RoleDriver::Secondary(s) = &mut self.role {
                s.core.fence(epoch);
            }
            self.metrics.epoch = epoch;
        }
        // Where the durable log ends: what is not durable yet may vanish in a crash and
        // was never committed, and a promotion's floor must be a log that exists.
        let durable = self.log.durable_lsn();
        let epoch = if durable == 0 {
            0
        } else {
            self.log.epoch_at(durable).map_err(|e| {
                format!(
                    "stream {}: read the epoch of lsn {durable}: {e}",
                    self.cfg.name
                )
            })?
        };
        Ok((epoch, durable))
    }

    /// The controller's leader `reply_to` switches the primary role over to `to`: admit
    /// nothing more, and say when `to` holds everything ([`StreamDriver::drained`]).
    pub fn drain(&mut self, epoch: u64, to: NodeId, reply_to: NodeId, now: Instant) {
        let RoleDriver::Primary(p) = &self.role else {
            return;
        };
        let Some(m) = p.members.iter().find(|m| m.id == to) else {
            return;
        };
        if epoch != self.epoch || self.draining.is_some() {
            return;
        }
        eprintln!(
            "lockstep: stream {}: switching over to node {to}: no more appends here",
            self.cfg.name
        );
        self.draining = Some(Draining {
            epoch,
            to,
            to_addr: m.addr.clone(),
            reply_to,
            since: now,
            reported: None,
        });
    }

    /// A switchover's report when its target holds this primary's whole log: (to
    /// whom, the message). A switchover that does not complete in time is given up and
    /// the primary serves again.
    pub fn drained(&mut self, now: Instant) -> Option<(NodeId, crate::control::ControlMsg)> {
        let d = self.draining.as_mut()?;
        let RoleDriver::Primary(p) = &self.role else {
            self.draining = None;
            return None;
        };
        if now.duration_since(d.since) > DRAIN_MAX {
            eprintln!(
                "lockstep: stream {}: the switchover to node {} did not complete: serving again",
                self.cfg.name, d.to
            );
            self.draining = None;
            return None;
        }
        let last = p.core.last_lsn();
        let target = p.core.members().find(|m| m.0 == d.to).map_or(0, |m| m.4);
        let due = d
            .reported
            .is_none_or(|t| now.duration_since(t) >= DRAINED_EVERY);
        if p.core.local_durable() < last || target < last || !due {
            return None;
        }
        d.reported = Some(now);
        Some((
            d.reply_to,
            crate::control::ControlMsg::Drained {
                stream: self.cfg.name.clone(),
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
        now: Instant,
    ) -> RolesApplied {
        let me = roles.primary == self.node_id && Some(roles.incarnation) == self.incarnation;
        self.cfg.primary = roles.primary;
        self.cfg.sync_set = roles.sync_set.clone();
        self.cfg.learners = roles.learners.clone();
        let specs: Vec<MemberSpec> = roles
            .sync_set
            .iter()
            .map(|&id| MemberSpec { id, sync: true })
            .chain(
                roles
                    .learners
                    .iter()
                    .map(|&id| MemberSpec { id, sync: false }),
            )
            .filter(|m| m.id != self.node_id)
            .collect();
        match (&mut self.role, me) {
            (RoleDriver::Primary(p), true) if self.epoch == roles.epoch => {
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
                            truncating: false,
                        });
                    }
                }
                let after: Vec<NodeId> = p.members.iter().map(|m| m.id).collect();
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
                if self.log.writing() || self.log.has_pending() {
                    return RolesApplied::Later;
                }
                if let Err(e) = epoch_file::store(self.log.dir(), roles.epoch) {
                    eprintln!(
                        "lockstep: stream {}: cannot store epoch {}: {e}; not taking the primary role",
                        self.cfg.name, roles.epoch
                    );
                    return RolesApplied::Same;
                }
                self.stop_primary(links, now);
                self.epoch = roles.epoch;
                self.promote(&specs, addrs, roles.degraded, roles.version);
                eprintln!(
                    "lockstep: stream {}: primary of epoch {} from lsn {}",
                    self.cfg.name,
                    roles.epoch,
                    self.log.durable_lsn()
                );
                RolesApplied::Role
            }
            (RoleDriver::Secondary(s), false) => {
                s.core.fence(roles.epoch);
                self.epoch = self.epoch.max(roles.epoch);
                s.primary_addr = addrs.get(&roles.primary).cloned();
                RolesApplied::Same
            }
            (RoleDriver::Primary(_), false) => {
                eprintln!(
                    "lockstep: stream {}: node {} is the primary of epoch {}: this node follows",
                    self.cfg.name, roles.primary, roles.epoch
                );
                self.stop_primary(links, now);
                self.epoch = self.epoch.max(roles.epoch);
                self.demote(addrs.get(&roles.primary).cloned());
                RolesApplied::Role
            }
        }
    }

    /// Ends every waiting request in doubt and tells their clients.
    fn stop_primary(&mut self, links: &mut impl Links, now: Instant) {
        self.draining = None;
        if let RoleDriver::Primary(p) = &mut self.role {
            p.core.stop("this node lost the primary role");
            self.drive(links, now);
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
            Primary::new(self.cfg.settings.clone(), self.epoch, &[], last, 0).under_controller();
        core.set_members(specs, degraded, version);
        self.role = RoleDriver::Primary(Box::new(PrimaryDriver {
            core,
            cache: RecordCache::new(super::CACHE_BYTES, super::CACHE_RECORDS),
            members: specs
                .iter()
                .map(|s| MemberLink {
                    id: s.id,
                    addr: addrs.get(&s.id).cloned().unwrap_or_default(),
                    link: None,
                    truncating: false,
                })
                .collect(),
            requests: std::collections::HashMap::with_capacity(4096),
            next_request: 1,
            durable_at: std::collections::VecDeque::with_capacity(1024),
        }));
        self.metrics.role = "primary";
        self.metrics.epoch = self.epoch;
    }

    /// Becomes a secondary of `primary_addr`. A write of the old role may still be in
    /// flight: the log's last record is known, its durability comes with the write.
    fn demote(&mut self, primary_addr: Option<String>) {
        let last = self.log.next_lsn() - 1;
        let semi = self.cfg.settings.mode == Mode::Semi;
        let mut core = Secondary::new(self.epoch, last, self.log.last_epoch().unwrap_or(0), semi);
        core.set_durable(self.log.durable_lsn());
        self.role = RoleDriver::Secondary(SecondaryDriver {
            core,
            primary_link: None,
            primary_addr,
            ack_due: false,
            truncate_to: None,
            rebase_to: None,
        });
        self.metrics.role = "secondary";
        self.metrics.epoch = self.epoch;
    }
}
