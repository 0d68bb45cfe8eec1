//! The kinds of faults the simulator injects, and the record of a run's fault schedule.
//!
//! Every injected fault is counted by kind and written into the schedule with its tick,
//! so a failing seed prints what happened to it, and a batch prints how often each kind
//! was exercised (a kind that is never injected tests nothing).

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
