//! The kinds of faults the simulator injects, and the record of a run's fault schedule.
//!
//! Every injected fault is counted by kind and written into the schedule with its tick,
//! so a failing seed prints what happened to it, and a batch prints how often each kind
//! was exercised (a kind that is never injected tests nothing).

use crate::replication::NodeId;
use crate::sim::Sim;

/// Kinds of injected faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A secondary process crashes (loses what is not durable).
    Crash,
    /// The primary process crashes; it restarts in a new epoch.
    PrimaryCrash,
    /// A node crashes right after a write became durable, before it acts on it (no ack
    /// sent by a member, no commit computed by the primary).
    CrashAfterDurable,
    /// A crash leaves part of the pending write on disk.
    TornWrite,
    /// A dsync write or fsync fails: the node stops and recovers from its log.
    SyncError,
    /// The disk is full for a while (ENOSPC): new records are refused.
    NoSpace,
    /// Writes are slow for a while.
    LatencySpike,
    /// Two groups of nodes cannot reach each other until the partition heals.
    Partition,
    /// One direction between two nodes is cut.
    OneWayPartition,
    Drop,
    Duplicate,
    Reorder,
    /// A bit of a frame flips on the way: the receiver's decoder refuses it and the
    /// connection ends.
    Corrupt,
    /// A frame of an old connection (an older primary incarnation) lands on the current
    /// one.
    LateDelivery,
    /// A node dies in the middle of a cleanup of its log (retention deleting segments,
    /// or a reset starting the log over): after `BASE` is stored and some segments are
    /// deleted.
    CleanupCrash,
}

impl Fault {
    pub const ALL: [Fault; 15] = [
        Fault::Crash,
        Fault::PrimaryCrash,
        Fault::CrashAfterDurable,
        Fault::TornWrite,
        Fault::SyncError,
        Fault::NoSpace,
        Fault::LatencySpike,
        Fault::Partition,
        Fault::OneWayPartition,
        Fault::Drop,
        Fault::Duplicate,
        Fault::Reorder,
        Fault::Corrupt,
        Fault::LateDelivery,
        Fault::CleanupCrash,
    ];

    pub fn index(self) -> usize {
        Fault::ALL
            .iter()
            .position(|&k| k == self)
            .expect("every kind is listed")
    }
}

/// Counts per kind, indexed as [`Fault::ALL`].
pub type FaultCounts = [u64; Fault::ALL.len()];

/// The faults of one run.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    pub counts: FaultCounts,
    /// "t{tick} {kind}: {what}" per injected fault, the first `SCHEDULE_MAX`.
    pub schedule: Vec<String>,
}

/// Schedule lines kept (the counts stay exact).
const SCHEDULE_MAX: usize = 400;

impl Faults {
    pub fn record(&mut self, kind: Fault, now: u64, what: String) {
        self.counts[kind.index()] += 1;
        if self.schedule.len() < SCHEDULE_MAX {
            self.schedule.push(format!("t{now} {kind:?}: {what}"));
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// How often each process and disk fault strikes, per mille per tick, and the
/// network's rates per message. Chosen per seed, so that some seeds are calm and
/// some are storms.
#[derive(Clone, Copy, Debug)]
pub struct Rates {
    pub crash: u64,
    pub primary_crash: u64,
    pub crash_after_durable: u64,
    pub sync_error: u64,
    pub no_space: u64,
    pub latency_spike: u64,
    pub partition: u64,
    pub late_delivery: u64,
    /// Per mille per tick that a node's next log cleanup dies midway (runs with
    /// retention only).
    pub cleanup_crash: u64,
    pub net: crate::sim::network::NetFaults,
}

impl Rates {
    pub fn pick(rng: &mut crate::sim::rng::Rng) -> Rates {
        let storm = rng.range(1, 3);
        Rates {
            crash: 2 * storm,
            primary_crash: storm,
            crash_after_durable: 4,
            sync_error: storm,
            no_space: storm,
            latency_spike: 2 * storm,
            partition: storm + 1,
            late_delivery: 8,
            cleanup_crash: 0,
            net: crate::sim::network::NetFaults {
                drop: 2 * storm,
                duplicate: 5 * storm,
                reorder: 5 * storm,
                corrupt: storm,
            },
        }
    }
}

impl Sim {
    pub(crate) fn inject_faults(&mut self) {
        let n = self.nodes.len();
        let r = self.rates;
        let primary = self.nodes[0].config().primary;
        if self.rng.chance(r.crash) {
            let id = self.rng.index(n) as NodeId;
            if id != primary && self.nodes[id as usize].up() {
                let torn = self.rng.chance(500) && self.nodes[id as usize].disk().pending() > 0;
                let kind = if torn { Fault::TornWrite } else { Fault::Crash };
                self.fault(kind, format!("n{id} crashes"));
                self.crash(id, torn);
                self.nodes[id as usize].restart_at = Some(self.now + self.rng.range(10, 400));
            }
        }
        if self.rng.chance(r.primary_crash) && self.nodes[primary as usize].up() {
            let torn = self.rng.chance(500);
            self.fault(
                Fault::PrimaryCrash,
                format!("n{primary} (primary) crashes, torn {torn}"),
            );
            self.crash(primary, torn);
            self.nodes[primary as usize].restart_at = Some(self.now + self.rng.range(5, 300));
        }
        if self.rng.chance(r.sync_error) {
            let id = self.rng.index(n);
            if self.nodes[id].up() && !self.nodes[id].disk().fail_next_write {
                self.fault(Fault::SyncError, format!("n{id}'s next write fails"));
                self.nodes[id].disk_mut().fail_next_write = true;
            }
        }
        if self.rng.chance(r.no_space) {
            let id = self.rng.index(n);
            let until = self.now + self.rng.range(20, 200);
            self.fault(
                Fault::NoSpace,
                format!("n{id}'s disk is full until t{until}"),
            );
            self.nodes[id].disk_mut().full_until = until;
        }
        if self.rng.chance(r.latency_spike) {
            let id = self.rng.index(n);
            let until = self.now + self.rng.range(50, 300);
            self.fault(
                Fault::LatencySpike,
                format!("n{id}'s writes are slow until t{until}"),
            );
            self.nodes[id].disk_mut().slow_until = until;
        }
        if self.rng.chance(r.partition) {
            let until = self.now + self.rng.range(20, 400);
            let a = self.rng.index(n) as NodeId;
            if self.rng.chance(500) {
                self.fault(Fault::Partition, format!("n{a} cut off until t{until}"));
                for b in 0..n as NodeId {
                    if b != a {
                        self.net.block(a, b, until);
                        self.net.block(b, a, until);
                    }
                }
            } else {
                let b = (a + 1 + self.rng.index(n - 1) as NodeId) % n as NodeId;
                self.fault(
                    Fault::OneWayPartition,
                    format!("n{a}->n{b} cut until t{until}"),
                );
                self.net.block(a, b, until);
            }
            self.notify_closed();
        }
        if self.rng.chance(r.late_delivery)
            && let Some(what) = self.net.late_delivery(self.now, &mut self.rng)
        {
            self.fault(Fault::LateDelivery, what);
        }
        // Drawn only in runs with retention, so that the others run as before.
        if r.cleanup_crash > 0 && self.rng.chance(r.cleanup_crash) {
            let id = self.rng.index(n);
            let after = self.rng.range(0, 2) as usize;
            if self.nodes[id].up() && self.nodes[id].disk().cleanup_crash.is_none() {
                self.fault(
                    Fault::CleanupCrash,
                    format!("n{id}'s next log cleanup dies after {after} segment deletions"),
                );
                self.nodes[id].disk_mut().cleanup_crash = Some(after);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_kind() {
        let mut f = Faults::default();
        f.record(Fault::Drop, 3, "x".into());
        f.record(Fault::Drop, 4, "y".into());
        f.record(Fault::LateDelivery, 5, "z".into());
        assert_eq!(f.counts[Fault::Drop.index()], 2);
        assert_eq!(f.counts[Fault::LateDelivery.index()], 1);
        assert_eq!(f.total(), 3);
        assert_eq!(f.schedule[0], "t3 Drop: x");
    }
}
