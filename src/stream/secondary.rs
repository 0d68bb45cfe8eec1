//! The secondary side of the driver: the primary's greeting, its records, heartbeats,
//! and its requests to cut the log (`Truncate`) or start it over after the primary's
//! base (`Rebase`); acks once records are durable (on receipt in semi mode).
//!
//! Rules kept here:
//! - Records come only from the link of the primary's last greeting, and the core
//!   refuses older epochs and gaps.
//! - A cut waits until the log is settled (nothing in flight or pending), and records
//!   arriving meanwhile wait too; the member greets again once it is done, and only
//!   then does the primary count its acks.
//! - A member never obeys a `Truncate` that would cut records of the asking primary's
//!   own epoch (a late one answering an older greeting), see
//!   [`truncation_is_stale`].

use super::output::Note;
use super::{
    Handled, LogStore, Plant, Role, StreamDriver, send_or_close, send_then_close, unexpected,
};
use crate::log::{LogError, record};
use crate::replication::shared_prefix::{member_cut, truncation_is_stale};
use crate::replication::{NodeId, Secondary, Verdict};
use crate::transport::{LinkId, Links};
use crate::wire::{ErrorCode, Message, RequestId};

pub(super) struct SecondaryDriver {
    pub core: Secondary,
    pub primary_link: Option<LinkId>,
    /// Where clients are sent: the primary as the configuration names it.
    pub primary_addr: Option<String>,
    pub ack_due: bool,
    /// The primary of an epoch asked to keep records up to (its epoch, LSN, the epoch
    /// of its record there).
    truncate_to: Option<(u64, u64, u64)>,
    /// The primary of an epoch asked to start the log over after (its epoch, LSN, the
    /// epoch of its record there): it no longer holds what comes after this log's end.
    rebase_to: Option<(u64, u64, u64)>,
}

impl SecondaryDriver {
    /// A secondary of `epoch` whose log ends at (`last_epoch`, `last`), durable up to
    /// `durable` (a write of an earlier role may still be in flight).
    pub fn new(
        epoch: u64,
        last: u64,
        last_epoch: u64,
        durable: u64,
        semi: bool,
        primary_addr: Option<String>,
    ) -> SecondaryDriver {
        let mut core = Secondary::new(epoch, last, last_epoch, semi);
        core.set_durable(durable);
        SecondaryDriver {
            core,
            primary_link: None,
            primary_addr,
            ack_due: false,
            truncate_to: None,
            rebase_to: None,
        }
    }

    /// The greeting this member sends again after cutting its log.
    fn welcome(&self, node_id: NodeId, last_lsn: u64, last_epoch: u64) -> Message<'static> {
        Message::PeerWelcome {
            node_id,
            epoch: self.core.epoch(),
            last_lsn,
            last_epoch,
            durable_lsn: last_lsn,
        }
    }
}

impl<S: LogStore> StreamDriver<S> {
    /// The stream's primary `from` of `epoch` greeted this node on `link` (its
    /// `PeerHello`, request `id`). Answering is the promise to refuse older epochs.
    pub fn on_peer_hello(
        &mut self,
        links: &mut impl Links,
        link: LinkId,
        id: RequestId,
        from: NodeId,
        epoch: u64,
    ) -> Handled {
        let node_id = self.node_id;
        let refuse = |links: &mut _, epoch, last_lsn, reason: &'static str| {
            let m = Message::Refuse {
                epoch,
                last_lsn,
                reason,
            };
            send_then_close(links, link, id, &m, reason)
        };
        let s = match &mut self.role {
            Role::Secondary(s) => s,
            Role::Primary(_) => {
                let last = self.log.durable_lsn();
                return refuse(links, self.epoch, last, "this node is the stream's primary");
            }
        };
        if from != self.spec.primary || epoch < s.core.epoch() {
            let reason = "not the configured primary, or an older epoch";
            return refuse(links, s.core.epoch(), s.core.last_lsn(), reason);
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
        let epoch = s.core.epoch();
        let handled = send_or_close(links, link, id, &welcome);
        self.note(Note::Welcomed { epoch });
        handled
    }

    /// A frame from the primary.
    pub(super) fn on_primary_frame(
        &mut self,
        links: &mut impl Links,
        link: LinkId,
        msg: &Message<'_>,
    ) -> Handled {
        let Role::Secondary(s) = &mut self.role else {
            unreachable!("called on a secondary");
        };
        match msg {
            Message::Replicate {
                epoch,
                prev_lsn,
                prev_epoch,
                commit_lsn,
                records,
            } => {
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
                // A frame that no batch of this log can hold would wait for room
                // forever (the primary sends at most `REPLICATE_BYTES_MAX`, or one
                // record, which a batch holds): refused.
                let batch_max = self.log.payload_bytes_max() + record::record_bytes(0);
                if bytes > batch_max {
                    let why = format!(
                        "a Replicate of {bytes} bytes of records (headers included) exceeds \
                         this member's log batch of {batch_max} bytes"
                    );
                    let m = Message::Error {
                        code: ErrorCode::TooLarge,
                        message: &why,
                    };
                    return send_then_close(links, link, RequestId(0), &m, &why);
                }
                if bytes > 0 {
                    match self.log.make_room(bytes) {
                        Ok(true) => {}
                        Ok(false) => return Handled::Later,
                        // The primary dials again: a full disk is retried at that pace.
                        Err(e @ LogError::NoSpace { .. }) => return Handled::Close(e.to_string()),
                        Err(e) => return self.fail(links, e),
                    }
                }
                let verdict = s.core.on_replicate(
                    *epoch,
                    *prev_lsn,
                    *prev_epoch,
                    first,
                    last,
                    last_epoch,
                    *commit_lsn,
                );
                match verdict {
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
                        let epoch = *epoch;
                        self.note(Note::Accepted { epoch, first, last });
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
            Message::Heartbeat { epoch, commit_lsn } => {
                s.core.on_heartbeat(*epoch, *commit_lsn);
                Handled::Done
            }
            Message::Truncate {
                epoch,
                after_lsn: lsn,
                after_epoch: lsn_epoch,
            }
            | Message::Rebase {
                epoch,
                base_lsn: lsn,
                base_epoch: lsn_epoch,
            } => {
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
            other => unexpected(links, link, RequestId(0), other, "peer"),
        }
    }

    /// The secondary's turn: a rebase or a truncation the primary asked for, once the
    /// log is settled, then the ack owed.
    pub(super) fn drive_secondary(&mut self, links: &mut impl Links) {
        if self.log.settled() && !(self.rebase(links) && self.truncate(links)) {
            return;
        }
        let ack_before_durable = self.options.plant == Some(Plant::AckBeforeDurable);
        let Role::Secondary(s) = &mut self.role else {
            unreachable!("called on a secondary");
        };
        if s.ack_due
            && let Some(link) = s.primary_link
        {
            s.ack_due = false;
            let (received_lsn, mut durable_lsn) = s.core.ack();
            if ack_before_durable {
                durable_lsn = received_lsn;
            }
            let ack = Message::Ack {
                epoch: s.core.epoch(),
                received_lsn,
                durable_lsn,
            };
            let _ = links.send(link, RequestId(0), &ack);
        }
    }

    /// Starts the log over after the base the primary asked for, and greets again.
    /// Returns false when the log failed.
    fn rebase(&mut self, links: &mut impl Links) -> bool {
        let Role::Secondary(s) = &mut self.role else {
            return true;
        };
        let Some((epoch, base, base_epoch)) = s.rebase_to.take() else {
            return true;
        };
        let last = self.log.next_lsn() - 1;
        // Asked because this log ended before `base`: a log that reaches it now
        // answers an older greeting and is kept. Otherwise the primary cannot send
        // what follows this log's end, even when the log is a prefix of the primary's
        // (its own epoch's records).
        if last < base {
            self.note(Note::Rebasing {
                epoch,
                base_lsn: base,
                base_epoch,
            });
            if let Err(e) = self.log.reset(base, base_epoch) {
                self.fail(links, e);
                return false;
            }
            self.note(Note::StartedOver {
                from: last + 1,
                base,
            });
            self.restart_core(base, base_epoch);
        }
        self.greet_again(links);
        true
    }

    /// Cuts the tail the primary asked to cut (unless the request is stale), and
    /// greets again. Returns false when the log failed.
    fn truncate(&mut self, links: &mut impl Links) -> bool {
        let Role::Secondary(s) = &mut self.role else {
            return true;
        };
        let Some((epoch, asked, asked_epoch)) = s.truncate_to.take() else {
            return true;
        };
        let last_epoch = self.log.last_epoch().unwrap_or(0);
        if truncation_is_stale(epoch, last_epoch) {
            // The log is a prefix of the asking primary's: keep it all, and greet again.
            let last = self.log.next_lsn() - 1;
            self.note(Note::StaleTruncation {
                epoch,
                last_epoch,
                last,
            });
            self.greet_again(links);
            return true;
        }
        let cut = match self.log.last_lsn_up_to_epoch(asked_epoch) {
            Ok(up_to) => member_cut(asked, up_to),
            Err(e) => {
                self.fail(links, e);
                return false;
            }
        };
        let done = if cut + 1 < self.log.first_lsn() {
            // Below what retention kept here: the log starts over, and the primary
            // sends it what it holds.
            self.log.reset(0, 0)
        } else {
            self.log.truncate_after(cut)
        };
        if let Err(e) = done {
            self.fail(links, e);
            return false;
        }
        let after = self.log.next_lsn() - 1;
        self.note(Note::Truncated { after });
        let last_epoch = self.log.last_epoch().unwrap_or(0);
        self.restart_core(after, last_epoch);
        self.greet_again(links);
        true
    }

    /// The core of a log that was cut: it ends at (`last_epoch`, `last`), all durable.
    fn restart_core(&mut self, last: u64, last_epoch: u64) {
        let Role::Secondary(s) = &mut self.role else {
            unreachable!("a cut keeps the role");
        };
        s.core = Secondary::new(s.core.epoch(), last, last_epoch, s.core.ack_on_receipt());
    }

    /// Greets the primary again with where the settled log ends.
    fn greet_again(&mut self, links: &mut impl Links) {
        let (last, last_epoch) = (self.log.next_lsn() - 1, self.log.last_epoch());
        let node_id = self.node_id;
        let Role::Secondary(s) = &self.role else {
            return;
        };
        if let Some(link) = s.primary_link {
            let welcome = s.welcome(node_id, last, last_epoch.unwrap_or(0));
            let _ = links.send(link, RequestId(0), &welcome);
        }
    }
}
