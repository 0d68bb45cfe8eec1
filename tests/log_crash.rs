//! Crash test: a child process appends under load and is killed with SIGKILL at random
//! moments, many times. After each kill, every append the child reported durable must
//! be present and intact, and the log must accept appends again.
//!
//! The child is this test binary itself, running the ignored test `child_writer` with
//! `LOCKSTEP_CRASH_DIR` set. It reports `D <lsn>` on stdout only after the log said the
//! record is durable, which is exactly when lockstep would acknowledge a commit.
//!
//! A process kill does not lose what the kernel already accepted (unlike a power cut:
//! the deterministic simulator covers lost unsynced writes), but it does stop the writer
//! at any point: mid-batch, mid-rollover, while a segment is being prepared, during
//! recovery itself. The kernel finishes or cancels a dead process's io_uring requests
//! before the process is reaped, so the restarted writer never races its predecessor.
//!
//! Rounds: `LOCKSTEP_CRASH_ROUNDS` (default 40). The seed of the kill schedule is printed
//! and can be fixed with `LOCKSTEP_CRASH_SEED`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use lockstep::log::{Log, LogError};

const ENV_DIR: &str = "LOCKSTEP_CRASH_DIR";

#[test]
#[ignore = "child process of sigkill_at_random_moments"]
fn child_writer() {
    let Some(dir) = std::env::var_os(ENV_DIR) else {
        return;
    };
    let mut ring = ring();
    let mut log = Log::open(std::path::Path::new(&dir), small(), 1).expect("open");
    let out = std::io::stdout();
    let mut out = out.lock();
    writeln!(out, "O {}", log.durable_lsn()).unwrap();
    out.flush().unwrap();
    let mut done = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    // Bounded by the deadline: the parent kills the child long before it.
    while Instant::now() < deadline {
        // Up to 32 appends join the batch while a write is in flight.
        for _ in 0..32 {
            let lsn = log.next_lsn();
            match log.append(1, &payload(lsn)) {
                Ok(_) => {}
                Err(LogError::Full) => break,
                Err(e) => panic!("append: {e}"),
            }
        }
        log.flush(&mut ring).expect("flush");
        ring.submit_and_wait(1).expect("wait");
        ring.reap(&mut done);
        for c in done.drain(..) {
            let durable = log.complete(c).expect("durable write");
            writeln!(out, "D {durable}").unwrap();
        }
        out.flush().unwrap();
    }
}

#[test]
fn sigkill_at_random_moments() {
    let rounds: u32 = std::env::var("LOCKSTEP_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let seed: u64 = std::env::var("LOCKSTEP_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("crash test: {rounds} rounds, LOCKSTEP_CRASH_SEED={seed}");
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked_max = 0u64;
    let mut kills_mid_write = 0;
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args([
                "child_writer",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut opened = None;
            let mut acked = 0u64;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut parts = line.split(' ');
                match (
                    parts.next(),
                    parts.next().and_then(|v| v.parse::<u64>().ok()),
                ) {
                    (Some("O"), Some(v)) => opened = Some(v),
                    (Some("D"), Some(v)) => acked = acked.max(v),
                    _ => {}
                }
            }
            (opened, acked)
        });
        // Kill anywhere from during recovery to well into steady appends.
        let delay = Duration::from_micros(next() % 120_000);
        std::thread::sleep(delay);
        child.kill().unwrap();
        let status = child.wait().unwrap();
        let (opened, acked) = reader.join().unwrap();
        if status.success() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            panic!("round {round}: the child exited by itself: {err}");
        }
        if let Some(recovered) = opened {
            // What the child found at open holds everything acknowledged before.
            assert!(
                recovered >= acked_max,
                "round {round} (seed {seed}): child recovered to {recovered}, {acked_max} was acknowledged"
            );
        }
        if acked > acked_max {
            kills_mid_write += 1;
        }
        acked_max = acked_max.max(acked);

        let mut log = Log::open(dir.path(), small(), 1)
            .unwrap_or_else(|e| panic!("round {round} (seed {seed}): {e}"));
        assert!(
            log.durable_lsn() >= acked_max,
            "round {round} (seed {seed}): durable {} < acknowledged {acked_max}",
            log.durable_lsn()
        );
        check_all(&mut log);
        // The log accepts appends again.
        let mut ring = ring();
        let lsn = log.next_lsn();
        assert_eq!(log.append(1, &payload(lsn)).unwrap(), lsn);
        assert_eq!(log.sync(&mut ring).unwrap(), lsn);
        acked_max = lsn;
    }
    eprintln!(
        "crash test: {acked_max} records, {kills_mid_write} of {rounds} kills came after the child had acknowledged appends"
    );
    assert!(
        kills_mid_write >= rounds / 2,
        "too few kills landed under load: {kills_mid_write}"
    );
    let segs = segments(dir.path()).len();
    assert!(
        segs >= 2,
        "the run never rolled over to a new segment ({segs})"
    );
}
