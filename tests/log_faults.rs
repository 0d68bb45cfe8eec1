//! Error paths of the log: a full disk and a failed durable write. In every case the
//! caller gets a clear error, nothing is acknowledged that is not durable, and no LSN is
//! assigned to a refused record.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::*;
use lockstep::log::{Faults, Log, LogError, LogOptions};
use lockstep_sys::uring::Ring;

fn with_faults(faults: &Arc<Faults>) -> LogOptions {
    LogOptions {
        faults: Some(Arc::clone(faults)),
        ..small()
    }
}

/// Appends the next record; on `Full` writes what is pending first.
fn append_next(log: &mut Log, ring: &mut Ring) -> Result<u64, LogError> {
    let lsn = log.next_lsn();
    match log.append(1, &payload(lsn)) {
        Err(LogError::Full) => {
            log.sync(ring)?;
            log.append(1, &payload(lsn))
        }
        other => other,
    }
}

#[test]
fn enospc_at_rollover_is_an_error_and_appends_resume() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    let mut ring = ring();
    let mut log = Log::open(dir.path(), with_faults(&faults), 1).unwrap();
    faults.fail_rollover_enospc(3);
    let mut refused = 0;
    let mut acked = 0;
    // Bounded: the first segment holds a few thousand records.
    for _ in 0..20_000 {
        let before = log.next_lsn();
        match append_next(&mut log, &mut ring) {
            Ok(lsn) => acked = acked.max(lsn),
            Err(LogError::NoSpace { path, .. }) => {
                assert_eq!(path, dir.path());
                // No LSN was given to the refused record, and everything accepted before
                // it is durable.
                assert_eq!(log.next_lsn(), before);
                assert_eq!(log.sync(&mut ring).unwrap(), before - 1);
                refused += 1;
                continue;
            }
            Err(e) => panic!("{e}"),
        }
        if refused == 3 {
            break;
        }
    }
    assert_eq!(refused, 3, "rollover never happened");
    // Space is back: the next append rolls over and the log goes on.
    let lsn = append_next(&mut log, &mut ring).unwrap();
    assert_eq!(log.sync(&mut ring).unwrap(), lsn);
    fill(&mut log, &mut ring, 1, lsn + 50, 5);
    assert!(segments(dir.path()).len() >= 2);
    drop(log);
    let mut log = Log::open(dir.path(), small(), 1).unwrap();
    assert_eq!(log.durable_lsn(), lsn + 50);
    check_all(&mut log);
}

#[test]
fn enospc_when_creating_the_first_segment() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    faults.fail_prepare_enospc(1);
    match Log::open(dir.path(), with_faults(&faults), 1) {
        Err(e @ LogError::NoSpace { .. }) => assert!(e.to_string().contains("no space left")),
        Err(e) => panic!("unexpected {e}"),
        Ok(_) => panic!("opened without a segment"),
    }
    assert!(
        segments(dir.path()).is_empty(),
        "a half-prepared segment was left behind"
    );
    let mut log = Log::open(dir.path(), with_faults(&faults), 1).unwrap();
    let mut ring = ring();
    fill(&mut log, &mut ring, 1, 10, 10);
}

#[test]
fn failed_durable_write_stops_the_log_and_is_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    let mut ring = ring();
    let mut log = Log::open(dir.path(), with_faults(&faults), 1).unwrap();
    fill(&mut log, &mut ring, 1, 100, 10);
    faults.fail_write_eio(1);
    for lsn in 101..=105 {
        assert_eq!(log.append(1, &payload(lsn)).unwrap(), lsn);
    }
    let err = log.sync(&mut ring).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LogError::Failed { .. }), "{msg}");
    assert!(
        msg.contains("101..=105") && msg.contains("not retried"),
        "{msg}"
    );
    assert_eq!(log.durable_lsn(), 100);
    assert!(log.failure().is_some());
    // Every later append and write is refused with the same reason.
    assert!(matches!(log.append(1, b"x"), Err(LogError::Failed { .. })));
    assert!(matches!(log.flush(&mut ring), Err(LogError::Failed { .. })));
    drop(log);
    // Reopening recovers: whatever reached the disk is a valid prefix, and appends work.
    let mut log = Log::open(dir.path(), small(), 1).unwrap();
    assert!(log.durable_lsn() >= 100);
    check_all(&mut log);
    let next = log.durable_lsn() + 10;
    fill(&mut log, &mut ring, 1, next, 10);
}

/// A small real ext4 filesystem on a loop device, unmounted on drop.
struct SmallFs {
    dir: tempfile::TempDir,
    _image: tempfile::TempDir,
}

impl SmallFs {
    fn mount(mib: u64) -> Result<SmallFs, String> {
        let image = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).map_err(|e| e.to_string())?;
        let img = image.path().join("fs.img");
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let f = std::fs::File::create(&img).map_err(|e| e.to_string())?;
        f.set_len(mib << 20).map_err(|e| e.to_string())?;
        let run = |cmd: &mut Command| -> Result<(), String> {
            let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{cmd:?}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img))?;
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(dir.path()))?;
        Ok(SmallFs { dir, _image: image })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn real_full_filesystem() {
    let fs = match SmallFs::mount(24) {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("skipped: cannot mount a small ext4 filesystem ({why})");
            return;
        }
    };
    let dir = fs.path().join("stream");
    let mut ring = ring();
    let opts = LogOptions {
        segment_bytes: 4 << 20,
        batch_bytes: 64 << 10,
        ..Default::default()
    };
    let mut log = Log::open(&dir, opts.clone(), 1).unwrap();
    let mut last_ok = 0;
    let mut full = None;
    // Bounded: 24 MiB holds a few thousand records of this size.
    for _ in 0..100_000 {
        let before = log.next_lsn();
        match append_next(&mut log, &mut ring) {
            Ok(lsn) => last_ok = lsn,
            Err(e @ LogError::NoSpace { .. }) => {
                assert_eq!(log.next_lsn(), before, "a refused record got an LSN");
                full = Some(e);
                break;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    let err = full.expect("the filesystem never filled up");
    assert!(err.to_string().contains("no space left"), "{err}");
    // Everything accepted before the error becomes durable: the reserved segment space
    // does not run out under the records already in it.
    assert_eq!(log.sync(&mut ring).unwrap(), last_ok);
    check_all(&mut log);
    // Retention frees space; appends resume without reopening.
    let first = log.delete_before(last_ok / 2).unwrap();
    assert!(first > 1);
    let lsn = append_next(&mut log, &mut ring).unwrap();
    assert_eq!(lsn, last_ok + 1);
    assert_eq!(log.sync(&mut ring).unwrap(), lsn);
    drop(log);
    let mut log = Log::open(&dir, opts, 1).unwrap();
    assert_eq!(log.durable_lsn(), lsn);
    check_all(&mut log);
}
