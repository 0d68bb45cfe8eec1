//! `lockstep-sim`: runs the deterministic simulator (see `lockstep::sim`) over seeds.
//!
//! `lockstep-sim --seed S` replays one seed and prints its report; `--seeds N` runs
//! seeds 0..N (or from `--first`), `--minutes M` runs seeds until the time is up. Prints
//! seeds per second and the faults injected by kind; exits 1 on a violation, with the
//! seed to replay.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use lockstep::sim::{Bug, Fault, Sim, SimOptions};

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
    #[arg(long, default_value_t = 3_000)]
    ticks: u64,
    /// Plant the ack-before-durable bug in the simulated members (checks the checker).
    #[arg(long)]
    plant_ack_before_durable: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let opts = SimOptions {
        ticks: args.ticks,
        quiet_ticks: args.ticks / 3,
        plant: args
            .plant_ack_before_durable
            .then_some(Bug::AckBeforeDurable),
        ..SimOptions::default()
    };
    if let Some(seed) = args.seed {
        let r = Sim::run_seed(seed, opts);
        print!("{r}");
        println!(
            "trace hash {:016x}, {} committed, {} in doubt",
            r.trace_hash, r.committed, r.in_doubt
        );
        return if r.violation.is_some() {
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
    let mut committed = 0u64;
    for seed in args.first..args.first.saturating_add(count) {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let r = Sim::run_seed(seed, opts.clone());
        ran += 1;
        committed += r.committed;
        for (t, n) in faults.iter_mut().zip(r.faults) {
            *t += n;
        }
        if r.violation.is_some() {
            print!("{r}");
            eprintln!("lockstep-sim: violation with seed {seed}");
            return ExitCode::FAILURE;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{ran} seeds in {secs:.1} s: {:.1} seeds/s, {committed} requests committed",
        ran as f64 / secs.max(1e-9)
    );
    for (kind, n) in Fault::ALL.iter().zip(faults) {
        println!("  {kind:?}: {n}");
    }
    ExitCode::SUCCESS
}
