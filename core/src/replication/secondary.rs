//! A secondary of one stream, as a state machine: checks what the primary sends before
//! any of it reaches the log, and says when to ack.
//!
//! Checks, in order: the sender's epoch is not older than the newest epoch this
//! secondary has seen; the records continue this secondary's log (no gap); records it
//! already has are skipped (a primary resends from the durable LSN after a reconnect);
//! the previous record's epoch matches (the logs share that prefix).
//!
//! Invariant: what a secondary reports as readable committed is never beyond its own
//! durable LSN nor beyond the commit LSN the primary told it.

/// What to do with a batch of replicated records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Append the records `first..=last` to the local log: the first `skip` records of
    /// the batch are already there.
    Append { skip: usize, first: u64, last: u64 },
    /// Everything in the batch is already here: just ack.
    Duplicate,
    /// Refused; the primary learns where this log ends.
    Refuse { reason: &'static str, last_lsn: u64 },
}

/// One stream's secondary. See the module docs.
#[derive(Clone, Debug)]
pub struct Secondary {
    epoch: u64,
    last_lsn: u64,
    last_epoch: u64,
    durable_lsn: u64,
    commit_lsn: u64,
    ack_on_receipt: bool,
}

impl Secondary {
    /// A secondary whose log ends at `last_lsn` (written in `last_epoch`), all of it
    /// durable. `ack_on_receipt` is the semi mode: ack before the local write.
    pub fn new(epoch: u64, last_lsn: u64, last_epoch: u64, ack_on_receipt: bool) -> Secondary {
        Secondary {
            epoch,
            last_lsn,
            last_epoch,
            durable_lsn: last_lsn,
            commit_lsn: 0,
            ack_on_receipt,
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Only `durable` of the log is durable yet (a write is in flight); the rest
    /// becomes durable through [`Secondary::on_local_durable`].
    pub fn set_durable(&mut self, durable: u64) {
        assert!(durable <= self.last_lsn);
        self.durable_lsn = durable;
    }

    /// This node answered a fence for `epoch` (after storing it durably): records of
    /// older epochs are refused from now on.
    pub fn fence(&mut self, epoch: u64) {
        self.epoch = self.epoch.max(epoch);
    }

    pub fn last_lsn(&self) -> u64 {
        self.last_lsn
    }

    pub fn last_epoch(&self) -> u64 {
        self.last_epoch
    }

    pub fn durable_lsn(&self) -> u64 {
        self.durable_lsn
    }

    pub fn ack_on_receipt(&self) -> bool {
        self.ack_on_receipt
    }

    /// Highest LSN a reader may see here as committed.
    pub fn readable_commit(&self) -> u64 {
        self.commit_lsn.min(self.durable_lsn)
    }

    /// The cumulative ack: (received, durable).
    pub fn ack(&self) -> (u64, u64) {
        (self.last_lsn, self.durable_lsn)
    }

    /// Judges a batch `first..=last` sent in `epoch`, following the record at `prev_lsn`
    /// (written in `prev_epoch`), whose last record was written in `last_epoch`.
    #[allow(clippy::too_many_arguments)]
    pub fn on_replicate(
        &mut self,
        epoch: u64,
        prev_lsn: u64,
        prev_epoch: u64,
        first: u64,
        last: u64,
        last_epoch: u64,
        commit_lsn: u64,
    ) -> Verdict {
        assert_eq!(
            first,
            prev_lsn + 1,
            "the codec checks that batches are contiguous"
        );
        assert!(last >= first);
        if epoch < self.epoch {
            return Verdict::Refuse {
                reason: "sender's epoch is older than this node's",
                last_lsn: self.last_lsn,
            };
        }
        if prev_lsn > self.last_lsn {
            return Verdict::Refuse {
                reason: "gap: records before the batch are missing",
                last_lsn: self.last_lsn,
            };
        }
        if prev_lsn == self.last_lsn && prev_lsn > 0 && prev_epoch != self.last_epoch {
            return Verdict::Refuse {
                reason: "logs diverge at the previous record",
                last_lsn: self.last_lsn,
            };
        }
        self.epoch = epoch;
        self.commit_lsn = self.commit_lsn.max(commit_lsn);
        if last <= self.last_lsn {
            return Verdict::Duplicate;
        }
        let skip = (self.last_lsn + 1 - first) as usize;
        let from = self.last_lsn + 1;
        self.last_lsn = last;
        self.last_epoch = last_epoch;
        Verdict::Append {
            skip,
            first: from,
            last,
        }
    }

    /// The primary's commit LSN, from a heartbeat. Older epochs are ignored.
    pub fn on_heartbeat(&mut self, epoch: u64, commit_lsn: u64) {
        if epoch >= self.epoch {
            self.epoch = epoch;
            self.commit_lsn = self.commit_lsn.max(commit_lsn);
        }
    }

    /// The local log is durable up to `lsn`.
    pub fn on_local_durable(&mut self, lsn: u64) {
        assert!(lsn <= self.last_lsn);
        self.durable_lsn = self.durable_lsn.max(lsn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let mut s = Secondary::new(2, 10, 2, false);
        // (epoch, prev, prev_epoch, first, last, commit) -> verdict
        assert_eq!(
            s.on_replicate(2, 10, 2, 11, 15, 2, 9),
            Verdict::Append {
                skip: 0,
                first: 11,
                last: 15
            }
        );
        assert_eq!(s.ack(), (15, 10));
        // A resend after a reconnect overlaps: only the new part is appended.
        assert_eq!(
            s.on_replicate(2, 12, 2, 13, 18, 2, 9),
            Verdict::Append {
                skip: 3,
                first: 16,
                last: 18
            }
        );
        assert_eq!(s.on_replicate(2, 12, 2, 13, 14, 2, 9), Verdict::Duplicate);
        // A gap is refused with where this log ends.
        assert_eq!(
            s.on_replicate(2, 20, 2, 21, 22, 2, 9),
            Verdict::Refuse {
                reason: "gap: records before the batch are missing",
                last_lsn: 18
            }
        );
        // An older epoch is refused; a newer one is adopted.
        assert!(matches!(
            s.on_replicate(1, 18, 2, 19, 19, 1, 9),
            Verdict::Refuse { .. }
        ));
        assert!(matches!(
            s.on_replicate(3, 18, 1, 19, 19, 3, 9),
            Verdict::Refuse {
                reason: "logs diverge at the previous record",
                ..
            }
        ));
        assert_eq!(
            s.on_replicate(3, 18, 2, 19, 19, 3, 9),
            Verdict::Append {
                skip: 0,
                first: 19,
                last: 19
            }
        );
        assert_eq!(s.epoch(), 3);
        assert!(matches!(
            s.on_replicate(2, 19, 3, 20, 20, 2, 9),
            Verdict::Refuse { .. }
        ));
    }

    #[test]
    fn readable_commit_never_passes_local_durability() {
        let mut s = Secondary::new(1, 0, 0, true);
        assert!(matches!(
            s.on_replicate(1, 0, 0, 1, 10, 1, 8),
            Verdict::Append { .. }
        ));
        assert_eq!(s.readable_commit(), 0);
        s.on_local_durable(5);
        assert_eq!(s.readable_commit(), 5);
        s.on_local_durable(10);
        assert_eq!(s.readable_commit(), 8);
        s.on_heartbeat(1, 10);
        assert_eq!(s.readable_commit(), 10);
        s.on_heartbeat(0, 100);
        assert_eq!(s.readable_commit(), 10);
    }
}
