//! `lockstep-sim`: runs the deterministic simulator (see `lockstep::sim`) over seeds.
//!
//! `lockstep-sim --seed S` replays one seed (twice, and says whether both runs gave the
//! same trace) and prints its report; `--seeds N` runs seeds from `--first` on,
//! `--minutes M` runs seeds until the time is up. A batch prints seeds per second and
//! the faults injected by kind, and stops at the first violation with the seed to
//! replay (exit status 1).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use lockstep::sim::{Bug, Fault, Sim, SimOptions, Stats, TICKS_DEFAULT};

#[derive(Clone, Copy, ValueEnum)]
enum Plant {
    /// Members ack what they received as durable.
    AckBeforeDurable,
    /// The primary commits on one ack fewer than the commit rule needs.
    CommitOnKMinusOne,
    /// The controller decides a failover on one fence answer fewer than it needs.
    FenceShort,
    /// The primary's retention deletes above the commit LSN.
    RetainAboveCommit,
    /// The primary's stream driver counts a returning member's acks while the member
    /// still cuts the tail the primary does not have.
    CountAcksWhileTruncating,
    /// Members write received records into their RDMA ack slot as durable.
    AckSlotBeforeDurable,
}

#[derive(Parser)]
#[command(about = "Deterministic simulation of one replicated stream")]
struct Args {
    /// Replay one seed and print its report.
    #[arg(long, conflicts_with_all = ["seeds", "minutes"])]
    seed: Option<u64>,
    /// Run this many seeds.
    #[arg(long)]
    seeds: Option<u64>,
    /// Run seeds for this many minutes (with --seeds: whichever ends first).
    #[arg(long)]
    minutes: Option<f64>,
    /// First seed of a batch.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Ticks per seed.
    #[arg(long, default_value_t = TICKS_DEFAULT)]
    ticks: u64,
    /// Plant a bug in the stream driver, its settings or the controller (checks the
    /// checker).
    #[arg(long, value_enum)]
    plant: Option<Plant>,
    /// Run the cluster's controller (failover, removal and restore of members).
    #[arg(long)]
    controller: bool,
    /// Events of the trace printed before a violation (or the end of a replay).
    #[arg(long, default_value_t = 40)]
    trace_tail: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let opts = SimOptions {
        ticks: args.ticks,
        quiet_ticks: args.ticks * 3 / 10,
        plant: args.plant.map(|p| match p {
            Plant::AckBeforeDurable => Bug::AckBeforeDurable,
            Plant::CommitOnKMinusOne => Bug::CommitOnKMinusOne,
            Plant::FenceShort => Bug::FenceShort,
            Plant::RetainAboveCommit => Bug::RetainAboveCommit,
            Plant::CountAcksWhileTruncating => Bug::CountAcksWhileTruncating,
            Plant::AckSlotBeforeDurable => Bug::AckSlotBeforeDurable,
        }),
        trace_tail: args.trace_tail,
        controller: args.controller.then_some(true),
        ..SimOptions::default()
    };
    if let Some(seed) = args.seed {
        let r = Sim::run_seed(seed, opts.clone());
        let again = Sim::run_seed(seed, opts);
        print!("{r}");
        let same = r.trace_hash == again.trace_hash && r.violation == again.violation;
        println!(
            "trace hash {:016x}; replayed: {:016x} ({})",
            r.trace_hash,
            again.trace_hash,
            if same {
                "same trace"
            } else {
                "DIFFERENT TRACE"
            }
        );
        return if r.violation.is_some() || !same {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    let count = args.seeds.unwrap_or(if args.minutes.is_some() {
        u64::MAX
    } else {
        100
    });
    let deadline = args
        .minutes
        .map(|m| Instant::now() + Duration::from_secs_f64(m * 60.0));
    let start = Instant::now();
    let mut faults = [0u64; Fault::ALL.len()];
    let mut ran = 0u64;
    let mut controlled = 0u64;
    let mut total = Stats::default();
    for seed in args.first..args.first.saturating_add(count) {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let r = Sim::run_seed(seed, opts.clone());
        ran += 1;
        controlled += u64::from(r.controller);
        for (t, n) in faults.iter_mut().zip(r.faults) {
            *t += n;
        }
        let s = r.stats;
        total.committed += s.committed;
        total.resolved_committed += s.resolved_committed;
        total.resolved_lost += s.resolved_lost;
        total.in_doubt += s.in_doubt;
        total.refused += s.refused;
        total.reads += s.reads;
        total.primary_starts += s.primary_starts;
        total.step_downs += s.step_downs;
        if r.violation.is_some() {
            print!("{r}");
            eprintln!("lockstep-sim: violation with seed {seed} (after {ran} seeds)");
            return ExitCode::FAILURE;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{ran} seeds in {secs:.1} s: {:.1} seeds/s; appends: {} committed, {} in doubt resolved committed, {} resolved lost, {} unresolved, {} refused; {} reads; {} primary starts; {} step-downs",
        ran as f64 / secs.max(1e-9),
        total.committed,
        total.resolved_committed,
        total.resolved_lost,
        total.in_doubt,
        total.refused,
        total.reads,
        total.primary_starts,
        total.step_downs
    );
    if ran > 0 {
        println!("seeds {}..={}", args.first, args.first + ran - 1);
    }
    println!("{controlled} of {ran} seeds ran the controller");
    println!("faults injected:");
    for (kind, n) in Fault::ALL.iter().zip(faults) {
        println!("  {kind:?}: {n}");
    }
    ExitCode::SUCCESS
}
