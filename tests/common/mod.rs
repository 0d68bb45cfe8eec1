//! Helpers shared by the log tests.
#![allow(dead_code)]

use std::path::Path;

use lockstep::log::segment::{self, Mode};
use lockstep::log::{Log, LogError, LogOptions};
use lockstep_sys::uring::{Ring, RingOptions};

/// Deterministic payload of a record, so any surviving record can be checked by LSN.
pub fn payload(lsn: u64) -> Vec<u8> {
    let n = (lsn.wrapping_mul(7919) % 3000) as usize;
    (0..n)
        .map(|i| (lsn as usize).wrapping_mul(31).wrapping_add(i) as u8)
        .collect()
}

pub fn small() -> LogOptions {
    LogOptions {
        segment_bytes: 2 << 20,
        batch_bytes: 64 << 10,
        ..Default::default()
    }
}

pub fn ring() -> Ring {
    Ring::new(RingOptions::default()).expect("io_uring")
}

/// Appends payload(lsn) records up to `last`, `per_batch` records per write.
pub fn fill(log: &mut Log, ring: &mut Ring, epoch: u64, last: u64, per_batch: usize) {
    while log.next_lsn() <= last {
        for _ in 0..per_batch {
            let lsn = log.next_lsn();
            if lsn > last {
                break;
            }
            match log.append(epoch, &payload(lsn)) {
                Ok(l) => assert_eq!(l, lsn),
                Err(LogError::Full) => break,
                Err(e) => panic!("append {lsn}: {e}"),
            }
        }
        log.sync(ring).expect("sync");
    }
}

/// Every record from the first retained one to the durable LSN has the payload of its LSN.
pub fn check_all(log: &mut Log) {
    let first = log.first_lsn();
    let want = log.durable_lsn() + 1 - first;
    let all = log.read(first, usize::MAX, usize::MAX).expect("read all");
    assert_eq!(all.len() as u64, want);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.lsn, first + i as u64);
        assert!(
            r.payload == payload(r.lsn),
            "payload of lsn {} differs",
            r.lsn
        );
    }
}

/// (lsn, offset, batch start) of every record of a segment file.
pub fn offsets(path: &Path, first_lsn: u64) -> Vec<(u64, u64, bool)> {
    let data = std::fs::read(path).unwrap();
    let mut v = Vec::new();
    segment::scan(&data, first_lsn, None, Mode::Tail, |r| {
        v.push((r.header.lsn, r.offset, r.header.batch_start()))
    });
    v
}

pub fn flip_bit(path: &Path, offset: u64) {
    let mut d = std::fs::read(path).unwrap();
    d[offset as usize] ^= 0x10;
    std::fs::write(path, d).unwrap();
}

pub fn segments(dir: &Path) -> Vec<(u64, std::path::PathBuf)> {
    segment::list(dir).unwrap()
}
