//! Recovery at open: a torn or partial tail is cut and reported; damage anywhere else is
//! corruption, reported with file and offset, and never skipped.

mod common;

use common::*;
use lockstep::log::{Log, LogError};

/// A log of 3006 records over at least two segments, the last six in one batch, closed
/// cleanly.
fn written(dir: &std::path::Path) {
    let mut ring = ring();
    let mut log = Log::open(dir, small(), 1).unwrap();
    fill(&mut log, &mut ring, 1, 3000, 7);
    for lsn in 3001..=3006 {
        assert_eq!(log.append(1, &payload(lsn)).unwrap(), lsn);
    }
    assert_eq!(log.sync(&mut ring).unwrap(), 3006);
    assert!(segments(dir).len() >= 2);
}

fn tail(dir: &std::path::Path) -> (std::path::PathBuf, Vec<(u64, u64, bool)>) {
    let (first, path) = segments(dir).pop().unwrap();
    let recs = offsets(&path, first);
    (path, recs)
}

fn reopen_and_continue(dir: &std::path::Path, expect_durable: u64) {
    let mut ring = ring();
    let mut log = Log::open(dir, small(), 1).unwrap();
    assert_eq!(log.durable_lsn(), expect_durable);
    check_all(&mut log);
    // The log accepts appends again, and they survive another reopen.
    fill(&mut log, &mut ring, 1, expect_durable + 20, 3);
    drop(log);
    let mut log = Log::open(dir, small(), 1).unwrap();
    assert_eq!(log.durable_lsn(), expect_durable + 20);
    assert!(
        log.recovery().notes.is_empty(),
        "{:?}",
        log.recovery().notes
    );
    check_all(&mut log);
}

#[test]
fn partially_written_last_record_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    written(dir.path());
    let (path, recs) = tail(dir.path());
    let &(last, off, _) = recs.last().unwrap();
    // The last record's second half never reached the disk.
    let mut d = std::fs::read(&path).unwrap();
    let len = 32 + payload(last).len() as u64;
    d[(off + len / 2) as usize..(off + len) as usize].fill(0);
    std::fs::write(&path, &d).unwrap();
    let log = Log::open(dir.path(), small(), 1).unwrap();
    let notes = log.recovery().notes.join("\n");
    assert!(
        notes.contains("cut torn tail") && notes.contains(&format!("offset {off}")),
        "{notes}"
    );
    drop(log);
    reopen_and_continue(dir.path(), last - 1);
}

#[test]
fn truncated_segment_file_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    written(dir.path());
    let (path, recs) = tail(dir.path());
    let &(last, off, _) = recs.last().unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(off + 20).unwrap();
    drop(f);
    let log = Log::open(dir.path(), small(), 1).unwrap();
    assert!(
        log.recovery()
            .notes
            .iter()
            .any(|n| n.contains("cut torn tail"))
    );
    drop(log);
    reopen_and_continue(dir.path(), last - 1);
}

#[test]
fn flipped_bit_in_last_batch_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    written(dir.path());
    let (path, recs) = tail(dir.path());
    // The last batch was written by the last write; damage there cannot be told from a
    // torn write, which was never acknowledged.
    let &(start_lsn, start_off, _) = recs.iter().rev().find(|r| r.2).unwrap();
    let &(last, _, _) = recs.last().unwrap();
    assert!(
        last > start_lsn,
        "the last batch should hold several records"
    );
    let victim = recs.iter().find(|r| r.0 == start_lsn + 1).unwrap();
    flip_bit(&path, victim.1 + 40);
    let log = Log::open(dir.path(), small(), 1).unwrap();
    let notes = log.recovery().notes.join("\n");
    assert!(notes.contains(&format!("offset {}", victim.1)), "{notes}");
    assert!(start_off < victim.1);
    drop(log);
    reopen_and_continue(dir.path(), start_lsn);
}

#[test]
fn flipped_bit_in_the_middle_is_reported_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    written(dir.path());
    let (path, recs) = tail(dir.path());
    let victim = recs[recs.len() / 2];
    flip_bit(&path, victim.1 + 35);
    let before = std::fs::read(&path).unwrap();
    match Log::open(dir.path(), small(), 1) {
        Err(LogError::Corrupt {
            path: p,
            offset,
            reason,
        }) => {
            assert_eq!(p, path);
            assert_eq!(offset, victim.1);
            assert!(reason.contains("checksum"), "{reason}");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a corrupt log opened"),
    }
    // Refusing to open changes nothing on disk.
    assert!(std::fs::read(&path).unwrap() == before);
}

#[test]
fn flipped_bit_in_an_older_segment_fails_the_read_that_reaches_it() {
    let dir = tempfile::tempdir().unwrap();
    written(dir.path());
    let (first, path) = segments(dir.path()).remove(0);
    let recs = offsets(&path, first);
    let victim = recs[recs.len() / 3];
    flip_bit(&path, victim.1 + 40);
    // Only the tail is scanned at open; the damaged segment is found by every read
    // that reaches it, and the bad record is never returned or skipped.
    let mut log = Log::open(dir.path(), small(), 1).unwrap();
    match log.read(victim.0 + 1, 10, usize::MAX) {
        Err(LogError::Corrupt {
            path: p, offset, ..
        }) => {
            assert_eq!(p, path);
            assert_eq!(offset, victim.1);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    let past = log
        .read(recs.last().unwrap().0 + 1, 10, usize::MAX)
        .unwrap();
    assert_eq!(past[0].payload, payload(recs.last().unwrap().0 + 1));
}

#[test]
fn zeroed_block_mid_log_is_corruption_and_at_the_tail_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    written(dir.path());
    let (path, recs) = tail(dir.path());
    let mid = recs[recs.len() / 2].1 / 4096 * 4096;
    let mut d = std::fs::read(&path).unwrap();
    d[mid as usize..mid as usize + 4096].fill(0);
    std::fs::write(&path, &d).unwrap();
    match Log::open(dir.path(), small(), 1) {
        Err(LogError::Corrupt {
            path: p, offset, ..
        }) => {
            assert_eq!(p, path);
            // The first damaged record is the one that reaches into the zeroed block.
            assert!(
                offset < mid + 4096 && offset + 32 + 3000 > mid,
                "{offset} vs block {mid}"
            );
            assert!(recs.iter().any(|r| r.1 == offset));
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a corrupt log opened"),
    }

    let dir = tempfile::tempdir().unwrap();
    written(dir.path());
    let (path, recs) = tail(dir.path());
    let &(start_lsn, start_off, _) = recs.iter().rev().find(|r| r.2).unwrap();
    let mut d = std::fs::read(&path).unwrap();
    d[start_off as usize..start_off as usize + 4096].fill(0);
    std::fs::write(&path, &d).unwrap();
    reopen_and_continue(dir.path(), start_lsn - 1);
}

#[test]
fn leftovers_of_a_write_whose_first_block_never_landed_are_cleared() {
    let dir = tempfile::tempdir().unwrap();
    written(dir.path());
    let (path, recs) = tail(dir.path());
    let end = recs.last().unwrap().1 / 4096 * 4096 + 8192;
    // A later block of an unacknowledged write landed, its first block did not: a
    // valid-looking record (the log's own next record) sits after the end.
    let mut d = std::fs::read(&path).unwrap();
    let mut rec = vec![0u8; 32 + 10];
    lockstep::log::record::encode(&mut rec, 0, 1, recs.last().unwrap().0 + 2, b"0123456789");
    d[end as usize + 4096..end as usize + 4096 + rec.len()].copy_from_slice(&rec);
    std::fs::write(&path, &d).unwrap();
    let log = Log::open(dir.path(), small(), 1).unwrap();
    assert!(
        log.recovery().notes.iter().any(|n| n.contains("leftovers")),
        "{:?}",
        log.recovery().notes
    );
    drop(log);
    let d = std::fs::read(&path).unwrap();
    assert!(
        d[end as usize..].iter().all(|&b| b == 0),
        "leftovers were not cleared"
    );
    reopen_and_continue(dir.path(), recs.last().unwrap().0);
}

#[test]
fn unused_newest_segment_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    written(dir.path());
    let (first, _) = segments(dir.path()).pop().unwrap();
    let last = offsets(&segments(dir.path()).pop().unwrap().1, first)
        .last()
        .unwrap()
        .0;
    // A rollover installed the next segment, then the process died before writing to it.
    let next = dir.path().join(lockstep::log::segment::file_name(last + 1));
    std::fs::write(&next, vec![0u8; 2 << 20]).unwrap();
    let log = Log::open(dir.path(), small(), 1).unwrap();
    assert!(
        log.recovery()
            .notes
            .iter()
            .any(|n| n.contains("removed unused segment"))
    );
    assert!(!next.exists());
    drop(log);
    reopen_and_continue(dir.path(), last);
}

#[test]
fn a_second_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _log = Log::open(dir.path(), small(), 1).unwrap();
    assert!(matches!(
        Log::open(dir.path(), small(), 2),
        Err(LogError::Locked { .. })
    ));
}

#[test]
fn damage_before_an_unused_newest_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    written(dir.path());
    let (first, path) = segments(dir.path()).pop().unwrap();
    let recs = offsets(&path, first);
    let &(last, off, _) = recs.last().unwrap();
    // The rollover came after the last write of this segment had completed, so damage in
    // its last batch is not a torn write: it would cut acknowledged records.
    std::fs::write(
        dir.path().join(lockstep::log::segment::file_name(last + 1)),
        vec![0u8; 2 << 20],
    )
    .unwrap();
    flip_bit(&path, off + 40);
    match Log::open(dir.path(), small(), 1) {
        Err(LogError::Corrupt {
            path: p, offset, ..
        }) => assert_eq!((p, offset), (path, off)),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("acknowledged records were cut as a torn tail"),
    }
}
