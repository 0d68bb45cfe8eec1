//! Retention that remembers where the log starts, and a log started over after a base
//! record (a member whose primary no longer holds what it lacks).

mod common;

use common::{check_all, fill, ring, small};
use std::sync::Arc;

use lockstep::log::{Faults, Log, LogError, LogOptions};

#[test]
fn retention_keeps_the_newest_segments_and_the_base_records_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let mut ring = ring();
    let mut log = Log::open(dir.path(), small(), 1).unwrap();
    fill(&mut log, &mut ring, 3, 2_000, 16);
    fill(&mut log, &mut ring, 4, 6_000, 16);
    assert!(log.base().is_none());
    // Nothing below `keep_from` = 1 may go.
    assert_eq!(log.retain(1, 0).unwrap(), 1);
    // Everything may go but the newest sealed segment (and the one being written).
    let first = log.retain(u64::MAX, 1).unwrap();
    assert!(first > 1, "nothing deleted");
    let (base, epoch) = log.base().expect("a base record");
    assert_eq!(base + 1, first);
    assert_eq!(epoch, if base <= 2_000 { 3 } else { 4 });
    assert_eq!(log.epoch_at(base).unwrap(), epoch);
    assert!(matches!(
        log.read(base, 1, 0),
        Err(LogError::OutOfRange { .. })
    ));
    check_all(&mut log);
    // Below the base, no epoch is known: nothing of epoch 2 or older is shared.
    assert_eq!(log.last_lsn_up_to_epoch(2).unwrap(), 0);
    drop(log);

    // Reopened, the log starts at the same place and still knows the base's epoch.
    let mut log = Log::open(dir.path(), small(), 1).unwrap();
    assert_eq!(log.first_lsn(), first);
    assert_eq!(log.base(), Some((base, epoch)));
    assert_eq!(log.durable_lsn(), 6_000);
    check_all(&mut log);
    fill(&mut log, &mut ring, 5, 6_100, 16);
    check_all(&mut log);
}

#[test]
fn a_log_started_over_after_a_base_takes_the_next_lsn_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut ring = ring();
    let mut log = Log::open(dir.path(), small(), 1).unwrap();
    fill(&mut log, &mut ring, 2, 500, 8);
    log.reset(40_000, 7).unwrap();
    assert_eq!(log.first_lsn(), 40_001);
    assert_eq!(log.next_lsn(), 40_001);
    assert_eq!(log.durable_lsn(), 40_000);
    assert_eq!(log.last_epoch(), Some(7));
    assert_eq!(log.epoch_at(40_000).unwrap(), 7);
    assert_eq!(log.last_lsn_up_to_epoch(7).unwrap(), 40_000);
    assert_eq!(log.last_lsn_up_to_epoch(6).unwrap(), 0);
    drop(log);

    let mut log = Log::open(dir.path(), small(), 1).unwrap();
    assert_eq!(
        (log.first_lsn(), log.next_lsn(), log.last_epoch()),
        (40_001, 40_001, Some(7))
    );
    fill(&mut log, &mut ring, 8, 40_100, 16);
    assert_eq!(log.last_epoch(), Some(8));
    check_all(&mut log);
    // Cutting back to the base leaves the empty log after it.
    log.truncate_after(40_000).unwrap();
    assert_eq!((log.next_lsn(), log.last_epoch()), (40_001, Some(7)));
    drop(log);
    let log = Log::open(dir.path(), small(), 1).unwrap();
    assert_eq!((log.first_lsn(), log.next_lsn()), (40_001, 40_001));
}

/// A crash after retention stored `BASE` but before it deleted every segment below it:
/// recovery finishes the deletion, so the log still starts right after its base (a log
/// that cannot tell the epoch before its first record made a primary fail the stream
/// at every greeting of a member ending below it).
#[test]
fn retention_cut_short_by_a_crash_is_finished_by_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let mut ring = ring();
    let mut log = Log::open(dir.path(), small(), 1).unwrap();
    fill(&mut log, &mut ring, 3, 4_000, 16);
    let before: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    let first = log.retain(u64::MAX, 1).unwrap();
    let base = log.base().expect("a base record");
    drop(log);
    // The crash came before the deletions reached the disk: the old segments are back.
    let mut restored = 0;
    for (path, bytes) in &before {
        if !path.exists() {
            std::fs::write(path, bytes).unwrap();
            restored += 1;
        }
    }
    assert!(restored > 0, "retention deleted segments");
    let mut log = Log::open(dir.path(), small(), 1).unwrap();
    assert_eq!(log.first_lsn(), first);
    assert_eq!(log.base(), Some(base));
    assert_eq!(log.epoch_at(base.0).unwrap(), base.1);
    check_all(&mut log);
}

/// A crash in the middle of a reset (here one to an earlier start: a member cut below
/// its first record starts over from LSN 1): the segments go newest first, and `BASE`
/// is stored only after the last one, so the log opened afterwards is the old one,
/// shorter, after its old base, or an empty one right after the old base; never a log
/// whose start its base cannot explain.
#[test]
fn a_reset_cut_short_leaves_a_log_after_its_old_base() {
    for stop in [1, 2, 3] {
        let dir = tempfile::tempdir().unwrap();
        let mut ring = ring();
        let faults = Arc::new(Faults::default());
        let opts = LogOptions {
            faults: Some(faults.clone()),
            ..small()
        };
        let mut log = Log::open(dir.path(), opts.clone(), 1).unwrap();
        fill(&mut log, &mut ring, 3, 4_000, 16);
        log.retain(u64::MAX, 2).unwrap();
        let (first, base) = (log.first_lsn(), log.base().expect("a base record"));
        let segments = || {
            std::fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .path()
                        .extension()
                        .is_some_and(|x| x == "log")
                })
                .count()
        };
        assert_eq!(
            segments(),
            3,
            "two sealed segments and the one being written"
        );
        faults.stop_reset_after(stop);
        assert!(log.reset(0, 0).is_err());
        assert!(
            matches!(log.append(3, b"x"), Err(LogError::Failed { .. })),
            "the log stops"
        );
        drop(log);
        assert_eq!(segments(), 3 - stop as usize, "the newest went first");
        let mut log = Log::open(dir.path(), opts, 1).unwrap();
        assert_eq!(log.first_lsn(), first);
        assert_eq!(log.base(), Some(base));
        assert!(log.durable_lsn() < 4_000);
        check_all(&mut log);
    }
}
