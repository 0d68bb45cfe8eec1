//! The fault control of a proxy: the faults that exist, the counters, and the cheap
//! handle that changes the one and reads the other from any thread.
//!
//! A change applies at once to every connection, including bytes already held: after
//! changing the faults the handle wakes every connection's writers, which judge the
//! head of their queue by the faults current at that moment.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Shared, lock};

/// One direction of a proxied connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to upstream.
    Forward,
    /// Upstream to client.
    Backward,
}

impl Direction {
    /// Both directions, forward first.
    pub const BOTH: [Direction; 2] = [Direction::Forward, Direction::Backward];

    pub(super) fn index(self) -> usize {
        match self {
            Direction::Forward => 0,
            Direction::Backward => 1,
        }
    }
}

/// The faults of one direction. The default is pass. Faults combine: a direction can
/// be both delayed and lossy; a blackhole holds bytes regardless of the delay.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DirectionFaults {
    /// Every chunk is held at least this long after it was read.
    pub delay_ms: u64,
    /// Each chunk is held up to this much longer, chosen at random per chunk.
    pub jitter_ms: u64,
    /// Bytes are read and held, not delivered, until this is lifted.
    pub blackhole: bool,
    /// Probability, from 0.0 to 1.0, that a chunk read cuts the connection.
    pub drop_probability: f64,
}

impl DirectionFaults {
    /// Whether this direction passes bytes without any fault.
    pub fn is_pass(&self) -> bool {
        *self == DirectionFaults::default()
    }
}

/// All faults of a proxy.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// Faults of each direction, indexed forward then backward.
    pub directions: [DirectionFaults; 2],
    /// New connections are accepted and closed at once.
    pub refuse_new: bool,
}

impl Faults {
    /// The faults of one direction.
    pub fn direction(&self, direction: Direction) -> DirectionFaults {
        self.directions[direction.index()]
    }
}

/// Counters of a proxy since it started, for tests to assert on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Bytes released to the upstream. A chunk is counted just before it is written,
    /// so a write cut short by a breaking connection counts in full.
    pub forward_bytes: u64,
    /// Bytes released to clients, counted as `forward_bytes` is.
    pub backward_bytes: u64,
    /// Connections accepted and connected to the upstream.
    pub connections_accepted: u64,
    /// Connections closed at accept time (refuse, or too many connections).
    pub connections_refused: u64,
    /// Connections cut by a fault: `reset_all`, `refuse`, or a drop.
    pub connections_cut: u64,
    /// Accepted connections closed because the upstream could not be reached.
    pub upstream_failures: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Bytes held now (delayed or withheld), over all connections and directions.
    pub held_bytes: u64,
}

/// A cheap handle that changes the faults of one proxy and reads its counters. Clone
/// it freely and use it from any thread.
#[derive(Clone)]
pub struct FaultControl {
    pub(super) shared: Arc<Shared>,
}

impl FaultControl {
    /// The current faults.
    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    /// Replaces every fault at once.
    pub fn set_faults(&self, faults: Faults) {
        self.update(|f| *f = faults);
    }

    /// Replaces the faults of one direction.
    pub fn set(&self, direction: Direction, faults: DirectionFaults) {
        self.update(|f| f.directions[direction.index()] = faults);
    }

    /// Lifts every fault of one direction; bytes it withheld are delivered.
    pub fn pass(&self, direction: Direction) {
        self.set(direction, DirectionFaults::default());
    }

    /// Holds each chunk of one direction `delay_ms` plus up to `jitter_ms` after it was
    /// read, in order.
    pub fn delay(&self, direction: Direction, delay_ms: u64, jitter_ms: u64) {
        self.update(|f| {
            let d = &mut f.directions[direction.index()];
            d.delay_ms = delay_ms;
            d.jitter_ms = jitter_ms;
        });
    }

    /// Withholds the bytes of one direction; the other keeps flowing.
    pub fn blackhole(&self, direction: Direction) {
        self.update(|f| f.directions[direction.index()].blackhole = true);
    }

    /// Cuts a connection with `probability` for each chunk read in one direction.
    ///
    /// # Panics
    ///
    /// If `probability` is not within 0.0..=1.0 (a programmer error).
    pub fn drop_connections(&self, direction: Direction, probability: f64) {
        assert!(
            (0.0..=1.0).contains(&probability),
            "drop probability {probability}"
        );
        self.update(|f| f.directions[direction.index()].drop_probability = probability);
    }

    /// Closes new connections at accept time (or stops doing so). Current connections
    /// are left alone.
    pub fn set_refuse_new(&self, refuse: bool) {
        self.update(|f| f.refuse_new = refuse);
    }

    /// Refuses new connections and cuts every current one: the node behind the proxy
    /// looks unreachable until [`heal`](Self::heal).
    pub fn refuse(&self) {
        self.set_refuse_new(true);
        self.reset_all();
    }

    /// A full partition: both directions blackholed and new connections refused.
    /// Current connections stay open, their bytes held until a heal or a reset.
    pub fn partition(&self) {
        self.update(|f| {
            for d in &mut f.directions {
                d.blackhole = true;
            }
            f.refuse_new = true;
        });
    }

    /// Lifts every fault. Withheld and delayed bytes are delivered, in order.
    pub fn heal(&self) {
        self.set_faults(Faults::default());
    }

    /// Cuts every current connection; faults are unchanged. Returns how many this call
    /// cut; a connection that was being admitted at the same moment is cut too, by the
    /// accept thread, and counted in [`ProxyStats::connections_cut`] only.
    pub fn reset_all(&self) -> usize {
        self.shared.reset_generation.fetch_add(1, Ordering::SeqCst);
        let mut cut = 0;
        for conn in self.shared.conns() {
            if conn.close(&self.shared, true) {
                cut += 1;
            }
        }
        cut
    }

    /// The counters now.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counters;
        let conns = self.shared.conns();
        let open = conns.iter().filter(|conn| !conn.is_closed()).count();
        ProxyStats {
            forward_bytes: c.bytes[0].load(Ordering::Relaxed),
            backward_bytes: c.bytes[1].load(Ordering::Relaxed),
            connections_accepted: c.connections_accepted.load(Ordering::Relaxed),
            connections_refused: c.connections_refused.load(Ordering::Relaxed),
            connections_cut: c.connections_cut.load(Ordering::Relaxed),
            upstream_failures: c.upstream_failures.load(Ordering::Relaxed),
            connections_open: open as u64,
            held_bytes: conns.iter().map(|conn| conn.held_bytes()).sum(),
        }
    }

    /// Changes the faults, then wakes every connection so that held bytes are judged
    /// by the new faults at once.
    fn update(&self, change: impl FnOnce(&mut Faults)) {
        {
            let mut faults = lock(&self.shared.faults);
            change(&mut faults);
            for d in &faults.directions {
                assert!((0.0..=1.0).contains(&d.drop_probability));
            }
        }
        for conn in self.shared.conns() {
            conn.wake();
        }
    }
}
