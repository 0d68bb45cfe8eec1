//! Append, group commit, read back, reopen, retention and truncation of the log.

use lockstep::log::{Log, LogError, LogOptions};
use lockstep_sys::uring::{Ring, RingOptions};

fn payload(lsn: u64) -> Vec<u8> {
    let n = (lsn * 7919 % 3000) as usize;
    (0..n).map(|i| (lsn as usize + i) as u8).collect()
}

fn small() -> LogOptions {
    LogOptions {
        segment_bytes: 2 << 20,
        batch_bytes: 64 << 10,
        ..Default::default()
    }
}

#[test]
fn append_group_commit_read_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut ring = Ring::new(RingOptions::default()).unwrap();
    let mut log = Log::open(dir.path(), small(), 1).unwrap();
    log.register_buffers(&mut ring).unwrap();
    assert_eq!((log.next_lsn(), log.durable_lsn()), (1, 0));
    let mut lsn = 0;
    // Enough to cross several 2 MiB segments.
    for round in 0..400u64 {
        for _ in 0..10 {
            let next = log.next_lsn();
            match log.append(round / 100, &payload(next)) {
                Ok(l) => lsn = l,
                Err(LogError::Full) => {
                    log.sync(&mut ring).unwrap();
                    lsn = log.append(round / 100, &payload(next)).unwrap();
                }
                Err(e) => panic!("{e}"),
            }
        }
        // One write in flight at most; the batch grows meanwhile.
        log.flush(&mut ring).unwrap();
        if round % 3 == 0 {
            log.sync(&mut ring).unwrap();
        }
    }
    assert_eq!(log.sync(&mut ring).unwrap(), lsn);
    assert_eq!(lsn, 4000);
    let segs = std::fs::read_dir(dir.path()).unwrap().count();
    assert!(segs >= 3, "{segs} files");
    let all = log.read(1, usize::MAX, usize::MAX).unwrap();
    assert_eq!(all.len(), 4000);
    for r in &all {
        assert_eq!(r.payload, payload(r.lsn), "lsn {}", r.lsn);
    }
    let mid = log.read(1777, 5, usize::MAX).unwrap();
    assert_eq!(
        mid.iter().map(|r| r.lsn).collect::<Vec<_>>(),
        vec![1777, 1778, 1779, 1780, 1781]
    );
    drop(log);

    let mut log = Log::open(dir.path(), small(), 1).unwrap();
    assert!(
        log.recovery().notes.iter().all(|n| !n.contains("torn")),
        "{:?}",
        log.recovery().notes
    );
    assert_eq!(log.durable_lsn(), 4000);
    assert_eq!(log.last_epoch(), Some(3));
    assert_eq!(log.read(3999, 10, usize::MAX).unwrap().len(), 2);
    assert!(matches!(
        log.append(2, b"x"),
        Err(LogError::EpochRegression { .. })
    ));
    assert_eq!(log.append(3, &payload(4001)).unwrap(), 4001);
    log.sync(&mut ring).unwrap();

    // Retention keeps the segment holding the requested LSN.
    let first = log.delete_before(2500).unwrap();
    assert!(first > 1 && first <= 2500, "{first}");
    assert!(matches!(
        log.read(1, 1, 1),
        Err(LogError::OutOfRange { .. })
    ));
    assert_eq!(log.read(2500, 1, 1).unwrap()[0].payload, payload(2500));

    // Truncation back into an older segment, then appends continue from there.
    log.truncate_after(2600).unwrap();
    assert_eq!((log.durable_lsn(), log.next_lsn()), (2600, 2601));
    assert_eq!(log.append(9, b"after truncate").unwrap(), 2601);
    log.sync(&mut ring).unwrap();
    drop(log);
    let mut log = Log::open(dir.path(), small(), 1).unwrap();
    assert_eq!(log.durable_lsn(), 2601);
    assert_eq!(
        log.read(2600, 10, usize::MAX).unwrap()[1].payload,
        b"after truncate"
    );
    assert_eq!(
        log.read(2600, 10, usize::MAX).unwrap()[0].payload,
        payload(2600)
    );
}

#[test]
fn tmpfs_falls_back_to_buffered_writes_and_says_so() {
    let shm = std::path::Path::new("/dev/shm");
    if lockstep_sys::probe::storage(shm)
        .map(|p| p.direct.is_ok())
        .unwrap_or(true)
    {
        eprintln!("skipped: no tmpfs at /dev/shm that refuses O_DIRECT");
        return;
    }
    let dir = tempfile::tempdir_in(shm).unwrap();
    let mut ring = Ring::new(RingOptions::default()).unwrap();
    let mut log = Log::open(dir.path(), small(), 1).unwrap();
    assert!(!log.direct_io());
    let notes = log.recovery().notes.join("\n");
    assert!(
        notes.contains("O_DIRECT") && notes.contains("buffered writes + fdatasync"),
        "{notes}"
    );
    for lsn in 1..=100 {
        assert_eq!(log.append(1, &payload(lsn)).unwrap(), lsn);
    }
    assert_eq!(log.sync(&mut ring).unwrap(), 100);
    drop(log);
    let mut log = Log::open(dir.path(), small(), 1).unwrap();
    assert_eq!(log.read(1, 1000, usize::MAX).unwrap().len(), 100);
}

#[test]
fn epoch_queries_and_fits() {
    let dir = tempfile::tempdir().unwrap();
    let mut ring = Ring::new(RingOptions::default()).unwrap();
    let mut log = Log::open(dir.path(), small(), 1).unwrap();
    assert_eq!(log.last_lsn_up_to_epoch(5).unwrap(), 0);
    // Epochs 1 (lsn 1..=300), 4 (301..=310), 7 (311..=999), across segments.
    for lsn in 1..=999u64 {
        let epoch = if lsn <= 300 {
            1
        } else if lsn <= 310 {
            4
        } else {
            7
        };
        if !log
            .make_room(lockstep::log::record::record_bytes(payload(lsn).len()))
            .unwrap()
        {
            log.sync(&mut ring).unwrap();
            assert!(
                log.make_room(lockstep::log::record::record_bytes(payload(lsn).len()))
                    .unwrap()
            );
        }
        assert_eq!(log.append(epoch, &payload(lsn)).unwrap(), lsn);
    }
    log.sync(&mut ring).unwrap();
    let table = [
        (0, 0),
        (1, 300),
        (2, 300),
        (4, 310),
        (5, 310),
        (7, 999),
        (9, 999),
    ];
    for (epoch, want) in table {
        assert_eq!(
            log.last_lsn_up_to_epoch(epoch).unwrap(),
            want,
            "epoch {epoch}"
        );
    }
    assert_eq!(log.epoch_at(305).unwrap(), 4);
    assert!(!log.make_room(1 << 30).unwrap());
    // A group that reaches past the end of the segment starts a new one: every record
    // of it then goes in without Full.
    let group: Vec<Vec<u8>> = (0..40).map(|i| vec![i as u8; 1500]).collect();
    for _ in 0..100 {
        let bytes: usize = group
            .iter()
            .map(|p| lockstep::log::record::record_bytes(p.len()))
            .sum();
        if !log.make_room(bytes).unwrap() {
            log.sync(&mut ring).unwrap();
            assert!(log.make_room(bytes).unwrap());
        }
        for p in &group {
            log.append(7, p).unwrap();
        }
        log.flush(&mut ring).unwrap();
    }
    log.sync(&mut ring).unwrap();
    assert!(
        std::fs::read_dir(dir.path()).unwrap().count() > 4,
        "the groups never crossed a segment end"
    );
}
