//! What a run reports: its seed and settings, the first violation, the fault schedule,
//! the end of its trace, what the clients saw, and the command that replays it.

use std::fmt;

use crate::sim::faults::FaultCounts;
use crate::sim::{Bug, TICKS_DEFAULT};

/// Counts of what the clients saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Appends acknowledged as committed.
    pub committed: u64,
    /// Appends answered in doubt and resolved by LSN as committed.
    pub resolved_committed: u64,
    /// Appends answered in doubt and resolved by LSN as not committed.
    pub resolved_lost: u64,
    /// Appends in doubt that stayed unresolved (no answer, or never passed by the
    /// commit LSN).
    pub in_doubt: u64,
    /// Appends refused before anything was appended, out of attempts.
    pub refused: u64,
    pub reads: u64,
    /// Primary starts (the first one and every restart).
    pub primary_starts: u64,
    /// Rings that ran on a peer link, and rings that failed (a queue pair in error).
    pub rings: u64,
    pub ring_failures: u64,
    /// Primaries that stepped down on learning of a newer epoch from a member.
    pub step_downs: u64,
}

/// What one seed did.
#[derive(Clone, Debug)]
pub struct Report {
    pub seed: u64,
    pub settings: String,
    pub violation: Option<String>,
    /// Hash of the full trace: the same seed gives the same hash.
    pub trace_hash: u64,
    pub trace_tail: Vec<String>,
    pub schedule: Vec<String>,
    pub faults: FaultCounts,
    pub stats: Stats,
    pub ticks: u64,
    pub plant: Option<Bug>,
    /// The seed ran the cluster's controller.
    pub controller: bool,
    /// The controller was asked for (`--controller`), not decided by the seed.
    pub controller_forced: bool,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed {} ({})", self.seed, self.settings)?;
        if let Some(v) = &self.violation {
            writeln!(f, "VIOLATION: {v}")?;
        }
        writeln!(f, "fault schedule:")?;
        for s in &self.schedule {
            writeln!(f, "  {s}")?;
        }
        writeln!(f, "last events:")?;
        for s in &self.trace_tail {
            writeln!(f, "  {s}")?;
        }
        let s = &self.stats;
        writeln!(
            f,
            "{} committed, {} resolved committed, {} resolved lost, {} in doubt, {} refused, {} reads, {} primary starts, {} step-downs",
            s.committed,
            s.resolved_committed,
            s.resolved_lost,
            s.in_doubt,
            s.refused,
            s.reads,
            s.primary_starts,
            s.step_downs
        )?;
        write!(f, "replay: lockstep-sim --seed {}", self.seed)?;
        if self.ticks != TICKS_DEFAULT {
            write!(f, " --ticks {}", self.ticks)?;
        }
        match self.plant {
            Some(Bug::AckBeforeDurable) => write!(f, " --plant ack-before-durable")?,
            Some(Bug::CommitOnKMinusOne) => write!(f, " --plant commit-on-k-minus-one")?,
            Some(Bug::FenceShort) => write!(f, " --plant fence-short")?,
            Some(Bug::RetainAboveCommit) => write!(f, " --plant retain-above-commit")?,
            Some(Bug::CountAcksWhileTruncating) => {
                write!(f, " --plant count-acks-while-truncating")?
            }
            Some(Bug::AckSlotBeforeDurable) => write!(f, " --plant ack-slot-before-durable")?,
            None => {}
        }
        if self.controller_forced {
            write!(f, " --controller")?;
        }
        writeln!(f)
    }
}
