//! Load on a pool of connections, one thread per connection, each connection committing
//! one record at a time: closed-loop (every connection commits again as soon as its
//! previous commit returned) or open-loop (commits are due at a fixed rate, whatever
//! the system's answers).
//!
//! This is how a user drives a database that answers one statement per connection at a
//! time (PostgreSQL, MariaDB, etcd's HTTP gateway): N outstanding commits are N
//! connections. The same drivers run lockstep's own client, one append at a time per
//! connection, so the one-client series of every system is measured by the same code.
//!
//! Open loop and coordinated omission: commit `i` is due at `start + i ÷ rate`. A free
//! connection takes the next due commit, sleeps until it is due (if it is not overdue
//! already) and sends it; its latency runs from the moment it was *due*, not from the
//! moment it was sent. When every connection is busy, the commits that fall due wait,
//! and that wait is counted: a stalled system cannot hide its stall by slowing the
//! arrivals, which a closed loop (and a latency measured from the send) would let it do.
//!
//! Warm-up: only commits sent (closed loop) or due (open loop) after the warm-up are
//! recorded; commits/s counts completions within the measured window. When the window
//! ends no new commit starts; what is outstanding is finished, so the next series starts
//! idle. Every thread's histogram is merged into one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::Error;
use crate::stats::{self, Sample, Window};

/// One connection of a system under test: commits one record durably, the way the
/// system's users would.
pub trait Conn: Send {
    fn commit(&mut self, payload: &[u8]) -> Result<(), Error>;
}

impl<C: Conn + ?Sized> Conn for Box<C> {
    fn commit(&mut self, payload: &[u8]) -> Result<(), Error> {
        (**self).commit(payload)
    }
}

/// What a series measured: the summary and the merged histogram (ns) behind it.
pub struct Measured {
    pub sample: Sample,
    pub hist: Histogram<u64>,
}

impl Measured {
    /// Merges per-thread histograms and counts into one result.
    pub fn merge(parts: Vec<(Histogram<u64>, u64)>, measured: Duration) -> Result<Self, Error> {
        let mut hist = stats::latency_histogram();
        let mut commits = 0;
        for (h, n) in &parts {
            hist.add(h)
                .map_err(|e| format!("merge histograms: {e:?}"))?;
            commits += n;
        }
        if hist.is_empty() {
            return Err(format!("no commit completed within the {measured:?} window").into());
        }
        Ok(Measured {
            sample: Sample::new(&hist, commits, measured),
            hist,
        })
    }
}

/// How a series arrives.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub enum Arrival {
    /// Every connection commits again as soon as its previous commit returned.
    Closed,
    /// Commits are due at `rate_per_s`, spread over the connections.
    Open { rate_per_s: f64 },
}

/// Runs the first `connections` of `conns`, each in its own thread.
pub fn run<C: Conn>(
    conns: &mut [C],
    connections: usize,
    arrival: Arrival,
    payload: &[u8],
    window: Window,
) -> Result<Measured, Error> {
    assert!(connections >= 1);
    assert!(conns.len() >= connections);
    let start = Instant::now();
    let warm_end = start + window.warm_up;
    let stop = warm_end + window.measure;
    let next_due = AtomicU64::new(0);
    let clock = Clock {
        start,
        warm_end,
        stop,
        arrival,
        next_due: &next_due,
    };
    let parts = std::thread::scope(|s| {
        let handles: Vec<_> = conns[..connections]
            .iter_mut()
            .map(|c| {
                let clock = &clock;
                std::thread::Builder::new()
                    .name("bench-conn".into())
                    .spawn_scoped(s, move || drive(c, payload, clock))
            })
            .collect::<Result<_, _>>()
            .map_err(|e| format!("start a connection thread: {e}"))?;
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a connection thread panicked".into()))
            })
            .collect::<Result<Vec<_>, Error>>()
    })?;
    Measured::merge(parts, window.measure)
}

/// The series' schedule, shared by its threads.
struct Clock<'a> {
    start: Instant,
    warm_end: Instant,
    stop: Instant,
    arrival: Arrival,
    next_due: &'a AtomicU64,
}

impl Clock<'_> {
    /// When the next commit of this thread is due (open loop: the next free slot of the
    /// schedule; closed loop: now). `None` once the window is over.
    fn next(&self) -> Option<Instant> {
        let due = match self.arrival {
            Arrival::Closed => Instant::now(),
            Arrival::Open { rate_per_s } => {
                let i = self.next_due.fetch_add(1, Ordering::Relaxed);
                self.start + Duration::from_secs_f64(i as f64 / rate_per_s)
            }
        };
        (due < self.stop).then_some(due)
    }
}

/// One connection's loop.
fn drive<C: Conn>(
    conn: &mut C,
    payload: &[u8],
    clock: &Clock<'_>,
) -> Result<(Histogram<u64>, u64), Error> {
    let mut hist = stats::latency_histogram();
    let mut in_window = 0;
    while let Some(due) = clock.next() {
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        conn.commit(payload)?;
        let done = Instant::now();
        if due >= clock.warm_end {
            stats::record(&mut hist, done - due);
        }
        if done >= clock.warm_end && done <= clock.stop {
            in_window += 1;
        }
    }
    Ok((hist, in_window))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection whose commit takes a fixed time, as a stalled system would.
    struct Slow(Duration, u64);

    impl Conn for Slow {
        fn commit(&mut self, _: &[u8]) -> Result<(), Error> {
            std::thread::sleep(self.0);
            self.1 += 1;
            Ok(())
        }
    }

    #[test]
    fn open_loop_counts_the_wait_of_overdue_commits() {
        // One connection, 5 ms per commit, commits due every 1 ms: the backlog grows by
        // 4 ms per commit, and the latencies measured from the due time show it. A
        // latency from the send would stay at 5 ms.
        let window = Window {
            warm_up: Duration::ZERO,
            measure: Duration::from_millis(100),
        };
        let mut conns = vec![Slow(Duration::from_millis(5), 0)];
        let m = run(
            &mut conns,
            1,
            Arrival::Open { rate_per_s: 1000.0 },
            b"x",
            window,
        )
        .unwrap();
        assert!(m.sample.p99_us > 30_000.0, "p99 {} µs", m.sample.p99_us);
        assert!(
            m.sample.p50_us > 5_000.0 * 2.0,
            "p50 {} µs",
            m.sample.p50_us
        );
        // It sends only what falls due within the window, then drains.
        assert!(conns[0].1 <= 100, "{} commits", conns[0].1);
    }

    #[test]
    fn closed_loop_latency_is_the_commit_time_and_threads_add_up() {
        let window = Window {
            warm_up: Duration::from_millis(10),
            measure: Duration::from_millis(100),
        };
        let mut conns: Vec<Slow> = (0..4).map(|_| Slow(Duration::from_millis(2), 0)).collect();
        let m = run(&mut conns, 3, Arrival::Closed, b"x", window).unwrap();
        assert!(m.sample.p50_us >= 2_000.0 && m.sample.p50_us < 10_000.0);
        // Three connections at ≤ 500 commits/s each.
        assert!(
            m.sample.per_s > 400.0 && m.sample.per_s <= 1_550.0,
            "{}",
            m.sample.per_s
        );
        assert_eq!(conns[3].1, 0, "the fourth connection was not used");
    }
}
