//! The deterministic simulator (`lockstep::sim`): a time-bounded batch of seeds,
//! replay, the planted bug caught, and scripted hard cases.

use std::time::{Duration, Instant};

use lockstep::replication::{Outcome, StreamSettings};
use lockstep::sim::{Bug, Fault, Sim, SimOptions};

/// Seeds run for about this long (a debug build).
const BATCH_TIME: Duration = Duration::from_secs(20);

/// A cluster driven by the script alone: no random faults, no random clients.
fn scripted() -> Sim {
    let mut t = Sim::new(
        1,
        SimOptions {
            faults: false,
            workload: false,
            settings: Some(StreamSettings::default()),
            ..SimOptions::default()
        },
    );
    t.run_until(100, |t| t.connected(1) && t.connected(2));
    t
}

trait Script {
    fn run(&mut self, ticks: u64);
    fn run_until(&mut self, max_ticks: u64, done: impl Fn(&Sim) -> bool);
}

impl Script for Sim {
    fn run(&mut self, ticks: u64) {
        for _ in 0..ticks {
            self.step();
            assert_eq!(self.violation(), None);
        }
    }

    fn run_until(&mut self, max_ticks: u64, done: impl Fn(&Sim) -> bool) {
        for _ in 0..max_ticks {
            if done(self) {
                return;
            }
            self.step();
            assert_eq!(self.violation(), None);
        }
        assert!(done(self), "not reached in {max_ticks} ticks");
    }
}

#[test]
fn seeds_hold_the_invariants() {
    let start = Instant::now();
    let mut faults = [0u64; Fault::ALL.len()];
    let (mut seeds, mut committed) = (0u64, 0u64);
    while start.elapsed() < BATCH_TIME {
        let r = Sim::run_seed(seeds, SimOptions::default());
        assert!(r.violation.is_none(), "{r}");
        for (t, n) in faults.iter_mut().zip(r.faults) {
            *t += n;
        }
        committed += r.committed;
        seeds += 1;
    }
    eprintln!(
        "{seeds} seeds in {:.1} s, {committed} requests committed, faults {faults:?}",
        start.elapsed().as_secs_f64()
    );
    assert!(seeds >= 20, "only {seeds} seeds ran");
    assert!(committed > 0);
    for (kind, n) in Fault::ALL.iter().zip(faults) {
        assert!(n > 0, "no {kind:?} fault injected");
    }
}

#[test]
fn same_seed_same_trace() {
    let a = Sim::run_seed(42, SimOptions::default());
    let b = Sim::run_seed(42, SimOptions::default());
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.trace_tail, b.trace_tail);
    assert_eq!(a.schedule, b.schedule);
    assert!(!a.schedule.is_empty(), "the seed injected faults");
    let c = Sim::run_seed(43, SimOptions::default());
    assert_ne!(a.trace_hash, c.trace_hash);
}

#[test]
fn planted_ack_before_durable_is_caught() {
    let opts = SimOptions {
        plant: Some(Bug::AckBeforeDurable),
        ..SimOptions::default()
    };
    let caught = (0..20).find_map(|seed| {
        Sim::run_seed(seed, opts.clone())
            .violation
            .map(|v| (seed, v))
    });
    let (seed, violation) =
        caught.expect("the checker misses acks sent before the write is durable");
    eprintln!("seed {seed}: {violation}");
    // The report replays: the same seed fails the same way.
    let again = Sim::run_seed(seed, opts);
    assert_eq!(again.violation.as_deref(), Some(violation.as_str()));
    assert!(again.to_string().contains(&format!("--seed {seed}")));
}

#[test]
fn member_crashes_after_its_durable_write_before_the_ack() {
    let mut t = scripted();
    let r = t.append(1, 10_000);
    // The tick member 1's write becomes durable, its ack leaves; then it crashes.
    t.run_until(50, |t| t.member_durable(1) >= 1);
    assert!(t.acks_in_flight(1) >= 1);
    t.crash(1, false);
    t.run(200);
    // k = all: member 2 alone cannot commit the record.
    assert_eq!(t.outcome(r), None);
    assert_eq!(t.primary_commit(), 0);
    assert_eq!(
        t.member_durable(1),
        1,
        "the durable write survived the crash"
    );
    // Restarted, member 1 reconnects with its durable LSN: the record commits without
    // the ack that was lost.
    t.restart(1);
    t.run_until(100, |t| t.outcome(r).is_some());
    assert_eq!(t.outcome(r), Some(&Outcome::Committed));
    assert_eq!(t.primary_commit(), 1);
}

#[test]
fn ack_lost_in_the_network() {
    let mut t = scripted();
    let r = t.append(3, 10_000);
    t.run_until(50, |t| t.member_durable(1) >= 3 && t.acks_in_flight(1) > 0);
    assert!(t.lose_acks(1) >= 1);
    assert!(!t.connected(1), "a link that lost data closes");
    assert_eq!(t.outcome(r), None);
    // The next tick reconnects; the handshake carries the durable LSN the ack had.
    t.run_until(100, |t| t.outcome(r).is_some());
    assert_eq!(t.outcome(r), Some(&Outcome::Committed));
    assert!(t.connected(1));
    assert_eq!(t.primary_commit(), 3);
}
